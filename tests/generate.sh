#!/bin/sh
# llm-generate end to end on stories260K: the known greedy story, batched
# text equal to text generated alone, beam search against greedy, seeded
# sampling, stop strings, and every kind of bad input.
set -u
: "${LLMKIT_DATA:=../shared/data}" "${LLMKIT_BIN:=.}"
model=$LLMKIT_DATA/models/stories260K.gguf
[ -r "$model" ] || { echo "SKIP: $model not found"; exit 77; }
gen="$LLMKIT_BIN/tools/llm-generate"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

# --- the story the model is known to tell from BOS (data/README.md)
"$gen" -m "$model" --temp 0 -n 200 -t 2 > "$tmp/story" || fail "greedy run"
expect="Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high."
head -c ${#expect} "$tmp/story" > "$tmp/story.head"
if [ "$(cat "$tmp/story.head")" = "$expect" ]; then ok "greedy story"; else
	fail "greedy story: $(head -c 200 "$tmp/story")"; fi

# --- many prompts in one batch == each alone
cat > "$tmp/prompts" <<'P'
Once upon a time
The little dog
Tom and Sue went to the
One day, a bird

Lily wanted to
P
"$gen" -m "$model" --prompts "$tmp/prompts" --batch 8 --temp 0 -n 40 -t 2 > "$tmp/batched" ||
	fail "batched run"
: > "$tmp/alone"
while IFS= read -r p; do
	if [ -z "$p" ]; then
		"$gen" -m "$model" --temp 0 -n 40 -t 1 --no-stream
	else
		"$gen" -m "$model" -p "$p" --temp 0 -n 40 -t 1 --no-stream
	fi | awk 'BEGIN{ORS=""} NR>1{print "\\n"} {print} END{print "\n"}' >> "$tmp/alone"
done < "$tmp/prompts"
if cmp -s "$tmp/batched" "$tmp/alone"; then ok "batch of 6 == alone"; else
	fail "batched text differs from text generated alone"; diff "$tmp/batched" "$tmp/alone"; fi
[ "$(wc -l < "$tmp/batched")" -eq 6 ] || fail "one output line per prompt"
# small batches (static batches of 4 then 2) give the same text
"$gen" -m "$model" --prompts - --batch 4 --temp 0 -n 40 < "$tmp/prompts" > "$tmp/batched4"
cmp -s "$tmp/batched" "$tmp/batched4" && ok "batch 4 == batch 8" || fail "batch size changes text"

# --- beam search: width 1 is greedy; width 4 scores at least greedy
for p in "Once upon a time" "The little dog" "One day, a bird"; do
	g=$("$gen" -m "$model" -p "$p" --temp 0 -n 32 --ignore-eos --json --logprobs)
	b1=$("$gen" -m "$model" -p "$p" --beams 1 -n 32 --ignore-eos --json --logprobs)
	b4=$("$gen" -m "$model" -p "$p" --beams 4 -n 32 --ignore-eos --length-penalty 0 --json)
	gt=$(printf '%s' "$g" | sed 's/.*"text":"\([^"]*\)".*/\1/')
	b1t=$(printf '%s' "$b1" | sed 's/.*"text":"\([^"]*\)".*/\1/')
	[ "$gt" = "$b1t" ] && ok "beam 1 == greedy ($p)" || fail "beam 1 != greedy for '$p'"
	gl=$(printf '%s' "$g" | sed 's/.*"logprob":\([-0-9.e]*\).*/\1/')
	bl=$(printf '%s' "$b4" | sed 's/.*"logprob":\([-0-9.e]*\).*/\1/')
	if awk -v a="$bl" -v b="$gl" 'BEGIN{exit !(a >= b - 1e-4)}'; then
		ok "beam 4 logprob $bl >= greedy $gl ($p)"
	else
		fail "beam 4 logprob $bl < greedy $gl for '$p'"
	fi
done

# --- seeded sampling reproduces, alone and in a batch
a=$("$gen" -m "$model" -p "Once upon a time" --temp 1 --seed 7 -n 40)
b=$("$gen" -m "$model" -p "Once upon a time" --temp 1 --seed 7 -n 40 -t 1)
c=$("$gen" -m "$model" -p "Once upon a time" --temp 1 --seed 8 -n 40)
[ "$a" = "$b" ] && ok "same seed, same text" || fail "seed does not reproduce"
[ "$a" != "$c" ] && ok "other seed, other text" || fail "seed has no effect"
printf '%s\n' '{"prompt":"The dog","seed":3,"temperature":1,"max_tokens":30}' \
	'{"prompt":"Once upon a time","seed":7,"temperature":1,"max_tokens":40}' > "$tmp/seeded"
d=$("$gen" -m "$model" --prompts "$tmp/seeded" | sed -n 2p)
[ "$d" = "$a" ] && ok "seeded text same in a batch" || fail "batch changes seeded text"

# --- stop strings: cut before the stop, never printed
full=$("$gen" -m "$model" --temp 0 -n 100)
cut=$("$gen" -m "$model" --temp 0 -n 100 --stop "ball")
case "$full" in "$cut"ball*) ok "stop string cuts";; *) fail "stop: '$cut'";; esac
j=$("$gen" -m "$model" --temp 0 -n 100 --stop "ball" --json)
case "$j" in *'"finish_reason":"stop"'*) ok "finish_reason stop";; *) fail "json: $j";; esac

