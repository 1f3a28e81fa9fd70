#!/bin/sh
# cuda-cli.sh - --device in the programs.  Without a GPU (or in a build
# without CUDA), --device cuda must fail cleanly: exit 1 and one line
# saying why.  With one, greedy text on the GPU must equal the CPU's.
# Bad --device values are usage errors (exit 2) either way.
set -u
bin=${LLMKIT_BIN:-.}
data=${LLMKIT_DATA:-../shared/data}
model=$data/models/stories260K.gguf
[ -r "$model" ] || { echo "SKIP: $model not found"; exit 77; }
tmp=${TMPDIR:-/tmp}/cuda-cli.$$
mkdir -p "$tmp" || exit 1
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

for prog in llm-generate llm-bench llm-perplexity; do
	"$bin/tools/$prog" --device gpu >/dev/null 2>"$tmp/err"
	rc=$?
	[ $rc -eq 2 ] || fail "$prog --device gpu: exit $rc, expected 2"
	grep -q "device" "$tmp/err" || fail "$prog --device gpu: $(cat "$tmp/err")"
	"$bin/tools/$prog" --help | grep -q -- "--device" || fail "$prog --help lacks --device"
done

gen() { "$bin/tools/llm-generate" -m "$model" --greedy -n 60 -p "Once upon a time" "$@"; }
gen --device cpu >"$tmp/cpu.txt" 2>"$tmp/cpu.err" || fail "cpu: $(cat "$tmp/cpu.err")"
[ -s "$tmp/cpu.txt" ] || fail "cpu: no text"
gen --device cuda >"$tmp/cuda.txt" 2>"$tmp/cuda.err"
rc=$?
if [ $rc -ne 0 ]; then
	[ $rc -eq 1 ] || fail "--device cuda without a device: exit $rc, expected 1"
	[ "$(wc -l <"$tmp/cuda.err")" -eq 1 ] || fail "not one line: $(cat "$tmp/cuda.err")"
	grep -Eq "no CUDA device|no CUDA backend" "$tmp/cuda.err" ||
		fail "unexpected error: $(cat "$tmp/cuda.err")"
	[ -s "$tmp/cuda.txt" ] && fail "text printed despite the error"
	# the same for the other programs
	"$bin/tools/llm-perplexity" -m "$model" --device cuda -f "$data/text/tinystories-val.txt" \
		--chunks 1 -c 64 >/dev/null 2>"$tmp/err"
	rc=$?
	[ $rc -eq 1 ] && grep -Eq "no CUDA" "$tmp/err" || fail "llm-perplexity: exit $rc: $(cat "$tmp/err")"
	"$bin/tools/llm-bench" -m "$model" --device cuda -p 8 -n 4 -r 1 >/dev/null 2>"$tmp/err"
	rc=$?
	[ $rc -eq 1 ] && grep -Eq "no CUDA" "$tmp/err" || fail "llm-bench: exit $rc: $(cat "$tmp/err")"
	echo "no CUDA device here: --device cuda fails cleanly ($(cat "$tmp/cuda.err"))"
	exit 0
fi
cmp -s "$tmp/cpu.txt" "$tmp/cuda.txt" || fail "greedy text differs: cpu '$(cat "$tmp/cpu.txt")' cuda '$(cat "$tmp/cuda.txt")'"
echo "greedy text on the GPU equals the CPU's"
