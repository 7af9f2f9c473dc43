#!/usr/bin/env python3
"""An independent GGUF reader and writer (standard library only, written from ggml's docs/gguf.md),
used to cross-check moe's C++ implementation (moe/io/gguf.cc). Nothing here runs at build or test
time.

  python3 scripts/gguf_reference.py fixtures
      writes tests/data/gguf/python_v3.gguf (the canonical layout moe's writer also produces:
      v3, alignment 64, data in tensor order) and python_v2.gguf (v2, default alignment, data
      stored in reverse tensor order, trailing bytes), and the fuzz seeds in fuzz/corpus/gguf/.
  python3 scripts/gguf_reference.py check FILE...
      parses each file with this reader, prints a summary, and re-serialises what it read with
      this writer: a v3 file in the canonical layout must come back byte for byte.
  python3 scripts/gguf_reference.py summary FILE...
      what this reader reads, as JSON, for scripts/gguf_check/check.mjs to compare against
      Hugging Face's @huggingface/gguf reader.
  bash scripts/gguf_crosscheck.sh [build dir]
      has the C++ tests write files and checks them with both readers.
"""
import math
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# gguf_metadata_value_type
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
              BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}
VALUE_TYPE_NAMES = {U8: "u8", I8: "i8", U16: "u16", I16: "i16", U32: "u32", I32: "i32",
                    F32: "f32", BOOL: "bool", STRING: "string", ARRAY: "array", U64: "u64",
                    I64: "i64", F64: "f64"}

# ggml_type id -> (name, elements per block, bytes per block), from the block layouts.
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 2 + 16), 3: ("Q4_1", 32, 2 + 2 + 16),
    6: ("Q5_0", 32, 2 + 4 + 16), 7: ("Q5_1", 32, 2 + 2 + 4 + 16), 8: ("Q8_0", 32, 2 + 32),
    9: ("Q8_1", 32, 2 + 2 + 32), 10: ("Q2_K", 256, 16 + 64 + 2 + 2),
    11: ("Q3_K", 256, 32 + 64 + 12 + 2), 12: ("Q4_K", 256, 2 + 2 + 12 + 128),
    13: ("Q5_K", 256, 2 + 2 + 12 + 32 + 128), 14: ("Q6_K", 256, 128 + 64 + 16 + 2),
    15: ("Q8_K", 256, 4 + 256 + 32), 16: ("IQ2_XXS", 256, 2 + 64), 17: ("IQ2_XS", 256, 2 + 64 + 8),
    18: ("IQ3_XXS", 256, 2 + 96), 19: ("IQ1_S", 256, 2 + 32 + 16), 20: ("IQ4_NL", 32, 2 + 16),
    21: ("IQ3_S", 256, 2 + 64 + 8 + 32 + 4), 22: ("IQ2_S", 256, 2 + 64 + 16),
    23: ("IQ4_XS", 256, 2 + 2 + 4 + 128), 24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4),
    27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 32 + 16 + 8), 30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 2 + 48 + 4), 35: ("TQ2_0", 256, 2 + 64), 39: ("MXFP4", 32, 1 + 16),
}
GGML_IDS = {name: i for i, (name, _, _) in GGML_TYPES.items()}


class Value:
    """A typed metadata value: scalar (type, python value) or array (ARRAY, (elem_type, items))."""

    def __init__(self, vtype, value):
        self.vtype, self.value = vtype, value

    def __eq__(self, other):
        return isinstance(other, Value) and self.encode() == other.encode() and \
            self.vtype == other.vtype

    def encode(self):
        return encode_value(self.vtype, self.value)

    def __repr__(self):
        if self.vtype == ARRAY:
            elem, items = self.value
            shown = ", ".join(repr(i.value if isinstance(i, Value) else i) for i in items[:4])
            return f"array<{VALUE_TYPE_NAMES[elem]}>[{len(items)}] {{{shown}}}"
        return f"{VALUE_TYPE_NAMES[self.vtype]} {self.value!r}"


