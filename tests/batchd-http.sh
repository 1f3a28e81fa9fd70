#!/bin/sh
# llm-batchd over HTTP with curl: completions and chat (plain and streamed)
# against llm-generate's greedy text, models, health, metrics, every
# error status (400, 401, 404, 413, 429), and a client that goes away
# mid-stream freeing its sequence at once (seen in /metrics).
set -u
. "${LLMKIT_SRC:-.}/tests/batchd-lib.sh"

key=sekrit
start_server --api-key "$key" --max-body 65536 --max-prefill-tokens 8
auth="Authorization: Bearer $key"
post() {  # post PATH BODY OUT: prints the HTTP status
	curl -s -o "$3" -w '%{http_code}' -H "$auth" -H 'Content-Type: application/json' \
		"$url$1" -d "$2"
}

# --- health, models
check "health" [ "$(curl -s "$url/health")" = '{"status":"ok"}' ]
curl -s -H "$auth" "$url/v1/models" > "$tmp/models"
check "models lists stories260K" [ "$(jget "$tmp/models" 'j["data"][0]["id"]')" = stories260K ]

# --- completion: greedy text equals llm-generate's
want=$("$gen" -m "$model" -p "Once upon a time" --temp 0 -n 24 -t 1 --no-stream)
code=$(post /v1/completions '{"model":"stories260K","prompt":"Once upon a time","max_tokens":24,"temperature":0}' "$tmp/c1")
check "completion 200" [ "$code" = 200 ]
check "completion text = llm-generate" [ "$(jget "$tmp/c1" 'j["choices"][0]["text"]')" = "$want" ]
check "completion usage" [ "$(jget "$tmp/c1" '(j["usage"]["completion_tokens"], j["usage"]["total_tokens"] - j["usage"]["prompt_tokens"], j["object"])')" = "(24, 24, 'text_completion')" ]

# --- streamed completion: the same text in chunks, then [DONE]
curl -sN -H "$auth" "$url/v1/completions" \
	-d '{"prompt":"Once upon a time","max_tokens":24,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}' > "$tmp/s1"
check "stream ends with [DONE]" [ "$(grep -v '^$' "$tmp/s1" | tail -n 1)" = "data: [DONE]" ]
python3 - "$tmp/s1" "$want" > "$tmp/s1.out" <<'PY'
import json, sys
text, fin, usage = "", None, None
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("data: ") or line == "data: [DONE]":
        continue
    c = json.loads(line[6:])
    for ch in c["choices"]:
        text += ch["text"]
        fin = ch["finish_reason"] or fin
    usage = c.get("usage") or usage
print(text == sys.argv[2], fin, usage["completion_tokens"])
PY
check "stream text = llm-generate, finish length, usage" [ "$(cat "$tmp/s1.out")" = "True length 24" ]

# --- chat, plain and streamed, same greedy text
body='{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Tell a story."}],"max_tokens":16,"temperature":0'
code=$(post /v1/chat/completions "$body}" "$tmp/ch1")
check "chat 200" [ "$code" = 200 ]
check "chat reply object" [ "$(jget "$tmp/ch1" '(j["object"], j["choices"][0]["message"]["role"], j["usage"]["completion_tokens"] > 0)')" = "('chat.completion', 'assistant', True)" ]
curl -sN -H "$auth" "$url/v1/chat/completions" -d "$body,\"stream\":true}" > "$tmp/ch2"
python3 - "$tmp/ch1" "$tmp/ch2" > "$tmp/ch.out" <<'PY'
import json, sys
whole = json.load(open(sys.argv[1]))["choices"][0]["message"]["content"]
text, role = "", None
for line in open(sys.argv[2]):
    line = line.strip()
    if line.startswith("data: {"):
        d = json.loads(line[6:])["choices"][0]["delta"]
        role = d.get("role", role)
        text += d.get("content") or ""
print(role, text == whole and len(text) > 0)
PY
check "chat stream = chat reply" [ "$(cat "$tmp/ch.out")" = "assistant True" ]

