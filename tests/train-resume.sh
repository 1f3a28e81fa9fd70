#!/bin/sh
# llm-lora-train --resume: a run killed with SIGKILL mid-way (resumed on
# another thread count) and one
# stopped with Ctrl-C) and resumed from its last checkpoint ends with the
# same adapter bytes as an uninterrupted run.
BIN=${LLMKIT_BIN:-.}/tools/llm-lora-train
DATA=${LLMKIT_DATA:-../shared/data}
MODEL=$DATA/models/stories260K.gguf
TEXT=$DATA/text/tinyshakespeare.txt
[ -r "$MODEL" ] && [ -r "$TEXT" ] || { echo "SKIP: no stories260K or tinyshakespeare"; exit 77; }
T=$(mktemp -d) || exit 1
trap 'rm -rf "$T"' EXIT
head -c 200000 "$TEXT" > "$T/in.txt"
ARGS="-m $MODEL --data $T/in.txt --ctx 128 --batch 8 --steps 40 --lr 3e-3 --warmup 4 -r 4 --dropout 0.1 -t 2 --checkpoint-every 4 -q"
fail() { echo "FAIL: $*"; exit 1; }

$BIN $ARGS -o "$T/a" || fail "uninterrupted run"

# SIGKILL after the first checkpoint
$BIN $ARGS -o "$T/b" &
pid=$!
i=0
while [ ! -e "$T/b/checkpoint.llmt" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
kill -9 $pid 2>/dev/null
wait $pid
[ -e "$T/b/adapter_model.safetensors" ] && fail "killed run finished before the kill (test too short)"
[ -e "$T/b/checkpoint.llmt" ] || fail "no checkpoint written"
$BIN $ARGS -o "$T/b" --resume -t 1 2> "$T/log" || { cat "$T/log"; fail "resume"; }
cmp "$T/a/adapter_model.safetensors" "$T/b/adapter_model.safetensors" ||
	fail "resumed adapter differs from the uninterrupted run's"

# Ctrl-C: checkpoint and adapter written, exit status 130, resume to the end
$BIN $ARGS -o "$T/c" --checkpoint-every 0 &
pid=$!
sleep 1
kill -INT $pid
wait $pid
st=$?
if [ $st -eq 0 ]; then
	echo "note: the run ended before SIGINT arrived"
else
	[ $st -eq 130 ] || fail "SIGINT: exit status $st, expected 130"
	[ -e "$T/c/checkpoint.llmt" ] || fail "SIGINT: no checkpoint"
	[ -e "$T/c/adapter_model.safetensors" ] || fail "SIGINT: no adapter"
	$BIN $ARGS -o "$T/c" --checkpoint-every 0 --resume || fail "resume after SIGINT"
fi
cmp "$T/a/adapter_model.safetensors" "$T/c/adapter_model.safetensors" ||
	fail "adapter after SIGINT + resume differs"

# a checkpoint from other settings is refused
$BIN $ARGS --seed 7 -o "$T/b" --resume 2> "$T/err" && fail "resume with another seed accepted"
grep -q "other settings" "$T/err" || fail "no clear message: $(cat "$T/err")"
echo "PASS"
