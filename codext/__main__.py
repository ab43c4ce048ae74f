"""python -m codext [demo] [--backbone NAME] [--img-size N] [--batch-size B]

Until the trainer lands, the main job is a backbone demo: build an EdgeNeXt on the native
engine, extract the four feature maps of a batch, run a backward pass, and report timings.
"""
import argparse
import sys
import time

import numpy as np

import codext


def demo(args):
    info = codext.build_info()
    print(f"codext {codext.__version__}: CUDA {'built' if info['cuda'] else 'not built'}"
          f"{' (' + info['cuda_version'] + ', ' + ','.join(info['cuda_archs']) + ')' if info['cuda'] else ''}, "
          f"{info['cpu_threads']} CPU threads")
    backbone = codext.Backbone(args.backbone, seed=args.seed)
    print(f"{args.backbone}: {backbone.num_parameters():,} parameters (timm names, no head)")
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.batch_size, 3, args.img_size, args.img_size)).astype(np.float32)
    t0 = time.perf_counter()
    feats = backbone.forward(x)
    t1 = time.perf_counter()
    dx = backbone.backward([np.ones_like(f) for f in feats])
    t2 = time.perf_counter()
    for s, f in enumerate(feats):
        print(f"  stage {s}: features {tuple(f.shape)}  mean {f.mean():+.4f}  std {f.std():.4f}")
    print(f"forward {1000 * (t1 - t0):.0f} ms, backward {1000 * (t2 - t1):.0f} ms "
          f"for a batch of {args.batch_size} at {args.img_size}x{args.img_size} on the CPU; "
          f"|dx| = {np.linalg.norm(dx):.4g}")
    print(f"activation memory planned: {backbone.activation_bytes() / 2**20:.1f} MiB")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m codext", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="demo", choices=["demo"])
    parser.add_argument("--backbone", default="edgenext_xx_small", choices=codext.BACKBONES)
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.img_size % 32 or args.img_size <= 0:
        parser.error(f"--img-size must be a positive multiple of 32, got {args.img_size}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
