#!/usr/bin/env python3
"""gguf-pycheck.py - cross-check llmkit's GGUF reader and writer against the
independent "gguf" Python package (llama.cpp's gguf-py).

    gguf-pycheck.py DUMP WORKDIR [MODEL.gguf]

DUMP is the tests/test-gguf-dump helper (our reader's view as JSON; copies and a
sample file made by our writer).  Checks, each failing loudly:

 1. a file written by gguf.GGUFWriter with every value type (nested arrays,
    string arrays, custom alignment) and several tensor types is read by our
    reader exactly as written, and as gguf.GGUFReader reads it;
 2. our writer's copy of that file is byte-identical to it, and
    gguf.GGUFReader reads the copy the same;
 3. a file made by our writer (every value type) is read by gguf.GGUFReader
    with the values our writer was given, and as our reader reads it;
 4. MODEL (stories260K.gguf), if given: every key and tensor as
    gguf.GGUFReader sees it, and our copy of it byte-identical.

Exit status 0 when all agree, 1 on the first disagreement.
"""
import json
import math
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import gguf
from gguf import GGUFValueType as VT
from gguf import GGMLQuantizationType as QT

TYPE_NAMES = {
    VT.UINT8: "u8", VT.INT8: "i8", VT.UINT16: "u16", VT.INT16: "i16",
    VT.UINT32: "u32", VT.INT32: "i32", VT.FLOAT32: "f32", VT.BOOL: "bool",
    VT.STRING: "string", VT.ARRAY: "array", VT.UINT64: "u64", VT.INT64: "i64",
    VT.FLOAT64: "f64",
}
FLOATS = ("f32", "f64")


class Mismatch(Exception):
    pass


def fail(msg):
    raise Mismatch(msg)


