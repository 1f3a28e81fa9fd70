#!/bin/sh
# train.sh - LoRA training speed and memory on a random-weight model of
# stories110M's shape (weights do not change speed):
#
#   tokens/s of llm-lora-train with an f32 base and a q4_k base (QLoRA), and
#   peak RSS of each (GNU time), with and without --recompute; and, when
#   torch + peft import, PyTorch + PEFT's CPU tokens/s on the same shape,
#   batch, sequence length, rank and thread count, side by side.
#
# Usage: scripts/bench/train.sh
# Environment: LLMKIT_BIN (build dir, default: the source tree), BENCH_DIR
# ($TMPDIR/llmkit-bench), THREADS (2), BATCH (2), CTX (257: 256 predicted
# tokens per sequence), STEPS (4), RANK (8).
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
bin=${LLMKIT_BIN:-$src}
dir=${BENCH_DIR:-${TMPDIR:-/tmp}/llmkit-bench}
data=${LLMKIT_DATA:-$src/../shared/data}
THREADS=${THREADS:-2} BATCH=${BATCH:-2} CTX=${CTX:-257} STEPS=${STEPS:-4} RANK=${RANK:-8}
mkdir -p "$dir"
f32=$dir/stories110M-dummy-f32.gguf
q4k=$dir/stories110M-dummy-q4_k.gguf
[ -s "$f32" ] || "$bin/tools/llm-convert" --dummy stories110M -o "$f32"
[ -s "$q4k" ] || "$bin/tools/llm-quantize" -q -t q4_k "$f32" "$q4k"
head -c 2000000 "$data/text/tinystories-val.txt" > "$dir/train.txt"

echo "load: $(uptime)"
run() {   # label model extra-args
	/usr/bin/time -f "%M" -o "$dir/rss" "$bin/tools/llm-lora-train" -m "$2" \
		--data "$dir/train.txt" --ctx $CTX --batch $BATCH --steps $STEPS \
		-r $RANK -t $THREADS --log-every 1 -o "$dir/out-$1" $3 2> "$dir/log"
	tps=$(grep '^step' "$dir/log" | tail -1 | sed 's/.* \([0-9.]*\) tok\/s.*/\1/')
	rss=$(( $(cat "$dir/rss") / 1024 ))
	printf "%-22s %10s tok/s %8s MiB peak RSS\n" "$1" "$tps" "$rss"
	eval "rss_$4=$rss"
}
run "f32 LoRA" "$f32" "" a
run "q4_k QLoRA" "$q4k" "" b
run "f32 LoRA --recompute" "$f32" "--recompute" c
run "q4_k QLoRA --recompute" "$q4k" "--recompute" d
awk -v a=$rss_a -v b=$rss_b -v c=$rss_c -v d=$rss_d 'BEGIN {
	printf "QLoRA / f32 LoRA peak RSS: %.0f%% (stored activations), %.0f%% (--recompute)\n", 100*b/a, 100*d/c }'
if python3 -c "import torch, peft, transformers" 2>/dev/null; then
	python3 "$src/scripts/bench/train_torch.py" $BATCH $((CTX - 1)) $STEPS $THREADS $RANK
else
	echo "torch/peft not installed: no PyTorch figure"
fi
