"""Backbone throughput: codext's EdgeNeXt against timm's, in the same run.

    python bench/backbone.py                       # edgenext_base, 352x352, batch 8, CPU
    PYTHONPATH=. $(tools/reference-python.sh) bench/backbone.py   # with timm beside it

Prints images/s for forward and forward+backward (all parameter gradients and dL/dx, for
L = sum of the features). timm runs when torch and timm import; both use every core.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import codext  # noqa: E402


def best_of(fn, repeats):
    fn()  # warm-up: plans memory, fills caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_codext(config, x, repeats):
    b = codext.Backbone(config, seed=0)

    def fwd():
        return b.forward(x)

    def fwd_bwd():
        feats = b.forward(x)
        b.backward([np.ones_like(f) for f in feats])

    return best_of(fwd, repeats), best_of(fwd_bwd, repeats)


def bench_timm(config, x, repeats, threads):
    try:
        import timm
        import torch
    except ImportError as e:
        return None, f"timm not run ({e.name} not importable)"
    torch.set_num_threads(threads)
    model = timm.create_model(config, pretrained=False, num_classes=0)
    model.train()  # no dropout/drop-path in these configs; matches a training step
    xt = torch.from_numpy(x)
    xg = xt.clone().requires_grad_(True)

    def feats(inp):
        return model.forward_intermediates(inp, indices=4, norm=False, intermediates_only=True)

    def fwd():
        with torch.no_grad():
            feats(xt)

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        out = feats(xg)
        sum(f.sum() for f in out).backward()

    return (best_of(fwd, repeats), best_of(fwd_bwd, repeats)), f"torch {torch.__version__}, timm {timm.__version__}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="edgenext_base")
    parser.add_argument("--img-size", type=int, default=352)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu"])
    args = parser.parse_args()
    threads = codext.get_num_threads()
    x = np.random.default_rng(0).standard_normal((args.batch_size, 3, args.img_size, args.img_size)).astype(np.float32)
    print(f"# {args.config}, {args.img_size}x{args.img_size}, batch {args.batch_size}, CPU, {threads} threads, best of {args.repeats}")
    ours = bench_codext(args.config, x, args.repeats)
    theirs, note = bench_timm(args.config, x, args.repeats, threads)
    n = args.batch_size
    print(f"| engine | forward img/s | forward+backward img/s |")
    print(f"|---|---|---|")
    print(f"| codext | {n / ours[0]:.2f} | {n / ours[1]:.2f} |")
    if theirs:
        print(f"| timm ({note}) | {n / theirs[0]:.2f} | {n / theirs[1]:.2f} |")
        print(f"| codext / timm | {theirs[0] / ours[0]:.2f}x | {theirs[1] / ours[1]:.2f}x |")
    else:
        print(f"| timm | - | - |  ({note})")


if __name__ == "__main__":
    main()
