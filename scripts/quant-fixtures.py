#!/usr/bin/env python3
"""Write data/fixtures/quant/: reference quantizations for tests/test-quant.

  quant-fixtures.py LIBGGML_BASE [OUTDIR]

input.f32    8 rows x 512 floats (the corner cases of quant-pycheck.py)
imatrix.f32  512 importances
T.bin        ggml_quantize_chunk(T, input, no imatrix), for every type T
T-im.bin     the same with the importance matrix

The bytes come from llama.cpp's own ggml library (LIBGGML_BASE, its
libggml-base.so); where the gguf Python package also quantizes a type the
script checks that both agree before writing.
"""
import ctypes
import os
import sys

import numpy as np
from gguf import quants

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
qp = __import__("quant-pycheck")


def main():
    lib = ctypes.CDLL(sys.argv[1])
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_void_p]
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "data", "fixtures", "quant")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(7)
    x = qp.test_data(rng, 8, 512)
    im = (rng.random(512) ** 3 * 10).astype(np.float32)
    x.tofile(os.path.join(out, "input.f32"))
    im.tofile(os.path.join(out, "imatrix.f32"))
    for t in qp.TYPES:
        g = qp.ggml_quantize(lib, t, x, None)
        try:
            ref = quants.quantize(x, qp.TYPE_ID[t]).reshape(-1)
            assert np.array_equal(ref, g), f"{t}: gguf and ggml disagree"
        except NotImplementedError:
            pass
        g.tofile(os.path.join(out, f"{t}.bin"))
        qp.ggml_quantize(lib, t, x, im).tofile(os.path.join(out, f"{t}-im.bin"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
