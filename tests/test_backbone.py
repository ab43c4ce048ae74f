"""The C EdgeNeXt against timm (float64 fixtures from tools/make_reference.py)."""
import glob
import json
import os
import sys

import numpy as np
import pytest

import codext
from opcheck import relative_error

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
from reference_weights import gradient_sample_positions, make_weights  # noqa: E402

FIXTURES = sorted(glob.glob(os.path.join(HERE, "data", "backbone", "*.npz")))

PARAM_COUNTS = {
    "edgenext_xx_small": 1_157_880,
    "edgenext_x_small": 2_143_420,
    "edgenext_small": 5_281_224,
    "edgenext_base": 17_925_124,
    "edgenext_tiny_test": 103_050,
}


@pytest.mark.parametrize("config", sorted(PARAM_COUNTS))
def test_parameter_count_matches_timm_without_head(config):
    assert codext.Backbone(config).num_parameters() == PARAM_COUNTS[config]


def load_fixture(path):
    d = np.load(path)
    names = [str(n) for n in d["names"]]
    shapes = [tuple(s) for s in json.loads(str(d["shapes"]))]
    config = os.path.basename(path).rsplit("_", 1)[0]
    return d, names, shapes, config


def backbone_from_fixture(path):
    d, names, shapes, config = load_fixture(path)
    b = codext.Backbone(config)
    b.load_state_dict(make_weights(zip(names, shapes), int(d["seeds"][0])))
    return d, names, b


@pytest.mark.parametrize("path", FIXTURES, ids=os.path.basename)
def test_names_and_shapes_equal_timm(path):
    _, names, shapes, config = load_fixture(path)
    b = codext.Backbone(config)
    ours = b.state_dict()
    assert b.parameter_names() == names  # same order as timm's state_dict
    assert [ours[n].shape for n in names] == shapes


@pytest.mark.parametrize("path", FIXTURES, ids=os.path.basename)
def test_features_and_gradients_match_timm_float64(path):
    d, names, b = backbone_from_fixture(path)
    feats = b.forward(d["x"])
    for s in range(4):
        err = relative_error(feats[s], d[f"feat{s}"])
        assert err <= 1e-5, f"feature {s}: relative error {err:.2e}"
    dx = b.backward([d[f"cot{s}"] for s in range(4)])
    assert relative_error(dx, d["dx"]) <= 1e-4
    grads = b.grads()
    errors = []
    for n in names:
        if "grad:" + n in d.files:  # the whole gradient
            errors.append((relative_error(grads[n], d["grad:" + n]), n))
            continue
        # larger configs: fixed sampled positions and the norm of the whole gradient
        flat = grads[n].ravel().astype(np.float64)
        sample = flat[gradient_sample_positions(n, flat.size)]
        errors.append((relative_error(sample, d["gradsample:" + n]), n + " (sampled values)"))
        norm, expected = np.sqrt(np.dot(flat, flat)), np.sqrt(float(d["gradsumsq:" + n]))
        errors.append((abs(norm - expected) / expected, n + " (norm)"))
    assert len(errors) >= len(names)
    worst = max(errors)
    assert worst[0] <= 1e-4, f"worst gradient {worst[1]}: relative error {worst[0]:.2e}"


def test_results_do_not_depend_on_thread_count():
    path = [p for p in FIXTURES if "tiny" in p][0]
    d, _, b = backbone_from_fixture(path)
    runs = []
    for threads in (1, 2):
        codext.set_num_threads(threads)
        feats = b.forward(d["x"])
        dx = b.backward([d[f"cot{s}"] for s in range(4)])
        runs.append((feats, dx, b._native.grads().copy()))
    codext.set_num_threads(os.cpu_count() or 1)
    (f1, dx1, g1), (f2, dx2, g2) = runs
    for a, c in zip(f1, f2):
        assert np.array_equal(a, c)
    assert np.array_equal(dx1, dx2)
    assert np.array_equal(g1, g2)


def test_forward_accepts_non_contiguous_and_non_square():
    b = codext.Backbone("edgenext_tiny_test", seed=3)
    x = np.random.default_rng(0).standard_normal((2, 3, 96, 64)).astype(np.float32)
    ref = b.forward(x)
    strided = np.asfortranarray(x)
    assert not strided.flags.c_contiguous
    got = b.forward(strided)
    for a, c in zip(ref, got):
        assert np.array_equal(a, c)
    assert [f.shape[2:] for f in got] == [(24, 16), (12, 8), (6, 4), (3, 2)]


def test_backward_overwrites_gradients():
    b = codext.Backbone("edgenext_tiny_test", seed=1)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    feats = b.forward(x)
    cot = [np.ones_like(f) for f in feats]
    b.backward(cot)
    first = b.grads()
    b.forward(x)
    b.backward(cot)
    second = b.grads()
    for n in first:
        assert np.array_equal(first[n], second[n]), n
