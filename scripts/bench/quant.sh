#!/bin/sh
# quant.sh - speed and memory of quantized weights, on a random-weight
# model of stories110M's shape (weights do not change speed):
#
#   1. decode (tg128 from an empty context, one stream) tokens/s of each
#      type over f32's, same round                                  target >= 2.5 for q4_0, q4_k
#   2. prompt processing (pp512) tokens/s over f32's   target >= 0.8
#   3. with LLAMA_BENCH=/path/to/llama-bench: our tokens/s over llama.cpp's
#      on the same file (one llm-quantize wrote, llama.cpp loads), pp512 and
#      tg128
#   4. peak RSS of llm-generate on the q4_0 and q4_k files, less the
#      process's own baseline (the same run on stories260K), over the file
#      size plus the KV cache it fills       target <= 1.10 (no weight is
#      ever expanded to f32)
#
# Usage: scripts/bench/quant.sh [TYPE]...   (default: f16 q8_0 q6_k q5_k q4_k
#        q4_0 q3_k q2_k)
# Environment: LLMKIT_BIN (build directory, default: the source tree),
# BENCH_DIR (models made or reused, default $TMPDIR/llmkit-bench), THREADS
# (2), REPS (2 runs per call), ROUNDS (3), LLAMA_BENCH, LLMKIT_DATA.
#
# Every type is quantized --pure (every matrix that type) so a row says
# what that type costs.  Ratios are taken within a round (f32 measured in
# the same round as the type); the median round is reported, each round
# beside it, and the load before each round.
set -eu

src=$(cd "$(dirname "$0")/../.." && pwd)
bin=${LLMKIT_BIN:-$src}
threads=${THREADS:-2}
reps=${REPS:-2}
rounds=${ROUNDS:-3}
dir=${BENCH_DIR:-${TMPDIR:-/tmp}/llmkit-bench}
llama=${LLAMA_BENCH:-}
data=${LLMKIT_DATA:-$src/../shared/data}
types=${*:-f16 q8_0 q6_k q5_k q4_k q4_0 q3_k q2_k}

bench=$bin/tools/llm-bench
for p in "$bench" "$bin/tools/llm-convert" "$bin/tools/llm-quantize" "$bin/tools/llm-generate"; do
	[ -x "$p" ] || { echo "quant.sh: $p not built (make, or set LLMKIT_BIN)" >&2; exit 1; }
done
if [ -n "$llama" ] && [ ! -x "$llama" ]; then
	echo "quant.sh: LLAMA_BENCH=$llama is not an executable" >&2
	exit 1
fi
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

