#!/bin/sh
# foundation.sh - the foundation's speed targets, measured on a random-weight
# model of stories110M's shape (weights do not change speed):
#
#   1. single-stream decode as a fraction of the memory-bandwidth roofline
#      (weight bytes per token x tokens/s over the bandwidth llm-bench
#      measures in the same run, same threads)               target >= 0.7;
#      also over the rate the same threads read the mapped weights at (on a
#      virtual machine some memory reads far faster than other memory)
#   2. decode throughput of 16 sequences over one stream      target >= 6x
#   3. with LLAMA_BENCH=/path/to/llama-bench: our tokens/s over llama.cpp's
#      on the same GGUF and threads, prefill (pp512) and decode (tg128 from
#      an empty context, and after the 512-token prompt)      target >= 1.0
#
# Usage: scripts/bench/foundation.sh [f32] [f16]    (default: f32)
#
# Environment: LLMKIT_BIN (build directory holding tools/, default: the
# source tree), BENCH_DIR (where the models are made or reused, default
# $TMPDIR/llmkit-bench), THREADS (2), REPS (3 runs per llm-bench or
# llama-bench call), ROUNDS (3), LLAMA_BENCH.
#
# Timing is noisy on a shared machine, so the measurements run in ROUNDS
# rounds, ours and llama.cpp's alternating.  Each ratio is taken within a
# round (ours beside llama.cpp's, decode beside the bandwidth measured in
# the same run); the median round is reported, every round beside it, and
# the load before each round: rerun when something else was busy.
set -eu

src=$(cd "$(dirname "$0")/../.." && pwd)
bin=${LLMKIT_BIN:-$src}
threads=${THREADS:-2}
reps=${REPS:-3}
rounds=${ROUNDS:-3}
dir=${BENCH_DIR:-${TMPDIR:-/tmp}/llmkit-bench}
llama=${LLAMA_BENCH:-}
dtypes=${*:-f32}

bench="$bin/tools/llm-bench"
convert="$bin/tools/llm-convert"
for p in "$bench" "$convert"; do
	[ -x "$p" ] || { echo "foundation.sh: $p not built (make, or set LLMKIT_BIN)" >&2; exit 1; }
done
if [ -n "$llama" ] && [ ! -x "$llama" ]; then
	echo "foundation.sh: LLAMA_BENCH=$llama is not an executable" >&2
	exit 1
fi
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# load average, and tasks runnable right now besides this one (other
# sessions' work shows here before the average catches up)
. "$src/scripts/bench/lib.sh"

# value of column NAME in row(s) matching KEY=VALUE pairs of a CSV file whose
# fields may be quoted (llama-bench quotes every field)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { if (r == "n/a") print "n/a"; else print (r >= t ? "met" : "MISSED") }'; }
line() { printf '  %-30s %-46s >= %-4s %s\n' "$1" "$2" "$3" "$(verdict "$4" "$3")"; }

