#!/bin/sh
# llm-convert --hf on tiny random Hugging Face models that
# scripts/ref/make_tiny_hf.py builds (Llama with a SentencePiece-style
# tokenizer, Llama GQA + head_dim + llama3 rope scaling + bf16 shards +
# Llama-3-style tokenizer, Qwen2 with biases, tied, f16, chat template).
# scripts/ref/check_hf_gguf.py checks each GGUF against the source: tensors
# (Q/K permuted as llama.cpp does), rope_freqs, metadata, tokenizer, and a
# numpy forward with llama.cpp's semantics against the logits of an
# HF-semantics numpy forward.
#
# When the tree has llmkit's forward pass and its tests/dump-logits helper
# (main, from the forward work), llmkit's own logits for ref/tokens.txt are
# compared with ref/logits.f32 as well; without it that step is skipped
# (said on stdout).
set -u
BIN=${LLMKIT_BIN:-.}/tools/llm-convert
SRC=${LLMKIT_SRC:-.}
python3 -c 'import gguf, numpy, safetensors, tokenizers' 2>/dev/null || {
	echo "SKIP: python3 with gguf numpy safetensors tokenizers needed"
	exit 77
}
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
text=${LLMKIT_DATA:-../shared/data}/text/tinystories-val.txt
[ -f "$text" ] || text=
python3 "$SRC/scripts/ref/make_tiny_hf.py" "$tmp/hf" $text || fail "make_tiny_hf.py failed"

dump=${LLMKIT_BIN:-.}/tests/dump-logits
[ -x "$dump" ] || { echo "note: no $dump: llmkit's own logits not compared"; dump=; }
tokz=${LLMKIT_BIN:-.}/tools/llm-tokenize
[ -x "$tokz" ] || { echo "note: no $tokz: llmkit's tokenizer not compared"; tokz=; }
check() {  # variant pre [convert options...]
	v=$1 pre=$2; shift 2
	"$BIN" --hf "$tmp/hf/$v" -o "$tmp/$v.gguf" "$@" || fail "$v: conversion failed"
	python3 "$SRC/scripts/ref/check_hf_gguf.py" "$tmp/hf/$v" "$tmp/$v.gguf" \
		--pre "$pre" || fail "$v: GGUF does not match the source ($*)"
	if [ -n "$tokz" ]; then
		# llmkit's tokenizer on the converted vocabulary vs the HF tokenizer
		python3 - "$tmp/hf/$v" "$tmp/$v.gguf" "$tokz" <<'PY' ||
import subprocess, sys
from tokenizers import Tokenizer
d, g, tool = sys.argv[1:4]
tok = Tokenizer.from_file(d + "/tokenizer.json")
bad = 0
for t in ["Once upon a time, there was a little girl named Lily.",
          "She said: \"Let's play!\" and ran 123 steps.", "naïve café 東京 🙂",
          "hello  world\n\nnew   line", "I've 4567 apples; they're OK."]:
    want = tok.encode(t, add_special_tokens=False).ids
    r = subprocess.run([tool, "-m", g, "--no-bos", "-p", t], capture_output=True, text=True)
    got = [int(x) for x in r.stdout.split()]
    if got != want:
        bad += 1
        print(f"llm-tokenize {t!r}: {got} != HF {want} {r.stderr.strip()}")
sys.exit(1 if bad else 0)
PY
			fail "$v: llmkit's tokenizer disagrees with the HF tokenizer"
	fi
	[ -n "$dump" ] || return 0
	# llmkit's forward on the converted file vs the HF-semantics reference
	"$dump" "$tmp/$v.gguf" "$(paste -sd, "$tmp/hf/$v/ref/tokens.txt")" \
		> "$tmp/$v.logits" || fail "$v: dump-logits failed"
	python3 - "$tmp/$v.logits" "$tmp/hf/$v/ref/logits.f32" "$*" <<'PY' ||
import sys, numpy as np
got = np.loadtxt(sys.argv[1], ndmin=2)
ref = np.fromfile(sys.argv[2], "<f4").reshape(got.shape[0], -1)
tol = 1e-4 if "--dtype" not in sys.argv[3] else 5e-2
d = np.abs(got - ref).max()
print(f"llmkit logits: max |diff| {d:.3g} of {np.abs(ref).max():.3g}", file=sys.stderr)
sys.exit(0 if got.shape == ref.shape and d <= tol * np.abs(ref).max() else 1)
PY
		fail "$v: llmkit's logits differ from the HF reference ($*)"
}
check llama default
check llama-gqa llama-bpe
check qwen2 qwen2
# dtype changes: widening is exact, narrowing within rounding
check qwen2 qwen2 --dtype f32
check llama-gqa llama-bpe --dtype f16
check llama default --dtype bf16

