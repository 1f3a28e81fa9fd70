#!/usr/bin/env python3
"""Check a GGUF that llm-convert made from a Hugging Face directory.

usage: check_hf_gguf.py HF_DIR OUT.gguf [--pre NAME] [--tol X]

Independent of llm-convert's C code, this checks:

  tensors     every HF weight is in the GGUF under llama.cpp's name, with
              the GGUF shape (reversed), and equal values: for "llama", the
              Q/K rows permuted from rotate-half to adjacent pairs exactly
              as llama.cpp's converter does (reshape(n_head, 2, hd/2, in)
              .swapaxes(1, 2)); exact when the dtype is kept or widened,
              within --tol (relative) when narrowed; 1-D tensors are F32.
  rope_freqs  for "llama3" rope scaling, the n_rot/2 factors as llama.cpp
              computes them (float32).
  metadata    the {arch}.* hyper-parameters against config.json.
  tokenizer   tokens, token types, merges, special ids and add_bos against
              the tokenizers package's view of tokenizer.json; padding ids
              are [PADn] of type 5; for SentencePiece-style vocabularies,
              tokenizing sample text the way llama.cpp does (highest-score
              merge first, byte fallback) with the GGUF's tokens and scores
              gives the same ids as the HF tokenizer.
  forward     a numpy forward pass with llama.cpp's semantics on the GGUF
              (adjacent-pair RoPE for llama, NEOX for qwen2, rope_freqs,
              tied output) reproduces HF_DIR/ref/logits.f32, the logits of
              make_tiny_hf.py's HF-semantics forward on the original
              weights.

Exit 0 when everything matches, 1 listing the differences, 77 when numpy,
gguf or tokenizers is missing.
"""
import json
import math
import os
import sys

try:
    import numpy as np
    import gguf
    from tokenizers import Tokenizer
except ImportError as e:
    print(f"SKIP: {e}", file=sys.stderr)
    sys.exit(77)

errors = []


def err(msg):
    errors.append(msg)


def field(r, key, default=None):
    f = r.fields.get(key)
    if f is None:
        return default
    t = f.types
    if t[0] == gguf.GGUFValueType.ARRAY:
        if t[-1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i][0].item() for i in f.data]
    if t[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]][0].item()


