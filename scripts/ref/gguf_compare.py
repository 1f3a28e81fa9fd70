#!/usr/bin/env python3
"""Compare two GGUF files: tensors (bit-exact or within a tolerance) and
metadata.  Used by tests/convert-*.sh.

usage: gguf_compare.py OURS.gguf REF.gguf [--ignore-key K]... [--tol X]
                       [--tied-ok] [--expect-key K=V]...

Every tensor of REF must be in OURS with the same shape and values (exactly
unless --tol).  With --tied-ok, a REF output.weight missing from OURS is
compared against OURS' token_embd.weight (we omit tied output matrices).
Every metadata key of REF must be in OURS with an equal value, except the
--ignore-key ones.  --expect-key K=V checks OURS' value of K.
Exit 0 when equal, 1 with one line per difference, 77 when the gguf or
numpy package is missing.
"""
import sys

try:
    import numpy as np
    import gguf
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}", file=sys.stderr)
    sys.exit(77)


def field_value(f):
    t = f.types
    if not t:
        return None
    if t[0] == gguf.GGUFValueType.ARRAY:
        if t[-1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8", "surrogateescape") for i in f.data]
        return np.array([f.parts[i][0] for i in f.data])
    if t[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8", "surrogateescape")
    return f.parts[f.data[0]][0]


def tensor_f32(t):
    a = np.asarray(t.data)
    if t.tensor_type == gguf.GGMLQuantizationType.BF16:
        a = (a.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32).reshape(-1)


def main(argv):
    args = argv[1:]
    ignore, expect, tol, tied_ok, pos = set(), {}, None, False, []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--ignore-key":
            ignore.add(args[i + 1]); i += 2
        elif a == "--expect-key":
            k, v = args[i + 1].split("=", 1); expect[k] = v; i += 2
        elif a == "--tol":
            tol = float(args[i + 1]); i += 2
        elif a == "--tied-ok":
            tied_ok = True; i += 1
        else:
            pos.append(a); i += 1
    if len(pos) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    ours, ref = gguf.GGUFReader(pos[0]), gguf.GGUFReader(pos[1])
    errors = []
    ot = {t.name: t for t in ours.tensors}
    n_checked = 0
    for t in ref.tensors:
        name = t.name
        o = ot.get(name)
        if o is None and tied_ok and name == "output.weight":
            o = ot.get("token_embd.weight")
        if o is None:
            errors.append(f"tensor {name}: missing")
            continue
        if list(o.shape) != list(t.shape):
            errors.append(f"tensor {name}: shape {list(o.shape)} != {list(t.shape)}")
            continue
        a, b = tensor_f32(o), tensor_f32(t)
        if tol is None:
            if o.tensor_type != t.tensor_type or not np.array_equal(a, b):
                d = np.abs(a - b).max() if a.shape == b.shape else "?"
                errors.append(f"tensor {name}: data differs (max |diff| {d})")
        elif not np.allclose(a, b, rtol=0, atol=tol):
            errors.append(f"tensor {name}: max |diff| {np.abs(a - b).max()} > {tol}")
        n_checked += 1
    of = ours.fields
    n_keys = 0
    for k, f in ref.fields.items():
        if k.startswith("GGUF.") or k in ignore:
            continue
        if k not in of:
            errors.append(f"key {k}: missing")
            continue
        a, b = field_value(of[k]), field_value(f)
        if isinstance(b, np.ndarray) or isinstance(a, np.ndarray):
            same = np.asarray(a).shape == np.asarray(b).shape and np.array_equal(
                np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
        else:
            same = a == b
        if not same:
            errors.append(f"key {k}: {str(a)[:60]} != {str(b)[:60]}")
        n_keys += 1
    for k, v in expect.items():
        if k not in of:
            errors.append(f"key {k}: missing (expected {v})")
        elif str(field_value(of[k])) != v:
            errors.append(f"key {k}: {field_value(of[k])} != expected {v}")
    for e in errors:
        print(e)
    print(f"compared {n_checked} tensors, {n_keys} keys: "
          f"{len(errors)} difference(s)", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
