#!/bin/sh
# An adapter written by llm-lora-train (rsLoRA, some targets, dropout while
# training) loads in PyTorch + PEFT on the same base (Hugging Face weights
# from the GGUF) and gives the held-out loss llm-lora-train --eval-only
# gives.  SKIP without torch, peft and transformers.
BIN=${LLMKIT_BIN:-.}/tools
SRC=${LLMKIT_SRC:-.}
DATA=${LLMKIT_DATA:-../shared/data}
MODEL=$DATA/models/stories260K.gguf
TEXT=$DATA/text/tinyshakespeare.txt
[ -r "$MODEL" ] && [ -r "$TEXT" ] || { echo "SKIP: no stories260K or tinyshakespeare"; exit 77; }
python3 -c "import torch, peft, transformers, gguf" 2>/dev/null || { echo "SKIP: no torch/peft/transformers/gguf"; exit 77; }
T=$(mktemp -d) || exit 1
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
head -c 100000 "$TEXT" > "$T/train.txt"
tail -c 20000 "$TEXT" > "$T/held.txt"
$BIN/llm-lora-train -m "$MODEL" --data "$T/train.txt" --ctx 128 --batch 4 --steps 15 \
	-r 4 --alpha 6 --rslora --targets q,v,o,down --dropout 0.1 --lr 5e-3 -t 2 -q \
	-o "$T/ad" || fail "training"
ours=$($BIN/llm-lora-train -m "$MODEL" --eval-data "$T/held.txt" --ctx 129 --eval-max 8 \
	--eval-only --init "$T/ad" | awk '{ print $2 }')
base=$($BIN/llm-lora-train -m "$MODEL" --eval-data "$T/held.txt" --ctx 129 --eval-max 8 \
	--eval-only | awk '{ print $2 }')
$BIN/llm-tokenize -m "$MODEL" -f "$T/held.txt" > "$T/ids" || fail "tokenize"
peft=$(python3 "$SRC/scripts/ref/peft_eval.py" "$MODEL" "$T/ad" "$T/ids" 128 8 2>/dev/null |
	awk '{ print $2 }')
[ -n "$peft" ] || fail "PEFT did not load the adapter"
echo "held-out loss: base $base, ours $ours, PEFT $peft"
awk -v a="$ours" -v b="$peft" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 1e-4 * b) }' ||
	fail "PEFT's loss $peft differs from ours $ours"
awk -v a="$ours" -v b="$base" 'BEGIN { exit !(a < b - 0.1) }' || fail "the adapter changed little ($base -> $ours)"
echo PASS
