"""COD benchmark metrics, computed in C exactly as PySODMetrics 1.6.2 computes them.

    >>> import numpy as np
    >>> from codext import metrics
    >>> gt = np.zeros((48, 64), np.uint8); gt[10:30, 20:40] = 255
    >>> pred = (gt * 0.9).astype(np.uint8)               # uint8 0..255, or float in [0, 1]
    >>> r = metrics.evaluate([pred], [gt])
    >>> round(r["sm"], 4), round(r["mae"], 4), r["em_curve"].shape
    (1.0, 0.0, (256,))

``evaluate(preds, gts)`` scores each prediction against its GT at the GT's own size and
averages over images. Returned keys (floats unless noted):

=========  ============================================================================
sm         S-measure (alpha 0.5)
wfm        weighted F-measure (beta 1)
mae        mean absolute error
adp_em     adaptive E-measure (threshold min(2 * mean(pred), 1), per image, averaged)
mean_em    mean of ``em_curve``;  max_em: its max
adp_fm     adaptive F-measure (beta^2 0.3); mean_fm / max_fm: mean / max of ``fm_curve``
iou, dice  raw probability >= 0.5 against GT > 128, per image, averaged
em_curve   float64 [256]: E-measure at threshold t / 255 (index t), averaged over images
fm_curve   float64 [256]: F-measure likewise
n_images   number of pairs
per_image  (only with ``per_image=True``) dict of arrays: sm, wfm, mae, adp_em, adp_fm,
           iou, dice [N] and em_curve, fm_curve [N, 256]
=========  ============================================================================

Conventions (docs/metrics.md):

- GT: uint8, foreground where > 128 (bool masks are accepted: True is foreground). A GT
  holding only 0 and one level v <= 128 (a 0/1 mask) is binary with v as foreground, as
  codext.data reads mask files and arrays (codext/_masks.py); PySODMetrics would score
  it as empty.
- Predictions: uint8 is divided by 255; float32/float64 (and float16) are probabilities in
  [0, 1], used as they are. Either is then min-max normalised when it is not constant,
  as PySODMetrics (MATLAB's mapminmax(im2double(...))) does. IoU and Dice use the raw
  probability instead (uint8 / 255, or the float), thresholded at >= 0.5.
- Curves are indexed by threshold t = 0..255 (binarisation floor(pred * 255) >= t);
  PySODMetrics stores the same values in the reverse order (threshold 255 first).
- Where PySODMetrics gives NaN or an unbounded value, codext returns a finite one:

  * S-measure, empty quadrant: the quadrants split the image at the foreground centroid
    (rounded, plus one); when it falls on the last row or column (a foreground only in
    the last row, a 1x2 image) a quadrant is empty, PySODMetrics averages an empty slice
    and returns NaN. codext lets an empty quadrant contribute 0 (its area weight is 0).
  * E-measure of a one-pixel image: PySODMetrics divides by H*W - 1 + eps = eps
    (giving about 4.5e15); codext divides by 1, so the score is 1 when the pixel is right
    and 0 when it is wrong.

- Exact ties: the adaptive threshold compares pixels with 2 * mean(pred), and codext
  sums in NumPy 1.x's order (pairwise within 8192-element chunks) so that pixels equal to
  the threshold fall on the same side; NumPy 2 sums contiguous arrays in one pairwise
  pass, so PySODMetrics under NumPy 2 may put such a pixel on the other side (an effect
  of about one pixel). The weighted F-measure's nearest-foreground pixel on distance ties
  is SciPy's.

The work runs in C on all cores (codext.set_num_threads) with the GIL released; results
do not depend on the thread count. Each thread keeps about 13 bytes per pixel of its
largest image as scratch memory between calls. On the 2-core development machine,
2026 pairs of 384x512 take about 3.4 s (PySODMetrics: about 98 s; bench/metrics.py).
"""
import numbers

import numpy as np

from . import _C, _masks

__all__ = ["evaluate", "aggregate"]

_PRED_DTYPES = (np.uint8, np.float16, np.float32, np.float64)


def _as_list(images, what):
    if isinstance(images, np.ndarray):
        if images.ndim == 2:
            raise ValueError(f"{what} is a single 2-D array; pass a list of images or an array [N, H, W]")
        if images.ndim != 3:
            raise ValueError(f"{what} as an array must be [N, H, W], got shape {images.shape}")
        return list(images)
    if isinstance(images, (str, bytes)) or not hasattr(images, "__len__"):
        raise TypeError(f"{what} must be a list of 2-D numpy arrays or an array [N, H, W], "
                        f"got {type(images).__name__}")
    return list(images)


