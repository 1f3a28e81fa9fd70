#!/usr/bin/env python3
"""Cross-check llmkit's block quantization against independent references.

  quant-pycheck.py QUANT_DUMP [LIBGGML_BASE]

1. The `gguf` Python package (gguf.quants): for every type it quantizes,
   our bytes must be identical; for every type it dequantizes, our floats
   must be identical (bit for bit: both compute d * q in float32).
2. Where a ggml shared library is given (LIBGGML_BASE, or the environment
   variable of that name), ggml's own ggml_quantize_chunk, with and without
   an importance matrix, for all types, k-quants included.

Exit 0 when everything compared equal, 1 on a mismatch, 77 (skip) when
the gguf package or numpy is missing.
"""
import ctypes
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    from gguf import GGMLQuantizationType as QT
    from gguf import quants
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

TYPES = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]
# ggml's type ids are GGUF's
TYPE_ID = {t: getattr(QT, t.upper()) for t in TYPES}


def test_data(rng, rows, n):
    """Rows that exercise the corners: gaussian, heavy tails, a zero row,
    constant rows, tiny values, one huge outlier, exact ties."""
    x = rng.standard_normal((rows, n)).astype(np.float32)
    x[1] = rng.standard_t(2, n).astype(np.float32)
    x[2] = 0
    x[3] = 0.5
    x[4] *= 1e-7
    x[5, 7] = 300.0
    x[6] = np.round(x[6] * 4) / 4          # many ties
    x[7, :] = -x[7, :] ** 2
    return x


def ours(dump, mode, t, npr, data, imatrix=None):
    with tempfile.TemporaryDirectory() as d:
        inp, out = os.path.join(d, "in"), os.path.join(d, "out")
        data.tofile(inp)
        cmd = [dump, mode, t, str(npr), inp, out]
        if imatrix is not None:
            im = os.path.join(d, "im")
            imatrix.astype(np.float32).tofile(im)
            cmd.append(im)
        subprocess.run(cmd, check=True)
        return np.fromfile(out, dtype=np.uint8 if mode == "q" else np.float32)


def ggml_quantize(lib, t, x, imatrix):
    rows, npr = x.shape
    out = np.zeros(rows * quants.quant_shape_to_byte_shape((npr,), TYPE_ID[t])[0],
                   dtype=np.uint8)
    xs = np.ascontiguousarray(x, dtype=np.float32)
    im = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
    lib.ggml_quantize_chunk(int(TYPE_ID[t]), xs.ctypes.data_as(ctypes.c_void_p),
                            out.ctypes.data_as(ctypes.c_void_p), 0, rows, npr,
                            None if im is None else im.ctypes.data_as(ctypes.c_void_p))
    return out


def main():
    dump = sys.argv[1]
    libpath = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("LIBGGML_BASE", "")
    lib = None
    if libpath and os.path.exists(libpath):
        lib = ctypes.CDLL(libpath)
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                            ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                            ctypes.c_void_p]
    rng = np.random.default_rng(20240611)
    npr = 512
    x = test_data(rng, 12, npr)
    imatrix = (rng.random(npr) ** 3 * 10).astype(np.float32)
    fails = checks = 0

    def check(ok, what):
        nonlocal fails, checks
        checks += 1
        if not ok:
            fails += 1
            print(f"FAIL: {what}")

    for t in TYPES:
        q = ours(dump, "q", t, npr, x)
        qi = ours(dump, "q", t, npr, x, imatrix)
        try:
            ref = quants.quantize(x, TYPE_ID[t]).reshape(-1)
            check(np.array_equal(q, ref), f"{t}: quantize differs from gguf.quants "
                  f"({np.count_nonzero(q != ref)} bytes)")
        except NotImplementedError:
            pass
        if lib is not None:
            g = ggml_quantize(lib, t, x, None)
            check(np.array_equal(q, g), f"{t}: quantize differs from ggml "
                  f"({np.count_nonzero(q != g)} of {q.size} bytes)")
            gi = ggml_quantize(lib, t, x, imatrix)
            check(np.array_equal(qi, gi), f"{t}: imatrix quantize differs from ggml "
                  f"({np.count_nonzero(qi != gi)} of {qi.size} bytes)")
        # dequantize: ours of our bytes against gguf's of the same bytes
        dq = ours(dump, "d", t, npr, q)
        ref = quants.dequantize(q.reshape(x.shape[0], -1), TYPE_ID[t]).reshape(-1)
        check(np.array_equal(dq.view(np.uint32), ref.astype(np.float32).view(np.uint32)),
              f"{t}: dequantize differs from gguf.quants "
              f"(max diff {np.max(np.abs(dq - ref))})")
        # and quantization is sane: error well below the signal
        err = np.sqrt(np.mean((dq.reshape(x.shape)[0] - x[0]) ** 2))
        check(err < 0.6, f"{t}: rms error {err} too large")
    print(f"quant-pycheck: {checks - fails} passed, {fails} failed"
          f"{'' if lib else ' (ggml library not given: k-quant quantize not compared)'}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
