#!/bin/sh
# make-support-adapters.sh - the multi-LoRA demo adapters from real text:
# one LoRA adapter per customer-service category of the Bitext support
# corpus (ORDER, REFUND, DELIVERY, ACCOUNT, ...), trained with
# llm-lora-train on that category's instruction -> response pairs, written
# as PEFT directories named after the category (lower case, '_' -> '-') into
# one adapters directory that llm-batchd --adapters serves:
#
#   scripts/make-support-adapters.sh [OUT_DIR]
#   llm-batchd -m "$MODEL" --adapters OUT_DIR
#   curl localhost:8080/v1/completions -d '{"model": "refund", "prompt": "..."}'
#
# A tenth of each category is held out (OUT_DIR/.data/CATEGORY-eval.jsonl)
# and its loss before / after is printed, so each adapter's effect shows.
#
# Environment: LLMKIT_BIN (build directory, default: the source tree),
# LLMKIT_DATA (default ../shared/data), MODEL (default: stories260K from
# LLMKIT_DATA), RANK (8), STEPS (200 per category), CTX (256), THREADS (2),
# CATEGORIES (default: all, e.g. "ORDER REFUND").
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
bin=${LLMKIT_BIN:-$src}
data=${LLMKIT_DATA:-$src/../shared/data}
csv=$data/support/bitext-customer-support.csv
model=${MODEL:-$data/models/stories260K.gguf}
out=${1:-adapters}
train=$bin/tools/llm-lora-train

[ -x "$train" ] || { echo "$0: $train not built (llm-lora-train is on the" \
	"train branch)" >&2; exit 1; }
[ -r "$csv" ] || { echo "$0: $csv not found" >&2; exit 1; }
mkdir -p "$out/.data"

# per category: train / eval JSONL of {"prompt", "completion"}
python3 - "$csv" "$out/.data" "${CATEGORIES:-}" <<'PY'
import csv, json, os, random, sys
path, dst, only = sys.argv[1], sys.argv[2], sys.argv[3].split()
rows = {}
with open(path, newline="", encoding="utf-8") as f:
    for r in csv.DictReader(f):
        rows.setdefault(r["category"], []).append(
            {"prompt": "Customer: " + r["instruction"].strip() + "\nAgent:",
             "completion": " " + r["response"].strip()})
for cat, items in sorted(rows.items()):
    if only and cat not in only:
        continue
    random.Random(cat).shuffle(items)
    k = max(1, len(items) // 10)
    for name, part in (("eval", items[:k]), ("train", items[k:])):
        with open(os.path.join(dst, "%s-%s.jsonl" % (cat, name)), "w") as f:
            for it in part:
                f.write(json.dumps(it) + "\n")
    print(cat)
PY
for f in "$out"/.data/*-train.jsonl; do
	cat=$(basename "$f" -train.jsonl)
	name=$(echo "$cat" | tr 'A-Z_' 'a-z-')
	eval=$out/.data/$cat-eval.jsonl
	echo "== $cat -> $out/$name"
	"$train" -m "$model" --data "$f" --eval-data "$eval" -r "${RANK:-8}" \
		--steps "${STEPS:-200}" --ctx "${CTX:-256}" -t "${THREADS:-2}" \
		--eval-every 0 -q -o "$out/$name.tmp"
	before=$("$train" -m "$model" --eval-data "$eval" --eval-only -q \
		-t "${THREADS:-2}" 2>&1 | tail -n 1)
	after=$("$train" -m "$model" --init "$out/$name.tmp" --eval-data "$eval" \
		--eval-only -q -t "${THREADS:-2}" 2>&1 | tail -n 1)
	rm -rf "$out/$name"
	mv "$out/$name.tmp" "$out/$name"
	rm -f "$out/$name/checkpoint.llmt"
	echo "   held-out before: $before"
	echo "   held-out after:  $after"
done
echo "adapters in $out: $(ls "$out" | tr '\n' ' ')"
