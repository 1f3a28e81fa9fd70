#!/usr/bin/env python3
"""Make tiny random Hugging Face checkpoints (and reference logits) for
llm-convert's tests.

usage: make_tiny_hf.py OUTDIR [TEXT_FILE]

Creates OUTDIR/<variant>/ for each variant:

  llama      LlamaForCausalLM, MHA, untied, F32, one model.safetensors,
             SentencePiece-style tokenizer.json (BPE with byte_fallback,
             U+2581 spaces, <0xXX> byte tokens), as Llama 2 / TinyLlama.
  llama-gqa  LlamaForCausalLM, GQA (8 heads, 2 KV heads), head_dim 16 (not
             hidden/heads), tied embeddings, BF16, two shards with
             model.safetensors.index.json, Llama 3.1 "llama3" rope scaling,
             a Llama-3-style byte-level tokenizer.json.
  qwen2      Qwen2ForCausalLM, q/k/v biases, tied, F16, Qwen2-style
             byte-level tokenizer with added control tokens, a chat
             template, and a config vocab_size larger than the tokenizer.

Each holds config.json, the safetensors, tokenizer.json,
tokenizer_config.json, and ref/: tokens.txt (one id a line) and logits.f32
(little-endian float32, n_tokens x vocab_size, row-major): the logits of a
pure-numpy forward that follows the HF modeling code (rotate_half RoPE on
the un-permuted weights, repeat_kv GQA, RMSNorm in float32), computed from
the weights exactly as stored (bf16/f16 values widened to float32).

Needs numpy, safetensors and tokenizers; exits 77 when one is missing.
"""
import json
import math
import os
import sys

try:
    import numpy as np
    from safetensors.numpy import save_file
    from tokenizers import (Tokenizer, Regex, decoders, models, normalizers,
                            pre_tokenizers, processors, trainers)
except ImportError as e:
    print(f"SKIP: {e}", file=sys.stderr)
    sys.exit(77)

LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
             r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
            r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

FALLBACK_TEXT = """Once upon a time, there was a little girl named Lily. She
loved to play outside in the park. One day, she saw a big, red ball. She
wanted to play with it, but it was too high. Her mom said, "Let's ask the
tall man for help." The man smiled and gave the ball to Lily. 12 apples and
345 pears were sold on 2024-05-06! Café, naïve, 東京, emojis 🙂 too.
"""

QWEN_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def corpus(path):
    text = FALLBACK_TEXT
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read(200_000) + "\n" + FALLBACK_TEXT
    return [line for line in text.splitlines() if line.strip()]


