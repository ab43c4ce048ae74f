"""Training and evaluation in this process: the C trainer runs each epoch end to end.

    >>> import os, tempfile, codext
    >>> from codext.train import train, evaluate
    >>> cfg = codext.Config(backbone="edgenext_tiny_test", img_size=32, decoder_dim=16,
    ...                     num_experts=3, batch_size=4, epochs=2, stage1_epochs=1,
    ...                     synthetic_train=16, synthetic_test=4,
    ...                     checkpoint_dir=tempfile.mkdtemp())
    >>> result = train(cfg, progress=False)          # the built-in synthetic set
    >>> result.history["step_loss"].shape, result.history["val_sm"].shape
    ((8,), (2,))
    >>> os.path.basename(result.best_checkpoint)
    'best.safetensors'
    >>> model = codext.load(result.best_checkpoint)  # the EMA weights of the best epoch
    >>> data = codext.data.synthetic(16, 4, 32, seed=cfg.seed)
    >>> evaluate(model, data.test)["sm"] == result.metrics["sm"]
    True

train(config, data) builds the model (optionally from pretrained backbone weights), then
for each epoch calls the C trainer (csrc/train/trainer.c: shuffling, augmentation,
forward, loss, backward, overflow checks, clipping, AdamW with the per-stage schedule,
EMA; no Python in the step loop), evaluates the EMA weights on the test split, and
writes the checkpoint files (each atomic, the set crash-consistent: codext/_checkpoint.py):

    last.safetensors         the model weights after the latest epoch (codext.load); it
                             names the state file of its checkpoint set
    last.state.step<N>.safetensors  the training state at step N: AdamW moments and step
                             counts, EMA, run position; its metadata carries the config,
                             the history, the best epoch and a fingerprint of the data
    best.safetensors         the EMA weights of the best epoch by config.select_metric
    history.json             the history (NaN written as null)

A new run refuses a checkpoint_dir that holds a run unless overwrite=True. resume=
continues a run from its newest complete checkpoint set, writing into its own folder, so
that the final weights are bit-identical to an uninterrupted run on the CPU, with any
thread count. The config must equal the checkpoint's except for the fields in
RESUME_FREE_FIELDS (the error names the fields that differ). Before anything trains the
set is read and cross-checked, and an inconsistent or damaged one is refused with a
ValueError naming the file and the field: codext/_rundir.py checks the metadata of both
files (types, ranges), that the weights are this run's last weights (run id, "last" not
"best", step, CRC-32 of the parameters) and that the history fits the run position;
Trainer.load_state checks the position, the stage, the EMA update count and every
parameter's AdamW step count against this run's plan.

Data: training images must already have the size config.img_size (codext.data.load(path,
img_size=...) makes them so); another size is a ValueError rather than a silent resize,
because a resized copy of a dataset would double its memory in every process.
"""
import dataclasses
import json
import math
import os
import time
import zlib

import numpy as np

from . import _C
from . import _checkpoint
from . import _device
from . import _progress
from ._pretrained import resolve_pretrained
from . import _rundir
from . import _sharded_eval
from . import data as _data
from . import metrics as _metrics
from .config import Config
from .model import Model

__all__ = ["train", "evaluate", "TrainResult", "resolve_pretrained", "RESUME_FREE_FIELDS"]

LAST, LAST_STATE, BEST, HISTORY = _rundir.LAST, _rundir.LAST_STATE, _rundir.BEST, _rundir.HISTORY
# Config fields that may differ between a checkpoint and the run resuming it: they do not
# change the weights a run produces (device: where it runs; a run moved between the CPU and
# a GPU continues, close to but not bit-identical with a run on one device).
RESUME_FREE_FIELDS = ("checkpoint_dir", "num_threads", "log_every", "num_workers", "eval_every",
                      "dataset_path", "pretrained", "timeout", "gradient_checkpointing", "device")
_METRIC_CHUNK = 64  # test images scored per call of codext.metrics.evaluate
_EVAL_BATCH = 16  # images per forward of validation (evaluate's default batch_size)


