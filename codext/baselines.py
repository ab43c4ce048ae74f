"""What a trained model is measured against: two trivial baselines and a picture of its output.

    >>> import numpy as np
    >>> from codext import baselines
    >>> gt = np.zeros((8, 8), np.uint8); gt[2:6, 2:6] = 255
    >>> float(baselines.all_foreground((8, 8)).min()), bool(baselines.centred_gaussian((8, 8)).max() < 1)
    (1.0, True)
    >>> scores = baselines.baseline_metrics([gt])
    >>> round(scores["all foreground"]["iou"], 4)     # 16 of 64 pixels are foreground
    0.25

A model that has learned something beats both baselines on S-measure, MAE and IoU:

- **all foreground**: probability 1 everywhere. Its IoU is the foreground fraction of
  each GT, its MAE one minus that fraction.
- **centred Gaussian blob**: exp(-(dy^2 + dx^2) / 2) with dy = (y - (h-1)/2) / (h/4) and
  dx = (x - (w-1)/2) / (w/4): the position prior (objects tend to sit near the middle), the
  same fixed map for every image, drawn at each GT's size.

Both are scored by codext.metrics.evaluate at each GT's own size. end_of_run_report() puts
them beside a run's result and writes a PNG grid (image | ground truth | prediction) of
a few test images; write_png() writes that PNG with zlib alone (no Pillow needed).
"""
import os
import struct
import zlib

import numpy as np

from . import metrics as _metrics

__all__ = ["all_foreground", "centred_gaussian", "BASELINES", "baseline_metrics",
           "prediction_grid", "write_png", "end_of_run_report", "GRID_NAME"]

GRID_NAME = "predictions.png"  # the grid's file name in the checkpoint folder
REPORT_METRICS = (("sm", "S", True), ("mae", "MAE", False), ("iou", "IoU", True))


def _shape(shape):
    h, w = (int(v) for v in shape)
    if h < 1 or w < 1:
        raise ValueError(f"a baseline needs a shape of at least 1x1, got {h}x{w}")
    return h, w


def all_foreground(shape):
    """float32 [h, w] of ones: every pixel called foreground with probability 1."""
    return np.ones(_shape(shape), np.float32)


def centred_gaussian(shape):
    """float32 [h, w]: a Gaussian blob centred in the image with standard deviations of a
    quarter of its height and width, peak 1 at the centre (below 1 at every pixel of an
    even-sized image, whose centre lies between pixels)."""
    h, w = _shape(shape)
    dy = (np.arange(h, dtype=np.float64) - (h - 1) / 2) / (h / 4)
    dx = (np.arange(w, dtype=np.float64) - (w - 1) / 2) / (w / 4)
    return np.exp(-0.5 * (dy[:, None] ** 2 + dx[None, :] ** 2)).astype(np.float32)


BASELINES = {"all foreground": all_foreground, "centred Gaussian blob": centred_gaussian}


def baseline_metrics(gts):
    """{baseline name: codext.metrics.evaluate's scalar results} on the ground truths
    `gts` (a list of 2-D masks or an array [N, H, W]; each baseline is drawn at each GT's
    size)."""
    gt_list = _metrics._as_list(gts, "gts")
    out = {}
    for name, make in BASELINES.items():
        cache = {}
        preds = [cache.setdefault(g.shape, make(g.shape)) if getattr(g, "ndim", 0) == 2 else g
                 for g in gt_list]  # a wrong entry reaches evaluate, which names it
        result = _metrics.evaluate(preds, gt_list)
        out[name] = {k: float(v) for k, v in result.items() if np.isscalar(v)}
    return out


# ---- the picture -----------------------------------------------------------------------------

