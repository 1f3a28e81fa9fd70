#!/bin/sh
# lora.sh - the cost of LoRA at run time, on a random-weight model of
# stories110M's shape (weights do not change speed) with random rank-RANK
# adapters on all seven projections:
#
#   1. one sequence, prefill PROMPT tokens and GEN decode steps: no adapter,
#      one adapter applied at run time (llm_ctx_add_lora, what
#      llm-generate --lora does), and the model with it merged;
#   2. a heterogeneous batch: SEQS sequences with SEQS distinct adapters
#      (one adapter slot each) against the same SEQS sequences with none;
#      and SEQS sequences sharing 4 adapters round robin (each adapter's
#      tokens scatter through the batch; they are grouped into one segment
#      per adapter in every forward pass).
#
# Printed as tokens/s and ratios to the adapter-free runs, all from one run
# of tests/lora-bench (configurations alternate within each of ROUNDS
# rounds; each figure is its best round).
#
# Usage: scripts/bench/lora.sh
# Environment: LLMKIT_BIN (build directory, default: the source tree),
# BENCH_DIR (where the model is made or reused, default
# $TMPDIR/llmkit-bench), THREADS (2), RANK (16), PROMPT (128), GEN (32),
# SEQS (16), ROUNDS (3).
set -eu

src=$(cd "$(dirname "$0")/../.." && pwd)
bin=${LLMKIT_BIN:-$src}
dir=${BENCH_DIR:-${TMPDIR:-/tmp}/llmkit-bench}
model=$dir/stories110M-dummy-f32.gguf

[ -x "$bin/tests/lora-bench" ] || make -C "$bin" tests/lora-bench >/dev/null
mkdir -p "$dir"
[ -r "$model" ] || "$bin/tools/llm-convert" --dummy stories110M -o "$model"

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
"$bin/tests/lora-bench" "$model" "${THREADS:-2}" "${RANK:-16}" "${PROMPT:-128}" \
	"${GEN:-32}" "${SEQS:-16}" "${ROUNDS:-3}" > "$dir/lora.txt"
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
v() { awk -v k="$1" '$1 == k { print $2 }' "$dir/lora.txt"; }
echo
printf '%-34s %12s %12s\n' "configuration" "prefill t/s" "decode t/s"
for c in single_none single_lora single_merged batch_none batch_lora batch_lora4; do
	printf '%-34s %12s %12s\n' "$c" "$(v ${c}_prefill_tok_s)" "$(v ${c}_decode_tok_s)"
done
echo
printf '%-34s %12s %12s\n' "ratio" "prefill" "decode"
printf '%-34s %12s %12s\n' "1 adapter at run time / none" \
	"$(v ratio_prefill_lora_vs_none)" "$(v ratio_decode_lora_vs_none)"
printf '%-34s %12s %12s\n' "merged / none" \
	"$(v ratio_prefill_merged_vs_none)" "$(v ratio_decode_merged_vs_none)"
printf '%-34s %12s %12s\n' "$(v seqs) seqs, $(v seqs) adapters / none" \
	"$(v ratio_prefill_batch16_lora_vs_none)" "$(v ratio_decode_batch16_lora_vs_none)"
printf '%-34s %12s %12s\n' "$(v seqs) seqs, 4 shared adapters / none" \
	"$(v ratio_prefill_batch16_lora4_vs_none)" "$(v ratio_decode_batch16_lora4_vs_none)"
echo "(rank $(v rank), $(v threads) threads, prompt $(v prompt), $(v gen) decode steps, best of $(v rounds) rounds)"