def same_float(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


# ------------------------------------------------------------------ views
# Both readers are brought to one form:
#   {"alignment": int,
#    "kv": [(key bytes, type, elem type or None, n or None, value)],
#    "tensors": [(name, dtype id, ne tuple, offset in data, nbytes, crc32)]}
# where value is an int, a float, a bool, bytes, or a list of them (None for
# the contents of nested arrays, which our reader only counts).

def view_ours(dump, path):
    out = subprocess.run([dump, str(path)], check=True, capture_output=True)
    j = json.loads(out.stdout)

    def conv(t, v):
        if t in FLOATS:
            return float.fromhex(v)
        if t == "string":
            return bytes.fromhex(v)
        return v

    kvs = []
    for kv in j["kv"]:
        key = bytes.fromhex(kv["key"])
        t = kv["type"]
        if t == "array":
            et = kv["elem"]
            vals = None if et == "array" else [conv(et, x) for x in kv["value"]]
            kvs.append((key, t, et, kv["n"], vals))
        else:
            kvs.append((key, t, None, None, conv(t, kv["value"])))
    tensors = [(bytes.fromhex(t["name"]).decode(), t["dtype"], tuple(t["ne"]), t["offset"], t["nbytes"],
                t["crc32"]) for t in j["tensors"]]
    return {"version": j["version"], "alignment": j["alignment"], "kv": kvs,
            "tensors": tensors}


def py_scalar(t, part):
    v = part[0]
    if t in FLOATS:
        return float(v)
    if t == "bool":
        return bool(v)
    return int(v)


def view_py(path):
    r = gguf.GGUFReader(str(path))
    kvs = []
    version = None
    for key, f in r.fields.items():
        if key == "GGUF.version":
            version = int(f.parts[0][0])
        if key.startswith("GGUF."):
            continue
        kb = bytes(f.parts[1])
        t = TYPE_NAMES[f.types[0]]
        if t == "string":
            kvs.append((kb, t, None, None, bytes(f.parts[f.data[0]])))
        elif t == "array":
            # parts: key length, key, type, element type, count, ...
            # (f.types holds no element type for an empty array)
            et = TYPE_NAMES[VT(int(f.parts[3][0]))]
            n = int(f.parts[4][0])
            if et == "array":
                vals = None
            elif et == "string":
                vals = [bytes(f.parts[i]) for i in f.data]
            else:
                vals = [py_scalar(et, f.parts[i]) for i in f.data]
            kvs.append((kb, t, et, n, vals))
        else:
            kvs.append((kb, t, None, None, py_scalar(t, f.parts[f.data[0]])))
    tensors = []
    for t in r.tensors:
        raw = np.ascontiguousarray(t.data).tobytes()
        tensors.append((t.name, int(t.tensor_type), tuple(int(x) for x in t.shape),
                        int(t.data_offset) - int(r.data_offset), int(t.n_bytes),
                        zlib.crc32(raw)))
    return {"version": version, "alignment": int(r.alignment), "kv": kvs,
            "tensors": tensors}


def compare(a, b, what):
    """Two views must agree on every key, value and tensor."""
    if a["version"] != b["version"]:
        fail(f"{what}: version {a['version']} vs {b['version']}")
    if a["alignment"] != b["alignment"]:
        fail(f"{what}: alignment {a['alignment']} vs {b['alignment']}")
    if len(a["kv"]) != len(b["kv"]):
        fail(f"{what}: {len(a['kv'])} keys vs {len(b['kv'])}")
    for x, y in zip(a["kv"], b["kv"]):
        key = x[0].decode(errors="replace")
        if x[:4] != y[:4]:
            fail(f"{what}: key {key}: {x[:4]} vs {y[:4]}")
        vx, vy = x[4], y[4]
        if isinstance(vx, list) and isinstance(vy, list):
            if len(vx) != len(vy) or not all(
                    same_float(p, q) if isinstance(p, float) else p == q
                    for p, q in zip(vx, vy)):
                fail(f"{what}: key {key}: array values differ")
        elif isinstance(vx, float) and isinstance(vy, float):
            if not same_float(vx, vy):
                fail(f"{what}: key {key}: {vx!r} vs {vy!r}")
        elif vx != vy:
            fail(f"{what}: key {key}: {vx!r} vs {vy!r}")
    if len(a["tensors"]) != len(b["tensors"]):
        fail(f"{what}: {len(a['tensors'])} tensors vs {len(b['tensors'])}")
    for x, y in zip(a["tensors"], b["tensors"]):
        if x != y:
            fail(f"{what}: tensor {x[0]}: {x} vs {y}")
    return len(a["kv"]), len(a["tensors"])


def ours_f64_scalars_as_f32(view):
    """Our dump reads scalar f64 through llm_gguf_get_f32 (the API has no
    f64 getter): round the Python side the same way."""
    kv = []
    for k in view["kv"]:
        if k[1] == "f64":
            k = k[:4] + (float(np.float32(k[4])),)
        kv.append(k)
    return dict(view, kv=kv)


# ------------------------------------------------------------------ files

def write_py_file(path):
    """Every value type, nested arrays, alignment 64, several dtypes."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_custom_alignment(64)
    w.add_name("python \u00e9crit")
    w.add_uint8("s.u8", 250)
    w.add_int8("s.i8", -100)
    w.add_uint16("s.u16", 65000)
    w.add_int16("s.i16", -32000)
    w.add_uint32("s.u32", 4000000000)
    w.add_int32("s.i32", -2000000000)
    w.add_float32("s.f32", 0.1)
    w.add_uint64("s.u64", 2**63 - 1)
    w.add_int64("s.i64", -(2**62))
    w.add_float64("s.f64", 0.5)
    w.add_bool("s.true", True)
    w.add_bool("s.false", False)
    # (add_string drops empty strings: an empty one comes from our writer)
    for t, vals in [(VT.UINT8, [0, 255]), (VT.INT8, [-1, 1]),
                    (VT.UINT16, [7, 65535]), (VT.INT16, [-7, 300]),
                    (VT.UINT32, [1, 2**32 - 1]), (VT.INT32, [-5, 5, 2**31 - 1]),
                    (VT.FLOAT32, [0.25, -1e30, 3.0]), (VT.BOOL, [True, False, True]),
                    (VT.UINT64, [2**40, 3]), (VT.INT64, [-(2**40), 9]),
                    (VT.FLOAT64, [1e300, -0.1])]:
        w.add_key_value(f"a.{TYPE_NAMES[t]}", vals, VT.ARRAY, sub_type=t)
    w.add_array("a.str", ["<unk>", "", "\u2581hello", "x" * 300])
    w.add_array("a.nested", [[1, 2], [3]])
    w.add_array("a.nested_str", [["a", "b"], ["c"]])
    rng = np.random.default_rng(1)
    w.add_tensor("t.f32", rng.standard_normal((3, 5)).astype(np.float32))
    w.add_tensor("t.f16", rng.standard_normal((7,)).astype(np.float16))
    w.add_tensor("t.i8", np.arange(-4, 4, dtype=np.int8).reshape(2, 2, 2))
    w.add_tensor("t.i32", np.arange(6, dtype=np.int32).reshape(1, 2, 3))
    w.add_tensor("t.f64", np.linspace(0, 1, 5))
    bf = rng.standard_normal((2, 8)).astype(np.float32)
    w.add_tensor("t.bf16", (bf.view(np.uint32) >> 16).astype(np.uint16),
                 raw_dtype=QT.BF16)
    q = gguf.quants.quantize(rng.standard_normal((2, 64)).astype(np.float32),
                             QT.Q8_0)
    w.add_tensor("t.q8_0", q, raw_dtype=QT.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # what was written, in the common form (values as Python stores them)
    return {
        b"s.u8": 250, b"s.i8": -100, b"s.u16": 65000, b"s.i16": -32000,
        b"s.u32": 4000000000, b"s.i32": -2000000000,
        b"s.f32": float(np.float32(0.1)), b"s.u64": 2**63 - 1,
        b"s.i64": -(2**62), b"s.f64": 0.5, b"s.true": True, b"s.false": False,
        b"general.alignment": 64,
        b"general.name": "python \u00e9crit".encode(),
        b"a.i32": [-5, 5, 2**31 - 1], b"a.bool": [True, False, True],
        b"a.f64": [1e300, -0.1],
        b"a.str": [b"<unk>", b"", "\u2581hello".encode(), b"x" * 300],
    }


SAMPLE = {   # what test-gguf-dump --sample gives our writer
    b"general.architecture": b"llama",
    b"general.name": "sample \u00e9t\u00e9".encode(),
    b"general.alignment": 64, b"s.u32": 3000000000, b"s.i32": -123456,
    b"s.u64": 1 << 40, b"s.f32": float(np.float32(1e-5)), b"s.bool": True,
    b"s.empty": b"",
    b"a.u8": [0, 7, 255], b"a.i8": [-128, 5, 127], b"a.u16": [1, 65535],
    b"a.i16": [-32768, 32767, 0], b"a.u32": [4000000000, 0],
    b"a.i32": [-2**31, -1, 2**31 - 1],
    b"a.f32": [float(np.float32(x)) for x in (0.1, -3.0e38, 1e-45)],
    b"a.bool": [True, False, False, True], b"a.u64": [1 << 63, 5],
    b"a.i64": [-2**63, -2, 2**63 - 1], b"a.f64": [0.1, -1e-310, 1e308],
    b"a.empty": [],
    b"a.str": [b"<unk>", b"", "\u2581the".encode(), b"tab\there"],
}
SAMPLE_TENSORS = [("t.f32", 0, (5, 3)), ("t.f16", 1, (7,)), ("t.q8_0", 8, (64, 2)),
                  ("t.bf16", 30, (4, 3, 2)), ("t.q4_k", 12, (256,)),
                  ("t.i32", 26, (2, 2, 2, 2))]


def check_expected(view, expected, what):
    got = {k[0]: k[4] for k in view["kv"]}
    for key, want in expected.items():
        if key not in got:
            fail(f"{what}: key {key.decode()} missing")
        v = got[key]
        ok = (all(same_float(a, b) if isinstance(a, float) else a == b
                  for a, b in zip(v, want)) and len(v) == len(want)
              if isinstance(want, list) else
              same_float(v, want) if isinstance(want, float) else v == want)
        if not ok:
            fail(f"{what}: key {key.decode()}: {v!r}, expected {want!r}")


def main(argv):
    if len(argv) not in (3, 4):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    dump, work = argv[1], Path(argv[2])
    work.mkdir(parents=True, exist_ok=True)
    try:
        from importlib.metadata import version
        gv = version("gguf")
    except Exception:
        gv = "?"
    print(f"gguf-pycheck: gguf-py {gv}, numpy {np.__version__}")

    # 1. Python writes, we read
    a = work / "py-written.gguf"
    expected = write_py_file(a)
    ours, theirs = view_ours(dump, a), view_py(a)
    n = compare(ours_f64_scalars_as_f32(theirs), ours, f"{a} (ours vs gguf-py)")
    check_expected(theirs, expected, f"{a} (gguf-py)")
    exp_ours = {k: (float(np.float32(v)) if k == b"s.f64" else v)
                for k, v in expected.items()}
    check_expected(ours, exp_ours, f"{a} (ours)")
    nested = {k[0]: k for k in ours["kv"]}[b"a.nested"]
    if nested[2:4] != ("array", 2):
        fail(f"{a}: a.nested read as {nested}")
    print(f"ok 1: gguf-py's file, {n[0]} keys and {n[1]} tensors read alike")

    # 2. our writer copies the Python file byte for byte
    b = work / "py-written.copy.gguf"
    subprocess.run([dump, "--copy", str(a), str(b)], check=True)
    if a.read_bytes() != b.read_bytes():
        fail(f"{b}: our copy differs from {a}")
    compare(view_py(a), view_py(b), f"{b} (gguf-py, copy vs original)")
    print("ok 2: our writer's copy of it is byte-identical")

    # 3. our writer writes, Python reads
    s = work / "ours-sample.gguf"
    subprocess.run([dump, "--sample", str(s)], check=True)
    theirs = view_py(s)
    check_expected(theirs, SAMPLE, f"{s} (gguf-py)")
    got_t = [(t[0], t[1], t[2]) for t in theirs["tensors"]]
    if got_t != SAMPLE_TENSORS:
        fail(f"{s}: tensors {got_t}, expected {SAMPLE_TENSORS}")
    for t in theirs["tensors"]:
        if t[3] % 64:
            fail(f"{s}: tensor {t[0]} at offset {t[3]}, not 64-aligned")
    r = gguf.GGUFReader(str(s))
    data = {t.name: np.ascontiguousarray(t.data).tobytes() for t in r.tensors}
    for name, raw in data.items():
        want = bytes((i * 29 + 3) & 0xff for i in range(len(raw)))
        if raw != want:
            fail(f"{s}: tensor {name}: data differs from what was filled")
    n = compare(ours_f64_scalars_as_f32(theirs), view_ours(dump, s),
                f"{s} (ours vs gguf-py)")
    print(f"ok 3: our sample, {n[0]} keys and {n[1]} tensors, read by gguf-py as "
          "written")

    # 4. the real model
    if len(argv) == 4:
        m = Path(argv[3])
        n = compare(view_py(m), view_ours(dump, m), f"{m} (ours vs gguf-py)")
        c = work / "model.copy.gguf"
        subprocess.run([dump, "--copy", str(m), str(c)], check=True)
        if m.read_bytes() != c.read_bytes():
            fail(f"{c}: our copy differs from {m}")
        print(f"ok 4: {m.name}, {n[0]} keys and {n[1]} tensors read alike; "
              "copy byte-identical")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except Mismatch as e:
        print(f"gguf-pycheck: FAIL: {e}", file=sys.stderr)
        sys.exit(1)
