#!/bin/sh
# Multi-LoRA serving, offline mode (llm-batchd --adapters DIR --offline):
# - a batch of 32 requests (all in every step: adapters preloaded) over
#   16 random adapters (ranks 2..16, targets
#   all / attn / mlp / q,v; PEFT and GGUF) and the base model gives, for
#   every adapter X, the same greedy text as the same request alone on the
#   model merged with X by llm-lora-merge;
# - the same with --max-active-adapters 2 over 5 adapters (evictions);
# - an unknown adapter is a 404 error naming it, a name with a path in it
#   is refused, a symlink out of the directory is not served, a corrupt
#   adapter fails its own requests with a message naming it while the
#   others go on;
# - llm-generate --prompts with "model" per line and --adapters gives the
#   same text as llm-batchd.
set -u
. "${LLMKIT_SRC:-.}/tests/batchd-lib.sh"
mgen="$LLMKIT_BIN/tests/mlora-gen"
merge="$LLMKIT_BIN/tools/llm-lora-merge"
ad=$tmp/adapters

"$mgen" "$model" "$ad" 16 7 0 all 0.15 || { echo "FAIL: mlora-gen"; exit 1; }
python3 - > "$tmp/in.jsonl" <<'PY'
import json
prompts = ["Once upon a time", "The little dog", "Lily and Ben", "One day",
           "The sun was", "Tom had a"]
for i in range(32):
    a = i % 17
    model = "base" if a == 16 else "a%d" % a
    print(json.dumps({"id": i, "model": model, "prompt": prompts[i % 6],
                      "max_tokens": 32, "temperature": 0}))
PY
run() { "$batchd" -m "$model" -t 2 --kv-type f32 --offline "$@" 2> "$tmp/err"; }
run --adapters "$ad" --preload-adapters < "$tmp/in.jsonl" > "$tmp/mixed.jsonl"
check "mixed batch: exit 0" [ $? = 0 ]
check "mixed batch: 32 replies" [ "$(wc -l < "$tmp/mixed.jsonl")" = 32 ]
sed 's/"model": "[^"]*", //' "$tmp/in.jsonl" | run > "$tmp/base.jsonl"

# every adapter alone on its merged model
: > "$tmp/alone.jsonl"
for k in $(seq 0 15); do
	f=$ad/a$k; [ $((k % 2)) = 1 ] && f=$f.gguf
	"$merge" -m "$model" -a "$f" --dtype f32 -o "$tmp/m.gguf" ||
		{ fail "llm-lora-merge a$k"; continue; }
	python3 -c 'import json,sys
for l in open(sys.argv[1]):
    o = json.loads(l)
    if o["id"] == int(sys.argv[2]):
        del o["model"]; print(json.dumps(o))' "$tmp/in.jsonl" "$k" |
	"$batchd" -m "$tmp/m.gguf" -t 2 --kv-type f32 --offline 2>/dev/null >> "$tmp/alone.jsonl"
done
python3 - "$tmp/mixed.jsonl" "$tmp/alone.jsonl" "$tmp/base.jsonl" <<'PY' > "$tmp/cmp"
import json, sys
text = lambda o: o["choices"][0]["text"]
mixed = {o["id"]: o for o in map(json.loads, open(sys.argv[1]))}
alone = {o["id"]: o for o in map(json.loads, open(sys.argv[2]))}
same = sum(text(mixed[k]) == text(alone[k]) for k in alone)
# adapters change the text against the base model's
base = {o["id"]: o for o in map(json.loads, open(sys.argv[3]))}
changed = sum(text(mixed[k]) != text(base[k]) for k in alone)
same += text(mixed[16]) == text(base[16])   # the base request beside them
print(len(alone), same, changed)
for k in sorted(alone):
    if text(mixed[k]) != text(alone[k]):
        print("differs", k, repr(text(mixed[k])), repr(text(alone[k])), file=sys.stderr)
PY
read n_alone n_same n_changed < "$tmp/cmp"
check "16 adapters alone on merged models" [ "$n_alone" = 16 ]
check "mixed batch == merged alone for all 16 adapters and the base ($n_same)" [ "$n_same" = 17 ]
check "adapters change the text ($n_changed of 16)" [ "$n_changed" -ge 12 ]

# llm-generate --prompts with per-line adapters: the same text
"$gen" -m "$model" -t 2 --kv-type f32 --greedy --json --adapters "$ad" \
	--prompts "$tmp/in.jsonl" > "$tmp/gen.jsonl" 2> "$tmp/gen.err"
