#!/bin/sh
# The batching policies of llm-batchd side by side, on a dummy
# stories110M-shape model, 2 threads (timing lives here, not in tests).
#
#   scripts/bench/batchd.sh [OUTDIR]        (default /tmp/batchd-bench)
#
# 1. Closed loop, 32 concurrent clients (scripts/loadgen.py), every policy
#    at max batch 32, plus one-request-at-a-time (continuous, max batch 1):
#    throughput, TTFT / TPOT / end-to-end p50/p95/p99, SLO attainment, mean
#    batch, and the server overhead ((HTTP work + scheduling) / step time,
#    from /metrics).
# 2. A quiet period then a launch spike (open loop) for the policies that
#    size batches from load.
# 3. Mixed priorities under overload: per-class p99 TTFT.
# 4. KV pressure: continuous and load with a cache too small for the
#    batch (KV_MEM): mean batch and preemptions.
# Markdown tables on stdout; JSON per run and gnuplot PNGs (if gnuplot is
# installed) in OUTDIR.  Environment: DURATION (seconds per closed-loop
# run, 60), SHAPE_S (seconds of the open-loop shapes, 30),
# CLIENTS (32), THREADS (2), RATE (open-loop base rate, req/s: 0.4 x
# the closed loop's continuous completions), SECTIONS (which of 1 2 3 4 to run: 1234), MODEL (a GGUF; default a dummy made with
# llm-convert --dummy stories110M).
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
bin=${LLMKIT_BIN:-$src}
out=${1:-/tmp/batchd-bench}
D=${DURATION:-60}
DS=${SHAPE_S:-30}
C=${CLIENTS:-32}
T=${THREADS:-2}
mkdir -p "$out"
model=${MODEL:-$out/s110.gguf}
[ -r "$model" ] || "$bin/tools/llm-convert" --dummy stories110M -o "$model" >/dev/null
export LLMKIT_DATA="${LLMKIT_DATA:-$src/../shared/data}"
echo "# llm-batchd policies: $(basename "$model"), $T threads, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"

pid=
stop() { [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; pid=; }
trap stop EXIT

# run LABEL "SERVER ARGS" LOADGEN ARGS...
run() {
	label=$1 sargs=$2; shift 2
	rm -f "$out/port"
	# shellcheck disable=SC2086
	"$bin/tools/llm-batchd" -m "$model" --listen 127.0.0.1:0 --port-file "$out/port" \
		-t "$T" -c 512 $sargs 2> "$out/$label.server.log" &
	pid=$!
	while [ ! -s "$out/port" ]; do
		kill -0 "$pid" 2>/dev/null || { cat "$out/$label.server.log" >&2; exit 1; }
		sleep 0.2
	done
	python3 "$src/scripts/loadgen.py" --url "http://127.0.0.1:$(cat "$out/port")" \
		--label "$label" --json "$out/$label.json" \
		--trace "$out/$label.trace" "$@" > /dev/null
	stop
}

table() {  # table JSON...: one markdown row each
	python3 - "$@" <<'PY'
import json, sys
print("| run | policy | req done | tok/s | TTFT p50/p95/p99 ms | TPOT p50/p95/p99 ms | e2e p50/p99 s | SLO | mean batch | step ms | preempt | overhead |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for f in sys.argv[1:]:
    d = json.load(open(f)); s = d["server"]
    ms = lambda k: "%.0f" % (1000 * d[k])
    print("| %s | %s | %d | %.1f | %s / %s / %s | %s / %s / %s | %.2f / %.2f | %.0f%% | %.1f | %.0f | %d | %.2f%% |" % (
        d["label"], d["policy"], d["ok"], d.get("server_tok_per_s") or d["tok_per_s"],
        ms("ttft_p50"), ms("ttft_p95"), ms("ttft_p99"),
        ms("tpot_p50"), ms("tpot_p95"), ms("tpot_p99"),
        d["e2e_p50"], d["e2e_p99"], 100 * d["slo"], s["mean_batch"],
        s["mean_step_ms"], s["preemptions"], 100 * s["overhead"]))
PY
}

sections=${SECTIONS:-1234}
lg="--clients $C --shape sharegpt --rate 10 --len-scale 0.125 --max-prompt 128 --max-output 64"
lg="$lg --slo-ttft 5 --slo-tpot 0.5"
lg="$lg --duration $D"
# ---------------------------------------------------------------- 1. closed loop
case $sections in *1*)
run one-at-a-time "--policy continuous --max-batch 1" $lg
for p in static continuous adaptive window load predictive priority hybrid; do
	extra=
	case $p in
	adaptive) extra="--target-tpot-ms 80" ;;
	window) extra="--min-batch 8 --window-ms 500" ;;
	static) extra="--batch-timeout-ms 500" ;;
	esac
	run "$p" "--policy $p --max-batch 32 $extra" $lg
