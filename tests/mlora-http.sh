#!/bin/sh
# Multi-LoRA serving over HTTP (llm-batchd --adapters DIR):
# /v1/models lists the base and the adapters; 20 concurrent requests over 5
# adapters with --max-active-adapters 2 give the texts of a run without
# limits while adapters are evicted (never more than 2 resident);
# GET /v1/adapters, POST /v1/adapters/load and /unload by name, /rescan;
# unloading an adapter in use waits for its requests (which finish well);
# an unknown adapter is a 404 naming it; a corrupt one a clear error;
# per-adapter series in /metrics.
set -u
. "${LLMKIT_SRC:-.}/tests/batchd-lib.sh"
mgen="$LLMKIT_BIN/tests/mlora-gen"
ad=$tmp/adapters
"$mgen" "$model" "$ad" 5 3 0 all 0.15 || { echo "FAIL: mlora-gen"; exit 1; }
head -c 2000 "$ad/a1.gguf" > "$ad/broken.gguf"

python3 - > "$tmp/in.jsonl" <<'PY'
import json
prompts = ["Once upon a time", "The little dog", "Lily and Ben", "One day"]
for i in range(20):
    print(json.dumps({"id": i, "model": "a%d" % (i % 5), "prompt": prompts[i % 4],
                      "max_tokens": 24, "temperature": 0}))
PY
"$batchd" -m "$model" -t 2 --adapters "$ad" --offline < "$tmp/in.jsonl" \
	> "$tmp/ref.jsonl" 2>/dev/null

start_server --adapters "$ad" --max-active-adapters 2 -t 2
curl -s "$url/v1/models" > "$tmp/models"
check "/v1/models: base + 6 adapters" \
	[ "$(jget "$tmp/models" 'sorted(m["id"] for m in j["data"])')" = \
	  "['a0', 'a1', 'a2', 'a3', 'a4', 'broken', 'stories260K']" ]

python3 - "$url" "$tmp/in.jsonl" "$tmp/ref.jsonl" <<'PY' > "$tmp/conc"
import json, sys, threading, urllib.request
url, reqs = sys.argv[1], [json.loads(l) for l in open(sys.argv[2])]
ref = {o["id"]: o["choices"][0]["text"] for o in map(json.loads, open(sys.argv[3]))}
got, peak = {}, [0]
def one(r):
    body = dict(r); rid = body.pop("id")
    q = urllib.request.Request(url + "/v1/completions", json.dumps(body).encode(),
                               {"Content-Type": "application/json"})
    got[rid] = json.load(urllib.request.urlopen(q))["choices"][0]["text"]
def watch(stop):
    while not stop.is_set():
        a = json.load(urllib.request.urlopen(url + "/v1/adapters"))
        peak[0] = max(peak[0], a["resident"])
        stop.wait(0.005)
stop = threading.Event()
w = threading.Thread(target=watch, args=(stop,)); w.start()
ts = [threading.Thread(target=one, args=(r,)) for r in reqs]
[t.start() for t in ts]; [t.join() for t in ts]
stop.set(); w.join()
a = json.load(urllib.request.urlopen(url + "/v1/adapters"))
print(len(got), sum(got[k] == ref[k] for k in got), peak[0], a["evictions"])
PY
read n same peak ev < "$tmp/conc"
check "20 concurrent over 5 adapters, 2 resident: same text ($same of $n)" \
	[ "$n" = 20 ] && [ "$same" = 20 ]
check "never more than 2 resident (peak $peak)" [ "$peak" -le 2 ]
check "adapters were evicted ($ev)" [ "$ev" -ge 3 ]

curl -s "$url/v1/models/a2" > "$tmp/one"
check "/v1/models/a2: the adapter, parent the base" \
	[ "$(jget "$tmp/one" 'j["id"] + " " + j["parent"]')" = "a2 stories260K" ]
code=$(curl -s -o /dev/null -w '%{http_code}' "$url/v1/models/nosuch")
check "/v1/models/nosuch: 404" [ "$code" = 404 ]

# unknown adapter: 404 naming it
code=$(curl -s -o "$tmp/r" -w '%{http_code}' "$url/v1/completions" \
	-d '{"model": "nosuch", "prompt": "Once", "max_tokens": 2}')