# --- n, seed, logprobs
code=$(post /v1/completions '{"prompt":"The dog","max_tokens":8,"n":3,"seed":7,"logprobs":2}' "$tmp/n3")
check "n=3 with logprobs" [ "$code" = 200 ] && \
check "n=3: 3 choices, 8 tokens with 2 alternatives each" [ "$(jget "$tmp/n3" '(len(j["choices"]), [len(c["logprobs"]["token_logprobs"]) for c in j["choices"]], len(j["choices"][0]["logprobs"]["top_logprobs"][0]))')" = "(3, [8, 8, 8], 2)" ]
post /v1/completions '{"prompt":"The dog","max_tokens":8,"n":3,"seed":7}' "$tmp/n3b" >/dev/null
check "seeded replies repeat" [ "$(jget "$tmp/n3" '[c["text"] for c in j["choices"]]')" = "$(jget "$tmp/n3b" '[c["text"] for c in j["choices"]]')" ]
code=$(post /v1/completions '{"prompt":"The dog","max_tokens":30,"temperature":0,"stop":["ball"]}' "$tmp/stop")
check "stop string cut" [ "$(jget "$tmp/stop" '(j["choices"][0]["text"], j["choices"][0]["finish_reason"])')" = "(' was a big, red ', 'stop')" ]

# --- 32 greedy requests at once (sharing a prompt prefix, prefilled in
# chunks of 8 tokens) give the same text as each one alone
python3 - "$url" "$key" > "$tmp/batch32" <<'PY'
import json, sys, threading, urllib.request
url, key = sys.argv[1], sys.argv[2]
stem = "Once upon a time, there was a little girl named Lily. She loved to play outside. "
prompts = [stem + e for e in ["One day", "Her mom", "The sun", "A dog", "She saw",
                              "Then", "Tom", "The park"]] * 4
def ask(p, n):
    req = urllib.request.Request(url + "/v1/completions", data=json.dumps(
        {"prompt": p, "max_tokens": n, "temperature": 0}).encode(),
        headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=60))
alone = [ask(p, 20 + i)["choices"][0]["text"] for i, p in enumerate(prompts[:8])]
out = [None] * 32
def run(i):
    out[i] = ask(prompts[i], 20 + i % 8)
ts = [threading.Thread(target=run, args=(i,)) for i in range(32)]
[t.start() for t in ts]; [t.join() for t in ts]
same = sum(out[i]["choices"][0]["text"] == alone[i % 8] for i in range(32))
cached = sum(o["usage"]["prompt_tokens_details"]["cached_tokens"] for o in out)
print(same, cached > 0)
PY
check "32 at once = each alone (greedy, chunked prefill, prefix cache)" [ "$(cat "$tmp/batch32")" = "32 True" ]

# --- errors
code=$(post /v1/completions '{"prompt": "x", "max_tokens": ' "$tmp/e1")
check "malformed JSON: 400 with an error object" [ "$code" = 400 ] && \
check "error object" [ "$(jget "$tmp/e1" '(j["error"]["type"], "JSON" in j["error"]["message"])')" = "('invalid_request_error', True)" ]
code=$(post /v1/completions '{"prompt":"x","temperature":"hot"}' "$tmp/e2")
check "bad field: 400" [ "$code" = 400 ] && check "names the field" [ "$(jget "$tmp/e2" 'j["error"]["param"]')" = temperature ]
long=$(python3 -c 'print("Once upon a time " * 600)')
code=$(post /v1/completions "{\"prompt\":\"$long\"}" "$tmp/e3")
check "prompt over the context: 400" [ "$code" = 400 ] && \
check "context_length_exceeded" [ "$(jget "$tmp/e3" 'j["error"]["code"]')" = context_length_exceeded ]
big=$(python3 -c 'print("a" * 100000)')
code=$(post /v1/completions "{\"prompt\":\"$big\"}" "$tmp/e4")
check "oversized body: 413" [ "$code" = 413 ]
code=$(curl -s -o "$tmp/e5" -w '%{http_code}' "$url/v1/completions" -d '{"prompt":"x"}')
check "no API key: 401" [ "$code" = 401 ]
code=$(curl -s -o "$tmp/e5" -w '%{http_code}' -H "Authorization: Bearer wrong" "$url/v1/models")
check "wrong API key: 401" [ "$code" = 401 ]
code=$(post /v1/completions '{"model":"gpt-4","prompt":"x"}' "$tmp/e6")
check "unknown model: 404" [ "$code" = 404 ]
code=$(post /v1/nothing '{}' "$tmp/e7")
check "unknown path: 404" [ "$code" = 404 ]

