#!/bin/sh
# Block quantization against the gguf Python package (byte-identical
# quantize where it implements the type, identical dequantize for every
# type) and, when llama.cpp's libggml-base.so is found, against ggml's own
# quantizer for all types with and without an importance matrix.
# SKIP (77) without python3 + gguf + numpy.
BIN=${LLMKIT_BIN:-.}
SRC=${LLMKIT_SRC:-.}
command -v python3 >/dev/null 2>&1 || { echo "SKIP: no python3"; exit 77; }
python3 -c 'import gguf, numpy' 2>/dev/null || { echo "SKIP: python3 lacks gguf/numpy"; exit 77; }
LIB=${LIBGGML_BASE:-}
if [ -z "$LIB" ]; then
	for d in "${LLAMA_CPP_BIN:-}" /tmp/llama.cpp/build/bin; do
		[ -n "$d" ] && [ -f "$d/libggml-base.so" ] && { LIB=$d/libggml-base.so; break; }
	done
fi
exec python3 "$SRC/scripts/quant-pycheck.py" "$BIN/tests/quant-dump" $LIB