@dataclasses.dataclass
class TrainResult:
    """What train() returns.

    history: per-step "step_loss", "step_lr" (head lr), "step_epoch"; per-epoch "epoch",
    "epoch_loss", "epoch_seconds", "epoch_images_per_s" and "val_<key>" for every scalar
    of codext.metrics.evaluate (NaN for epochs without evaluation), all NumPy arrays.
    best_checkpoint / last_checkpoint: paths. metrics: the validation metrics of the best
    epoch (empty without a test split). config: the Config of the run. device: where it
    trained, "cpu" or "cuda:N" (Config.device resolved)."""
    history: dict
    best_checkpoint: str
    last_checkpoint: str
    metrics: dict
    config: Config
    device: str = "cpu"

    def plot(self, title=None):
        """Loss, learning-rate and validation curves as a matplotlib Figure
        (codext.plots.plot_history)."""
        from .plots import plot_history
        return plot_history(self.history, title=title)


# ---- evaluation ------------------------------------------------------------------------

def evaluate(model, split, batch_size=_EVAL_BATCH):
    """COD metrics of `model` on a test split, at each ground truth's own size.

    split: a codext.data Split (images uint8 [N, S, S, 3], masks, and masks_full: the
    original-size masks, used when present). Each batch of images goes through the
    model's batch prediction (Model.predict's), which resizes each probability map
    (bilinear) straight to its GT's size. The result equals
    codext.metrics.evaluate(preds, gts) on those predictions; the images are scored in
    chunks, so the predictions of a large test set are never all in memory.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a codext.Model, got {type(model).__name__}")
    images = getattr(split, "images", None)
    if not isinstance(images, np.ndarray) or getattr(split, "masks", None) is None:
        raise TypeError(f"split must be a codext.data Split (with images and masks), got "
                        f"{type(split).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    masks_full = getattr(split, "masks_full", None)
    gts = list(masks_full) if masks_full is not None else list(split.masks)
    n = len(images)
    if n == 0:
        raise ValueError("the split has no images to evaluate")
    if len(gts) != n:
        raise ValueError(f"the split has {n} images but {len(gts)} ground truths")
    return _metrics.aggregate(_sharded_eval.score_range(model, images, gts, 0, n, batch_size,
                                                         _METRIC_CHUNK))


def _scalar_metrics(result):
    return {k: float(v) for k, v in result.items() if np.isscalar(v)}


def _validate(model, split, conn):
    """(evaluate's scalar scores, None); under codext.launch, collective: rank 0 gets the
    same scores and [(lo, hi, seconds)] per rank (codext/_sharded_eval.py), others ({}, None)."""
    if conn is None:
        return _scalar_metrics(evaluate(model, split)), None
    result, report = _sharded_eval.evaluate_sharded(model, split, conn.comm, conn.place.rank,
                                                    conn.place.world, _EVAL_BATCH, _METRIC_CHUNK)
    return ({} if result is None else _scalar_metrics(result)), report


# ---- checkpoints ---------------------------------------------------------------------------

def _fingerprint(split):
    """n, size and a CRC of a sample of rows: detects resuming on other training data."""
    n = len(split.images)
    rows = np.unique(np.linspace(0, n - 1, num=min(n, 16)).astype(np.int64)) if n else []
    crc = 0
    for i in rows:
        crc = zlib.crc32(np.ascontiguousarray(split.images[i]).data, crc)
        crc = zlib.crc32(np.ascontiguousarray(split.masks[i]).data, crc)
    return {"n_train": n, "shape": list(split.images.shape[1:3]), "crc32": crc}


# ---- history ---------------------------------------------------------------------------------

def _to_json_list(values):
    return [None if (isinstance(v, float) and math.isnan(v)) else v for v in values]


def _history_json(hist):
    return {k: _to_json_list(v) for k, v in hist.items()}


def _history_arrays(hist):
    out = {}
    for k, v in hist.items():
        kind = np.int64 if k in ("step_epoch", "epoch") else np.float64
        out[k] = np.asarray(v, dtype=kind)
    return out


# ---- data ------------------------------------------------------------------------------------

def _check_data(data, config):
    train_split = getattr(data, "train", None)
    if train_split is None or not isinstance(getattr(train_split, "images", None), np.ndarray):
        raise TypeError(f"data must be a codext.data Dataset (with .train and .test), got "
                        f"{type(data).__name__}")
    images, masks = train_split.images, train_split.masks
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"training images must be uint8 [N, H, W, 3], got {images.dtype} "
                         f"{images.shape}")
    if not isinstance(masks, np.ndarray) or masks.dtype != np.uint8 or masks.shape != images.shape[:3]:
        raise ValueError(f"training masks must be uint8 [N, H, W] matching the images "
                         f"{images.shape[:3]}, got {getattr(masks, 'dtype', None)} "
                         f"{getattr(masks, 'shape', None)}")
    size = tuple(images.shape[1:3])
    if size != (config.img_size, config.img_size):
        # suggest Config.img_size = the data's size only where Config accepts it
        fits = size[0] == size[1] and _valid_img_size(size[0])
        raise ValueError(f"the training images are {size[0]}x{size[1]} but Config.img_size is "
                         f"{config.img_size}: load the data at that size "
                         f"(codext.data.load(path, img_size={config.img_size}))"
                         + (f" or set Config.img_size {size[0]}" if fits else
                            " (Config.img_size must be a multiple of 32 and the images square)"))
    need = config.batch_size * config.accumulation_steps
    if len(images) < need:
        raise ValueError(f"{len(images)} training images make no full global batch of "
                         f"Config.batch_size {config.batch_size} x Config.accumulation_steps "
                         f"{config.accumulation_steps} = {need}")
    test = getattr(data, "test", None)
    if test is not None and len(test.images) == 0:
        test = None
    return train_split, test


def _valid_img_size(size):
    try:
        Config(img_size=size)
    except (TypeError, ValueError):
        return False
    return True


def _new_model(config, device):
    return Model(config, device=device)


def _data_source(data):
    source = getattr(data, "source", None)
    if source == "synthetic":
        return "the built-in synthetic set"
    if source == "arrays":
        return "your arrays"
    return str(source) if source else "your data"


# ---- live progress ---------------------------------------------------------------------------

def _live_progress(progress, writer, log, config, trainer, images_per_step, evaluates):
    """The Progress that receives this run's step events, or None (no progress wanted, or a
    rank other than 0). progress may also be a factory of one (codext.launch's rank 0:
    codext/_launch_progress.py), called with the run's counts."""
    if not writer or progress is False or progress is None:
        return None
    state = trainer.state()
    if isinstance(progress, _progress.Progress):
        live = progress
    elif callable(progress):
        live = progress(total_steps=state["total_steps"], steps_per_epoch=state["steps_per_epoch"],
                        epochs=config.epochs, images_per_step=images_per_step, evaluates=evaluates)
    elif log is None:
        return None
    else:
        live = _progress.Progress(state["total_steps"], state["steps_per_epoch"], config.epochs,
                                  images_per_step, log=log, log_every=config.log_every)
    live.begin(state["step"])
    return live


