"""Deterministic prediction/GT pairs for the metric tests and for
tools/make_metrics_reference.py (which stores PySODMetrics' outputs on them).

The inputs must come out bit-identical under any NumPy version, because the fixture
holds only the oracle's outputs and the test regenerates the inputs. So the generators
use a counter-based integer PRNG of their own (SplitMix64 on uint64 arrays) instead of
np.random, and only exact arithmetic (integers; float +, -, *, / which IEEE rounds
correctly) -- no exp, sin or sqrt, whose last bit may differ between NumPy builds.
Each case carries a CRC of its bytes so the test can tell a generator drift from a
metric error.

    >>> cases = make_cases()
    >>> len(cases) >= 300
    True
    >>> name, pred, gt = cases[0]
"""
import zlib

import numpy as np

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _bits(seed, n):
    """n pseudo-random uint64 values for this seed (SplitMix64 of seed * 2^32 + i)."""
    with np.errstate(over="ignore"):
        z = (np.arange(n, dtype=np.uint64) + np.uint64((seed * 4294967296) & 0xFFFFFFFFFFFFFFFF)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uniform(seed, shape):
    """float64 in [0, 1), exact multiples of 2^-53."""
    n = int(np.prod(shape))
    return ((_bits(seed, n) >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)).reshape(shape)


def integers(seed, high, shape):
    """int64 in [0, high)."""
    n = int(np.prod(shape))
    return (_bits(seed, n) % np.uint64(high)).astype(np.int64).reshape(shape)


def _grid(h, w):
    return np.arange(h, dtype=np.int64)[:, None], np.arange(w, dtype=np.int64)[None, :]


def _ellipse(h, w, cy2, cx2, ry2, rx2):
    """Boolean ellipse with centre (cy2/2, cx2/2) and radii (ry2/2, rx2/2), in integers."""
    y, x = _grid(h, w)
    dy, dx = 2 * y - cy2, 2 * x - cx2
    return dy * dy * rx2 * rx2 + dx * dx * ry2 * ry2 <= ry2 * ry2 * rx2 * rx2


# ---- ground truths (bool masks; some are written as grey levels, see _gt_bytes) --------

def gt_mask(kind, h, w, seed):
    y, x = _grid(h, w)
    if kind == "empty":
        return np.zeros((h, w), bool)
    if kind == "full":
        return np.ones((h, w), bool)
    if kind == "pixel_center":
        m = np.zeros((h, w), bool)
        m[h // 2, w // 2] = True
        return m
    if kind == "pixel_corner":  # centroid on the last row and column: empty quadrants
        m = np.zeros((h, w), bool)
        m[h - 1, w - 1] = True
        return m
    if kind == "pixel_random":
        m = np.zeros((h, w), bool)
        r = integers(seed, h * w, (1,))[0]
        m[r // w, r % w] = True
        return m
    if kind == "ellipse":
        r = integers(seed, 1000, (4,))
        return _ellipse(h, w, int(r[0] % (2 * h)), int(r[1] % (2 * w)), 1 + int(r[2] % max(h, 1)), 1 + int(r[3] % max(w, 1)))
    if kind == "blobs":
        m = np.zeros((h, w), bool)
        r = integers(seed, 1000, (12,))
        for k in range(3):
            m |= _ellipse(h, w, int(r[4 * k] % (2 * h)), int(r[4 * k + 1] % (2 * w)),
                          1 + int(r[4 * k + 2] % max(h // 2, 1)), 1 + int(r[4 * k + 3] % max(w // 2, 1)))
        return m
    if kind == "thin":  # one-pixel lines: a row, a column and a diagonal
        m = np.zeros((h, w), bool)
        r = integers(seed, 1000, (2,))
        m[int(r[0] % h), :] = True
        m[:, int(r[1] % w)] = True
        m |= (y == x)
        return m & (integers(seed + 1, 5, (h, w)) > 0) if h * w > 16 else m
    if kind == "noise":
        return uniform(seed, (h, w)) < 0.3
    if kind == "checker":
        return ((y // 2 + x // 3) % 2) == 0
    if kind == "bottom_right":  # object hugging the bottom-right corner
        return (y >= (2 * h) // 3) & (x >= (2 * w) // 3)
    raise ValueError(kind)


GT_KINDS = ["empty", "full", "pixel_center", "pixel_corner", "pixel_random", "ellipse", "blobs",
            "thin", "noise", "checker", "bottom_right"]


def _gt_bytes(mask, seed):
    """uint8 GT: mostly 0/255, sometimes grey levels around the > 128 cut."""
    style = seed % 4
    if style == 0:
        fg, bg = np.uint8(255), np.uint8(0)
        return np.where(mask, fg, bg)
    if style == 1:
        return np.where(mask, np.uint8(129), np.uint8(128))
    levels = integers(seed + 7, 256, mask.shape)
    return np.where(mask, 129 + levels % 127, levels % 129).astype(np.uint8)


# ---- predictions ------------------------------------------------------------------

def _smooth(mask, seed):
    """A soft map in [0, 1] from the mask: 1 inside, a rational falloff outside,
    plus a gentle ramp (exact arithmetic only)."""
    h, w = mask.shape
    y, x = _grid(h, w)
    r = integers(seed, 1000, (2,))
    cy, cx = int(r[0] % h), int(r[1] % w)
    d2 = ((y - cy) ** 2 + (x - cx) ** 2).astype(np.float64)
    falloff = 1.0 / (1.0 + d2 / (1.0 + 0.25 * max(h, w)))
    return np.clip(0.6 * mask + 0.4 * falloff + 0.05 * (x / max(w, 1)), 0.0, 1.0)


def pred_map(kind, mask, seed):
    """Returns the prediction (uint8, float32 or float64) for a mask."""
    h, w = mask.shape
    noise = uniform(seed, (h, w))
    m = mask.astype(np.float64)
    if kind == "u8_zeros":
        return np.zeros((h, w), np.uint8)
    if kind == "u8_const":
        return np.full((h, w), 77 + seed % 100, np.uint8)
    if kind == "u8_full":
        return np.full((h, w), 255, np.uint8)
    if kind == "u8_copy":
        return (mask * 255).astype(np.uint8)
    if kind == "u8_inverse":
        return ((~mask) * 255).astype(np.uint8)
    if kind == "u8_noise":
        return integers(seed, 256, (h, w)).astype(np.uint8)
    if kind == "u8_gt_noise":
        return (m * 180 + noise * 75).astype(np.uint8)
    if kind == "u8_smooth":
        return (_smooth(mask, seed) * 255).astype(np.uint8)
    if kind == "u8_levels":  # few grey levels: ties at thresholds
        return (integers(seed, 5, (h, w)) * 60 + m * 15).astype(np.uint8)
    if kind == "u8_shifted":
        return (np.roll(mask, (1 + seed % 3, -(seed % 4)), axis=(0, 1)) * 230 + 10).astype(np.uint8)
    if kind == "f64_smooth":
        return _smooth(mask, seed)
    if kind == "f32_smooth":
        return _smooth(mask, seed).astype(np.float32)
    if kind == "f64_noise":
        return noise
    if kind == "f32_gt_noise":
        return (0.7 * m + 0.3 * noise).astype(np.float32)
    if kind == "f64_const":
        return np.full((h, w), 0.5)
    if kind == "f64_zeros":
        return np.zeros((h, w))
    if kind == "f64_binary":
        return np.where(noise < 0.1, 1.0 - m, m)
    if kind == "f64_eighths":  # multiples of 1/8: 2*mean can equal a level exactly
        return integers(seed, 9, (h, w)) / 8.0
    if kind in ("u8_tie", "f64_tie"):
        return _tie_map(h, w, seed, kind == "u8_tie")
    raise ValueError(kind)


def _tie_map(h, w, seed, as_uint8):
    """Levels {0, v, 1} (one pixel at 1) whose exact mean is v / 2, so that the adaptive
    threshold 2 * mean(pred) lands on v up to rounding: which side the v pixels fall on
    depends on the summation order. v = 0.2 (51 / 255) for an even pixel count, 0.4
    (102 / 255) for an odd one. Tiny images get a plain 0/1 map."""
    n = h * w
    if n < 12:
        return ((integers(seed, 2, (h, w)) * 255).astype(np.uint8) if as_uint8
                else integers(seed, 2, (h, w)).astype(np.float64))
    level, n_level = (51, (n - 10) // 2) if n % 2 == 0 else (102, (n - 5) // 2)
    flat = np.zeros(n, np.int64)
    order = np.argsort(uniform(seed, (n,)), kind="stable")
    flat[order[:n_level]] = level
    flat[order[n_level]] = 255
    flat = flat.reshape(h, w)
    return flat.astype(np.uint8) if as_uint8 else flat / 255.0


PRED_KINDS = ["u8_zeros", "u8_const", "u8_full", "u8_copy", "u8_inverse", "u8_noise", "u8_gt_noise",
              "u8_smooth", "u8_levels", "u8_shifted", "f64_smooth", "f32_smooth", "f64_noise",
              "f32_gt_noise", "f64_const", "f64_zeros", "f64_binary", "f64_eighths", "u8_tie", "f64_tie"]

SIZES = [(16, 16), (17, 31), (31, 17), (24, 40), (40, 24), (33, 33), (48, 64), (64, 48), (63, 65),
         (96, 80), (57, 100), (8, 8), (5, 7), (7, 5), (12, 9), (100, 130), (91, 97)]
TINY_SIZES = [(1, 1), (1, 2), (2, 1), (2, 3), (3, 2), (3, 3), (1, 7), (4, 1)]


def make_cases():
    """[(name, pred, gt)]: every GT kind with every prediction kind at a rotating size,
    a second round at other sizes and seeds, and tiny images."""
    cases = []
    index = 0
    for round_ in range(2):
        for g, gt_kind in enumerate(GT_KINDS):
            for p, pred_kind in enumerate(PRED_KINDS):
                if round_ == 1 and (g + p) % 2 == 1:
                    continue
                h, w = SIZES[(g * 7 + p * 3 + round_ * 5) % len(SIZES)]
                seed = 1000 * round_ + 37 * g + p
                mask = gt_mask(gt_kind, h, w, seed)
                cases.append((f"{gt_kind}/{pred_kind}/{h}x{w}/s{seed}", pred_map(pred_kind, mask, seed),
                              _gt_bytes(mask, seed)))
                index += 1
    tiny_gts = ["empty", "full", "pixel_center", "pixel_corner", "noise", "checker"]
    tiny_preds = ["u8_noise", "u8_const", "u8_copy", "f64_noise", "f32_smooth", "f64_eighths"]
    for t, (h, w) in enumerate(TINY_SIZES):
        for g, gt_kind in enumerate(tiny_gts):
            pred_kind = tiny_preds[(t + g) % len(tiny_preds)]
            seed = 5000 + 11 * t + g
            mask = gt_mask(gt_kind, h, w, seed)
            cases.append((f"tiny/{gt_kind}/{pred_kind}/{h}x{w}/s{seed}", pred_map(pred_kind, mask, seed),
                          _gt_bytes(mask, seed)))
    return cases


def case_crc(pred, gt):
    """CRC32 of dtype, shape and bytes of a case."""
    crc = zlib.crc32(f"{pred.dtype.str}{pred.shape}".encode())
    crc = zlib.crc32(np.ascontiguousarray(pred).tobytes(), crc)
    return zlib.crc32(np.ascontiguousarray(gt).tobytes(), crc)


def synthetic_pair(h, w, seed):
    """A 512x384-style benchmark pair: blobs GT (0/255) and a uint8 prediction made of a
    soft version of the GT plus noise."""
    mask = gt_mask("blobs", h, w, seed)
    pred = (np.clip(0.75 * _smooth(mask, seed) + 0.25 * uniform(seed + 1, (h, w)), 0, 1) * 255).astype(np.uint8)
    return pred, np.where(mask, np.uint8(255), np.uint8(0))
