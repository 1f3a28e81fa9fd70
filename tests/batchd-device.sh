#!/bin/sh
# llm-batchd --device: bad values are usage errors (exit 2); without a GPU
# (or in a build without CUDA) --device cuda fails cleanly: exit 1, one
# line saying why, no replies.  With a GPU, an offline batch of requests
# over mixed random adapters (tests/mlora-gen) gives the CPU's greedy text
# on the GPU, also with two adapters resident at a time (evictions free
# their device copies; reloaded ones are placed again).
set -u
. "${LLMKIT_SRC:-.}/tests/batchd-lib.sh"

"$batchd" --help > "$tmp/help" 2>&1
check "--help lists --device" grep -q -- "--device" "$tmp/help"
for bad in gpu cuda:x cuda: cpu0; do
	"$batchd" -m "$model" --device "$bad" --offline < /dev/null > /dev/null 2> "$tmp/err"
	rc=$?
	check "--device $bad: exit 2 ($rc)" [ "$rc" = 2 ]
	check "--device $bad: says --device" grep -q -- "--device" "$tmp/err"
done

cat > "$tmp/in.jsonl" <<'J'
{"id": "a", "prompt": "Once upon a time", "max_tokens": 24, "temperature": 0}
{"id": "b", "prompt": "The little dog", "max_tokens": 16, "temperature": 0}
J
run() { "$batchd" -m "$model" -t 2 --kv-type f32 --offline "$@"; }
run --device cpu < "$tmp/in.jsonl" > "$tmp/cpu.jsonl" 2> "$tmp/cpu.err"
check "--device cpu: exit 0" [ $? = 0 ]
check "--device cpu: 2 replies" [ "$(wc -l < "$tmp/cpu.jsonl")" = 2 ]

run --device cuda < "$tmp/in.jsonl" > "$tmp/cuda.jsonl" 2> "$tmp/cuda.err"
rc=$?
if [ "$rc" != 0 ]; then
	check "--device cuda without a device: exit 1 ($rc)" [ "$rc" = 1 ]
	check "--device cuda without a device: one line ($(cat "$tmp/cuda.err"))" \
		[ "$(wc -l < "$tmp/cuda.err")" = 1 ]
	check "--device cuda without a device: says why" \
		grep -Eq "^llm-batchd: device cuda(:[0-9]+)?: (no CUDA device|this build has no CUDA)" \
		"$tmp/cuda.err"
	check "--device cuda without a device: no replies" [ ! -s "$tmp/cuda.jsonl" ]
	# the server the same (it stops before listening)
	"$batchd" -m "$model" --device cuda:1 --listen 127.0.0.1:0 > /dev/null 2> "$tmp/err"
	rc=$?
	check "server --device cuda:1: exit 1 ($rc)" [ "$rc" = 1 ]
	check "server --device cuda:1: one line" [ "$(wc -l < "$tmp/err")" = 1 ]
	echo "no CUDA device here: llm-batchd --device cuda fails cleanly"
	finish
fi

# a GPU: the same text as the CPU's, alone and over adapters
text() { python3 -c 'import json, sys
for l in open(sys.argv[1]):
    o = json.loads(l)
    print(o["id"], json.dumps(o["choices"][0]["text"]) if "choices" in o else "ERROR")' "$1" | sort; }
check "--device cuda: greedy text equals the CPU's" \
	[ "$(text "$tmp/cpu.jsonl")" = "$(text "$tmp/cuda.jsonl")" ]

"$LLMKIT_BIN/tests/mlora-gen" "$model" "$tmp/ad" 6 5 0 all 0.15 ||
	{ echo "FAIL: mlora-gen"; exit 1; }
python3 - > "$tmp/mixed.jsonl" <<'PY'
import json
prompts = ["Once upon a time", "The little dog", "Lily and Ben", "One day"]
for i in range(14):
    a = i % 7
    print(json.dumps({"id": i, "model": "base" if a == 6 else "a%d" % a,
                      "prompt": prompts[i % 4], "max_tokens": 24,
                      "temperature": 0}))
PY
run --device cpu --adapters "$tmp/ad" < "$tmp/mixed.jsonl" > "$tmp/m-cpu.jsonl" 2> /dev/null
run --device cuda --adapters "$tmp/ad" < "$tmp/mixed.jsonl" > "$tmp/m-cuda.jsonl" 2> "$tmp/err"
check "adapters on cuda: exit 0 ($(tail -1 "$tmp/err"))" [ $? = 0 ]
check "adapters on cuda: 14 replies" [ "$(wc -l < "$tmp/m-cuda.jsonl")" = 14 ]
check "adapters on cuda: the CPU's text" \
	[ "$(text "$tmp/m-cpu.jsonl")" = "$(text "$tmp/m-cuda.jsonl")" ]
run --device cuda --adapters "$tmp/ad" --max-active-adapters 2 < "$tmp/mixed.jsonl" \
	> "$tmp/m-evict.jsonl" 2> "$tmp/err"
check "adapters on cuda, 2 resident: exit 0 ($(tail -1 "$tmp/err"))" [ $? = 0 ]
check "adapters on cuda, 2 resident: the CPU's text" \
	[ "$(text "$tmp/m-cpu.jsonl")" = "$(text "$tmp/m-evict.jsonl")" ]
finish
