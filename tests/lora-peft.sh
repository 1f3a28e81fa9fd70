#!/bin/sh
# Adapters written by llmkit load in PyTorch + PEFT (PeftModel.from_pretrained
# on the same base) and give the logits PEFT's own adapters gave when the
# fixture was made (data/fixtures/lora/*.f32): peft-a (per-matrix ranks and
# alphas) and peft-b (rsLoRA, a subset of layers) re-written by
# llm-lora-merge --cat, and peft-a through a GGUF adapter and back.
# (Our own logits are checked against the same fixture by test-lora, which
# needs no Python.)  SKIP without python3 with torch, transformers, peft and gguf.
set -eu
: "${LLMKIT_DATA:=../shared/data}" "${LLMKIT_BIN:=.}" "${LLMKIT_SRC:=.}"
model=$LLMKIT_DATA/models/stories260K.gguf
[ -r "$model" ] || { echo "SKIP: $model not found"; exit 77; }
python3 -c 'import torch, transformers, peft, gguf' 2>/dev/null ||
	{ echo "SKIP: python3 with torch, transformers, peft and gguf needed"; exit 77; }
fx=$LLMKIT_SRC/data/fixtures/lora
merge=$LLMKIT_BIN/tools/llm-lora-merge
ref=$LLMKIT_SRC/scripts/ref/peft_logits.py
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

"$merge" -m "$model" -a "$fx/peft-a" --cat -o "$tmp/a"
"$merge" -m "$model" -a "$fx/peft-b" --cat -o "$tmp/b"
"$merge" -m "$model" -a "$fx/peft-a" --cat --format gguf -o "$tmp/a.gguf"
"$merge" -m "$model" -a "$tmp/a.gguf" --cat -o "$tmp/a2"
grep -q '"use_rslora": true' "$tmp/b/adapter_config.json" || { echo "FAIL: rsLoRA lost"; exit 1; }
for x in "peft-a a" "peft-b b" "peft-a a2"; do
	set -- $x
	python3 "$ref" check "$model" "$fx" "$1" "$tmp/$2" 2>/dev/null
done
