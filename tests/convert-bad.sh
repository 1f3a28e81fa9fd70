#!/bin/sh
# llm-convert on bad input: every failure is one line on stderr naming the
# file and what is wrong, exit 1 (2 for usage errors), and leaves no output
# (nor temporary) file behind; an output naming an input is refused.
# The Hugging Face inputs are built here by hand (no Python needed).
set -u
BIN=${LLMKIT_BIN:-.}/tools/llm-convert
M=${LLMKIT_DATA:-../shared/data}/models
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
out=$tmp/out
mkdir "$out"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# expect STATUS PATTERN ARGS...: run, check status, one stderr line
# matching PATTERN, and nothing left in $out.
expect() {
	want=$1 pat=$2; shift 2
	"$BIN" "$@" -o "$out/x.gguf" >/dev/null 2>"$tmp/err"
	status=$?
	lines=$(grep -c . "$tmp/err")
	msg=$(head -n 1 "$tmp/err")
	if [ "$status" != "$want" ]; then
		fail "status $status, want $want: $* ($msg)"
	elif [ "$want" = 1 ] && [ "$lines" != 1 ]; then
		fail "$lines lines of error, want 1: $*"; cat "$tmp/err"
	elif ! grep -q -- "$pat" "$tmp/err"; then
		fail "message '$msg' lacks '$pat': $*"
	fi
	if [ -n "$(ls -A "$out")" ]; then
		fail "output left behind: $* ($(ls "$out"))"
		rm -f "$out"/* "$out"/.[!.]* 2>/dev/null
	fi
}

# ---------------------------------------------------------------- usage
expect 2 "exactly one" --dummy list --hf /x
expect 2 "exactly one"
expect 2 "needs --tokenizer" --llama2c "$tmp/none.bin"
expect 2 "dtype" --dummy stories15M --dtype q4_0
expect 2 "seed" --dummy stories15M --seed abc
expect 2 "threads" --dummy stories15M -t 0
expect 2 "unknown option" --dummy stories15M --frobnicate
expect 2 "unexpected argument" --dummy stories15M extra
"$BIN" --dummy stories15M >/dev/null 2>&1; [ $? = 2 ] || fail "no -o: want status 2"

# ---------------------------------------------------------------- dummy
expect 1 "unknown model shape" --dummy nosuch
expect 1 "unknown key" --dummy "custom:wings=2"
expect 1 "multiple of the kv head count" --dummy "custom:heads=6,kv_heads=4"
expect 1 "no such file\|No such file" --dummy stories15M --tokenizer "$tmp/none.bin"
if [ -f "$M/tok512.bin" ]; then
	expect 1 "more than the model" --dummy "custom:vocab=100" --tokenizer "$M/tok512.bin"
fi

# ---------------------------------------------------------------- llama2.c
if [ -f "$M/stories260K.bin" ] && [ -f "$M/tok512.bin" ]; then
	B=$M/stories260K.bin T=$M/tok512.bin
	expect 1 "No such file" --llama2c "$tmp/none.bin" --tokenizer "$T"
	head -c 1000 "$B" > "$tmp/trunc.bin"
	expect 1 "trunc.bin: truncated" --llama2c "$tmp/trunc.bin" --tokenizer "$T"
	head -c 10 "$B" > "$tmp/short.bin"
	expect 1 "short.bin: truncated header" --llama2c "$tmp/short.bin" --tokenizer "$T"
	{ cat "$B"; printf 'xxxx'; } > "$tmp/long.bin"
	expect 1 "long.bin: trailing data" --llama2c "$tmp/long.bin" --tokenizer "$T"
	head -c 1056540 /dev/zero > "$tmp/zero.bin"
	expect 1 "zero.bin: header: dim = 0" --llama2c "$tmp/zero.bin" --tokenizer "$T"
	printf '\0\0\0\0' > "$tmp/tok0.bin"
	expect 1 "tok0.bin: 0 tokens, the model has 512\|tok0.bin: only" \
		--llama2c "$B" --tokenizer "$tmp/tok0.bin"
	head -c 3000 "$T" > "$tmp/toktrunc.bin"
	expect 1 "toktrunc.bin: .*\(truncated\|past end\)" --llama2c "$B" --tokenizer "$tmp/toktrunc.bin"
	# never overwrite an input, even the tokenizer
	cp "$B" "$tmp/in.bin"
	cp "$T" "$tmp/tok.bin"
	for victim in in.bin tok.bin; do
		sum=$(cksum < "$tmp/$victim")
		"$BIN" --llama2c "$tmp/in.bin" --tokenizer "$tmp/tok.bin" -o "$tmp/$victim" 2>"$tmp/err"
		[ $? = 1 ] || fail "overwriting $victim: want status 1"
		grep -q "refusing to overwrite" "$tmp/err" || fail "overwrite message: $(cat "$tmp/err")"
		[ "$(cksum < "$tmp/$victim")" = "$sum" ] || fail "$victim was changed"
	done
	# a failed write to stdout is an error, not a silent truncation
	if [ -w /dev/full ]; then
		"$BIN" --llama2c "$B" --tokenizer "$T" -o - > /dev/full 2>"$tmp/err"
		[ $? = 1 ] || fail "-o - > /dev/full: want status 1"
	fi
	"$BIN" --llama2c "$B" --tokenizer "$T" -o "$tmp/no/such/dir/x.gguf" 2>"$tmp/err"
	[ $? = 1 ] && grep -q "cannot create" "$tmp/err" ||
		fail "output in a missing directory: $(cat "$tmp/err")"
else
	echo "note: stories260K not found, llama2.c cases skipped"
fi

# ---------------------------------------------------------------- HF
# A tiny Llama (dim 8, 2 heads, 1 layer, ffn 8, vocab 4, tied), built by
# hand; then one thing at a time broken.
u64le() {  # n < 65536 as 8 bytes little-endian
	printf "$(printf '\\%03o\\%03o' $(($1 & 255)) $(($1 >> 8)))\\0\\0\\0\\0\\0\\0"
}
# mkst FILE [NAME:DTYPE:SHAPE(comma-separated):BYTES[:DECLARED_END]]...
mkst() {
	f=$1; shift
	h='{"__metadata__":{"format":"pt"}' off=0
	for spec in "$@"; do
		IFS=: read -r name dt shape bytes end <<EOS
$spec
EOS
		[ -n "$end" ] || end=$((off + bytes))
		h="$h,\"$name\":{\"dtype\":\"$dt\",\"shape\":[$shape],\"data_offsets\":[$off,$end]}"
		off=$((off + bytes))
	done
	h="$h}"
	while [ $(( ${#h} % 8 )) != 0 ]; do h="$h "; done
	{ u64le ${#h}; printf '%s' "$h"; head -c "$off" /dev/zero; } > "$f"
}
L=model.layers.0
good_tensors="model.embed_tokens.weight:F32:4,8:128 model.norm.weight:F32:8:32
$L.input_layernorm.weight:F32:8:32 $L.post_attention_layernorm.weight:F32:8:32
$L.self_attn.q_proj.weight:F32:8,8:256 $L.self_attn.k_proj.weight:F32:8,8:256
$L.self_attn.v_proj.weight:F32:8,8:256 $L.self_attn.o_proj.weight:F32:8,8:256
$L.mlp.gate_proj.weight:F32:8,8:256 $L.mlp.up_proj.weight:F32:8,8:256
$L.mlp.down_proj.weight:F32:8,8:256"
config='{"architectures":["LlamaForCausalLM"],"hidden_size":8,"intermediate_size":8,
"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":2,
"max_position_embeddings":64,"rms_norm_eps":1e-5,"vocab_size":4,
"tie_word_embeddings":true}'
tokjson='{"model":{"type":"BPE","vocab":{"a":0,"b":1,"c":2,"d":3},"merges":[]},
"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"use_regex":true},
"decoder":{"type":"ByteLevel"},"added_tokens":[]}'
mkhf() {  # DIR: a good model
	mkdir -p "$1"
	printf '%s' "$config" > "$1/config.json"
	printf '%s' "$tokjson" > "$1/tokenizer.json"
	# shellcheck disable=SC2086
	mkst "$1/model.safetensors" $good_tensors
}
H=$tmp/hf
mkhf "$H"
"$BIN" --hf "$H" -o "$tmp/good.gguf" 2>"$tmp/err" || fail "the good tiny model fails: $(cat "$tmp/err")"

expect 1 "No such file\|not a directory" --hf "$tmp/nodir"
rm "$H/config.json"
expect 1 "config.json: No such file" --hf "$H"
printf '{"architectures":["LlamaForCausalLM"],' > "$H/config.json"
expect 1 "config.json: line" --hf "$H"
printf '%s' "$config" | sed 's/"hidden_size":8,//' > "$H/config.json"
expect 1 "config.json: missing field hidden_size" --hf "$H"
printf '%s' "$config" | sed 's/"hidden_size":8/"hidden_size":"8"/' > "$H/config.json"
expect 1 "config.json: hidden_size must be a positive integer" --hf "$H"
printf '%s' "$config" | sed 's/LlamaForCausalLM/GPT2LMHeadModel/' > "$H/config.json"
expect 1 "architecture GPT2LMHeadModel is not supported" --hf "$H"
printf '%s' "$config" | sed 's/"num_key_value_heads":2/"num_key_value_heads":3/' > "$H/config.json"
expect 1 "multiple of the kv head count" --hf "$H"
printf '%s' "$config" | sed 's/"tie_word_embeddings":true/"tie_word_embeddings":false/' > "$H/config.json"
expect 1 "lm_head.weight is missing" --hf "$H"
printf '%s' "$config" | sed 's/"vocab_size":4/"vocab_size":3/' > "$H/config.json"
expect 1 "more than the model" --hf "$H"
printf '%s' "$config" | sed 's/"rms_norm_eps":1e-5/"rope_scaling":{"rope_type":"longrope","factor":2},"rms_norm_eps":1e-5/' > "$H/config.json"
expect 1 "rope_scaling type \"longrope\" is not supported" --hf "$H"
printf '%s' "$config" > "$H/config.json"

# safetensors that lie
st=$H/model.safetensors
# shellcheck disable=SC2086
set -- $good_tensors
mkst "$st" "$@" "extra.weight:F32:2:8"
size=$(wc -c < "$st")
head -c $((size - 4)) "$st" > "$st.cut" && mv "$st.cut" "$st"
expect 1 "extra.weight: data extends past end of file" --hf "$H"
mkst "$st" "$@" "extra.weight:F32:2:8:4"
expect 1 "extra.weight: data_offsets end 4 before begin 2016" --hf "$H"
mkst "$st" "$@" "extra.weight:F32:3:8"
expect 1 "extra.weight: 8 bytes at data_offsets, but F32 x 3 elements need 12" --hf "$H"
mkst "$st" "$@" "extra.weight:F32:2:8"
expect 1 "unexpected tensor extra.weight" --hf "$H"
mkst "$st" "$@" "extra.weight:BOOL:8:8"
expect 1 "extra.weight: dtype BOOL is not supported" --hf "$H"
shift
mkst "$st" "model.embed_tokens.weight:I32:4,8:128" "$@"
expect 1 "model.embed_tokens.weight: dtype I32 cannot be converted" --hf "$H"
mkst "$st" "model.embed_tokens.weight:F32:8,4:128" "$@"
expect 1 "model.embed_tokens.weight has shape \[8, 4\], config.json implies \[4, 8\]" --hf "$H"
mkst "$st" "$@"
expect 1 "model.embed_tokens.weight is missing" --hf "$H"
# header length beyond the file; not JSON; truncated data
{ u64le 60000; printf '{}'; } > "$st"
expect 1 "header of 60000 bytes extends past end of file" --hf "$H"
{ u64le 8; printf '[1,2,3] '; } > "$st"
expect 1 "header is not a JSON object" --hf "$H"
{ u64le 8; printf '{"a":1  '; } > "$st"
expect 1 "model.safetensors: header:" --hf "$H"
printf 'abc' > "$st"
expect 1 "too short for a header" --hf "$H"
rm "$st"
expect 1 "no model.safetensors or model.safetensors.index.json" --hf "$H"
# shellcheck disable=SC2086
mkst "$st" $good_tensors
printf '{"weight_map":{"model.norm.weight":"model-2.safetensors"}}' > "$H/model.safetensors.index.json"
expect 1 "model-2.safetensors: No such file" --hf "$H"
printf '{"weight_map":{"nosuch.weight":"model.safetensors"}}' > "$H/model.safetensors.index.json"
expect 1 "index.json: tensor nosuch.weight is not in model.safetensors" --hf "$H"
rm "$H/model.safetensors.index.json"

# tokenizer.json
printf '{"model":{"type":"Unigram","vocab":[]}}' > "$H/tokenizer.json"
expect 1 "tokenizer.json: model type Unigram is not supported" --hf "$H"
printf '{"model":{"type":"BPE","vocab":{"a":0,"b":0},"merges":[]},"pre_tokenizer":{"type":"ByteLevel"}}' > "$H/tokenizer.json"
expect 1 "tokenizer.json: id 0 given twice" --hf "$H"
printf '{"model":{"type":"BPE","vocab":{"a":0},"merges":["a"]},"pre_tokenizer":{"type":"ByteLevel"}}' > "$H/tokenizer.json"
expect 1 "tokenizer.json: model.merges\[0\]" --hf "$H"
printf '{"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"Split","pattern":{"Regex":"x+"}},"decoder":{"type":"ByteLevel"}}' > "$H/tokenizer.json"
expect 1 "pre-tokenizer not recognised" --hf "$H"
rm "$H/tokenizer.json"
expect 1 "no tokenizer.json" --hf "$H"
printf '%s' "$tokjson" > "$H/tokenizer.json"
# the fixed model converts again, and cannot overwrite its own files
"$BIN" --hf "$H" -o "$tmp/good2.gguf" 2>"$tmp/err" || fail "restored model fails: $(cat "$tmp/err")"
cmp "$tmp/good.gguf" "$tmp/good2.gguf" || fail "restored model converts differently"
sum=$(cksum < "$st")
"$BIN" --hf "$H" -o "$st" 2>/dev/null
[ $? = 1 ] || fail "overwriting model.safetensors: want status 1"
[ "$(cksum < "$st")" = "$sum" ] || fail "model.safetensors was changed"

[ "$fails" = 0 ] || { echo "FAIL: $fails case(s)"; exit 1; }
echo "PASS: convert-bad"
