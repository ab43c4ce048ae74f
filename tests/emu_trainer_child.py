"""The child process of tests/test_emu_trainer.py: the tiny model and the C trainer on the
emulated CUDA library (CODEXT_CUDA_EMULATED) against the same on the CPU backend.

    python emu_trainer_child.py OUT.json [all|train|codext.train|sm60]

Writes {"checks": {name: {"max_rel": x, "tol": t, "ok": bool, ...}}, "timings": {...}} to
OUT.json, or {"missing_ops": message} when the CUDA backend cannot run the model yet (the
message names every op it lacks). "train" runs only the training part (the planted-bug
run); "codext.train" runs codext.train end to end with Config.device "cuda" and "cpu"
(codext_train below); "sm60" trains with codext.train on an emulated P100 (old_gpu below).
Every comparison is recorded, not asserted, so that the parent can say which ones a
broken library fails; max_rel is max |device - cpu| / max |cpu| over a tensor (0/0 = 0)."""
import json
import os
import sys
import tempfile
import time

EMULATED = os.environ.get("CODEXT_CUDA_EMULATED", "")
if EMULATED:  # before _C opens the library: it reads this variable on first use
    os.environ["CODEXT_CUDA_LIBRARY"] = EMULATED

import numpy as np  # noqa: E402

import codext  # noqa: E402
from codext import _C  # noqa: E402

SIZE = 32
MODEL = dict(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=7, img_size=SIZE, seed=3)
# Optimizer steps of 2 images (one per epoch): step 0 in stage 1 (frozen backbone), the
# stage switch at step 1 (a fresh AdamW), steps 2 and 3 in stage 2; loss scaling on, with
# an overflow forced in step 1 (the scale halves, the step runs again) and an out of memory
# forced in step 2 (the micro-batch halves to 1 image, accumulation doubles, the step runs
# again). Steps 0-2 compare the two trainers; step 3 continues from saved states.
N_TRAIN, BATCH = 2, 2
TRAINER = dict(batch_size=BATCH, accumulation_steps=1, epochs=4, stage1_epochs=1, lr=2e-3,
               backbone_lr_mult=0.5, grad_clip=0.5, ema_decay=0.9, seed=5, loss_scaling=True,
               loss_scale_init=1024.0, loss_scale_growth_interval=2)
# fp32 tolerances, max |a - b| / max |b| per tensor. The ops round differently from the
# CPU's (gradients agree to ~3e-5 of each tensor's largest); AdamW divides each element by
# its own gradient's size, so where a gradient is near zero (at the level of that rounding
# noise) the two updates differ by up to ~lr: after 3 steps the largest weight difference
# is ~7e-4 lr absolute, but 7e-5 of a small tensor's largest value (a LayerNorm bias that
# started at 0), the moments ~3e-4. One step from the same state agrees to ~4e-6.
TOL_FORWARD, TOL_GRADS = 1e-5, 1e-4
TOL_WEIGHTS, TOL_MOMENTS = 3e-4, 1e-3   # 3 steps from the same weights, apart
TOL_ONE_STEP = 1e-5                     # one step from the same state

checks, timings = {}, {}


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.max(np.abs(b)) if b.size else 0.0
    diff = np.max(np.abs(a - b)) if b.size else 0.0
    if not np.all(np.isfinite(a)) or not np.all(np.isfinite(b)):
        return float("inf")
    return float(diff / scale) if scale > 0 else float(diff)


def check(name, pairs, tol):
    """pairs: [(label, device value, cpu value)]; records the worst relative difference."""
    worst, where = 0.0, None
    for label, a, b in pairs:
        if np.shape(a) != np.shape(b):
            worst, where = float("inf"), f"{label}: shape {np.shape(a)} vs {np.shape(b)}"
            break
        r = rel(a, b)
        if r > worst or where is None:
            worst, where = r, label
    checks[name] = {"max_rel": worst, "tol": tol, "ok": bool(worst <= tol), "worst": where}


