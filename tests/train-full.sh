#!/bin/sh
# llm-lora-train --full on a qwen2-shape model (q/k/v biases): every
# weight is trained, the biases included, and the written model (read with
# the gguf package) holds the trained values.
BIN=${LLMKIT_BIN:-.}/tools
DATA=${LLMKIT_DATA:-../shared/data}
TEXT=$DATA/text/tinyshakespeare.txt
[ -r "$TEXT" ] || { echo "SKIP: no tinyshakespeare"; exit 77; }
python3 -c "import gguf, numpy" 2>/dev/null || { echo "SKIP: no python gguf/numpy"; exit 77; }
T=$(mktemp -d) || exit 1
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$BIN/llm-convert" --dummy 'custom:dim=64,layers=2,heads=4,kv_heads=2,ffn=96,vocab=300,ctx=128,arch=qwen2,tied=0' \
	-o "$T/q.gguf" > /dev/null || fail "making the qwen2 model"
head -c 20000 "$TEXT" > "$T/in.txt"
"$BIN/llm-lora-train" -m "$T/q.gguf" --data "$T/in.txt" --full --ctx 64 --batch 4 \
	--steps 5 -t 2 -q -o "$T/out.gguf" || fail "training"
python3 - "$T/q.gguf" "$T/out.gguf" <<'PY' || fail "the written model"
import sys
import numpy as np
from gguf import GGUFReader
a = {t.name: np.array(t.data, dtype=np.float32) for t in GGUFReader(sys.argv[1]).tensors}
b = {t.name: np.array(t.data, dtype=np.float32) for t in GGUFReader(sys.argv[2]).tensors}
assert a.keys() == b.keys(), "tensor names differ"
bias = [n for n in a if n.endswith(".bias")]
assert len(bias) == 6, bias
for n in sorted(a):
    assert np.isfinite(b[n]).all(), n + ": not finite"
    d = float(np.abs(a[n] - b[n]).max())
    assert d > 0, n + ": not trained"
print("all %d tensors trained, %d biases among them" % (len(a), len(bias)))
PY
