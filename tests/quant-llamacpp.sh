#!/bin/sh
# Files llm-quantize writes load in llama.cpp, and files llama.cpp's
# llama-quantize writes load here; either way the greedy text equals
# ours (f32 KV cache on both sides): all 120 tokens for q8_0, q6_k and
# q4_k_m; for the 4- and 5-bit 32-block types and q2_k the first words,
# after which a near-tie in this tiny model can go either way (both
# quantize activations to 8 bits, but sum blocks in different orders, and
# llama.cpp repacks q4_0 for other kernels).  Needs llama.cpp's llama-completion:
# $LLAMA_CPP_BIN or /tmp/llama.cpp/build/bin; SKIP (77) without it.
set -u
: "${LLMKIT_DATA:=../shared/data}" "${LLMKIT_BIN:=.}"
model=$LLMKIT_DATA/models/stories260K.gguf
[ -r "$model" ] || { echo "SKIP: $model not found"; exit 77; }
LC=
for d in "${LLAMA_CPP_BIN:-}" /tmp/llama.cpp/build/bin; do
	[ -n "$d" ] && [ -x "$d/llama-completion" ] && { LC=$d/llama-completion; break; }
done
[ -n "$LC" ] || { echo "SKIP: llama.cpp's llama-completion not found (LLAMA_CPP_BIN)"; exit 77; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail=0
n=120
# Equal texts; under load llama-completion now and then exits before its
# last token is printed, so a text one word short of the other, its last
# word cut, counts as equal when every word before it is.
same() {
	[ "$1" = "$2" ] && return 0
	a=$(echo "$1" | wc -w); b=$(echo "$2" | wc -w)
	k=$((a < b ? a : b)); k=$((k - 1))
	[ $k -ge 40 ] && [ "$(echo "$1" | cut -d' ' -f1-$k)" = "$(echo "$2" | cut -d' ' -f1-$k)" ]
}
# llama.cpp's greedy text for model $1, up to three tries while it is not
# $2 (under heavy load llama-completion now and then exits before printing
# all of its text)
theirs_of() {
	for try in 1 2 3; do
		out=$("$LC" -m "$1" -p "" -n $n --temp 0 -t 1 -ctk f32 -ctv f32 -no-cnv \
			--no-warmup 2>"$tmp/err" < /dev/null | tr -s ' \n' ' ' | sed 's/^ //; s/ $//')
		same "$2" "$out" && break
	done
	echo "$out"
}
for t in q8_0 q4_0 q4_1 q5_0 q5_1 q6_k q4_k_m q2_k; do
	f=$tmp/$t.gguf
	"$LLMKIT_BIN/tools/llm-quantize" -q -t $t "$model" "$f" || { echo "FAIL: $t: quantize"; fail=1; continue; }
	ours=$("$LLMKIT_BIN/tools/llm-generate" -m "$f" --temp 0 -n $n -t 1 --kv-type f32 \
		--no-stream 2>/dev/null | tr -s ' \n' ' ' | sed 's/^ //; s/ $//')
	theirs=$(theirs_of "$f" "$ours")
	if [ -z "$theirs" ]; then
		echo "FAIL: $t: llama.cpp produced nothing: $(grep -i error "$tmp/err" | head -3)"
		fail=1
	elif ! same "$ours" "$theirs" && [ $t != q8_0 ] && [ $t != q6_k ] && [ $t != q4_k_m ] &&
	     [ "$(echo "$ours" | cut -d' ' -f1-12)" = "$(echo "$theirs" | cut -d' ' -f1-12)" ]; then
		same=0
		for i in $(seq 1 200); do
			[ "$(echo "$ours" | cut -d' ' -f1-$i)" = "$(echo "$theirs" | cut -d' ' -f1-$i)" ] || break
			same=$i
		done
		echo "ok: $t: loads; the first $same words identical"
	elif ! same "$ours" "$theirs"; then
		echo "FAIL: $t: greedy text differs"
		echo "  ours:   $ours"
		echo "  theirs: $theirs"
		fail=1
	else
		echo "ok: $t: $(echo "$ours" | wc -w) words identical"
	fi
done

# The other way: llama.cpp's own quantizer (it cannot write q8_0 or q4_0
# for this model: ffn_down rows of 172 have no fallback there).
LQ=$(dirname "$LC")/llama-quantize
if [ -x "$LQ" ]; then
	for t in Q6_K Q4_K_M Q2_K Q5_K_S Q3_K_M; do
		f=$tmp/lc-$t.gguf
		"$LQ" "$model" "$f" $t > "$tmp/err" 2>&1 || { echo "FAIL: llama-quantize $t: $(tail -1 "$tmp/err")"; fail=1; continue; }
		ours=$("$LLMKIT_BIN/tools/llm-generate" -m "$f" --temp 0 -n $n -t 1 --kv-type f32 \
			--no-stream 2>"$tmp/err" | tr -s ' \n' ' ' | sed 's/^ //; s/ $//')
		theirs=$(theirs_of "$f" "$ours")
		if [ -z "$ours" ]; then
			echo "FAIL: llama.cpp's $t does not run here: $(cat "$tmp/err")"; fail=1
		elif same "$ours" "$theirs"; then
			echo "ok: llama.cpp's $t: $(echo "$ours" | wc -w) words identical"
		elif [ $t != Q6_K ] && [ $t != Q4_K_M ] &&
		     [ "$(echo "$ours" | cut -d' ' -f1-12)" = "$(echo "$theirs" | cut -d' ' -f1-12)" ]; then
			echo "ok: llama.cpp's $t: runs here; the first words identical"
		else
			echo "FAIL: llama.cpp's $t: greedy text differs"
			echo "  ours:   $ours"
			echo "  theirs: $theirs"
			fail=1
		fi
	done
fi
exit $fail
