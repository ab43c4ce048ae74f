"""The command line: ``python -m codext [train|eval|predict] [flags]``.

    python -m codext                                  # = train: the demo on a fresh CPU machine
    python -m codext train --dataset-path /data/COD10K-v3 --backbone edgenext_base \\
        --pretrained edgenext_base.in21k_ft_in1k --epochs 150 --stage1-epochs 30
    python -m codext eval --checkpoint checkpoints/best.safetensors [--dataset-path P]
    python -m codext predict --checkpoint checkpoints/best.safetensors --input IMG_OR_DIR --output DIR

train: every codext.Config field is a flag, named as the seed's launchers name it (field
``batch_size`` is ``--batch-size``; booleans have ``--x`` / ``--no-x``, so ``--no-amp``).
FIELD_HELP below is the one table: a field's type, range checks and default come from
Config itself. With no --dataset-path it trains on the built-in synthetic set; with no
dataset and no GPU for the trainer (none usable, --device cpu, or --use-ddp, whose workers
train on the CPU) the defaults shrink to Config.demo() (a few minutes on 2 CPU cores) and
the output says so; any flag given still wins (``--no-demo`` keeps the full defaults).
``--device`` (auto, cpu, cuda, cuda:N) picks where it trains; a device this machine or
build cannot use is a usage error naming --device and the reason (codext/_device.py).
``--use-ddp`` trains data-parallel: as one rank when torchrun or srun started this process (RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT or SLURM_*; rank 0 hosts the
rendezvous store on MASTER_PORT), otherwise through codext.launch() with ``--nprocs``
workers (default 1) and ``--master-port`` for its store (default: a free port).
``--use-cod-specialized`` (a seed flag) is accepted and ignored with a note.

Exit status: 0 done, 2 a usage error (unknown flag, invalid value, impossible combination,
a path given that does not exist), 1 a failure while working (unreadable dataset or
checkpoint, NaN in the loss, ...), 130 interrupted. Errors print one line, no traceback
(CODEXT_DEBUG=1 shows it).
"""
import argparse
import json
import os
import sys
import time

from ._hints import fit_unset_defaults, flag_of, flag_warnings as _flag_warnings, flagify as _flagify
from .config import BACKBONES, FIELD_NAMES, INT_RANGES, SCHEDULERS, SELECT_METRICS, Config, _FIELD_KINDS

