#!/bin/sh
# llm-lora-train --device: bad values are usage errors (exit 2); --device
# cpu trains as before; --device cuda without a GPU (or in a build without
# CUDA) fails with one line and exit 1, writing nothing.  With a GPU: two
# runs give the same adapter bytes, and the loss is close to the CPU's.
set -u
BIN=${LLMKIT_BIN:-.}/tools/llm-lora-train
DATA=${LLMKIT_DATA:-../shared/data}
MODEL=$DATA/models/stories260K.gguf
TEXT=$DATA/text/tinyshakespeare.txt
[ -r "$MODEL" ] && [ -r "$TEXT" ] || { echo "SKIP: no stories260K or tinyshakespeare"; exit 77; }
T=$(mktemp -d) || exit 1
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
head -c 50000 "$TEXT" > "$T/in.txt"
ARGS="-m $MODEL --data $T/in.txt --ctx 64 --batch 4 --steps 6 --lr 3e-3 -r 4 -t 2 -q"

$BIN --help | grep -q -- "--device" || fail "--help lacks --device"
$BIN $ARGS --device gpu -o "$T/x" 2>"$T/err"
rc=$?
[ $rc -eq 2 ] || fail "--device gpu: exit $rc, expected 2"
grep -q "device" "$T/err" || fail "--device gpu: $(cat "$T/err")"
$BIN $ARGS --device cuda --full -o "$T/x" 2>"$T/err"
rc=$?
[ $rc -eq 2 ] || fail "--device cuda --full: exit $rc, expected 2"

$BIN $ARGS --device cpu -o "$T/cpu" 2>"$T/cpu.err" || fail "cpu: $(cat "$T/cpu.err")"
$BIN $ARGS -o "$T/def" 2>"$T/def.err" || fail "default: $(cat "$T/def.err")"
cmp -s "$T/cpu/adapter_model.safetensors" "$T/def/adapter_model.safetensors" ||
	fail "--device cpu differs from the default"

$BIN $ARGS --device cuda -o "$T/gpu" 2>"$T/gpu.err"
rc=$?
if [ $rc -ne 0 ]; then
	[ $rc -eq 1 ] || fail "--device cuda without a device: exit $rc, expected 1"
	[ "$(wc -l <"$T/gpu.err")" -eq 1 ] || fail "not one line: $(cat "$T/gpu.err")"
	grep -Eq "no CUDA device|no CUDA backend|without CUDA" "$T/gpu.err" ||
		fail "unexpected error: $(cat "$T/gpu.err")"
	[ -e "$T/gpu/adapter_model.safetensors" ] && fail "adapter written despite the error"
	echo "no CUDA device here: --device cuda fails cleanly ($(cat "$T/gpu.err"))"
	exit 0
fi
$BIN $ARGS --device cuda -o "$T/gpu2" 2>/dev/null || fail "second GPU run"
cmp -s "$T/gpu/adapter_model.safetensors" "$T/gpu2/adapter_model.safetensors" ||
	fail "two GPU runs give different adapters"
# the final held-out-free loss line: "... loss X" on stderr without -q;
# compare the eval loss of both adapters on the CPU instead
ev() { $BIN -m "$MODEL" --data "$T/in.txt" --eval-split 0.1 --eval-only --ctx 64 \
	--batch 4 --init "$1" -o "$T/ev" -t 2 -q | sed -n 's/^eval_loss \([0-9.]*\).*/\1/p'; }
lc=$(ev "$T/cpu") lg=$(ev "$T/gpu")
[ -n "$lc" ] && [ -n "$lg" ] || fail "no eval loss ($lc, $lg)"
awk -v a="$lc" -v b="$lg" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-3 * a) }' ||
	fail "eval loss of the GPU adapter $lg, the CPU's $lc"
echo "GPU adapter: two runs identical; eval loss $lg (CPU $lc)"
