#!/bin/sh
# llm-bench on stories260K with tiny sizes: the CSV, JSON and table outputs
# are well formed, hold the expected rows with positive numbers, beam search
# scores at least greedy, and bad options fail cleanly.  No timing is
# asserted (scripts/bench/ does timing).
set -u
: "${LLMKIT_DATA:=../shared/data}" "${LLMKIT_BIN:=.}"
model=$LLMKIT_DATA/models/stories260K.gguf
[ -r "$model" ] || { echo "SKIP: $model not found"; exit 77; }
bench="$LLMKIT_BIN/tools/llm-bench"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

quick="-m $model -p 16 -n 8 -r 2 -t 2 --membw --membw-size 8M"

# ---------------------------------------------------------------- CSV
"$bench" $quick -b 1,3 --strategies --prompts 2 -o csv > "$tmp/out.csv" 2> "$tmp/err" ||
	fail "csv run: $(cat "$tmp/err")"
header="model,dtype,n_params,bytes_per_token,threads,kind,test,batch,n_prompt,n_gen,reps,tokens_per_s,stddev,bytes_per_s,roofline,cpu_s_per_1k_tokens,peak_rss_bytes,kv_peak_bytes,logprob_per_token,forward_tokens_per_token"
[ "$(head -n 1 "$tmp/out.csv")" = "$header" ] && ok "csv header" ||
	fail "csv header: $(head -n 1 "$tmp/out.csv")"
# kinds and tests, in order
got=$(awk -F, 'NR > 1 { printf "%s:%s:%s ", $6, $7, $8 }' "$tmp/out.csv")
want="membw:membw:0 membw:weights:0 pp:pp16:1 tg:tg8:1 tg:tg8:3 strategy:greedy:2 strategy:sample:2 strategy:top-k=40:2 strategy:top-p=0.9:2 strategy:min-p=0.05:2 strategy:beam=2:2 strategy:beam=4:2 strategy:beam=8:2 "
[ "$got" = "$want" ] && ok "csv rows" || fail "csv rows: got '$got'"
# every row complete, with the numbers its kind must have
awk -F, -v NF0=20 '
function pos(i, what) { if (!($i + 0 > 0)) { print "row " NR " (" $7 "): " what " = \"" $i "\""; bad = 1 } }
NR == 1 { next }
NF != NF0 { print "row " NR ": " NF " fields"; bad = 1; next }
{ if ($1 != "stories260K.gguf" || $2 != "f32" || $5 != 2) { print "row " NR ": model columns"; bad = 1 }
  pos(3, "n_params"); pos(4, "bytes_per_token") }
$6 == "membw" { pos(14, "bytes_per_s") }
$6 == "pp" { pos(12, "tokens_per_s"); if ($11 < 2) { print "pp reps"; bad = 1 } }
$6 == "tg" { pos(12, "tokens_per_s"); pos(14, "bytes_per_s"); pos(15, "roofline")
             if ($11 != 2) { print "tg reps " $11; bad = 1 } }
$6 == "strategy" {
	pos(12, "tokens_per_s"); pos(16, "cpu_s_per_1k"); pos(17, "peak_rss"); pos(18, "kv_peak")
	if ($19 == "" || !($19 + 0 < 0)) { print $7 ": logprob_per_token " $19; bad = 1 }
	w = ($7 ~ /^beam=/) ? substr($7, 6) + 0 : 1
	if ($20 + 0 != w) { print $7 ": forward tokens per token " $20 " != " w; bad = 1 }
	if (w > 1 && $18 + 0 <= kv1) { print $7 ": KV peak not above greedy"; bad = 1 }
	if ($7 == "greedy") kv1 = $18 + 0
}
END { exit bad }' "$tmp/out.csv" > "$tmp/why" && ok "csv values" ||
	fail "csv values: $(cat "$tmp/why")"
# quality column: beam search finds sequences at least as likely as greedy
g=$(awk -F, '$7 == "greedy" { print $19 }' "$tmp/out.csv")
b4=$(awk -F, '$7 == "beam=4" { print $19 }' "$tmp/out.csv")
awk -v a="$b4" -v b="$g" 'BEGIN { exit !(a != "" && b != "" && a >= b - 1e-4) }' &&
	ok "beam=4 logprob/token $b4 >= greedy $g" || fail "beam=4 $b4 < greedy $g"

# ---------------------------------------------------------------- JSON
"$bench" $quick -b 2 --full-prefill --strategies --prompts 1 -o json > "$tmp/out.json" \
	2> "$tmp/err" || fail "json run: $(cat "$tmp/err")"
if command -v python3 > /dev/null; then
	python3 - "$tmp/out.json" > "$tmp/why" 2>&1 <<'PY' && ok "json" || fail "json: $(cat "$tmp/why")"
