#!/bin/sh
# fuzz-gguf.sh - build the GGUF reader's libFuzzer target and run it.
#
#   scripts/fuzz-gguf.sh [SECONDS [JOBS]]
#
# Builds tests/fuzz/fuzz-gguf.c with clang -fsanitize=fuzzer,address,undefined
# straight from the library sources (no configure needed), generates a seed
# corpus (small files made by the writer, hand-built edge cases, and cuts and
# a shrunk copy of stories260K.gguf when $LLMKIT_DATA/models has it), then
# fuzzes for SECONDS (default 60) with JOBS worker processes (default 2).
#
# Environment: CC (default clang), FUZZ_DIR (build and corpus directory,
# default tmp/fuzz under the source tree, which git ignores), LLMKIT_DATA
# (default ../shared/data beside the tree), FUZZ_ARGS (extra libFuzzer
# options).  Crashing inputs land in $FUZZ_DIR/artifacts; the corpus the
# fuzzer grows is kept in $FUZZ_DIR/corpus between runs.  Exit status is
# non-zero when the fuzzer found a crash, leak or timeout.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-60}
jobs=${2:-2}
cc=${CC:-clang}
dir=${FUZZ_DIR:-$top/tmp/fuzz}
data=${LLMKIT_DATA:-$top/../shared/data}

case $secs in ''|*[!0-9]*) echo "fuzz-gguf.sh: SECONDS must be a number" >&2; exit 2;; esac
case $jobs in ''|*[!0-9]*|0) echo "fuzz-gguf.sh: JOBS must be a positive number" >&2; exit 2;; esac

mkdir -p "$dir/seeds" "$dir/corpus" "$dir/artifacts"
srcs="$top/libcore/gguf.c $top/libcore/util.c $top/libcore/tensor.c $top/libcore/error.c"
inc="-I$top/libcore/include -I$top/libcore"

echo "fuzz-gguf.sh: building in $dir"
"$cc" -std=gnu11 -g -O1 -fno-omit-frame-pointer \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	$inc "$top/tests/fuzz/fuzz-gguf.c" $srcs -lz -lm -o "$dir/fuzz-gguf"
"$cc" -std=gnu11 -O1 $inc "$top/tests/fuzz/gen-corpus.c" $srcs -lz -lm \
	-o "$dir/gen-corpus"

model="$data/models/stories260K.gguf"
rm -f "$dir/seeds/"*
if [ -r "$model" ]; then
	"$dir/gen-corpus" "$dir/seeds" "$model"
else
	echo "fuzz-gguf.sh: $model not found; seeding without it" >&2
	"$dir/gen-corpus" "$dir/seeds"
fi

# -fork keeps one shared corpus across the workers and reports totals;
# inputs are kept small (the seeds are) so each run is quick.
cd "$dir"
set +e
./fuzz-gguf -fork="$jobs" -max_total_time="$secs" -max_len=16384 \
	-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
	-dict="$top/tests/fuzz/gguf.dict" -artifact_prefix=artifacts/ \
	-print_final_stats=1 ${FUZZ_ARGS:-} corpus seeds 2>&1 | tee fuzz.log
status=$?
set -e
n=$(ls artifacts | wc -l)
echo "fuzz-gguf.sh: exit $status, $n file(s) in $dir/artifacts"
[ "$status" -eq 0 ] && [ "$n" -eq 0 ]