def prediction_grid(images, gts, preds, scale=1, gap=2):
    """uint8 RGB [n*(S*scale) + (n-1)*gap, 3*(S*scale) + 2*gap, 3]: one row per image,
    columns image | ground truth | prediction, white gaps between tiles.

    images: uint8 [n, S, S, 3]; gts: uint8 [n, S, S] (foreground > 128, drawn 0/255);
    preds: float [n, S, S] probabilities in [0, 1] (drawn as grey levels round(255 p)).
    scale: each pixel becomes scale x scale pixels (nearest neighbour)."""
    images, gts, preds = np.asarray(images), np.asarray(gts), np.asarray(preds)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"images must be uint8 [n, S, S, 3], got {images.dtype} {images.shape}")
    n, h, w = images.shape[:3]
    if n < 1:
        raise ValueError("prediction_grid needs at least one image")
    if gts.shape != (n, h, w) or preds.shape != (n, h, w):
        raise ValueError(f"gts and preds must be [n, H, W] = {(n, h, w)}, got {gts.shape} and "
                         f"{preds.shape}")
    if not np.all(np.isfinite(preds)) or preds.min() < 0 or preds.max() > 1:
        raise ValueError("preds must be probabilities in [0, 1]")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or not 1 <= scale <= 64:
        raise ValueError(f"scale must be an integer in 1..64, got {scale!r}")
    if isinstance(gap, bool) or not isinstance(gap, (int, np.integer)) or not 0 <= gap <= 64:
        raise ValueError(f"gap must be an integer in 0..64, got {gap!r}")
    grey = lambda a: np.repeat(a[..., None], 3, axis=-1)  # noqa: E731  [n,H,W] -> [n,H,W,3]
    tiles = [images, grey(np.where(gts > 128, 255, 0).astype(np.uint8)),
             grey(np.rint(preds.astype(np.float64) * 255).astype(np.uint8))]
    th, tw = h * scale, w * scale
    grid = np.full((n * th + (n - 1) * gap, 3 * tw + 2 * gap, 3), 255, np.uint8)
    for col, tile in enumerate(tiles):
        big = tile.repeat(scale, axis=1).repeat(scale, axis=2)  # [n, th, tw, 3]
        for row in range(n):
            y, x = row * (th + gap), col * (tw + gap)
            grid[y:y + th, x:x + tw] = big[row]
    return grid


def _png_chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_bytes(pixels):
    """The PNG file (8-bit, no interlace) of uint8 [H, W] (grey) or [H, W, 3] (RGB)."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise ValueError(f"a PNG needs uint8 [H, W] or [H, W, 3], got {pixels.dtype} {pixels.shape}")
    h, w = pixels.shape[:2]
    if h < 1 or w < 1:
        raise ValueError(f"a PNG needs at least 1x1 pixels, got {h}x{w}")
    colour_type = 0 if pixels.ndim == 2 else 2
    rows = np.ascontiguousarray(pixels).reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1)  # filter byte 0 per row
    header = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 9)) + _png_chunk(b"IEND", b""))


def write_png(path, pixels):
    """Writes png_bytes(pixels) to path (through a temporary file renamed into place)."""
    data = png_bytes(pixels)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


# ---- the end-of-run report ---------------------------------------------------------------------

def end_of_run_report(model, split, result_metrics, out_dir, n_grid=6):
    """Lines that put a run's test scores beside the baselines', and the grid file.

    model: the run's best model (codext.Model); split: the test split it was validated on;
    result_metrics: the validation metrics of its best epoch (TrainResult.metrics);
    out_dir: where the grid goes (the checkpoint folder), as GRID_NAME. Returns (lines,
    grid path). The grid shows the first n_grid test images, predicted by `model`, each
    tile at least 128 pixels wide."""
    gts = list(split.masks_full) if getattr(split, "masks_full", None) is not None else list(split.masks)
    table = {"this model (best epoch)": result_metrics, **baseline_metrics(gts)}
    width = max(len(name) for name in table) + 2
    lines = [f"{'test set (' + str(len(gts)) + ' images)':<{width}}"
             + "".join(f"{label:>8}" for _, label, _ in REPORT_METRICS)]
    for name, scores in table.items():
        lines.append(f"  {name:<{width - 2}}" + "".join(f"{scores[key]:8.4f}" for key, _, _ in REPORT_METRICS))
    ours = result_metrics
    worse = [label for key, label, higher in REPORT_METRICS
             if any((ours[key] <= b[key]) if higher else (ours[key] >= b[key])
                    for name, b in table.items() if name in BASELINES)]
    if worse:
        lines.append(f"  not yet better than both baselines on {', '.join(worse)}: train longer "
                     f"(more --epochs) or with more data")
    else:
        lines.append("  better than both baselines on S, MAE and IoU: it has learned to find the objects")
    n = min(n_grid, len(split.images))
    images = split.images[:n]
    preds = np.stack(model.predict(list(images)))
    size = images.shape[1]
    grid = prediction_grid(images, split.masks[:n], preds, scale=max(1, -(-128 // size)))
    path = write_png(os.path.join(out_dir, GRID_NAME), grid)
    lines.append(f"predictions: {path} (rows: {n} test images; columns: image | ground truth | prediction)")
    return lines, path
