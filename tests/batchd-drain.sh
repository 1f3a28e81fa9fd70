#!/bin/sh
# SIGTERM drains llm-batchd: it stops accepting connections, the requests
# in flight (a stream and a plain one) run to their end, and it exits 0.
set -u
. "${LLMKIT_SRC:-.}/tests/batchd-lib.sh"

start_server
curl -sN "$url/v1/completions" -d '{"prompt":"Once","max_tokens":1500,"ignore_eos":true,"stream":true}' \
	> "$tmp/stream" 2>/dev/null &
c1=$!
curl -s "$url/v1/completions" -d '{"prompt":"Once","max_tokens":1500,"ignore_eos":true}' \
	> "$tmp/plain" 2>/dev/null &
c2=$!
# both requests reached the engine (a connection still in the listen
# queue when draining starts is closed unanswered, as it should be)
i=0
while [ "$(metric 'llmkit_requests_total{outcome="submitted"}')" != 2 ] && [ $i -lt 200 ]; do
	sleep 0.02; i=$((i + 1))
done
kill -TERM "$server_pid"
sleep 0.1
code=$(curl -s -o /dev/null -w '%{http_code}' -m 2 "$url/health")
check "no new connections while draining (got $code)" [ "$code" = 000 ]
wait "$c1" "$c2"
wait "$server_pid"; status=$?; server_pid=
check "exit 0" [ "$status" = 0 ]
check "the stream ran to its end" [ "$(grep -v '^$' "$tmp/stream" | tail -n 1)" = "data: [DONE]" ]
check "the stream finished by length" grep -q '"finish_reason":"length"' "$tmp/stream"
check "the plain request got its 1500 tokens" [ "$(jget "$tmp/plain" 'j["usage"]["completion_tokens"]')" = 1500 ]
check "drained with requests in flight" grep -q "draining ([1-9][0-9]* requests in flight)" "$tmp/server.err"
finish