. "$src/scripts/bench/lib.sh"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
med() {
	awk -v k="$1" '$1 == k { print $2 }' "$tmp/vals" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
all() { awk -v k="$1" '$1 == k { printf "%s%s", s, $2; s = " " }' "$tmp/vals"; }

f32=$dir/stories110M-f32.gguf
if [ ! -s "$f32" ]; then
	echo "making $f32" >&2
	"$bin/tools/llm-convert" --dummy stories110M --dtype f32 -o "$f32"
fi
for t in $types; do
	f=$dir/stories110M-pure-$t.gguf
	if [ ! -s "$f" ] || [ "$f" -ot "$bin/tools/llm-quantize" ]; then
		echo "making $f" >&2
		"$bin/tools/llm-quantize" -q --pure -t "$t" --threads "$threads" "$f32" "$f"
	fi
done

# pp512, and tg128 from an (almost) empty context as llama-bench's tg128
ours() {   # model -> "pp tg"
	"$bench" -m "$1" -t "$threads" -r "$reps" -p 512 -n 1 -b 1 -o csv > "$tmp/o.csv"
	"$bench" -m "$1" -t "$threads" -r "$reps" -p 1 -n 128 -b 1 -o csv > "$tmp/g.csv"
	echo "$(csv_get "$tmp/o.csv" tokens_per_s "kind=pp") $(csv_get "$tmp/g.csv" tokens_per_s "kind=tg batch=1")"
}
theirs() {
	"$llama" -m "$1" -t "$threads" -r "$reps" -p 512 -n 128 -o csv > "$tmp/l.csv" 2> "$tmp/l.err" || {
		echo "quant.sh: llama-bench failed on $1:" >&2
		tail -n 5 "$tmp/l.err" >&2
		exit 1
	}
	echo "$(csv_get "$tmp/l.csv" avg_ts "n_prompt=512 n_gen=0") $(csv_get "$tmp/l.csv" avg_ts "n_prompt=0 n_gen=128")"
}

echo "stories110M shape (random weights), $threads threads, $rounds rounds of $reps runs; kernels: $("$bin/tools/llm-generate" -m "$f32" -n 1 -v -p x 2>&1 >/dev/null | sed -n 's/.*kernels \([a-z0-9]*\).*/\1/p' | head -1)"
: > "$tmp/vals"
loads=""
r=1
while [ "$r" -le "$rounds" ]; do
	loads="$loads; $(load)"
	set -- $(ours "$f32")
	pp0=$1 tg0=$2
	echo "pp_f32 $pp0" >> "$tmp/vals"
	echo "tg_f32 $tg0" >> "$tmp/vals"
	if [ -n "$llama" ]; then
		set -- $(theirs "$f32")
		echo "rpp_f32 $(ratio "$pp0" "$1")" >> "$tmp/vals"
		echo "rtg_f32 $(ratio "$tg0" "$2")" >> "$tmp/vals"
	fi
	for t in $types; do
		set -- $(ours "$dir/stories110M-pure-$t.gguf")
		pp=$1 tg=$2
		{
			echo "pp_$t $pp"
			echo "tg_$t $tg"
			echo "xpp_$t $(ratio "$pp" "$pp0")"
			echo "xtg_$t $(ratio "$tg" "$tg0")"
		} >> "$tmp/vals"
		if [ -n "$llama" ]; then
			set -- $(theirs "$dir/stories110M-pure-$t.gguf")
			echo "rpp_$t $(ratio "$pp" "$1")" >> "$tmp/vals"
			echo "rtg_$t $(ratio "$tg" "$2")" >> "$tmp/vals"
			echo "lpp_$t $1" >> "$tmp/vals"
			echo "ltg_$t $2" >> "$tmp/vals"
		fi
	done
	r=$((r + 1))
done
printf 'load before each round%s\n\n' "$loads"
printf '| type | file MiB | decode tok/s | decode / f32 | prefill tok/s | prefill / f32 |%s\n' \
	"$([ -n "$llama" ] && echo ' decode / llama.cpp | prefill / llama.cpp |')"
printf '|---|---|---|---|---|---|%s\n' "$([ -n "$llama" ] && echo '---|---|')"
size() { awk -v b="$(wc -c < "$1")" 'BEGIN { printf "%.1f", b / 1048576 }'; }
printf '| f32 | %s | %.1f (%s) | 1 | %.1f | 1 |%s\n' "$(size "$f32")" "$(med tg_f32)" \
	"$(all tg_f32)" "$(med pp_f32)" \
	"$([ -n "$llama" ] && printf ' %s (%s) | %s (%s) |' "$(med rtg_f32)" "$(all rtg_f32)" "$(med rpp_f32)" "$(all rpp_f32)")"
for t in $types; do
	printf '| %s | %s | %.1f | %s (%s) | %.1f | %s (%s) |%s\n' "$t" \
		"$(size "$dir/stories110M-pure-$t.gguf")" "$(med tg_$t)" "$(med xtg_$t)" \
		"$(all xtg_$t)" "$(med pp_$t)" "$(med xpp_$t)" "$(all xpp_$t)" \
		"$([ -n "$llama" ] && printf ' %s (%s) | %s (%s) |' "$(med rtg_$t)" "$(all rtg_$t)" "$(med rpp_$t)" "$(all rpp_$t)")"
done
echo
echo "targets: decode / f32 >= 2.5 for q4_0 and q4_k; prefill / f32 >= 0.8"

# memory: peak RSS of a 256-token generation, less the process baseline
base_rss=0
if [ -r "$data/models/stories260K.gguf" ]; then
	base_rss=$( { /usr/bin/time -f '%M' "$bin/tools/llm-generate" -m "$data/models/stories260K.gguf" \
		-n 32 --temp 0 -t "$threads" -p Once > /dev/null; } 2>&1 | tail -1)
fi
echo
echo "memory (llm-generate -n 256 from a 1-token prompt; baseline RSS of the process $base_rss KiB):"
for t in q4_0 q4_k; do
	f=$dir/stories110M-pure-$t.gguf
	[ -s "$f" ] || continue
	rss=$( { /usr/bin/time -f '%M' "$bin/tools/llm-generate" -m "$f" -n 256 --temp 0 \
		--ignore-eos -t "$threads" -p Once > /dev/null; } 2>&1 | tail -1)
	# KV: 16-position blocks for prompt + 256 tokens; 12 layers, K and V,
	# 768 f16 values each per position
	awk -v rss="$rss" -v base="$base_rss" -v file="$(wc -c < "$f")" -v t="$t" 'BEGIN {
		kv = int((2 + 256 + 15) / 16) * 16 * 12 * 2 * 768 * 2
		r = (rss - base) * 1024 / (file + kv)
		printf "  %s: peak RSS %.1f MiB, less baseline %.1f MiB; file %.1f MiB + KV %.1f MiB; ratio %.3f (target <= 1.10)\n",
			t, rss / 1024, (rss - base) / 1024, file / 1048576, kv / 1048576, r
	}'
done