def exact(name, a, b):
    a, b = np.asarray(a), np.asarray(b)
    same = a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
    checks[name] = {"max_rel": 0.0 if same else float("inf"), "tol": 0.0, "ok": bool(same),
                    "worst": None if same else f"{a.tolist()[:8]} vs {b.tolist()[:8]}"}


def data(n, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    masks = np.zeros((n, SIZE, SIZE), np.uint8)
    for i in range(n):
        cy, cx, r = rng.integers(8, 24), rng.integers(8, 24), rng.integers(4, 10)
        masks[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 255
    return images, masks


def model(device, **changes):
    return codext.Model(**dict(MODEL, **changes), device=device)


def trainer(m, **changes):
    return _C.Trainer(m._native, N_TRAIN, SIZE, SIZE, **dict(TRAINER, **changes))


def timed(name, fn, *args, **kwargs):
    began = time.perf_counter()
    result = fn(*args, **kwargs)
    timings[name] = round(time.perf_counter() - began, 2)
    return result


def forward_and_gradients(cpu, dev):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    images, masks = data(2, 8)
    y = (masks[:, None] > 0).astype(np.float32)
    out_c = cpu.forward(x)
    out_d = timed("forward", dev.forward, x)
    check("forward_outputs", [(f"out{k}", d, c) for k, (d, c) in enumerate(zip(out_d, out_c))],
          TOL_FORWARD)
    for train_backbone in (True, False):
        what = "stage2" if train_backbone else "stage1"
        parts_c, grads_c = cpu.loss_and_grads(x, y, train_backbone)
        parts_d, grads_d = timed(f"loss_and_grads_{what}", dev.loss_and_grads, x, y, train_backbone)
        keys = sorted(k for k in parts_c if k != "total") + ["total"]
        check(f"loss_parts_{what}", [(k, parts_d[k], parts_c[k]) for k in keys], TOL_FORWARD)
        check(f"gradients_{what}", [(n, grads_d[n], grads_c[n]) for n in grads_c], TOL_GRADS)


def python_api(cpu, dev):
    """A CUDA model hands out host copies, never views of device memory; writes go through
    an explicit upload (load_state_dict -> upload_params)."""
    p = dev._native.params()
    g = dev._native.grads()
    copies = all(a.flags.owndata and a.base is None for a in (p, g)) and dev._params is None
    before = p.copy()
    p[:] = 0.0  # a copy: the model does not change
    unchanged = dev._native.params().tobytes() == before.tobytes()
    state = cpu.state_dict()
    state = {k: v + np.float32(0.25) for k, v in state.items()}
    dev.load_state_dict(state)
    cpu.load_state_dict(state)
    uploaded = dev._native.params().tobytes() == cpu._native.params().tobytes()
    ok = bool(copies and unchanged and uploaded and dev._native.backend() == "cuda")
    checks["python_host_copies"] = {"max_rel": 0.0 if ok else float("inf"), "tol": 0.0,
                                    "worst": None if ok else f"copies {copies}, unchanged "
                                    f"{unchanged}, uploaded {uploaded}", "ok": ok}


def overflow_stops(cpu, dev):
    """Without loss scaling a non-finite gradient stops the run before the update, with the
    CPU trainer's message (the parameter found in a host copy of the device's gradients);
    the device's weights, EMA and step counts stay as they were."""
    images, masks = data(N_TRAIN, 9)
    messages = []
    for m in (cpu, dev):
        t = trainer(m, loss_scaling=False)
        t.inject_overflow(0)
        before = (m._native.params(), t.ema(), t.param_steps())
        try:
            t.run_epoch(images, masks)
            messages.append(None)
        except RuntimeError as e:
            messages.append(str(e))
        after = (m._native.params(), t.ema(), t.param_steps())
        messages.append(all(a.tobytes() == b.tobytes() for a, b in zip(before, after)))
    ok = bool(messages[0] and messages[0] == messages[2] and "is not finite" in messages[0]
              and messages[1] and messages[3])
    checks["overflow_stops_the_run"] = {"max_rel": 0.0 if ok else float("inf"), "tol": 0.0,
                                        "worst": None if ok else repr(messages), "ok": ok}


def sparse_moe():
    """Sparse MoE (top-2 of 7): the optimizer mask changes from step to step (experts no
    image chose are left out), so the device's copy of it is uploaded again; two steps
    (stage 1 and the stage switch) give the CPU's step counts and close weights."""
    images, masks = data(N_TRAIN, 9)
    m_cpu, m_dev = model("cpu", moe_top_k=2), model("cuda", moe_top_k=2)
    t_cpu, t_dev = trainer(m_cpu), trainer(m_dev)
    for _ in range(2):
        t_cpu.run_epoch(images, masks)
        timed("sparse_step", t_dev.run_epoch, images, masks)
    steps = t_cpu.param_steps()
    skipped = bool(np.any((steps == 0) & np.array(["experts" in n for n, _, _, _ in m_cpu._table])))
    exact("sparse_param_steps", t_dev.param_steps(), steps)
    checks["sparse_param_steps"]["ok"] &= skipped  # some expert was left out of a step
    for name, (a, b) in state_pairs(t_dev, t_cpu, m_dev, m_cpu).items():
        check(f"sparse_{name}", per_param(m_cpu, a, b),
              TOL_MOMENTS if name.startswith("exp_avg") else TOL_WEIGHTS)


def checkpointing_on_the_device():
    """Gradient checkpointing on the device (stage 2 keeps only the backbone's stage inputs
    and outputs; the backward recomputes each stage): after a stage-1 step and two stage-2
    steps the weights and EMA are the plain device run's, bit for bit."""
    images, masks = data(N_TRAIN, 9)
    runs = []
    for checkpointing in (False, True):
        m = model("cuda")
        t = trainer(m, gradient_checkpointing=checkpointing)
        for epoch in range(3):
            timed(f"checkpointing{int(checkpointing)}_step{epoch}", t.run_epoch, images, masks)
        runs.append((m._native.params(), t.ema(), m.activation_bytes()))
    exact("device_checkpointing_weights", runs[1][0], runs[0][0])
    exact("device_checkpointing_ema", runs[1][1], runs[0][1])
    # and it did checkpoint: its arena is the smaller one
    checks["device_checkpointing_weights"]["ok"] &= bool(runs[1][2] < runs[0][2])
    checks["device_checkpointing_weights"]["worst"] = f"arena bytes {runs[1][2]} vs {runs[0][2]}"


def state_pairs(t_dev, t_cpu, m_dev, m_cpu):
    return {"weights": (m_dev._native.params(), m_cpu._native.params()),
            "ema": (t_dev.ema(), t_cpu.ema()),
            "exp_avg": (t_dev.exp_avg(), t_cpu.exp_avg()),
            "exp_avg_sq": (t_dev.exp_avg_sq(), t_cpu.exp_avg_sq())}


def per_param(m, flat_a, flat_b):
    return [(name, flat_a[off:off + int(np.prod(shape))], flat_b[off:off + int(np.prod(shape))])
            for name, shape, off, _ in m._table]


def training():
    images, masks = data(N_TRAIN, 9)
    m_cpu, m_dev = model("cpu"), model("cuda")
    t_cpu, t_dev = trainer(m_cpu), trainer(m_dev)
    assert t_dev.backend() == "cuda" and t_cpu.backend() == "cpu"
    for t in (t_cpu, t_dev):
        t.inject_overflow(1)
        t.inject_oom(2)
    steps = []
    for epoch in range(3):
        lc, ld = np.zeros(1), np.zeros(1)
        t_cpu.run_epoch(images, masks, lc)
        timed(f"train_step{epoch}", t_dev.run_epoch, images, masks, ld)
        steps.append((t_dev.last_step(), t_cpu.last_step(), ld[0], lc[0]))
    check("step_losses", [(f"step{i}", s[2], s[3]) for i, s in enumerate(steps)], TOL_FORWARD)
    check("step_grad_norms", [(f"step{i}", s[0]["grad_norm"], s[1]["grad_norm"])
                              for i, s in enumerate(steps)], TOL_GRADS)
    check("step_lrs", [(f"step{i}.{k}", s[0][k], s[1][k]) for i, s in enumerate(steps)
                       for k in ("lr_head", "lr_backbone", "ema_decay")], 0.0)
    sd, sc = t_dev.state(), t_cpu.state()
    keys = ("step", "epoch", "stage", "stage_step", "ema_updates", "loss_scale",
            "loss_scale_good_steps", "overflow_retries", "oom_halvings", "batch_size",
            "accumulation_steps")
    exact("run_position", [sd[k] for k in keys], [sc[k] for k in keys])
    checks["retries_happened"] = {"max_rel": 0.0, "tol": 0.0, "worst": None,
                                  "ok": sc["overflow_retries"] == 1 and sc["oom_halvings"] == 1}
    exact("param_steps", t_dev.param_steps(), t_cpu.param_steps())
    # the device trainer's batches came through the prefetch and the copy stream: built by
    # the step itself the first of each one-step epoch (3) and the first of each run again
    # (the overflow retry of step 1, the halved step 2), by the worker the second
    # micro-batch of the halved step; the CPU trainer builds its own (no prefetch default)
    ok = (sd["prefetch_misses"], sd["prefetch_hits"], sc["prefetch_misses"],
          sc["prefetch_hits"]) == (5, 1, 0, 0) and sd["data_wait_seconds"] > 0
    checks["device_prefetch"] = {"max_rel": 0.0, "tol": 0.0, "ok": ok,
                                 "worst": None if ok else {k: (sd[k], sc[k]) for k in (
                                     "prefetch_misses", "prefetch_hits", "data_wait_seconds")}}
    for name, (a, b) in state_pairs(t_dev, t_cpu, m_dev, m_cpu).items():
        check(f"after3_{name}", per_param(m_cpu, a, b),
              TOL_MOMENTS if name.startswith("exp_avg") else TOL_WEIGHTS)
    return m_cpu, m_dev, t_cpu, t_dev, images, masks


def state_files(m_cpu, m_dev, t_cpu, t_dev, images, masks):
    """A state saved by the device trainer is the CPU format: a CPU trainer loads it, and
    saving it again gives the same tensors and scalars; the way back too. Both then continue
    from the device run's state and agree."""
    tmp = tempfile.mkdtemp()
    dev_file, again, cpu_file, back = (os.path.join(tmp, n) for n in
                                       ("dev.safetensors", "again.safetensors", "cpu.safetensors",
                                        "back.safetensors"))
    t_dev.save_state(dev_file, {"note": "device"})
    # a fresh CPU run from the device run's weights and state
    m_c2 = model("cpu")
    m_c2.load_state_dict(m_dev.state_dict())
    t_c2 = trainer(m_c2, batch_size=1, accumulation_steps=2)
    meta = t_c2.load_state(dev_file)
    t_c2.save_state(again, {"note": "device"})
    a, meta_a, _ = _C.safetensors_load(dev_file)
    b, meta_b, _ = _C.safetensors_load(again)
    same = sorted(a) == sorted(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)
    checks["device_state_loads_on_cpu"] = {"max_rel": 0.0 if same and meta_a == meta_b else
                                           float("inf"), "tol": 0.0, "worst": None,
                                           "ok": bool(same and meta_a == meta_b and
                                                      meta["note"] == "device")}
    # the CPU trainer's own state into a fresh device trainer, and back out of device memory
    t_cpu.save_state(cpu_file)
    m_d2 = model("cuda")
    m_d2.load_state_dict(m_cpu.state_dict())
    t_d2 = trainer(m_d2, batch_size=1, accumulation_steps=2)
    t_d2.load_state(cpu_file)
    t_d2.save_state(back)
    a, meta_a, _ = _C.safetensors_load(cpu_file)
    b, meta_b, _ = _C.safetensors_load(back)
    same = sorted(a) == sorted(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)
    checks["cpu_state_loads_on_device"] = {"max_rel": 0.0 if same else float("inf"), "tol": 0.0,
                                           "worst": None, "ok": bool(same and meta_a == meta_b)}
    # step 3 from the device run's state: on the device, and on the CPU trainer that loaded
    # it (both with the micro-batch split the out-of-memory retry left)
    timed("train_step3", t_dev.run_epoch, images, masks)
    t_c2.run_epoch(images, masks)
    t_cpu.run_epoch(images, masks)
    for name, (a, b) in state_pairs(t_dev, t_c2, m_dev, m_c2).items():
        check(f"continued_{name}", per_param(m_cpu, a, b), TOL_ONE_STEP)
    for name, (a, b) in state_pairs(t_c2, t_cpu, m_c2, m_cpu).items():
        check(f"continued_cpu_{name}", per_param(m_cpu, a, b),
              TOL_MOMENTS if name.startswith("exp_avg") else TOL_WEIGHTS)
    exact("continued_param_steps", t_c2.param_steps(), t_dev.param_steps())


# codext.train end to end (issue 10): the same run with Config.device "cuda" and "cpu". Two
# epochs of two optimizer steps (4 synthetic images, batch 2): stage 1, then the stage
# switch; validation of the EMA weights (on the device in the cuda run) after each epoch.
RUN = dict(backbone="edgenext_tiny_test", img_size=SIZE, decoder_dim=8, num_experts=3,
           batch_size=2, epochs=2, stage1_epochs=1, lr=2e-3, ema_decay=0.9, seed=5,
           synthetic_train=4, synthetic_test=2, amp=False)
# Validation scores of the same weights predicted on the device and on the CPU: the outputs
# agree to ~1e-6 relative (forward_outputs), so continuous scores (S-measure, MAE) agree to
# about that; 1e-4 leaves room without hiding a wrong model (a mis-uploaded EMA moves them
# by 1e-2 or more). Thresholded scores (IoU, Dice) may flip a pixel and are not compared.
TOL_SCORES = 1e-4


def codext_train():
    """Config.device "cuda" against "cpu" through codext.train: "auto" resolves to the
    emulated GPU; the step losses agree to TOL_FORWARD (as the C trainer's do: the forward's
    rounding differences, ~1e-7 on the loss, plus weights ~1e-4 apart after 3 updates),
    but not bit for bit (the cuda run did run on the device); the lrs are identical; the
    last weights (loaded with codext.load on the CPU) agree to TOL_WEIGHTS; the device's
    validation scores equal the CPU's evaluation of the best checkpoint it wrote; the cuda
    run's folder resumes with Config.device "cpu" (device is free in a resume)."""
    from codext import _device
    resolved = _device.resolve("auto")
    named = _device.describe("cuda:0")
    ok = resolved == ("cuda:0", None) and "device 0:" in named
    checks["auto_is_the_gpu"] = {"max_rel": 0.0 if ok else float("inf"), "tol": 0.0, "ok": ok,
                                 "worst": None if ok else f"{resolved}, {named}"}
    results, lines = {}, []
    for device in ("cpu", "cuda"):
        cfg = codext.Config(**RUN, device=device, checkpoint_dir=tempfile.mkdtemp())
        # progress through a list: the start line names the device (chunks change nothing)
        results[device] = timed(f"codext.train({device})", codext.train, cfg,
                                progress=device == "cuda", log=lines.append)
    cpu, dev = results["cpu"], results["cuda"]
    ok = dev.device == "cuda:0" and cpu.device == "cpu" and any(
        "training on cuda:0 (device 0:" in line for line in lines)
    checks["train_ran_on_the_device"] = {"max_rel": 0.0 if ok else float("inf"), "tol": 0.0,
                                         "ok": ok, "worst": None if ok else
                                         f"{dev.device}, {cpu.device}, {lines[:1]}"}
    losses_d, losses_c = dev.history["step_loss"], cpu.history["step_loss"]
    check("train_step_losses", [(f"step{i}", d, c) for i, (d, c) in
                                enumerate(zip(losses_d, losses_c))], TOL_FORWARD)
    checks["train_step_losses"]["ok"] &= bool(len(losses_d) == 4 and len(losses_c) == 4)
    # device rounding differs from the CPU's: equal bits would mean it trained on the CPU
    not_bitwise = losses_d.tobytes() != losses_c.tobytes()
    checks["train_losses_not_the_cpus_bits"] = {"max_rel": 0.0, "tol": 0.0, "ok": not_bitwise,
                                                "worst": None if not_bitwise else "identical"}
    check("train_epoch_losses", [("epoch_loss", dev.history["epoch_loss"],
                                  cpu.history["epoch_loss"])], TOL_FORWARD)
    exact("train_step_lrs", dev.history["step_lr"], cpu.history["step_lr"])
    last_d, last_c = codext.load(dev.last_checkpoint), codext.load(cpu.last_checkpoint)
    sd, sc = last_d.state_dict(), last_c.state_dict()
    check("train_last_weights", [(n, sd[n], sc[n]) for n in sc], TOL_WEIGHTS)
    # the EMA weights reach the device's validation model: its scores follow the CPU run's,
    # and both runs keep the same epoch's EMA as best.safetensors
    check("train_val_scores", [(k, dev.history[k], cpu.history[k]) for k in ("val_sm", "val_mae")],
          TOL_SCORES)
    best_d, best_c = codext.load(dev.best_checkpoint), codext.load(cpu.best_checkpoint)
    sd, sc = best_d.state_dict(), best_c.state_dict()
    check("train_best_weights", [(n, sd[n], sc[n]) for n in sc], TOL_WEIGHTS)
    data = codext.data.synthetic(0, RUN["synthetic_test"], SIZE, RUN["seed"])
    assert best_d.device == "cpu"
    scores = codext.evaluate(best_d, data.test)
    check("train_device_validation", [(k, dev.metrics[k], scores[k]) for k in ("sm", "mae")],
          TOL_SCORES)
    again = timed("resume_on_cpu", codext.train,
                  dev.config.replace(device="cpu"), resume=dev.config.checkpoint_dir,
                  progress=False)
    ok = again.device == "cpu" and again.history["step_loss"].tobytes() == losses_d.tobytes()
    checks["train_resumes_on_the_cpu"] = {"max_rel": 0.0 if ok else float("inf"), "tol": 0.0,
                                          "ok": bool(ok), "worst": None if ok else again.device}
    codext_train_amp(cpu, losses_d)


# Config.amp on the device: fp16 products with dynamic loss scaling before sm_80 (the
# emulator is a T4, sm_75), bf16 from sm_80 on. The losses follow the CPU's float32 run to
# TOL_AMP (half operands: ~1e-3 relative per product, bf16 ~8e-3) but are not the fp32
# device run's; the state records the loss scale (fp16: still the 2^16 it starts at: no half
# operand overflowed in the 4 steps, as none should: the sums over the batch, the linear
# layers' and convolutions' weight gradients, are float32 (kernels/conv.cu); with them in
# half the scale fell to 16 in the first step; bf16: no scaling, 1).
TOL_AMP = 2e-2


def codext_train_amp(cpu, losses_fp32):
    import re
    sm = int(re.search(r"\(sm_(\d+)", _C.cuda_backend_available()[1]).group(1))
    # CODEXT_AMP_DTYPE=fp16: a T4's fp16 on any GPU (tests/gpu forces it)
    bf16 = sm >= 80 and os.environ.get("CODEXT_AMP_DTYPE", "").strip().lower() != "fp16"
    note = "(bf16)" if bf16 else "(fp16, dynamic loss scaling)"
    lines = []
    cfg = codext.Config(**dict(RUN, amp=True), device="cuda", checkpoint_dir=tempfile.mkdtemp())
    amp = timed("codext.train(cuda, amp)", codext.train, cfg, progress=True, log=lines.append)
    ok = any(f"in mixed precision {note}" in line for line in lines)
    checks["amp_says_its_precision"] = {"max_rel": 0.0 if ok else float("inf"), "tol": 0.0, "ok": ok,
                               "worst": None if ok else lines[:1]}
    losses = amp.history["step_loss"]
    check("amp_step_losses", [(f"step{i}", a, c) for i, (a, c) in
                              enumerate(zip(losses, cpu.history["step_loss"]))], TOL_AMP)
    checks["amp_step_losses"]["ok"] &= bool(len(losses) == 4)
    differs = losses.tobytes() != losses_fp32.tobytes()
    checks["amp_not_the_fp32_bits"] = {"max_rel": 0.0, "tol": 0.0, "ok": differs,
                                       "worst": None if differs else "identical"}
    from codext import _rundir
    run = _rundir.RunDir.for_resume(cfg.checkpoint_dir)
    scale = float(_rundir.read_metadata(run.state_path)["loss_scale"])
    ok = scale == (1.0 if bf16 else 65536.0)
    checks["amp_loss_scale"] = {"max_rel": 0.0, "tol": 0.0, "ok": ok, "worst": scale}


def old_gpu():
    """On an emulated P100 (CODEXT_EMU_SM=60: no tensor cores, no bf16) codext.train runs on
    the device in fp32, following the CPU run as on the T4, and with amp in fp16 with
    dynamic loss scaling (codext_train_amp's checks)."""
    reason = _C.cuda_backend_available()[1]
    ok = "(sm_60" in reason
    checks["sm60_is_sm60"] = {"max_rel": 0.0 if ok else float("inf"), "tol": 0.0, "ok": ok,
                              "worst": None if ok else reason}
    results = {}
    for device in ("cpu", "cuda"):
        cfg = codext.Config(**RUN, device=device, checkpoint_dir=tempfile.mkdtemp())
        results[device] = timed(f"codext.train({device})", codext.train, cfg, progress=False)
    losses_d, losses_c = results["cuda"].history["step_loss"], results["cpu"].history["step_loss"]
    check("sm60_fp32_step_losses", [(f"step{i}", d, c) for i, (d, c) in
                                    enumerate(zip(losses_d, losses_c))], TOL_FORWARD)
    checks["sm60_fp32_step_losses"]["ok"] &= bool(len(losses_d) == 4 and results["cuda"].device == "cuda:0")
    codext_train_amp(results["cpu"], losses_d)


def main():
    out = sys.argv[1]
    mode = sys.argv[2] if len(sys.argv) > 2 else "all"
    ok, reason = _C.cuda_backend_available()
    if not ok or (EMULATED and "CUDA emulator" not in reason):
        result = {"error": f"the CUDA backend is not the emulator's or is unusable: {reason}"}
    else:
        try:
            model("cuda")
        except RuntimeError as e:
            if "does not implement" in str(e):
                with open(out, "w") as f:
                    json.dump({"missing_ops": str(e)}, f)
                return 0
            raise
        if mode in ("codext.train", "sm60"):
            codext_train() if mode == "codext.train" else old_gpu()
            with open(out, "w") as f:
                json.dump({"checks": checks, "timings": timings}, f, indent=1)
            return 0
        if mode == "all":
            forward_and_gradients(model("cpu"), model("cuda"))
            python_api(model("cpu"), model("cuda"))
            overflow_stops(model("cpu"), model("cuda"))
            sparse_moe()
            checkpointing_on_the_device()
        run = training()
        if mode == "all":
            state_files(*run)
        result = {"checks": checks, "timings": timings}
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
