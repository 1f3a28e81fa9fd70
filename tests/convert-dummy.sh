#!/bin/sh
# llm-convert --dummy: the shape table, determinism (same seed: same bytes,
# whatever the thread count or output stream; another seed: other bytes),
# and, with python3 + gguf + numpy, the structure: keys, tensor shapes and
# dtypes of a shape, weights near N(0, 0.02) and norms 1, tokenizers padded
# with <dummyN> unused tokens, GQA / qwen2 / llama3-rope variants.
set -u
BIN=${LLMKIT_BIN:-.}/tools/llm-convert
SRC=${LLMKIT_SRC:-.}
D=${LLMKIT_DATA:-../shared/data}
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$BIN" --dummy list > "$tmp/list" || fail "--dummy list failed"
for s in stories15M stories42M stories110M SmolLM2-135M TinyLlama-1.1B Llama-3.2-1B Llama-3-8B; do
	grep -q "^$s " "$tmp/list" || fail "--dummy list lacks $s"
done
grep -q "^TinyLlama-1.1B  *2048  *22  *32  *4  *5632  *32000  *2048  *1100.0M" "$tmp/list" ||
	fail "TinyLlama-1.1B row wrong: $(grep TinyLlama "$tmp/list")"

small='custom:dim=64,layers=2,heads=4,kv_heads=2,ffn=96,vocab=300,ctx=128'
"$BIN" --dummy "$small" --seed 7 -t 1 -o "$tmp/a.gguf" || fail "small dummy failed"
"$BIN" --dummy "$small" --seed 7 -t 3 -o - > "$tmp/b.gguf" || fail "small dummy to stdout failed"
cmp -s "$tmp/a.gguf" "$tmp/b.gguf" || fail "same seed, different bytes (-t 1 file vs -t 3 stdout)"
"$BIN" --dummy "$small" --seed 8 -o "$tmp/c.gguf" || fail "seed 8 failed"
cmp -s "$tmp/a.gguf" "$tmp/c.gguf" && fail "seeds 7 and 8 give the same file"
"$BIN" --dummy "$small" --seed 7 --dtype f16 -o "$tmp/h.gguf" || fail "f16 failed"
[ "$(wc -c < "$tmp/h.gguf")" -lt "$(wc -c < "$tmp/a.gguf")" ] || fail "f16 file is not smaller"

python3 -c 'import gguf, numpy' 2>/dev/null || {
	echo "PASS: convert-dummy (structure checks skipped: no python3 gguf/numpy)"
	exit 0
}
tok=$D/models/tok512.bin gpt2=$D/tokenizers/gpt2
for f in "$tok" "$gpt2/encoder.json" "$gpt2/vocab.bpe" "$D/models/stories260K.gguf"; do
	[ -f "$f" ] || {
		echo "PASS: convert-dummy (structure checks skipped: $f not found)"
		exit 0
	}
done
"$BIN" --dummy 'stories15M:layers=2' --dtype f16 --tokenizer "$tok" -o "$tmp/s15.gguf" ||
	fail "stories15M with tok512 failed"
"$BIN" --dummy 'SmolLM2-135M:layers=2,vocab=50304' --gpt2 "$gpt2" -o "$tmp/smol.gguf" ||
	fail "SmolLM2 with GPT-2 tokenizer failed"
"$BIN" --dummy 'Llama-3.2-1B:layers=1,dim=256,heads=8,kv_heads=2,ffn=512,vocab=1000' \
	--dtype bf16 -o "$tmp/l32.gguf" || fail "Llama-3.2 variant failed"
"$BIN" --dummy "$small,arch=qwen2,tied=0" -o "$tmp/q.gguf" || fail "qwen2 variant failed"
python3 - "$tmp" "$D/models/stories260K.gguf" <<'PY' || fail "structure check failed"
import math, os, sys
import numpy as np, gguf
tmp, ref = sys.argv[1], sys.argv[2]
bad = []
def f(r, k):
    x = r.fields[k]
    if x.types[0] == gguf.GGUFValueType.ARRAY:
        if x.types[-1] == gguf.GGUFValueType.STRING:
            return [bytes(x.parts[i]).decode() for i in x.data]
        return [x.parts[i][0].item() for i in x.data]
    if x.types[0] == gguf.GGUFValueType.STRING:
        return bytes(x.parts[x.data[0]]).decode()
    return x.parts[x.data[0]][0].item()
def expect(r, name, want):
    for k, v in want.items():
        got = f(r, k) if k in r.fields else None
        if isinstance(v, float) and got is not None:
            ok = abs(got - v) <= 1e-6 * abs(v)
        else:
            ok = got == v
        if not ok:
            bad.append(f"{name}: {k} = {got}, want {v}")
def tensors(r):
    return {t.name: (t.tensor_type.name, [int(x) for x in t.shape],
                     np.asarray(t.data)) for t in r.tensors}

