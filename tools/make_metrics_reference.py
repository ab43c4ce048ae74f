"""Writes tests/data/metrics/pysodmetrics_1.6.2.npz: PySODMetrics' outputs on the
generated cases of tests/metric_cases.py (only the outputs; the test regenerates the
inputs and checks them against the stored CRCs).

Run with the reference Python (pysodmetrics 1.6.2, NumPy 1.24, SciPy):
    PY=$(tools/reference-python.sh) && $PY tools/make_metrics_reference.py

Per case, fresh Smeasure / Emeasure / WeightedFmeasure / Fmeasure / MAE objects get one
step(), as PySODMetrics evaluates one image:
  - uint8 predictions: step(pred, gt) (its prepare_data: / 255, min-max, gt > 128);
  - float predictions: the same preparation without the / 255 (min-max of the float64
    values when not constant), then step(pred, gt > 128, normalize=False).
Stored per case: sm, wfm, mae, adp_em, adp_fm and the 256-point curves em_curve,
fm_curve in PySODMetrics' order (index k is threshold 255 - k). Where sm is NaN (empty
quadrants), sm_finite holds the same computation with empty quadrants contributing 0
(codext's documented rule), built from PySODMetrics' own object() and ssim().
Datasets: a few groups of case indices, stepped through one set of objects in order,
with get_results() (mean_em / max_em are the mean / max of the averaged curve).
"""
import argparse
import os
import sys
import warnings

import numpy as np
import py_sod_metrics as psm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from metric_cases import case_crc, make_cases  # noqa: E402

SCALARS = ["sm", "wfm", "mae", "adp_em", "adp_fm"]


def prepared_args(pred, gt):
    if pred.dtype == np.uint8:
        return (pred, gt), {}
    p = pred.astype(np.float64)
    if p.max() != p.min():
        p = (p - p.min()) / (p.max() - p.min())
    return (p, gt > 128), {"normalize": False}


def new_evaluators():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dict(sm=psm.Smeasure(), em=psm.Emeasure(), wfm=psm.WeightedFmeasure(), fm=psm.Fmeasure(),
                    mae=psm.MAE())


def step_all(evaluators, pred, gt):
    args, kwargs = prepared_args(pred, gt)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for ev in evaluators.values():
            ev.step(*args, **kwargs)


def smeasure_empty_quadrants_as_zero(pred, gt):
    """PySODMetrics' S-measure with empty quadrants contributing 0 (codext's rule)."""
    args, kwargs = prepared_args(pred, gt)
    from py_sod_metrics.utils import validate_and_normalize_input
    p, g = validate_and_normalize_input(*args, **kwargs)
    s = psm.Smeasure()
    h, w = g.shape
    area = h * w
    cy, cx = np.argwhere(g).mean(axis=0).round()
    cy, cx = int(cy) + 1, int(cx) + 1
    w_lt = cx * cy / area
    w_rt = cy * (w - cx) / area
    w_lb = (h - cy) * cx / area
    w_rb = 1 - w_lt - w_rt - w_lb
    region = 0.0
    for (rs, cs), weight in [((slice(0, cy), slice(0, cx)), w_lt), ((slice(0, cy), slice(cx, w)), w_rt),
                             ((slice(cy, h), slice(0, cx)), w_lb), ((slice(cy, h), slice(cx, w)), w_rb)]:
        if p[rs, cs].size:
            region += s.ssim(p[rs, cs], g[rs, cs]) * weight
    return max(0.0, s.object(p, g) * s.alpha + region * (1 - s.alpha))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "metrics", "pysodmetrics_1.6.2.npz"))
    args = parser.parse_args()
    cases = make_cases()
    n = len(cases)
    out = {k: np.zeros(n) for k in SCALARS}
    out["sm_finite"] = np.full(n, np.nan)
    out["em_curve"] = np.zeros((n, 256))
    out["fm_curve"] = np.zeros((n, 256))
    out["crc"] = np.zeros(n, np.uint32)
    for i, (name, pred, gt) in enumerate(cases):
        ev = new_evaluators()
        step_all(ev, pred, gt)
        out["sm"][i] = ev["sm"].sms[0]
        out["wfm"][i] = ev["wfm"].weighted_fms[0]
        out["mae"][i] = ev["mae"].maes[0]
        out["adp_em"][i] = ev["em"].adaptive_ems[0]
        out["adp_fm"][i] = ev["fm"].adaptive_fms[0]
        out["em_curve"][i] = ev["em"].changeable_ems[0]
        out["fm_curve"][i] = ev["fm"].changeable_fms[0]
        out["crc"][i] = case_crc(pred, gt)
        if np.isnan(out["sm"][i]):
            out["sm_finite"][i] = smeasure_empty_quadrants_as_zero(pred, gt)

    # Dataset-level results over groups of cases without NaN or one-pixel images.
    regular = [i for i, (_, pred, _) in enumerate(cases) if pred.size > 1 and np.isfinite(out["sm"][i])]
    groups = [regular[:40], regular[40:160:3], regular]
    dataset_keys = ["sm", "wfm", "mae", "adp_em", "mean_em", "max_em", "adp_fm", "mean_fm", "max_fm"]
    datasets = np.zeros((len(groups), len(dataset_keys)))
    group_index = np.full((len(groups), len(regular)), -1, np.int32)
    for gi, group in enumerate(groups):
        ev = new_evaluators()
        for i in group:
            step_all(ev, cases[i][1], cases[i][2])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            em = ev["em"].get_results()["em"]
            fm = ev["fm"].get_results()["fm"]
        values = dict(sm=ev["sm"].get_results()["sm"], wfm=ev["wfm"].get_results()["wfm"],
                      mae=ev["mae"].get_results()["mae"], adp_em=em["adp"], mean_em=em["curve"].mean(),
                      max_em=em["curve"].max(), adp_fm=fm["adp"], mean_fm=fm["curve"].mean(),
                      max_fm=fm["curve"].max())
        datasets[gi] = [values[k] for k in dataset_keys]
        group_index[gi, :len(group)] = group
    out["dataset_values"] = datasets
    out["dataset_keys"] = np.array(dataset_keys)
    out["dataset_groups"] = group_index
    out["numpy_version"] = np.array(np.__version__)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    np.savez_compressed(args.out, **out)
    print(f"{n} cases, {int(np.isnan(out['sm']).sum())} with NaN S-measure, "
          f"{os.path.getsize(args.out) / 1e6:.2f} MB -> {args.out}")


if __name__ == "__main__":
    main()
