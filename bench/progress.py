"""What live progress costs: training images/s with and without it.

    python bench/progress.py                 # about 3 minutes on 2 cores
    python bench/progress.py --blocks 40     # steadier numbers on a busy machine
    python bench/progress.py --whole-runs    # also whole train() runs per mode (noisier)

codext.train runs the C step loop in chunks of steps between two progress reports
(codext/_progress.py): about twice a second on a terminal, every log_every steps when
stdout is not one. This measures that cost where it cannot hide in the noise of a shared
machine: one trainer runs blocks of --block-steps optimizer steps, the modes taking turns
block after block, so that a change in the machine's load hits every mode alike:

- off:      the block in one run_epoch call (train(progress=False) does this per epoch);
- lines/10: chunks up to every 10th step with a plain line each (the demo's log_every);
- lines/1:  one run_epoch call and one line per step (log_every 1, the worst case);
- line:     the updating terminal line (chunks of about half a second), drawn to a
            terminal that discards the text.

Each mode's images/s is the median over the blocks, and "vs off" the median of the
per-turn ratios against the adjacent "off" block. Two models: the demo's
(edgenext_xx_small at 64x64, batch 16) and the tiny test model (edgenext_tiny_test at
32x32, batch 4, steps of about 10 ms, where a per-step cost shows most). Goal (issue 11):
within 1 %. --whole-runs adds complete train() runs per mode, images/s from the history
(epoch_seconds), which on a busy machine vary by more than the effect measured.

Measured on the idle 2-core development machine (default settings: 24 turns of 24 steps
per mode, 2 threads):

    model  progress   images/s (median)  vs off (median ratio)    ratio quartiles
    demo   off                    123.9
    demo   lines/10               121.2                 +0.53%    -4.51%    +3.20%
    demo   lines/1                121.4                 +1.91%    -3.76%    +5.40%
    demo   line                   122.8                 +1.11%    -4.81%    +6.55%
    tiny   off                    843.2
    tiny   lines/10               833.8                 +0.74%    -2.89%    +1.90%
    tiny   lines/1                806.9                 -3.36%    -8.80%    +2.06%
    tiny   line                   841.0                 -1.22%    -4.96%    +6.71%

    model   step ms progress   us/report  steps/report    share
    demo      129.1 lines/10         5.3            10   0.000%
    demo      129.1 line            16.0             3   0.004%
    tiny        4.7 lines/10         2.9            10   0.006%
    tiny        4.7 lines/1          2.8             1   0.059%
    tiny        4.7 line             8.1           105   0.002%

The modes codext uses (lines every log_every = 10 steps off a terminal, the updating line on
one) are within 1.2 % of "off" in the median, and a report's own cost is below 0.01 % of the
steps it follows; the per-turn quartiles still spread by about +-5 %, which is the machine's
noise, not progress (a report cannot cost more than it measures on its own). One line per
step of the 5 ms tiny model is the one case that costs visibly (-3.4 %).

Earlier, on the same machine while other jobs ran (load average 7-11), so
the end-to-end ratios are noise of +-5 % (their quartiles spread by +-10 %); the cost of a
report timed on its own is what shows the effect:

    tiny: --blocks 20 --block-steps 48        demo: --blocks 10 --block-steps 12
    model  progress  images/s  vs off (median, quartiles)
    tiny   off         437.1
    tiny   lines/10    445.9   +1.04 %  (-12.5 %, +6.0 %)
    tiny   lines/1     423.6   -4.81 %  (-14.0 %, +5.1 %)
    tiny   line        453.7   +1.40 %  (-9.3 %, +18.1 %)
    demo   off          45.9
    demo   lines/10     47.5   +3.91 %  (-1.4 %, +11.0 %)
    demo   lines/1      45.8   +0.42 %  (-12.6 %, +9.3 %)
    demo   line         46.5   -5.20 %  (-11.1 %, +5.6 %)

    model  step ms  progress  us/report  steps/report  share of their time
    tiny       9.2  lines/10        5.1            10  0.006 %
    tiny       9.2  lines/1         4.9             1  0.054 %
    tiny       9.2  line           10.4            54  0.002 %
    demo     348.5  lines/10        3.0            10  0.000 %
    demo     348.5  line           15.0             1  0.004 %
"""
import argparse
import io
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MODELS = {
    "demo": dict(backbone="edgenext_xx_small", img_size=64, batch_size=16, decoder_dim=32,
                 num_experts=7),
    "tiny": dict(backbone="edgenext_tiny_test", img_size=32, batch_size=4, decoder_dim=8,
                 num_experts=2),
}
MODES = ("off", "lines/10", "lines/1", "line")


