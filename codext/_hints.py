"""The command line's words for what the library says (codext/cli.py uses these).

Library messages name what a Python user writes: Config.img_size, strict=True, a resume's
"lr: checkpoint 0.001, now 0.005". The CLI user typed flags (--img-size, --strict, --lr):
flagify rewrites the first into the second, flag_warnings does it for warnings, and
fit_unset_defaults keeps a default the user never set from making their flags invalid.
"""
import contextlib
import re
import sys
import warnings

from .config import FIELD_NAMES, fitted_stage1_epochs


def flag_of(field):
    return "--" + field.replace("_", "-")


def fit_unset_defaults(given, defaults, demo):
    """A default the user did not set must not make the flags they did set invalid: the
    frozen stage-1 epochs shrink to fit --epochs, the cosine floor --min-lr to fit --lr.
    Changes `given`; returns notes saying what was fitted and how to choose."""
    whose = "the demo's" if demo else "the default"
    notes = []
    epochs = given.get("epochs", defaults.epochs)
    fitted = fitted_stage1_epochs(epochs, defaults.stage1_epochs)
    if "stage1_epochs" not in given and fitted is not None:
        given["stage1_epochs"] = fitted
        notes.append(f"note: --stage1-epochs {fitted}: {whose} {defaults.stage1_epochs} "
                     f"frozen-backbone epochs leave no stage-2 epoch in --epochs {epochs}; "
                     f"stage 1 takes half the run, rounded down (give --stage1-epochs N to "
                     f"choose)")
    lr = given.get("lr", defaults.lr)
    stage2_lr = given.get("stage2_lr", defaults.stage2_lr)
    lowest = min(lr, lr if stage2_lr is None else stage2_lr)
    if given.get("scheduler", defaults.scheduler) == "cosine" and "min_lr" not in given \
            and defaults.min_lr > lowest:
        given["min_lr"] = lowest
        notes.append(f"note: --min-lr {lowest:g}: {whose} {defaults.min_lr:g} is above --lr / "
                     f"--stage2-lr; the cosine schedule ends at the lower of them (give "
                     f"--min-lr X to choose)")
    return notes


def flagify(message):
    """Library messages name what a Python user writes (Config.img_size, strict=True, a
    resume's "lr: checkpoint 0.001, now 0.005"); the CLI user typed flags (--img-size,
    --strict, --lr)."""
    for name in sorted(FIELD_NAMES, key=len, reverse=True):
        message = message.replace(f"Config.{name}", flag_of(name))
        message = re.sub(rf"(?<![\w.-]){name}(?=: checkpoint )", flag_of(name), message)
    message = message.replace("codext.data.load(strict=True)", "--strict")
    message = message.replace("(strict=True raises instead)", "(--strict makes this an error)")
    message = message.replace("pass cache_dir= or set CODEXT_CACHE_DIR", "set CODEXT_CACHE_DIR")
    message = re.sub(r"\bnprocs=(\d+)", r"--nprocs \1", message)
    return message


@contextlib.contextmanager
def flag_warnings():
    """Library warnings as one plain line each on stderr, in the CLI's words."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                print(f"warning: {flagify(str(w.message))}", file=sys.stderr, flush=True)
