"""Writes a run's checkpoint sets crash-consistently (the layout: codext/_rundir.py).

One save, in this order, each file atomic (temporary name, fsync, rename, fsync of the
folder: csrc/io/safetensors_write.c):

    best.safetensors                when this epoch is the best so far
    last.state.step<N>.safetensors  the training state at step N
    last.safetensors                the weights, naming the state file and its size: from
                                    this rename on, the new set is the run's checkpoint
    history.json
    then the files no set needs: older states, last.state.safetensors of the old layout,
    temporary files of interrupted writes

A kill at any moment leaves last.safetensors naming a complete state: the new set, or the
previous one (its state is removed only after the new last.safetensors is durable). best
is written before the set that records it, so a resumed run never points at an older best.

Fault injection for tests (docs/testing.md): CODEXT_KILL_IN_SAVE=POINT[:N] makes this
process SIGKILL itself at POINT of its N-th save (default 1), POINT one of SAVE_POINTS:
after writing best, state or last (weights), history; or state-tmp / weights-tmp: with a
half-written temporary file of the state / the weights left behind, as a kill inside the
C writer leaves it.
"""
import json
import os
import signal
import sys

from . import _C
from . import _rundir
from .model import METADATA_KEY

SAVE_POINTS = ("best", "state-tmp", "state", "weights-tmp", "weights", "history")
KILL_ENV = "CODEXT_KILL_IN_SAVE"
_saves_done = [0]  # saves this process made (the N of CODEXT_KILL_IN_SAVE)


def kill_plan(text=None):
    """(point, n) from CODEXT_KILL_IN_SAVE, or None; ValueError naming the variable."""
    text = os.environ.get(KILL_ENV, "") if text is None else text
    if not text:
        return None
    point, _, n = text.partition(":")
    if point not in SAVE_POINTS or not (n == "" or (n.isdigit() and int(n) >= 1)):
        raise ValueError(f"{KILL_ENV}={text!r} must be POINT or POINT:N with POINT one of "
                         f"{', '.join(SAVE_POINTS)} and N >= 1 (the N-th save of this process)")
    return point, int(n or 1)


def _kill_here(plan, point, half_written=None):
    """SIGKILL this process when plan names this point of this save. half_written:
    (write(path), target): first leave a half-written temporary file of target."""
    if plan is None or plan != (point, _saves_done[0]):
        return
    if half_written is not None:
        write, target = half_written
        tmp = f"{target}.tmp.{os.getpid()}"  # the C writer's temporary name
        write(tmp)
        with open(tmp, "r+b") as f:
            f.truncate(os.fstat(f.fileno()).st_size // 2)
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def atomic_write_text(path, text):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_weights(path, model, step, run_id, kind, digest=None, state_file=None, state_size=None):
    """Writes model's weights with the run metadata (codext/_rundir.py); returns their digest."""
    names = model.parameter_names()
    state = model.state_dict()
    digest = digest or _rundir.weights_digest(model._host_params())
    _C.safetensors_save(path, names, [state[n] for n in names],
                        {"format": "pt", METADATA_KEY: model.config.to_json(),
                         **_rundir.weights_metadata(run_id, step, kind, digest, state_file, state_size)})
    return digest


def save_set(folder, *, model, trainer, step, run_id, state_metadata, history, best_model=None):
    """One checkpoint save into `folder` (see the module docstring). model: the trained
    weights; trainer: its _C.Trainer (the state); state_metadata: the run metadata of the
    state file (str -> str, without the weights digest); history: the JSON-ready history;
    best_model: the EMA weights when this epoch is the best so far."""
    _saves_done[0] += 1
    plan = kill_plan()
    run = _rundir.RunDir(folder)
    if best_model is not None:
        save_weights(run.paths[_rundir.BEST], best_model, step, run_id, "best")
        _kill_here(plan, "best")
    digest = _rundir.weights_digest(model._host_params())
    meta = dict(state_metadata, **{_rundir.LAST_CRC_KEY: digest})
    state_file = _rundir.state_name(step)
    state_path = os.path.join(folder, state_file)
    _kill_here(plan, "state-tmp", (lambda p: trainer.save_state(p, meta), state_path))
    trainer.save_state(state_path, meta)
    _kill_here(plan, "state")
    size = os.path.getsize(state_path)
    last = run.paths[_rundir.LAST]
    _kill_here(plan, "weights-tmp",
               (lambda p: save_weights(p, model, step, run_id, "last", digest, state_file, size), last))
    save_weights(last, model, step, run_id, "last", digest, state_file, size)
    _kill_here(plan, "weights")
    atomic_write_text(run.paths[_rundir.HISTORY], json.dumps(history, indent=1))
    _kill_here(plan, "history")
    remove_files(folder, run.stale_files(state_file))


def tidy(run, history):
    """On resuming `run` (a checked RunDir): what a kill after its last set was committed
    left undone: history.json rewritten from the state's history when it differs, files no
    set needs removed. A finished run that was already tidy is left byte for byte alone."""
    text = json.dumps(history, indent=1)
    path = run.paths[_rundir.HISTORY]
    try:
        with open(path) as f:
            same = f.read() == text
    except OSError:
        same = False
    if not same:
        atomic_write_text(path, text)
    remove_files(run.folder, run.stale_files(os.path.basename(run.state_path)))


def remove_files(folder, names):
    for name in names:
        try:
            os.remove(os.path.join(folder, name))
        except FileNotFoundError:
            pass


def prepare_folder(path, resuming=False):
    """Creates the checkpoint folder and proves it writable with a real write (os.access says
    yes to root on a read-only mount), before any training; returns its absolute path.
    OSError naming Config.checkpoint_dir, or (resuming) saying to resume a copy of the run."""
    path = os.path.abspath(os.path.expanduser(path))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        _refuse_folder(path, e, "cannot be created", resuming)
    probe = os.path.join(path, f".codext-write-test-{os.getpid()}")
    try:
        with open(probe, "wb") as f:
            f.write(b"ok")
    except OSError as e:
        _refuse_folder(path, e, "is not writable", resuming)
    finally:
        try:
            os.remove(probe)
        except OSError:
            pass
    return path


def _refuse_folder(path, error, problem, resuming):
    why = f"{problem} ({error.strerror or error})"
    if resuming:  # e.g. a run attached read-only: resume writes into the run's folder
        raise OSError(error.errno, f"cannot resume the run in {path}: the folder {why}, and a "
                                   f"resumed run writes into its own folder; copy the folder "
                                   f"somewhere writable and resume the copy") from None
    raise OSError(error.errno, f"Config.checkpoint_dir {path!r} {why}; set "
                               f"Config.checkpoint_dir to a writable folder") from None


def claim_folder(folder, overwrite, log):
    """Before a new run writes into `folder`: FileExistsError when it holds a run (with the
    ways on), unless overwrite, which removes that run's files (and only those)."""
    run = _rundir.RunDir(folder)
    held = run.summary()
    if held is None:
        return
    if not overwrite:
        raise FileExistsError(
            f"{folder} already holds {held}; a new run would replace its files. Continue it "
            f"with train(config, resume={folder!r}), start over in it with overwrite=True, or "
            f"choose another checkpoint_dir")
    remove_files(folder, run.run_files())
    if log is not None:
        log(f"overwrite: removed the files of {held} in {folder}")