class _Terminal(io.TextIOBase):
    """A terminal that throws its text away (the updating line's cost without the screen)."""

    def isatty(self):
        return True

    def write(self, text):
        return len(text)


def make_progress(mode, state, epochs, images_per_step):
    from codext._progress import Progress
    if mode == "off":
        return None
    if mode.startswith("lines"):
        return Progress(state["total_steps"], state["steps_per_epoch"], epochs, images_per_step,
                        log=lambda line: None, log_every=int(mode.split("/")[1]),
                        stream=io.StringIO())
    return Progress(state["total_steps"], state["steps_per_epoch"], epochs, images_per_step,
                    log=lambda line: None, stream=_Terminal(), mode="line")


def report_cost(trainer, images, masks, loss_buf, lr_buf, live, spe, n=2000):
    """{mode: seconds one report costs}: a run_epoch call that runs no step (the binding's
    checks) plus the Progress.steps call, timed over n reports (the step time left out)."""
    import time as _time
    out = {}
    for mode, p in live.items():
        if p is None:
            continue
        p._estimated = True  # the one-off estimate line is not a per-report cost
        t0 = _time.perf_counter()
        for i in range(n):
            trainer.run_epoch(images, masks, loss_buf, lr_buf, max_steps=0)
            p.steps(p._step, 0, 1 + i % (spe - 1) if spe > 1 else 1, float(loss_buf[0]),
                    float(lr_buf[0]))
        out[mode] = (_time.perf_counter() - t0) / n
    return out


