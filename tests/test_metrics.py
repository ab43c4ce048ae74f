"""codext.metrics against PySODMetrics 1.6.2 (a committed fixture of its outputs on the
generated cases of metric_cases.py), against NumPy references (IoU, Dice, EDT), and on
bad input. A live comparison runs too when py_sod_metrics imports (not in CI).

Tolerance: 1e-6 per metric, the E and F curves elementwise (the observed differences
are below 1e-14: MAE, E and F agree bit for bit). No case needs the one-pixel tie
allowance that docs/metrics.md describes: codext sums the adaptive threshold's mean in
NumPy 1.x's order and breaks EDT distance ties as SciPy does. The cases include both
kinds of tie on purpose: the *_tie predictions put 2 * mean(pred) exactly on a grey
level (14 cases where another summation order flips every pixel at that level), and
about 85 cases change by more than 1e-6 (up to 0.027 in wF) under a different EDT tie
rule.
"""
import doctest
import os
import threading

import numpy as np
import pytest

import codext
import codext.metrics
from codext import _C
from testing_module import testing
from metric_cases import case_crc, make_cases

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "metrics", "pysodmetrics_1.6.2.npz")
EPS = np.spacing(1)
TOL = 1e-6
PER_IMAGE_KEYS = ["sm", "wfm", "mae", "adp_em", "adp_fm"]


@pytest.fixture(scope="module")
def cases():
    return make_cases()


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURE))


@pytest.fixture(scope="module")
def ours(cases):
    return codext.metrics.evaluate([c[1] for c in cases], [c[2] for c in cases], per_image=True)


def test_generated_inputs_match_the_fixture(cases, reference):
    """The fixture holds outputs only; its CRCs pin the regenerated inputs."""
    assert len(cases) >= 300
    crc = np.array([case_crc(pred, gt) for _, pred, gt in cases], np.uint32)
    assert len(crc) == len(reference["crc"]), "case list changed: rerun tools/make_metrics_reference.py"
    drift = [cases[i][0] for i in np.nonzero(crc != reference["crc"])[0]]
    assert not drift, f"metric_cases.py generates other inputs than the fixture was made from: {drift[:5]}"


def expected_per_image(cases, reference, key):
    """The oracle's values in codext's conventions (curves by ascending threshold) with
    the documented finite rules applied where PySODMetrics gives NaN or ~4.5e15."""
    value = reference[key].copy()
    if key.endswith("curve"):
        value = value[:, ::-1]  # PySODMetrics: index k is threshold 255 - k
    if key == "sm":
        nan = np.isnan(value)
        value[nan] = reference["sm_finite"][nan]  # empty quadrants contribute 0
    if key in ("adp_em", "em_curve"):
        one_pixel = np.array([pred.size == 1 for _, pred, _ in cases])
        value[one_pixel] *= EPS  # PySODMetrics divides by H*W - 1 + eps = eps; codext by 1
    return value


@pytest.mark.parametrize("key", PER_IMAGE_KEYS + ["em_curve", "fm_curve"])
def test_per_image_against_pysodmetrics(cases, reference, ours, key):
    expected = expected_per_image(cases, reference, key)
    got = ours["per_image"][key]
    assert np.isfinite(got).all()
    err = np.abs(got - expected)
    if err.ndim == 2:
        err = err.max(axis=1)
    bad = np.nonzero(err > TOL)[0]
    assert len(bad) == 0, f"{key}: {len(bad)} cases differ, e.g. " + ", ".join(
        f"{cases[i][0]} ({err[i]:.2e})" for i in bad[:5])


def test_dataset_means_against_pysodmetrics(cases, reference):
    keys = [str(k) for k in reference["dataset_keys"]]
    for group, values in zip(reference["dataset_groups"], reference["dataset_values"]):
        idx = group[group >= 0]
        got = codext.metrics.evaluate([cases[i][1] for i in idx], [cases[i][2] for i in idx])
        for key, value in zip(keys, values):
            assert abs(got[key] - value) <= TOL, (key, len(idx), got[key], value)
        assert got["n_images"] == len(idx)
        assert got["mean_em"] == pytest.approx(got["em_curve"].mean(), abs=1e-15)
        assert got["max_fm"] == got["fm_curve"].max()