# ---- the flag table --------------------------------------------------------------------------
# Config field -> help text. The flag is "--" + field with dashes; its type comes from Config.
FIELD_HELP = {
    "dataset_path": "COD dataset folder (COD10K-v3, CAMO, NC4K, CHAMELEON, SINet-V2 "
                    "TrainDataset/TestDataset); none: the built-in synthetic set",
    "img_size": "training resolution, a multiple of 32",
    "batch_size": "images per optimizer step before accumulation",
    "num_workers": "data decoding threads",
    "synthetic_train": "synthetic training images (no --dataset-path)",
    "synthetic_test": "synthetic test images (no --dataset-path)",
    "backbone": "EdgeNeXt size",
    "pretrained": "backbone weights: a safetensors file or a timm tag in the Hugging Face "
                  "cache (e.g. edgenext_base.in21k_ft_in1k)",
    "num_experts": "experts per neck scale",
    "moe_top_k": "0: dense mixture; k: sparse top-k routing with the balance loss",
    "decoder_dim": "decoder channels D (a multiple of 4)",
    "drop_path_rate": "stochastic depth in the backbone",
    "deep_supervision": "deep-supervision losses on the side outputs",
    "ds_weight": "weight of each deep-supervision loss",
    "balance_weight": "weight of the MoE balance loss (sparse mode)",
    "epochs": "total epochs",
    "stage1_epochs": "epochs with the backbone frozen (no backward through it)",
    "lr": "peak learning rate (stage 1, and the head in stage 2 unless --stage2-lr)",
    "stage2_lr": "stage-2 head learning rate (default: --lr)",
    "backbone_lr_mult": "stage-2 backbone lr = stage-2 lr x this",
    "weight_decay": "AdamW weight decay",
    "betas": "AdamW betas",
    "eps": "AdamW epsilon",
    "scheduler": "learning-rate schedule per stage",
    "warmup_epochs": "linear warmup epochs per stage (cosine)",
    "min_lr": "final learning rate (cosine)",
    "grad_clip": "global gradient-norm clip (0: off)",
    "accumulation_steps": "micro-batches per optimizer step",
    "ema_decay": "EMA decay of the weights used for evaluation (0: no EMA)",
    "device": "where the trainer runs: auto (a CUDA GPU when the CUDA backend is usable, else "
              "the CPU), cpu, cuda or cuda:N; --use-ddp workers take the GPU of their local rank "
              "(or the CPU)",
    "seed": "seed of the init, the shuffling and the augmentation",
    "checkpoint_dir": "where checkpoints, history.json and the best weights go",
    "amp": "mixed precision on the GPU (--no-amp: fp32)",
    "gradient_checkpointing": "keep only each backbone stage's input and output; backward recomputes "
                              "the stage (less memory, slower stage-2 steps, the same weights)",
    "deterministic": "deterministic GPU kernels (the CPU always is)",
    "select_metric": "metric that picks the best checkpoint",
    "eval_every": "evaluate every N epochs",
    "log_every": "progress: a line every N optimizer steps when stdout is not a terminal "
                 "(a terminal's line updates about twice a second)",
    "num_threads": "CPU engine threads (default: all this process may use)",
    "world_size": "data-parallel: the workers the recipe's global batch assumes; with another "
                  "number, --accumulation-steps is scaled to keep it (default: as the workers make it)",
    "timeout": "data-parallel: seconds a collective waits for the other workers "
               "(default: NCCL_TIMEOUT, else 600)",
}
_CHOICES = {"backbone": BACKBONES, "scheduler": SCHEDULERS, "select_metric": sorted(SELECT_METRICS)}
_METAVAR = {"dataset_path": "PATH", "checkpoint_dir": "DIR", "pretrained": "PATH_OR_TAG",
            "device": "{auto,cpu,cuda,cuda:N}"}
# The seed's multi-process flags: flag -> (argparse keywords, why it is ignored here).
IGNORED_FLAGS = {
    "--use-cod-specialized": (dict(action="store_true"),
                              "the COD mixture-of-experts neck is always on"),
}
DEMO_FIELDS = ("backbone", "img_size", "batch_size", "epochs", "stage1_epochs", "num_experts",
               "decoder_dim", "lr", "synthetic_train")
STRICT_HELP = ("--dataset-path: images without masks (and the reverse) or unreadable files are an "
               "error (default: they are skipped with a warning)")


def config_flags():
    """[(flag, field)] for every Config field, in Config's order."""
    return [(flag_of(name), name) for name in FIELD_NAMES]


class UsageError(Exception):
    """A bad command line: exit status 2. prog: the command it is about."""

    def __init__(self, message, prog=None):
        super().__init__(message)
        self.prog = prog


# ---- parsers ---------------------------------------------------------------------------------

def _add_config_flags(parser):
    groups = {}
    for flag, name in config_flags():
        kind, optional = _FIELD_KINDS[name]
        group_name = _group_of(name)
        group = groups.get(group_name) or groups.setdefault(group_name, parser.add_argument_group(group_name))
        kw = dict(dest="cfg_" + name, default=argparse.SUPPRESS, help=FIELD_HELP.get(name, f"Config.{name}"))
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif kind is tuple:
            kw.update(type=float, nargs=2, metavar=("B1", "B2"))
        else:
            kw["type"] = kind
            if name in _CHOICES:
                kw["choices"] = _CHOICES[name]
            kw["metavar"] = _METAVAR.get(name, {int: "N", float: "X", str: "STR"}[kind])
            if name in _CHOICES:
                kw["metavar"] = "{" + ",".join(_CHOICES[name]) + "}"
        if "default:" not in kw["help"]:
            kw["help"] += _default_text(name)
        group.add_argument(flag, **kw)


