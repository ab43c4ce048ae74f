"""Augmentation in C (csrc/data/augment.c): a float64 NumPy reference of the whole
pipeline, determinism (batch composition, threads), and the no-augmentation path."""
import math

import numpy as np
import pytest

import codext
from codext import _C, data
from testing_module import testing

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def make_data(n=6, h=40, w=56, seed=0):
    rng = np.random.default_rng(seed)
    # smooth-ish images so bilinear differences stay small, plus blob masks
    base = rng.integers(0, 256, (n, h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    images = np.stack([_C.resize_image(b, h, w) for b in base])
    yy, xx = np.mgrid[0:h, 0:w]
    masks = np.stack([(((yy - h * rng.random()) ** 2 + (xx - w * rng.random()) ** 2) < (0.3 * h) ** 2)
                      * np.uint8(255) for _ in range(n)]).astype(np.uint8)
    return images, masks


def reference(img, mask, p):
    """float64 version of augment.c for one sample with transform p."""
    h, w = mask.shape
    oy, ox = np.mgrid[0:h, 0:w] + 0.5
    cx, cy = w / 2, h / 2
    ca, sa = math.cos(p["angle"]), math.sin(p["angle"])
    qx = ca * (ox - cx) + sa * (oy - cy) + cx + p["offset_x"]
    qy = -sa * (ox - cx) + ca * (oy - cy) + cy + p["offset_y"]
    rx, ry = qx / p["scale"], qy / p["scale"]
    if p["flip"]:
        rx = w - rx
    inside = (rx >= 0) & (rx < w) & (ry >= 0) & (ry < h)
    mx = np.clip(np.floor(rx), 0, w - 1).astype(int)
    my = np.clip(np.floor(ry), 0, h - 1).astype(int)
    y = np.where(inside, mask[my, mx] >= 128, 0).astype(np.float64)
    sx, sy = np.clip(rx - 0.5, 0, w - 1), np.clip(ry - 0.5, 0, h - 1)
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    a = img.astype(np.float64)
    v = (a[y0, x0] * (1 - fx) + a[y0, x1] * fx) * (1 - fy) + (a[y1, x0] * (1 - fx) + a[y1, x1] * fx) * fy
    b, c, s = p["brightness"], p["contrast"], p["saturation"]
    grey_mean = (img.astype(np.int64) @ np.array([299, 587, 114])).sum() / 1000 / (h * w) * b
    v = np.clip(v * b, 0, 255)
    v = np.clip((v - grey_mean) * c + grey_mean, 0, 255)
    g = (v @ np.array([0.299, 0.587, 0.114]))[..., None]
    v = np.clip(g + (v - g) * s, 0, 255)
    x = np.where(inside[..., None], (v / 255 - MEAN) / STD, 0.0)
    # pixels whose source position lies within float32 noise of a decision boundary
    eps = 1e-3
    fragile = ((np.abs(rx) < eps) | (np.abs(rx - w) < eps) | (np.abs(ry) < eps) | (np.abs(ry - h) < eps)
               | (np.abs(rx - np.rint(rx)) < eps) | (np.abs(ry - np.rint(ry)) < eps))
    return x.transpose(2, 0, 1), y, fragile


@pytest.mark.parametrize("hw", [(40, 56), (33, 33), (17, 64)])
def test_matches_float64_reference(hw):
    images, masks = make_data(n=5, h=hw[0], w=hw[1], seed=hw[0])
    indices = np.array([4, 0, 2, 2, 3])
    seed, epoch = 7, 3
    x, y = data.augment_batch(images, masks, indices, seed=seed, epoch=epoch)
    assert x.dtype == np.float32 and x.shape == (5, 3, *hw)
    assert y.dtype == np.float32 and y.shape == (5, 1, *hw)
    for b, i in enumerate(indices):
        p = testing.augment_params(seed, epoch, int(i), *hw)
        ref_x, ref_y, fragile = reference(images[i], masks[i], p)
        ok = ~fragile
        np.testing.assert_allclose(x[b][:, ok], ref_x[:, ok], rtol=0, atol=2e-3)
        assert np.array_equal(y[b, 0][ok], ref_y[ok])
        assert fragile.mean() < 0.05


def test_no_augmentation_is_plain_normalisation():
    images, masks = make_data()
    x, y = data.augment_batch(images, masks, [1, 3], train=False)
    ref = (images[[1, 3]].astype(np.float64) / 255 - MEAN) / STD
    np.testing.assert_allclose(x, ref.transpose(0, 3, 1, 2), rtol=0, atol=1e-5)
    assert np.array_equal(y[:, 0], (masks[[1, 3]] >= 128).astype(np.float32))


def test_identity_ranges_give_plain_path_and_flip():
    images, masks = make_data()
    ident = dict(scale_min=1, scale_max=1, rotate_deg=0, brightness=0, contrast=0, saturation=0)
    plain_x, plain_y = data.augment_batch(images, masks, range(6), train=False)
    x, y = data.augment_batch(images, masks, range(6), flip_prob=0, **ident)
    np.testing.assert_allclose(x, plain_x, rtol=0, atol=1e-5)
    assert np.array_equal(y, plain_y)
    x, y = data.augment_batch(images, masks, range(6), flip_prob=1, **ident)
    np.testing.assert_allclose(x, plain_x[..., ::-1], rtol=0, atol=1e-5)
    assert np.array_equal(y, plain_y[..., ::-1])


def test_padding_fill_is_mean_colour_and_background():
    images = np.full((1, 32, 32, 3), 255, np.uint8)
    masks = np.full((1, 32, 32), 255, np.uint8)
    x, y = data.augment_batch(images, masks, [0], scale_min=0.5, scale_max=0.5, rotate_deg=0,
                              brightness=0, contrast=0, saturation=0)
    covered = y[0, 0] == 1
    assert 0.2 < covered.mean() < 0.3  # a 16x16 image inside the 32x32 frame
    assert np.all(x[0][:, ~covered] == 0)
    assert np.allclose(x[0][:, covered], ((1 - MEAN) / STD)[:, None], atol=1e-5)


def test_deterministic_whatever_the_batch_and_threads():
    images, masks = make_data(n=8)
    old = codext.get_num_threads()
    try:
        codext.set_num_threads(1)
        x1, y1 = data.augment_batch(images, masks, [5, 2, 7, 0], seed=3, epoch=1)
        codext.set_num_threads(2)
        x2, y2 = data.augment_batch(images, masks, [5, 2, 7, 0], seed=3, epoch=1)
        x3, y3 = data.augment_batch(images, masks, [7], seed=3, epoch=1)
        x4, y4 = data.augment_batch(images, masks, [0, 1, 2, 3, 4, 5, 6, 7] * 3, seed=3, epoch=1)
    finally:
        codext.set_num_threads(old)
    assert x1.tobytes() == x2.tobytes() and y1.tobytes() == y2.tobytes()
    assert x3[0].tobytes() == x1[2].tobytes() and y3[0].tobytes() == y1[2].tobytes()
    assert x4[7].tobytes() == x1[2].tobytes() and x4[15].tobytes() == x1[2].tobytes()
    x5, _ = data.augment_batch(images, masks, [5, 2, 7, 0], seed=3, epoch=2)
    x6, _ = data.augment_batch(images, masks, [5, 2, 7, 0], seed=4, epoch=1)
    for b in range(4):
        assert x5[b].tobytes() != x1[b].tobytes() and x6[b].tobytes() != x1[b].tobytes()


def test_parameter_ranges():
    ps = [testing.augment_params(11, 2, i, 352, 352) for i in range(400)]
    flips = np.mean([p["flip"] for p in ps])
    assert 0.4 < flips < 0.6
    scales = np.array([p["scale"] for p in ps])
    assert scales.min() >= 0.75 and scales.max() <= 1.25 and scales.std() > 0.1
    angles = np.degrees([p["angle"] for p in ps])
    assert np.abs(angles).max() <= 15 and angles.std() > 6
    for key in ("brightness", "contrast", "saturation"):
        v = np.array([p[key] for p in ps])
        assert v.min() >= 0.8 and v.max() <= 1.2
    for p in ps:  # crop or pad origin within the scaled image
        lo, hi = sorted((0, (p["scale"] - 1) * 352))
        assert lo - 1e-3 <= p["offset_x"] <= hi + 1e-3 and lo - 1e-3 <= p["offset_y"] <= hi + 1e-3


def test_without_masks_and_empty_batch():
    images, masks = make_data(n=3)
    x, y = data.augment_batch(images, None, [0, 2])
    assert y is None and x.shape == (2, 3, 40, 56)
    xm, _ = data.augment_batch(images, masks, [0, 2])
    assert x.tobytes() == xm.tobytes()
    x, y = data.augment_batch(images, masks, np.zeros(0, np.int64))
    assert x.shape == (0, 3, 40, 56) and y.shape == (0, 1, 40, 56)


def test_split_batch_wrapper():
    d = data.synthetic(4, 2, 32, seed=1)
    x, y = d.train.batch([3, 1], seed=5, epoch=2)
    x2, y2 = data.augment_batch(d.train.images, d.train.masks, [3, 1], seed=5, epoch=2)
    assert x.tobytes() == x2.tobytes() and y.tobytes() == y2.tobytes()


def test_bad_input():
    images, masks = make_data(n=3)
    with pytest.raises(ValueError, match="outside"):
        data.augment_batch(images, masks, [0, 3])
    with pytest.raises(ValueError, match="outside"):
        data.augment_batch(images, masks, [-1])
    with pytest.raises(TypeError, match="integers"):
        data.augment_batch(images, masks, [0.5])
    with pytest.raises(TypeError, match="uint8"):
        data.augment_batch(images.astype(np.float32), masks, [0])
    with pytest.raises(ValueError, match="does not match"):
        data.augment_batch(images, masks[:, :-1], [0])
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        data.augment_batch(images[..., :2].copy(), masks, [0])
    with pytest.raises(TypeError, match="unknown augmentation"):
        data.augment_batch(images, masks, [0], rotation=3)
    with pytest.raises(ValueError, match="scale_min"):
        data.augment_batch(images, masks, [0], scale_min=0)


def test_image_and_mask_move_together():
    """Red inside the mask, blue outside: after any transform (no jitter) y marks the red."""
    _, masks = make_data(n=6, h=48, w=48, seed=5)
    images = np.zeros((6, 48, 48, 3), np.uint8)
    images[..., 0] = masks
    images[..., 2] = 255 - masks
    x, y = data.augment_batch(images, masks, range(6), seed=9, brightness=0, contrast=0,
                              saturation=0, flip_prob=0.5, rotate_deg=15)
    red = x[:, 0] * STD[0] + MEAN[0]
    blue = x[:, 2] * STD[2] + MEAN[2]
    fg, bg = y[:, 0] == 1, (y[:, 0] == 0) & (x[:, 0] != 0)
    assert fg.sum() > 100 and bg.sum() > 100
    assert np.mean(red[fg] > blue[fg]) > 0.97 and np.mean(blue[bg] > red[bg]) > 0.97