def _check_pred(i, pred):
    if not isinstance(pred, np.ndarray):
        raise TypeError(f"preds[{i}] must be a numpy array, got {type(pred).__name__}")
    if pred.dtype.type not in _PRED_DTYPES:
        hint = " (convert 0/1 masks with .astype(np.uint8) * 255)" if pred.dtype == bool else ""
        raise TypeError(f"preds[{i}] has dtype {pred.dtype}; expected uint8 (0..255) or float16/32/64 "
                        f"probabilities in [0, 1]{hint}")
    if pred.ndim != 2:
        raise ValueError(f"preds[{i}] must be 2-D [H, W], got shape {pred.shape}")
    if pred.dtype == np.float16:
        pred = pred.astype(np.float32)
    return np.ascontiguousarray(pred)


def _check_gt(i, gt):
    if not isinstance(gt, np.ndarray):
        raise TypeError(f"gts[{i}] must be a numpy array, got {type(gt).__name__}")
    if gt.dtype != bool and gt.dtype != np.uint8:
        raise TypeError(f"gts[{i}] has dtype {gt.dtype}; expected uint8 (foreground > 128) or bool")
    if gt.ndim != 2:
        raise ValueError(f"gts[{i}] must be 2-D [H, W], got shape {gt.shape}")
    return np.ascontiguousarray(_masks.as_levels(gt))  # bool, 0/1 -> 0/255


def evaluate(preds, gts, *, per_image=False):
    """Scores predictions against ground truths, per image, averaged over images.

    Args:
        preds: list of 2-D arrays (or one array [N, H, W]): uint8 0..255 or float
            probabilities in [0, 1]; sizes may differ between images.
        gts: list of 2-D uint8 masks (foreground > 128) or bool masks, each the size of
            its prediction.
        per_image: also return the per-image scores under "per_image".

    Returns:
        dict of floats (sm, wfm, mae, adp_em, mean_em, max_em, adp_fm, mean_fm, max_fm,
        iou, dice, n_images) and the curves em_curve, fm_curve (float64 [256], index =
        threshold); see the module docstring.

    Raises:
        TypeError: a wrong container or dtype (the message names the index).
        ValueError: empty input, different numbers of predictions and GTs, images that
            are not 2-D or empty, a prediction whose shape differs from its GT (both
            shapes in the message), float predictions outside [0, 1] or not finite.

    Example:
        >>> import numpy as np, codext.metrics
        >>> gt = np.zeros((20, 20), np.uint8); gt[5:15, 5:15] = 255
        >>> codext.metrics.evaluate([gt.astype(np.float32) / 255], [gt])["wfm"]
        1.0
    """
    pred_list = _as_list(preds, "preds")
    gt_list = _as_list(gts, "gts")
    if len(pred_list) == 0:
        raise ValueError("no predictions to evaluate (empty list)")
    if len(pred_list) != len(gt_list):
        raise ValueError(f"got {len(pred_list)} predictions but {len(gt_list)} ground truths")
    if not isinstance(per_image, (bool, numbers.Integral)):
        raise TypeError(f"per_image must be a bool, got {type(per_image).__name__}")
    pred_arrays, gt_arrays = [], []
    for i, (pred, gt) in enumerate(zip(pred_list, gt_list)):
        pred, gt = _check_pred(i, pred), _check_gt(i, gt)
        if pred.shape != gt.shape:
            raise ValueError(f"image {i}: prediction has shape {pred.shape} but its ground truth has shape "
                             f"{gt.shape}; resize the prediction to the GT's size first")
        if pred.size == 0:
            raise ValueError(f"image {i} is empty (shape {pred.shape})")
        pred_arrays.append(pred)
        gt_arrays.append(gt)
    result = _C.metrics_evaluate(pred_arrays, gt_arrays, bool(per_image))
    result["n_images"] = len(pred_arrays)
    return result


def aggregate(per_image):
    """The dataset results of per-image results, summed exactly as evaluate sums them (one
    C routine does both), so that images scored in chunks give evaluate's result.

    per_image: the "per_image" dict of evaluate(..., per_image=True), or a list of such
    dicts (chunks, in image order). Returns evaluate's dict (without "per_image")."""
    parts = [per_image] if isinstance(per_image, dict) else list(per_image)
    if not parts:
        raise ValueError("no per-image results to aggregate (empty list)")
    for i, part in enumerate(parts):
        if not isinstance(part, dict):
            raise TypeError(f"per_image[{i}] must be a dict of per-image arrays, got {type(part).__name__}")
    keys = ("sm", "wfm", "mae", "adp_em", "adp_fm", "iou", "dice", "em_curve", "fm_curve")
    joined = {}
    for key in keys:
        missing = [i for i, part in enumerate(parts) if key not in part]
        if missing:
            raise KeyError(f"per_image[{missing[0]}] has no {key!r}")
        joined[key] = parts[0][key] if len(parts) == 1 else np.concatenate([p[key] for p in parts])
    result = _C.metrics_aggregate(joined)
    result["n_images"] = len(joined["sm"])
    return result
