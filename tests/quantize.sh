#!/bin/sh
# llm-quantize on stories260K: every type writes a model that loads and
# generates; q8_0 generates what f32 does; pipes equal files; overrides,
# calibration and saved importance matrices; bad input (unknown type,
# truncated stream, full disk) fails cleanly and leaves no output behind.
set -u
: "${LLMKIT_DATA:=../shared/data}" "${LLMKIT_BIN:=.}" "${LLMKIT_SRC:=.}"
model=$LLMKIT_DATA/models/stories260K.gguf
text=$LLMKIT_DATA/text/tinystories-val.txt
[ -r "$model" ] && [ -r "$text" ] || { echo "SKIP: stories260K or text not found"; exit 77; }
Q=$LLMKIT_BIN/tools/llm-quantize
G=$LLMKIT_BIN/tools/llm-generate
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
gen() { "$G" -m "$1" --temp 0 -n "${2:-60}" -t 2 --kv-type f32 --no-stream 2>/dev/null; }
havepy=0
python3 -c 'import gguf, numpy' 2>/dev/null && havepy=1
# tensor types of a file, "name type" per line (gguf Python package)
types() {
	python3 - "$1" <<'PY'
import sys, gguf
r = gguf.GGUFReader(sys.argv[1])
for t in r.tensors:
    print(t.name, t.tensor_type.name.lower())
PY
}

ref=$(gen "$model")
[ -n "$ref" ] || bad "f32 model generates nothing"
for t in q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k q4_k_m q5_k_m q3_k_m f16 bf16; do
	out=$tmp/$t.gguf
	if ! "$Q" -q -t $t "$model" "$out"; then bad "$t: llm-quantize failed"; continue; fi
	[ "$(wc -c < "$out")" -lt "$(wc -c < "$model")" ] || bad "$t: output not smaller"
	txt=$(gen "$out")
	[ -n "$txt" ] || bad "$t: quantized model generates nothing"
	if [ $havepy = 1 ]; then
		types "$out" > "$tmp/types" || bad "$t: gguf package cannot read the output"
		grep -q "norm.weight f32" "$tmp/types" || bad "$t: norms not f32"
	fi
done
# q8_0 keeps greedy decoding
[ "$(gen "$tmp/q8_0.gguf")" = "$ref" ] || bad "q8_0 greedy text differs from f32"
# the rows of 172 (ffn_down) cannot take 32-blocks: a notice, f16
"$Q" -t q4_0 "$model" "$tmp/n.gguf" 2> "$tmp/err" || bad "q4_0 with notice failed"
grep -q "ffn_down.weight: rows of 172 are not a multiple of q4_0's 32: kept at f16" "$tmp/err" \
	|| bad "no fallback notice: $(cat "$tmp/err")"
grep -q "bits per weight" "$tmp/err" || bad "no summary"
# deterministic, and pipes give the same bytes as files
"$Q" -q -t q4_k "$model" "$tmp/a.gguf" && "$Q" -q -t q4_k "$model" "$tmp/b.gguf"
cmp -s "$tmp/a.gguf" "$tmp/b.gguf" || bad "two runs differ"
cat "$model" | "$Q" -q -t q4_k - - > "$tmp/pipe.gguf" || bad "stdin to stdout failed"
cmp -s "$tmp/a.gguf" "$tmp/pipe.gguf" || bad "pipe output differs from file output"
if [ $havepy = 1 ]; then
	# overrides: first match wins; output and embedding types
	"$Q" -q -t q4_0 --tensor-type 'attn_v=q8_0' --tensor-type 'blk\.0\..*=q5_1' \
		--token-embedding-type f16 "$model" "$tmp/o.gguf" || bad "override run failed"
	types "$tmp/o.gguf" > "$tmp/ot"
	grep -q "^blk.3.attn_v.weight q8_0" "$tmp/ot" || bad "attn_v override not applied"
	grep -q "^blk.0.attn_v.weight q8_0" "$tmp/ot" || bad "first match does not win"
	grep -q "^blk.0.attn_q.weight q5_1" "$tmp/ot" || bad "regex override not applied"
	grep -q "^blk.1.attn_q.weight q4_0" "$tmp/ot" || bad "non-matching weight changed"
	grep -q "^token_embd.weight f16" "$tmp/ot" || bad "embedding type not applied"
	# the mix: the output at q8_0 (64 is no multiple of 256: not q6_k)
	types "$tmp/q4_k_m.gguf" | grep -q "^output.weight q8_0" || bad "q4_k_m output rule"
	types "$tmp/q4_0.gguf" | grep -q "^output.weight q8_0" || bad "q4_0 output rule"
	# --pure: no output rule
	"$Q" -q -t q4_0 --pure "$model" "$tmp/p.gguf"
	types "$tmp/p.gguf" | grep -q "^output.weight q4_0" || bad "--pure not pure"
