"""One training step of the C trainer (forward, backward, optimizer, EMA), on the CPU and on
a CUDA GPU when the build and the machine have one; prints a table.

    python bench/train_step.py                                  # xx_small 64x64, batch 8
    python bench/train_step.py --backbone edgenext_small --img-size 352 --batch 16 --device cuda

On a GPU it times the step in each of --precisions (default fp32 and amp: fp16 products
with loss scaling before sm_80, bf16 from sm_80, as Config.amp gives; docs/backends.md,
"Mixed precision"; fp16 or bf16 by name: fp16 on an sm_80+ GPU trains as a T4 does); the
CPU computes in fp32 only. The GPU rows give the device memory in use after the timed steps
(cudaMemGetInfo: the CUDA context included), for codext and the twin alike. That is each
one's peak: neither gives memory back during training (codext plans its arena once and its
scratch only grows; torch's caching allocator keeps what it reserved), and the twin also
reports torch's own peak allocation.

--twin also times the PyTorch twin (bench/twin_step.py: the same model in torch + timm,
AMP in the same precision, channels_last) with --twin-python (a Python with torch and
timm, e.g. $(tools/reference-python.sh); default: this one), in its own process, on the
same device, and prints codext's speed-up over it (the issue's goal on a GPU: 1.5x at no
more memory; `--twin-compile` adds a torch.compile row).

    python bench/train_step.py --backbone edgenext_base --img-size 352 --batch 32 \
        --device cuda --precisions amp --twin --twin-python $(tools/reference-python.sh)

Each device runs one epoch to warm up (memory plans, cuDNN's algorithm choice) and then
times --epochs epochs of --steps optimizer steps each, stage 2 (the backbone trained), on
synthetic images; the time per step is the best epoch's. The GPU's numbers include the one
read-back per step that the trainer needs (its step outcome). Not yet run on a GPU.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import codext  # noqa: E402
from codext import _C, _device  # noqa: E402


def time_steps(device, precision, args, data):
    """(seconds per step, the precision it ran in, device memory in use or None)."""
    model = codext.Model(backbone=args.backbone, decoder_dim=args.decoder_dim,
                         num_experts=args.experts, img_size=args.img_size, seed=0, device=device)
    # amp: what Config.amp gives (bf16 where the GPU has it, else fp16); fp16 / bf16 as
    # named (fp16 on an sm_80+ GPU is how a T4 trains: loss scaling included)
    if precision == "amp":
        precision = _device.mixed_precision(model, True)
    elif precision != "fp32":
        model._native.set_precision(precision)
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
    used = None
    if device != "cpu":
        free, total = model._native.device_memory()
        used = total - free
    return best / args.steps, precision, used


def time_twin(device, precision, args, compiled=False):
    """The twin's JSON line (bench/twin_step.py), or {"error": why}."""
    cmd = [args.twin_python, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                          "twin_step.py"),
           "--backbone", args.backbone, "--img-size", str(args.img_size), "--batch",
           str(args.batch), "--decoder-dim", str(args.decoder_dim), "--experts",
           str(args.experts), "--steps", str(args.steps), "--rounds", str(args.epochs),
           "--device", device, "--amp", precision] + (["--compile"] if compiled else [])
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def gib(n):
    return "-" if n is None else f"{n / 2**30:.2f}"


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
                        help="GPU precisions to time, comma-separated: fp32, amp, fp16, bf16")
    parser.add_argument("--twin", action="store_true", help="also time the PyTorch twin")
    parser.add_argument("--twin-python", default=sys.executable,
                        help="a Python with torch and timm for --twin")
    parser.add_argument("--twin-compile", action="store_true",
                        help="with --twin: also the twin under torch.compile")
    args = parser.parse_args()
    unknown = set(args.precisions.split(",")) - {"fp32", "amp", "fp16", "bf16"}
    if unknown:
        parser.error(f"--precisions: unknown {sorted(unknown)} (fp32, amp, fp16, bf16)")
    data = codext.data.synthetic(args.batch * args.steps, 0, args.img_size, seed=0)
    rows = []  # (device, who, precision, seconds or None, memory or None, note)
    for device in ("cpu", "cuda"):
        if args.device not in ("all", device):
            continue
        if device == "cuda":
            ok, reason = (_device.cuda_status() if _device.build_has_cuda()
                          else (False, "a CPU-only build"))
            if not ok:
                rows.append((device, "codext", "-", None, None, f"not run: {reason}"))
                continue
        for precision in (args.precisions.split(",") if device == "cuda" else ["fp32"]):
            seconds, ran, used = time_steps(device, precision, args, data)
            rows.append((device, "codext", ran, seconds, used, ""))
            if not args.twin:
                continue
            for compiled in ([False, True] if args.twin_compile else [False]):
                twin = time_twin(device, ran, args, compiled)
                who = "twin+compile" if compiled else "twin"
                if "error" in twin:
                    rows.append((device, who, ran, None, None, f"failed: {twin['error']}"))
                    continue
                ms = twin["ms_per_step"]
                rows.append((device, who, ran, ms / 1e3, twin.get("device_used_bytes"),
                             f"codext {ms / 1e3 / seconds:.2f}x faster"))
    print(f"\ntraining step: {args.backbone}, {args.img_size}x{args.img_size}, batch "
          f"{args.batch}, decoder {args.decoder_dim} x {args.experts} experts, "
          f"{codext.build_info()['cpu_threads']} CPU threads")
    print(f"{'device':6s} {'run':>12s} {'precision':>9s} {'ms/step':>9s} {'images/s':>9s} "
          f"{'GiB used':>8s}")
    for device, who, precision, seconds, used, note in rows:
        if seconds is None:
            print(f"{device:6s} {who:>12s} {precision:>9s} {'-':>9s} {'-':>9s} {'-':>8s}  {note}")
        else:
            print(f"{device:6s} {who:>12s} {precision:>9s} {seconds * 1e3:9.1f} "
                  f"{args.batch / seconds:9.1f} {gib(used):>8s}  {note}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
