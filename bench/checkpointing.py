"""What gradient checkpointing and the frozen-backbone forward save, and what checkpointing
costs: planned activation memory per forward mode, and stage-2 step time with and without
checkpointing.

    python bench/checkpointing.py                # about 2 minutes on 2 cores
    python bench/checkpointing.py --blocks 20    # steadier timings on a busy machine

Memory: Model.planned_activation_bytes runs the planner (the passes on the planning
backend with a counting arena) and reserves nothing, so the recipe's edgenext_base at
352x352, batch 32 is measured on any machine. Modes: train (plain), train_checkpoint
(gradient checkpointing: the backbone keeps its stage inputs and outputs and backward
recomputes each stage), train_head (stage 1: frozen backbone, no backbone activation kept),
predict.

Time: two trainers on the same model config and fixed batch (stage 2 only, augmentation
off) take turns, block after block of --block-steps optimizer steps, so that a change in the
machine's load hits both alike; "cost" is the median of the per-turn ratios ckpt / plain.

Measured on the 2-core development machine while other jobs ran (load average about 6,
so the step times are noisy; the memory is exact):

    planned activation memory (MiB); ratios against train
    model                                   size     train      ckpt   stage 1   predict  ckpt/train  stage1/train
    edgenext_base (Config defaults)     352 x 32   13785.1    9028.2    5085.2    4217.1       0.655         0.369
    demo (Config.demo())                 32 x 32      25.0      15.3       7.8       5.5       0.612         0.313

    stage-2 step time, 2 threads, medians of 16 blocks of 4 steps
    demo        32x32  batch 32  plain   128.4 ms  ckpt   158.4 ms  cost +22.2 % (quartiles +15.8 %, +31.0 %)
    xx_small64  64x64  batch  8  plain   163.1 ms  ckpt   177.6 ms  cost +12.4 % (quartiles  +8.9 %, +20.9 %)

(Before this change every training forward kept all backbone activations: stage 1 planned
what train plans now, and predict 20.7 MiB for the demo's batch.)
"""
import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import codext  # noqa: E402
from codext import _C  # noqa: E402
from codext.model import Model  # noqa: E402

TIMED = {  # name: (model keywords, batch)
    "demo": (dict(backbone="edgenext_xx_small", decoder_dim=16, num_experts=3, img_size=32), 32),
    "xx_small64": (dict(backbone="edgenext_xx_small", decoder_dim=32, num_experts=7, img_size=64), 8),
}


def memory_table():
    base = codext.Config()
    demo = codext.Config.demo()
    rows = [("edgenext_base (Config defaults)", Model(base), base.batch_size, base.img_size),
            ("demo (Config.demo())", Model(demo), demo.batch_size, demo.img_size)]
    print("planned activation memory (MiB); ratios against train")
    print(f"{'model':34s} {'size':>9s} {'train':>9s} {'ckpt':>9s} {'stage 1':>9s} {'predict':>9s}"
          f"  ckpt/train  stage1/train")
    for name, m, batch, size in rows:
        b = {mode: m.planned_activation_bytes(batch, size, size, mode) / 2**20
             for mode in Model.PLAN_MODES}
        print(f"{name:34s} {size:4d} x{batch:3d} {b['train']:9.1f} {b['train_checkpoint']:9.1f} "
              f"{b['train_head']:9.1f} {b['predict']:9.1f}  {b['train_checkpoint'] / b['train']:10.3f}"
              f"  {b['train_head'] / b['train']:12.3f}")


def step_times(name, blocks, block_steps):
    kw, batch = TIMED[name]
    size = kw["img_size"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    y = (rng.random((batch, 1, size, size)) > 0.6).astype(np.float32)
    trainers = {}
    for checkpointing in (False, True):
        m = Model(seed=1, **kw)
        t = _C.Trainer(m._native, batch, size, size, batch_size=batch, epochs=100000,
                       stage1_epochs=0, lr=1e-4, augment=False,
                       gradient_checkpointing=checkpointing)
        t.step_on_batch(x, y)  # plans the arena
        trainers[checkpointing] = (m, t)
    ms = {False: [], True: []}
    ratios = []
    for _ in range(blocks):
        turn = {}
        for checkpointing in (False, True):
            _, t = trainers[checkpointing]
            began = time.perf_counter()
            for _ in range(block_steps):
                t.step_on_batch(x, y)
            turn[checkpointing] = (time.perf_counter() - began) / block_steps * 1e3
            ms[checkpointing].append(turn[checkpointing])
        ratios.append(turn[True] / turn[False])
    same = np.array_equal(trainers[False][0]._params.view(np.uint32),
                          trainers[True][0]._params.view(np.uint32))
    q = statistics.quantiles(ratios, n=4)
    print(f"{name:10s} {size:3d}x{size:<3d} batch {batch:2d}  plain {statistics.median(ms[False]):7.1f} ms"
          f"  ckpt {statistics.median(ms[True]):7.1f} ms  cost {100 * (statistics.median(ratios) - 1):+5.1f} %"
          f" (quartiles {100 * (q[0] - 1):+5.1f} %, {100 * (q[2] - 1):+5.1f} %)  same weights: {same}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--block-steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        codext.set_num_threads(args.threads)
    memory_table()
    print(f"\nstage-2 step time, {codext.get_num_threads()} threads, medians of {args.blocks} "
          f"blocks of {args.block_steps} steps")
    for name in TIMED:
        step_times(name, args.blocks, args.block_steps)


if __name__ == "__main__":
    main()