check "unknown adapter: 404" [ "$code" = 404 ]
check "... naming it" grep -q "'nosuch'" "$tmp/r"
code=$(curl -s -o "$tmp/r" -w '%{http_code}' "$url/v1/adapters/load" -d '{"name": "../a0"}')
check "load ../a0: 400" [ "$code" = 400 ]
# corrupt adapter: a clear error for that request, the server serves on
code=$(curl -s -o "$tmp/r" -w '%{http_code}' "$url/v1/completions" \
	-d '{"model": "broken", "prompt": "Once", "max_tokens": 2}')
check "corrupt adapter: 500" [ "$code" = 500 ]
check "... adapter_error naming it" grep -q '"adapter_error".*\|adapter broken' "$tmp/r"
grep -q 'adapter broken: gguf' "$tmp/r" || { fail "message"; cat "$tmp/r"; }
code=$(curl -s -o "$tmp/r" -w '%{http_code}' "$url/v1/adapters/load" -d '{"name": "broken"}')
check "load broken: 422" [ "$code" = 422 ]
code=$(curl -s -o "$tmp/r" -w '%{http_code}' "$url/v1/completions" \
	-d '{"model": "a1", "prompt": "Once", "max_tokens": 2}')
check "others still served" [ "$code" = 200 ]

# load by name
code=$(curl -s -o "$tmp/r" -w '%{http_code}' "$url/v1/adapters/load" -d '{"name": "a3"}')
check "load a3: 200, resident" [ "$code" = 200 ] && \
	check "... resident" [ "$(jget "$tmp/r" 'j["state"]')" = resident ]

# unload while in use: waits for the requests, which finish well
python3 - "$url" <<'PY' > "$tmp/unload"
import json, sys, threading, time, urllib.request
url = sys.argv[1]
def post(path, body):
    q = urllib.request.Request(url + path, json.dumps(body).encode(),
                               {"Content-Type": "application/json"})
    try:
        r = urllib.request.urlopen(q); return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)
done = []
def gen():
    st, o = post("/v1/completions", {"model": "a3", "prompt": "Once", "max_tokens": 400,
                                     "ignore_eos": True, "temperature": 0})
    done.append((time.time(), st, o.get("usage", {}).get("completion_tokens")))
ts = [threading.Thread(target=gen) for _ in range(4)]
[t.start() for t in ts]
while True:   # until all four are in (and some run)
    a = json.load(urllib.request.urlopen(url + "/v1/adapters/a3"))
    if a["requests_in_flight"] == 4 and a["requests_running"] > 0: break
    time.sleep(0.002)
st, o = post("/v1/adapters/unload", {"name": "a3"})
t_unload = time.time()
[t.join() for t in ts]
print(st, o.get("state"), all(s == 200 and n == 400 for _, s, n in done),
      # the replies reach this client about when the unload's does
      all(t <= t_unload + 0.25 for t, _, _ in done))
PY
check "unload while in use waits: $(cat "$tmp/unload")" \
	[ "$(cat "$tmp/unload")" = "200 disk True True" ]

# rescan picks up a new adapter
cp "$ad/a1.gguf" "$ad/fresh.gguf"
curl -s -X POST "$url/v1/adapters/rescan" > "$tmp/r"
check "rescan: one added" [ "$(jget "$tmp/r" 'j["added"]')" = 1 ]
code=$(curl -s -o "$tmp/r" -w '%{http_code}' "$url/v1/completions" \
	-d '{"model": "fresh", "prompt": "Once", "max_tokens": 2}')
check "the new adapter serves" [ "$code" = 200 ]

curl -s "$url/v1/adapters" > "$tmp/list"
check "GET /v1/adapters: hit counts and sizes" \
	[ "$(jget "$tmp/list" '[(a["id"], a["hits"] > 0, a["disk_bytes"] > 0) for a in j["data"] if a["id"] == "a0"]')" = "[('a0', True, True)]" ]
curl -s "$url/metrics" > "$tmp/metrics"
check "metrics: per-adapter requests" grep -q '^llmkit_adapter_requests_total{adapter="a0"} 4$' "$tmp/metrics"
check "metrics: per-adapter tokens" grep -q '^llmkit_adapter_generation_tokens_total{adapter="a0"} 96$' "$tmp/metrics"
check "metrics: evictions and load time" grep -q '^llmkit_adapter_evictions_total{adapter=' "$tmp/metrics"
check "metrics: load seconds" grep -q '^llmkit_adapter_load_seconds_total{adapter="a1"} [0-9]' "$tmp/metrics"
stop_server
check "exit 0 on SIGTERM" [ "$server_status" = 0 ]
finish
