#!/bin/sh
# llm-batchd --offline: JSONL in, JSONL out with each request's id; bad
# lines get an error object and the rest go on; greedy text equals
# llm-generate's; progress on stderr; exit 4 when some lines failed.
set -u
. "${LLMKIT_SRC:-.}/tests/batchd-lib.sh"

cat > "$tmp/in.jsonl" <<'J'
{"id": "a", "prompt": "Once upon a time", "max_tokens": 24, "temperature": 0}
{"id": "b", "prompt": "The little dog", "max_tokens": 16, "temperature": 0, "n": 2}
this is not JSON
{"id": 7, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8, "temperature": 0}

{"id": "bad-temp", "prompt": "x", "temperature": 9}
{"custom_id": "batch-1", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}}
{"id": "long", "prompt": "Once", "max_tokens": 300, "ignore_eos": true}
J
"$batchd" -m "$model" -t 1 --offline < "$tmp/in.jsonl" > "$tmp/out.jsonl" 2> "$tmp/err"
status=$?
check "exit 4 (some lines failed)" [ "$status" = 4 ]
check "one reply per request line" [ "$(wc -l < "$tmp/out.jsonl")" = 7 ]
python3 - "$tmp/out.jsonl" > "$tmp/sum" <<'PY'
import json, sys
r = {}
for line in open(sys.argv[1]):
    o = json.loads(line)
    r[json.dumps(o["id"])] = o
print(sorted(r))
print(r['"a"']["choices"][0]["text"])
print(len(r['"b"']["choices"]), r['"b"']["choices"][0]["text"] == r['"b"']["choices"][1]["text"])
print(r['3']["error"]["line"], "JSON" in r['3']["error"]["message"])
print(r['7']["object"], r['7']["choices"][0]["message"]["role"])
print(r['"bad-temp"']["error"]["param"], r['"bad-temp"']["error"]["line"])
print(r['"batch-1"']["object"], r['"long"']["usage"]["completion_tokens"])
PY
want=$("$gen" -m "$model" -p "Once upon a time" --temp 0 -n 24 -t 1 --no-stream)
{
	echo "['\"a\"', '\"b\"', '\"bad-temp\"', '\"batch-1\"', '\"long\"', '3', '7']"
	echo "$want"
	echo "2 True"
	echo "3 True"
	echo "chat.completion assistant"
	echo "temperature 6"
	echo "chat.completion 300"
} > "$tmp/expect"
if cmp -s "$tmp/sum" "$tmp/expect"; then ok "replies"; else
	fail "replies"; diff "$tmp/expect" "$tmp/sum"; fi
check "progress on stderr" grep -q "7 read, 7 done (2 failed).*finished" "$tmp/err"

# an empty input is no work and no error
"$batchd" -m "$model" -t 1 --offline < /dev/null > "$tmp/empty" 2>/dev/null
check "empty input: exit 0, no output" [ $? = 0 ] && check "no output" [ ! -s "$tmp/empty" ]
finish