def _run_steps(trainer, split, loss_buf, lr_buf, live, epoch):
    """The rest of the epoch: in one C call without live progress, else in chunks of
    live.chunk() steps with a report after each. Returns the steps run."""
    if live is None:
        return trainer.run_epoch(split.images, split.masks, loss_buf, lr_buf)
    state = trainer.state()
    epoch_step, step, ran = state["epoch_step"], state["step"], 0
    try:
        while epoch_step < len(loss_buf):
            n = trainer.run_epoch(split.images, split.masks, loss_buf, lr_buf,
                                  max_steps=live.chunk())
            if n == 0:
                break
            ran, epoch_step, step = ran + n, epoch_step + n, step + n
            live.steps(step, epoch, epoch_step, float(loss_buf[epoch_step - 1]),
                       float(lr_buf[epoch_step - 1]))
    except BaseException:  # a failed step or Ctrl-C: the error is not printed over the line
        live.close()
        raise
    return ran


def _report_halvings(state, seen, world, say):
    """Says when the C step halved the micro-batch after running out of memory (trainer.c:
    every rank agrees, the global batch stays); returns the count now seen."""
    count = state["oom_halvings"]
    if count != seen:
        times = "" if count - seen == 1 else f" ({count - seen} times this epoch)"
        say(f"out of memory in step {state['oom_last_step']} on {state['oom_last_ranks']} of "
            f"{world} rank(s): the micro-batch is now {state['batch_size']} images with "
            f"accumulation {state['accumulation_steps']}{times}; the global batch is unchanged "
            f"and the step ran again")
    return count