def _default_text(name):
    """' (default X)', or ' (default X; demo Y)' where Config.demo() differs."""
    full, demo = getattr(_defaults()[0], name), getattr(_defaults()[1], name)
    show = lambda v: ("on" if v else "off") if isinstance(v, bool) else v  # noqa: E731
    if full is None:
        return ""
    return f" (default {show(full)}" + (f"; demo {show(demo)})" if demo != full else ")")


def _defaults(cache=[]):
    if not cache:
        cache += [Config(), Config.demo()]
    return cache


def _group_of(name):
    data = {"dataset_path", "img_size", "batch_size", "num_workers", "synthetic_train", "synthetic_test"}
    model = {"backbone", "pretrained", "num_experts", "moe_top_k", "decoder_dim", "drop_path_rate",
             "deep_supervision", "ds_weight", "balance_weight"}
    run = {"device", "seed", "checkpoint_dir", "amp", "gradient_checkpointing", "deterministic", "select_metric",
           "eval_every", "log_every", "num_threads"}
    return "data" if name in data else "model" if name in model else "run" if name in run else "recipe"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message, self.prog)


def build_parser():
    top = _Parser(prog="python -m codext",
                  description="Train, evaluate and apply camouflaged-object-detection models.",
                  epilog="With no command, `train` runs (on a machine without a GPU and without "
                         "--dataset-path: the short CPU demo). `python -m codext COMMAND -h` lists "
                         "a command's flags.")
    sub = top.add_subparsers(dest="command", metavar="{train,eval,predict}", parser_class=_Parser)

    train = sub.add_parser("train", help="train a model (the default command)",
                           description="Train on a COD dataset folder or the built-in synthetic set.")
    _add_config_flags(train)
    t = train.add_argument_group("train")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR (its checkpoint dir) from its "
                                                  "newest complete checkpoint, writing into DIR")
    t.add_argument("--overwrite", action="store_true",
                   help="start a new run even if --checkpoint-dir holds one (its run files are removed "
                        "first); without it that is refused")
    t.add_argument("--demo", action=argparse.BooleanOptionalAction, default=None,
                   help="the small CPU demo defaults (Config.demo()); default: on when there is no "
                        "--dataset-path and no GPU for the trainer")
    t.add_argument("--quiet", action="store_true", help="no progress and no per-epoch lines")
    t.add_argument("--strict", action="store_true", help=STRICT_HELP)
    for flag, (kw, _) in IGNORED_FLAGS.items():
        t.add_argument(flag, dest="ignored_" + flag[2:].replace("-", "_"), default=None,
                       help="accepted and ignored (single-process run)", **kw)
    d = train.add_argument_group("data-parallel")
    d.add_argument("--use-ddp", action="store_true",
                   help="data-parallel training: a rank of torchrun/srun when their environment "
                        "is set, else codext.launch() with --nprocs workers")
    d.add_argument("--nprocs", type=int, metavar="N", default=None,
                   help="workers codext.launch() starts with --use-ddp (default 1 on the CPU)")
    d.add_argument("--master-port", type=int, metavar="PORT", default=None,
                   help="rendezvous port of codext.launch() (default: a free one; under "
                        "torchrun/srun MASTER_PORT is used)")

    ev = sub.add_parser("eval", help="evaluate a checkpoint on a test set",
                        description="Predict every test image at its own size and print the metrics.")
    _add_model_io(ev)
    ev.add_argument("--dataset-path", metavar="PATH",
                    help="COD dataset folder (every test set found); default: the synthetic test set "
                         "of the run (its seed and size)")
    ev.add_argument("--strict", action="store_true", help=STRICT_HELP)
    ev.add_argument("--synthetic-test", type=int, metavar="N", help="synthetic test images (default: the run's)")
    ev.add_argument("--seed", type=int, metavar="N", help="synthetic set seed (default: the run's)")
    ev.add_argument("--json", metavar="FILE", help="also write the metrics as JSON ('-': stdout, which "
                                                   "then holds the JSON alone; the other lines go to stderr)")

    pr = sub.add_parser("predict", help="write PNG masks for images",
                        description="Write one PNG per image: uint8 probabilities 0..255 at the image's size.")
    _add_model_io(pr)
    pr.add_argument("--input", required=True, metavar="IMG_OR_DIR", help="an image, or a folder of images")
    pr.add_argument("--output", required=True, metavar="DIR", help="folder for the masks (created)")
    return top


