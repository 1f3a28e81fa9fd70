#!/bin/sh
# llm-generate --lora and llm-lora-merge on stories260K with the PEFT
# adapters of data/fixtures/lora: run-time adapters (stacked, scaled) give
# the same greedy text as the model they are merged into; merging to
# standard output gives the same bytes as to a file; adapters converted
# PEFT -> GGUF -> PEFT (--cat) give the same text; bad input is refused with
# one line naming the file, exit 1 (2 for usage), and leaves no output.
set -eu
: "${LLMKIT_DATA:=../shared/data}" "${LLMKIT_BIN:=.}" "${LLMKIT_SRC:=.}"
model=$LLMKIT_DATA/models/stories260K.gguf
[ -r "$model" ] || { echo "SKIP: $model not found"; exit 77; }
fx=$LLMKIT_SRC/data/fixtures/lora
gen=$LLMKIT_BIN/tools/llm-generate
merge=$LLMKIT_BIN/tools/llm-lora-merge
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

printf '%s\n' 'Once upon a time' 'The little dog' 'Lily and Ben' > "$tmp/prompts"
greedy() { "$gen" --greedy -n 48 -t 2 --kv-type f32 --prompts "$tmp/prompts" "$@"; }

# run time == merged (f32), two stacked adapters, one scaled negative
greedy -m "$model" --lora "$fx/peft-a" --lora "$fx/peft-b:-0.6" > "$tmp/rt.txt"
"$merge" -m "$model" -a "$fx/peft-a" -a "$fx/peft-b:-0.6" --dtype f32 -o "$tmp/m.gguf"
greedy -m "$tmp/m.gguf" > "$tmp/merged.txt"
greedy -m "$model" > "$tmp/base.txt"
cmp -s "$tmp/rt.txt" "$tmp/merged.txt" || fail "--lora text differs from the merged model's"
cmp -s "$tmp/rt.txt" "$tmp/base.txt" && fail "the adapters change nothing"
[ "$(wc -l < "$tmp/rt.txt")" -ge 3 ] || fail "too little output"

# one adapter, default dtype (keep: f32 here), to stdout = to a file
"$merge" -m "$model" -a "$fx/peft-a" -o "$tmp/a.gguf"
"$merge" -m "$model" -a "$fx/peft-a" -o - > "$tmp/a-stdout.gguf"
cmp "$tmp/a.gguf" "$tmp/a-stdout.gguf" || fail "stdout output differs from the file"
greedy -m "$model" --lora "$fx/peft-a" > "$tmp/rt-a.txt"
greedy -m "$tmp/a.gguf" > "$tmp/m-a.txt"
cmp -s "$tmp/rt-a.txt" "$tmp/m-a.txt" || fail "one adapter: --lora differs from merged"
# the merged model pipes into a reader of standard input
"$merge" -m "$model" -a "$fx/peft-a" -o - | "$gen" -m - --greedy -n 48 -t 2 \
	--kv-type f32 -p 'Once upon a time' > "$tmp/pipe.txt"
head -n 1 "$tmp/m-a.txt" > "$tmp/m-a1.txt"
cmp -s "$tmp/pipe.txt" "$tmp/m-a1.txt" || fail "piped merged model differs"

# the merged model streams into llm-quantize: the same bytes as quantizing
# the merged file; --dtype q8_0 writes a quantized model directly
"$merge" -m "$model" -a "$fx/peft-a" -o - |
	"$LLMKIT_BIN/tools/llm-quantize" -t q8_0 - - > "$tmp/a-q8-pipe.gguf" 2>/dev/null
"$LLMKIT_BIN/tools/llm-quantize" -t q8_0 "$tmp/a.gguf" "$tmp/a-q8.gguf" 2>/dev/null
cmp "$tmp/a-q8-pipe.gguf" "$tmp/a-q8.gguf" || fail "merge | llm-quantize differs"
"$merge" -m "$model" -a "$fx/peft-a" --dtype q8_0 -o "$tmp/a-q8d.gguf"
"$gen" -m "$tmp/a-q8d.gguf" -p 'Once upon a time' -n 4 --greedy > /dev/null ||
	fail "--dtype q8_0 output does not load"

# f16 output: every matrix f16, text still that of the adapter
"$merge" -m "$model" -a "$fx/peft-a" --dtype f16 -o "$tmp/a16.gguf"
[ "$(stat -c %s "$tmp/a16.gguf")" -lt "$(stat -c %s "$tmp/a.gguf")" ] ||
	fail "--dtype f16 output is not smaller"