check "llm-generate --adapters: exit 0" [ $? = 0 ]
python3 - "$tmp/mixed.jsonl" "$tmp/gen.jsonl" <<'PY' > "$tmp/cmpg"
import json, sys
mixed = {o["id"]: o["choices"][0]["text"] for o in map(json.loads, open(sys.argv[1]))}
gen = {int(o["id"]): o["text"] for o in map(json.loads, open(sys.argv[2]))}
print(len(gen), sum(gen[k] == mixed[k] for k in gen))
PY
check "llm-generate --adapters == llm-batchd ($(cat "$tmp/cmpg"))" [ "$(cat "$tmp/cmpg")" = "32 32" ]

# eviction: 5 adapters, 2 in memory at once, still the same text
python3 -c 'import json,sys
for l in open(sys.argv[1]):
    o = json.loads(l)
    if o["id"] % 17 < 5: print(json.dumps(o))' "$tmp/in.jsonl" > "$tmp/five.jsonl"
run --adapters "$ad" --max-active-adapters 2 < "$tmp/five.jsonl" > "$tmp/five.out"
check "max-active 2: exit 0" [ $? = 0 ]
python3 - "$tmp/mixed.jsonl" "$tmp/five.out" <<'PY' > "$tmp/cmp5"
import json, sys
text = lambda o: o["choices"][0]["text"]
mixed = {o["id"]: o for o in map(json.loads, open(sys.argv[1]))}
five = [json.loads(l) for l in open(sys.argv[2])]
print(len(five), sum(text(o) == text(mixed[o["id"]]) for o in five))
PY
read n5 s5 < "$tmp/cmp5"
check "max-active 2 over 5 adapters: same text ($s5 of $n5)" [ "$n5" = 10 ] && [ "$s5" = 10 ]

# errors: unknown, path in the name, symlink out, corrupt
mkdir -p "$tmp/outside"
cp -r "$ad/a0" "$tmp/outside/x"
ln -s "$tmp/outside/x" "$ad/escape"
ln -s "$tmp/outside/x" "$ad/escape2.gguf" 2>/dev/null
head -c 3000 "$ad/a1.gguf" > "$ad/bad.gguf"
mkdir "$ad/badpeft"; cp "$ad/a0/adapter_config.json" "$ad/badpeft/"
printf 'not safetensors' > "$ad/badpeft/adapter_model.safetensors"
cat > "$tmp/err.jsonl" <<'J'
{"id": "ok1", "model": "a2", "prompt": "Lily and Ben", "max_tokens": 32, "temperature": 0}
{"id": "unknown", "model": "nosuch", "prompt": "Once", "max_tokens": 4}
{"id": "dotdot", "model": "../outside/x", "prompt": "Once", "max_tokens": 4}
{"id": "abs", "model": "/etc/passwd", "prompt": "Once", "max_tokens": 4}
{"id": "escape", "model": "escape", "prompt": "Once", "max_tokens": 4}
{"id": "bad", "model": "bad", "prompt": "Once", "max_tokens": 4}
{"id": "badpeft", "model": "badpeft", "prompt": "Once", "max_tokens": 4}
{"id": "bad2", "model": "bad", "prompt": "Once", "max_tokens": 4}
{"id": "ok2", "model": "a3", "prompt": "One day", "max_tokens": 32, "temperature": 0}
J
run --adapters "$ad" < "$tmp/err.jsonl" > "$tmp/err.out"
check "errors: exit 4 (some lines failed)" [ $? = 4 ]
python3 - "$tmp/err.out" "$tmp/mixed.jsonl" <<'PY' > "$tmp/errsum"
import json, sys
r = {o["id"]: o for o in map(json.loads, open(sys.argv[1]))}
mixed = {o["id"]: o for o in map(json.loads, open(sys.argv[2]))}
e = lambda k: r[k].get("error", {})
print(r["ok1"]["choices"][0]["text"] == mixed[2]["choices"][0]["text"],
      r["ok2"]["choices"][0]["text"] == mixed[3]["choices"][0]["text"])
print(e("unknown").get("status"), "'nosuch'" in e("unknown").get("message", ""))
print(e("dotdot").get("status"), e("abs").get("status"), e("escape").get("status"))
for k in ("bad", "bad2", "badpeft"):
    print(e(k).get("status"), e(k).get("type"), "adapter " + k.rstrip("2") in e(k).get("message", ""))
PY
cat > "$tmp/expect" <<'E'
True True
404 True
400 400 404
500 adapter_error True
500 adapter_error True
500 adapter_error True
E
if cmp -s "$tmp/errsum" "$tmp/expect"; then ok "errors"; else
	fail "errors"; diff "$tmp/expect" "$tmp/errsum"; cat "$tmp/err.out"; fi

# without --adapters an adapter name is an unknown model
echo '{"id": 1, "model": "a0", "prompt": "Once", "max_tokens": 4}' | run > "$tmp/noad.out"
check "no --adapters: 404" [ "$(jget "$tmp/noad.out" 'j["error"]["status"]')" = 404 ]
finish
