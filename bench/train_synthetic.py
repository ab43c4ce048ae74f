"""It must learn, as well and as fast as PyTorch: codext.train against the PyTorch twin.

    python bench/train_synthetic.py                  # about 10 minutes on 2 cores
    python bench/train_synthetic.py --epochs 40      # about 30 minutes: texture-level learning
    python bench/train_synthetic.py --epochs 4 --n-train 256    # a quick look

Trains edgenext_xx_small at 64x64 on the synthetic camouflage set on the CPU twice, with
the same recipe (codext.Config), the same initial weights and the same batches:

- codext: codext.train(config, data), the C trainer (no Python in the step loop).
- twin:   tools/cod_twin.py's Trainer (torch + timm, float32) in a second interpreter that
          has torch (--twin-python; default $CODEXT_TWIN_PYTHON, else the one that
          tools/reference-python.sh prints).
          It starts from codext's initial weights (the parameter names are the same), and
          each step's batch is built with codext's augmentation from the rows codext's
          trainer takes (the epoch permutation of _C.Trainer.permutation, augmentation keyed
          by (seed, epoch, row)), so both see identical inputs; the step-0 loss is printed
          for both as the check.

Both evaluate the EMA weights on the test split after every epoch (predicting at each GT's
size, scored by codext.metrics) and report the best epoch by S-measure, as codext picks
best.safetensors. The table: training images/s (training steps only), minutes (the whole
run, evaluation included), test S-measure and IoU, the untrained model's scores, and the
speed ratio. Goals (issue 4): codext's IoU within 0.02 of the twin's, codext at least as
fast. Both use --threads CPU threads. Timings on a shared machine are noisy.

The recipe is Config.demo() at 64x64 as it was before the demo moved to 32x32 (bench/demo.py
measures today's demo), with what a short from-scratch run needs: lr 2e-3,
backbone_lr_mult 1 (the backbone starts random, so stage 2 trains it at full rate) and EMA
0.99 (0.999 averages over more steps than the run has). Measured on the 2-core development
machine (shared with other jobs; torch 1.13 with 2 threads for the twin):

  default, 1024 images x 16 epochs (2 frozen), 1024 steps, about 11 minutes in all:
                                 codext  PyTorch twin
    train images/s                133.6          33.9
    minutes (whole run)            2.25          8.45
    test S-measure (best epoch)  0.4928        0.4913
    test IoU (best epoch)        0.3101        0.3113
    untrained model: S 0.3426, IoU 0.0672; step-0 losses equal to 3.6e-08
    -> 3.94x the twin's throughput, IoU difference -0.0011

  --epochs 40 (2560 steps, 30 minutes): past the point (about epoch 15) where the models
  start to find the objects by texture rather than by position and colour:
    train images/s                121.9          29.5
    minutes (whole run)            6.14         24.10
    test S-measure (best epoch)  0.6474        0.6381
    test IoU (best epoch)        0.4679        0.4566
    -> 4.14x the twin's throughput, IoU difference +0.0113

Both runs see the same batches and start from the same weights; float32 rounding (different
summation orders) makes the trajectories drift apart slowly, so the final numbers agree to
about 0.01, not bit for bit.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
REFERENCE_PYTHON_SCRIPT = os.path.join(ROOT, "tools", "reference-python.sh")


def reference_python():
    """The interpreter with torch and timm that tools/reference-python.sh provides."""
    res = subprocess.run(["bash", REFERENCE_PYTHON_SCRIPT], stdout=subprocess.PIPE, text=True)
    if res.returncode != 0 or not res.stdout.strip():
        raise RuntimeError("tools/reference-python.sh found no Python with torch and timm "
                           "(see its message above); pass --twin-python or --skip-twin")
    return res.stdout.strip().splitlines()[-1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=1024, help="synthetic training images")
    p.add_argument("--n-test", type=int, default=256, help="synthetic test images")
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--stage1-epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--backbone", default="edgenext_xx_small")
    p.add_argument("--decoder-dim", type=int, default=32)
    p.add_argument("--num-experts", type=int, default=7)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--backbone-lr-mult", type=float, default=1.0,
                   help="stage-2 backbone lr factor (1: the backbone starts from random weights)")
    p.add_argument("--ema-decay", type=float, default=0.99, help="0.99 suits a run of ~1000 steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="CPU threads for both")
    p.add_argument("--twin-python", default=os.environ.get("CODEXT_TWIN_PYTHON"),
                   help="a Python with torch and timm (default: tools/reference-python.sh)")
    p.add_argument("--skip-twin", action="store_true", help="only codext")
    p.add_argument("--json", metavar="FILE", help="also write both runs' numbers as JSON")
    p.add_argument("--twin-worker", metavar="SPEC", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def make_config(args, checkpoint_dir):
    import codext
    extra = dict(synthetic_train=args.n_train, synthetic_test=args.n_test)
    return codext.Config.demo(backbone=args.backbone, img_size=args.img_size, batch_size=args.batch_size,
                              epochs=args.epochs, stage1_epochs=args.stage1_epochs,
                              decoder_dim=args.decoder_dim, num_experts=args.num_experts, lr=args.lr,
                              backbone_lr_mult=args.backbone_lr_mult, ema_decay=args.ema_decay,
                              seed=args.seed, num_threads=args.threads, checkpoint_dir=checkpoint_dir,
                              **extra)


def initial_model(cfg):
    """The model codext.train starts from (built from the Config's seed), on the CPU."""
    from codext.train import _new_model
    return _new_model(cfg, "cpu")


def epoch_permutation(seed, epoch, n):
    """The rows of epoch `epoch` in the order codext's trainer takes them."""
    from codext import _C
    return np.asarray(_C.Trainer.permutation(seed, epoch, n), dtype=np.int64)


# ---- codext ------------------------------------------------------------------------------------

def run_codext(args, cfg, data, log):
    from codext.train import train
    t0 = time.perf_counter()
    result = train(cfg, data, progress=True, log=lambda *a, **k: log("codext", " ".join(map(str, a))))
    total = time.perf_counter() - t0
    h = result.history
    steps = len(h["step_loss"])
    images = steps * cfg.batch_size * cfg.accumulation_steps
    train_seconds = float(np.sum(h["epoch_seconds"]))
    return {"images": images, "train_seconds": train_seconds, "total_seconds": total,
            "step_loss": [float(v) for v in h["step_loss"]],
            "epoch_loss": [float(v) for v in h["epoch_loss"]],
            "epoch_sm": [float(v) for v in h["val_sm"]], "epoch_iou": [float(v) for v in h["val_iou"]],
            "best": {k: float(v) for k, v in result.metrics.items() if np.ndim(v) == 0}}


# ---- the twin (runs in the torch interpreter) ----------------------------------------------------

def twin_worker(spec_path):
    import torch
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import codext
    from codext import _C
    from cod_twin import CODModel, Trainer

    with open(spec_path) as f:
        spec = json.load(f)
    cfg = codext.Config.from_dict(spec["config"])
    torch.set_num_threads(spec["threads"])
    codext.set_num_threads(spec["threads"])
    torch.manual_seed(cfg.seed)
    data = codext.data.synthetic(spec["n_train"], spec["n_test"], cfg.img_size, cfg.seed)
    model = CODModel(cfg.backbone, decoder_dim=cfg.decoder_dim, num_experts=cfg.num_experts,
                     moe_top_k=cfg.moe_top_k, drop_path_rate=cfg.drop_path_rate)
    tensors, _, _ = _C.safetensors_load(spec["init"])
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}, strict=True)
    B, A = cfg.batch_size, cfg.accumulation_steps
    n_train = len(data.train)
    spe = n_train // (B * A)
    trainer = Trainer(model, cfg.stage1_epochs * spe, (cfg.epochs - cfg.stage1_epochs) * spe, lr=cfg.lr,
                      stage2_lr=cfg.stage2_lr, backbone_lr_mult=cfg.backbone_lr_mult,
                      weight_decay=cfg.weight_decay, betas=cfg.betas, eps=cfg.eps,
                      grad_clip=cfg.grad_clip or 0.0, ema_decay=cfg.ema_decay, scheduler=cfg.scheduler,
                      warmup_steps=cfg.warmup_steps(spe), min_lr=cfg.min_lr,
                      ds_weight=cfg.ds_weight if cfg.deep_supervision else 0.0,
                      balance_weight=cfg.balance_weight)
    out = {"images": 0, "train_seconds": 0.0, "step_loss": [], "epoch_loss": [], "epoch_sm": [],
           "epoch_iou": [], "epoch_metrics": []}
    t_start = time.perf_counter()
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        perm = epoch_permutation(cfg.seed, epoch, n_train)
        losses = []
        for s in range(spe):
            micro = []
            for m in range(A):
                rows = perm[(s * A + m) * B:(s * A + m + 1) * B]
                x, y = data.train.batch(rows, seed=cfg.seed, epoch=epoch)
                micro.append((torch.from_numpy(x), torch.from_numpy(y)))
            losses.append(trainer.step(micro)["loss"])
        seconds = time.perf_counter() - t0
        out["train_seconds"] += seconds
        out["images"] += spe * B * A
        out["step_loss"] += losses
        out["epoch_loss"].append(float(np.mean(losses)))
        metrics = twin_evaluate(model, trainer.ema.shadow, data.test)
        out["epoch_metrics"].append(metrics)
        out["epoch_sm"].append(metrics["sm"])
        out["epoch_iou"].append(metrics["iou"])
        print(f"epoch {epoch + 1}/{cfg.epochs} stage {trainer.stage} loss {np.mean(losses):.4f} "
              f"{spe * B * A / seconds:.1f} img/s  val S {metrics['sm']:.4f} IoU {metrics['iou']:.4f}",
              flush=True)
    out["total_seconds"] = time.perf_counter() - t_start
    best = int(np.argmax(out["epoch_sm"]))
    out["best"] = out["epoch_metrics"][best]
    with open(spec["out"], "w") as f:
        json.dump(out, f)


