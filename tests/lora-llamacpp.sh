#!/bin/sh
# llama.cpp applies our GGUF adapter like we do: the PEFT fixture adapter
# peft-a (per-matrix ranks, Q/K rows permuted to GGUF order) written by
# llm-lora-merge --cat --format gguf, greedy text from llama.cpp's
# llama-completion --lora equals llm-generate --lora's (and differs from the
# base's).  SKIP unless a llama.cpp build is found in $LLAMA_CPP_BIN
# (default /tmp/llama.cpp/build/bin).
set -eu
: "${LLMKIT_DATA:=../shared/data}" "${LLMKIT_BIN:=.}" "${LLMKIT_SRC:=.}"
: "${LLAMA_CPP_BIN:=/tmp/llama.cpp/build/bin}"
model=$LLMKIT_DATA/models/stories260K.gguf
[ -r "$model" ] || { echo "SKIP: $model not found"; exit 77; }
lc=$LLAMA_CPP_BIN/llama-completion
[ -x "$lc" ] || { echo "SKIP: no llama.cpp build in $LLAMA_CPP_BIN"; exit 77; }
fx=$LLMKIT_SRC/data/fixtures/lora
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$LLMKIT_BIN/tools/llm-lora-merge" -m "$model" -a "$fx/peft-a" --cat --format gguf \
	-o "$tmp/a.gguf"
for p in 'Once upon a time' 'The little dog'; do
	"$LLMKIT_BIN/tools/llm-generate" -m "$model" --lora "$tmp/a.gguf" -p "$p" \
		-n 40 --greedy --echo -t 1 > "$tmp/ours.txt"
	# under heavy load llama-completion now and then exits before printing
	# (some of) its text: up to three tries for a full one
	for try in 1 2 3; do
		LD_LIBRARY_PATH=$LLAMA_CPP_BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
		"$lc" -m "$model" --lora "$tmp/a.gguf" -p "$p" -n 40 --temp 0 -no-cnv -t 1 \
			2> "$tmp/lc.err" > "$tmp/theirs.txt" < /dev/null ||
			{ cat "$tmp/lc.err"; fail "llama-completion failed"; }
		[ "$(sed 's/^ //' "$tmp/theirs.txt")" = "$(cat "$tmp/ours.txt")" ] && break
	done
	"$LLMKIT_BIN/tools/llm-generate" -m "$model" -p "$p" -n 40 --greedy --echo \
		-t 1 > "$tmp/base.txt"
	# llama.cpp prints the prompt after a space (SentencePiece) and no
	# final newline
	theirs=$(sed 's/^ //' "$tmp/theirs.txt"); ours=$(cat "$tmp/ours.txt")
	base=$(cat "$tmp/base.txt")
	# under load llama-completion now and then exits before printing its
	# last tokens (see quant-llamacpp.sh): a cut text counts when it is a
	# prefix of ours at least 3/4 as long, and differs from the base's
	if [ "$theirs" != "$ours" ]; then
		case $ours in
		"$theirs"*) [ $((${#theirs} * 4)) -ge $((${#ours} * 3)) ] ||
			fail "'$p': llama.cpp's text is too short: '$theirs'" ;;
		*) fail "'$p': llama.cpp: '$theirs', ours: '$ours'" ;;
		esac
		echo "note: llama.cpp's text was cut short; its ${#theirs} bytes match ours"
	fi
	case $base in
	"$theirs"*) fail "'$p': the adapter changes nothing" ;;
	esac
done
echo "PASS: llama.cpp --lora gives our greedy text"