# --- chat: lines in, one streamed reply per line, history kept; /reset
printf 'Hello there\nTell me a story\n/reset\nHi\n' |
	"$gen" -m "$model" --chat --chat-template chatml --temp 0 -n 12 \
	> "$tmp/chat" 2> "$tmp/chat.err"
rc=$?
[ "$rc" -eq 0 ] && [ "$(wc -l < "$tmp/chat")" -eq 3 ] && ok "chat: 3 replies" ||
	fail "chat: exit $rc, $(wc -l < "$tmp/chat") lines: $(cat "$tmp/chat.err")"
# the first reply is what a plain run of the same formatted prompt gives
printf '<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n' > "$tmp/chatml"
first=$("$gen" -m "$model" --special --temp 0 -n 12 -f "$tmp/chatml")
[ "$(head -1 "$tmp/chat")" = "$first" ] && ok "chat reply == formatted prompt" ||
	fail "chat reply '$(head -1 "$tmp/chat")' != '$first'"
# after /reset the conversation starts over: same reply as a fresh chat
fresh=$(printf 'Hi\n' | "$gen" -m "$model" --chat --chat-template chatml --temp 0 -n 12)
[ "$(sed -n 3p "$tmp/chat")" = "$fresh" ] && ok "chat /reset forgets" ||
	fail "chat after /reset differs from a fresh chat"

# --- bad input: clear message, non-zero status
expect_fail() {  # status pattern description command...
	st=$1 pat=$2 what=$3; shift 3
	"$@" > "$tmp/out" 2> "$tmp/err"; rc=$?
	if [ "$rc" -eq "$st" ] && grep -q -- "$pat" "$tmp/err" && [ "$(wc -l < "$tmp/err")" -le 2 ]; then
		ok "$what (exit $rc: $(head -1 "$tmp/err"))"
	else
		fail "$what: exit $rc, stderr: $(cat "$tmp/err")"
	fi
}
expect_fail 2 "max-tokens: 'abc' is not an integer" "-n abc" "$gen" -m "$model" -n abc
expect_fail 2 "unknown option" "unknown option" "$gen" --frobnicate
expect_fail 2 "top-p" "--top-p 2" "$gen" -m "$model" --top-p 2
expect_fail 1 "No such file" "missing model" "$gen" -m "$tmp/none.gguf"
head -c 70000 "$model" > "$tmp/trunc.gguf"
expect_fail 1 "past end of file\|truncated" "truncated GGUF" "$gen" -m "$tmp/trunc.gguf"
printf 'GGUX\003\000\000\000' > "$tmp/magic.gguf"; cat "$model" >> "$tmp/magic.gguf"
expect_fail 1 "bad magic" "wrong magic" "$gen" -m "$tmp/magic.gguf"
# version 3, 2^62 tensors
printf 'GGUF\003\000\000\000\000\000\000\000\000\000\000\100\000\000\000\000\000\000\000\000' > "$tmp/count.gguf"
expect_fail 1 "tensor count" "absurd tensor count" "$gen" -m "$tmp/count.gguf"
long=$(yes "Once upon a time" | head -200 | tr '\n' ' ')
expect_fail 1 "longer than the context" "prompt longer than the context" \
	"$gen" -m "$model" -c 64 -p "$long"
printf 'caf\351 au lait\n' > "$tmp/latin1"
expect_fail 1 "not valid UTF-8" "invalid UTF-8 prompt" "$gen" -m "$model" -f "$tmp/latin1"
printf '%s\n' 'fine prompt' '{"prompt": "x", "max_tokens": "lots"}' > "$tmp/badjson"
expect_fail 1 ":2: \"max_tokens\" must be a number" "bad JSONL field" \
	"$gen" -m "$model" --prompts "$tmp/badjson"
printf '%s\n' '{"prompt": "x",' > "$tmp/badjson2"
expect_fail 1 ":1: bad JSON" "malformed JSONL" "$gen" -m "$model" --prompts "$tmp/badjson2"
[ ! -s "$tmp/out" ] || fail "output written before a bad prompt was found"

exit $((fails > 0))