# stories15M (2 layers) with tok512: shapes, dtypes, stats, padding
r = gguf.GGUFReader(os.path.join(tmp, "s15.gguf"))
expect(r, "s15", {"general.architecture": "llama", "llama.embedding_length": 288,
    "llama.block_count": 2, "llama.attention.head_count": 6,
    "llama.attention.head_count_kv": 6, "llama.feed_forward_length": 768,
    "llama.context_length": 256, "llama.vocab_size": 32000,
    "llama.rope.dimension_count": 48, "llama.rope.freq_base": 10000.0,
    "general.file_type": 1, "tokenizer.ggml.model": "llama",
    "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2})
T = tensors(r)
want = {"token_embd.weight": ("F16", [288, 32000]), "output_norm.weight": ("F32", [288]),
        "blk.1.attn_q.weight": ("F16", [288, 288]), "blk.1.ffn_down.weight": ("F16", [768, 288]),
        "blk.1.ffn_norm.weight": ("F32", [288])}
for k, (dt, sh) in want.items():
    if k not in T or T[k][0] != dt or T[k][1] != sh:
        bad.append(f"s15: {k}: {T.get(k, ('missing',))[:2]}, want {dt} {sh}")
if "output.weight" in T:
    bad.append("s15: tied shape has output.weight")
if len(T) != 2 * 9 + 2:
    bad.append(f"s15: {len(T)} tensors")
w = T["blk.0.attn_q.weight"][2].astype(np.float32)
if not (abs(w.mean()) < 1e-3 and 0.019 < w.std() < 0.021 and np.isfinite(w).all()):
    bad.append(f"s15: attn_q mean {w.mean()} std {w.std()}")
if not np.all(T["blk.0.attn_norm.weight"][2] == 1):
    bad.append("s15: norm weights are not 1")
if np.array_equal(T["blk.0.attn_q.weight"][2], T["blk.1.attn_q.weight"][2]):
    bad.append("s15: two tensors hold the same random values")
toks, types = f(r, "tokenizer.ggml.tokens"), f(r, "tokenizer.ggml.token_type")
rr = gguf.GGUFReader(ref)
if toks[:512] != f(rr, "tokenizer.ggml.tokens") or types[:512] != f(rr, "tokenizer.ggml.token_type"):
    bad.append("s15: the first 512 tokens differ from stories260K.gguf's")
if toks[512] != "<dummy512>" or toks[-1] != "<dummy31999>" or set(types[512:]) != {5}:
    bad.append(f"s15: padding {toks[512]} {toks[-1]} {set(types[512:])}")

# SmolLM2 shape with GPT-2's tokenizer
r = gguf.GGUFReader(os.path.join(tmp, "smol.gguf"))
expect(r, "smol", {"llama.attention.head_count": 9, "llama.attention.head_count_kv": 3,
    "llama.rope.freq_base": 100000.0, "llama.rope.dimension_count": 64,
    "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2",
    "tokenizer.ggml.eos_token_id": 50256, "llama.vocab_size": 50304})
if len(f(r, "tokenizer.ggml.merges")) != 50000 or f(r, "tokenizer.ggml.tokens")[50256] != "<|endoftext|>":
    bad.append("smol: GPT-2 merges / <|endoftext|> wrong")
T = tensors(r)
if T["blk.0.attn_k.weight"][1] != [576, 192]:
    bad.append(f"smol: attn_k shape {T['blk.0.attn_k.weight'][1]}")

# Llama 3.2 style: llama3 rope factors, tied, bf16, default byte vocabulary
r = gguf.GGUFReader(os.path.join(tmp, "l32.gguf"))
T = tensors(r)
rf = T.get("rope_freqs.weight")
if rf is None or rf[0] != "F32" or rf[1] != [16]:
    bad.append(f"l32: rope_freqs {rf and rf[:2]}")
else:
    n_rot, base, factor, old = 32, 500000.0, 32.0, 8192
    want = []
    for i in range(n_rot // 2):
        fr = base ** (-2 * i / n_rot)
        wl = 2 * math.pi / fr
        if wl < old / 4:
            want.append(1.0)
        elif wl > old / 1:
            want.append(factor)
        else:
            s = (old / wl - 1) / (4 - 1)
            want.append(1 / ((1 - s) / factor + s))
    if not np.allclose(rf[2], want, rtol=1e-5):
        bad.append(f"l32: rope_freqs {rf[2]} != {want}")
if "output.weight" in T or T["token_embd.weight"][0] != "BF16":
    bad.append("l32: expected tied BF16 embedding")
toks = f(r, "tokenizer.ggml.tokens")
if toks[:3] != ["<unk>", "<s>", "</s>"] or toks[3] != "<0x00>" or toks[258] != "<0xFF>" \
        or toks[259] != "<dummy259>":
    bad.append(f"l32: default vocabulary {toks[:4]} {toks[258:260]}")

# qwen2 variant: biases, untied
r = gguf.GGUFReader(os.path.join(tmp, "q.gguf"))
T = tensors(r)
expect(r, "q", {"general.architecture": "qwen2", "qwen2.attention.head_count_kv": 2})
for k, sh in [("blk.1.attn_q.bias", [64]), ("blk.1.attn_k.bias", [32]),
              ("blk.1.attn_v.bias", [32]), ("output.weight", [64, 300])]:
    if k not in T or T[k][1] != sh:
        bad.append(f"q: {k} {T.get(k, ('missing', None))[:2]}")
for b in bad:
    print(b)
sys.exit(1 if bad else 0)
PY
echo "PASS: convert-dummy"
