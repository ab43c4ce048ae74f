"""Our safetensors reader and writer (csrc/io/) against the `safetensors` package
(safetensors.numpy), both ways: files it writes (every dtype we read, 0-d and empty
tensors, metadata) load in ours with the same values; files ours writes (with the
checksum metadata) load in it with the same values and metadata.

Deliberate differences, tested here: we refuse more than 8 dims in a shape (CX_ST_MAX_DIMS;
the package has no limit), and we read only float dtypes (F32, F16, BF16, F64 as float32;
other dtypes fail naming the tensor). BF16 cannot be written through NumPy without
ml_dtypes; it is covered by tests/data/safetensors/torch_mixed (written by PyTorch).
"""
import json
import struct

import numpy as np
import pytest
import safetensors.numpy as st_numpy  # a test dependency (CI installs it): no silent skip

from codext import _C


def bits32(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def theirs_tensors(rng):
    special = np.array([np.inf, -np.inf, np.nan, -0.0, 0.0, 1e-45, 3.4028235e38], np.float32)
    return {
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "f32_special": special,
        "f16": rng.standard_normal((5,)).astype(np.float16),
        "f16_all": np.arange(65536, dtype=np.uint16).view(np.float16).reshape(256, 256),
        "f64": np.concatenate([rng.standard_normal(6) * 1e3, [1e39, -1e-46, np.inf, np.nan]]),
        "scalar32": np.array(2.5, np.float32),
        "scalar64": np.array(-1.25, np.float64),
        "scalar16": np.array(0.5, np.float16),
        "empty32": np.zeros((0,), np.float32),
        "empty16": np.zeros((3, 0, 2), np.float16),
        "empty64": np.zeros((0, 7), np.float64),
        "eight_dims": rng.standard_normal((1, 2, 1, 2, 1, 2, 1, 2)).astype(np.float32),
        "caf\u00e9 \"q\" \\": np.ones(3, np.float32),
    }


def test_files_written_by_the_package_load_in_ours(tmp_path):
    rng = np.random.default_rng(21)
    tensors = theirs_tensors(rng)
    metadata = {"format": "np", "unicode": "\u2713 \U0001F600", "esc": "\"\\\n\t", "": ""}
    path = str(tmp_path / "theirs.safetensors")
    st_numpy.save_file(tensors, path, metadata=metadata)
    ours, meta, dtypes = _C.safetensors_load(path)
    assert meta == metadata
    assert sorted(ours) == sorted(tensors)
    expected_dtype = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.float64): "F64"}
    for name, array in tensors.items():
        assert dtypes[name] == expected_dtype[array.dtype], name
        assert ours[name].dtype == np.float32 and ours[name].shape == array.shape, name
        with np.errstate(over="ignore"):
            want = array.astype(np.float32)
        assert np.array_equal(bits32(ours[name]), bits32(want)), name


def test_other_dtypes_from_the_package_name_the_tensor(tmp_path):
    for dtype, code in [(np.int64, "I64"), (np.int32, "I32"), (np.int16, "I16"), (np.int8, "I8"),
                        (np.uint8, "U8"), (np.bool_, "BOOL")]:
        path = str(tmp_path / f"{code}.safetensors")
        st_numpy.save_file({"ok": np.ones(2, np.float32), "odd": np.ones((2, 3), dtype)}, path)
        with pytest.raises(OSError, match=f"'odd' has dtype {code}"):
            _C.safetensors_load(path)


def test_shape_cap_is_ours(tmp_path):
    path = str(tmp_path / "nine.safetensors")
    nine = np.ones((1,) * 8 + (2,), np.float32)
    st_numpy.save_file({"nine": nine}, path)
    assert st_numpy.load_file(path)["nine"].shape == nine.shape
    with pytest.raises(OSError, match="'nine': shape has 9 dims, at most 8"):
        _C.safetensors_load(path)


def test_files_written_by_ours_load_in_the_package(tmp_path):
    rng = np.random.default_rng(22)
    with np.errstate(over="ignore"):
        tensors = {k: v.astype(np.float32) for k, v in theirs_tensors(rng).items() if k != "f16_all"}
    metadata = {"format": "pt", "step": "12", "unicode": "\u2713 \U0001F600", "esc": "\"\\\n\t\x01", "": ""}
    path = str(tmp_path / "ours.safetensors")
    _C.safetensors_save(path, list(tensors), list(tensors.values()), metadata)
    loaded = st_numpy.load_file(path)
    assert sorted(loaded) == sorted(tensors)
    for name, array in tensors.items():
        assert loaded[name].dtype == np.float32 and loaded[name].shape == array.shape, name
        assert np.array_equal(bits32(loaded[name]), bits32(array)), name
    with open(path, "rb") as f:  # the package's view of the metadata: ours plus the checksums
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    their_meta = header["__metadata__"]
    assert {k: v for k, v in their_meta.items() if k != "codext_crc32c"} == metadata
    assert sorted(json.loads(their_meta["codext_crc32c"])) == sorted(tensors)
    # Round trip through the package (which drops nothing it reads) back into ours.
    again = str(tmp_path / "again.safetensors")
    st_numpy.save_file(loaded, again, metadata=their_meta)
    back, meta, _ = _C.safetensors_load(again)
    assert meta == metadata  # the checksums still match: the package copied the bytes
    for name, array in tensors.items():
        assert np.array_equal(bits32(back[name]), bits32(array)), name


def test_empty_file_both_ways(tmp_path):
    theirs = str(tmp_path / "theirs.safetensors")
    st_numpy.save_file({}, theirs)
    assert _C.safetensors_load(theirs) == ({}, {}, {})
    ours = str(tmp_path / "ours.safetensors")
    _C.safetensors_save(ours, [], [], {})
    assert st_numpy.load_file(ours) == {}
