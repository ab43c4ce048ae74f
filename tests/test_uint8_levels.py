"""Image values to uint8 levels are written once (codext.data.to_uint8_levels): user
arrays (as_rgb_uint8), decoded files (the data path and `codext predict`) and written
probability maps all go through it."""
import numpy as np
import pytest

from codext import _datacache, data

PIL = pytest.importorskip("PIL.Image")


def test_the_rules():
    assert data.to_uint8_levels(np.array([True, False])).tolist() == [255, 0]
    assert data.to_uint8_levels(np.array([0.0, 0.5, 1.0], np.float32)).tolist() == [0, 128, 255]
    assert data.to_uint8_levels(np.array([-3.0, 100.4, 300.0])).tolist() == [0, 100, 255]
    assert data.to_uint8_levels(np.array([0, 257, 65535, 70000], np.int64)).tolist() == [0, 1, 255, 255]
    assert data.to_uint8_levels(np.array([-5, 7, 255], np.int32)).tolist() == [0, 7, 255]
    assert data.to_uint8_levels(np.array([255, 256], np.uint16), sixteen_bit=True).tolist() == [0, 1]
    levels = np.arange(256, dtype=np.uint8)
    assert data.to_uint8_levels(levels) is levels
    with pytest.raises(ValueError, match="NaN or infinite"):
        data.to_uint8_levels(np.array([0.5, np.inf]))
    with pytest.raises(TypeError, match="must hold numbers"):
        data.to_uint8_levels(np.array(["a"]))


def test_files_and_arrays_convert_alike(tmp_path):
    rng = np.random.default_rng(2)
    deep = rng.integers(0, 65536, (6, 5)).astype(np.uint16)
    PIL.fromarray(deep).save(tmp_path / "deep.png")
    decoded = _datacache.decode_image(str(tmp_path / "deep.png"))
    assert np.array_equal(decoded, data.as_rgb_uint8(deep))            # levels above 255: top 8 bits
    assert np.array_equal(decoded[:, :, 0], (deep >> 8).astype(np.uint8))
    floats = rng.random((4, 3)).astype(np.float32)
    PIL.fromarray(floats, mode="F").save(tmp_path / "float.tiff")
    assert np.array_equal(_datacache.decode_image(str(tmp_path / "float.tiff")), data.as_rgb_uint8(floats))


def test_a_float_file_with_nan_is_an_error_not_a_picture(tmp_path):
    bad = np.zeros((3, 3), np.float32)
    bad[1, 1] = np.nan
    PIL.fromarray(bad, mode="F").save(tmp_path / "nan.tiff")
    with pytest.raises(ValueError, match="NaN or infinite"):
        _datacache.decode_image(str(tmp_path / "nan.tiff"))