def _add_model_io(parser):
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="a model .safetensors (or a checkpoint dir: its best.safetensors)")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per forward (default 16)")
    parser.add_argument("--num-threads", type=int, metavar="N", help="CPU engine threads")


# ---- train -------------------------------------------------------------------------------------

def gpu_for_training(device="auto", use_ddp=False):
    """True when a run of Config.device `device` would train on a GPU: never for "cpu";
    for one process, when this build has the CUDA backend and it is usable
    (_C.cuda_backend_available(), which loads the CUDA libraries; codext/_device.py); with
    --use-ddp outside torchrun/srun, when codext.launch() would start GPU workers (decided
    without loading CUDA). The CLI picks the demo only without a dataset and without such
    a GPU (an explicit "cuda" that cannot run is then a usage error, not the demo)."""
    if device == "cpu":
        return False
    from ._device import cuda_status, plan_launch
    if use_ddp:
        from ._dist import place_from_env
        if place_from_env() is None:
            try:
                return plan_launch(device, None)[0] == "cuda"
            except (ValueError, RuntimeError):
                return False
    return cuda_status()[0]


def train_config(args):
    """(Config, demo: bool, notes: [str]) from parsed train arguments. With --resume the
    base is the run's own Config (saved in its training state) and flags change it."""
    given = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")}
    if "betas" in given:
        given["betas"] = tuple(given["betas"])
    check_range("--master-port", getattr(args, "master_port", None), 1, 65535)
    check_range("--nprocs", getattr(args, "nprocs", None), 1, 64)
    notes = [f"note: {flag} is ignored: {why}" for flag, (_, why) in IGNORED_FLAGS.items()
             if getattr(args, "ignored_" + flag[2:].replace("-", "_"), None) not in (None, False)]
    if not getattr(args, "use_ddp", False):
        notes += [f"note: {flag} is ignored without --use-ddp" for flag, value in
                  (("--nprocs", getattr(args, "nprocs", None)),
                   ("--master-port", getattr(args, "master_port", None))) if value is not None]
    if given.get("gradient_checkpointing"):
        notes.append("note: --gradient-checkpointing: stage-2 backward recomputes each backbone stage "
                     "(about a third less activation memory, slower steps, the same weights)")
    resume = getattr(args, "resume", None)
    saved = None
    if resume is not None:
        from ._cli_runs import resume_config
        saved = resume_config(resume, given, getattr(args, "overwrite", False))
    demo = args.demo
    if saved is not None:
        demo = False
    elif demo is None:  # no dataset and no GPU to train on
        demo = given.get("dataset_path") is None and not gpu_for_training(
            given.get("device", "auto"), getattr(args, "use_ddp", False))
    if saved is None:
        notes += fit_unset_defaults(given, Config.demo() if demo else Config(), demo)
    try:
        if saved is not None:
            cfg = Config.from_dict({**saved, **given})
        else:
            cfg = Config.demo(**given) if demo else Config(**given)
    except (TypeError, ValueError) as e:
        raise UsageError(_flagify(str(e))) from None
    if cfg.dataset_path is not None and not os.path.exists(cfg.dataset_path):
        raise UsageError(f"--dataset-path {cfg.dataset_path}: no such folder")
    return cfg, demo, notes


