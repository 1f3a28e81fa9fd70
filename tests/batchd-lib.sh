# Shared by the llm-batchd tests (sourced): find the model, start and stop
# a server on a free port, count failures.  Skips (77) without the model,
# curl or python3 (used to read JSON).
: "${LLMKIT_DATA:=../shared/data}" "${LLMKIT_BIN:=.}" "${LLMKIT_SRC:=.}"
model=$LLMKIT_DATA/models/stories260K.gguf
[ -r "$model" ] || { echo "SKIP: $model not found"; exit 77; }
command -v curl >/dev/null 2>&1 || { echo "SKIP: curl not found"; exit 77; }
command -v python3 >/dev/null 2>&1 || { echo "SKIP: python3 not found"; exit 77; }
batchd="$LLMKIT_BIN/tools/llm-batchd"
gen="$LLMKIT_BIN/tools/llm-generate"
tmp=$(mktemp -d)
server_pid=
cleanup() {
	[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }
check() {  # check NAME COMMAND...: ok when the command succeeds
	name=$1; shift
	if "$@"; then ok "$name"; else fail "$name"; fi
}
finish() { [ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }; exit 0; }

# start_server ARGS...: background llm-batchd on a free port; sets $url
start_server() {
	rm -f "$tmp/port"
	"$batchd" -m "$model" --listen 127.0.0.1:0 --port-file "$tmp/port" -t 1 "$@" \
		2> "$tmp/server.err" &
	server_pid=$!
	i=0
	while [ ! -s "$tmp/port" ] && [ $i -lt 100 ]; do
		kill -0 "$server_pid" 2>/dev/null || break
		sleep 0.1; i=$((i + 1))
	done
	if [ ! -s "$tmp/port" ]; then
		echo "FAIL: server did not start"; cat "$tmp/server.err"; exit 1
	fi
	url="http://127.0.0.1:$(cat "$tmp/port")"
}

# stop_server: SIGTERM, wait; sets $server_status
stop_server() {
	kill -TERM "$server_pid"
	wait "$server_pid"; server_status=$?
	server_pid=
}

# jget FILE EXPR: print a Python expression over the JSON in FILE (as j)
jget() {
	python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# metric NAME: a value from /metrics (first sample whose name+labels match)
metric() {
	curl -s "$url/metrics" | awk -v n="$1" '$1 == n { print $2; exit }'
}