def twin_evaluate(model, shadow, split, batch=32):
    """EMA weights, sigmoid(p1) at each GT's size, codext.metrics.evaluate."""
    import torch
    import codext
    params = dict(model.named_parameters())
    saved = {n: p.detach().clone() for n, p in params.items()}
    preds = []
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(shadow[n])
        for start in range(0, len(split), batch):
            idx = np.arange(start, min(start + batch, len(split)))
            x, _ = split.batch(idx, train=False)
            probs = torch.sigmoid(model(torch.from_numpy(x))["preds"][0]).numpy()[:, 0]
            for i, prob in zip(idx, probs):
                gt = split.masks_full[i]
                preds.append(prob if prob.shape == gt.shape else codext.data.resize_probs(prob, gt.shape))
        for n, p in params.items():
            p.copy_(saved[n])
    m = codext.metrics.evaluate(preds, list(split.masks_full))
    return {k: float(v) for k, v in m.items() if np.ndim(v) == 0}


def run_twin(args, cfg, init_path, workdir, log):
    spec = {"config": cfg.to_dict(), "threads": args.threads, "n_train": args.n_train, "n_test": args.n_test,
            "init": init_path, "out": os.path.join(workdir, "twin.json")}
    spec_path = os.path.join(workdir, "twin_spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    twin_python = args.twin_python or reference_python()
    proc = subprocess.Popen([twin_python, os.path.abspath(__file__), "--twin-worker", spec_path],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    for line in proc.stdout:
        log("twin", line.rstrip())
    if proc.wait() != 0:
        raise RuntimeError(f"the twin failed (exit {proc.returncode}); see its output above")
    with open(spec["out"]) as f:
        return json.load(f)


# ---- report ------------------------------------------------------------------------------------

def table(cx, tw, untrained):
    rows = [("train images/s", lambda r: f"{r['images'] / r['train_seconds']:.1f}"),
            ("minutes (whole run)", lambda r: f"{r['total_seconds'] / 60:.2f}"),
            ("test S-measure (best epoch)", lambda r: f"{r['best']['sm']:.4f}"),
            ("test IoU (best epoch)", lambda r: f"{r['best']['iou']:.4f}"),
            ("test IoU (last epoch)", lambda r: f"{r['epoch_iou'][-1]:.4f}"),
            ("test MAE (best epoch)", lambda r: f"{r['best']['mae']:.4f}"),
            ("step-0 loss", lambda r: f"{r['step_loss'][0]:.5f}"),
            ("last-epoch mean loss", lambda r: f"{r['epoch_loss'][-1]:.4f}")]
    lines = [f"{'':30s}{'codext':>12s}{'PyTorch twin' if tw else '':>14s}"]
    for label, fmt in rows:
        lines.append(f"{label:30s}{fmt(cx):>12s}{fmt(tw) if tw else '':>14s}")
    lines.append(f"{'untrained model: S / IoU':30s}{untrained['sm']:.4f} / {untrained['iou']:.4f}")
    if tw:
        speed = (cx["images"] / cx["train_seconds"]) / (tw["images"] / tw["train_seconds"])
        wall = tw["total_seconds"] / cx["total_seconds"]
        diff = cx["best"]["iou"] - tw["best"]["iou"]
        lines.append(f"speed ratio codext / twin: {speed:.2f}x training throughput, {wall:.2f}x wall time")
        lines.append(f"goals: IoU within 0.02 of the twin's: {'yes' if abs(diff) <= 0.02 else 'NO'} "
                     f"(difference {diff:+.4f}); codext at least as fast: {'yes' if speed >= 1 else 'NO'}")
        d0 = abs(cx["step_loss"][0] - tw["step_loss"][0]) / abs(tw["step_loss"][0])
        lines.append(f"same start check: step-0 losses differ by {d0:.1e} relative"
                     + ("" if d0 < 1e-4 else "  <-- NOT the same weights or batch"))
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.twin_worker:
        return twin_worker(args.twin_worker)
    import codext
    codext.set_num_threads(args.threads)
    t_bench = time.perf_counter()

    def log(who, text):
        print(f"[{who:6s} {time.perf_counter() - t_bench:6.0f}s] {text}", flush=True)

    with tempfile.TemporaryDirectory(prefix="codext-bench-") as workdir:
        cfg = make_config(args, os.path.join(workdir, "checkpoints"))
        print(f"codext {codext.__version__}: {cfg.backbone} at {cfg.img_size}x{cfg.img_size}, D {cfg.decoder_dim}, "
              f"{cfg.num_experts} experts, batch {cfg.batch_size}, {cfg.epochs} epochs ({cfg.stage1_epochs} frozen), "
              f"lr {cfg.lr}, {cfg.scheduler}, EMA {cfg.ema_decay}; synthetic {args.n_train} train / {args.n_test} "
              f"test; {args.threads} threads", flush=True)
        data = codext.data.synthetic(args.n_train, args.n_test, cfg.img_size, cfg.seed)
        model = initial_model(cfg)
        init_path = os.path.join(workdir, "init.safetensors")
        model.save(init_path)
        from codext.train import evaluate
        untrained = evaluate(model, data.test)
        del model
        cx = run_codext(args, cfg, data, log)
        tw = None if args.skip_twin else run_twin(args, cfg, init_path, workdir, log)
    print()
    print(table(cx, tw, untrained))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"codext": cx, "twin": tw, "config": cfg.to_dict(),
                       "untrained": {k: float(v) for k, v in untrained.items() if np.ndim(v) == 0}}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
