#!/bin/sh
# sched.sh - the serving engine's speed targets, in-process (no HTTP), on a
# random-weight model of stories110M's shape, THREADS threads (2), CLIENTS
# closed-loop clients (32) sending requests one after the other for
# MODE_SECONDS (30) per mode, lengths drawn from the ShareGPT lengths trace
# (prompts / 64, outputs / 8, clamped to 8..128 and 4..256 tokens),
# outputs forced to their drawn length:
#
#   1. continuous batching's throughput over one request at a time
#      (one client, max batch 1, SERIAL_SECONDS (20))         target >= 6x
#   2. continuous over static at equal max batch (32)         target >= 1.5x
#   3. p99 time to first token, continuous below static
#   4. engine overhead: time in the step loop outside llm_decode and
#      sampling, over the busy step time                      target < 5%
#
# One run prints every mode's row and the ratios; the load before and
# after is shown (the machine may be shared: rerun when it was busy).
# Throughput is also given per CPU second of the process (tok/cpu_s): on
# a machine shared with other work that is the steadier figure.
#
# Usage: scripts/bench/sched.sh [extra sched-bench options]
# Environment: LLMKIT_BIN (build directory, default: the source tree),
# LLMKIT_DATA (data directory, default ../shared/data), BENCH_DIR (where
# the model is made or reused, default $TMPDIR/llmkit-bench), THREADS,
# CLIENTS, MODE_SECONDS, SERIAL_SECONDS.
set -eu

src=$(cd "$(dirname "$0")/../.." && pwd)
bin=${LLMKIT_BIN:-$src}
data=${LLMKIT_DATA:-$src/../shared/data}
dir=${BENCH_DIR:-${TMPDIR:-/tmp}/llmkit-bench}
threads=${THREADS:-2}
clients=${CLIENTS:-32}
seconds=${MODE_SECONDS:-30}
serial=${SERIAL_SECONDS:-20}

sb="$bin/tests/sched-bench"
convert="$bin/tools/llm-convert"
if [ ! -x "$sb" ]; then
	(cd "$bin" && make tests/sched-bench >/dev/null) || {
		echo "sched.sh: $sb not built (make tests/sched-bench)" >&2; exit 1; }
fi
[ -x "$convert" ] || { echo "sched.sh: $convert not built" >&2; exit 1; }
lengths="$data/traces/sharegpt-lengths.csv"
[ -r "$lengths" ] || { echo "sched.sh: $lengths not found (set LLMKIT_DATA)" >&2; exit 1; }
mkdir -p "$dir"
model="$dir/stories110M-dummy-f32.gguf"
[ -s "$model" ] || "$convert" --dummy stories110M -o "$model" >/dev/null

. "$src/scripts/bench/lib.sh"

echo "# load before: $(load), $(nproc) CPUs"
"$sb" -m "$model" -t "$threads" -c "$clients" -D "$seconds" -b "$clients" \
	-s "$serial" -L "$lengths" -P serial,continuous,static "$@"
echo "# load after: $(load)"

# What the machine allows: decode step time T(b) at each batch size
# (llm-bench, the same model and threads), then static and continuous
# replayed on those step times over the same length draws (batches of
# $clients back to back; static runs each batch until its longest output,
# continuous keeps $clients running; prompts cost the same in both).  This
# bounds the continuous / static ratio any scheduler can reach here: once
# a step is compute-bound, a fuller batch adds tokens but not speed.
echo
echo "# decode step time by batch size, and the ratio it allows"
"$bin/tools/llm-bench" -m "$model" -t "$threads" -p 64 -n 32 -b 1,2,4,8,16,24,32 \
	-r 1 -o csv 2>/dev/null | python3 -c '
import csv, random, sys
rows = list(csv.DictReader(sys.stdin))
tps = {int(r["batch"]): float(r["tokens_per_s"]) for r in rows if r["kind"] == "tg"}
pp = [float(r["tokens_per_s"]) for r in rows if r["kind"] == "pp"][0]
bs = sorted(tps)
def step(b):  # interpolate between measured batch sizes
    lo = max(x for x in bs if x <= b); hi = min(x for x in bs if x >= b)
    if lo == hi: return lo / tps[lo]
    tl, th = lo / tps[lo], hi / tps[hi]
    return tl + (th - tl) * (b - lo) / (hi - lo)
print("batch " + " ".join("%7d" % b for b in bs))
print("tok/s " + " ".join("%7.0f" % tps[b] for b in bs))
print("step  " + " ".join("%5.1fms" % (1000 * b / tps[b]) for b in bs))
lens = [tuple(map(int, l.split(",")[:2])) for l in open(sys.argv[1]).readlines()[1:]]
rng = random.Random(1); C = int(sys.argv[2])
st = ct = tok = 0.0
for _ in range(400):
    L = [min(256, max(4, lens[rng.randrange(len(lens))][1] // 8)) for _ in range(C)]
    P = [min(128, max(8, lens[rng.randrange(len(lens))][0] // 64)) for _ in range(C)]
    pre = sum(P) / pp
    st += pre + sum(step(sum(1 for l in L if l > s)) for s in range(max(L)))
    ct += pre + sum(L) / C * step(C)
    tok += sum(L)
print("replayed on these step times: static %.0f tok/s, continuous %.0f tok/s: "
      "continuous / static at most %.2fx here" % (tok / st, tok / ct, st / ct))
' "$lengths" "$clients"