def test_dataset_means_are_per_image_means(ours):
    per = ours["per_image"]
    for key in ["sm", "wfm", "mae", "adp_em", "adp_fm", "iou", "dice"]:
        assert ours[key] == pytest.approx(per[key].mean(), abs=1e-15)
    np.testing.assert_allclose(ours["em_curve"], per["em_curve"].mean(axis=0), atol=1e-15)
    np.testing.assert_allclose(ours["fm_curve"], per["fm_curve"].mean(axis=0), atol=1e-15)


# ---- the finite rules, on hand-made examples ------------------------------------------

def test_empty_quadrant_rule():
    """1x2 image, foreground right: the centroid lands on the last column, three
    quadrants are empty (PySODMetrics: NaN). A perfect prediction scores 1."""
    gt = np.array([[0, 255]], np.uint8)
    r = codext.metrics.evaluate([gt.copy()], [gt])
    assert r["sm"] == pytest.approx(1.0, abs=1e-12)
    worst = codext.metrics.evaluate([255 - gt], [gt])
    assert np.isfinite(worst["sm"]) and worst["sm"] < 0.5
    # Foreground only on the last row of a larger image: finite too.
    gt = np.zeros((9, 7), np.uint8)
    gt[-1, 2:5] = 255
    pred = np.arange(63, dtype=np.uint8).reshape(9, 7) * 4
    assert np.isfinite(codext.metrics.evaluate([pred], [gt])["sm"])


def test_one_pixel_emeasure_rule():
    """1x1 image: E is 1 when the pixel is right and 0 when wrong (PySODMetrics divides
    by eps and returns about 4.5e15)."""
    fg, bg = np.array([[255]], np.uint8), np.array([[0]], np.uint8)
    # (prediction, GT, threshold t, E at t): level 255 is foreground up to t = 255, level 0
    # only at t = 0.
    for pred, gt, t, expected in [(fg, fg, 255, 1.0), (bg, bg, 1, 1.0), (bg, fg, 1, 0.0), (fg, bg, 200, 0.0)]:
        r = codext.metrics.evaluate([pred], [gt])
        assert r["em_curve"][t] == expected
        assert set(np.unique(r["em_curve"])) <= {0.0, 1.0}
    # The adaptive threshold of an all-zero map is 0, so `>=` takes every pixel as
    # foreground (as in PySODMetrics): right on a foreground pixel, wrong on background.
    assert codext.metrics.evaluate([bg], [fg])["adp_em"] == 1.0
    assert codext.metrics.evaluate([bg], [bg])["adp_em"] == 0.0


# ---- IoU and Dice ----------------------------------------------------------------------

def iou_dice_reference(pred, gt):
    """docs/metrics.md: raw probability (uint8 / 255, floats as they are) >= 0.5 against
    GT > 128; both empty counts as 1."""
    raw = pred / 255.0 if pred.dtype == np.uint8 else pred.astype(np.float64)
    p, g = raw >= 0.5, gt > 128
    inter, union, total = (p & g).sum(), (p | g).sum(), p.sum() + g.sum()
    if total == 0:
        return 1.0, 1.0
    return inter / union, 2 * inter / total