done
echo
echo "## $C concurrent clients, closed loop, ${D}s per run"
echo
table "$out/one-at-a-time.json" "$out"/static.json "$out"/continuous.json \
	"$out"/adaptive.json "$out"/window.json "$out"/load.json \
	"$out"/predictive.json "$out"/priority.json "$out"/hybrid.json
python3 - "$out" <<'PY'
import json, sys
o = sys.argv[1]
j = lambda n: json.load(open("%s/%s.json" % (o, n)))
one, st, co = j("one-at-a-time"), j("static"), j("continuous")
print()
print("continuous / one-at-a-time throughput: %.2fx; continuous / static: %.2fx; "
      "p99 TTFT continuous %.2f s vs static %.2f s" % (
          co["server_tok_per_s"] / max(one["server_tok_per_s"], 1e-9),
          co["server_tok_per_s"] / max(st["server_tok_per_s"], 1e-9),
          co["ttft_p99"], st["ttft_p99"]))
s = co["server"]
print("server overhead (continuous): HTTP %.3f s + scheduling %.3f s over %.1f s of steps "
      "(%.1f s in the forward) = %.2f%%" % (s["http_s"], s["sched_s"], s["busy_s"],
                                           s["decode_s"], 100 * s["overhead"]))
PY
;; esac

# ---------------------------------------------------------------- 2. spike
# open-loop rates from the closed loop's completion rate
rate=${RATE:-$(python3 -c "import json; d=json.load(open('$out/continuous.json')); print(round(max(0.2, 0.4 * d['req_per_s']), 2))")}
case $sections in *2*)
sp="--shape spike --duration $DS --rate $rate --prompt-mean 48 --output-mean 32 --max-prompt 128 --max-output 48 --slo-ttft 5 --slo-tpot 0.5"
for p in static continuous window load; do
	run "spike-$p" "--policy $p --max-batch 32" $sp --metrics-trace "$out/spike-$p.metrics"
done
# predictive: one season = one run; a first run teaches it the spike (its
# history saved at exit), the second is measured; both start on a season
pred="--policy predictive --max-batch 32 --period-s $DS --buckets 10 --horizon-s $(python3 -c "print($DS / 5)") --history $out/pred.hist"
rm -f "$out/pred.hist"
t0=$(( $(date +%s) + 8 ))
for r in learn spike-predictive; do
	# the history belongs to one epoch: start a whole number of seasons on
	t=$(( t0 + DS * ( ( $(date +%s) + 8 - t0 + DS - 1 ) / DS ) ))
	run "$r" "$pred --epoch $t0" $sp --start-at "$t" --metrics-trace "$out/$r.metrics"
done
echo
echo "## quiet (rate $rate/5) then spike (rate $rate x 3), open loop, ${DS}s"
echo
table "$out"/spike-static.json "$out"/spike-continuous.json "$out"/spike-window.json \
	"$out"/spike-load.json "$out"/learn.json "$out"/spike-predictive.json
python3 - "$out/spike-continuous.trace" "$out/learn.trace" "$out/spike-predictive.trace" "$DS" <<'PY'
import sys
# mean TTFT of the requests sent in the first 2 s of the spike
ds = float(sys.argv[4])
for name, f in (("continuous", sys.argv[1]), ("predictive, no history", sys.argv[2]),
                ("predictive, taught the spike", sys.argv[3])):
    xs = [float(l.split()[1]) for l in open(f) if ds / 2 <= float(l.split()[0]) < ds / 2 + 2]
    print("first 2 s of the spike, mean TTFT: %s %.2f s (%d requests)" % (
        name, sum(xs) / len(xs) if xs else float("nan"), len(xs)))
PY
echo
echo "What each policy had set before the spike (sampled from /metrics every"
echo "0.25 s; the spike starts at $(python3 -c "print($DS / 2)") s, predictive's horizon is $(python3 -c "print($DS / 5)") s):"
echo
python3 - "$out" "$DS" <<'PY'
import sys
o, ds = sys.argv[1], float(sys.argv[2])
spike, hz = ds / 2, ds / 5
print("| run | batch cap, quiet (first third) | batch cap, %.0f s before the spike | KV blocks reserved, %.0f s before the spike (max) | cap first at >= 2x its quiet level | running at that time |" % (hz, hz))
print("|---|---|---|---|---|---|")
for r in ("spike-continuous", "spike-load", "learn", "spike-predictive"):
    rows = [list(map(float, l.split())) for l in open("%s/%s.metrics" % (o, r))
            if not l.startswith("#")]
    # columns: t waiting running batch_cap kv_reserved kv_used
    quiet = [x[3] for x in rows if x[0] < ds / 3]
    q = sorted(quiet)[len(quiet) // 2] if quiet else float("nan")
    ahead = [x[3] for x in rows if spike - hz <= x[0] < spike]
    res = max([x[4] for x in rows if spike - hz <= x[0] < spike] or [0])
    up = next((x for x in rows if x[0] >= ds / 3 and x[3] >= 2 * q), None)
    when = ("%+.1f s from the spike" % (up[0] - spike)) if up else "never"
    print("| %s | %.0f | %.0f-%.0f | %d | %s | %s |" % (
        r, q, min(ahead or [q]), max(ahead or [q]), res, when,
        "%d" % up[2] if up else "-"))
PY

;; esac
# ---------------------------------------------------------------- 3. priorities
case $sections in *3*)
pr="--shape priority --duration $DS --rate $(python3 -c "print(round(1.5 * $rate * 2.5, 2))") --prompt-mean 48 --output-mean 32 --max-prompt 128 --max-output 48 --slo-ttft 5 --slo-tpot 0.5"
for p in continuous priority hybrid; do
	run "prio-$p" "--policy $p --max-batch 16 --aging-s 30" $pr
