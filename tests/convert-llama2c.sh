#!/bin/sh
# llm-convert --llama2c: stories260K.bin + tok512.bin must give the tensors,
# tokenizer arrays and hyper-parameters of stories260K.gguf, the same model
# as llama.cpp's convert-llama2c-to-ggml wrote it.  Known, intended
# differences: general.name (ours: the file's stem), llama.context_length
# (ours: the header's seq_len 512; llama.cpp records its default 2048), no
# output.weight (tied: it equals token_embd.weight, which is compared in its
# place), no separator/padding ids of -1.  Also: the llama2.c v1 and v2
# headers (re-exported from the v0 file), -o -, determinism.
set -u
BIN=${LLMKIT_BIN:-.}/tools/llm-convert
SRC=${LLMKIT_SRC:-.}
M=${LLMKIT_DATA:-../shared/data}/models
for f in stories260K.bin tok512.bin stories260K.gguf; do
	[ -f "$M/$f" ] || { echo "SKIP: $M/$f not found"; exit 77; }
done
python3 -c 'import gguf, numpy' 2>/dev/null ||
	{ echo "SKIP: python3 with gguf and numpy needed (pip install gguf numpy)"; exit 77; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
cmp_ref() {  # ours.gguf [extra gguf_compare args]
	ours=$1; shift
	python3 "$SRC/scripts/ref/gguf_compare.py" "$ours" "$M/stories260K.gguf" \
		--tied-ok --ignore-key general.name --ignore-key llama.context_length \
		--ignore-key tokenizer.ggml.seperator_token_id \
		--ignore-key tokenizer.ggml.padding_token_id "$@"
}

"$BIN" --llama2c "$M/stories260K.bin" --tokenizer "$M/tok512.bin" -o "$tmp/s.gguf" ||
	fail "conversion failed"
cmp_ref "$tmp/s.gguf" --expect-key llama.context_length=512 \
	--expect-key general.name=stories260K --expect-key llama.vocab_size=512 \
	--expect-key tokenizer.ggml.add_bos_token=True ||
	fail "v0 conversion differs from llama.cpp's stories260K.gguf"
# the reference's tensors are all there: output.weight is the only one
# we leave out (tied), so 47 tensors
n=$(python3 -c "import gguf,sys; print(len(gguf.GGUFReader(sys.argv[1]).tensors))" "$tmp/s.gguf")
[ "$n" = 47 ] || fail "expected 47 tensors (48 less the tied output.weight), got $n"

"$BIN" --llama2c "$M/stories260K.bin" --tokenizer "$M/tok512.bin" --ctx 2048 \
	--name llama -o "$tmp/s2048.gguf" || fail "--ctx 2048 failed"
cmp_ref "$tmp/s2048.gguf" --expect-key llama.context_length=2048 \
	--expect-key general.name=llama || fail "--ctx/--name not recorded"

"$BIN" --llama2c "$M/stories260K.bin" --tokenizer "$M/tok512.bin" -t 1 -o - \
	> "$tmp/stdout.gguf" || fail "-o - failed"
cmp "$tmp/s.gguf" "$tmp/stdout.gguf" || fail "-o - differs from the file (or -t 1 from -t N)"

"$BIN" --llama2c "$M/stories260K.bin" --tokenizer "$M/tok512.bin" --dtype f16 \
	-o "$tmp/s16.gguf" || fail "--dtype f16 failed"
cmp_ref "$tmp/s16.gguf" --tol 0.001 --expect-key general.file_type=1 ||
	fail "f16 conversion out of tolerance"

# v1 header: float32, norms first: identical tensors
python3 "$SRC/scripts/ref/llama2c_export.py" "$M/stories260K.bin" "$tmp/v1.bin" 1 ||
	fail "v1 export failed"
"$BIN" --llama2c "$tmp/v1.bin" --tokenizer "$M/tok512.bin" -o "$tmp/v1.gguf" ||
	fail "v1 conversion failed"
cmp_ref "$tmp/v1.gguf" || fail "v1 conversion differs"
# v2 header: int8 groups; equals the v1 file of the dequantized values
python3 "$SRC/scripts/ref/llama2c_export.py" "$M/stories260K.bin" "$tmp/v2.bin" 2 &&
python3 "$SRC/scripts/ref/llama2c_export.py" "$M/stories260K.bin" "$tmp/dq.bin" 1dq ||
	fail "v2 export failed"
"$BIN" --llama2c "$tmp/v2.bin" --tokenizer "$M/tok512.bin" --name x -o "$tmp/v2.gguf" &&
"$BIN" --llama2c "$tmp/dq.bin" --tokenizer "$M/tok512.bin" --name x -o "$tmp/dq.gguf" ||
	fail "v2 conversion failed"
python3 "$SRC/scripts/ref/gguf_compare.py" "$tmp/v2.gguf" "$tmp/dq.gguf" ||
	fail "v2 conversion differs from its dequantized values"
cmp_ref "$tmp/v2.gguf" --tol 0.01 || fail "v2 conversion too far from the model"
# llmkit's forward (when the tree has tests/dump-logits) gives the same
# logits on our file as on llama.cpp's
dump=${LLMKIT_BIN:-.}/tests/dump-logits
if [ -x "$dump" ]; then
	"$dump" "$tmp/s.gguf" 1,403,407,261,378,193 > "$tmp/ours.txt" &&
	"$dump" "$M/stories260K.gguf" 1,403,407,261,378,193 > "$tmp/ref.txt" ||
		fail "dump-logits failed"
	cmp -s "$tmp/ours.txt" "$tmp/ref.txt" || fail "logits differ from stories260K.gguf's"
else
	echo "note: no $dump: logits not compared"
fi
echo "PASS: convert-llama2c"
