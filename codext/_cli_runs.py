"""The CLI's side of run folders: `train --resume DIR` and a new run in a folder that holds
one, worded in the flags the user typed (the checks themselves: codext/_rundir.py)."""
import os

from ._rundir import RunDir
from .cli import UsageError


def resume_config(resume, given, overwrite):
    """The Config fields of the run --resume continues; given["checkpoint_dir"] becomes its
    folder (a resumed run writes there, never where the run recorded it was)."""
    if not os.path.exists(resume):
        raise UsageError(f"--resume {resume}: no such file or folder")
    if overwrite:
        raise UsageError(f"--resume and --overwrite exclude each other: --resume continues the run "
                         f"in {resume}, --overwrite starts a new one")
    run = RunDir.for_resume(resume)  # FileNotFoundError with a way to recover: exit 1
    typed = given.get("checkpoint_dir")
    if typed is not None and os.path.abspath(os.path.expanduser(typed)) != run.folder:
        raise UsageError(f"--resume {resume} continues the run in {run.folder} and writes there, "
                         f"but --checkpoint-dir is {typed}: to continue it elsewhere, copy the "
                         f"folder there and resume the copy")
    saved = run.saved_config()
    given["checkpoint_dir"] = run.folder
    state = run.state()
    epochs = given.get("epochs", saved["epochs"])
    if state.epoch >= saved["epochs"] and epochs != saved["epochs"]:
        raise UsageError(f"--resume {resume}: the run is finished ({state.epoch} of {saved['epochs']} "
                         f"epochs) and a finished run is not extended (its learning-rate schedule "
                         f"ended with epoch {saved['epochs']}). To train {epochs} epochs, start a new "
                         f"run: --epochs {epochs} with another --checkpoint-dir, or with "
                         f"--checkpoint-dir {run.folder} --overwrite to replace this one")
    return saved


def refuse_existing_run(cfg, given):
    """UsageError when a new run would write into a folder that holds a run."""
    folder = os.path.abspath(os.path.expanduser(cfg.checkpoint_dir))
    held = RunDir(folder).summary()
    if held is None:
        return
    where = (f"--checkpoint-dir {cfg.checkpoint_dir}" if "checkpoint_dir" in given else
             f"{cfg.checkpoint_dir} (the default --checkpoint-dir)")
    raise UsageError(f"{where} already holds {held}. Continue it: python -m codext train --resume "
                     f"{cfg.checkpoint_dir}; evaluate it: python -m codext eval --checkpoint "
                     f"{cfg.checkpoint_dir}; or start a new run there with --overwrite (its run "
                     f"files are removed), or in another --checkpoint-dir")
