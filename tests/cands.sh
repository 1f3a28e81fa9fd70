#!/bin/sh
# Candidates on the CPU: a small random model with GPT-2's vocabulary of
# 50257 tokens (where the CPU's default takes candidates for rows without
# sums) gives the same text with candidates off, by default and forced on -
# greedy, default sampling, a nucleus of the whole row, min-p alone,
# log-probs, penalties.
set -u
BIN=${LLMKIT_BIN:-.}/tools
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
D=${LLMKIT_DATA:-../shared/data}
gpt2=$D/tokenizers/gpt2
[ -f "$gpt2/encoder.json" ] || { echo "SKIP: $gpt2 not found"; exit 77; }

shape='custom:dim=64,layers=2,heads=4,kv_heads=2,ffn=96,vocab=50257,ctx=128'
"$BIN/llm-convert" --dummy "$shape" --gpt2 "$gpt2" --seed 3 -o "$tmp/m.gguf" >/dev/null ||
	fail "dummy model failed"
printf 'The cat\nOnce upon\nA B C\nHello\n' > "$tmp/p.txt"
n=0
for opts in "--greedy" "" "--temp 1 --top-k 0 --top-p 0.9 --min-p 0" \
	"--temp 1.3 --top-k 0 --top-p 1 --min-p 0.1" "--logprobs" \
	"--repeat-penalty 1.2"; do
	n=$((n + 1))
	for m in off auto on; do
		LLMKIT_CANDS=$m "$BIN/llm-generate" -m "$tmp/m.gguf" -i "$tmp/p.txt" -b 4 \
			-n 40 --seed 11 --ignore-eos -t 2 --json $opts > "$tmp/out-$m" ||
			fail "llm-generate $opts (LLMKIT_CANDS=$m) failed"
		# timings differ from run to run; the rest must not
		sed -E 's/"[a-z_]*(_ms|per_second)":[0-9.e+-]*//g' "$tmp/out-$m" > "$tmp/cmp-$m"
	done
	grep -q '"text":"[^"]' "$tmp/cmp-off" || fail "no text for $opts"
	cmp -s "$tmp/cmp-off" "$tmp/cmp-auto" || fail "$opts: the default's text differs from full rows"
	cmp -s "$tmp/cmp-off" "$tmp/cmp-on" || fail "$opts: candidates' text differs from full rows"
done
echo "PASS: cands ($n settings, candidates off / default / on)"