def check_device(cfg, args, given):
    """UsageError when --device asks for what cannot run: "cuda" without a usable CUDA backend
    or visible GPU (the reason named), "cuda:N" with --use-ddp (each worker takes the GPU of
    its local rank), more --nprocs than GPUs."""
    from ._device import plan_launch, resolve
    try:
        if args.use_ddp:
            from ._dist import place_from_env
            place = place_from_env()
            if place is None:  # codext.launch() starts the workers: decided without CUDA
                plan_launch(cfg.device, args.nprocs)
            else:
                resolve(cfg.device, data_parallel=True, local_rank=place.local_rank)
        else:
            resolve(cfg.device)
    except (ValueError, RuntimeError) as e:
        why = _flagify(str(e))
        if args.resume is not None and "device" not in given:
            why += f" (--device {cfg.device} is the resumed run's own setting)"
        raise UsageError(why) from None


def saved_run_config(path):
    """The Config fields a run saved in its training state (the state of the checkpoint set
    beside PATH, or in the folder PATH), or None when there is none. A state file whose metadata
    is damaged is an error naming the file and the field (codext/_rundir.py)."""
    from ._rundir import RunDir
    return RunDir.beside(path).saved_config()


def demo_banner(cfg, given_fields, asked=False):
    """asked: --demo was given (else the demo was chosen for lack of a dataset and a GPU)."""
    fields = [f for f in DEMO_FIELDS  # the synthetic set's size means nothing on a dataset
              if not (f == "synthetic_train" and cfg.dataset_path is not None)]
    shown = ", ".join(f"{flag_of(f)} {getattr(cfg, f)}" for f in fields)
    full = Config()
    why = "--demo" if asked else "no --dataset-path and no GPU"
    where = (f"on {cfg.dataset_path}" if cfg.dataset_path is not None else
             "on the synthetic set, a few minutes on 2 CPU cores")
    lines = [
        f"codext: DEMO run ({why}): the defaults are Config.demo()'s [{shown}] {where}."
        + (f" Your flags win: {', '.join(flag_of(f) for f in sorted(given_fields))}." if given_fields else ""),
        "  The real job: python -m codext train --dataset-path /path/to/COD10K-v3 "
        f"--pretrained {full.backbone}.in21k_ft_in1k   (defaults: {full.backbone}, {full.img_size}x"
        f"{full.img_size}, {full.epochs} epochs, {full.stage1_epochs} frozen, batch {full.batch_size})",
    ]
    return "\n".join(lines)


def check_synthetic_memory(n_train, n_test, img_size, where):
    """UsageError when the synthetic set asked for does not fit in the memory available
    (it would be OOM-killed while committing it). where: the flags, as the user gave them."""
    from . import _shared
    from .data import synthetic_bytes
    try:
        _shared.check_memory(synthetic_bytes(n_train, n_test, img_size),
                             f"{where} ({img_size}x{img_size} images)")
    except _shared.MemoryRequestError as e:
        raise UsageError(str(e)) from None


