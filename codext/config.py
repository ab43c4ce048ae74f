"""Every setting of a training run, with the defaults of the training recipe (docs/training.md).

    >>> from codext.config import Config     # also codext.Config
    >>> cfg = Config(epochs=40, stage1_epochs=10, scheduler="cosine", warmup_epochs=2)
    >>> cfg.stage2_lr is None, cfg.effective_stage2_lr
    (True, 0.00025)
    >>> Config.from_json(cfg.to_json()) == cfg
    True
    >>> Config(img_size=100)
    Traceback (most recent call last):
    ...
    ValueError: Config.img_size must be a multiple of 32 in 32..4096, got 100

Field names are the seed's command-line flags with dashes turned into underscores
(``--batch-size`` -> ``batch_size``). Unknown fields and invalid values fail at
construction with the field named: a TypeError for an unknown field or a value of the wrong
type, a ValueError for a value out of range or an impossible combination. Every number
has both bounds (INT_RANGES, INT_MULTIPLES, FLOAT_RANGES below: the one table the CLI and
the tests read too); the upper bounds match the C engine's limits.
"""
import dataclasses
import difflib
import functools
import inspect
import json
import math
import numbers
import os
from dataclasses import dataclass, fields
from typing import Optional, Tuple

BACKBONES = ("edgenext_xx_small", "edgenext_x_small", "edgenext_small", "edgenext_base",
             "edgenext_tiny_test")
SCHEDULERS = ("onecycle", "cosine")
# Config.device: where the trainer runs (codext/_device.py resolves "auto" and checks the
# machine); "cuda:N" names GPU N of 0..MAX_CUDA_ORDINAL
DEVICES = ("auto", "cpu", "cuda", "cuda:N")
MAX_CUDA_ORDINAL = 255
# select_metric: accepted names -> (key in codext.metrics.evaluate's result, higher is better)
SELECT_METRICS = {
    "smeasure": ("sm", True), "sm": ("sm", True),
    "wfmeasure": ("wfm", True), "wfm": ("wfm", True),
    "emeasure": ("mean_em", True), "mean_em": ("mean_em", True), "adp_em": ("adp_em", True),
    "max_em": ("max_em", True),
    "fmeasure": ("mean_fm", True), "mean_fm": ("mean_fm", True), "adp_fm": ("adp_fm", True),
    "max_fm": ("max_fm", True),
    "mae": ("mae", False), "iou": ("iou", True), "dice": ("dice", True),
}



def fitted_stage1_epochs(epochs, default_stage1):
    """The one rule for frozen stage-1 epochs the user did not set when they set epochs: a
    default that leaves no stage-2 epoch (default_stage1 >= epochs) becomes epochs // 2 (so
    --epochs 1 trains one stage-2 epoch); otherwise None (the default stands). A non-integer
    epochs is left to validation (None)."""
    if not isinstance(epochs, numbers.Integral) or isinstance(epochs, bool) or epochs < 1:
        return None
    return int(epochs) // 2 if default_stage1 >= epochs else None

