"""The structure loss op (csrc/cpu/loss.c) against NumPy float64, by finite differences,
and across thread counts."""
import numpy as np
import pytest

import codext
from opcheck import gradcheck, relative_error, run, run_backward

SHAPES = [(2, 1, 16, 16), (3, 1, 17, 23), (1, 1, 5, 7), (2, 1, 40, 33), (1, 1, 70, 70)]


def box31(y):
    """avgpool 31x31, stride 1, padding 15, count_include_pad: zero-padded box sum / 961."""
    n, _, h, w = y.shape
    padded = np.zeros((n, h + 31, w + 31))
    padded[:, 16:16 + h, 16:16 + w] = y[:, 0]
    s = padded.cumsum(1).cumsum(2)
    box = s[:, 31:, 31:] - s[:, :-31, 31:] - s[:, 31:, :-31] + s[:, :-31, :-31]
    return box[:, None] / 961.0


def reference(x, y):
    """-> loss [B], sums [B, 4], dloss/dlogits for dloss = 1 per image (float64)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    w = 1 + 5 * np.abs(box31(y) - y)
    p = 1 / (1 + np.exp(-x))
    bce = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
    axes = (1, 2, 3)
    sw, sb = w.sum(axes), (w * bce).sum(axes)
    inter, union = (w * p * y).sum(axes), (w * (p + y)).sum(axes)
    loss = sb / sw + 1 - (inter + 1) / (union - inter + 1)
    num, den = (inter + 1)[:, None, None, None], (union - inter + 1)[:, None, None, None]
    grad = w * ((p - y) / sw[:, None, None, None] + p * (1 - p) * (num - y * (den + num)) / den ** 2)
    return loss, np.stack([sw, sb, inter, union], 1), grad


def sample(shape, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    x = (scale * rng.standard_normal(shape)).astype(np.float32)
    yy, xx = np.mgrid[:shape[2], :shape[3]]
    y = np.zeros(shape, np.float32)
    for b in range(shape[0]):  # an ellipse per image, so the weight map has structure
        cy, cx = rng.uniform(0, shape[2]), rng.uniform(0, shape[3])
        ry, rx = rng.uniform(1, shape[2] / 2 + 1), rng.uniform(1, shape[3] / 2 + 1)
        y[b, 0] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return x, y


def saved_sums(x, y):
    """The per-image sums [B, 4] at the end of the op's saved state (after the weight map)."""
    _, saved = run("structure_loss", [x, y], saved=True)
    batch, plane = x.shape[0], x.shape[2] * x.shape[3]
    assert saved.shape == (batch * (plane + 4),)
    return saved[batch * plane:].reshape(batch, 4)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_and_sums_match_numpy(shape):
    x, y = sample(shape)
    ref_loss, ref_sums, _ = reference(x, y)
    (loss,) = run("structure_loss", [x, y])
    sums = saved_sums(x, y)
    assert loss.shape == (shape[0],) and sums.shape == (shape[0], 4)
    assert relative_error(loss, ref_loss) <= 1e-6
    assert relative_error(sums, ref_sums) <= 1e-6


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_backward_matches_numpy(shape):
    x, y = sample(shape, seed=1)
    dloss = np.random.default_rng(2).standard_normal(shape[0]).astype(np.float32)
    _, _, grad = reference(x, y)
    dx, dy = run_backward("structure_loss", [x, y], [dloss])
    assert relative_error(dx, grad * dloss[:, None, None, None]) <= 1e-6
    assert not dy.any()  # the target gets no gradient


def test_extreme_logits_stay_finite():
    x, y = sample((2, 1, 12, 12), seed=3, scale=60.0)
    ref_loss, _, grad = reference(x, y)
    (loss,) = run("structure_loss", [x, y])
    (dx, _) = run_backward("structure_loss", [x, y], [np.ones(2, np.float32)])
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(dx))
    assert relative_error(loss, ref_loss) <= 1e-6
    assert relative_error(dx, grad) <= 1e-6


def test_bce_weighting_matters():
    """The weighted BCE is sum(w bce) / sum(w), not the plain mean the copied code uses."""
    x, y = sample((1, 1, 32, 32), seed=4)
    (loss,) = run("structure_loss", [x, y])
    xd, yd = x.astype(np.float64), y.astype(np.float64)
    p = 1 / (1 + np.exp(-xd))
    w = 1 + 5 * np.abs(box31(yd) - yd)
    plain = (np.maximum(xd, 0) - xd * yd + np.log1p(np.exp(-np.abs(xd)))).mean()
    iou = 1 - ((w * p * yd).sum() + 1) / ((w * (p + yd)).sum() - (w * p * yd).sum() + 1)
    assert abs(loss[0] - (plain + iou)) > 1e-3


@pytest.mark.parametrize("shape", [(2, 1, 4, 5), (1, 1, 6, 7), (2, 1, 9, 11)], ids=str)
def test_gradcheck(shape):
    """The loss is a weighted mean over the plane, so one logit moves it by ~1/(h w) of
    its size while its float32 value carries ~1e-7 rounding: small planes keep the finite
    differences well above that noise (and h = 0.05 shrinks it further; the Richardson
    step keeps the truncation error small for these smooth functions)."""
    x, y = sample(shape, seed=5, scale=1.0)
    gradcheck("structure_loss", [x, y], wrt=[0], h=0.05)


def test_bit_identical_across_thread_counts():
    x, y = sample((3, 1, 70, 70), seed=6)  # several chunks per image
    dloss = np.array([0.5, -1.0, 2.0], np.float32)
    before = codext.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            codext.set_num_threads(threads)
            results.append(run("structure_loss", [x, y]) + [saved_sums(x, y)] +
                           run_backward("structure_loss", [x, y], [dloss]))
    finally:
        codext.set_num_threads(before)
    for a, b in zip(*results):
        assert np.array_equal(a, b)


def test_bad_shapes_raise():
    x, y = sample((2, 1, 8, 8))
    with pytest.raises(ValueError, match="shape of logits"):
        run("structure_loss", [x, y[:1]])
    with pytest.raises(ValueError, match="B,1,H,W"):
        run("structure_loss", [np.zeros((2, 2, 8, 8), np.float32), np.zeros((2, 2, 8, 8), np.float32)])
