#!/bin/sh
# mlora.sh - multi-LoRA serving throughput on a random-weight model of
# stories110M's shape (weights do not change speed) with random rank-RANK
# adapters on all seven projections, CLIENTS closed-loop clients in-process
# (tests/mlora-bench: the serving engine without HTTP), THREADS threads:
#
#   none      no adapters (the baseline);
#   distinct  CLIENTS distinct adapters, one per client, all resident: every
#             step is a heterogeneous batch of CLIENTS adapters;
#   zipf      MANY registered adapters, at most ACTIVE resident, requests
#             drawn Zipf(ZIPF) over them: loads and evictions while serving;
#
# then the first-request latency of a cold adapter beside a warm one and
# the base model.  The MANY adapter names are POOL distinct adapter files
# and symlinks to them inside the directory (each name is still read and
# held in memory on its own; only disk space is shared).
#
# Usage: scripts/bench/mlora.sh
# Environment: LLMKIT_BIN (build directory, default: the source tree),
# BENCH_DIR (default $TMPDIR/llmkit-bench), THREADS (2), CLIENTS (32),
# RANK (8), MANY (1000), POOL (128), ACTIVE (64), ZIPF (1.0), PROMPT (32),
# GEN (64), DURATION (10), WARMUP (3), ROUNDS (2).
set -eu

src=$(cd "$(dirname "$0")/../.." && pwd)
bin=${LLMKIT_BIN:-$src}
dir=${BENCH_DIR:-${TMPDIR:-/tmp}/llmkit-bench}
model=$dir/stories110M-dummy-f32.gguf
rank=${RANK:-8}
clients=${CLIENTS:-32}
many=${MANY:-1000}
pool=${POOL:-128}

for p in tests/mlora-bench tests/mlora-gen; do
	[ -x "$bin/$p" ] || make -C "$bin" "$p" >/dev/null
done
mkdir -p "$dir"
[ -r "$model" ] || "$bin/tools/llm-convert" --dummy stories110M -o "$model"

distinct=$dir/mlora-distinct-r$rank-$clients
if [ ! -e "$distinct/.done" ]; then
	rm -rf "$distinct"
	"$bin/tests/mlora-gen" "$model" "$distinct" "$clients" 1 "$rank" all 0.02
	touch "$distinct/.done"
fi
manyd=$dir/mlora-many-r$rank-$many-$pool
if [ ! -e "$manyd/.done" ]; then
	rm -rf "$manyd"; mkdir -p "$manyd"
	"$bin/tests/mlora-gen" "$model" "$manyd/.pool" "$pool" 2 "$rank" all 0.02
	i=0
	while [ $i -lt "$many" ]; do
		j=$((i % pool))
		# keep a name's format (even: PEFT directory, odd: GGUF file)
		[ $((j % 2)) != $((i % 2)) ] && j=$(( (j + 1) % pool ))
		if [ $((j % 2)) = 1 ]; then ln -s ".pool/a$j.gguf" "$manyd/a$i.gguf"
		else ln -s ".pool/a$j" "$manyd/a$i"; fi
		i=$((i + 1))
	done
	touch "$manyd/.done"
fi

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
"$bin/tests/mlora-bench" -t "${THREADS:-2}" -c "$clients" -p "${PROMPT:-32}" \
	-g "${GEN:-64}" -d "${DURATION:-10}" -w "${WARMUP:-3}" -r "${ROUNDS:-2}" \
	-A "${ACTIVE:-64}" -z "${ZIPF:-1.0}" "$model" "$distinct" "$manyd" \
	> "$dir/mlora.txt"
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
v() { awk -v k="$1" '$1 == k { print $2 }' "$dir/mlora.txt"; }
echo
printf '%-44s %10s %8s %7s %7s %9s\n' "configuration" "tok/s" "vs none" "errors" \
	"loads" "evictions"
printf '%-44s %10s %8s %7s %7s %9s\n' "no adapters" "$(v none_tok_s)" "1.00" \
	"$(v none_errors)" - -
printf '%-44s %10s %8s %7s %7s %9s\n' "$clients distinct adapters, all resident" \
	"$(v distinct_tok_s)" "$(v ratio_distinct_vs_none)" "$(v distinct_errors)" \
	"$(v distinct_loads)" "$(v distinct_evictions)"
printf '%-44s %10s %8s %7s %7s %9s\n' "$many registered, ${ACTIVE:-64} resident, Zipf ${ZIPF:-1.0}" \
	"$(v zipf_tok_s)" "$(v ratio_zipf_vs_none)" "$(v zipf_errors)" \
	"$(v zipf_loads)" "$(v zipf_evictions)"
echo
echo "first request, idle engine (time to first token, prompt ${PROMPT:-32} tokens):"
echo "  cold adapter (read from disk): $(v ttft_cold_ms) ms (reading it: $(v adapter_load_ms) ms)"
echo "  warm adapter (resident):       $(v ttft_warm_ms) ms"
echo "  base model:                    $(v ttft_base_ms) ms"