import json, sys
d = json.load(open(sys.argv[1]))
m = d["model"]
assert m["dtype"] == "f32" and m["n_params"] == 292800 and m["bytes_per_token"] > 0, m
assert d["system"]["threads"] == 2
bw = d["membw"]
assert [r["when"] for r in bw["runs"]] == ["before", "after"], bw
for r in bw["runs"]:
    assert r["best_bytes_per_s"] >= r["mean_bytes_per_s"] > 0 and r["reps"] == 5, r
assert bw["bytes_per_s"] == max(r["best_bytes_per_s"] for r in bw["runs"]), bw
w = bw["weights"]
assert w["best_bytes_per_s"] >= w["mean_bytes_per_s"] > 0, w
assert 0.9 * m["file_bytes"] < w["bytes"] <= m["file_bytes"], (w, m)
tp = [(r["test"], r["batch"]) for r in d["throughput"]]
assert tp == [("pp16", 2), ("tg8", 2)], tp   # --full-prefill: pp per batch
for r in d["throughput"]:
    assert r["tokens_per_s"] > 0 and r["reps"] == 2 and len(r["samples"]) == 2, r
    assert abs(sum(r["samples"]) / 2 - r["tokens_per_s"]) < 1e-6 * r["tokens_per_s"], r
tg = d["throughput"][1]
assert tg["weight_bytes_per_s"] > 0, tg
assert abs(tg["roofline"] - tg["weight_bytes_per_s"] / bw["bytes_per_s"]) < 1e-6, tg
assert abs(tg["roofline_weights"] - tg["weight_bytes_per_s"] / w["best_bytes_per_s"]) < 1e-6, tg
names = [s["name"] for s in d["strategies"]]
assert names == ["greedy", "sample", "top-k=40", "top-p=0.9", "min-p=0.05",
                 "beam=2", "beam=4", "beam=8"], names
for s in d["strategies"]:
    for k in ("tokens_per_s", "cpu_s_per_1k_tokens", "peak_rss_bytes", "kv_peak_bytes"):
        assert s[k] > 0, (s["name"], k, s[k])
    assert s["logprob_per_token"] < 0 and s["n_gen"] == 8, s
PY
elif command -v jq > /dev/null; then
	jq -e '.membw.bytes_per_s > 0 and (.throughput | length) == 2 and
	       (.strategies | length) == 8 and
	       all(.throughput[]; .tokens_per_s > 0)' "$tmp/out.json" > /dev/null &&
		ok "json (jq)" || fail "json (jq)"
else
	echo "note: neither python3 nor jq: JSON structure not checked"
	grep -q '"strategies"' "$tmp/out.json" || fail "json has no strategies"
fi

# ---------------------------------------------------------------- table
"$bench" -m "$model" -p 8 -n 4 -b 1,2 -r 1 -t 1 > "$tmp/out.txt" 2> "$tmp/err" ||
	fail "table run: $(cat "$tmp/err")"
grep -q '^| test ' "$tmp/out.txt" && grep -q '^| pp8 ' "$tmp/out.txt" &&
	[ "$(grep -c '^| tg4 ' "$tmp/out.txt")" -eq 2 ] && ok "table" ||
	{ fail "table"; cat "$tmp/out.txt"; }

# ---------------------------------------------------------------- bad input
expect_status() {
	want=$1; shift
	"$bench" "$@" > "$tmp/o" 2> "$tmp/e"
	st=$?
	if [ "$st" -eq "$want" ] && [ "$(wc -l < "$tmp/e")" -ge 1 ] && [ ! -s "$tmp/o" ]; then
		ok "exit $want: $* ($(head -n 1 "$tmp/e"))"
	else
		fail "'$*' exit $st (want $want), stderr '$(cat "$tmp/e")'"
	fi
}
expect_status 2 -m "$model" -o xml
expect_status 2 -m "$model" -b 0
expect_status 2 -m "$model" -b 1,,x
expect_status 2 -m "$model" -p -3
expect_status 2 -m "$model" -r 0
expect_status 2 -m "$model" --no-throughput
expect_status 2 -m "$model" --prompts 9 --strategies
expect_status 2 -m "$model" --membw-size 1k
expect_status 1 -m "$tmp/missing.gguf"
printf 'GGUF' > "$tmp/trunc.gguf"
expect_status 1 -m "$tmp/trunc.gguf"
grep -q 'trunc.gguf' "$tmp/e" || fail "the error names the file"
# a context the model cannot hold is an error, not a crash
expect_status 1 -m "$model" -p 2040 -n 9 -b 1 -r 1 --no-warmup
grep -q "context" "$tmp/e" || fail "the error says the context is too small"

[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all passed"
