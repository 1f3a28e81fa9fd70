#!/usr/bin/env python3
"""Widen stories260K to 256-wide rows, computing exactly the same function.

  quant-widen.py IN.gguf OUT.gguf

stories260K's rows (dim 64, FFN 172) are too narrow for the k-quants'
256-element super-blocks, so llm-quantize keeps them at 32-block types.
This writes an equivalent model whose every weight row is 256 wide:

  dim 64 -> 256     embeddings, output and norms zero-padded; the norms'
                    weights halved and epsilon quartered, since the RMS over
                    256 dims of which 192 are zero is half the RMS over 64
  heads 8 -> 32     (head size 8 unchanged, KV heads 4 -> 16, groups of 2
                    as before): the extra heads have zero Q, K and V, so
                    their attention output is 0 and their columns of
                    attn_output are zero
  FFN 172 -> 256    zero gate/up rows and down columns: silu(0) * 0 = 0

Real weights, so perplexity means something, in blocks of which a part is
zero padding: it measures the k-quant formats on real values, but a
super-block holds fewer live sub-blocks than in a model built that wide.
"""
import sys

import numpy as np
import gguf

D, H, HKV, FF = 256, 32, 16, 256


def main():
    r = gguf.GGUFReader(sys.argv[1])
    arch = "llama"
    w = gguf.GGUFWriter(sys.argv[2], arch)
    eps = None
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        v = f.contents()
        if k == f"{arch}.embedding_length":
            v = D
        elif k == f"{arch}.feed_forward_length":
            v = FF
        elif k == f"{arch}.attention.head_count":
            v = H
        elif k == f"{arch}.attention.head_count_kv":
            v = HKV
        elif k == f"{arch}.attention.layer_norm_rms_epsilon":
            eps = v
            v = v / 4
        vt = f.types[0]
        sub = f.types[-1] if vt == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(k, v, vt, sub_type=sub)
    assert eps is not None
    d0 = None
    for t in r.tensors:
        a = np.array(t.data, dtype=np.float32)  # (rows, ne0)
        name = t.name
        if d0 is None and name == "token_embd.weight":
            d0 = a.shape[1]
        if name.endswith("_norm.weight"):
            out = np.zeros(D, np.float32)
            out[: a.shape[0]] = a * 0.5
        elif name in ("token_embd.weight", "output.weight"):
            out = np.zeros((a.shape[0], D), np.float32)
            out[:, : a.shape[1]] = a
        elif any(s in name for s in ("attn_q.", "attn_k.", "attn_v.")):
            # rows are head outputs: real heads first, in the same order
            n_out = H * 8 if "attn_q." in name else HKV * 8
            out = np.zeros((n_out, D), np.float32)
            out[: a.shape[0], : a.shape[1]] = a
        elif "attn_output." in name:
            out = np.zeros((D, H * 8), np.float32)
            out[: a.shape[0], : a.shape[1]] = a
        elif "ffn_gate." in name or "ffn_up." in name:
            out = np.zeros((FF, D), np.float32)
            out[: a.shape[0], : a.shape[1]] = a
        elif "ffn_down." in name:
            out = np.zeros((D, FF), np.float32)
            out[: a.shape[0], : a.shape[1]] = a
        else:
            out = a
        w.add_tensor(name, out)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
