#!/usr/bin/env python3
"""Plain numpy reference forward pass for a Llama-family GGUF model.

Reads the model with the `gguf` package (independent of llmkit's reader),
runs the textbook computation one position at a time in float64, and
prints the logits of every position.  With --compare FILE it instead reads
logits printed by llmkit's tests/dump-logits and reports the largest
difference, exiting 1 when it exceeds the tolerance.

Usage:
  llama_ref.py MODEL.gguf TOKENS            print reference logits
  llama_ref.py MODEL.gguf TOKENS --compare OUR_LOGITS.txt [--tol 1e-4]
TOKENS: comma-separated ids.
"""
import sys
import argparse

import numpy as np
import gguf


def field(r, key, default=None):
    f = r.fields.get(key)
    if f is None:
        return default
    v = f.parts[f.data[0]]
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(v).decode()
    return v[0]


def tensor(r, name):
    for t in r.tensors:
        if t.name == name:
            a = np.asarray(t.data)
            if t.tensor_type == gguf.GGMLQuantizationType.F16:
                a = a.astype(np.float32)
            elif t.tensor_type == gguf.GGMLQuantizationType.BF16:
                a = (a.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
            # gguf gives shape (ne1, ne0): rows of ne0 inputs
            return a.astype(np.float64).reshape([int(x) for x in reversed(t.shape)])
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("tokens")
    ap.add_argument("--compare")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()

    r = gguf.GGUFReader(a.model)
    arch = field(r, "general.architecture")
    n_embd = int(field(r, f"{arch}.embedding_length"))
    n_layer = int(field(r, f"{arch}.block_count"))
    n_head = int(field(r, f"{arch}.attention.head_count"))
    n_kv = int(field(r, f"{arch}.attention.head_count_kv", n_head))
    eps = float(field(r, f"{arch}.attention.layer_norm_rms_epsilon", 1e-5))
    theta = float(field(r, f"{arch}.rope.freq_base", 10000.0))
    hd = int(field(r, f"{arch}.attention.key_length", n_embd // n_head))
    n_rot = int(field(r, f"{arch}.rope.dimension_count", hd))
    neox = arch == "qwen2"

    emb = tensor(r, "token_embd.weight")
    out_w = tensor(r, "output.weight")
    if out_w is None:
        out_w = emb
    out_norm = tensor(r, "output_norm.weight")
    L = []
    for i in range(n_layer):
        g = lambda n: tensor(r, f"blk.{i}.{n}")
        L.append({k: g(k + ".weight") for k in
                  ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                   "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]})
        for b in ["attn_q", "attn_k", "attn_v"]:
            L[-1][b + ".bias"] = g(b + ".bias")

    inv = theta ** (-np.arange(0, n_rot, 2, dtype=np.float64) / n_rot)

    def rope(x, pos):  # x: (heads, hd)
        x = x.copy()
        ang = pos * inv
        c, s = np.cos(ang), np.sin(ang)
        half = n_rot // 2
        if neox:
            a0, a1 = x[:, :half].copy(), x[:, half:n_rot].copy()
            x[:, :half] = a0 * c - a1 * s
            x[:, half:n_rot] = a0 * s + a1 * c
        else:
            a0, a1 = x[:, 0:n_rot:2].copy(), x[:, 1:n_rot:2].copy()
            x[:, 0:n_rot:2] = a0 * c - a1 * s
            x[:, 1:n_rot:2] = a0 * s + a1 * c
        return x

    def rms(x, w):
        return x / np.sqrt(np.mean(x * x) + eps) * w

    toks = [int(t) for t in a.tokens.split(",")]
    K = [[] for _ in range(n_layer)]
    V = [[] for _ in range(n_layer)]
    logits = []
    group = n_head // n_kv
    for pos, t in enumerate(toks):
        x = emb[t].copy()
        for i, l in enumerate(L):
            xb = rms(x, l["attn_norm"])
            q, k, v = l["attn_q"] @ xb, l["attn_k"] @ xb, l["attn_v"] @ xb
            if l["attn_q.bias"] is not None:
                q, k, v = q + l["attn_q.bias"], k + l["attn_k.bias"], v + l["attn_v.bias"]
            q = rope(q.reshape(n_head, hd), pos)
            k = rope(k.reshape(n_kv, hd), pos)
            K[i].append(k)
            V[i].append(v.reshape(n_kv, hd))
            ks, vs = np.stack(K[i]), np.stack(V[i])  # (pos+1, n_kv, hd)
            o = np.zeros((n_head, hd))
            for h in range(n_head):
                kh = ks[:, h // group, :]
                sc = kh @ q[h] / np.sqrt(hd)
                p = np.exp(sc - sc.max())
                p /= p.sum()
                o[h] = p @ vs[:, h // group, :]
            x = x + l["attn_output"] @ o.reshape(-1)
            xb = rms(x, l["ffn_norm"])
            gt, up = l["ffn_gate"] @ xb, l["ffn_up"] @ xb
            x = x + l["ffn_down"] @ (gt / (1 + np.exp(-gt)) * up)
        logits.append(out_w @ rms(x, out_norm))
    ref = np.stack(logits)

    if not a.compare:
        for row in ref:
            print(" ".join(f"{v:.7g}" for v in row))
        return 0
    ours = np.loadtxt(a.compare, ndmin=2)
    if ours.shape != ref.shape:
        print(f"shape mismatch: ours {ours.shape}, reference {ref.shape}")
        return 1
    err = np.abs(ours - ref).max()
    scale = np.abs(ref).max()
    print(f"max abs diff {err:.3g} (logit scale {scale:.3g}), "
          f"argmax agree {np.mean(ours.argmax(1) == ref.argmax(1)):.3f}")
    return 0 if err <= a.tol * max(1.0, scale) else 1


if __name__ == "__main__":
    sys.exit(main())
