#!/bin/sh
# quant-quality.sh - what quantization costs in quality: perplexity, KL
# divergence from the f32 model and top-1 agreement on held-out text, and
# size, for each type without and with calibration.
#
# Text: tinystories-val.txt split by lines, deterministically: the first
# 80% calibrates (--calibrate), the last 20% is held out for scoring.
#
# Models:
#   stories260K        the real model.  Its rows are 64 and 172 wide, too
#                      narrow for the k-quants' 256-blocks: those types fall
#                      back (q4_k -> q5_0, q6_k -> q8_0 ...) as llama.cpp's
#                      quantizer would; ffn_down (172) stays f16 everywhere.
#   stories260K-wide   the same function with every row 256 wide
#                      (scripts/quant-widen.py: zero padding; needs python3
#                      with gguf): the k-quants apply to real weights.
#
# Every type is written --pure (every matrix that type where it fits).
# Scoring runs the integer kernels (LLMKIT_QUANT_BLAS_MIN=0), so the
# activations are quantized to 8 bits as in decoding, and llama.cpp's
# perplexity, do.
#
# Usage: scripts/quant-quality.sh [TYPE]...  (default: f16 q8_0 q6_k q5_k
#        q4_k q4_0 q3_k q2_k)
# Environment: LLMKIT_BIN, LLMKIT_DATA, THREADS (2), CTX (256), OUT_DIR.
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
bin=${LLMKIT_BIN:-$src}
data=${LLMKIT_DATA:-$src/../shared/data}
threads=${THREADS:-2}
ctx=${CTX:-256}
types=${*:-f16 q8_0 q6_k q5_k q4_k q4_0 q3_k q2_k}
out=${OUT_DIR:-${TMPDIR:-/tmp}/llmkit-quality}
Q=$bin/tools/llm-quantize
P=$bin/tools/llm-perplexity
text=$data/text/tinystories-val.txt
base=$data/models/stories260K.gguf
for f in "$Q" "$P" "$text" "$base"; do
	[ -e "$f" ] || { echo "quant-quality.sh: $f not found" >&2; exit 1; }
done
mkdir -p "$out"

n=$(wc -l < "$text")
k=$((n * 8 / 10))
head -n "$k" "$text" > "$out/calib.txt"
tail -n "+$((k + 1))" "$text" > "$out/heldout.txt"
echo "text: $text, $n lines: calibration lines 1-$k ($(wc -c < "$out/calib.txt") bytes), held out $((k + 1))-$n ($(wc -c < "$out/heldout.txt") bytes); windows of $ctx, stride $((ctx / 2)); load $(cut -d' ' -f1-3 /proc/loadavg)"

models="stories260K"
cp "$base" "$out/stories260K.gguf"
if python3 -c 'import gguf, numpy' 2>/dev/null; then
	python3 "$src/scripts/quant-widen.py" "$base" "$out/stories260K-wide.gguf"
	models="$models stories260K-wide"
else
	echo "(python3 with gguf missing: no stories260K-wide)"
fi

score() {   # model base -> "ppl kl top1"
	LLMKIT_QUANT_BLAS_MIN=0 "$P" -m "$1" --kl-base "$2" -f "$out/heldout.txt" -c "$ctx" \
		-t "$threads" --json | python3 -c 'import json, sys
d = json.load(sys.stdin)
print("%.4f %.6f %.4f %.4f" % (d["perplexity"], d["kl"], d["top1"], d["base_perplexity"]))'
}
bpw() { sed -n 's/.*-> \([0-9.]*\) bits per weight.*/\1/p' "$1"; }

for m in $models; do
	f32=$out/$m.gguf
	"$Q" -t f32 --calibrate "$out/calib.txt" --calib-ctx "$ctx" --imatrix-out "$out/$m.imatrix" \
		--threads "$threads" "$f32" "$out/$m-f32-copy.gguf" 2> "$out/$m-calib.log"
	grep "calibrated on" "$out/$m-calib.log" | sed "s/^llm-quantize: /$m: /"
	set -- $(score "$f32" "$f32")
	echo
	echo "$m (f32: perplexity $1 on the held-out text, $(($(wc -c < "$f32") / 1024)) KiB):"
	echo
	echo "| type | KiB | bits/weight | perplexity | / f32 | KL | top-1 | calibrated: perplexity | / f32 | KL | top-1 |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|"
	p32=$1
	for t in $types; do
		"$Q" --pure -t "$t" --threads "$threads" "$f32" "$out/$m-$t.gguf" 2> "$out/$m-$t.log"
		"$Q" --pure -t "$t" --threads "$threads" --imatrix "$out/$m.imatrix" "$f32" \
			"$out/$m-$t-cal.gguf" 2> "$out/$m-$t-cal.log"
		set -- $(score "$out/$m-$t.gguf" "$f32")
		u="$1 | $(awk -v a="$1" -v b="$p32" 'BEGIN { printf "%.4f", a / b }') | $2 | $3"
		if cmp -s "$out/$m-$t.gguf" "$out/$m-$t-cal.gguf"; then
			c="(same file) | | | "
		else
			set -- $(score "$out/$m-$t-cal.gguf" "$f32")
			c="$1 | $(awk -v a="$1" -v b="$p32" 'BEGIN { printf "%.4f", a / b }') | $2 | $3"
		fi
		echo "| $t | $(($(wc -c < "$out/$m-$t.gguf") / 1024)) | $(bpw "$out/$m-$t.log") | $u | $c |"
	done
	fallbacks=$(cat "$out/$m-"*.log | sed -n 's/.*: kept at \([a-z0-9_]*\)$/\1/p' | sort | uniq -c | awk '{ printf "%s%s x%s", s, $2, $1; s = ", " }')
	if [ -n "$fallbacks" ]; then
		echo
		echo "fallbacks over all runs: $fallbacks"
	fi
done