# --- metrics
curl -s "$url/metrics" > "$tmp/metrics"
for m in llmkit_requests_waiting llmkit_requests_running llmkit_kv_blocks_used \
	'llmkit_batch_size_bucket{le="+Inf"}' llmkit_step_seconds_count \
	llmkit_ttft_seconds_sum llmkit_tpot_seconds_count llmkit_e2e_seconds_count \
	llmkit_tokens_per_second llmkit_preemptions_total llmkit_server_overhead_ratio; do
	grep -q "^$m " "$tmp/metrics" || fail "metrics: no $m"
done
check "metrics count the requests" [ "$(awk '$1 == "llmkit_e2e_seconds_count" {print ($2 >= 8)}' "$tmp/metrics")" = 1 ]

# --- a client that goes away mid-stream frees its sequence at once
canceled0=$(metric 'llmkit_requests_total{outcome="canceled"}')
curl -sN -m 1 -H "$auth" "$url/v1/completions" \
	-d '{"prompt":"Once","max_tokens":100000,"ignore_eos":true,"stream":true,"n":8}' > "$tmp/gone" 2>/dev/null &
cpid=$!
i=0; while [ ! -s "$tmp/gone" ] && [ $i -lt 50 ]; do sleep 0.05; i=$((i + 1)); done
kill "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null
sleep 0.3
check "stream was running" [ -s "$tmp/gone" ]
check "disconnect: nothing running" [ "$(metric llmkit_requests_running)" = 0 ]
check "disconnect: request canceled" [ "$(metric 'llmkit_requests_total{outcome="canceled"}')" -gt "$canceled0" ]
check "disconnect: KV blocks freed" [ "$(metric llmkit_kv_blocks_used)" = 0 ]
# the same for a plain (not streamed) request
canceled1=$(metric 'llmkit_requests_total{outcome="canceled"}')
curl -s -m 0.2 -H "$auth" "$url/v1/completions" \
	-d '{"prompt":"Once","max_tokens":100000,"ignore_eos":true,"n":8}' > /dev/null 2>&1
sleep 0.3
check "plain request disconnect: nothing running" [ "$(metric llmkit_requests_running)" = 0 ]
check "plain request disconnect: canceled" [ "$(metric 'llmkit_requests_total{outcome="canceled"}')" -ge $((canceled1 + 8)) ]
stop_server
check "exit 0 on SIGTERM" [ "$server_status" = 0 ]

# --- a full queue: 429 with Retry-After
start_server -c 2048 --max-batch 1 --max-queue 1
pids=
for i in 1 2 3 4 5; do
	curl -s -D "$tmp/h$i" -o /dev/null "$url/v1/completions" \
		-d '{"prompt":"Once","max_tokens":1500,"ignore_eos":true}' &
	pids="$pids $!"
done
for p in $pids; do wait "$p"; done
n429=$(grep -l '^HTTP/1.1 429' "$tmp"/h? | wc -l)
check "full queue: some 429 ($n429)" [ "$n429" -ge 1 ]
check "429 has Retry-After" grep -qi '^Retry-After: 1' $(grep -l '^HTTP/1.1 429' "$tmp"/h? | head -n 1)
n200=$(grep -l '^HTTP/1.1 200' "$tmp"/h? | wc -l)
check "full queue: the others served ($n200)" [ "$n200" -ge 1 ]
stop_server
finish