def encode_string(s):
    b = s if isinstance(s, bytes) else s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def encode_value(vtype, value):
    if vtype == STRING:
        return encode_string(value)
    if vtype == ARRAY:
        elem, items = value
        out = struct.pack("<IQ", elem, len(items))
        for item in items:
            if elem == ARRAY:
                out += encode_value(ARRAY, item.value)
            else:
                out += encode_value(elem, item)
        return out
    if vtype == BOOL:
        return struct.pack("<B", 1 if value else 0)
    return struct.pack(SCALAR_FMT[vtype], value)


def align(x, a):
    return (x + a - 1) // a * a


def tensor_bytes(type_id, dims):
    _, block, size = GGML_TYPES[type_id]
    assert dims[0] % block == 0, (dims, block)
    n = 1
    for d in dims:
        n *= d
    return n // block * size


def write_gguf(kvs, tensors, version=3, reverse_data=False, trailing=b""):
    """kvs: list of (key, Value); tensors: list of (name, type_id, dims (ggml order), bytes)."""
    alignment = 32
    for key, v in kvs:
        if key == "general.alignment":
            alignment = v.value
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, v in kvs:
        out += encode_string(key) + struct.pack("<I", v.vtype) + v.encode()
    order = list(reversed(range(len(tensors)))) if reverse_data else list(range(len(tensors)))
    offsets, off = {}, 0
    for i in order:
        offsets[i] = off
        off += align(len(tensors[i][3]), alignment)
    for i, (name, type_id, dims, data) in enumerate(tensors):
        assert len(data) == tensor_bytes(type_id, dims)
        out += encode_string(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", type_id, offsets[i])
    out += b"\0" * (align(len(out), alignment) - len(out))
    for i in order:
        data = tensors[i][3]
        out += data + b"\0" * (align(len(data), alignment) - len(data))
    return out + trailing


class Reader:
    def __init__(self, data):
        self.d, self.pos = data, 0

    def take(self, n):
        if self.pos + n > len(self.d):
            raise ValueError(f"truncated at offset {self.pos}: need {n} bytes")
        b = self.d[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self):
        return self.take(self.unpack("<Q"))

    def value(self, vtype):
        if vtype == STRING:
            return self.string().decode("utf-8")
        if vtype == ARRAY:
            elem = self.unpack("<I")
            n = self.unpack("<Q")
            if elem == ARRAY:
                return (elem, [Value(ARRAY, self.value(ARRAY)) for _ in range(n)])
            return (elem, [self.value(elem) for _ in range(n)])
        if vtype not in SCALAR_FMT:
            raise ValueError(f"unknown value type {vtype}")
        v = self.unpack(SCALAR_FMT[vtype])
        if vtype == BOOL:
            if v > 1:
                raise ValueError(f"bool {v}")
            return bool(v)
        return v


def read_gguf(data):
    r = Reader(data)
    if r.take(4) != b"GGUF":
        raise ValueError("bad magic")
    version = r.unpack("<I")
    if version not in (2, 3):
        raise ValueError(f"version {version}")
    n_tensors, n_kv = r.unpack("<Q"), r.unpack("<Q")
    kvs = []
    for _ in range(n_kv):
        key = r.string().decode("ascii")
        vtype = r.unpack("<I")
        kvs.append((key, Value(vtype, r.value(vtype))))
    alignment = dict(kvs).get("general.alignment", Value(U32, 32)).value
    infos = []
    for _ in range(n_tensors):
        name = r.string().decode("utf-8")
        n_dims = r.unpack("<I")
        dims = [r.unpack("<Q") for _ in range(n_dims)]
        type_id, offset = r.unpack("<I"), r.unpack("<Q")
        infos.append((name, type_id, dims, offset))
    start = align(r.pos, alignment)
    tensors = []
    for name, type_id, dims, offset in infos:
        assert offset % alignment == 0
        n = tensor_bytes(type_id, dims)
        if start + offset + n > len(data):
            raise ValueError(f"tensor {name} past the end")
        tensors.append((name, type_id, dims, data[start + offset:start + offset + n]))
    return version, kvs, tensors, infos


def float_bits(x):
    return struct.pack("<d", x)[::-1].hex()


def untyped(x):
    if isinstance(x, Value):
        return untyped(x.value)
    if isinstance(x, tuple):  # (elem_type, items) of a nested array
        return [untyped(i) for i in x[1]]
    if isinstance(x, bool):
        return x
    if isinstance(x, float):
        return str(int(x)) if x.is_integer() else float_bits(x)
    if isinstance(x, int):
        return str(x)
    return x


def norm(vtype, value):
    if vtype == ARRAY:
        elem, items = value
        if elem == ARRAY:
            return {"t": ARRAY, "e": elem, "v": [untyped(i) for i in items]}
        return {"t": ARRAY, "e": elem, "v": [norm(elem, i) for i in items]}
    if vtype in (STRING, BOOL):
        return {"t": vtype, "v": value}
    if vtype in (F32, F64):
        return {"t": vtype, "v": float_bits(value)}
    return {"t": vtype, "v": str(value)}


def summary(path):
    """What this reader reads, in the normal form scripts/gguf_check/check.mjs compares."""
    data = open(path, "rb").read()
    version, kvs, tensors, infos = read_gguf(data)
    r = Reader(data)
    alignment = dict(kvs).get("general.alignment", Value(U32, 32)).value
    # data start: re-walk the header to find the end of the tensor infos
    r.take(24)
    for _ in range(len(kvs)):
        r.string()
        r.value(r.unpack("<I"))
    for _ in range(len(infos)):
        r.string()
        n = r.unpack("<I")
        r.take(8 * n + 12)
    return {"version": version, "data_offset": align(r.pos, alignment),
            "metadata": [[k, norm(v.vtype, v.value)] for k, v in kvs],
            "tensors": [[n, t, [str(d) for d in dims], str(o)] for n, t, dims, o in infos]}


def check(path):
    data = open(path, "rb").read()
    version, kvs, tensors, infos = read_gguf(data)
    print(f"{path}: GGUF v{version}, {len(kvs)} keys, {len(tensors)} tensors, {len(data)} bytes")
    for key, v in kvs:
        print(f"  {key} = {v!r}")
    for (name, type_id, dims, offset), (_, _, _, blob) in zip(infos, tensors):
        print(f"  {name}: {GGML_TYPES[type_id][0]} {dims} at {offset}, {len(blob)} bytes")
    canonical = version == 3
    off = 0
    for name, type_id, dims, offset in infos:
        canonical = canonical and offset == off
        off += align(tensor_bytes(type_id, dims), dict(kvs).get("general.alignment",
                                                                Value(U32, 32)).value)
    if canonical:
        again = write_gguf(kvs, tensors)
        if again != data:
            first = next(i for i in range(min(len(again), len(data))) if again[i] != data[i]) \
                if any(a != b for a, b in zip(again, data)) else min(len(again), len(data))
            print(f"  MISMATCH: re-serialised file differs from byte {first} "
                  f"({len(again)} vs {len(data)} bytes)")
            return False
        print("  re-serialised byte for byte")
    return True


# ------------------------------------------------------------------------------------------------
# Fixtures. tests/io/gguf_test.cc checks these exact values.

def pattern(n, seed):
    return bytes((k * 31 + seed * 7 + 3) & 0xFF for k in range(n))


def fixture_tensors():
    f32 = b"".join(struct.pack("<f", 0.25 * k - 1.0) for k in range(12))
    f16 = b"".join(struct.pack("<e", 0.5 * k - 4.0) for k in range(16))
    bf16 = b"".join(struct.pack("<f", 1.0 + k)[2:] for k in range(4))
    return [
        ("token_embd.weight", GGML_IDS["F32"], [4, 3], f32),
        ("blk.0.attn_q.weight", GGML_IDS["F16"], [8, 2], f16),
        ("blk.0.ffn_down.weight", GGML_IDS["Q8_0"], [32, 2], pattern(68, 1)),
        ("blk.0.ffn_gate_exps.weight", GGML_IDS["Q4_K"], [256, 1, 2], pattern(288, 2)),
        ("blk.0.ffn_up_exps.weight", GGML_IDS["Q6_K"], [256, 1, 1, 1], pattern(210, 3)),
        ("output_norm.weight", GGML_IDS["BF16"], [4], bf16),
    ]


def fixture_kvs(alignment):
    kvs = [
        ("general.architecture", Value(STRING, "llama")),
        ("general.name", Value(STRING, "python fixture \u00fc")),
        ("test.u8", Value(U8, 200)),
        ("test.i8", Value(I8, -100)),
        ("test.u16", Value(U16, 60000)),
        ("test.i16", Value(I16, -30000)),
        ("test.u32", Value(U32, 4000000000)),
        ("test.i32", Value(I32, -2000000000)),
        ("test.u64", Value(U64, 2**63 + 5)),
        ("test.i64", Value(I64, -(2**62))),
        ("test.f32", Value(F32, 1.5)),
        ("test.f64", Value(F64, -0.125)),
        ("test.bool", Value(BOOL, True)),
        ("test.empty_string", Value(STRING, "")),
        ("test.arr_u8", Value(ARRAY, (U8, [1, 2, 3]))),
        ("test.arr_i32", Value(ARRAY, (I32, [-1, 0, 7]))),
        ("test.arr_f32", Value(ARRAY, (F32, [0.5, -2.0]))),
        ("test.arr_bool", Value(ARRAY, (BOOL, [True, False, True]))),
        ("test.arr_str", Value(ARRAY, (STRING, ["a", "", "\u00fc"]))),
        ("test.arr_nested", Value(ARRAY, (ARRAY, [Value(ARRAY, (U16, [1, 2])),
                                                  Value(ARRAY, (STRING, ["x"])),
                                                  Value(ARRAY, (F64, []))]))),
        ("test.arr_empty", Value(ARRAY, (U64, []))),
        ("llama.block_count", Value(I32, 2)),
    ]
    if alignment is not None:
        kvs.append(("general.alignment", Value(U32, alignment)))
    return kvs


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    print(f"wrote {os.path.relpath(path, ROOT)} ({len(data)} bytes)")


def fixtures():
    tensors = fixture_tensors()
    v3 = write_gguf(fixture_kvs(64), tensors)
    v2 = write_gguf(fixture_kvs(None), tensors, version=2, reverse_data=True, trailing=b"tail")
    write(os.path.join(ROOT, "tests/data/gguf/python_v3.gguf"), v3)
    write(os.path.join(ROOT, "tests/data/gguf/python_v2.gguf"), v2)
    # Fuzz seeds: the fixtures, a metadata-only file, one tensor of each supported type.
    seeds = os.path.join(ROOT, "fuzz/corpus/gguf")
    write(os.path.join(seeds, "python_v3.gguf"), v3)
    write(os.path.join(seeds, "python_v2.gguf"), v2)
    write(os.path.join(seeds, "metadata_only.gguf"), write_gguf(fixture_kvs(None), []))
    small = [(f"t.{name.lower()}", GGML_IDS[name], [GGML_TYPES[GGML_IDS[name]][1]],
              pattern(GGML_TYPES[GGML_IDS[name]][2], i))
             for i, name in enumerate(["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K", "Q5_K",
                                       "Q6_K"])]
    write(os.path.join(seeds, "one_of_each_type.gguf"),
          write_gguf([("general.alignment", Value(U32, 8))], small))
    for path in ("tests/data/gguf/python_v3.gguf", "tests/data/gguf/python_v2.gguf"):
        assert check(os.path.join(ROOT, path))


def main(argv):
    if len(argv) >= 1 and argv[0] == "fixtures":
        fixtures()
        return 0
    if len(argv) >= 2 and argv[0] == "summary":
        import json
        json.dump({p: summary(p) for p in argv[1:]}, sys.stdout)
        return 0
    if len(argv) >= 2 and argv[0] == "check":
        ok = all([check(p) for p in argv[1:]])
        return 0 if ok else 1
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