def spm_tokenizer(lines, vocab_size):
    """Llama-2-style: BPE with byte fallback over U+2581-joined text."""
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    # train per word (so merges never span a word start), then tokenize the
    # whole normalized text as Llama 2's tokenizer.json does
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581",
                                                 prepend_scheme="never")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  show_progress=False)
    tok.train_from_iterator(lines, trainer)
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([
        decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    cfg = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
           "add_bos_token": True, "add_eos_token": False,
           "tokenizer_class": "LlamaTokenizer"}
    return tok, cfg


def bytelevel_tokenizer(lines, vocab_size, regex, added, cfg):
    tok = Tokenizer(models.BPE(byte_fallback=False, ignore_merges=regex == LLAMA3_RE))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False,
                                 use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    tok.add_special_tokens(added)
    return tok, cfg


def rms_norm(x, w, eps):
    x = x.astype(np.float32)
    var = np.mean(x * x, axis=-1, keepdims=True)
    return (x / np.sqrt(var + np.float32(eps))).astype(np.float32) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def inv_freqs(cfg, head_dim):
    base = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    rs = cfg.get("rope_scaling") or {}
    if rs.get("rope_type") == "llama3":
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        wl = 2 * math.pi / inv
        out = np.where(wl > old / lo, inv / factor, inv)
        smooth = (old / wl - lo) / (hi - lo)
        smoothed = (1 - smooth) * out / factor + smooth * out
        medium = ~(wl < old / hi) & ~(wl > old / lo)
        inv = np.where(medium, smoothed, out)
    return inv


def hf_forward(cfg, W, tokens):
    """Logits of a Llama / Qwen2 decoder, as transformers computes them."""
    D = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads", H)
    hd = cfg.get("head_dim") or D // H
    eps = cfg["rms_norm_eps"]
    T = len(tokens)
    f = {k: v.astype(np.float32) for k, v in W.items()}
    x = f["model.embed_tokens.weight"][tokens]
    inv = inv_freqs(cfg, hd)
    ang = np.outer(np.arange(T), inv)
    emb = np.concatenate([ang, ang], axis=-1)
    cos, sin = np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)
    mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms_norm(x, f[p + "input_layernorm.weight"], eps)
        q = h @ f[p + "self_attn.q_proj.weight"].T
        k = h @ f[p + "self_attn.k_proj.weight"].T
        v = h @ f[p + "self_attn.v_proj.weight"].T
        if p + "self_attn.q_proj.bias" in f:
            q = q + f[p + "self_attn.q_proj.bias"]
            k = k + f[p + "self_attn.k_proj.bias"]
            v = v + f[p + "self_attn.v_proj.bias"]
        q = q.reshape(T, H, hd).transpose(1, 0, 2)
        k = k.reshape(T, KV, hd).transpose(1, 0, 2)
        v = v.reshape(T, KV, hd).transpose(1, 0, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = np.repeat(k, H // KV, axis=0)
        v = np.repeat(v, H // KV, axis=0)
        s = q @ k.transpose(0, 2, 1) / np.float32(math.sqrt(hd)) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        o = (s @ v).transpose(1, 0, 2).reshape(T, H * hd)
        x = x + o @ f[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, f[p + "post_attention_layernorm.weight"], eps)
        g = h @ f[p + "mlp.gate_proj.weight"].T
        u = h @ f[p + "mlp.up_proj.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ f[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, f["model.norm.weight"], eps)
    head = f["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") \
        else f["lm_head.weight"]
    return (x @ head.T).astype(np.float32)


def to_dtype(a, dtype):
    if dtype == "bf16":
        u = a.astype(np.float32).view(np.uint32)
        u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
        return u  # stored as bf16 bits
    if dtype == "f16":
        return a.astype(np.float16)
    return a.astype(np.float32)


def widen(a, dtype):
    if dtype == "bf16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def make_weights(cfg, rng):
    D, F = cfg["hidden_size"], cfg["intermediate_size"]
    H = cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads", H)
    hd = cfg.get("head_dim") or D // H
    V = cfg["vocab_size"]
    bias = cfg["architectures"][0] == "Qwen2ForCausalLM"
    W = {"model.embed_tokens.weight": rng.normal(0, 0.3, (V, D)),
         "model.norm.weight": 1 + rng.normal(0, 0.1, D)}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        W[p + "input_layernorm.weight"] = 1 + rng.normal(0, 0.1, D)
        W[p + "post_attention_layernorm.weight"] = 1 + rng.normal(0, 0.1, D)
        W[p + "self_attn.q_proj.weight"] = rng.normal(0, 0.15, (H * hd, D))
        W[p + "self_attn.k_proj.weight"] = rng.normal(0, 0.15, (KV * hd, D))
        W[p + "self_attn.v_proj.weight"] = rng.normal(0, 0.15, (KV * hd, D))
        W[p + "self_attn.o_proj.weight"] = rng.normal(0, 0.15, (D, H * hd))
        W[p + "mlp.gate_proj.weight"] = rng.normal(0, 0.15, (F, D))
        W[p + "mlp.up_proj.weight"] = rng.normal(0, 0.15, (F, D))
        W[p + "mlp.down_proj.weight"] = rng.normal(0, 0.15, (D, F))
        if bias:
            W[p + "self_attn.q_proj.bias"] = rng.normal(0, 0.1, H * hd)
            W[p + "self_attn.k_proj.bias"] = rng.normal(0, 0.1, KV * hd)
            W[p + "self_attn.v_proj.bias"] = rng.normal(0, 0.1, KV * hd)
    if not cfg.get("tie_word_embeddings"):
        W["lm_head.weight"] = rng.normal(0, 0.3, (V, D))
    # the HF reference always carries rotary inv_freq buffers in some
    # checkpoints; the converter must skip them
    W["model.layers.0.self_attn.rotary_emb.inv_freq"] = inv_freqs(cfg, hd)
    return W


def write_variant(root, name, cfg, tok, tok_cfg, dtype, shards, rng):
    d = os.path.join(root, name)
    os.makedirs(os.path.join(d, "ref"), exist_ok=True)
    W = make_weights(cfg, rng)
    stored = {k: np.ascontiguousarray(to_dtype(v, dtype if v.ndim > 1 or
                                               not k.endswith("inv_freq") else "f32"))
              for k, v in W.items()}
    # safetensors.numpy cannot write bf16 from uint16: write raw ourselves
    names = sorted(stored)
    parts = [names] if shards == 1 else [names[: len(names) // 2],
                                         names[len(names) // 2:]]
    weight_map = {}
    for i, part in enumerate(parts):
        fname = "model.safetensors" if shards == 1 else \
            f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(os.path.join(d, fname), {k: stored[k] for k in part},
                          dtype, {"format": "pt"})
        for k in part:
            weight_map[k] = fname
    if shards > 1:
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(tok_cfg, f, indent=2)
    # reference logits from the stored values
    Wf = {k: widen(v, dtype if v.dtype == np.uint16 else "f32")
          for k, v in stored.items()}
    text = "Once upon a time, Lily saw 12 red balls."
    tokens = tok.encode(text).ids[:16]
    logits = hf_forward(cfg, Wf, tokens)
    assert np.all(np.isfinite(logits))
    with open(os.path.join(d, "ref", "tokens.txt"), "w") as f:
        f.write("".join(f"{t}\n" for t in tokens))
    logits.astype("<f4").tofile(os.path.join(d, "ref", "logits.f32"))
    with open(os.path.join(d, "ref", "text.txt"), "w") as f:
        f.write(text)


def write_safetensors(path, tensors, dtype, metadata):
    code = {"bf16": "BF16", "f16": "F16", "f32": "F32"}
    header, off, blobs = {"__metadata__": metadata}, 0, []
    for k, a in tensors.items():
        st = "F32" if a.dtype == np.float32 else code[dtype]
        b = a.tobytes()
        header[k] = {"dtype": st, "shape": list(a.shape),
                     "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = argv[1]
    lines = corpus(argv[2] if len(argv) > 2 else None)
    rng = np.random.default_rng(1234)

    tok, tcfg = spm_tokenizer(lines, 600)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
           "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 4,
           "max_position_embeddings": 512, "rms_norm_eps": 1e-5,
           "rope_theta": 10000.0, "rope_scaling": None,
           "tie_word_embeddings": False, "vocab_size": tok.get_vocab_size(),
           "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}
    write_variant(root, "llama", cfg, tok, tcfg, "f32", 1, rng)

    tok, tcfg = bytelevel_tokenizer(
        lines, 700, LLAMA3_RE, ["<|begin_of_text|>", "<|end_of_text|>",
                                "<|eot_id|>"],
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
         "chat_template": "{{ bos_token }}{% for m in messages %}{{ m['content'] }}"
                          "<|eot_id|>{% endfor %}"})
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[
            ("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
           "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
           "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 16,
           "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
           "rope_theta": 500000.0,
           "rope_scaling": {"rope_type": "llama3", "factor": 32.0,
                            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                            "original_max_position_embeddings": 64},
           "tie_word_embeddings": True, "vocab_size": tok.get_vocab_size(),
           "torch_dtype": "bfloat16"}
    write_variant(root, "llama-gqa", cfg, tok, tcfg, "bf16", 2, rng)

    tok, tcfg = bytelevel_tokenizer(
        lines, 650, QWEN2_RE, [], {
            "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
            "add_prefix_space": False, "chat_template": QWEN_TEMPLATE})
    from tokenizers import AddedToken
    tok.add_special_tokens([AddedToken(t, special=True) for t in
                            ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]])
    tok.add_tokens([AddedToken("<tool_call>", special=False)])
    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
           "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2,
           "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
           "rope_theta": 1000000.0, "tie_word_embeddings": True,
           "vocab_size": tok.get_vocab_size() + 13, "use_sliding_window": False,
           "bos_token_id": None, "eos_token_id": tok.token_to_id("<|im_end|>"),
           "torch_dtype": "float16"}
    write_variant(root, "qwen2", cfg, tok, tcfg, "f16", 1, rng)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
