#!/bin/sh
# The official openai Python client (tests/openai-client.py) against
# llm-batchd: skipped (77) when the module is not installed.
set -u
. "${LLMKIT_SRC:-.}/tests/batchd-lib.sh"
python3 -c 'import openai' 2>/dev/null || { echo "SKIP: python module openai not installed"; exit 77; }
key=k-$$
start_server --api-key "$key"
want=$("$gen" -m "$model" -p "Once upon a time" --temp 0 -n 24 -t 1 --no-stream)
python3 "$LLMKIT_SRC/tests/openai-client.py" "$url" "$key" "$want" || fail "openai client"
stop_server
check "exit 0" [ "$server_status" = 0 ]
finish
