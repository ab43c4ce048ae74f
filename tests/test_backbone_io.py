"""Backbone state dicts, safetensors files and bad input."""
import os

import numpy as np
import pytest

import codext
from codext import _C


@pytest.fixture
def tiny():
    return codext.Backbone("edgenext_tiny_test", seed=0)


def test_unknown_config_names_the_known_ones():
    with pytest.raises(ValueError, match="edgenext_base"):
        codext.Backbone("edgenext_huge")
    with pytest.raises(TypeError):
        codext.Backbone(42)


def test_seed_is_deterministic_and_matters():
    a = codext.Backbone("edgenext_tiny_test", seed=5).state_dict()
    b = codext.Backbone("edgenext_tiny_test", seed=5).state_dict()
    c = codext.Backbone("edgenext_tiny_test", seed=6).state_dict()
    w = "stages.0.blocks.0.mlp.fc1.weight"
    assert np.array_equal(a[w], b[w]) and not np.array_equal(a[w], c[w])
    # timm's init: trunc-normal 0.02 weights, zero biases, layer scale 1e-6
    assert abs(a[w].std() - 0.02) < 0.004
    assert np.all(a["stages.0.blocks.0.mlp.fc1.bias"] == 0)
    assert np.allclose(a["stages.0.blocks.0.gamma"], 1e-6)


@pytest.mark.parametrize("shape, match", [
    ((1, 3, 64), "rank 4"),
    ((1, 4, 64, 64), "3 channels"),
    ((1, 3, 48, 64), "multiples of 32"),
    ((1, 3, 64, 100), "multiples of 32"),
    ((0, 3, 64, 64), "empty batch"),
])
def test_forward_rejects_bad_shapes(tiny, shape, match):
    with pytest.raises(ValueError, match=match):
        tiny.forward(np.zeros(shape, np.float32))


@pytest.mark.parametrize("dtype", [np.float64, np.uint8, np.float16, np.int32])
def test_forward_rejects_other_dtypes(tiny, dtype):
    with pytest.raises(TypeError, match="float32"):
        tiny.forward(np.zeros((1, 3, 64, 64), dtype))


def test_forward_rejects_non_arrays(tiny):
    with pytest.raises(TypeError):
        tiny.forward([[1.0]])


def test_backward_checks_its_input(tiny):
    with pytest.raises(RuntimeError, match="forward"):
        tiny._native.backward([np.zeros(1, np.float32)] * 4)
    feats = tiny.forward(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(ValueError, match="4 arrays"):
        tiny.backward(list(feats[:3]))
    bad = [np.zeros_like(f) for f in feats]
    bad[2] = np.zeros((1, 32, 5, 5), np.float32)
    with pytest.raises(ValueError, match=r"dfeatures\[2\]"):
        tiny.backward(bad)


def test_load_state_dict_reports_missing_extra_and_misshaped(tiny):
    before = tiny.state_dict()
    state = dict(before)
    del state["stem.0.weight"]
    state["head.fc.weight"] = np.zeros((10, 48), np.float32)
    state["stages.3.blocks.0.gamma"] = np.zeros(7, np.float32)
    with pytest.raises(ValueError) as info:
        tiny.load_state_dict({k: v + 1 for k, v in state.items()})
    msg = str(info.value)
    assert "missing keys: stem.0.weight" in msg
    assert "unexpected keys: head.fc.weight" in msg
    assert "stages.3.blocks.0.gamma: got (7,), expected (48,)" in msg
    after = tiny.state_dict()  # nothing was written
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_load_state_dict_non_strict(tiny):
    result = tiny.load_state_dict({"stem.0.bias": np.ones(16), "extra": np.ones(1)}, strict=False)
    assert "stem.0.weight" in result.missing_keys and result.unexpected_keys == ["extra"]
    assert np.all(tiny.state_dict()["stem.0.bias"] == 1)


def test_save_load_round_trip(tmp_path, tiny):
    path = tmp_path / "tiny.safetensors"
    tiny.save(path)
    other = codext.Backbone("edgenext_tiny_test", seed=9)
    result = other.load(path)
    assert result.ignored_keys == [] and result.missing_keys == []
    a, b = tiny.state_dict(), other.state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    tensors, metadata, dtypes = _C.safetensors_load(str(path))
    assert metadata["codext_backbone"] == "edgenext_tiny_test"
    assert set(dtypes.values()) == {"F32"}


def test_load_timm_style_file_ignores_head(tmp_path, tiny):
    """A timm model.safetensors carries head.* and may be F16: both handled."""
    state = tiny.state_dict()
    names = list(state) + ["head.norm.weight", "head.fc.weight", "head.fc.bias"]
    arrays = list(state.values()) + [np.ones(48, np.float32), np.ones((5, 48), np.float32),
                                     np.zeros(5, np.float32)]
    path = tmp_path / "model.safetensors"
    _C.safetensors_save(str(path), names, arrays, {"format": "pt"})
    other = codext.Backbone("edgenext_tiny_test", seed=2)
    result = other.load(path)
    assert result.ignored_keys == ["head.fc.bias", "head.fc.weight", "head.norm.weight"]
    assert np.array_equal(other.state_dict()["stem.0.weight"], state["stem.0.weight"])


def test_load_from_wrong_config_names_the_file(tmp_path, tiny):
    path = tmp_path / "xx.safetensors"
    codext.Backbone("edgenext_xx_small").save(path)
    with pytest.raises(ValueError, match="xx.safetensors.*mis-shaped"):
        tiny.load(path)


def test_load_missing_or_truncated_file(tmp_path, tiny):
    with pytest.raises(OSError, match="nope.safetensors"):
        tiny.load(tmp_path / "nope.safetensors")
    path = tmp_path / "cut.safetensors"
    tiny.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="cut.safetensors"):
        tiny.load(path)