# the median of the values recorded under a key, and all of them
med() {
	awk -v k="$1" '$1 == k { print $2 }' "$tmp/vals" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
all() { awk -v k="$1" -v f="$2" '$1 == k { printf "%s" f, s, $2; s = " " }' "$tmp/vals"; }

for dt in $dtypes; do
	case $dt in f32|f16|bf16) ;; *) echo "foundation.sh: dtype '$dt' (f32, f16 or bf16)" >&2; exit 2 ;; esac
	model="$dir/stories110M-$dt.gguf"
	if [ ! -s "$model" ]; then
		echo "making $model" >&2
		"$convert" --dummy stories110M --dtype "$dt" -o "$model"
	fi

	echo "stories110M-shape $dt (random weights), $threads threads, $rounds rounds of $reps runs"
	: > "$tmp/vals"
	loads=""
	r=1
	while [ "$r" -le "$rounds" ]; do
		loads="$loads; $(load)"
		"$bench" -m "$model" -t "$threads" -r "$reps" -p 512 -n 128 -b 1,16 --membw \
			-o csv > "$tmp/ours.csv"
		bw=$(csv_get "$tmp/ours.csv" bytes_per_s "kind=membw test=membw")
		wbw=$(csv_get "$tmp/ours.csv" bytes_per_s "kind=membw test=weights")
		tgb=$(csv_get "$tmp/ours.csv" bytes_per_s "kind=tg batch=1")
		bpt=$(csv_get "$tmp/ours.csv" bytes_per_token "kind=membw")
		tg1=$(csv_get "$tmp/ours.csv" tokens_per_s "kind=tg batch=1")
		tg16=$(csv_get "$tmp/ours.csv" tokens_per_s "kind=tg batch=16")
		pp=$(csv_get "$tmp/ours.csv" tokens_per_s "kind=pp")
		{
			echo "bw $bw"
			echo "wbw $wbw"
			echo "roofw $(ratio "$tgb" "$wbw")"
			echo "tg1 $tg1"
			echo "tg16 $tg16"
			echo "pp $pp"
			echo "roof $(csv_get "$tmp/ours.csv" roofline "kind=tg batch=1")"
			echo "bat $(ratio "$tg16" "$tg1")"
		} >> "$tmp/vals"
		if [ -n "$llama" ]; then
			# our decode from an (almost) empty context, as llama-bench's tg128
			"$bench" -m "$model" -t "$threads" -r "$reps" -p 1 -n 128 -b 1 -o csv \
				> "$tmp/ours0.csv"
			tg0=$(csv_get "$tmp/ours0.csv" tokens_per_s "kind=tg batch=1")
			"$llama" -m "$model" -t "$threads" -r "$reps" -p 512 -n 128 -d 0,512 \
				-o csv > "$tmp/llama.csv" 2> "$tmp/llama.err" || {
				echo "foundation.sh: llama-bench failed:" >&2
				tail -n 5 "$tmp/llama.err" >&2
				exit 1
			}
			lpp=$(csv_get "$tmp/llama.csv" avg_ts "n_prompt=512 n_gen=0 n_depth=0")
			ltg0=$(csv_get "$tmp/llama.csv" avg_ts "n_prompt=0 n_gen=128 n_depth=0")
			ltg512=$(csv_get "$tmp/llama.csv" avg_ts "n_prompt=0 n_gen=128 n_depth=512")
			{
				echo "tg0 $tg0"
				echo "lpp $lpp"
				echo "ltg0 $ltg0"
				echo "ltg512 $ltg512"
				echo "rpp $(ratio "$pp" "$lpp")"
				echo "rtg0 $(ratio "$tg0" "$ltg0")"
				echo "rtg512 $(ratio "$tg1" "$ltg512")"
			} >> "$tmp/vals"
		fi
		r=$((r + 1))
	done
	# each ratio is taken within a round (same conditions); the median
	# round counts, all rounds are shown
	printf '  load before each round%s\n' "$loads"
	gbs() { awk -v k="$1" '$1 == k { printf "%s%.1f", s, $2 / 1e9; s = " " }' "$tmp/vals"; }
	printf '  memory read bandwidth (STREAM-style), GB/s: %s\n' "$(gbs bw)"
	printf '  reading the mapped weights (%.1f MiB, all read per token), GB/s: %s\n' \
		"$(awk -v b="$bpt" 'BEGIN { print b / 1048576 }')" "$(gbs wbw)"
	printf '  %-30s %-46s %s\n' "" "median of rounds (each round)" "target"
	v=$(med roof)
	line "decode 1 stream / roofline" "$(printf '%.2f (%s); %.1f tok/s' "$v" "$(all roof %.2f)" "$(med tg1)")" 0.7 "$v"
	v=$(med roofw)
	line "  ... / weights read rate" "$(printf '%.2f (%s)' "$v" "$(all roofw %.2f)")" 0.7 "$v"
	v=$(med bat)
	line "decode 16 streams / 1 stream" "$(printf '%.2fx (%s); %.1f tok/s' "$v" "$(all bat %.2f)" "$(med tg16)")" 6 "$v"
	printf '  %-30s %.1f tok/s\n' "prefill pp512" "$(med pp)"
	if [ -n "$llama" ]; then
		echo "  ours / llama.cpp ($llama; both with f16 KV caches):"
		v=$(med rpp)
		line "pp512" "$(printf '%.2f (%s); %.1f vs %.1f tok/s' "$v" "$(all rpp %.2f)" "$(med pp)" "$(med lpp)")" 1.0 "$v"
		v=$(med rtg0)
		line "tg128, empty context" "$(printf '%.2f (%s); %.1f vs %.1f tok/s' "$v" "$(all rtg0 %.2f)" "$(med tg0)" "$(med ltg0)")" 1.0 "$v"
		v=$(med rtg512)
		line "tg128 after 512 tokens" "$(printf '%.2f (%s); %.1f vs %.1f tok/s' "$v" "$(all rtg512 %.2f)" "$(med tg1)" "$(med ltg512)")" 1.0 "$v"
	fi
	echo
done
