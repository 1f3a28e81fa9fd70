#!/bin/sh
# One command: install what is missing, build, fetch the default model if
# it is not here, and generate a story with it.  Extra arguments go to
# llm-generate (e.g. scripts/demo.sh -p "Once upon a time" --temp 0).
set -eu
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/get-model.sh >/dev/null
exec tools/llm-generate "$@"