# ---- train -----------------------------------------------------------------------------------

def train(config, data=None, *, resume=None, overwrite=False, progress=True, log=print):
    """Trains a COD model in this process; returns a TrainResult (see the module docstring).

    config: codext.Config. data: a codext.data Dataset, or None for the synthetic set
    (config.synthetic_train / synthetic_test images at config.img_size, seeded by
    config.seed). resume: a checkpoint folder (or its last.safetensors): the run continues
    from its newest complete checkpoint set and writes into that folder, whatever
    config.checkpoint_dir says. overwrite: a new run may start in a checkpoint_dir that
    holds a run (whose files are removed first); without it that is a FileExistsError.
    progress: True prints what the run will do, a live progress line within each epoch
    (codext/_progress.py: tqdm or an updating line on a terminal, a plain line every
    config.log_every steps otherwise) and one line per epoch through `log`; False prints
    nothing; a codext._progress.Progress receives the events.

    Raises ValueError for data or config problems (image size, too few images, resuming
    another configuration: the fields that differ are named), OSError for an unwritable
    checkpoint_dir (before training starts), FileNotFoundError for pretrained weights that
    cannot be found (every place searched is listed), RuntimeError when the loss or a
    gradient stops being finite (the step and the part that overflowed are named).
    Ctrl-C stops the C loop between optimizer steps (KeyboardInterrupt); the checkpoint of
    the last finished epoch stays as it was.

    config.device picks the CPU or a CUDA GPU, resolved once here (codext/_device.py:
    "auto" is the GPU when the CUDA backend is usable; "cuda" where it is not is a
    RuntimeError naming why). On a GPU the model, its gradients, activations, AdamW moments
    and EMA live in device memory and validation runs there too (docs/training.md, "On a
    CUDA device"); the checkpoints are the same files either way. amp on a GPU runs the
    products (linear layers, dense convolutions) on half operands with float32
    accumulation: bf16 on sm_80+, else fp16 with dynamic loss scaling (a step whose
    gradients overflow is skipped and the scale halved); weights, optimizer, norms and the
    loss stay float32. On the CPU amp has no effect. gradient_checkpointing makes
    stage-2 steps recompute each backbone stage in backward: less activation memory, the
    same weights bit for bit, slower steps (docs/training.md). With progress the C loop runs
    chunks of steps between two reports (about twice a second on a terminal, log_every
    steps otherwise), never one Python call per step.
    """
    if not isinstance(config, Config):
        raise TypeError(f"config must be a codext.Config, got {type(config).__name__}")
    if config.drop_path_rate:
        raise ValueError(f"Config.drop_path_rate must be 0: the C model has no drop path yet, "
                         f"got {config.drop_path_rate}")
    threads_before = _C.get_num_threads()
    if config.num_threads is not None:
        _C.set_num_threads(config.num_threads)
    try:
        return _train(config, data, resume, progress, log, overwrite=overwrite)
    finally:
        _C.set_num_threads(threads_before)


