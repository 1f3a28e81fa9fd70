#!/bin/sh
# llm-lora-train data handling: bad JSONL lines are fatal with file:line, or
# skipped and reported with --skip-bad; .gz input; prompt/completion and
# chat messages train; the adapter is a PEFT directory that loads back.
BIN=${LLMKIT_BIN:-.}/tools/llm-lora-train
DATA=${LLMKIT_DATA:-../shared/data}
MODEL=$DATA/models/stories260K.gguf
[ -r "$MODEL" ] || { echo "SKIP: no stories260K"; exit 77; }
T=$(mktemp -d) || exit 1
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
COMMON="-m $MODEL --ctx 64 --batch 2 --steps 3 -r 2 -t 2 -q"

i=0
while [ $i -lt 20 ]; do
	echo '{"prompt": "Tom had a red ball. ", "completion": "He liked to play with it."}'
	echo '{"prompt": "The sun was hot. ", "completion": "Lily went to the pool."}'
	i=$((i + 1))
done > "$T/good.jsonl"
{ cat "$T/good.jsonl"; echo '{"prompt": "no completion"}'; echo 'this is not json';
  echo '{"prompt": 3, "completion": "x"}'; } > "$T/bad.jsonl"

$BIN $COMMON --data "$T/bad.jsonl" -o "$T/o1" 2> "$T/err" && fail "bad line accepted"
grep -q "bad.jsonl:41: " "$T/err" || fail "no file:line in: $(cat "$T/err")"
[ $(wc -l < "$T/err") -eq 1 ] || fail "more than one line of error: $(cat "$T/err")"
[ -e "$T/o1/adapter_model.safetensors" ] && fail "output written after an error"

$BIN $COMMON --data "$T/bad.jsonl" --skip-bad -o "$T/o2" 2> "$T/err" || fail "--skip-bad: $(cat "$T/err")"
for l in 41 42 43; do
	grep -q "bad.jsonl:$l: " "$T/err" || fail "--skip-bad: line $l not reported: $(cat "$T/err")"
done
grep -q "3 bad lines skipped" "$T/err" || fail "no count: $(cat "$T/err")"
[ -s "$T/o2/adapter_model.safetensors" ] && [ -s "$T/o2/adapter_config.json" ] || fail "no PEFT output"

# .gz and an eval on held-out lines: the adapter loads back for --eval-only
gzip -c "$T/good.jsonl" > "$T/good.jsonl.gz"
$BIN $COMMON --data "$T/good.jsonl.gz" --eval-split 0.2 -o "$T/o3" --steps 10 --lr 1e-2 || fail ".gz"
base=$($BIN -m "$MODEL" --ctx 64 --data "$T/good.jsonl" --eval-split 0.2 --eval-only | awk '{print $2}')
tuned=$($BIN -m "$MODEL" --ctx 64 --data "$T/good.jsonl" --eval-split 0.2 --eval-only --init "$T/o3" | awk '{print $2}')
awk -v b="$base" -v t="$tuned" 'BEGIN { exit !(t < b) }' || fail "held-out loss did not drop: $base -> $tuned"

# chat messages through a template; GGUF adapter output
echo '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, friend."}]}' > "$T/chat.jsonl"
$BIN $COMMON --data "$T/chat.jsonl" -o "$T/o4" 2> "$T/err" && fail "chat without a template accepted"
grep -q "chat.jsonl:1: .*chat template" "$T/err" || fail "chat: $(cat "$T/err")"
$BIN $COMMON --data "$T/chat.jsonl" --chat-template chatml --format gguf -o "$T/o4.gguf" || fail "chat with chatml"
[ -s "$T/o4.gguf" ] || fail "no GGUF adapter"

# f16, bf16 and q4_0 (QLoRA) bases, and QAT for q4_0, train and lower the
# held-out loss
if [ -x "${LLMKIT_BIN:-.}/tools/llm-quantize" ]; then
	"${LLMKIT_BIN:-.}/tools/llm-quantize" -q -t q4_0 "$MODEL" "$T/q40.gguf" || fail "quantize"
	"${LLMKIT_BIN:-.}/tools/llm-quantize" -q -t f16 "$MODEL" "$T/f16.gguf" || fail "f16"
	"${LLMKIT_BIN:-.}/tools/llm-quantize" -q -t bf16 "$MODEL" "$T/bf16.gguf" || fail "bf16"
	for v in "f16.gguf:" "bf16.gguf:" "q40.gguf:" "q40.gguf:--qat q4_0" "SELF:--qat q4_0"; do
		m=${v%%:*}; extra=${v#*:}
		[ "$m" = SELF ] && m=$MODEL || m=$T/$m
		$BIN -m "$m" --ctx 64 --batch 2 -r 2 -t 2 -q --data "$T/good.jsonl" --eval-split 0.2 \
			--steps 10 --lr 1e-2 $extra -o "$T/o6" || fail "training $v"
		b=$($BIN -m "$m" --ctx 64 --data "$T/good.jsonl" --eval-split 0.2 --eval-only | awk '{print $2}')
		a=$($BIN -m "$m" --ctx 64 --data "$T/good.jsonl" --eval-split 0.2 --eval-only --init "$T/o6" | awk '{print $2}')
		awk -v b="$b" -v t="$a" 'BEGIN { exit !(t < b) }' || fail "$v: held-out loss did not drop: $b -> $a"
	done
fi

# usage errors
$BIN $COMMON -o "$T/o5" 2>/dev/null; [ $? -eq 2 ] || fail "missing --data is not a usage error"
$BIN $COMMON --data "$T/good.jsonl" --lr abc -o "$T/o5" 2>/dev/null; [ $? -eq 2 ] || fail "--lr abc"
echo PASS
