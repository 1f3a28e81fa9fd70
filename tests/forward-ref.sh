#!/bin/sh
# Logits of stories260K over a 40-token sequence, from llm_decode (single
# thread and two threads, whole batch and split into chunks of 7), against
# the float64 numpy reference in tests/ref/llama_ref.py (which reads the
# model with the independent `gguf` package).  SKIP without python3+numpy+gguf.
set -eu
: "${LLMKIT_DATA:=../shared/data}" "${LLMKIT_BIN:=.}" "${LLMKIT_SRC:=.}"
model=$LLMKIT_DATA/models/stories260K.gguf
[ -r "$model" ] || { echo "SKIP: $model not found"; exit 77; }
python3 -c 'import numpy, gguf' 2>/dev/null || { echo "SKIP: python3 with numpy and gguf needed"; exit 77; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
toks=1,403,407,261,378,1,30,99,200,511,17,44,3,87,260,300,301,302,303,304,305,306,307,308,309,310,311,312,313,314,315,316,317,318,319,320,321,322,323,324
for cfg in "1 512" "2 7" "2 1"; do
	set -- $cfg
	"$LLMKIT_BIN/tests/dump-logits" "$model" "$toks" "$1" "$2" > "$tmp/ours.txt"
	python3 "$LLMKIT_SRC/tests/ref/llama_ref.py" "$model" "$toks" \
		--compare "$tmp/ours.txt" --tol 1e-5
done