def cmd_train(args):
    cfg, demo, notes = train_config(args)
    if cfg.dataset_path is None:
        check_synthetic_memory(cfg.synthetic_train, cfg.synthetic_test, cfg.img_size,
                               f"--synthetic-train {cfg.synthetic_train} and --synthetic-test "
                               f"{cfg.synthetic_test}")
    for note in notes:
        print(note, file=sys.stderr)
    given = {k[4:] for k in vars(args) if k.startswith("cfg_")}
    rank0 = True
    workers = 1
    if args.use_ddp:
        from ._dist import place_from_env
        place = place_from_env()
        if place is not None and place.rank != 0:
            demo = rank0 = False  # rank 0 alone talks
        workers = place.world if place is not None else args.nprocs
    try:  # --world-size: an uneven split is a usage error before anything starts
        cfg.fit_to_world(workers or 1)
    except ValueError as e:
        raise UsageError(_flagify(str(e))) from None
    check_device(cfg, args, given)
    overwrite = getattr(args, "overwrite", False)
    if args.resume is None and not overwrite and rank0:
        from ._cli_runs import refuse_existing_run
        refuse_existing_run(cfg, given)
    if demo:
        print(demo_banner(cfg, given, asked=args.demo is True), flush=True)
    import codext
    from .train import train
    data = None
    if cfg.dataset_path is not None:
        with _flag_warnings():
            data = codext.data.load(cfg.dataset_path, img_size=cfg.img_size,
                                    workers=max(1, cfg.num_workers), strict=args.strict)
        print(f"data: {data}", flush=True)
    log = _print_flush
    t0 = time.perf_counter()
    if args.use_ddp:
        result = _train_ddp(cfg, data, args, log)
        if result is None:  # a rank other than 0: rank 0 reports
            return 0
    else:
        result = train(cfg, data, resume=args.resume, overwrite=overwrite, progress=not args.quiet,
                       log=log)
    seconds = time.perf_counter() - t0
    took = f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
    print(f"done in {took}. best epoch by {cfg.select_metric}: {format_metrics(result.metrics)}", flush=True)
    print(f"  best weights: {result.best_checkpoint}\n  last weights: {result.last_checkpoint}\n"
          f"  history:      {os.path.join(os.path.dirname(result.last_checkpoint), 'history.json')}", flush=True)
    print(f"  evaluate: python -m codext eval --checkpoint {result.best_checkpoint}"
          + (f" --dataset-path {cfg.dataset_path}" if cfg.dataset_path else ""), flush=True)
    report_against_baselines(result, cfg, data)
    return 0


def report_against_baselines(result, cfg, data):
    """Prints the run's test scores beside the trivial baselines' (codext/baselines.py) and
    writes predictions.png into the checkpoint folder; nothing without a test split."""
    if not result.metrics:
        return
    import codext
    from .baselines import end_of_run_report
    if data is None:  # the run's own synthetic test set (made again: it is deterministic)
        data = codext.data.synthetic(0, cfg.synthetic_test, cfg.img_size, cfg.seed)
    lines, _ = end_of_run_report(codext.load(result.best_checkpoint), data.test, result.metrics,
                                 os.path.dirname(result.best_checkpoint))
    print("\n".join(lines), flush=True)


def _train_ddp(cfg, data, args, log):
    """--use-ddp: a rank of torchrun/srun, or codext.launch(); None on ranks other than 0."""
    from . import _dist
    from .launch import launch, train_as_rank
    place = _dist.place_from_env()
    if place is not None:
        if args.nprocs is not None or args.master_port is not None:
            print(f"note: --nprocs and --master-port are ignored under {place.source} (its "
                  f"WORLD_SIZE and MASTER_PORT rule)", file=sys.stderr)
        result = train_as_rank(cfg, data, place, resume=args.resume, overwrite=args.overwrite,
                               log=log if not args.quiet else None)
        return result if place.rank == 0 else None
    return launch(cfg, data, nprocs=args.nprocs, master_port=args.master_port, resume=args.resume,
                  overwrite=args.overwrite, log=log if not args.quiet else None)


def _print_flush(*args, **kw):
    kw.setdefault("flush", True)
    print(*args, **kw)


# ---- eval and predict ------------------------------------------------------------------------

def resolve_checkpoint(path):
    """A model file: PATH itself, or PATH/best.safetensors (else last.safetensors) for a dir."""
    if os.path.isdir(path):
        for name in ("best.safetensors", "last.safetensors"):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise UsageError(f"--checkpoint {path}: the folder holds no best.safetensors or last.safetensors")
    if not os.path.isfile(path):
        raise UsageError(f"--checkpoint {path}: no such file")
    return path


def run_settings(checkpoint):
    """The run's Config fields saved beside a checkpoint (its training state), or {}."""
    return saved_run_config(checkpoint) or {}


def check_range(flag, value, low, high):
    """UsageError naming the flag unless low <= value <= high (None passes)."""
    if value is not None and not low <= value <= high:
        raise UsageError(f"{flag} must be in {low}..{high}, got {value}")


def _load_model(args):
    import codext
    check_range("--batch-size", args.batch_size, *INT_RANGES["batch_size"])
    check_range("--num-threads", args.num_threads, *INT_RANGES["num_threads"])
    if args.num_threads is not None:
        codext.set_num_threads(args.num_threads)
    path = resolve_checkpoint(args.checkpoint)
    return path, codext.load(path)