def _train(config, data, resume, progress, log, dist=None, overwrite=False):
    """dist: None, or (Connection, faults) for a rank of codext.launch (codext/_dist.py,
    codext/_worker.py): the C trainer joins the other ranks, every rank validates its
    block of the test split (codext/_sharded_eval.py), rank 0 alone aggregates and writes
    checkpoints, history and log lines, and every rank waits at the end of each epoch
    until rank 0 has written them."""
    conn, faults = dist if dist is not None else (None, {})
    rank, world = (conn.place.rank, conn.place.world) if conn is not None else (0, 1)
    writer = rank == 0
    say = log if (progress and log is not None and writer) else (lambda *a, **k: None)
    config, world_note = config.fit_to_world(world)  # Config.world_size: keep the global batch
    if world_note:
        say(f"note: {world_note}")
    # where it trains, once: a data-parallel rank on the GPU of its local rank (or the CPU)
    device, device_note = _device.resolve(config.device, data_parallel=conn is not None,
                                          local_rank=conn.place.local_rank if conn else 0)
    if device_note:
        say(device_note)
    run = saved = None
    if resume is not None:  # the run writes into its own folder, never the one it recorded
        if overwrite:
            raise ValueError("resume and overwrite=True exclude each other: resume continues "
                             "the run in its folder, overwrite starts a new one")
        run = _rundir.RunDir.for_resume(resume)
        config = config.replace(checkpoint_dir=run.folder)
    if data is None:  # Config.dataset_path, else the synthetic set (memory checked first):
        data = _data.for_config(config, say)  # loaded before the folder is touched
    ckpt_dir = _checkpoint.prepare_folder(config.checkpoint_dir, resuming=run is not None)
    if run is None and writer:
        _checkpoint.claim_folder(ckpt_dir, overwrite, say)
    _checkpoint.kill_plan()  # a bad CODEXT_KILL_IN_SAVE fails here, before training
    train_split, test_split = _check_data(data, config)
    fingerprint = _fingerprint(train_split)

    model = _new_model(config, device)
    run_id = _rundir.new_run_id()
    if run is not None:
        # every file of the set is read and cross-checked before anything trains
        saved = run.check_resume(config, fingerprint, world)
        model.load(run.weights_path)
        run.check_weights(model._host_params())
        run_id = saved.run_id
    elif config.pretrained:
        model.load_backbone(resolve_pretrained(config.pretrained))

    precision = _device.mixed_precision(model, config.amp)
    n_train = len(train_split.images)
    trainer = _C.Trainer(
        model._native, n_train, config.img_size, config.img_size,
        batch_size=config.batch_size, accumulation_steps=config.accumulation_steps,
        epochs=config.epochs, stage1_epochs=config.stage1_epochs, scheduler=config.scheduler,
        lr=config.lr, stage2_lr=config.effective_stage2_lr,
        backbone_lr_mult=config.backbone_lr_mult, warmup_epochs=config.warmup_epochs,
        min_lr=config.min_lr, weight_decay=config.weight_decay, betas=config.betas,
        eps=config.eps, grad_clip=config.grad_clip or 0.0, ema_decay=config.ema_decay,
        seed=config.seed, augment=True, world_size=world, rank=rank,
        loss_scaling=precision == "fp16", gradient_checkpointing=config.gradient_checkpointing)
    if config.gradient_checkpointing and config.epochs > config.stage1_epochs:
        plan = {m: model.planned_activation_bytes(config.batch_size, mode=m) / 2**20
                for m in ("train", "train_checkpoint")}
        say(f"gradient checkpointing: stage-2 activations {plan['train_checkpoint']:.1f} MiB a "
            f"micro-batch instead of {plan['train']:.1f} MiB (planned)")
    hist = {"step_loss": [], "step_lr": [], "step_epoch": [], "epoch": [], "epoch_loss": [],
            "epoch_seconds": [], "epoch_images_per_s": []}
    best = {"epoch": None, "value": None, "metrics": {}}
    if saved is not None:
        trainer.load_state(run.state_path)  # checks the position against this run's plan
        run.check_state_size()
        hist, best = saved.history, saved.best
        if writer:  # what a kill after the last committed set left undone
            _checkpoint.tidy(run, _history_json(hist))
        where = (f"in {ckpt_dir} (checkpoint set {LAST} + "
                 f"{os.path.basename(run.state_path)})")
        say(f"the run is finished: all {saved.epoch} epochs done (step {saved.step}), nothing "
            f"to train; its results {where}" if saved.epoch >= config.epochs else
            f"resuming from epoch {saved.epoch}, step {saved.step}, {where}; writing there; "
            f"training on {_device.describe(device)}{_device.PRECISION_NOTES[precision]}")
    if conn is not None:
        trainer.set_comm(conn.comm)

    spe = trainer.state()["steps_per_epoch"]
    images_per_step = config.batch_size * config.accumulation_steps * world
    # every rank validates, on the run's device
    eval_model = _new_model(config, device) if test_split is not None else None
    if eval_model is not None:  # validation in the training's precision, as autocast does
        _device.mixed_precision(eval_model, config.amp)
    reported = False
    # CODEXT_FAULT: an "oom" is reported by the C step itself (every rank then halves the
    # micro-batch and runs the step again); the other kinds stop this rank before their step
    my_ooms = sorted(step for (r, step), kind in faults.items() if r == rank and kind == "oom")
    my_faults = sorted(step for (r, step), kind in faults.items() if r == rank and kind != "oom")
    halvings_seen = trainer.state()["oom_halvings"]
    key, higher = config.selection
    paths = {name: os.path.join(ckpt_dir, name) for name in (LAST, BEST, HISTORY)}
    loss_buf, lr_buf = np.zeros(spe), np.zeros(spe)
    start_epoch = trainer.state()["epoch"]
    live = _live_progress(progress, writer, log, config, trainer, images_per_step,
                          eval_model is not None)
    if start_epoch == 0 and progress:
        steps = trainer.state()
        say(f"codext.train: {model.config}, {model.num_parameters():,} parameters; {n_train} "
            f"training images of {config.img_size}x{config.img_size} ({_data_source(data)}); "
            f"{steps['total_steps']} optimizer steps of {images_per_step} images: {config.epochs} "
            f"epoch{'s' if config.epochs != 1 else ''} of {spe} ({steps['stage1_steps']} in "
            f"stage 1, {steps['stage2_steps']} in stage 2); training on "
            f"{_device.describe(device)}{_device.PRECISION_NOTES[precision]}; checkpoints in "
            f"{ckpt_dir}")
    if conn is not None:  # which transport carries the collectives (codext/_dist.py)
        say(f"data parallel: {world} ranks, collectives over {conn.transport}")
    for epoch in range(start_epoch, config.epochs):
        stage = 1 if epoch < config.stage1_epochs else 2
        t0 = time.perf_counter()
        done = 0
        first, waited_before = trainer.state()["step"], trainer.state()["data_wait_seconds"]
        oom = next((f for f in my_ooms if first <= f < first + spe), None)
        if oom is not None:
            trainer.inject_oom(oom)
        fault = next((f for f in my_faults if first <= f < first + spe), None)
        if fault is not None:  # CODEXT_FAULT: run up to that step, then fail there
            from ._worker import inject
            if fault > first:
                done = trainer.run_epoch(train_split.images, train_split.masks, loss_buf, lr_buf,
                                         max_steps=fault - first)
            inject(faults[(rank, fault)], rank, fault, conn.comm)  # a hang returns, armed
        done += _run_steps(trainer, train_split, loss_buf, lr_buf, live, epoch)
        seconds = time.perf_counter() - t0
        data_wait_ms = 1e3 * (trainer.state()["data_wait_seconds"] - waited_before) / max(spe, 1)
        halvings_seen = _report_halvings(trainer.state(), halvings_seen, world,
                                         live.message if live is not None else say)
        if done != spe:
            raise RuntimeError(f"epoch {epoch} ran {done} of {spe} steps")
        hist["step_loss"] += loss_buf.tolist()
        hist["step_lr"] += lr_buf.tolist()
        hist["step_epoch"] += [epoch] * spe
        hist["epoch"].append(epoch)
        epoch_loss = float(np.mean(loss_buf))
        hist["epoch_loss"].append(epoch_loss)
        hist["epoch_seconds"].append(seconds)
        hist["epoch_images_per_s"].append(spe * images_per_step / seconds if seconds > 0 else float("nan"))

        scores, report = {}, None
        last_epoch = epoch == config.epochs - 1
        # the same decision on every rank: all of them validate, or none
        evaluated = eval_model is not None and ((epoch + 1) % config.eval_every == 0 or last_epoch)
        if evaluated:
            t_eval = time.perf_counter()
            eval_model._set_host_params(trainer.ema())  # equal on every rank
            scores, report = _validate(eval_model, test_split, conn)
            t_eval = time.perf_counter() - t_eval
            if live is not None:
                live.evaluated(t_eval)
        if not writer:
            conn.comm.barrier()  # rank 0 writes the checkpoints meanwhile
            continue
        n_epochs_before = len(hist["epoch"]) - 1
        for k, v in scores.items():
            column = hist.setdefault(f"val_{k}", [float("nan")] * n_epochs_before)
            column.append(v)
        for k, column in hist.items():
            if k.startswith("val_") and len(column) == n_epochs_before:
                column.append(float("nan"))

        step = trainer.state()["step"]
        improved = False
        if evaluated:
            value = scores[key]
            if best["value"] is None or (value > best["value"] if higher else value < best["value"]):
                best = {"epoch": epoch, "value": value, "metrics": scores}
                improved = True
        elif eval_model is None:  # nothing to select with: the latest EMA weights are "best"
            best = {"epoch": epoch, "value": None, "metrics": {}}
            improved = True
        ema_model = None
        if improved:
            # without validation a CPU model holds the EMA weights for the file
            ema_model = eval_model if eval_model is not None else _new_model(config, "cpu")
            ema_model._set_host_params(trainer.ema())
        _checkpoint.save_set(ckpt_dir, model=model, trainer=trainer, step=step, run_id=run_id,
                             best_model=ema_model, history=_history_json(hist), state_metadata={
            "codext_config": config.to_json(), "codext_history": json.dumps(_history_json(hist)),
            "codext_best": json.dumps(best), "codext_data": json.dumps(fingerprint),
            _rundir.RUN_ID_KEY: run_id, _rundir.WORLD_KEY: str(world)})

        row = {"epoch": epoch, "epochs": config.epochs, "stage": stage, "loss": epoch_loss,
               "lr": float(lr_buf[-1]), "images_per_s": hist["epoch_images_per_s"][-1],
               "seconds": seconds, "metrics": scores, "best": improved,
               "data_wait_ms": data_wait_ms}
        if live is not None:
            live.epoch(row)
        else:
            say(_progress.epoch_line(row, config.epochs))
        if report is not None and not reported:  # who validated what, once per process
            (live.message if live is not None else say)(_sharded_eval.describe(report, t_eval))
            reported = True
        if conn is not None:
            conn.comm.barrier()
    if live is not None:
        live.close()

    return TrainResult(history=_history_arrays(hist), best_checkpoint=paths[BEST],
                       last_checkpoint=paths[LAST], metrics=dict(best["metrics"]), config=config,
                       device=device)