def interleaved(model_name, args, overhead):
    """{mode: [images/s per block]}, {mode: [ratio to the adjacent off block]}; fills
    overhead {mode: seconds per report}."""
    import numpy as np
    import codext
    from codext import _C
    cfg = codext.Config(epochs=1000, stage1_epochs=0, synthetic_train=args.n_train,
                        synthetic_test=0, lr=1e-4, seed=0, checkpoint_dir=tempfile.mkdtemp(),
                        amp=False, **MODELS[model_name])
    data = codext.data.synthetic(args.n_train, 0, cfg.img_size, cfg.seed)
    model = codext.Model(cfg)
    trainer = _C.Trainer(model._native, args.n_train, cfg.img_size, cfg.img_size,
                         batch_size=cfg.batch_size, epochs=cfg.epochs, stage1_epochs=0, lr=cfg.lr,
                         seed=cfg.seed)
    state = trainer.state()
    spe = state["steps_per_epoch"]
    loss_buf, lr_buf = np.zeros(spe), np.zeros(spe)
    images, masks = data.train.images, data.train.masks
    live = {m: make_progress(m, state, cfg.epochs, cfg.batch_size) for m in MODES}
    for p in live.values():
        if p is not None:
            p.begin(0)
    pos = {"step": 0}

    def block(mode):
        """Runs args.block_steps steps in `mode` (as codext.train's _run_steps does: the
        position counted here, the loss and lr read from the buffers); (steps, seconds)."""
        p, done = live[mode], 0
        t0 = time.perf_counter()
        while done < args.block_steps:
            want = args.block_steps - done if p is None else min(p.chunk(), args.block_steps - done)
            n = trainer.run_epoch(images, masks, loss_buf, lr_buf, max_steps=want)
            done += n
            pos["step"] += n
            if p is not None:
                step = pos["step"]
                es = (step - 1) % spe + 1
                p.steps(step, (step - 1) // spe, es, float(loss_buf[es - 1]), float(lr_buf[es - 1]))
        return done, time.perf_counter() - t0

    block("off")  # plans the arena
    overhead.update(report_cost(trainer, images, masks, loss_buf, lr_buf, live, spe))
    rates = {m: [] for m in MODES}
    ratios = {m: [] for m in MODES}
    for _ in range(args.blocks):
        off_steps, off_s = block("off")
        off_rate = off_steps * cfg.batch_size / off_s
        rates["off"].append(off_rate)
        for mode in MODES[1:]:
            steps, seconds = block(mode)
            rate = steps * cfg.batch_size / seconds
            rates[mode].append(rate)
            ratios[mode].append(rate / off_rate)
    return rates, ratios


def whole_run(model_name, mode, args):
    import codext
    from codext.train import train
    cfg = codext.Config(epochs=2, stage1_epochs=1, synthetic_train=args.n_train, synthetic_test=0,
                        lr=2e-3, seed=0, checkpoint_dir=tempfile.mkdtemp(), amp=False,
                        **MODELS[model_name])
    data = codext.data.synthetic(args.n_train, 0, cfg.img_size, cfg.seed)
    spe = args.n_train // cfg.batch_size
    state = {"total_steps": spe * cfg.epochs, "steps_per_epoch": spe}
    progress = make_progress(mode, state, cfg.epochs, cfg.batch_size) or False
    h = train(cfg, data, progress=progress, log=lambda line: None).history
    return len(h["step_loss"]) * cfg.batch_size / float(sum(h["epoch_seconds"]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blocks", type=int, default=24, help="turns of every mode")
    p.add_argument("--block-steps", type=int, default=24, help="optimizer steps per block")
    p.add_argument("--n-train", type=int, default=512, help="synthetic training images")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", default="demo,tiny")
    p.add_argument("--whole-runs", type=int, default=0, metavar="ROUNDS",
                   help="also this many rounds of whole train() runs per mode")
    args = p.parse_args(argv)
    import codext
    codext.set_num_threads(args.threads)
    print(f"{args.blocks} turns of {args.block_steps} steps per mode, {args.threads} threads")
    print(f"{'model':6} {'progress':9} {'images/s (median)':>18} {'vs off (median ratio)':>22} "
          f"{'ratio quartiles':>18}")
    costs = {}
    for model in args.models.split(","):
        overhead = {}
        rates, ratios = interleaved(model, args, overhead)
        step_s = MODELS[model]["batch_size"] / statistics.median(rates["off"])
        costs[model] = (overhead, step_s)
        for mode in MODES:
            med = statistics.median(rates[mode])
            if mode == "off":
                print(f"{model:6} {mode:9} {med:18.1f} {'':>22} {'':>18}", flush=True)
                continue
            q = statistics.quantiles(ratios[mode], n=4)
            print(f"{model:6} {mode:9} {med:18.1f} {100 * (statistics.median(ratios[mode]) - 1):+21.2f}% "
                  f"{100 * (q[0] - 1):+8.2f}% {100 * (q[2] - 1):+8.2f}%", flush=True)
    # the same cost without the noise: what one report takes, against the work between two
    print("\ncost of one report (a run_epoch call that runs no step + Progress.steps), and its "
          "share of the steps between two reports")
    print(f"{'model':6} {'step ms':>8} {'progress':9} {'us/report':>10} {'steps/report':>13} {'share':>8}")
    for model, (overhead, step_s) in costs.items():
        for mode, cost in overhead.items():
            per = {"lines/10": 10, "lines/1": 1}.get(mode) or max(1, int(0.5 / step_s))
            print(f"{model:6} {1000 * step_s:8.1f} {mode:9} {1e6 * cost:10.1f} {per:13d} "
                  f"{100 * cost / (per * step_s):7.3f}%", flush=True)
        for _ in range(args.whole_runs):
            runs = {mode: whole_run(model, mode, args) for mode in MODES}
            print(f"{model:6} whole train() runs, images/s: " +
                  "  ".join(f"{m} {r:.1f}" for m, r in runs.items()), flush=True)


if __name__ == "__main__":
    main()
