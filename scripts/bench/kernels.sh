#!/bin/sh
# kernels.sh - the CPU rows kernels (several tokens against a weight matrix)
# beside single-threaded OpenBLAS sgemm, one thread, weights read from
# memory, on stories110M's matrix shapes, 1 to 256 tokens
# (tests/kernel-bench):
#
#   GFLOP/s and weight GB/s of each kernel table this CPU runs (avx2, and
#   avx512 where present) and of sgemm, and the kernel's speed over
#   sgemm's.  Decode is one token (bound by memory bandwidth); a batch of
#   sequences or a prompt chunk is several (bound by the FMA units).  The
#   CPU backend hands a product to sgemm from BLAS_MIN_TOKENS (256) on.
#
# Then the same kernels in the model: llm-bench decode steps at batch 1 to
# 32 and a 64-token prompt, stories110M shape, THREADS threads.
#
# Usage: scripts/bench/kernels.sh [f32|f16|bf16]   (default f32)
# Environment: LLMKIT_BIN (build directory, default: the source tree),
# BENCH_DIR (where the model is made or reused, default
# $TMPDIR/llmkit-bench), THREADS (2), SECONDS_PER_CELL (0.3).
set -eu

src=$(cd "$(dirname "$0")/../.." && pwd)
bin=${LLMKIT_BIN:-$src}
dir=${BENCH_DIR:-${TMPDIR:-/tmp}/llmkit-bench}
threads=${THREADS:-2}
dt=${1:-f32}

kb="$bin/tests/kernel-bench"
if [ ! -x "$kb" ]; then
	(cd "$bin" && make tests/kernel-bench >/dev/null) || {
		echo "kernels.sh: $kb not built (make tests/kernel-bench)" >&2; exit 1; }
fi
. "$src/scripts/bench/lib.sh"

echo "# load before: $(load), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
"$kb" -d "$dt" -T "${SECONDS_PER_CELL:-0.3}"

mkdir -p "$dir"
model="$dir/stories110M-dummy-$dt.gguf"
[ -s "$model" ] || "$bin/tools/llm-convert" --dummy stories110M --dtype "$dt" \
	-o "$model" >/dev/null
echo
echo "# in the model ($dt, $threads threads): tokens/s"
"$bin/tools/llm-bench" -m "$model" -t "$threads" -p 64 -n 32 -b 1,2,4,8,16,32 \
	-r 3 -o csv 2>/dev/null | awk -F, '
	NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
	{ printf "%s batch %2d: %7.1f tok/s\n", $c["kind"], $c["batch"], $c["tokens_per_s"] }'
echo "# load after: $(load)"