# conversions: PEFT -> GGUF adapter -> PEFT, and the cat of two adapters
"$merge" -m "$model" -a "$fx/peft-a" --cat --format gguf -o "$tmp/a-lora.gguf"
"$merge" -m "$model" -a "$tmp/a-lora.gguf" --cat -o "$tmp/a-peft"
[ -f "$tmp/a-peft/adapter_config.json" ] && [ -f "$tmp/a-peft/adapter_model.safetensors" ] ||
	fail "no PEFT directory written"
greedy -m "$model" --lora "$tmp/a-lora.gguf" > "$tmp/g.txt"
greedy -m "$model" --lora "$tmp/a-peft" > "$tmp/p.txt"
cmp -s "$tmp/g.txt" "$tmp/rt-a.txt" || fail "GGUF adapter text differs"
cmp -s "$tmp/p.txt" "$tmp/rt-a.txt" || fail "PEFT -> GGUF -> PEFT text differs"
"$merge" -m "$model" -a "$fx/peft-a" -a "$fx/peft-b:-0.6" --cat --format gguf -o "$tmp/cat.gguf"
greedy -m "$model" --lora "$tmp/cat.gguf" > "$tmp/cat.txt"
cmp -s "$tmp/cat.txt" "$tmp/rt.txt" || fail "--cat adapter differs from the stacked ones"

# llm-perplexity --lora = the merged model's perplexity, not the base's
ppl() { "$LLMKIT_BIN/tools/llm-perplexity" -f "$LLMKIT_DATA/text/tinystories-val.txt" \
	--chunks 3 -c 96 --kv-type f32 -t 2 --json "$@" | sed 's/.*"perplexity":\([^,]*\),.*/\1/'; }
p_rt=$(ppl -m "$model" --lora "$fx/peft-a" --lora "$fx/peft-b:-0.6")
p_m=$(ppl -m "$tmp/m.gguf")
p_b=$(ppl -m "$model")
awk -v a="$p_rt" -v b="$p_m" -v c="$p_b" 'BEGIN {
	d = a - b; if (d < 0) d = -d; e = a - c; if (e < 0) e = -e
	exit !(d <= 1e-5 * b && e > 0.1 * c) }' ||
	fail "perplexity: --lora $p_rt, merged $p_m, base $p_b"

# errors: one line naming the culprit, status 1, nothing written
expect_error() {   # status pattern command...
	want=$1 pat=$2; shift 2
	set +e; "$@" > "$tmp/out" 2> "$tmp/err"; st=$?; set -e
	[ "$st" -eq "$want" ] || fail "$*: status $st, expected $want"
	[ "$(grep -vc "^Try '" "$tmp/err")" -eq 1 ] || fail "$*: not one line: $(cat "$tmp/err")"
	grep -q -- "$pat" "$tmp/err" || fail "$*: '$(cat "$tmp/err")' lacks '$pat'"
}
expect_error 1 "$tmp/nope" "$gen" -m "$model" --lora "$tmp/nope" -p x -n 1
expect_error 1 "$tmp/nope" "$merge" -m "$model" -a "$tmp/nope" -o "$tmp/x.gguf"
[ ! -e "$tmp/x.gguf" ] || fail "a failed merge left its output"
mkdir "$tmp/bad"; cp "$fx/peft-a/adapter_model.safetensors" "$tmp/bad/"
printf '{"r": 4, "lora_alpha": 8,\n' > "$tmp/bad/adapter_config.json"
expect_error 1 "adapter_config.json" "$gen" -m "$model" --lora "$tmp/bad" -p x -n 1
expect_error 1 "adapter_config.json" "$merge" -m "$model" -a "$tmp/bad" -o "$tmp/x.gguf"
[ -z "$(ls "$tmp" | grep 'x.gguf')" ] || fail "a failed merge left a file"
expect_error 1 "not a LoRA adapter" "$gen" -m "$model" --lora "$model" -p x -n 1
expect_error 1 "overwrite" "$merge" -m "$model" -a "$fx/peft-a" -o "$model"
expect_error 2 "dtype" "$merge" -m "$model" -a "$fx/peft-a" --dtype f99 -o "$tmp/x.gguf"
expect_error 2 "adapter" "$merge" -m "$model" -o "$tmp/x.gguf"
expect_error 2 "standard output" "$merge" -m "$model" -a "$fx/peft-a" --cat -o -
echo "PASS: --lora == merged, stdout == file, conversions, errors"