def cmd_eval(args):
    import codext
    from .train import evaluate
    if args.dataset_path is not None and not os.path.exists(args.dataset_path):
        raise UsageError(f"--dataset-path {args.dataset_path}: no such folder")
    check_range("--seed", args.seed, *INT_RANGES["seed"])
    check_range("--synthetic-test", args.synthetic_test, 1, INT_RANGES["synthetic_test"][1])
    path, model = _load_model(args)
    size = model.config.img_size
    if args.dataset_path is not None:
        with _flag_warnings():
            data = codext.data.load(args.dataset_path, img_size=size, strict=args.strict)
        sets = data.tests
        if not sets:
            raise ValueError(f"{args.dataset_path} holds no test set")
    else:
        # the run's settings fill what the flags leave open (checked: valid Config values)
        saved = run_settings(path) if args.seed is None or args.synthetic_test is None else {}
        seed = args.seed if args.seed is not None else saved.get("seed", model.config.seed)
        n_test = args.synthetic_test if args.synthetic_test is not None else \
            saved.get("synthetic_test", Config.synthetic_test)
        if n_test < 1:
            raise UsageError(f"the run of {path} has no synthetic test set (synthetic_test "
                             f"{n_test}): give --synthetic-test N or --dataset-path")
        where = f"--synthetic-test {n_test}" + ("" if args.synthetic_test is not None else
                                                 f" (the run's synthetic_test, saved beside {path})")
        check_synthetic_memory(0, n_test, size, where)
        sets = {"synthetic": codext.data.synthetic(0, n_test, size, seed).test}
    human = sys.stderr if args.json == "-" else sys.stdout  # `--json -`: stdout is JSON only
    print(f"model: {path} ({model.config.backbone}, {size}x{size})", file=human, flush=True)
    results = {}
    for name, split in sets.items():
        t0 = time.perf_counter()
        metrics = evaluate(model, split, batch_size=args.batch_size)
        scalars = {k: float(v) for k, v in metrics.items() if _is_scalar(v)}
        results[name] = scalars
        print(f"{name} ({len(split)} images, {time.perf_counter() - t0:.1f} s): " + format_metrics(scalars),
              file=human, flush=True)
    if args.json:
        text = json.dumps(results if len(results) > 1 else next(iter(results.values())), indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 0


def _is_scalar(v):
    import numpy as np
    return isinstance(v, (int, float, np.integer, np.floating))


def format_metrics(m):
    names = (("sm", "S"), ("wfm", "wF"), ("mean_em", "mE"), ("max_em", "maxE"), ("mean_fm", "mF"),
             ("mae", "MAE"), ("iou", "IoU"), ("dice", "Dice"))
    return "  ".join(f"{label} {m[k]:.4f}" for k, label in names if k in m)


def cmd_predict(args):
    from ._cli_predict import cmd_predict as predict  # the images and the masks' files
    return predict(args)


# ---- entry -----------------------------------------------------------------------------------

COMMANDS = {"train": cmd_train, "eval": cmd_eval, "predict": cmd_predict}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["train"] + argv  # the main job: `python -m codext` trains
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("give a command: train, eval or predict", "python -m codext")
        return COMMANDS[args.command](args)
    except UsageError as e:
        prog = e.prog or f"python -m codext {argv[0]}"
        print(f"{prog}: error: {e}\n(see {prog} --help)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted (a training run continues with --resume CHECKPOINT_DIR)", file=sys.stderr)
        return 130
    except (OSError, ValueError, TypeError, RuntimeError, MemoryError, ArithmeticError) as e:
        if os.environ.get("CODEXT_DEBUG"):
            raise
        from ._rundir import RunMetadataError  # a file's fields keep the file's words
        print(f"codext: error: {e if isinstance(e, RunMetadataError) else _flagify(str(e))}",
              file=sys.stderr)
        return 1
