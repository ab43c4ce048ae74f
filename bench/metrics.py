"""Metric speed: codext.metrics.evaluate against PySODMetrics 1.6.2, in the same run.

    python3 bench/metrics.py                                  # codext only
    PYTHONPATH=. $(tools/reference-python.sh) bench/metrics.py    # both + ratio
    (tools/reference-python.sh prints a Python that has pysodmetrics)

Evaluates N pairs (default 2026, COD10K-test's count) of 384x512 synthetic images: blob
GTs (0/255) and uint8 predictions made of a soft GT plus noise (tests/metric_cases.py
synthetic_pair; --unique distinct pairs, cycled, so that generating them stays quick).

Prints:
  - codext, all metrics (S, E, wF, F, MAE, IoU, Dice), on all threads and on one thread;
  - PySODMetrics (Smeasure, Emeasure, WeightedFmeasure, Fmeasure, MAE, the way its
    evaluation loop runs them: one step per image and class), when importable; --ref-images
    limits how many pairs it gets (default: all N; blocks spread over the run) and its
    time is scaled to N;
  - the ratio. The three run block by block, interleaved, so that load from other
    processes on a shared machine affects them alike;
  - single-thread milliseconds per image for each metric: codext's C stages, timed inside
    the C code one image after another, and PySODMetrics' classes.
"""
import argparse
import os
import sys
import time
import warnings


ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
import codext  # noqa: E402
import codext.metrics  # noqa: E402
from codext import _C  # noqa: E402
from metric_cases import synthetic_pair  # noqa: E402


def bench_pysodmetrics(preds, gts):
    """Seconds per class over the pairs, and the total."""
    import py_sod_metrics as psm
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluators = {"smeasure": psm.Smeasure(), "emeasure": psm.Emeasure(), "wfmeasure": psm.WeightedFmeasure(),
                      "fmeasure": psm.Fmeasure(), "mae": psm.MAE()}
        seconds = {name: 0.0 for name in evaluators}
        for pred, gt in zip(preds, gts):
            for name, ev in evaluators.items():
                t0 = time.perf_counter()
                ev.step(pred, gt)
                seconds[name] += time.perf_counter() - t0
        results = {name: ev.get_results() for name, ev in evaluators.items()}
    return seconds, results


def main():
    parser = argparse.ArgumentParser(description="codext metrics vs PySODMetrics")
    parser.add_argument("--images", type=int, default=2026)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--unique", type=int, default=64, help="distinct pairs, cycled")
    parser.add_argument("--ref-images", type=int, default=None,
                        help="pairs for PySODMetrics, spread over the run (default: all)")
    parser.add_argument("--block", type=int, default=50, help="pairs per interleaved block")
    args = parser.parse_args()

    pairs = [synthetic_pair(args.height, args.width, seed) for seed in range(args.unique)]
    preds = [pairs[i % len(pairs)][0] for i in range(args.images)]
    gts = [pairs[i % len(pairs)][1] for i in range(args.images)]
    n = args.images
    threads = codext.get_num_threads()
    print(f"{n} pairs of {args.height}x{args.width} (uint8 predictions), {os.cpu_count()} CPUs, "
          f"codext threads {threads}")
    try:
        import py_sod_metrics  # noqa: F401
        have_ref = True
    except ImportError:
        have_ref = False
        print("PySODMetrics not importable here (run with the reference Python for the comparison)")

    # The machine may be shared: run codext (all threads, one thread) and PySODMetrics
    # block by block, interleaved, so that all three see the same conditions.
    codext.metrics.evaluate(preds[:20], gts[:20])  # warm-up: scratch, tables, pool
    blocks = [(s, min(s + args.block, n)) for s in range(0, n, args.block)]
    ref_every = max(1, round(n / args.ref_images)) if args.ref_images else 1
    t_all = t_one = t_ref = 0.0
    ref_pairs = 0
    seconds = {}
    for k, (b0, b1) in enumerate(blocks):
        codext.set_num_threads(threads)
        t0 = time.perf_counter()
        codext.metrics.evaluate(preds[b0:b1], gts[b0:b1])
        t_all += time.perf_counter() - t0
        codext.set_num_threads(1)
        t0 = time.perf_counter()
        codext.metrics.evaluate(preds[b0:b1], gts[b0:b1])
        t_one += time.perf_counter() - t0
        if have_ref and k % ref_every == 0:
            part, _ = bench_pysodmetrics(preds[b0:b1], gts[b0:b1])
            seconds = {name: seconds.get(name, 0.0) + v for name, v in part.items()}
            ref_pairs += b1 - b0
    stages = {}
    for _ in range(3):  # codext's stages on one thread, inside the C code
        run = _C.metrics_evaluate(preds[:200], gts[:200], False, True)
        stages = {k: min(v, stages.get(k, v)) for k, v in run.items()}
    codext.set_num_threads(threads)

    print(f"codext       {t_all:8.2f} s  ({threads} threads, {t_all / n * 1e3:.2f} ms/image)")
    print(f"codext       {t_one:8.2f} s  (1 thread,  {t_one / n * 1e3:.2f} ms/image)")
    if have_ref:
        t_ref = sum(seconds.values()) * n / ref_pairs
        scaled = f", measured on {ref_pairs} pairs and scaled" if ref_pairs != n else ""
        print(f"PySODMetrics {t_ref:8.2f} s  (1 thread, {t_ref / n * 1e3:.2f} ms/image{scaled})")
        print(f"ratio        {t_ref / t_all:8.1f} x  (codext {threads} threads)   "
              f"{t_ref / t_one:.1f} x  (codext 1 thread)")

    print("\nsingle-thread ms per image")
    per = {k: v / 200 * 1e3 for k, v in stages.items()}
    print(f"  codext  shared preparation (GT > 128, normalised prediction, mean)   {per['prepare']:.3f}")
    print(f"  codext  E-measure + F-measure + MAE + IoU + Dice (from histograms)    "
          f"{per['emeasure_fmeasure_mae_iou_dice']:.3f}")
    print(f"  codext  S-measure                                                    {per['smeasure']:.3f}")
    print(f"  codext  weighted F-measure (EDT, Gaussian)                           {per['wfmeasure']:.3f}")
    print(f"  codext  total                                                        {sum(per.values()):.3f}")
    if have_ref:
        for name, sec in seconds.items():
            print(f"  PySODMetrics {name:<10s} {sec / ref_pairs * 1e3:8.3f}")
        print(f"  PySODMetrics total      {sum(seconds.values()) / ref_pairs * 1e3:8.3f}")
        m = min(n, 100)
        ours = codext.metrics.evaluate(preds[:m], gts[:m])
        _, ref = bench_pysodmetrics(preds[:m], gts[:m])
        print(f"\nagreement on the first {m} pairs (codext - PySODMetrics):")
        pairs_ = [("sm", ref["smeasure"]["sm"]), ("wfm", ref["wfmeasure"]["wfm"]), ("mae", ref["mae"]["mae"]),
                  ("adp_em", ref["emeasure"]["em"]["adp"]), ("mean_em", ref["emeasure"]["em"]["curve"].mean()),
                  ("max_em", ref["emeasure"]["em"]["curve"].max()), ("adp_fm", ref["fmeasure"]["fm"]["adp"]),
                  ("mean_fm", ref["fmeasure"]["fm"]["curve"].mean()), ("max_fm", ref["fmeasure"]["fm"]["curve"].max())]
        print("  " + "  ".join(f"{k} {ours[k] - float(v):+.1e}" for k, v in pairs_))


if __name__ == "__main__":
    main()