fi
# calibration: an importance matrix saved and reused gives the same bytes
head -c 20000 "$text" > "$tmp/calib.txt"
"$Q" -q -t q4_0 --calibrate "$tmp/calib.txt" --calib-ctx 128 --imatrix-out "$tmp/im.gguf" \
	"$model" "$tmp/c.gguf" || bad "calibrated run failed"
[ -s "$tmp/im.gguf" ] || bad "no imatrix written"
"$Q" -q -t q4_0 --imatrix "$tmp/im.gguf" "$model" "$tmp/c2.gguf" || bad "--imatrix run failed"
cmp -s "$tmp/c.gguf" "$tmp/c2.gguf" || bad "saved imatrix gives other bytes"
cmp -s "$tmp/c.gguf" "$tmp/q4_0.gguf" && bad "calibration changed nothing"
[ -n "$(gen "$tmp/c.gguf")" ] || bad "calibrated model generates nothing"
if [ $havepy = 1 ]; then
	python3 - "$tmp/im.gguf" <<'PY' || bad "imatrix file is not llama.cpp's format"
import sys, gguf
r = gguf.GGUFReader(sys.argv[1])
f = r.fields["general.type"]
assert bytes(f.parts[f.data[0]]).decode() == "imatrix"
names = {t.name for t in r.tensors}
assert "blk.0.attn_q.weight.in_sum2" in names and "blk.0.attn_q.weight.counts" in names
c = [t for t in r.tensors if t.name == "blk.0.attn_q.weight.counts"][0]
assert float(c.data[0][0]) > 100, c.data
PY
fi

# bad input
"$Q" -t q9_9 "$model" "$tmp/x.gguf" 2> "$tmp/err"; rc=$?
[ $rc = 2 ] || bad "unknown type: exit $rc, not 2"
grep -q "unknown type 'q9_9'" "$tmp/err" || bad "unknown type message: $(cat "$tmp/err")"
[ -e "$tmp/x.gguf" ] && bad "unknown type left an output"
"$Q" "$model" "$tmp/x.gguf" 2>/dev/null; [ $? = 2 ] || bad "missing -t not a usage error"
head -c 700000 "$model" | "$Q" -t q8_0 - "$tmp/x.gguf" 2> "$tmp/err"; rc=$?
[ $rc = 1 ] || bad "truncated stream: exit $rc, not 1"
grep -q "gguf" "$tmp/err" || bad "truncated stream message: $(cat "$tmp/err")"
[ -e "$tmp/x.gguf" ] && bad "truncated stream left an output"
mkdir "$tmp/full"
( ulimit -f 200; trap '' XFSZ; exec "$Q" -q -t q8_0 "$model" "$tmp/full/x.gguf" ) 2> "$tmp/err"; rc=$?
[ $rc = 1 ] || bad "full disk: exit $rc, not 1"
[ -z "$(ls "$tmp/full")" ] || bad "full disk left files: $(ls "$tmp/full")"
grep -qi "write\|space\|large\|EFBIG\|No space" "$tmp/err" || bad "full disk message: $(cat "$tmp/err")"
if [ -w /dev/full ]; then
	"$Q" -q -t q8_0 "$model" - > /dev/full 2> "$tmp/err"; rc=$?
	[ $rc = 1 ] || bad "stdout on /dev/full: exit $rc, not 1"
fi
"$Q" -t q8_0 "$model" "$model" 2>/dev/null; [ $? = 2 ] || bad "overwriting the input not refused"
"$Q" -t q8_0 --tensor-type 'attn_v' "$model" "$tmp/x.gguf" 2>/dev/null; [ $? = 2 ] || bad "bad --tensor-type accepted"
"$Q" -t q8_0 --imatrix "$tmp/calib.txt" "$model" "$tmp/x.gguf" 2>/dev/null; [ $? = 1 ] || bad "non-GGUF imatrix accepted"
exit $fail
