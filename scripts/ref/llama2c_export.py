#!/usr/bin/env python3
"""Re-export a legacy (v0) llama2.c checkpoint in the "ak42" version 1
(float32) or version 2 (int8 groups) layout of llama2.c's export.py, with
numpy only, so llm-convert's readers of those headers can be tested against
the v0 file.

usage: llama2c_export.py IN_v0.bin OUT.bin VERSION [GROUP_SIZE]

VERSION 1, 2, or "1dq": a version 1 file holding the float32 values a
version 2 file dequantizes to (q * scale), so that converting the v2 and
the 1dq files must give identical tensors.

v2 quantizes like export.py's quantize_q80: per group of GROUP_SIZE
(default 64, halved until it divides dim) scale = max|w| / 127 and
q = round(w / scale); dequantized weights are q * scale.
"""
import struct
import sys

try:
    import numpy as np
except ImportError as e:
    print(f"SKIP: {e}", file=sys.stderr)
    sys.exit(77)


def read_v0(path):
    raw = open(path, "rb").read()
    dim, hidden, L, H, KV, V, seq = struct.unpack("7i", raw[:28])
    shared = V > 0
    V = abs(V)
    hs = dim // H
    f = np.frombuffer(raw, dtype="<f4", offset=28)
    sizes = [("emb", V * dim), ("rms_att", L * dim), ("wq", L * dim * dim),
             ("wk", L * KV * hs * dim), ("wv", L * KV * hs * dim),
             ("wo", L * dim * dim), ("rms_ffn", L * dim), ("w1", L * hidden * dim),
             ("w2", L * dim * hidden), ("w3", L * hidden * dim), ("rms_final", dim),
             ("freq", seq * hs)]
    if not shared:
        sizes.append(("wcls", V * dim))
    w, off = {}, 0
    for name, n in sizes:
        w[name] = f[off:off + n]
        off += n
    assert off == f.size, "size mismatch"
    return (dim, hidden, L, H, KV, V, seq), shared, w


def quantize(w, group):
    g = w.reshape(-1, group).astype(np.float32)
    scale = (np.abs(g).max(axis=1) / np.float32(127.0)).astype(np.float32)
    safe = np.where(scale == 0, np.float32(1), scale)
    q = np.round(g / safe[:, None]).astype(np.int8)
    return q.reshape(-1), scale


def main(argv):
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    params, shared, w = read_v0(argv[1])
    dq = argv[3] == "1dq"
    version = 1 if dq else int(argv[3])
    group = int(argv[4]) if len(argv) > 4 else 64
    dim = params[0]
    while dim % group:
        group //= 2
    hdr = struct.pack("I", 0x616B3432) + struct.pack("i", version)
    hdr += struct.pack("7i", *params) + struct.pack("B", int(shared))
    if version == 2:
        hdr += struct.pack("i", group)
    hdr += b"\0" * (256 - len(hdr))
    norms = ["rms_att", "rms_ffn", "rms_final"]
    mats = ["emb", "wq", "wk", "wv", "wo", "w1", "w2", "w3"] + \
        ([] if shared else ["wcls"])
    with open(argv[2], "wb") as out:
        out.write(hdr)
        for n in norms:
            out.write(w[n].astype("<f4").tobytes())
        if version == 1:
            for n in mats:
                a = w[n].astype("<f4")
                if dq:
                    q, sc = quantize(a, group)
                    a = (q.reshape(-1, group).astype(np.float32) *
                         sc[:, None]).reshape(-1)
                out.write(a.astype("<f4").tobytes())
        else:
            scales = []
            for n in mats:
                q, s = quantize(w[n], group)
                out.write(q.tobytes())
                scales.append(s)
            for s in scales:
                out.write(s.astype("<f4").tobytes())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
