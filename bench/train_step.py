"""One training step of the C trainer (forward, backward, optimizer, EMA), on the CPU and on
a CUDA GPU when the build and the machine have one; prints a table.

    python bench/train_step.py                                  # xx_small 64x64, batch 8
    python bench/train_step.py --backbone edgenext_small --img-size 352 --batch 16 --device cuda

On a GPU it times the step in each of --precisions (default fp32 and amp: fp16 products
with loss scaling before sm_80, bf16 from sm_80, as Config.amp gives; docs/backends.md,
"Mixed precision"); the CPU computes in fp32 only.

Each device runs one epoch to warm up (memory plans, cuDNN's algorithm choice) and then
times --epochs epochs of --steps optimizer steps each, stage 2 (the backbone trained), on
synthetic images; the time per step is the best epoch's. The GPU's numbers include the one
read-back per step that the trainer needs (its step outcome). Not yet run on a GPU.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import codext  # noqa: E402
from codext import _C, _device  # noqa: E402


def time_steps(device, precision, args, data):
    """(seconds per step, the precision it ran in)."""
    model = codext.Model(backbone=args.backbone, decoder_dim=args.decoder_dim,
                         num_experts=args.experts, img_size=args.img_size, seed=0, device=device)
    # amp: what Config.amp gives (bf16 where the GPU has it, else fp16)
    precision = _device.mixed_precision(model, True) if precision == "amp" else precision
    n = args.batch * args.steps
    trainer = _C.Trainer(model._native, n, args.img_size, args.img_size, batch_size=args.batch,
                         epochs=1 + args.epochs, stage1_epochs=0, lr=1e-4, seed=1,
                         loss_scaling=precision == "fp16")
    losses = np.zeros(trainer.state()["steps_per_epoch"])
    trainer.run_epoch(data.train.images, data.train.masks, losses)  # warm-up
    best = float("inf")
    for _ in range(args.epochs):
        began = time.perf_counter()
        trainer.run_epoch(data.train.images, data.train.masks, losses)
        best = min(best, time.perf_counter() - began)
    if not np.all(np.isfinite(losses)):
        raise RuntimeError(f"{device}: a loss is not finite: {losses}")
    return best / args.steps, precision


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="edgenext_xx_small")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--decoder-dim", type=int, default=32)
    parser.add_argument("--experts", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per timed epoch")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (the best counts)")
    parser.add_argument("--device", choices=["all", "cpu", "cuda"], default="all")
    parser.add_argument("--precisions", default="fp32,amp",
                        help="GPU precisions to time, comma-separated: fp32, amp")
    args = parser.parse_args()
    unknown = set(args.precisions.split(",")) - {"fp32", "amp"}
    if unknown:
        parser.error(f"--precisions: unknown {sorted(unknown)} (fp32, amp)")
    data = codext.data.synthetic(args.batch * args.steps, 0, args.img_size, seed=0)
    rows = []
    for device in ("cpu", "cuda"):
        if args.device not in ("all", device):
            continue
        if device == "cuda":
            ok, reason = (_device.cuda_status() if _device.build_has_cuda()
                          else (False, "a CPU-only build"))
            if not ok:
                rows.append((device, "-", None, f"not run: {reason}"))
                continue
        for precision in (args.precisions.split(",") if device == "cuda" else ["fp32"]):
            seconds, ran = time_steps(device, precision, args, data)
            rows.append((device, ran, seconds, ""))
    print(f"\ntraining step: {args.backbone}, {args.img_size}x{args.img_size}, batch "
          f"{args.batch}, decoder {args.decoder_dim} x {args.experts} experts, "
          f"{codext.build_info()['cpu_threads']} CPU threads")
    print(f"{'device':8s} {'precision':>9s} {'ms/step':>10s} {'images/s':>10s}")
    for device, precision, seconds, note in rows:
        if seconds is None:
            print(f"{device:8s} {precision:>9s} {'-':>10s} {'-':>10s}  {note}")
        else:
            print(f"{device:8s} {precision:>9s} {seconds * 1e3:10.1f} {args.batch / seconds:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
