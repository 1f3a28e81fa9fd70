#!/bin/sh
# A bounded soak of llm-batchd under AddressSanitizer + LeakSanitizer:
# builds a sanitized copy of the tree (HEAD) in a scratch directory, serves
# stories260K, and for SOAK_S seconds (default 60) mixes streamed and plain
# completions and chats, n > 1 with logprobs, clients that disconnect
# mid-stream, malformed and oversized bodies, 401s and a full queue; then
# an offline batch with bad lines; then SIGTERM.  Passes when the server
# exits 0 and the sanitizers report nothing (leaks included).
#
#   scripts/soak.sh [WORKDIR]     (default /tmp/llmkit-soak)
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/llmkit-soak}
S=${SOAK_S:-60}
data=${LLMKIT_DATA:-$src/../shared/data}
model=$data/models/stories260K.gguf
mkdir -p "$work"
if [ ! -x "$work/tree/tools/llm-batchd" ]; then
	rm -rf "$work/tree"; mkdir -p "$work/tree"
	(cd "$src" && git archive HEAD) | tar -x -C "$work/tree"
	(cd "$work/tree" && autoreconf -fi >/dev/null 2>&1 &&
	 ./configure -q --enable-sanitizers CFLAGS="-O1 -g" >/dev/null &&
	 make -j"$(nproc)" tools/llm-batchd >/dev/null 2>&1)
fi
bin=$work/tree/tools/llm-batchd
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=66
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=67
export LSAN_OPTIONS=exitcode=68
rm -f "$work/port"
"$bin" -m "$model" --listen 127.0.0.1:0 --port-file "$work/port" -t 1 --max-queue 3 \
	--api-key soak --max-body 65536 2> "$work/server.log" &
pid=$!
while [ ! -s "$work/port" ]; do kill -0 $pid || { cat "$work/server.log"; exit 1; }; sleep 0.2; done
url=http://127.0.0.1:$(cat "$work/port")
A="Authorization: Bearer soak"
end=$(( $(date +%s) + S ))
n=0
while [ "$(date +%s)" -lt "$end" ]; do
	n=$((n + 1))
	pids=
	curl -s -H "$A" "$url/v1/completions" -d '{"prompt":"Once upon a time","max_tokens":40,"n":2,"logprobs":3}' >/dev/null &
	pids="$pids $!"
	curl -sN -H "$A" "$url/v1/chat/completions" -d '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":30,"stream":true,"logprobs":true,"top_logprobs":2,"stream_options":{"include_usage":true}}' >/dev/null &
	pids="$pids $!"
	curl -sN -m 0.2 -H "$A" "$url/v1/completions" -d '{"prompt":"Once","max_tokens":2000,"ignore_eos":true,"stream":true}' >/dev/null 2>&1 &
	pids="$pids $!"
	curl -s -m 0.2 -H "$A" "$url/v1/completions" -d '{"prompt":"Once","max_tokens":2000,"ignore_eos":true}' >/dev/null 2>&1 &
	pids="$pids $!"
	curl -s -H "$A" "$url/v1/completions" -d '{"prompt": "x", ' >/dev/null &
	pids="$pids $!"
	curl -s -H "$A" "$url/v1/completions" -d "{\"prompt\":\"$(head -c 70000 /dev/zero | tr '\0' a)\"}" >/dev/null &
	pids="$pids $!"
	curl -s "$url/v1/models" >/dev/null &
	pids="$pids $!"
	curl -s "$url/metrics" >/dev/null &
	pids="$pids $!"
	curl -s -H "$A" "$url/v1/completions" -d '{"prompt":["The dog","The cat"],"max_tokens":8,"echo":true,"stop":["."]}' >/dev/null &
	pids="$pids $!"
	for p in $pids; do wait "$p" || true; done
done
kill -TERM $pid
status=0; wait $pid || status=$?
printf '%s\n' '{"id":1,"prompt":"Once","max_tokens":20}' 'not json' \
	'{"id":2,"messages":[{"role":"user","content":"Hi"}],"max_tokens":5,"n":3}' \
	'{"id":3,"prompt":"x","temperature":9}' > "$work/in.jsonl"
ostatus=0
"$bin" -m "$model" -t 1 --offline < "$work/in.jsonl" > "$work/out.jsonl" 2> "$work/offline.log" || ostatus=$?
echo "soak: $n rounds of 9 requests in ${S}s; server exit $status; offline exit $ostatus (4 expected)"
bad=0
for f in "$work/server.log" "$work/offline.log"; do
	if grep -E "Sanitizer|runtime error" "$f" >/dev/null; then
		echo "soak: sanitizer reports in $f:"; grep -E -A12 "Sanitizer|runtime error" "$f" | head -60
		bad=1
	fi
done
[ "$status" = 0 ] && [ "$ostatus" = 4 ] && [ "$bad" = 0 ] && { echo "soak: PASS (no leaks, no errors)"; exit 0; }
echo "soak: FAIL"; exit 1