# the permutation matters: without it the llama.cpp-semantics forward
# must NOT reproduce the HF logits (guards the check itself)
"$BIN" --hf "$tmp/hf/llama" -o "$tmp/np.gguf" || fail "conversion failed"
python3 - "$tmp/np.gguf" "$tmp/hf/llama" "$SRC/scripts/ref" <<'PY' || fail "unpermuted weights passed the forward check"
import sys, numpy as np, gguf
sys.path.insert(0, sys.argv[3])
import check_hf_gguf as c
r = gguf.GGUFReader(sys.argv[1])
tokens = [int(t) for t in open(sys.argv[2] + "/ref/tokens.txt")]
ref = np.fromfile(sys.argv[2] + "/ref/logits.f32", "<f4").reshape(len(tokens), -1)
good = c.gguf_forward(r, tokens)
# undo the permutation of attn_q/attn_k and run again
H = c.field(r, "llama.attention.head_count")
def unpermute(G):
    for k, a in G.items():
        if k.endswith(("attn_q.weight", "attn_k.weight")):
            hd = a.shape[0] // H
            G[k] = a.reshape(H, hd // 2, 2, -1).swapaxes(1, 2).reshape(a.shape)
    return G
bad = c.gguf_forward(r, tokens, unpermute)
ok = np.abs(good - ref).max() < 1e-3 * np.abs(ref).max()
sensitive = np.abs(bad - ref).max() > 1e-2 * np.abs(ref).max()
sys.exit(0 if ok and sensitive else 1)
PY
# pre-tokenizer names of two more byte-level families, via --dummy
# --tokenizer-json: SmolLM (digits split, then GPT-2's regex), GPT-2
python3 - "$tmp" <<'PY' || fail "tokenizer.json generation failed"
import os, sys
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
text = ["Once upon a time 123 cats sat.", "It's 4:56 and we're late!"] * 20
for name, pt in [("smollm", pre_tokenizers.Sequence([
                     pre_tokenizers.Digits(individual_digits=True),
                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])),
                 ("gpt-2", pre_tokenizers.ByteLevel(add_prefix_space=False))]:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pt
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(text, trainers.BpeTrainer(
        vocab_size=300, show_progress=False, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    os.makedirs(f"{sys.argv[1]}/tj-{name}")
    tok.save(f"{sys.argv[1]}/tj-{name}/tokenizer.json")
PY
for pre in smollm gpt-2; do
	"$BIN" --dummy custom:vocab=512 --tokenizer-json "$tmp/tj-$pre/tokenizer.json" \
		-o "$tmp/tj.gguf" || fail "$pre: conversion failed"
	got=$(python3 -c "import gguf,sys; f=gguf.GGUFReader(sys.argv[1]).fields['tokenizer.ggml.pre']; print(bytes(f.parts[-1]).decode())" "$tmp/tj.gguf")
	[ "$got" = "$pre" ] || fail "tokenizer.ggml.pre: $got, want $pre"
done
echo "PASS: convert-hf"
