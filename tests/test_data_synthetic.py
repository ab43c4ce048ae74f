"""The built-in camouflage set (csrc/data/synthetic.c)."""
import time

import numpy as np
import pytest

import codext
from codext import _C, data


def test_shapes_masks_and_coverage():
    d = data.synthetic(n_train=48, n_test=16, img_size=96, seed=3)
    assert d.train.images.shape == (48, 96, 96, 3) and d.train.images.dtype == np.uint8
    assert d.train.masks.shape == (48, 96, 96) and d.test.images.shape == (16, 96, 96, 3)
    assert len(d.train.names) == 48 and len(d.test.masks_full) == 16
    assert np.array_equal(d.test.masks_full[5], d.test.masks[5])
    assert set(np.unique(d.train.masks)) == {0, 255}
    coverage = (d.train.masks > 0).mean(axis=(1, 2))
    assert coverage.min() >= 0.04 and coverage.max() <= 0.4, coverage
    assert 0.08 < coverage.mean() < 0.3
    assert d.img_size == 96 and d.source == "synthetic" and d.test is d.tests["synthetic"]


def test_deterministic_by_seed_split_and_index():
    a = data.synthetic(6, 3, 64, seed=11)
    b = data.synthetic(6, 3, 64, seed=11)
    assert a.train.images.tobytes() == b.train.images.tobytes()
    assert a.test.masks.tobytes() == b.test.masks.tobytes()
    c = data.synthetic(2, 5, 64, seed=11)  # image i depends on (seed, split, i) only
    assert c.train.images.tobytes() == a.train.images[:2].tobytes()
    assert c.test.images[:3].tobytes() == a.test.images.tobytes()
    other = data.synthetic(6, 3, 64, seed=12)
    assert all(not np.array_equal(other.train.images[i], a.train.images[i]) for i in range(6))
    assert not np.array_equal(a.train.images[0], a.test.images[0])  # splits differ


def test_same_bytes_with_any_thread_count():
    old = codext.get_num_threads()
    try:
        codext.set_num_threads(1)
        one = _C.synthetic(5, 80, 7)
        codext.set_num_threads(2)
        two = _C.synthetic(5, 80, 7)
    finally:
        codext.set_num_threads(old)
    assert one[0].tobytes() == two[0].tobytes() and one[1].tobytes() == two[1].tobytes()


def balanced_logistic_regression(X, t, iters=20):
    """Per-pixel classifier on colour: class-balanced logistic regression (Newton steps)."""
    mu, sd = X.mean(0), X.std(0) + 1e-9
    Z = np.c_[(X - mu) / sd, np.ones(len(X))]
    weight = np.where(t > 0, 0.5 / t.mean(), 0.5 / (1 - t.mean()))
    w = np.zeros(Z.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-Z @ w))
        grad = Z.T @ (weight * (p - t))
        hess = (Z * (weight * p * (1 - p))[:, None]).T @ Z + 1e-6 * np.eye(len(w))
        w -= np.linalg.solve(hess, grad)
    return lambda X: (np.c_[(X - mu) / sd, np.ones(len(X))] @ w) > 0


def test_colour_alone_does_not_separate_objects():
    d = data.synthetic(n_train=64, n_test=32, img_size=96, seed=0)
    X = d.train.images.reshape(-1, 3).astype(np.float64) / 255
    t = (d.train.masks.reshape(-1) > 0).astype(np.float64)
    pick = np.random.default_rng(0).choice(len(X), 100_000, replace=False)
    classify = balanced_logistic_regression(X[pick], t[pick])
    pred = classify(d.test.images.reshape(-1, 3).astype(np.float64) / 255)
    truth = d.test.masks.reshape(-1) > 0
    iou = (pred & truth).sum() / (pred | truth).sum()
    # saying "object" everywhere scores the foreground fraction (~0.17): colour adds nothing
    assert iou <= 0.3, f"a colour classifier reaches IoU {iou:.3f}"


def test_object_colour_close_to_background():
    d = data.synthetic(n_train=32, n_test=0, img_size=128, seed=5)
    ratios = []
    for img, mask in zip(d.train.images.astype(np.float64), d.train.masks > 0):
        shift = np.linalg.norm(img[mask].mean(0) - img[~mask].mean(0))
        ratios.append(shift / np.linalg.norm(img[~mask].std(0)))
    # the object's mean colour typically moves less than the background varies (an
    # object covering few texture patches can land further off by chance)
    assert np.median(ratios) < 0.8 and max(ratios) < 2.0, ratios


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_train"):
        data.synthetic(-1, 2, 64)
    with pytest.raises(ValueError, match="img_size"):
        data.synthetic(2, 2, 4)
    out = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="masks"):
        _C.synthetic(2, 32, 0, images=out, masks=np.zeros((2, 32, 31), np.uint8))
    d = data.synthetic(0, 0, 32)
    assert len(d.train) == 0 and d.test.images.shape == (0, 32, 32, 3)
