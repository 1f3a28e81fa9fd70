#!/bin/sh
# cuda.sh - the CUDA backend against the GPU's own limits, from one run:
#
#   0. the card: copy-kernel bandwidth (bytes read + written per second)
#      and the cuBLAS peak of the prefill product (f16 in, f32 sums), both
#      measured here (tests/cuda-peak), before and after
#   1. decode (tg128, one stream): weight bytes read per second over the
#      copy bandwidth (llm-bench --membw's roofline)    target >= 0.7
#   2. prefill (pp512): 2 x parameters x tokens/s over the cuBLAS peak
#   3. batched decode at 1, 16, 64, 256 sequences: tokens/s of all streams
#   4. multi-LoRA: 32 closed-loop clients on 32 distinct rank-8 adapters
#      (every projection) against the same clients on the base model,
#      TinyLlama shape, f16 (tests/mlora-bench -x cuda)   target >= 0.9x
#   5. with LLAMA_BENCH (llama.cpp's llama-bench built with CUDA): its
#      tg128 / pp512 on the same files, and ours over its
#
# for random-weight models of TinyLlama-1.1B's and Llama-3-8B's shapes in
# f16, q8_0 and q4_0 (llm-convert --dummy, llm-quantize --pure), and greedy
# text of stories260K on the GPU against the CPU's as a sanity check.
#
# Usage: scripts/bench/cuda.sh
# Environment: LLMKIT_BIN (build directory, default: the source tree),
# BENCH_DIR (models made or reused, default $TMPDIR/llmkit-bench-cuda),
# SHAPES ("TinyLlama-1.1B Llama-3-8B"), TYPES ("f16 q8_0 q4_0"), REPS (3),
# BATCHES ("1 16 64 256"), THREADS (for making the models; all cores),
# LLAMA_BENCH (path of llama.cpp's llama-bench; section 5 runs only with
# it), MLORA_SECONDS (20 per mode).
#
# Exits 77 when there is no GPU (or the build has no CUDA).
set -eu

src=$(cd "$(dirname "$0")/../.." && pwd)
bin=${LLMKIT_BIN:-$src}
dir=${BENCH_DIR:-${TMPDIR:-/tmp}/llmkit-bench-cuda}
shapes=${SHAPES:-TinyLlama-1.1B Llama-3-8B}
types=${TYPES:-f16 q8_0 q4_0}
reps=${REPS:-3}
batches=${BATCHES:-1 16 64 256}
threads=${THREADS:-$(nproc 2>/dev/null || echo 4)}
data=${LLMKIT_DATA:-$src/../shared/data}

bench=$bin/tools/llm-bench
for p in "$bench" "$bin/tools/llm-convert" "$bin/tools/llm-quantize" "$bin/tools/llm-generate"; do
	[ -x "$p" ] || { echo "cuda.sh: $p not built (make, or set LLMKIT_BIN)" >&2; exit 1; }
done
peak=$bin/tests/cuda-peak
[ -x "$peak" ] || make -C "$bin" tests/cuda-peak >/dev/null
set +e
"$peak" > /dev/null 2>&1
rc=$?
set -e
if [ $rc -eq 77 ]; then
	echo "cuda.sh: no CUDA device (or a build without CUDA): SKIP"
	exit 77
fi
[ $rc -eq 0 ] || { "$peak"; exit 1; }
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

. "$src/scripts/bench/lib.sh"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "") printf "%.3f", a / b; else print "n/a" }'; }

nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader 2>/dev/null || true
"$peak" > "$tmp/peak0"
bw=$(awk '$1 == "membw_bytes_per_s" { print $2 }' "$tmp/peak0")
fl=$(awk '$1 == "gemm_flops" { print $2 }' "$tmp/peak0")
awk -v b="$bw" -v f="$fl" 'BEGIN { printf "copy bandwidth %.1f GB/s (read + write); cuBLAS f16->f32 peak %.1f TFLOP/s\n", b / 1e9, f / 1e12 }'

# sanity: greedy text on the GPU equals the CPU's
if [ -r "$data/models/stories260K.gguf" ]; then
	for d in cpu cuda; do
		"$bin/tools/llm-generate" -m "$data/models/stories260K.gguf" --greedy -n 100 \
			-p "Once upon a time" --device $d > "$tmp/text.$d"
	done
	if cmp -s "$tmp/text.cpu" "$tmp/text.cuda"; then
		echo "stories260K greedy text: GPU == CPU"
	else
		echo "stories260K greedy text: GPU != CPU (!)"
	fi
fi