# ---- a rank of codext.launch -----------------------------------------------------------------

def train_worker(job, conn, faults):
    """The "train" job of codext._worker: trains as rank conn.place.rank of the run and
    returns what rank 0 sends back to codext.launch (JSON-ready)."""
    config = Config.from_json(job["config"])
    if config.drop_path_rate:
        raise ValueError(f"Config.drop_path_rate must be 0: the C model has no drop path yet, "
                         f"got {config.drop_path_rate}")
    data = _data.Dataset.from_shared(job["data"]) if job.get("data") else None
    if config.num_threads is not None:
        _C.set_num_threads(config.num_threads)
    # rank 0 sends progress events and its own lines to the launcher (codext/_launch_progress.py)
    from ._launch_progress import worker_progress
    progress, log = worker_progress(job.get("progress"), conn.place.rank)
    # the launcher removed the files of a run it was asked to overwrite
    result = _train(config, data, job.get("resume"), progress, log, dist=(conn, faults),
                    overwrite=not job.get("resume"))
    return {"history": {k: _to_json_list(v.tolist()) for k, v in result.history.items()},
            "best_checkpoint": result.best_checkpoint, "last_checkpoint": result.last_checkpoint,
            "metrics": result.metrics, "device": result.device}


def result_from_worker(payload, config):
    """TrainResult from rank 0's train_worker payload."""
    history = {k: [float("nan") if v is None else v for v in values]
               for k, values in payload["history"].items()}
    return TrainResult(history=_history_arrays(history),
                       best_checkpoint=payload["best_checkpoint"],
                       last_checkpoint=payload["last_checkpoint"],
                       metrics=dict(payload["metrics"]), config=config,
                       device=payload.get("device", "cpu"))