def test_iou_dice_against_numpy(cases, ours):
    ref = np.array([iou_dice_reference(pred, gt) for _, pred, gt in cases])
    np.testing.assert_allclose(ours["per_image"]["iou"], ref[:, 0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(ours["per_image"]["dice"], ref[:, 1], rtol=0, atol=1e-15)
    assert ours["iou"] == pytest.approx(ref[:, 0].mean(), abs=1e-15)


def test_iou_dice_use_the_raw_probability():
    """No min-max normalisation: a constant 0.4 prediction is empty at 0.5, 127 is below
    and 128 above the cut."""
    gt = np.zeros((4, 4), np.uint8)
    gt[:2] = 255
    r = codext.metrics.evaluate([np.full((4, 4), 0.4), np.full((4, 4), 127, np.uint8),
                                 np.full((4, 4), 128, np.uint8)], [gt, gt, gt], per_image=True)
    np.testing.assert_array_equal(r["per_image"]["iou"], [0.0, 0.0, 0.5])
    empty = np.zeros((3, 5), np.uint8)
    r = codext.metrics.evaluate([empty], [empty])
    assert r["iou"] == 1.0 and r["dice"] == 1.0


# ---- the distance transform ---------------------------------------------------------

def edt_bruteforce(mask):
    fg = np.argwhere(mask)
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w]
    d2 = (yy[..., None] - fg[:, 0]) ** 2 + (xx[..., None] - fg[:, 1]) ** 2
    return np.sqrt(d2.min(axis=-1).astype(np.float64))


@pytest.mark.parametrize("shape,density,seed", [((1, 1), 1.0, 0), ((1, 9), 0.2, 1), ((9, 1), 0.2, 2),
                                                ((13, 17), 0.05, 3), ((24, 31), 0.01, 4), ((20, 20), 0.5, 5),
                                                ((16, 40), 0.002, 6)])
def test_edt_is_exact(shape, density, seed):
    rng = np.random.default_rng(seed)
    mask = (rng.random(shape) < density).astype(np.uint8)
    mask[rng.integers(shape[0]), rng.integers(shape[1])] = 1
    dist, nearest = testing.metrics_edt(mask)
    np.testing.assert_array_equal(dist, edt_bruteforce(mask))
    # Every index points at a foreground pixel at that distance.
    assert mask[nearest[0], nearest[1]].all()
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    np.testing.assert_array_equal(np.sqrt((nearest[0] - yy) ** 2 + (nearest[1] - xx) ** 2.0), dist)


def test_edt_tie_rule_on_symmetric_mask():
    """Equidistant candidates: the column pass prefers the upper pixel, the row pass the
    candidate met first (SciPy's rule). (2, 2) is equidistant from (0, 2) and (4, 2)."""
    mask = np.zeros((5, 5), np.uint8)
    mask[0, 2] = mask[4, 2] = 1
    _, nearest = testing.metrics_edt(mask)
    assert tuple(nearest[:, 2, 2]) == (0, 2)
    mask = np.zeros((5, 5), np.uint8)
    mask[2, 0] = mask[2, 4] = 1
    _, nearest = testing.metrics_edt(mask)
    assert tuple(nearest[:, 2, 2]) == (2, 0)
    _, nearest = testing.metrics_edt(np.zeros((3, 4), np.uint8))
    assert (nearest == -1).all()


# ---- threads, concurrency, API --------------------------------------------------------

def test_results_do_not_depend_on_threads(cases):
    preds, gts = [c[1] for c in cases], [c[2] for c in cases]
    saved = codext.get_num_threads()
    try:
        codext.set_num_threads(1)
        one = codext.metrics.evaluate(preds, gts, per_image=True)
        codext.set_num_threads(2)
        two = codext.metrics.evaluate(preds, gts, per_image=True)
        codext.set_num_threads(3)
        three = codext.metrics.evaluate(preds, gts, per_image=True)
    finally:
        codext.set_num_threads(saved)
    for other in (two, three):
        for key, value in one.items():
            if key == "per_image":
                for k, v in value.items():
                    np.testing.assert_array_equal(v, other["per_image"][k])
            else:
                np.testing.assert_array_equal(value, other[key])


def test_concurrent_calls_from_python_threads(cases):
    preds, gts = [c[1] for c in cases[:120]], [c[2] for c in cases[:120]]
    expected = codext.metrics.evaluate(preds, gts)
    results = [None] * 4

    def work(k):
        results[k] = codext.metrics.evaluate(preds, gts)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert r["sm"] == expected["sm"] and r["wfm"] == expected["wfm"]
        np.testing.assert_array_equal(r["em_curve"], expected["em_curve"])


def test_inputs_accepted_in_several_forms():
    rng = np.random.default_rng(0)
    gt = (rng.random((3, 12, 10)) < 0.3).astype(np.uint8) * 255
    pred = rng.random((3, 12, 10))
    base = codext.metrics.evaluate(list(pred), list(gt))
    as_array = codext.metrics.evaluate(pred, gt)                       # [N, H, W] arrays
    as_bool = codext.metrics.evaluate(tuple(pred), [g > 128 for g in gt])  # bool GTs
    as_f32 = codext.metrics.evaluate([p.astype(np.float32) for p in pred], gt)
    as_f16 = codext.metrics.evaluate([p.astype(np.float16) for p in pred], gt)
    strided = codext.metrics.evaluate([np.asfortranarray(p) for p in pred], [g[:, ::1] for g in gt])
    for other in (as_array, as_bool, strided):
        assert other["sm"] == base["sm"] and other["wfm"] == base["wfm"]
    for other in (as_f32, as_f16):  # other values, same kind of result
        assert set(other) == set(base) and np.isfinite(other["sm"])
    assert set(base) == {"sm", "wfm", "mae", "adp_em", "mean_em", "max_em", "adp_fm", "mean_fm", "max_fm",
                         "iou", "dice", "em_curve", "fm_curve", "n_images"}
    assert base["em_curve"].shape == (256,) and base["em_curve"].dtype == np.float64


def test_docstrings():
    failures, tried = doctest.testmod(codext.metrics)
    assert tried > 0 and failures == 0


# ---- bad input ---------------------------------------------------------------------------

GOOD = np.zeros((6, 8), np.uint8)


@pytest.mark.parametrize("preds,gts,error,match", [
    ([], [], ValueError, "no predictions"),
    ([GOOD, GOOD], [GOOD], ValueError, "2 predictions but 1 ground truths"),
    ([GOOD, np.zeros((8, 6), np.uint8)], [GOOD, GOOD], ValueError,
     r"image 1: prediction has shape \(8, 6\) but its ground truth has shape \(6, 8\)"),
    ([GOOD.astype(np.int64)], [GOOD], TypeError, r"preds\[0\] has dtype int64"),
    ([GOOD.astype(bool)], [GOOD], TypeError, r"preds\[0\] has dtype bool.*astype"),
    ([GOOD], [GOOD.astype(np.float32)], TypeError, r"gts\[0\] has dtype float32"),
    ([GOOD[None]], [GOOD[None]], ValueError, r"preds\[0\] must be 2-D"),
    ([GOOD], [GOOD[:, :, None]], ValueError, r"gts\[0\] must be 2-D"),
    ([np.zeros((0, 5), np.uint8)], [np.zeros((0, 5), np.uint8)], ValueError, "image 0 is empty"),
    ([[1, 2]], [GOOD], TypeError, r"preds\[0\] must be a numpy array"),
    (GOOD, GOOD, ValueError, "single 2-D array"),
    ("abc", [GOOD], TypeError, "must be a list"),
    (np.zeros((2, 3, 4, 5)), np.zeros((2, 3, 4, 5)), ValueError, r"\[N, H, W\]"),
])
def test_bad_input(preds, gts, error, match):
    with pytest.raises(error, match=match):
        codext.metrics.evaluate(preds, gts)


@pytest.mark.parametrize("bad", [1.5, -0.1, np.nan, np.inf])
def test_float_predictions_outside_unit_interval(bad):
    pred = np.full((6, 8), 0.5)
    pred[3, 4] = bad
    with pytest.raises(ValueError, match=r"prediction 1 holds .*must be probabilities in \[0, 1\]"):
        codext.metrics.evaluate([np.zeros((6, 8)), pred], [GOOD, GOOD])


# ---- live oracle (only where PySODMetrics imports; CI uses the fixture) ------------------

def test_live_pysodmetrics():
    psm = pytest.importorskip("py_sod_metrics")
    import warnings
    rng = np.random.default_rng(7)
    preds, gts = [], []
    for k in range(12):  # larger random images than the fixture's
        h, w = rng.integers(40, 160, 2)
        yy, xx = np.mgrid[0:h, 0:w]
        gt = ((yy - rng.integers(h)) ** 2 + (xx - rng.integers(w)) ** 2 < rng.integers(50, 2000)).astype(np.uint8) * 255
        soft = np.clip(0.7 * (gt > 0) + 0.3 * rng.random((h, w)), 0, 1)
        preds.append((soft * 255).astype(np.uint8) if k % 2 else soft)
        gts.append(gt)
    ours = codext.metrics.evaluate(preds, gts, per_image=True)["per_image"]
    numpy2 = int(np.__version__.split(".")[0]) >= 2
    for i, (pred, gt) in enumerate(zip(preds, gts)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ev = dict(sm=psm.Smeasure(), em=psm.Emeasure(), wfm=psm.WeightedFmeasure(), fm=psm.Fmeasure(),
                      mae=psm.MAE())
        if pred.dtype == np.uint8:
            args, kwargs = (pred, gt), {}
        else:
            p = (pred - pred.min()) / (pred.max() - pred.min())
            args, kwargs = (p, gt > 128), {"normalize": False}
        for e in ev.values():
            e.step(*args, **kwargs)
        assert ours["sm"][i] == pytest.approx(ev["sm"].sms[0], abs=TOL)
        assert ours["wfm"][i] == pytest.approx(ev["wfm"].weighted_fms[0], abs=TOL)
        assert ours["mae"][i] == pytest.approx(ev["mae"].maes[0], abs=TOL)
        np.testing.assert_allclose(ours["em_curve"][i], ev["em"].changeable_ems[0][::-1], atol=TOL)
        np.testing.assert_allclose(ours["fm_curve"][i], ev["fm"].changeable_fms[0][::-1], atol=TOL)
        # Under NumPy 2 the adaptive threshold's mean is summed in another order, which can
        # move pixels that equal 2 * mean to the other side; random float maps have none.
        if not numpy2 or pred.dtype != np.uint8:
            assert ours["adp_em"][i] == pytest.approx(ev["em"].adaptive_ems[0], abs=TOL)
            assert ours["adp_fm"][i] == pytest.approx(ev["fm"].adaptive_fms[0], abs=TOL)


def test_live_scipy_edt(cases):
    ndimage = pytest.importorskip("scipy.ndimage")
    for _, _, gt in cases:
        mask = (gt > 128).astype(np.uint8)
        if not mask.any():
            continue
        dist, nearest = testing.metrics_edt(mask)
        ref_dist, ref_nearest = ndimage.distance_transform_edt(mask == 0, return_indices=True)
        np.testing.assert_array_equal(nearest, ref_nearest)
        np.testing.assert_array_equal(dist, ref_dist)


def test_aggregate_of_chunks_equals_one_evaluate_bit_for_bit():
    rng = np.random.default_rng(7)
    shapes = [(13, 17), (20, 9), (8, 8), (31, 12), (5, 40), (16, 16), (9, 23)]
    gts = [((rng.random(s) > 0.55) * 255).astype(np.uint8) for s in shapes]
    preds = [rng.random(s).astype(np.float32) for s in shapes]
    whole = codext.metrics.evaluate(preds, gts, per_image=True)
    chunks = [codext.metrics.evaluate(preds[a:b], gts[a:b], per_image=True)["per_image"]
              for a, b in ((0, 3), (3, 4), (4, 7))]
    joined = codext.metrics.aggregate(chunks)
    assert set(joined) == set(whole) - {"per_image"}
    for key, value in joined.items():
        assert np.array_equal(value, whole[key]), key
    single = codext.metrics.aggregate(whole["per_image"])
    assert all(np.array_equal(single[k], whole[k]) for k in single)


def test_aggregate_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        codext.metrics.aggregate([])
    with pytest.raises(TypeError, match=r"per_image\[0\] must be a dict"):
        codext.metrics.aggregate([[1, 2]])
    good = codext.metrics.evaluate([np.zeros((4, 4), np.float32)], [np.zeros((4, 4), np.uint8)], per_image=True)["per_image"]
    with pytest.raises(KeyError, match="'sm'"):
        codext.metrics.aggregate({k: v for k, v in good.items() if k != "sm"})
    bad = dict(good, em_curve=np.zeros((1, 255)))
    with pytest.raises(ValueError, match="em_curve"):
        codext.metrics.aggregate(bad)