done
echo
echo "## mixed priorities (70% class 0, 20% class 1, 10% class 2) over capacity"
echo
python3 - "$out"/prio-*.json <<'PY'
import json, sys
print("| policy | req | tok/s | TTFT p99 class 0 / 1 / 2 s | e2e p99 class 0 / 1 / 2 s | preempt |")
print("|---|---|---|---|---|---|")
for f in sys.argv[1:]:
    d = json.load(open(f)); b = d.get("by_priority", {})
    g = lambda c, k: "%.2f" % b[c][k] if c in b else "-"
    print("| %s | %d | %.1f | %s / %s / %s | %s / %s / %s | %d |" % (
        d["policy"], d["ok"], d["tok_per_s"], g("0", "ttft_p99"), g("1", "ttft_p99"),
        g("2", "ttft_p99"), g("0", "e2e_p99"), g("1", "e2e_p99"), g("2", "e2e_p99"),
        d["server"]["preemptions"]))
PY

;; esac
# ---------------------------------------------------------------- 4. KV pressure
# The closed loop again with a KV cache too small for 32 sequences
# (KV_MEM, 48M: about 80 blocks of 16 positions, room for ~10 whole
# requests): continuous admits whatever fits and preempts when running
# sequences outgrow the cache; load shrinks the batch when the cache is
# over --kv-high used and grows it back under --kv-low.
case $sections in *4*)
kv=${KV_MEM:-48M}
for p in continuous load; do
	run "kv-$p" "--policy $p --max-batch 32 --kv-mem $kv" $lg
done
echo
echo "## KV pressure: $C clients, closed loop, --kv-mem $kv, ${D}s per run"
echo
table "$out"/kv-continuous.json "$out"/kv-load.json
;; esac
# ---------------------------------------------------------------- plots
if command -v gnuplot >/dev/null 2>&1 && [ -r "$out/one-at-a-time.json" ] && [ -r "$out/spike-predictive.metrics" ]; then
	python3 - "$out" <<'PY'
import json, sys
o = sys.argv[1]
names = ["one-at-a-time", "static", "continuous", "adaptive", "window", "load",
         "predictive", "priority", "hybrid"]
with open(o + "/policies.dat", "w") as f:
    for n in names:
        d = json.load(open("%s/%s.json" % (o, n)))
        f.write("%s %.2f %.3f %.3f\n" % (n, d.get("server_tok_per_s") or d["tok_per_s"],
                                          d["ttft_p99"], d["tpot_p99"]))
PY
	gnuplot <<EOF
set terminal png size 900,420
set output "$out/throughput.png"
set style data histograms
set style fill solid 0.8
set ylabel "generated tokens/s"
set title "llm-batchd: throughput, $C clients (dummy stories110M, $T threads)"
set xtics rotate by -30
plot "$out/policies.dat" using 2:xtic(1) title "tok/s"
set output "$out/ttft.png"
set ylabel "seconds"
set title "p99 TTFT and TPOT"
plot "$out/policies.dat" using 3:xtic(1) title "TTFT p99", "" using 4 title "TPOT p99"
set output "$out/spike.png"
set style data points
set xtics norotate
set xlabel "request sent (s)"
set ylabel "TTFT (s)"
set title "quiet then spike: TTFT of each request"
plot for [p in "static continuous window load predictive"] "$out/spike-".p.".trace" using 1:2 title p
set output "$out/spike-cap.png"
set style data steps
set xlabel "seconds since the start (spike at $(python3 -c "print($DS / 2)") s)"
set ylabel "sequences / KV blocks"
set title "predictive: batch cap and KV reserve ahead of the spike, with and without history"
plot "$out/spike-predictive.metrics" using 1:4 title "cap, taught the spike" lw 2, \
     "" using 1:5 title "KV blocks reserved, taught" lw 2, \
     "" using 1:3 title "running, taught", \
     "$out/learn.metrics" using 1:4 title "cap, no history" dt 2
EOF
	echo
	echo "plots: $out/throughput.png $out/ttft.png $out/spike.png $out/spike-cap.png"
fi