@dataclass
class Config:
    """Settings of one training run (docs/training.md); see the module docstring.

    Data
        dataset_path: a COD dataset folder (None: the built-in synthetic set).
        img_size: training resolution, a multiple of 32. batch_size: images per worker
        and optimizer step before accumulation (the global batch is batch_size x workers
        x accumulation_steps). num_workers: data decoding/augmentation threads.
        synthetic_train, synthetic_test: sizes of the built-in synthetic set used when
        no data is given.
    Model
        backbone (one of BACKBONES), pretrained (a safetensors path or a timm tag in the
        Hugging Face cache; None: random init), num_experts, moe_top_k (0: dense MoE,
        k >= 1: sparse top-k with the balance loss), decoder_dim (D, a multiple of 4),
        drop_path_rate, deep_supervision (+ ds_weight), balance_weight.
    Recipe
        epochs, stage1_epochs (frozen backbone, no backward through it), lr (head lr and
        the schedule's peak), stage2_lr (None: lr), backbone_lr_mult (stage-2 backbone lr =
        stage2_lr x this), weight_decay, betas, eps (AdamW), scheduler ('onecycle' or
        'cosine'), warmup_epochs and min_lr (cosine), grad_clip (global norm; 0 or None:
        off), accumulation_steps, ema_decay (0: no averaging).
    Run
        device: where the trainer runs: "auto" (the default: a CUDA GPU when this build has
        the CUDA backend and a GPU is usable, else the CPU), "cpu", "cuda" (GPU 0) or
        "cuda:N" (codext/_device.py; docs/training.md, "On a CUDA device"). Data-parallel
        runs (codext.launch, torchrun) train on CPU workers: "auto" becomes "cpu" there and
        "cuda" is refused until the NCCL backend exists.
        seed, checkpoint_dir, amp (GPU mixed precision), gradient_checkpointing (stage-2
        forwards keep only each backbone stage's input and output and backward recomputes
        the stage: less activation memory, slower steps, the same weights bit for bit),
        deterministic (GPU: deterministic kernels; the CPU always is), select_metric (picks
        the best checkpoint: smeasure, wfmeasure, emeasure, fmeasure, mae, iou, dice or a
        key of codext.metrics.evaluate), eval_every (epochs), log_every (optimizer steps
        between two progress lines when stdout is not a terminal; codext/_progress.py),
        num_threads (CPU engine threads; None: all the CPUs this process may use),
        timeout (data-parallel runs: seconds a collective may wait for the other workers
        before the run fails naming the stalled one; None: NCCL_TIMEOUT from the
        environment, else 600).
        world_size (data-parallel: the number of workers the recipe's global batch
        assumes, batch_size x world_size x accumulation_steps; run with fewer or more
        workers, accumulation_steps is scaled to keep that global batch and the run says
        so (fit_to_world); None: the global batch is whatever the workers make).
    """

    # data
    dataset_path: Optional[str] = None
    img_size: int = 352
    batch_size: int = 32
    num_workers: int = 4
    synthetic_train: int = 512
    synthetic_test: int = 128
    # model
    backbone: str = "edgenext_base"
    pretrained: Optional[str] = None
    num_experts: int = 7
    moe_top_k: int = 0
    decoder_dim: int = 64
    drop_path_rate: float = 0.0
    deep_supervision: bool = True
    ds_weight: float = 0.5
    balance_weight: float = 0.01
    # recipe
    epochs: int = 150
    stage1_epochs: int = 30
    lr: float = 2.5e-4
    stage2_lr: Optional[float] = None
    backbone_lr_mult: float = 0.1
    weight_decay: float = 1e-4
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    scheduler: str = "onecycle"
    warmup_epochs: float = 5.0
    min_lr: float = 1e-6
    grad_clip: Optional[float] = 0.5
    accumulation_steps: int = 1
    ema_decay: float = 0.999
    # run
    device: str = "auto"
    seed: int = 42
    checkpoint_dir: str = "checkpoints"
    amp: bool = True
    gradient_checkpointing: bool = False
    deterministic: bool = False
    select_metric: str = "smeasure"
    eval_every: int = 1
    log_every: int = 50
    num_threads: Optional[int] = None
    timeout: Optional[float] = None
    world_size: Optional[int] = None

    def __post_init__(self):
        self._coerce()
        self._validate()

    # ---- construction helpers ------------------------------------------------------

    @classmethod
    def demo(cls, **overrides):
        """The small CPU demo: on the synthetic set it visibly learns in a few minutes on 2 cores.

        edgenext_xx_small from random weights at 32x32 with a light neck (3 experts, D = 16),
        4096 synthetic training images, batch 32, 22 epochs (the first 4 with the backbone
        frozen, which costs about 60 % of a stage-2 epoch), and what a short run from scratch
        needs: lr 6e-3, the backbone at the full lr (backbone_lr_mult 1) and EMA decay 0.99.
        On its 128 test images it ends well above both trivial baselines of
        codext/baselines.py: S 0.673, MAE 0.213, IoU 0.503 against the centred blob's
        0.542, 0.326, 0.288, in 3.6 minutes on the shared 2-core development machine
        (bench/demo.py measures it; docs/training.md, "The demo").
        No AMP, device "cpu" (the demo and its timings are the CPU's, also on a machine
        with a GPU; Config.demo(device="auto") takes the GPU), checkpoints in
        checkpoints/demo. Any field can be overridden:
        Config.demo(epochs=2); epochs given without stage1_epochs are fitted by
        fitted_stage1_epochs (the one rule the CLI and launch() use too).
        """
        settings = dict(backbone="edgenext_xx_small", img_size=32, batch_size=32, epochs=22,
                        stage1_epochs=4, num_experts=3, decoder_dim=16, lr=6e-3,
                        backbone_lr_mult=1.0, ema_decay=0.99, synthetic_train=4096, amp=False,
                        num_workers=2, device="cpu",
                        checkpoint_dir=os.path.join("checkpoints", "demo"),
                        log_every=10)
        return cls(**settings).with_epochs_fitted(**overrides)

    def with_epochs_fitted(self, **changes):
        """replace(**changes), where epochs given without stage1_epochs also fit this
        config's frozen stage-1 epochs by fitted_stage1_epochs (launch(None, epochs=2))."""
        if "epochs" in changes and "stage1_epochs" not in changes:
            fitted = fitted_stage1_epochs(changes["epochs"], self.stage1_epochs)
            if fitted is not None:
                changes = {**changes, "stage1_epochs": fitted}
        return self.replace(**changes)

    def fit_to_world(self, world):
        """(config, note) for a run of `world` workers. With world_size set and unequal to
        world, accumulation_steps is scaled so that the global batch stays batch_size x
        world_size x accumulation_steps, and world_size becomes world (so fitting again
        changes nothing: a resumed run compares equal); note says so. Otherwise (self,
        None). ValueError when world workers cannot share the micro-batches evenly."""
        if self.world_size is None or self.world_size == world:
            return self, None
        micro = self.world_size * self.accumulation_steps  # micro-batches per optimizer step
        if micro % world or micro // world > MAX_ACCUMULATION:
            why = (f"cannot be shared evenly by {world} worker(s)" if micro % world else
                   f"would need accumulation_steps {micro // world} on {world} worker(s), above "
                   f"the limit {MAX_ACCUMULATION}")
            raise ValueError(
                f"Config.world_size {self.world_size} x Config.accumulation_steps "
                f"{self.accumulation_steps} = {micro} micro-batches of Config.batch_size "
                f"{self.batch_size} per step {why}; run with a number of workers that divides "
                f"{micro} (at least {-(-micro // MAX_ACCUMULATION)}), or change "
                f"Config.batch_size so that the global batch ({self.batch_size * micro} "
                f"images) is kept another way")
        fitted = self.replace(world_size=world, accumulation_steps=micro // world)
        note = (f"{world} worker(s) for a recipe of Config.world_size {self.world_size}: "
                f"Config.accumulation_steps {self.accumulation_steps} -> "
                f"{fitted.accumulation_steps} keeps the global batch at "
                f"{self.batch_size * micro} images")
        return fitted, note

    def replace(self, **changes):
        """A copy with some fields changed (validated like a new Config)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        """Plain JSON-ready dict of every field (betas as a list)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, values):
        """Config from a dict such as to_dict() made; unknown keys fail (TypeError)."""
        if not isinstance(values, dict):
            raise TypeError(f"Config.from_dict needs a dict, got {type(values).__name__}")
        return cls(**values)

    def to_json(self, indent=None):
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))

    # ---- derived values --------------------------------------------------------------

    @property
    def effective_stage2_lr(self):
        """stage2_lr, or lr when it is None."""
        return self.lr if self.stage2_lr is None else self.stage2_lr

    @property
    def selection(self):
        """(metric key in codext.metrics.evaluate's result, True if higher is better)."""
        return SELECT_METRICS[self.select_metric]

    def stage_steps(self, steps_per_epoch):
        """Optimizer steps of stage 1 and stage 2 for `steps_per_epoch` optimizer steps per
        epoch (after accumulation)."""
        steps_per_epoch = int(steps_per_epoch)
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        return (self.stage1_epochs * steps_per_epoch,
                (self.epochs - self.stage1_epochs) * steps_per_epoch)

    def warmup_steps(self, steps_per_epoch):
        """Cosine warmup in optimizer steps (per stage): floor(warmup_epochs x steps_per_epoch)."""
        return int(self.warmup_epochs * int(steps_per_epoch))

    # ---- checks ----------------------------------------------------------------------

    def _coerce(self):
        """Type checks (TypeError naming the field); ints where floats are expected become
        floats, path-like values become str, betas a tuple."""
        for f in fields(self):
            value = getattr(self, f.name)
            kind, optional = _FIELD_KINDS[f.name]
            if value is None:
                if optional:
                    continue
                raise TypeError(f"Config.{f.name} cannot be None")
            if kind is bool:
                ok = isinstance(value, bool)
            elif kind is int:
                ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
                if ok:
                    value = int(value)
            elif kind is float:
                ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
                if ok:
                    value = float(value)
            elif kind is str:
                ok = isinstance(value, (str, os.PathLike)) if f.name in _PATH_FIELDS else isinstance(value, str)
                if ok:
                    value = os.fspath(value)
            else:  # betas
                ok = (isinstance(value, (tuple, list)) and len(value) == 2 and
                      all(isinstance(b, numbers.Real) and not isinstance(b, bool) for b in value))
                if ok:
                    value = (float(value[0]), float(value[1]))
            if not ok:
                want = {bool: "a bool", int: "an int", float: "a number", str: "a str"}.get(kind, "a pair of numbers")
                raise TypeError(f"Config.{f.name} must be {want}{' or None' if optional else ''}, "
                                f"got {value!r} ({type(value).__name__})")
            object.__setattr__(self, f.name, value)

    def _validate(self):
        def bad(name, rule):
            raise ValueError(f"Config.{name} {rule}, got {getattr(self, name)!r}")

        for name, (low, high) in INT_RANGES.items():
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                step = INT_MULTIPLES.get(name)
                what = f"a multiple of {step} in {low}..{high}" if step else f"in {low}..{high}"
                bad(name, f"must be {'None or ' if _FIELD_KINDS[name][1] else ''}{what}")
        for name, step in INT_MULTIPLES.items():
            if getattr(self, name) % step:
                low, high = INT_RANGES[name]
                bad(name, f"must be a multiple of {step} in {low}..{high}")
        for name, (low, low_open, high, high_open) in FLOAT_RANGES.items():
            values = getattr(self, name)
            if values is None:
                continue
            for v in (values if isinstance(values, tuple) else (values,)):
                if not ((low < v if low_open else low <= v) and (v < high if high_open else v <= high)):
                    bad(name, "must lie in " + ("(" if low_open else "[") + f"{low:g}, {high:g}"
                        + (")" if high_open else "]") + (" (finite)" if high == math.inf else ""))
        if self.backbone not in BACKBONES:
            close = difflib.get_close_matches(self.backbone, BACKBONES, 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            bad("backbone", f"must be one of {', '.join(BACKBONES)}{hint}")
        if self.moe_top_k > self.num_experts:
            raise ValueError(f"Config.moe_top_k must be 0 (dense) or 1..Config.num_experts "
                             f"({self.num_experts}), got {self.moe_top_k}")
        if self.stage1_epochs > self.epochs:
            raise ValueError(f"Config.stage1_epochs ({self.stage1_epochs}) must not exceed "
                             f"Config.epochs ({self.epochs})")
        if self.scheduler not in SCHEDULERS:
            bad("scheduler", f"must be one of {', '.join(map(repr, SCHEDULERS))}")
        if self.scheduler == "cosine" and self.min_lr > min(self.lr, self.effective_stage2_lr):
            raise ValueError(f"Config.min_lr ({self.min_lr}) must not exceed Config.lr and "
                             f"Config.stage2_lr ({self.lr}, {self.effective_stage2_lr}) with the "
                             f"cosine scheduler")
        if not self.checkpoint_dir:
            bad("checkpoint_dir", "must be a non-empty path")
        if self.select_metric not in SELECT_METRICS:
            bad("select_metric", f"must be one of {', '.join(sorted(SELECT_METRICS))}")
        if self.dataset_path is not None and not self.dataset_path:
            bad("dataset_path", "must be None or a non-empty path")
        if parse_device(self.device) is None:
            hint = " (a GPU is 'cuda')" if self.device.lower().startswith("gpu") else ""
            bad("device", f"must be 'auto', 'cpu', 'cuda' or 'cuda:N' with N in "
                          f"0..{MAX_CUDA_ORDINAL}{hint}")


def parse_device(device):
    """A valid Config.device in its canonical form ("auto", "cpu" or "cuda:N"; "cuda" is
    "cuda:0"), or None when it is not one of DEVICES."""
    if device in ("auto", "cpu"):
        return device
    if device == "cuda":
        return "cuda:0"
    head, colon, ordinal = device.partition(":")
    # ASCII digits only (str.isdigit also takes "²"), no sign, no leading zero
    if (head == "cuda" and colon and ordinal and len(ordinal) <= 3 and
            all("0" <= c <= "9" for c in ordinal) and (ordinal == "0" or ordinal[0] != "0")
            and int(ordinal) <= MAX_CUDA_ORDINAL):
        return f"cuda:{int(ordinal)}"
    return None


# The accepted range of every number field (the one table: validation, the CLI's help and
# the tests that try both sides of each edge read it). Upper bounds keep sizes and counts
# far inside the C engine's 64-bit arithmetic (csrc/train/trainer.c, csrc/model/cod.h
# check the same limits) and turn a typo into an error instead of an allocation of
# terabytes. Integers: inclusive (lowest, highest).
MAX_EPOCHS = 100_000          # = CX_TRAINER_MAX_EPOCHS
MAX_DECODER_DIM = 4096        # = CX_COD_MAX_DECODER_DIM
MAX_IMG_SIZE = 4096
MAX_BATCH = 4096              # = CX_TRAINER_MAX_BATCH
MAX_ACCUMULATION = 1024       # = CX_TRAINER_MAX_ACCUMULATION
MAX_EXPERTS = 32              # = CX_COD_MAX_EXPERTS
MAX_TIMEOUT = 7 * 24 * 3600.0  # seconds a collective of a data-parallel run may wait
MAX_SYNTHETIC = 10_000_000    # images; the memory they need is checked when they are made
INT_RANGES = {
    "img_size": (32, MAX_IMG_SIZE),
    "batch_size": (1, MAX_BATCH),
    "num_workers": (0, 256),
    "synthetic_train": (1, MAX_SYNTHETIC),
    "synthetic_test": (0, MAX_SYNTHETIC),
    "num_experts": (1, MAX_EXPERTS),
    "moe_top_k": (0, MAX_EXPERTS),
    "decoder_dim": (4, MAX_DECODER_DIM),
    "epochs": (1, MAX_EPOCHS),
    "stage1_epochs": (0, MAX_EPOCHS),
    "accumulation_steps": (1, MAX_ACCUMULATION),
    "seed": (0, 2 ** 64 - 1),
    "eval_every": (1, MAX_EPOCHS),
    "log_every": (1, 1_000_000_000),
    "num_threads": (1, 256),
    "world_size": (1, 64),  # csrc/dist/comm.h, CX_COMM_MAX_RANKS
}
# Integer fields that must also be multiples of a step.
INT_MULTIPLES = {"img_size": 32, "decoder_dim": 4}
# Real fields (betas: each of the two): (low, low excluded, high, high excluded).
FLOAT_RANGES = {
    "drop_path_rate": (0.0, False, 1.0, True),
    "ds_weight": (0.0, False, math.inf, True),
    "balance_weight": (0.0, False, math.inf, True),
    "lr": (0.0, True, math.inf, True),
    "stage2_lr": (0.0, True, math.inf, True),
    "backbone_lr_mult": (0.0, False, math.inf, True),
    "weight_decay": (0.0, False, math.inf, True),
    "betas": (0.0, False, 1.0, True),
    "eps": (0.0, True, math.inf, True),
    "warmup_epochs": (0.0, False, float(MAX_EPOCHS), False),
    "min_lr": (0.0, False, math.inf, True),
    "grad_clip": (0.0, False, math.inf, True),
    "timeout": (0.0, True, MAX_TIMEOUT, False),
    "ema_decay": (0.0, False, 1.0, True),
}


# Field types for _coerce: name -> (kind, None allowed); tuple means "betas".
_PATH_FIELDS = {"dataset_path", "checkpoint_dir", "pretrained"}
_FIELD_KINDS = {}
for _f in fields(Config):
    _t = _f.type
    _optional = getattr(_t, "__origin__", None) is not None and type(None) in getattr(_t, "__args__", ())
    if _optional:
        _t = next(a for a in _t.__args__ if a is not type(None))
    _FIELD_KINDS[_f.name] = (_t if _t in (bool, int, float, str) else tuple, _optional)
FIELD_NAMES = tuple(_f.name for _f in fields(Config))
# Fields added after runs were first saved: a saved config without them (a run of an older
# codext) takes their default (codext/_rundir.py, parse_config).
ADDED_FIELDS = ("device",)

_generated_init = Config.__init__


@functools.wraps(_generated_init)
def _init_with_names(self, *args, **kwargs):
    if args:
        raise TypeError("Config takes keyword arguments only, e.g. Config(epochs=10)")
    for name in kwargs:
        if name not in FIELD_NAMES:
            close = difflib.get_close_matches(name.replace("-", "_"), FIELD_NAMES, 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"Config has no field {name!r}{hint}")
    _generated_init(self, **kwargs)


_init_with_names.__signature__ = inspect.signature(_generated_init)
Config.__init__ = _init_with_names
del _f, _t, _optional