def load_st(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        hdr = json.loads(f.read(n))
        base = 8 + n
        buf = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for k, d in hdr.items():
        if k == "__metadata__":
            continue
        a, b = d["data_offsets"]
        raw = np.asarray(buf[base + a: base + b])
        if d["dtype"] == "F32":
            v = raw.view(np.float32)
        elif d["dtype"] == "F16":
            v = raw.view(np.float16).astype(np.float32)
        elif d["dtype"] == "BF16":
            v = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(d["dtype"])
        out[k] = (v.reshape(d["shape"]), d["dtype"])
    return out


def hf_tensors(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) \
        if os.path.exists(idx) else ["model.safetensors"]
    out = {}
    for f in files:
        out.update(load_st(os.path.join(d, f)))
    return out


def gguf_f32(t):
    a = np.asarray(t.data)
    if t.tensor_type == gguf.GGMLQuantizationType.BF16:
        a = (a.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def permute(w, n_head):
    """llama.cpp's LlamaModel.permute (HF rotate-half -> adjacent pairs)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama3_factors(cfg, n_rot):
    rs = cfg["rope_scaling"]
    base = cfg.get("rope_theta", 10000.0)
    freqs = 1.0 / (np.float32(base) ** (np.arange(0, n_rot, 2, dtype=np.float32)
                                        / np.float32(n_rot)))
    factor = rs.get("factor", 8.0)
    lo, hi = rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
    old = rs.get("original_max_position_embeddings",
                 cfg.get("original_max_position_embeddings", 8192))
    out = []
    for f in freqs:
        wl = np.float32(2 * math.pi) / f
        if wl < old / hi:
            out.append(1.0)
        elif wl > old / lo:
            out.append(factor)
        else:
            s = (old / wl - lo) / (hi - lo)
            out.append(1 / ((1 - s) / factor + s))
    return np.array(out, dtype=np.float32)


BLK = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
}


def gguf_name(hf):
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    p = hf.split(".")
    if p[0] == "model" and p[1] == "layers":
        rest = ".".join(p[3:])
        if rest in BLK:
            return f"blk.{p[2]}.{BLK[rest]}"
    return None


def check_tensors(cfg, arch, W, r, tol):
    G = {t.name: t for t in r.tensors}
    H = cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads", H)
    used = set()
    for hf, (v, sdt) in sorted(W.items()):
        if hf.endswith("rotary_emb.inv_freq"):
            continue
        if hf == "lm_head.weight" and cfg.get("tie_word_embeddings"):
            continue
        name = gguf_name(hf)
        if name is None or name not in G:
            err(f"tensor {hf}: no GGUF tensor {name}")
            continue
        used.add(name)
        t = G[name]
        want = v
        if arch == "llama" and (".q_proj." in hf or ".k_proj." in hf):
            want = permute(v, H if ".q_proj." in hf else KV)
        got = gguf_f32(t)
        if list(got.shape) != list(want.shape) or \
                [int(x) for x in t.shape] != list(reversed(want.shape)):
            err(f"tensor {name}: shape {list(t.shape)} vs HF {list(v.shape)}")
            continue
        if v.ndim == 1 and t.tensor_type != gguf.GGMLQuantizationType.F32:
            err(f"tensor {name}: 1-D tensor stored as {t.tensor_type.name}, not F32")
        kept = {("F32", "F32"), ("F16", "F16"), ("BF16", "BF16"), ("F16", "F32"),
                ("BF16", "F32")}
        if (sdt, t.tensor_type.name) in kept:
            if not np.array_equal(got, want):
                err(f"tensor {name}: values differ (max |diff| "
                    f"{np.abs(got - want).max()})")
        elif not np.allclose(got, want, rtol=tol, atol=tol * np.abs(want).max()):
            err(f"tensor {name}: max |diff| {np.abs(got - want).max()}")
    rs = cfg.get("rope_scaling") or {}
    if rs.get("rope_type") == "llama3":
        hd = cfg.get("head_dim") or cfg["hidden_size"] // H
        if "rope_freqs.weight" not in G:
            err("tensor rope_freqs.weight: missing")
        else:
            got = gguf_f32(G["rope_freqs.weight"])
            want = llama3_factors(cfg, hd)
            if got.shape != want.shape or not np.allclose(got, want, rtol=1e-6):
                err(f"rope_freqs: {got} != {want}")
            used.add("rope_freqs.weight")
    extra = set(G) - used
    if extra:
        err(f"unexpected GGUF tensors: {sorted(extra)}")


def check_metadata(cfg, arch, r):
    H = cfg["num_attention_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // H
    want = {
        "general.architecture": arch,
        f"{arch}.context_length": cfg["max_position_embeddings"],
        f"{arch}.embedding_length": cfg["hidden_size"],
        f"{arch}.feed_forward_length": cfg["intermediate_size"],
        f"{arch}.block_count": cfg["num_hidden_layers"],
        f"{arch}.attention.head_count": H,
        f"{arch}.attention.head_count_kv": cfg.get("num_key_value_heads", H),
        f"{arch}.vocab_size": cfg["vocab_size"],
        f"{arch}.rope.dimension_count": hd,
    }
    if hd * H != cfg["hidden_size"]:
        want[f"{arch}.attention.key_length"] = hd
        want[f"{arch}.attention.value_length"] = hd
    for k, v in want.items():
        if field(r, k) != v:
            err(f"key {k}: {field(r, k)} != {v}")
    for k, v in [(f"{arch}.attention.layer_norm_rms_epsilon", cfg["rms_norm_eps"]),
                 (f"{arch}.rope.freq_base", cfg.get("rope_theta", 10000.0))]:
        g = field(r, k)
        if g is None or abs(g - v) > 1e-6 * abs(v):
            err(f"key {k}: {g} != {v}")


def spm_encode(text, tokens, scores, add_space_prefix):
    """llama.cpp's SentencePiece-BPE: merge the best-scoring adjacent pair
    (leftmost on ties) while any concatenation is a token; bytes of
    leftover symbols fall back to <0xXX>."""
    ids = {t: i for i, t in enumerate(tokens)}
    s = text.replace(" ", "\u2581")
    if add_space_prefix:
        s = "\u2581" + s
    syms = list(s)
    while True:
        best = None
        for i in range(len(syms) - 1):
            c = syms[i] + syms[i + 1]
            if c in ids and (best is None or scores[ids[c]] > best[0]):
                best = (scores[ids[c]], i)
        if best is None:
            break
        i = best[1]
        syms[i:i + 2] = [syms[i] + syms[i + 1]]
    out = []
    for sym in syms:
        if sym in ids:
            out.append(ids[sym])
        else:
            out.extend(ids[f"<0x{b:02X}>"] for b in sym.encode("utf-8"))
    return out


def check_tokenizer(d, r, pre_expect):
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    tj = json.load(open(os.path.join(d, "tokenizer.json")))
    tc = json.load(open(os.path.join(d, "tokenizer_config.json")))
    cfg = json.load(open(os.path.join(d, "config.json")))
    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    model = field(r, "tokenizer.ggml.model")
    spm = tj["model"].get("byte_fallback", False)
    if model != ("llama" if spm else "gpt2"):
        err(f"tokenizer.ggml.model {model}")
    if pre_expect and field(r, "tokenizer.ggml.pre") != pre_expect:
        err(f"tokenizer.ggml.pre {field(r, 'tokenizer.ggml.pre')} != {pre_expect}")
    n = tok.get_vocab_size(with_added_tokens=True)
    if len(tokens) != cfg["vocab_size"] or len(types) != len(tokens):
        err(f"{len(tokens)} tokens / {len(types)} types, config says {cfg['vocab_size']}")
        return
    added = {a["id"]: a for a in tj.get("added_tokens", [])}
    for i in range(len(tokens)):
        want = tok.id_to_token(i)
        if i >= n or want is None:
            if tokens[i] != f"[PAD{i}]" or types[i] != 5:
                err(f"token {i}: {tokens[i]!r} type {types[i]}, want [PAD{i}] type 5")
            continue
        if tokens[i] != want:
            err(f"token {i}: {tokens[i]!r} != {want!r}")
        if want == tj["model"].get("unk_token"):
            wt = 2
        elif spm and want.startswith("<0x") and len(want) == 6:
            wt = 6
        elif i in added:
            wt = 3 if added[i]["special"] or (want.startswith("<|") and
                                              want.endswith("|>")) else 4
        else:
            wt = 1
        if types[i] != wt:
            err(f"token {i} {want!r}: type {types[i]} != {wt}")
    if not spm:
        merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
        if field(r, "tokenizer.ggml.merges") != merges:
            err("merges differ")
    for typ in ("bos", "eos", "pad"):
        c = tc.get(f"{typ}_token")
        if isinstance(c, dict):
            c = c.get("content")
        want = tok.token_to_id(c) if c else None
        got = field(r, f"tokenizer.ggml.{typ if typ != 'pad' else 'padding'}_token_id"
                    if typ == "pad" else f"tokenizer.ggml.{typ}_token_id")
        if want != got:
            err(f"{typ} id {got} != {want}")
    tmpl = tc.get("chat_template")
    if tmpl != field(r, "tokenizer.chat_template"):
        err("chat_template differs")
    if spm:
        scores = field(r, "tokenizer.ggml.scores")
        asp = field(r, "tokenizer.ggml.add_space_prefix", True)
        texts = ["Once upon a time, there was a little girl named Lily.",
                 "She said: \"Let's play!\" and ran 123 steps.",
                 "naïve café 東京 🙂", "hello  world"]
        for text in texts:
            want = tok.encode(text, add_special_tokens=False).ids
            got = spm_encode(text, tokens, scores, asp)
            if got != want:
                err(f"SPM tokenization of {text!r}: {got} != HF {want}")
        if field(r, "tokenizer.ggml.add_bos_token") is not True:
            err("add_bos_token is not true")


def rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + np.float32(eps)) * w


def gguf_forward(r, tokens, edit=None):
    """llama.cpp semantics on the GGUF alone (edit: a function that may
    change the dict of float32 tensors first)."""
    arch = field(r, "general.architecture")
    G = {t.name: gguf_f32(t) for t in r.tensors}
    if edit:
        G = edit(G)
    D = field(r, f"{arch}.embedding_length")
    H = field(r, f"{arch}.attention.head_count")
    KV = field(r, f"{arch}.attention.head_count_kv")
    L = field(r, f"{arch}.block_count")
    hd = field(r, f"{arch}.attention.key_length", D // H)
    n_rot = field(r, f"{arch}.rope.dimension_count")
    eps = field(r, f"{arch}.attention.layer_norm_rms_epsilon")
    base = field(r, f"{arch}.rope.freq_base", 10000.0)
    T = len(tokens)
    ff = G.get("rope_freqs.weight", np.ones(n_rot // 2, np.float32))
    theta = np.outer(np.arange(T), base ** (-np.arange(0, n_rot, 2) / n_rot) / ff)
    cos, sin = np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)

    def rope(x):  # x: (heads, T, hd)
        y = x.copy()
        if arch == "qwen2":      # NEOX: pairs (i, i + n_rot/2)
            a, b = x[..., :n_rot // 2], x[..., n_rot // 2:n_rot]
            y[..., :n_rot // 2] = a * cos - b * sin
            y[..., n_rot // 2:n_rot] = a * sin + b * cos
        else:                    # NORM: adjacent pairs (2i, 2i+1)
            a, b = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
            y[..., 0:n_rot:2] = a * cos - b * sin
            y[..., 1:n_rot:2] = a * sin + b * cos
        return y

    x = G["token_embd.weight"][tokens]
    mask = np.triu(np.full((T, T), -np.inf, np.float32), 1)
    for l in range(L):
        p = f"blk.{l}."
        h = rms(x, G[p + "attn_norm.weight"], eps)
        q, k, v = (h @ G[p + n + ".weight"].T for n in ("attn_q", "attn_k", "attn_v"))
        if p + "attn_q.bias" in G:
            q, k, v = q + G[p + "attn_q.bias"], k + G[p + "attn_k.bias"], \
                v + G[p + "attn_v.bias"]
        q = rope(q.reshape(T, H, hd).transpose(1, 0, 2))
        k = rope(k.reshape(T, KV, hd).transpose(1, 0, 2))
        v = v.reshape(T, KV, hd).transpose(1, 0, 2)
        k, v = np.repeat(k, H // KV, 0), np.repeat(v, H // KV, 0)
        s = q @ k.transpose(0, 2, 1) / np.float32(math.sqrt(hd)) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        x = x + (s @ v).transpose(1, 0, 2).reshape(T, H * hd) @ G[p + "attn_output.weight"].T
        h = rms(x, G[p + "ffn_norm.weight"], eps)
        g, u = h @ G[p + "ffn_gate.weight"].T, h @ G[p + "ffn_up.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ G[p + "ffn_down.weight"].T
    x = rms(x, G["output_norm.weight"], eps)
    return x @ G.get("output.weight", G["token_embd.weight"]).T


def main(argv):
    args, pre, tol = [], None, 1e-2
    i = 1
    while i < len(argv):
        if argv[i] == "--pre":
            pre = argv[i + 1]; i += 2
        elif argv[i] == "--tol":
            tol = float(argv[i + 1]); i += 2
        else:
            args.append(argv[i]); i += 1
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    d, path = args
    cfg = json.load(open(os.path.join(d, "config.json")))
    arch = "qwen2" if cfg["architectures"][0] == "Qwen2ForCausalLM" else "llama"
    r = gguf.GGUFReader(path)
    check_tensors(cfg, arch, hf_tensors(d), r, tol)
    check_metadata(cfg, arch, r)
    check_tokenizer(d, r, pre)
    tokens = [int(t) for t in open(os.path.join(d, "ref", "tokens.txt"))]
    ref = np.fromfile(os.path.join(d, "ref", "logits.f32"), "<f4").reshape(len(tokens), -1)
    got = gguf_forward(r, tokens)
    scale = np.abs(ref).max()
    diff = np.abs(got - ref).max()
    lim = 1e-4 if tol < 1e-3 else 5 * tol
    if got.shape != ref.shape or diff > lim * scale:
        err(f"forward: logits differ from the HF reference: max |diff| {diff} "
            f"(scale {scale})")
    for e in errors:
        print(e)
    print(f"{os.path.basename(d.rstrip('/'))}: {len(errors)} problem(s); "
          f"forward max |diff| {diff:.3g} of {scale:.3g}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
