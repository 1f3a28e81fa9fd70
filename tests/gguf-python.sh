#!/bin/sh
# gguf-python.sh - cross-check the GGUF reader and writer against the
# independent "gguf" Python package (scripts/gguf-pycheck.py).  SKIP (77)
# when python3 cannot import gguf and numpy; the model part runs when
# $LLMKIT_DATA/models/stories260K.gguf is there.
bin=${LLMKIT_BIN:-.}
src=${LLMKIT_SRC:-.}
py=${PYTHON:-python3}

if ! "$py" -c 'import gguf, numpy' >/dev/null 2>&1; then
	echo "gguf-python.sh: SKIP: $py cannot import gguf and numpy (pip install gguf numpy)"
	exit 77
fi
dump="$bin/tests/test-gguf-dump"
if [ ! -x "$dump" ]; then
	echo "gguf-python.sh: $dump not built" >&2
	exit 1
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/gguf-python.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT

model="${LLMKIT_DATA:-}/models/stories260K.gguf"
if [ -n "${LLMKIT_DATA:-}" ] && [ -r "$model" ]; then
	"$py" "$src/scripts/gguf-pycheck.py" "$dump" "$work" "$model"
else
	echo "gguf-python.sh: no stories260K.gguf: model check left out"
	"$py" "$src/scripts/gguf-pycheck.py" "$dump" "$work"
fi
