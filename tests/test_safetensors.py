"""safetensors reading and writing (csrc/io/safetensors.c, safetensors_write.c, json.c).

Reference files under tests/data/safetensors/ were written by the Python `safetensors`
package, PyTorch and timm (tools/make_safetensors_fixtures.py); the .npz beside each holds
the float32 values torch/numpy convert them to. Everything else is built here by hand.
"""
import json
import os
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from codext import _C

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data", "safetensors")
with open(os.path.join(DATA, "manifest.json")) as _f:
    MANIFEST = json.load(_f)


def load(path):
    return _C.safetensors_load(str(path))


def save(path, tensors, metadata=None):
    _C.safetensors_save(str(path), list(tensors), list(tensors.values()), dict(metadata or {}))


def raw_file(path, header, data=b"", pad=True):
    """Writes a file with `header` (str or bytes, verbatim) as its JSON and `data` after it."""
    if isinstance(header, str):
        header = header.encode()
    if pad:
        header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + data)
    return str(path)


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        raw = f.read(n)
    return n, raw, json.loads(raw, object_pairs_hook=lambda pairs: pairs)


def bits(a):
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a.view(np.uint32)


def expect_oserror(path, *words):
    with pytest.raises(OSError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message, message
    for w in words:
        assert w in message, f"{w!r} not in {message!r}"
    return message


# ---- writing and reading back --------------------------------------------------------------

def test_round_trip_bit_exact(tmp_path):
    rng = np.random.default_rng(0)
    special = np.array([np.inf, -np.inf, np.nan, -0.0, 1e-45, 3.4028235e38], dtype=np.float32)
    payload_nan = np.array([0x7FC00123, 0xFF812345], dtype=np.uint32).view(np.float32)
    tensors = {
        "z.last_in_alphabet": rng.standard_normal((3, 5)).astype(np.float32),
        "a.weight": rng.standard_normal((7,)).astype(np.float32),
        "scalar": np.array(1.25, dtype=np.float32),
        "empty": np.zeros((4, 0, 2), dtype=np.float32),
        "special": np.concatenate([special, payload_nan]),
        "eight_dims": rng.standard_normal((1, 2, 1, 3, 1, 2, 1, 2)).astype(np.float32),
        "odd": rng.standard_normal((3, 3, 7)).astype(np.float32),
        "caf\u00e9 \"q\" \\ \n": np.ones((2,), dtype=np.float32),
    }
    metadata = {"format": "pt", "step": "1200", "unicode": "\u2713 \U0001F600", "esc": "\"\\\n\t\x01", "": ""}
    path = tmp_path / "rt.safetensors"
    save(path, tensors, metadata)
    loaded, meta, dtypes = load(path)
    assert list(loaded) == list(tensors)
    assert meta == metadata
    assert dtypes == {k: "F32" for k in tensors}
    for name, array in tensors.items():
        assert loaded[name].dtype == np.float32 and loaded[name].shape == array.shape, name
        assert np.array_equal(bits(loaded[name]), bits(array)), name


def test_written_layout(tmp_path):
    """__metadata__ first, tensors in the given order, contiguous offsets, header padded
    with spaces to a multiple of 8, data little-endian right after."""
    tensors = {"b": np.arange(3, dtype=np.float32), "a": np.arange(6, dtype=np.float32).reshape(2, 3),
               "e": np.zeros((0,), np.float32), "c": np.float32([7.5])}
    path = tmp_path / "layout.safetensors"
    save(path, tensors, {"k": "v"})
    n, raw, header = read_header(path)
    assert n % 8 == 0 and raw == raw.rstrip(b" ") + b" " * (len(raw) - len(raw.rstrip(b" ")))
    assert [k for k, _ in header] == ["__metadata__", "b", "a", "e", "c"]
    offsets = [dict(v)["data_offsets"] for k, v in header[1:]]
    assert offsets == [[0, 12], [12, 36], [36, 36], [36, 40]]
    blob = open(path, "rb").read()[8 + n:]
    assert blob == b"".join(np.asarray(t, "<f4").tobytes() for t in tensors.values())


def test_no_metadata_and_no_tensors(tmp_path):
    """Without user metadata the header still holds __metadata__, with the checksums only;
    the reader hands out no metadata then."""
    path = tmp_path / "plain.safetensors"
    save(path, {"x": np.ones((2, 2), np.float32)})
    _, _, header = read_header(path)
    assert [k for k, _ in header] == ["__metadata__", "x"]
    assert [k for k, _ in header[0][1]] == ["codext_crc32c"]
    assert load(path)[1] == {}
    path = tmp_path / "nothing.safetensors"
    save(path, {})
    assert read_header(path)[1].strip() == b'{"__metadata__":{"codext_crc32c":"{}"}}'
    assert load(path) == ({}, {}, {})


def test_writer_takes_strided_arrays(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4).T  # not contiguous
    path = tmp_path / "strided.safetensors"
    save(path, {"x": x, "i": np.arange(4, dtype=np.int16)})
    loaded = load(path)[0]
    np.testing.assert_array_equal(loaded["x"], x)
    np.testing.assert_array_equal(loaded["i"], np.arange(4, dtype=np.float32))


def test_writer_rejects_bad_names(tmp_path):
    path = tmp_path / "bad.safetensors"
    with pytest.raises(ValueError, match="twice"):
        _C.safetensors_save(str(path), ["a", "a"], [np.ones(1, np.float32)] * 2, {})
    with pytest.raises(ValueError, match="reserved"):
        _C.safetensors_save(str(path), ["__metadata__"], [np.ones(1, np.float32)], {})
    assert not path.exists()
    assert os.listdir(tmp_path) == []


# ---- files written by safetensors / PyTorch / timm ---------------------------------------------

@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_reference_files(name):
    spec = MANIFEST[name]
    tensors, metadata, dtypes = load(os.path.join(DATA, name + ".safetensors"))
    expected = np.load(os.path.join(DATA, name + ".npz"))
    assert list(tensors) == spec["order"]
    assert dtypes == spec["dtypes"]
    assert metadata == spec["metadata"]
    assert sorted(tensors) == sorted(expected.files)
    for key in expected.files:
        want = expected[key]
        assert want.dtype == np.float32
        assert tensors[key].shape == want.shape == tuple(spec["shapes"][key]), key
        assert np.array_equal(bits(tensors[key]), bits(want)), key


def test_reference_int64_names_tensor_and_dtype():
    path = os.path.join(DATA, "torch_int64.safetensors")
    expect_oserror(path, "bn.num_batches_tracked", "I64", "float32")


# ---- conversions -------------------------------------------------------------------------------

def half_reference(h):
    """float32 bits of every float16 bit pattern h (uint16), NaN payloads kept."""
    h = h.astype(np.uint32)
    out = np.asarray(h.astype(np.uint16).view(np.float16).astype(np.float32)).view(np.uint32).copy()
    nan = ((h >> 10) & 0x1F == 0x1F) & (h & 0x3FF != 0)
    out[nan] = ((h[nan] & 0x8000) << 16) | 0x7F800000 | ((h[nan] & 0x3FF) << 13)
    return out


def test_all_half_and_bfloat16_patterns(tmp_path):
    every = np.arange(65536, dtype=np.uint16)
    data = every.astype("<u2").tobytes()
    header = json.dumps({"h": entry("F16", [256, 256], 0, len(data)),
                         "b": entry("BF16", [65536], len(data), 2 * len(data))})
    path = raw_file(tmp_path / "halves.safetensors", header, data + data)
    tensors, _, dtypes = load(path)
    assert dtypes == {"h": "F16", "b": "BF16"}
    assert np.array_equal(bits(tensors["h"]).ravel(), half_reference(every))
    assert np.array_equal(bits(tensors["b"]), every.astype(np.uint32) << 16)


def test_double_to_float(tmp_path):
    rng = np.random.default_rng(5)
    values = np.concatenate([
        rng.standard_normal(200) * 10.0 ** rng.integers(-50, 50, 200),
        [0.0, -0.0, np.inf, -np.inf, 1e39, -1e39, 1e-46, 1.401298464324817e-45, 0.1, 1 / 3,
         3.4028235677973366e38, 3.4028235677973362e38, 2.0 ** -149 * 1.5],
    ])
    path = raw_file(tmp_path / "f64.safetensors", json.dumps({"d": entry("F64", [len(values)], 0, 8 * len(values))}),
                    values.astype("<f8").tobytes())
    got = load(path)[0]["d"]
    with np.errstate(over="ignore"):
        want = values.astype(np.float32)
    assert np.array_equal(bits(got), bits(want))
    nan_path = raw_file(tmp_path / "nan.safetensors", json.dumps({"d": entry("F64", [1], 0, 8)}),
                        np.array([np.nan], "<f8").tobytes())
    assert np.isnan(load(nan_path)[0]["d"]).all()


def test_unaligned_offsets_and_padding(tmp_path):
    half = np.array([1.5, -2.0, 6.1e-5], dtype=np.float16)
    f32 = np.array([[1.0, -3.25], [np.pi, 1e-30]], dtype=np.float32)
    bf = np.array([0x3FC0, 0xC2F7], dtype=np.uint16)  # 1.5, -123.5
    f64 = np.array([2.5, -1e-3])
    chunks, header, at = [], {}, 0
    for name, dtype, shape, blob in [("h", "F16", [3], half.astype("<f2").tobytes()),
                                     ("f", "F32", [2, 2], f32.astype("<f4").tobytes()),
                                     ("b", "BF16", [2, 1], bf.astype("<u2").tobytes()),
                                     ("d", "F64", [2], f64.astype("<f8").tobytes())]:
        chunks.append(blob)
        header[name] = entry(dtype, shape, at, at + len(blob))
        at += len(blob)
    text = "  \n" + json.dumps(header, indent=1) + "\t\r\n"  # whitespace around the JSON is fine
    path = raw_file(tmp_path / "unaligned.safetensors", text, b"".join(chunks))
    tensors = load(path)[0]
    assert header["f"]["data_offsets"][0] % 4 != 0 and header["d"]["data_offsets"][0] % 8 != 0
    np.testing.assert_array_equal(tensors["h"], half.astype(np.float32))
    np.testing.assert_array_equal(tensors["f"], f32)
    np.testing.assert_array_equal(tensors["b"], np.array([[1.5], [-123.5]], np.float32))
    np.testing.assert_array_equal(tensors["d"], f64.astype(np.float32))


# ---- malformed files ------------------------------------------------------------------------------

GOOD = {"a": entry("F32", [2, 3], 0, 24)}

MALFORMED = [
    # (id, header text, data length, words the message must contain)
    ("bad_json", '{"a": {"dtype": "F32",}}', 0, ["bad JSON", "byte 22", "expected a string key"]),
    ("bad_json_value", '{"a":}', 0, ["bad JSON", "byte 5", "expected a value"]),
    ("trailing_garbage", '{} x', 0, ["bad JSON", "byte 3", "after the JSON value"]),
    ("two_values", '{}{}', 0, ["after the JSON value"]),
    ("not_object", '[1, 2]', 0, ["expected a JSON object"]),
    ("unterminated", '{"a', 0, ["unterminated string"]),
    ("control_char", '{"a\tb": 1}', 0, ["control character"]),
    ("bad_escape", '{"a\\x": 1}', 0, ["invalid escape"]),
    ("short_unicode", '{"a\\u12": 1}', 0, ["4 hex digits"]),
    ("lone_high_surrogate", '{"\\ud800": 1}', 0, ["surrogate"]),
    ("lone_low_surrogate", '{"\\udc00x": 1}', 0, ["surrogate"]),
    ("nul_escape", '{"a\\u0000": 1}', 0, ["NUL"]),
    ("leading_zero", '{"a": {"dtype": "F32", "shape": [01], "data_offsets": [0, 4]}}', 4, ["bad JSON"]),
    ("bad_literal", '{"a": nul}', 0, ["invalid literal"]),
    ("depth_bomb", "[" * 100000 + "]" * 100000, 0, ["nesting deeper than 64"]),
    ("duplicate_tensor", '{"a": ' + json.dumps(GOOD["a"]) + ', "a": ' + json.dumps(GOOD["a"]) + "}", 24,
     ["duplicate key \"a\""]),
    ("duplicate_metadata", '{"__metadata__": {}, "__metadata__": {}}', 0, ["duplicate key"]),
    ("duplicate_field", '{"a": {"dtype": "F32", "dtype": "F32", "shape": [], "data_offsets": [0, 4]}}', 4,
     ["duplicate key \"dtype\""]),
    ("entry_not_object", '{"a": [1]}', 0, ["'a'", "expected an object"]),
    ("missing_dtype", '{"a": {"shape": [1], "data_offsets": [0, 4]}}', 4, ["'a'", "missing key \"dtype\""]),
    ("missing_shape", '{"a": {"dtype": "F32", "data_offsets": [0, 4]}}', 4, ["missing key \"shape\""]),
    ("missing_offsets", '{"a": {"dtype": "F32", "shape": [1]}}', 4, ["missing key \"data_offsets\""]),
    ("dtype_not_string", '{"a": {"dtype": 3, "shape": [1], "data_offsets": [0, 4]}}', 4, ["\"dtype\" is a number"]),
    ("unknown_dtype", '{"a": {"dtype": "F33", "shape": [1], "data_offsets": [0, 4]}}', 4, ["unknown dtype \"F33\""]),
    ("shape_not_array", '{"a": {"dtype": "F32", "shape": 1, "data_offsets": [0, 4]}}', 4, ["\"shape\" is a number"]),
    ("shape_negative", '{"a": {"dtype": "F32", "shape": [2, -2], "data_offsets": [0, 16]}}', 16,
     ["'a'", "shape entry 1 is negative"]),
    ("shape_fraction", '{"a": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}', 4,
     ["shape entry 0 is not an integer"]),
    ("shape_exponent", '{"a": {"dtype": "F32", "shape": [1e0], "data_offsets": [0, 4]}}', 4, ["not an integer"]),
    ("shape_string", '{"a": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}}', 8, ["is a string"]),
    ("shape_huge", '{"a": {"dtype": "F32", "shape": [99999999999999999999], "data_offsets": [0, 4]}}', 4,
     ["not an integer (or too large)"]),
    ("shape_overflow", '{"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}}', 4,
     ["too many elements"]),
    ("zero_dim_overflow", '{"a": {"dtype": "F32", "shape": [0, 9223372036854775807], "data_offsets": [0, 0]}}', 0,
     ["too many elements"]),
    ("too_many_dims", '{"a": {"dtype": "F32", "shape": [1,1,1,1,1,1,1,1,1], "data_offsets": [0, 4]}}', 4,
     ["9 dims", "at most 8"]),
    ("offsets_one", '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [4]}}', 4, ["\"data_offsets\" must be"]),
    ("offsets_negative", '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}}', 4, ["data_offsets"]),
    ("size_mismatch", '{"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}}', 24,
     ["'a'", "needs 24 bytes", "span 20"]),
    ("size_mismatch_f16", '{"a": {"dtype": "F16", "shape": [3], "data_offsets": [0, 8]}}', 8, ["needs 6 bytes"]),
    ("begin_after_end", '{"a": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}}', 8, ["begin > end"]),
    ("end_beyond_data", '{"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}', 8,
     ["'a'", "beyond the data block of 8 bytes"]),
    ("end_beyond_u64", '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [18446744073709551615, '
     '18446744073709551619]}}', 4, ["data_offsets"]),
    ("gap_between", '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
     '"b": {"dtype": "F32", "shape": [1], "data_offsets": [5, 9]}}', 9, ["'b' begins at byte 5", "before it, 'a', ends at 4", "1 unused bytes"]),
    ("gap_at_start", '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', 8,
     ["first tensor, 'a', begins at byte 4", "4 unused bytes before it"]),
    ("trailing_bytes", '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', 5,
     ["1 trailing bytes", "cover 4 of the data block's 5"]),
    ("data_but_no_tensors", '{}', 8, ["8 trailing bytes"]),
    ("empty_inside_other", '{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
     '"e": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}}', 8, ["'a'", "'e'", "overlap"]),
    ("empty_beyond_end", '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
     '"e": {"dtype": "F32", "shape": [0], "data_offsets": [6, 6]}}', 4, ["'e'", "beyond the data block"]),
    ("overlap", '{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, '
     '"b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}}', 20, ["'a'", "'b'", "overlap"]),
    ("overlap_inside", '{"a": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}, '
     '"b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}, '
     '"c": {"dtype": "F32", "shape": [1], "data_offsets": [32, 36]}}', 36, ["overlap"]),
    ("same_range", '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
     '"b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', 4, ["overlap"]),
    ("metadata_not_object", '{"__metadata__": "x"}', 0, ["__metadata__", "expected an object of strings"]),
    ("metadata_number", '{"__metadata__": {"epoch": 3}}', 0, ["__metadata__", "\"epoch\" is a number"]),
    ("subbyte", '{"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 1]}}', 1, ["whole number of bytes"]),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_header(tmp_path, case):
    _, header, data_len, words = case
    path = raw_file(tmp_path / "bad.safetensors", header, b"\0" * data_len)
    expect_oserror(path, *words)


def test_bad_bytes_in_header(tmp_path):
    good = json.dumps(GOOD).encode()
    for raw, word in [(b'{"\xff": 1}', "invalid UTF-8"), (b'{"\xc0\xaf": 1}', "invalid UTF-8"),
                      (b'{"\xed\xa0\x80": 1}', "invalid UTF-8"), (b'{"a\xe2\x82": 1}', "invalid UTF-8"),
                      (good + b"\0\0\0", "after the JSON value"), (b"", "expected a value"),
                      (b"\xef\xbb\xbf" + good, "expected a value")]:
        path = raw_file(tmp_path / "bytes.safetensors", raw, b"\0" * 24, pad=False)
        expect_oserror(path, "bad JSON", word)


def test_file_level_problems(tmp_path):
    short = tmp_path / "short.safetensors"
    for n in range(8):
        short.write_bytes(b"\x02" * n)
        expect_oserror(short, f"only {n} bytes", "too short")
    beyond = tmp_path / "beyond.safetensors"
    beyond.write_bytes(struct.pack("<Q", 100) + b"{}")
    expect_oserror(beyond, "header length 100 exceeds the file size of 10 bytes")
    text = tmp_path / "text.safetensors"
    text.write_bytes(b"hello, this is not a safetensors file\n")
    expect_oserror(text, "exceeds the file size")
    absurd = tmp_path / "absurd.safetensors"
    with open(absurd, "wb") as f:  # sparse: the length fits the file but is absurd
        f.write(struct.pack("<Q", 150_000_000) + b"{}")
        f.truncate(160_000_000)
    expect_oserror(absurd, "absurd")
    expect_oserror(tmp_path / "missing.safetensors", "No such file or directory")
    expect_oserror(tmp_path, "Is a directory")


def test_unsupported_dtypes_name_tensor(tmp_path):
    for dtype, nbytes in [("U8", 4), ("BOOL", 4), ("I64", 32), ("I32", 16), ("F8_E4M3", 4)]:
        header = json.dumps({"ok": entry("F32", [1], 0, 4), "odd.one": entry(dtype, [4], 4, 4 + nbytes)})
        path = raw_file(tmp_path / "dtype.safetensors", header, b"\0" * (4 + nbytes))
        expect_oserror(path, "'odd.one'", f"dtype {dtype}", "float32")


def test_accepts_empty_tensors_at_boundaries(tmp_path):
    header = json.dumps({"e1": entry("F32", [0], 4, 4), "e2": entry("BF16", [3, 0], 4, 4), "e0": entry("F16", [0], 0, 0),
                         "x": entry("F32", [1], 0, 4), "y": entry("F32", [2], 4, 12), "e3": entry("F16", [0], 12, 12)})
    tensors = load(raw_file(tmp_path / "empties.safetensors", header, np.float32([1, 2, 3]).tobytes()))[0]
    assert tensors["e2"].shape == (3, 0) and list(tensors["y"]) == [2.0, 3.0]
    only_empty = json.dumps({"e": entry("F32", [0, 5], 0, 0), "s": entry("F32", [], 0, 4)})
    tensors = load(raw_file(tmp_path / "scalar.safetensors", only_empty, np.float32([7]).tobytes()))[0]
    assert tensors["e"].shape == (0, 5) and tensors["s"].shape == () and tensors["s"] == 7.0


# ---- exact coverage and checksums -----------------------------------------------------------

def crc32c_reference(data):
    """CRC-32C, bit by bit (polynomial 0x82F63B78 reflected, init and final XOR all ones)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def write_sample(path):
    rng = np.random.default_rng(3)
    tensors = {"w": rng.standard_normal((3, 5)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32),
               "e": np.zeros((0, 3), np.float32), "s": np.array(2.5, np.float32),
               "v": rng.standard_normal(5).astype(np.float32)}  # "b" and "v": same size, swappable
    save(path, tensors, {"step": "7"})
    return tensors


def rewrite_header(path, out, edit):
    """Copies path to out with its header JSON replaced by edit(header dict), same data."""
    n, _, _ = read_header(path)
    blob = open(path, "rb").read()
    header = json.loads(blob[8:8 + n])
    text = json.dumps(edit(header))
    return raw_file(out, text, blob[8 + n:])


def test_checksums_written_and_match_reference(tmp_path):
    path = tmp_path / "sum.safetensors"
    tensors = write_sample(path)
    assert crc32c_reference(b"123456789") == 0xE3069283
    n, _, header = read_header(path)
    meta = dict(header[0][1])
    assert list(meta) == ["step", "codext_crc32c"]
    sums = json.loads(meta["codext_crc32c"])
    assert list(sums) == list(tensors)
    data = open(path, "rb").read()[8 + n:]
    for name, v in header[1:]:
        begin, end = dict(v)["data_offsets"]
        assert sums[name] == "%08x" % crc32c_reference(data[begin:end]), name
    assert sums["e"] == "00000000"
    loaded, metadata, _ = load(path)
    assert metadata == {"step": "7"}  # the checksums are consumed, not handed out
    with pytest.raises(ValueError, match="codext_crc32c.*reserved"):
        save(tmp_path / "reserved.safetensors", {"x": np.ones(1, np.float32)}, {"codext_crc32c": "{}"})


def test_every_flipped_data_bit_names_its_tensor(tmp_path):
    path = tmp_path / "sum.safetensors"
    write_sample(path)
    n, _, header = read_header(path)
    owner = {}
    for name, v in header[1:]:
        begin, end = dict(v)["data_offsets"]
        for k in range(begin, end):
            owner[8 + n + k] = name
    blob = bytearray(open(path, "rb").read())
    assert sorted(owner) == list(range(8 + n, len(blob)))
    bad = tmp_path / "flipped.safetensors"
    for pos in sorted(owner):
        for bit in (0, 7) if pos % 3 else range(8):
            mutant = bytearray(blob)
            mutant[pos] ^= 1 << bit
            bad.write_bytes(bytes(mutant))
            expect_oserror(bad, f"tensor '{owner[pos]}'", "checksum mismatch")


def test_swapped_offsets_are_caught(tmp_path):
    path = tmp_path / "sum.safetensors"
    write_sample(path)

    def swap(h):
        h["b"]["data_offsets"], h["v"]["data_offsets"] = h["v"]["data_offsets"], h["b"]["data_offsets"]
        return h
    bad = rewrite_header(path, tmp_path / "swapped.safetensors", swap)
    message = expect_oserror(bad, "checksum mismatch")
    assert "'b'" in message or "'v'" in message


@pytest.mark.parametrize("case", [
    ("not_json", lambda s: "{", ["codext_crc32c", "not valid JSON"]),
    ("a_list", lambda s: "[]", ["codext_crc32c", "an array", "expected an object"]),
    ("missing_tensor", lambda s: json.dumps({k: v for k, v in s.items() if k != "w"}),
     ["'w'", "no checksum", "codext_crc32c"]),
    ("extra_name", lambda s: json.dumps(dict(s, ghost="00000000")), ["'ghost'", "does not hold"]),
    ("renamed", lambda s: json.dumps({("W" if k == "w" else k): v for k, v in s.items()}), ["'W'", "does not hold"]),
    ("short_hex", lambda s: json.dumps(dict(s, w=s["w"][:7])), ["'w'", "8 lowercase hex digits"]),
    ("upper_hex", lambda s: json.dumps(dict(s, w=s["w"].upper() if s["w"].upper() != s["w"] else "ABCDEF01")),
     ["'w'", "8 lowercase hex digits"]),
    ("number", lambda s: json.dumps(dict(s, w=int(s["w"], 16))), ["'w'", "8 lowercase hex digits"]),
    ("wrong_value", lambda s: json.dumps(dict(s, s="%08x" % (int(s["s"], 16) ^ 1))), ["'s'", "checksum mismatch"]),
    ("duplicate", lambda s: json.dumps(s)[:-1] + ', "w": "00000000"}', ["codext_crc32c", "duplicate key"]),
], ids=lambda c: c[0])
def test_bad_checksum_metadata(tmp_path, case):
    _, edit, words = case
    path = tmp_path / "sum.safetensors"
    write_sample(path)

    def apply(h):
        h["__metadata__"]["codext_crc32c"] = edit(json.loads(h["__metadata__"]["codext_crc32c"]))
        return h
    expect_oserror(rewrite_header(path, tmp_path / "bad.safetensors", apply), *words)


def test_lowered_header_length_fails(tmp_path):
    """Lowering the header length into the space padding keeps the JSON valid but shifts
    the data block: every such file must fail (the tensors no longer cover it exactly),
    for our files and for files written by safetensors / PyTorch."""
    ours = tmp_path / "ours.safetensors"
    save(ours, {"a": np.arange(6, dtype=np.float32), "b": np.ones((2, 2), np.float32)}, {"pad": "x" * 3})
    sources = [str(ours)] + [os.path.join(DATA, n + ".safetensors") for n in ("torch_mixed", "np_mixed")]
    bad = tmp_path / "lowered.safetensors"
    shifted = 0
    for source in sources:
        blob = open(source, "rb").read()
        load(source)
        (n,) = struct.unpack("<Q", blob[:8])
        padding = len(blob[8:8 + n]) - len(blob[8:8 + n].rstrip(b" "))
        for k in range(1, 8):
            bad.write_bytes(struct.pack("<Q", n - k) + blob[8:])
            message = expect_oserror(bad)
            if k <= padding:
                assert f"{k} trailing bytes" in message, message
                shifted += 1
    assert shifted >= 3  # the padding case itself was exercised


def test_files_without_checksums_load(tmp_path):
    """Files from other writers carry no checksums and load unchecked."""
    path = tmp_path / "sum.safetensors"
    tensors = write_sample(path)

    def strip(h):
        del h["__metadata__"]["codext_crc32c"]
        return h
    plain = rewrite_header(path, tmp_path / "plain.safetensors", strip)
    loaded, metadata, _ = load(plain)
    assert metadata == {"step": "7"}
    for name, array in tensors.items():
        assert np.array_equal(bits(loaded[name]), bits(array)), name


def test_every_truncation_fails(tmp_path):
    src = tmp_path / "full.safetensors"
    save(src, {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.array(2.0, np.float32),
               "h": np.ones((2, 2), np.float32)}, {"m": "v"})
    for source in [str(src), os.path.join(DATA, "torch_mixed.safetensors")]:
        blob = open(source, "rb").read()
        load(source)
        cut = tmp_path / "cut.safetensors"
        for n in range(len(blob)):
            cut.write_bytes(blob[:n])
            with pytest.raises(OSError) as info:
                load(cut)
            assert str(cut) in str(info.value)


def test_random_corruption_never_crashes(tmp_path):
    """Byte flips and garbage: each load either succeeds or raises OSError."""
    rng = np.random.default_rng(7)
    path = tmp_path / "fuzz.safetensors"
    outcomes = {"ok": 0, "error": 0}
    for source in ["torch_mixed", "np_mixed"]:
        blob = np.frombuffer(open(os.path.join(DATA, source + ".safetensors"), "rb").read(), np.uint8)
        n_header = struct.unpack("<Q", blob[:8].tobytes())[0]
        for trial in range(300):
            mutant = blob.copy()
            hi = 8 + n_header if trial % 2 else len(blob)  # half the flips land in the header
            for pos in rng.integers(0, hi, rng.integers(1, 5)):
                mutant[pos] = rng.integers(0, 256)
            path.write_bytes(mutant.tobytes())
            try:
                tensors, _, _ = load(path)
                assert all(t.dtype == np.float32 for t in tensors.values())
                outcomes["ok"] += 1
            except OSError as e:
                assert str(path) in str(e)
                outcomes["error"] += 1
    for trial in range(100):
        garbage = rng.integers(0, 256, rng.integers(0, 64), dtype=np.uint8).tobytes()
        path.write_bytes(struct.pack("<Q", len(garbage)) + garbage if trial % 2 else garbage)
        with pytest.raises(OSError):
            load(path)
    assert outcomes["ok"] > 0 and outcomes["error"] > 0


# ---- atomic writes -------------------------------------------------------------------------------

OLD = {"old": np.arange(4, dtype=np.float32)}
NEW = {"new": np.ones((64, 64), np.float32)}


def assert_old_intact(path, directory):
    tensors = load(path)[0]
    assert list(tensors) == ["old"]
    assert [n for n in os.listdir(directory) if ".tmp." in n] == []


def test_overwrite_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "m.safetensors"
    save(path, OLD)
    save(path, NEW)
    assert list(load(path)[0]) == ["new"]
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]


def test_unwritable_directory_keeps_old_file(tmp_path):
    """The directory is read-only for the writer (as /kaggle/input is). Root ignores
    permission bits, so under root the save runs in a child process as `nobody`."""
    path = tmp_path / "m.safetensors"
    save(path, OLD)
    os.chmod(tmp_path, 0o555)
    try:
        if os.geteuid() != 0:
            with pytest.raises(OSError) as info:
                save(path, NEW)
            message = str(info.value)
        else:  # fork, drop to nobody in the child, report the message through a pipe
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(read_end)
                    os.setgid(65534)
                    os.setuid(65534)
                    try:
                        save(path, NEW)
                        text = "no error"
                    except OSError as e:
                        text = str(e)
                    os.write(write_end, text.encode())
                finally:
                    os._exit(0)
            os.close(write_end)
            chunks = []
            while True:
                chunk = os.read(read_end, 4096)
                if not chunk:
                    break
                chunks.append(chunk)
            os.close(read_end)
            os.waitpid(pid, 0)
            message = b"".join(chunks).decode()
        assert str(path) in message and "Permission denied" in message, message
    finally:
        os.chmod(tmp_path, 0o755)
    assert_old_intact(path, tmp_path)


def test_missing_directory(tmp_path):
    path = tmp_path / "no" / "such" / "m.safetensors"
    with pytest.raises(OSError) as info:
        save(path, NEW)
    assert str(path) in str(info.value) and "No such file or directory" in str(info.value)


def test_failed_rename_removes_temp(tmp_path):
    """The target is a non-empty directory: the temp file is written, rename fails."""
    path = tmp_path / "m.safetensors"
    path.mkdir()
    (path / "keep").write_text("x")
    with pytest.raises(OSError) as info:
        save(path, NEW)
    assert str(path) in str(info.value) and "rename" in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"] and os.listdir(path) == ["keep"]


def test_temp_name_taken_keeps_old_file(tmp_path):
    """Cannot create <path>.tmp.<pid> (a directory is in the way): old file untouched, and
    the directory that is not ours is not removed."""
    path = tmp_path / "m.safetensors"
    save(path, OLD)
    blocker = tmp_path / f"m.safetensors.tmp.{os.getpid()}"
    blocker.mkdir()
    with pytest.raises(OSError) as info:
        save(path, NEW)
    assert "temporary file" in str(info.value) and "Is a directory" in str(info.value)
    assert blocker.is_dir()
    blocker.rmdir()
    assert_old_intact(path, tmp_path)


def test_write_failing_midway_keeps_old_file(tmp_path):
    """A file-size limit makes write() fail with EFBIG part way through the data."""
    path = tmp_path / "m.safetensors"
    save(path, OLD)
    script = (
        "import resource, signal, sys, numpy as np\n"
        "from codext import _C\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        "try:\n"
        "    _C.safetensors_save(sys.argv[1], ['new'], [np.ones((64, 64), np.float32)], {})\n"
        "except OSError as e:\n"
        "    print('OSError:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "OSError:" in out.stdout and str(path) in out.stdout and "File too large" in out.stdout, out.stdout
    assert_old_intact(path, tmp_path)


# ---- threads and speed ----------------------------------------------------------------------------

def test_concurrent_loads(tmp_path):
    path = tmp_path / "c.safetensors"
    save(path, {"x": np.arange(1000, dtype=np.float32)})
    errors = []

    def work():
        try:
            for _ in range(20):
                assert load(path)[0]["x"][999] == 999
                with pytest.raises(OSError):
                    load(tmp_path / "missing")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_large_file_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    tensors = {f"block.{i}.weight": rng.standard_normal((512, 1024)).astype(np.float32) for i in range(4)}
    path = tmp_path / "big.safetensors"
    save(path, tensors, {"format": "pt"})
    loaded = load(path)[0]
    assert list(loaded) == list(tensors)
    for k in tensors:
        assert np.array_equal(loaded[k], tensors[k])