echo
echo "| model | type | file GiB | decode tok/s | decode / bandwidth | prefill tok/s | prefill / cuBLAS peak |$(for b in $batches; do printf ' tok/s x%s |' "$b"; done)"
echo "|---|---|---|---|---|---|---|$(for b in $batches; do printf -- '---|'; done)"
for shape in $shapes; do
	f16=$dir/$shape-f16.gguf
	if [ ! -s "$f16" ]; then
		echo "making $f16" >&2
		"$bin/tools/llm-convert" --dummy "$shape" --dtype f16 -t "$threads" -o "$f16" >&2
	fi
	for t in $types; do
		f=$dir/$shape-$t.gguf
		[ "$t" = f16 ] && f=$f16
		if [ ! -s "$f" ]; then
			echo "making $f" >&2
			"$bin/tools/llm-quantize" -q --pure -t "$t" --threads "$threads" "$f16" "$f" >&2
		fi
		"$bench" -m "$f" --device cuda -r "$reps" -p 1 -n 128 -b 1 --membw -o csv > "$tmp/tg.csv"
		"$bench" -m "$f" --device cuda -r "$reps" -p 512 -n 1 -b 1 -o csv > "$tmp/pp.csv"
		bl=$(echo $batches | tr ' ' ',')
		"$bench" -m "$f" --device cuda -r "$reps" -p 128 -n 128 -b "$bl" --full-prefill -o csv > "$tmp/b.csv"
		tg=$(csv_get "$tmp/tg.csv" tokens_per_s "kind=tg batch=1")
		rl=$(csv_get "$tmp/tg.csv" roofline "kind=tg batch=1")
		pp=$(csv_get "$tmp/pp.csv" tokens_per_s "kind=pp")
		params=$(csv_get "$tmp/pp.csv" n_params "kind=pp")
		ppr=n/a
		[ -n "$params" ] && ppr=$(awk -v p="$params" -v t="$pp" -v f="$fl" 'BEGIN { if (f > 0 && t != "") printf "%.3f", 2 * p * t / f; else print "n/a" }')
		printf '| %s | %s | %.2f | %s | %s | %s | %s |' "$shape" "$t" \
			"$(awk -v b="$(wc -c < "$f")" 'BEGIN { print b / 1073741824 }')" \
			"$tg" "$rl" "$pp" "$ppr"
		for b in $batches; do
			printf ' %s |' "$(csv_get "$tmp/b.csv" tokens_per_s "kind=tg batch=$b")"
		done
		echo
	done
done

# ---------------------------------------------------------------- 4. multi-LoRA
ml=$dir/TinyLlama-1.1B-f16.gguf
if [ -s "$ml" ]; then
	for p in tests/mlora-bench tests/mlora-gen; do
		[ -x "$bin/$p" ] || make -C "$bin" "$p" >/dev/null
	done
	ad=$dir/mlora-tinyllama-r8-32
	if [ ! -e "$ad/.done" ]; then
		rm -rf "$ad"
		"$bin/tests/mlora-gen" "$ml" "$ad" 32 1 8 all 0.02 >&2
		touch "$ad/.done"
	fi
	"$bin/tests/mlora-bench" -x cuda -c 32 -p 64 -g 128 -d "${MLORA_SECONDS:-20}" \
		-w 3 -r 2 -A 32 -k 3 "$ml" "$ad" "$ad" > "$tmp/mlora.txt"
	v() { awk -v k="$1" '$1 == k { print $2 }' "$tmp/mlora.txt"; }
	echo
	echo "multi-LoRA, TinyLlama-1.1B f16, 32 clients: base $(v none_tok_s) tok/s, 32 distinct rank-8 adapters $(v distinct_tok_s) tok/s: $(v ratio_distinct_vs_none)x (target >= 0.9)"
fi

# ---------------------------------------------------------------- 5. llama.cpp
if [ -n "${LLAMA_BENCH:-}" ] && [ -x "$LLAMA_BENCH" ]; then
	echo
	echo "| model | type | llama.cpp tg128 | ours | ours / llama.cpp | llama.cpp pp512 | ours | ours / llama.cpp |"
	echo "|---|---|---|---|---|---|---|---|"
	for shape in $shapes; do
		for t in $types; do
			f=$dir/$shape-$t.gguf
			[ -s "$f" ] || continue
			"$LLAMA_BENCH" -m "$f" -ngl 99 -p 512 -n 128 -r "$reps" -o csv > "$tmp/lc.csv" 2>/dev/null || continue
			lt=$(csv_get "$tmp/lc.csv" avg_ts "n_prompt=0 n_gen=128")
			lp=$(csv_get "$tmp/lc.csv" avg_ts "n_prompt=512 n_gen=0")
			"$bench" -m "$f" --device cuda -r "$reps" -p 512 -n 128 -b 1 -o csv > "$tmp/our.csv"
			ot=$(csv_get "$tmp/our.csv" tokens_per_s "kind=tg batch=1")
			op=$(csv_get "$tmp/our.csv" tokens_per_s "kind=pp")
			echo "| $shape | $t | $lt | $ot | $(ratio "$ot" "$lt") | $lp | $op | $(ratio "$op" "$lp") |"
		done
	done
fi

"$peak" > "$tmp/peak1"
awk '$1 == "membw_bytes_per_s" { b = $2 } $1 == "gemm_flops" { f = $2 } END { printf "\nafter: copy bandwidth %.1f GB/s; cuBLAS peak %.1f TFLOP/s\n", b / 1e9, f / 1e12 }' "$tmp/peak1"
echo "targets: decode / bandwidth >= 0.7 (the copy kernel moves each byte twice: read and write)"
