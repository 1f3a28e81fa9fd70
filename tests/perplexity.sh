#!/bin/sh
# llm-perplexity: the NLL of one window against the float64 numpy reference
# (tests/ref/llama_ref.py, which reads the model with the gguf package);
# batches of windows, threads and .gz input change nothing; KL of a model
# against itself is 0 with full top-1 agreement, against q8_0 small; bad
# options and input fail with a message.
set -u
: "${LLMKIT_DATA:=../shared/data}" "${LLMKIT_BIN:=.}" "${LLMKIT_SRC:=.}"
model=$LLMKIT_DATA/models/stories260K.gguf
text=$LLMKIT_DATA/text/tinystories-val.txt
[ -r "$model" ] && [ -r "$text" ] || { echo "SKIP: stories260K or text not found"; exit 77; }
P=$LLMKIT_BIN/tools/llm-perplexity
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
num_eq() { python3 -c "import sys; a,b,t=map(float,sys.argv[1:]); sys.exit(abs(a-b)>t)" "$1" "$2" "$3"; }
command -v python3 >/dev/null || { echo "SKIP: python3 needed"; exit 77; }

head -c 12000 "$text" > "$tmp/t.txt"
run() { "$P" -m "$model" -f "$tmp/t.txt" --kv-type f32 --json "$@"; }
run -c 128 -b 1 -t 1 > "$tmp/a.json" || bad "llm-perplexity failed"
run -c 128 -b 4 -t 2 > "$tmp/b.json" || bad "batched run failed"
gzip -c "$tmp/t.txt" > "$tmp/t.txt.gz"
"$P" -m "$model" -f "$tmp/t.txt.gz" --kv-type f32 --json -c 128 > "$tmp/g.json" || bad ".gz failed"
num_eq "$(field "$tmp/a.json" nll)" "$(field "$tmp/b.json" nll)" 1e-6 || bad "batches/threads change the NLL"
num_eq "$(field "$tmp/a.json" nll)" "$(field "$tmp/g.json" nll)" 1e-6 || bad ".gz changes the NLL"
"$P" -m "$model" --kv-type f32 --json -c 128 < "$tmp/t.txt" > "$tmp/i.json" || bad "standard input failed"
num_eq "$(field "$tmp/a.json" nll)" "$(field "$tmp/i.json" nll)" 1e-6 || bad "standard input changes the NLL"
p=$(field "$tmp/a.json" perplexity)
python3 -c "import sys; sys.exit(not 2.0 < float(sys.argv[1]) < 8.0)" "$p" || bad "implausible perplexity $p"
# every token but the first scored once; stride 64 over windows of 128
[ "$(field "$tmp/a.json" scored)" = $(( $(field "$tmp/a.json" tokens) - 1 )) ] || bad "scored count"

# one window against the reference: NLL of tokens 1..n-1
printf 'Once upon a time, there was a little dog named Max. Max liked to run in the park with his friend, a big red ball.' > "$tmp/s.txt"
"$P" -m "$model" -f "$tmp/s.txt" --kv-type f32 --json -c 512 --stride 512 > "$tmp/s.json" || bad "short text failed"
if python3 -c 'import numpy, gguf' 2>/dev/null; then
	ids=$("$LLMKIT_BIN/tools/llm-tokenize" -m "$model" -f "$tmp/s.txt" | tr ' ' ',')
	python3 "$LLMKIT_SRC/tests/ref/llama_ref.py" "$model" "$ids" > "$tmp/logits.txt"
	ref=$(python3 - "$tmp/logits.txt" "$ids" <<'PY'
import sys, numpy as np
L = np.loadtxt(sys.argv[1], ndmin=2)
ids = [int(x) for x in sys.argv[2].split(",")]
nll = [np.log(np.exp(L[i] - L[i].max()).sum()) + L[i].max() - L[i][ids[i + 1]]
       for i in range(len(ids) - 1)]
print(np.mean(nll))
PY
)
	num_eq "$(field "$tmp/s.json" nll)" "$ref" 1e-4 || bad "NLL $(field "$tmp/s.json" nll) != reference $ref"
fi

# KL: a model against itself, and q8_0 against f32
"$P" -m "$model" --kl-base "$model" -f "$tmp/t.txt" -c 128 --json > "$tmp/k.json" || bad "--kl-base failed"
num_eq "$(field "$tmp/k.json" kl)" 0 1e-9 || bad "KL of a model with itself is $(field "$tmp/k.json" kl)"
num_eq "$(field "$tmp/k.json" top1)" 1 0 || bad "top-1 agreement with itself"
"$LLMKIT_BIN/tools/llm-quantize" -q -t q8_0 "$model" "$tmp/q8.gguf"
"$P" -m "$tmp/q8.gguf" --kl-base "$model" -f "$tmp/t.txt" -c 128 --json > "$tmp/q.json" || bad "q8_0 KL failed"
python3 - "$tmp/q.json" "$tmp/k.json" <<'PY' || bad "q8_0 KL statistics implausible: $(cat "$tmp/q.json")"
import json, sys
q, k = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert 0 < q["kl"] < 0.01 and q["top1"] > 0.95, q
assert abs(q["base_perplexity"] - k["perplexity"]) < 1e-9   # base run = f32 run
assert abs(q["perplexity"] / q["base_perplexity"] - 1) < 0.01
PY
"$P" -m "$model" -f "$tmp/t.txt" -c 128 > "$tmp/h.txt" || bad "text output failed"
grep -q "^perplexity: " "$tmp/h.txt" || bad "no perplexity line"

# bad input
"$P" -m "$model" < /dev/null 2> "$tmp/err"; [ $? = 1 ] || bad "empty standard input not exit 1"
grep -q "fewer than 2 tokens" "$tmp/err" || bad "empty input message: $(cat "$tmp/err")"
"$P" -m "$model" -f "$tmp/nope.txt" 2> "$tmp/err"; [ $? = 1 ] || bad "missing file not exit 1"
grep -q "nope.txt" "$tmp/err" || bad "missing file message: $(cat "$tmp/err")"
"$P" -m "$model" -f "$tmp/t.txt" -c 64 --stride 65 2>/dev/null; [ $? = 2 ] || bad "stride > ctx accepted"
"$P" -m "$model" -f "$tmp/t.txt" -c abc 2>/dev/null; [ $? = 2 ] || bad "bad -c accepted"
printf '' > "$tmp/empty.txt"
"$P" -m "$model" -f "$tmp/empty.txt" 2> "$tmp/err"; [ $? = 1 ] || bad "empty text accepted"
grep -q "fewer than 2 tokens" "$tmp/err" || bad "empty text message: $(cat "$tmp/err")"
exit $fail
