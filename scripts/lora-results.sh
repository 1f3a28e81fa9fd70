#!/bin/sh
# lora-results.sh - the fine-tuning results table of issue 4, on stories260K.
#
#   1. tinyshakespeare (last 10% held out): held-out perplexity of the base,
#      LoRA r=8 on all projections, QLoRA on a q4_k base, full fine-tuning,
#      and merged-then-q4_0 with and without --qat q4_0.
#   2. customer service: an adapter on one category of the Bitext support
#      set (instruction/response as JSONL prompt/completion), held-out loss
#      before and after, with greedy samples.
#
# usage: scripts/lora-results.sh [BUILD_DIR] [STEPS]   (markdown on stdout)
set -e
B=${1:-.}
STEPS=${2:-300}
DATA=${LLMKIT_DATA:-../shared/data}
M=$DATA/models/stories260K.gguf
TXT=$DATA/text/tinyshakespeare.txt
CSV=$DATA/support/bitext-customer-support.csv
T=${TMPDIR:-/tmp}/lora-results.$$
mkdir -p "$T"
trap 'rm -rf "$T"' EXIT
TR=$B/tools/llm-lora-train
COMMON="--ctx 128 --batch 8 --eval-split 0.1 --eval-max 100000 -t ${THREADS:-2}"
TRAIN="$COMMON --steps $STEPS --eval-every 0 --warmup 10 -q"

ppl() {   # model [adapter]
	if [ -n "$2" ]; then a="--init $2"; else a=; fi
	$TR -m "$1" --data "$TXT" $COMMON --eval-only $a | awk '{ print $4 }'
}

echo "uptime: $(uptime)" >&2
"$B/tools/llm-quantize" -q -t q4_k "$M" "$T/q4k.gguf"
"$B/tools/llm-quantize" -q -t q4_0 "$M" "$T/q40.gguf"

t0=$(date +%s)
$TR -m "$M" --data "$TXT" $TRAIN -r 8 --alpha 16 --lr 3e-3 -o "$T/lora"
t1=$(date +%s)
$TR -m "$T/q4k.gguf" --data "$TXT" $TRAIN -r 8 --alpha 16 --lr 3e-3 -o "$T/qlora"
t2=$(date +%s)
$TR -m "$M" --data "$TXT" $TRAIN --full --lr 1e-3 -o "$T/full.gguf"
t3=$(date +%s)
$TR -m "$M" --data "$TXT" $TRAIN -r 8 --alpha 16 --lr 3e-3 --qat q4_0 -o "$T/qat"
t4=$(date +%s)

for a in lora qat; do
	"$B/tools/llm-lora-merge" -m "$M" -a "$T/$a" -o "$T/m-$a.gguf"
	"$B/tools/llm-quantize" -q -t q4_0 "$T/m-$a.gguf" "$T/m-$a-q40.gguf"
done

base=$(ppl "$M"); base4k=$(ppl "$T/q4k.gguf"); base40=$(ppl "$T/q40.gguf")
lora=$(ppl "$M" "$T/lora"); qlora=$(ppl "$T/q4k.gguf" "$T/qlora")
full=$(ppl "$T/full.gguf")
ml=$(ppl "$T/m-lora.gguf"); ml4=$(ppl "$T/m-lora-q40.gguf")
mq=$(ppl "$T/m-qat.gguf"); mq4=$(ppl "$T/m-qat-q40.gguf")

cat <<TABLE
### stories260K on tinyshakespeare ($STEPS steps of 8 x 127 tokens, held-out last 10%)

| model | held-out ppl | train time |
|---|---:|---:|
| base (f32) | $base | |
| base q4_k file | $base4k | |
| base q4_0 | $base40 | |
| LoRA r=8, all projections (f32 base) | $lora | $((t1 - t0)) s |
| QLoRA r=8 on the q4_k file | $qlora | $((t2 - t1)) s |
| full fine-tuning | $full | $((t3 - t2)) s |
| LoRA merged, f32 | $ml | |
| LoRA merged, then q4_0 | $ml4 | |
| QAT (--qat q4_0) LoRA merged, f32 | $mq | $((t4 - t3)) s |
| QAT LoRA merged, then q4_0 | $mq4 | |

TABLE
awk -v b="$base" -v l="$lora" -v a="$ml" -v a4="$ml4" -v q="$mq" -v q4="$mq4" 'BEGIN {
	printf "LoRA / base perplexity: %.3f (target <= 0.5)\n", l / b
	printf "q4_0 cost, plain adapter: %+.3f ppl; QAT adapter: %+.3f ppl\n\n", a4 - a, q4 - q }'

# ---------------------------------------------------------------- support
CAT=${CATEGORY:-REFUND}
python3 - "$CSV" "$CAT" > "$T/support.jsonl" <<'PY'
import csv, json, sys
for r in csv.DictReader(open(sys.argv[1], newline="")):
    if r["category"] == sys.argv[2]:
        print(json.dumps({"prompt": "Customer: " + r["instruction"].strip() + "\nAgent:",
                          "completion": " " + r["response"].strip()}))
PY
SC="--ctx 256 --batch 8 --eval-split 0.1 --eval-max 100000 -t ${THREADS:-2}"
before=$($TR -m "$M" --data "$T/support.jsonl" $SC --eval-only | awk '{ print $2 }')
$TR -m "$M" --data "$T/support.jsonl" $SC --epochs ${EPOCHS:-3} --eval-every 0 --warmup 10 \
	-r 8 --alpha 16 --lr 3e-3 -q -o "$T/support"
after=$($TR -m "$M" --data "$T/support.jsonl" $SC --eval-only --init "$T/support" | awk '{ print $2 }')
n=$(wc -l < "$T/support.jsonl")
echo "### customer service: category $CAT ($n pairs, last 10% held out, ${EPOCHS:-3} epochs)"
echo
echo "held-out loss on the responses: before $before, after $after"
echo
P='Customer: I want my money back for the shoes I returned
Agent:'
echo '```'
echo "prompt: $P"
echo "--- base:"
"$B/tools/llm-generate" -m "$M" --greedy -n 60 -p "$P" 2>/dev/null | head -c 400; echo
echo "--- with the adapter:"
"$B/tools/llm-generate" -m "$M" --lora "$T/support" --greedy -n 60 -p "$P" 2>/dev/null | head -c 400; echo
echo '```'
