"""The one place that reads and checks a run directory (a training checkpoint folder).

A run folder, as codext.train writes it (codext/_checkpoint.py writes it):

    last.safetensors               model weights after the latest epoch; written last of
                                   a checkpoint set, it names the state file of its set
    last.state.step<N>.safetensors the training state (csrc/train/train_state.h) and run
                                   metadata at optimizer step N
    best.safetensors               the EMA weights of the best epoch
    history.json                   the history for people (never read back)

Crash consistency: a checkpoint set is (last.safetensors, the state it names). Every file
is written atomically (temporary name, fsync, rename, fsync of the folder), the state under
a name of its own first, last.safetensors last: so last.safetensors always names a state
that is complete, and a set appears at once. Older states and stale temporary files are
removed once a newer last.safetensors is durable. A folder written before this layout (a
last.safetensors without codext_state_file beside last.state.safetensors) resumes as before.

Metadata (safetensors metadata is str -> str; JSON values are JSON text):

    both weights files   codext_model         the ModelConfig (JSON object; codext.model)
                         codext_train_step    optimizer steps done when written (int)
                         codext_run_id        16 hex digits drawn when the run started
                         codext_weights       "last" (the trained weights) or "best" (EMA)
                         codext_weights_crc32 CRC-32 of the float32 parameter buffer (8 hex)
    last.safetensors     codext_state_file    the name of its set's state file (in the same
                                              folder: a moved folder stays whole)
                         codext_state_size    that file's size in bytes
    the state file       step, epoch, epoch_step, stage, stage_step, ema_updates, seed,
                         param_steps ...      the C trainer's (checked by Trainer.load_state
                                              against the plan of the resuming run)
                         codext_config        the Config (JSON object)
                         codext_history       JSON object: column name -> list of numbers/null
                         codext_best          JSON object {epoch, value, metrics}
                         codext_data          JSON object {n_train, shape, crc32}: the
                                              training data's fingerprint
                         codext_run_id        as in the weights files
                         codext_last_crc32    codext_weights_crc32 of the last.safetensors
                                              written with it

Every reader here checks types and ranges and raises RunMetadataError (a ValueError) naming
the file and the field. RunDir gathers the cross-checks of a set (the state and the weights
it belongs to: run id, step, which weights, their digest, the state's size; the history
against the run position) so that a resume refuses an inconsistent set before training
anything, and says how to recover when no complete set is left.
"""
import dataclasses
import json
import math
import os
import re
import struct
import zlib
from typing import Optional

import numpy as np

from .config import ADDED_FIELDS, FIELD_NAMES, Config

LAST = "last.safetensors"
LAST_STATE = "last.state.safetensors"  # the state of a folder written before issue 11
BEST = "best.safetensors"
HISTORY = "history.json"

MAX_HEADER = 100_000_000  # bytes of a safetensors JSON header (the C reader's limit)
STEP_KEY = "codext_train_step"
RUN_ID_KEY = "codext_run_id"
WEIGHTS_KEY = "codext_weights"
WEIGHTS_CRC_KEY = "codext_weights_crc32"
LAST_CRC_KEY = "codext_last_crc32"
WORLD_KEY = "codext_world_size"  # the ranks that trained the run (absent before issue 9's check)
MAX_WORLD = 64                   # csrc/dist/comm.h, CX_COMM_MAX_RANKS
STATE_FILE_KEY = "codext_state_file"
STATE_SIZE_KEY = "codext_state_size"
STEP_COLUMNS = ("step_loss", "step_lr", "step_epoch")
EPOCH_COLUMNS = ("epoch", "epoch_loss", "epoch_seconds", "epoch_images_per_s")
_RUN_ID = re.compile(r"[0-9a-f]{16}\Z")
_CRC = re.compile(r"[0-9a-f]{8}\Z")
_STATE_NAME = re.compile(r"last\.state\.step[0-9]{1,19}\.safetensors\Z")
# temporary files of the run files (the C writer's ".tmp.<pid>", history's ".tmp-<pid>")
_TEMPORARY = re.compile(r"(?:last\.safetensors|best\.safetensors|history\.json|last\.state\.safetensors|"
                        r"last\.state\.step[0-9]+\.safetensors)\.tmp[.-][0-9]+\Z")


def state_name(step):
    """The file name of the training state at optimizer step `step`."""
    return f"last.state.step{int(step)}.safetensors"


class RunMetadataError(ValueError):
    """A run file whose metadata is missing, of the wrong type or inconsistent."""

    def __init__(self, path, field, problem):
        super().__init__(f"{path}: {field}: {problem}")
        self.path, self.field = str(path), field


def new_run_id():
    return os.urandom(8).hex()


def weights_digest(params):
    """CRC-32 (8 hex digits) of a float32 parameter buffer."""
    buf = np.ascontiguousarray(params, dtype=np.float32)
    return f"{zlib.crc32(buf.view(np.uint8).reshape(-1)):08x}"


# ---- one file ----------------------------------------------------------------------------------

def read_header(path):
    """The JSON header of a safetensors file as a dict; RunMetadataError when the file is
    not one (too short, header length past the end, not UTF-8 JSON, not a JSON object,
    __metadata__ not an object of strings)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise RunMetadataError(path, "header", "file too short for a safetensors header")
            (size,) = struct.unpack("<Q", head)
            end = os.fstat(f.fileno()).st_size
            if size > MAX_HEADER or size > end - 8:
                raise RunMetadataError(path, "header", f"declared header length {size} exceeds "
                                       f"{'the file' if size <= MAX_HEADER else 'the 100 MB limit'}")
            text = f.read(size)
    except OSError as e:
        raise OSError(e.errno, f"{path}: cannot read ({e.strerror or e})") from None
    try:
        header = json.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise RunMetadataError(path, "header", f"not JSON ({e})") from None
    if not isinstance(header, dict):
        raise RunMetadataError(path, "header", f"must be a JSON object, got {_kind(header)}")
    meta = header.get("__metadata__", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise RunMetadataError(path, "__metadata__", f"must be a JSON object, got {_kind(meta)}")
    for k, v in meta.items():
        if not isinstance(v, str):
            raise RunMetadataError(path, f"__metadata__.{k}", f"must be a string, got {_kind(v)}")
    header["__metadata__"] = meta
    return header


def read_metadata(path):
    """The __metadata__ (str -> str) of a safetensors file, checked as read_header does."""
    return read_header(path)["__metadata__"]


def _kind(value):
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null", int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _text(meta, path, key):
    if key not in meta:
        raise RunMetadataError(path, key, "missing (not a codext run file, or written by an older "
                               "codext)")
    return meta[key]


def _json(meta, path, key, kind):
    text = _text(meta, path, key)
    try:
        value = json.loads(text)
    except ValueError as e:
        raise RunMetadataError(path, key, f"not JSON ({e})") from None
    if not isinstance(value, kind):
        raise RunMetadataError(path, key, f"must be {_kind(kind())}, got {_kind(value)}")
    return value


def _int(meta, path, key, low=0, high=2 ** 63 - 1):
    text = _text(meta, path, key)
    if not re.fullmatch(r"-?[0-9]{1,20}", text) or not low <= int(text) <= high:
        raise RunMetadataError(path, key, f"must be an integer in {low}..{high}, got {text[:40]!r}")
    return int(text)


def _pattern(meta, path, key, pattern, what):
    text = _text(meta, path, key)
    if not pattern.match(text):
        raise RunMetadataError(path, key, f"must be {what}, got {text[:40]!r}")
    return text


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_config(meta, path):
    """The Config fields saved in a state file, validated by Config: every field must be
    there but those of ADDED_FIELDS, which a run of an older codext did not save (they take
    their default); keys Config does not know, from a newer codext, are ignored."""
    saved = _json(meta, path, "codext_config", dict)
    missing = [k for k in FIELD_NAMES if k not in saved and k not in ADDED_FIELDS]
    if missing:
        raise RunMetadataError(path, "codext_config", f"lacks the field(s) {', '.join(missing)}")
    fields = {k: v for k, v in saved.items() if k in FIELD_NAMES}
    if isinstance(fields.get("betas"), list):
        fields["betas"] = tuple(fields["betas"])
    try:
        Config.from_dict(fields)
    except (TypeError, ValueError) as e:
        raise RunMetadataError(path, "codext_config", str(e)) from None
    return fields


def parse_history(meta, path):
    hist = _json(meta, path, "codext_history", dict)
    for col in STEP_COLUMNS + EPOCH_COLUMNS:
        if col not in hist:
            raise RunMetadataError(path, f"codext_history.{col}", "missing")
    for col, values in hist.items():
        where = f"codext_history.{col}"
        if col not in STEP_COLUMNS + EPOCH_COLUMNS and not col.startswith("val_"):
            raise RunMetadataError(path, where, "unknown column")
        if not isinstance(values, list):
            raise RunMetadataError(path, where, f"must be a list, got {_kind(values)}")
        integral = col in ("step_epoch", "epoch")
        for i, v in enumerate(values):
            ok = (_is_int(v) and v >= 0) if integral else (v is None or _is_number(v))
            if not ok:
                raise RunMetadataError(path, f"{where}[{i}]", f"must be "
                                       f"{'an integer >= 0' if integral else 'a finite number or null'}, "
                                       f"got {v!r}"[:200])
    n_steps, n_epochs = len(hist["step_loss"]), len(hist["epoch"])
    for col, values in hist.items():
        want = n_steps if col in STEP_COLUMNS else n_epochs
        if len(values) != want:
            raise RunMetadataError(path, f"codext_history.{col}", f"has {len(values)} entries, "
                                   f"{'step_loss' if col in STEP_COLUMNS else 'epoch'} has {want}")
    return {k: [math.nan if v is None else v for v in vals] for k, vals in hist.items()}


def parse_best(meta, path):
    best = _json(meta, path, "codext_best", dict)
    if set(best) != {"epoch", "value", "metrics"}:
        raise RunMetadataError(path, "codext_best", f"must have the keys epoch, value, metrics, "
                               f"got {sorted(best)}")
    if not (best["epoch"] is None or (_is_int(best["epoch"]) and best["epoch"] >= 0)):
        raise RunMetadataError(path, "codext_best.epoch", f"must be null or an integer >= 0, "
                               f"got {best['epoch']!r}")
    def real(v):  # a metric may be NaN (json writes NaN)
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if not (best["value"] is None or real(best["value"])):
        raise RunMetadataError(path, "codext_best.value", f"must be null or a number, "
                               f"got {best['value']!r}")
    if not isinstance(best["metrics"], dict) or not all(real(v) for v in best["metrics"].values()):
        raise RunMetadataError(path, "codext_best.metrics", "must be an object of numbers")
    return best


def parse_data(meta, path):
    data = _json(meta, path, "codext_data", dict)
    shape = data.get("shape")
    if set(data) != {"n_train", "shape", "crc32"} or not _is_int(data["n_train"]) or \
            data["n_train"] < 0 or not isinstance(shape, list) or len(shape) != 2 or \
            not all(_is_int(s) and s > 0 for s in shape) or not _is_int(data["crc32"]) or \
            not 0 <= data["crc32"] < 2 ** 32:
        raise RunMetadataError(path, "codext_data", "must be {\"n_train\": int >= 0, \"shape\": "
                               "[H, W], \"crc32\": 32-bit int}")
    return data


@dataclasses.dataclass
class RunState:
    """The run metadata of a state file, checked (see the module docstring)."""
    path: str
    config: dict
    history: dict
    best: dict
    data: dict
    run_id: str
    last_crc32: str
    step: int
    epoch: int
    world_size: Optional[int] = None  # None: a state written before the world size was kept


def read_state(path):
    path = os.fspath(path)
    meta = read_metadata(path)
    if meta.get("format") != "codext.train_state":
        raise RunMetadataError(path, "format", "not a codext training state "
                               f"(format {meta.get('format')!r})")
    return RunState(
        path=path, config=parse_config(meta, path), history=parse_history(meta, path),
        best=parse_best(meta, path), data=parse_data(meta, path),
        run_id=_pattern(meta, path, RUN_ID_KEY, _RUN_ID, "16 hex digits"),
        last_crc32=_pattern(meta, path, LAST_CRC_KEY, _CRC, "8 hex digits"),
        step=_int(meta, path, "step"), epoch=_int(meta, path, "epoch"),
        world_size=_int(meta, path, WORLD_KEY, 1, MAX_WORLD) if WORLD_KEY in meta else None)


@dataclasses.dataclass
class WeightsInfo:
    path: str
    step: int
    run_id: str
    kind: str
    crc32: str
    state_file: str = None  # last.safetensors of this layout: the name of its state file
    state_size: int = None


def read_weights_info(path):
    """The run metadata of a weights file written by codext.train."""
    path = os.fspath(path)
    meta = read_metadata(path)
    _json(meta, path, "codext_model", dict)  # its fields: checked by Model.load
    kind = _text(meta, path, WEIGHTS_KEY)
    if kind not in ("last", "best"):
        raise RunMetadataError(path, WEIGHTS_KEY, f"must be 'last' or 'best', got {kind[:40]!r}")
    info = WeightsInfo(path=path, step=_int(meta, path, STEP_KEY),
                       run_id=_pattern(meta, path, RUN_ID_KEY, _RUN_ID, "16 hex digits"),
                       kind=kind, crc32=_pattern(meta, path, WEIGHTS_CRC_KEY, _CRC, "8 hex digits"))
    if STATE_FILE_KEY in meta or STATE_SIZE_KEY in meta:
        info.state_file = _state_file_name(meta, path)
        info.state_size = _int(meta, path, STATE_SIZE_KEY, 1)
    return info


def _state_file_name(meta, path):
    """codext_state_file: a bare file name (never a path: the set lives in one folder)."""
    return _pattern(meta, path, STATE_FILE_KEY, _STATE_NAME, "a file name last.state.step<N>.safetensors")


def weights_metadata(run_id, step, kind, digest, state_file=None, state_size=None):
    """The run metadata a weights file carries (see the module docstring); last.safetensors
    also names its set's state file and that file's size."""
    meta = {STEP_KEY: str(step), RUN_ID_KEY: run_id, WEIGHTS_KEY: kind, WEIGHTS_CRC_KEY: digest}
    if state_file is not None:
        meta.update({STATE_FILE_KEY: state_file, STATE_SIZE_KEY: str(int(state_size))})
    return meta


# ---- a run folder --------------------------------------------------------------------------------

RECOVERY = ("To recover: best.safetensors, where present, still holds usable weights "
            "(codext.load); to train the run again in this folder, start it with overwrite=True "
            "(python -m codext train --overwrite).")


def is_run_file(name):
    """True for the names codext.train writes into a run folder (and their temporaries)."""
    return (name in (LAST, LAST_STATE, BEST, HISTORY) or bool(_STATE_NAME.match(name))
            or bool(_TEMPORARY.match(name)))


class RunDir:
    """A checkpoint folder: its files' paths and every check across them."""

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.paths = {name: os.path.join(self.folder, name) for name in (LAST, BEST, HISTORY)}
        self._state = None
        self._state_path = None

    @property
    def weights_path(self):
        return self.paths[LAST]

    @property
    def state_path(self):
        """The state file of the newest set: the one last.safetensors names (a folder
        written before issue 11, or without last.safetensors: last.state.safetensors)."""
        if self._state_path is None:
            name = LAST_STATE
            if os.path.isfile(self.weights_path):
                meta = read_metadata(self.weights_path)
                if STATE_FILE_KEY in meta or STATE_SIZE_KEY in meta:
                    name = _state_file_name(meta, self.weights_path)
            self._state_path = os.path.join(self.folder, name)
        return self._state_path

    def run_files(self):
        """The names of the run files in the folder (sorted; [] when it holds no run)."""
        try:
            names = os.listdir(self.folder)
        except OSError:
            return []
        return sorted(n for n in names if is_run_file(n) and os.path.isfile(os.path.join(self.folder, n)))

    def stale_files(self, keep_state):
        """Run files no set needs once the set of state file `keep_state` is durable: older
        states, the state of the old layout and temporary files of interrupted writes."""
        return [n for n in self.run_files() if n != keep_state and
                (n == LAST_STATE or _STATE_NAME.match(n) or _TEMPORARY.match(n))]

    def summary(self):
        """What the folder holds, in a few words for messages; None when no run files."""
        if not any(n in (LAST, LAST_STATE, BEST, HISTORY) or _STATE_NAME.match(n)
                   for n in self.run_files()):
            return None
        try:
            if not (os.path.isfile(self.weights_path) and os.path.isfile(self.state_path)):
                return "a run without a complete checkpoint"
            state = self.state()
            epochs = state.config["epochs"]
            if state.epoch >= epochs:
                return f"a finished run: {state.epoch} of {epochs} epochs, step {state.step}"
            return f"a run stopped after epoch {state.epoch} of {epochs}, step {state.step}"
        except (OSError, ValueError) as e:
            return f"a run whose checkpoint cannot be read ({e})"

    @classmethod
    def beside(cls, path):
        """The run folder PATH is (a folder) or lies in (a file)."""
        path = os.fspath(path)
        return cls(path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path)))

    @classmethod
    def for_resume(cls, resume):
        """The run to continue from `resume` (its folder, or a file of its checkpoint set);
        FileNotFoundError, with a way to recover, when the folder holds no complete set."""
        resume = os.path.expanduser(os.fspath(resume))
        if os.path.isdir(resume):
            folder = resume
        elif os.path.basename(resume) in (LAST, LAST_STATE) or _STATE_NAME.match(os.path.basename(resume)):
            folder = os.path.dirname(resume) or "."
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"cannot resume from {resume!r}: no such folder {folder!r}")
        elif not os.path.exists(resume):
            raise FileNotFoundError(f"cannot resume from {resume!r}: no such folder or file (a "
                                    f"checkpoint folder holds {LAST} and the state file it names)")
        else:
            raise ValueError(f"resume must be a checkpoint folder or a path to its {LAST}, got "
                             f"{resume!r}")
        run = cls(os.path.abspath(folder))
        if not os.path.isfile(run.weights_path):
            what = ("the run was stopped before its first checkpoint was complete"
                    if run.run_files() else "it holds no run files")
            raise FileNotFoundError(f"cannot resume from {run.folder}: no complete checkpoint "
                                    f"({run.weights_path} does not exist: {what}). {RECOVERY}")
        weights = read_weights_info(run.weights_path)
        if weights.kind != "last":
            raise ValueError(f"cannot resume: {weights.path} holds the {weights.kind} (EMA) "
                             f"weights, not the run's last weights (was {BEST} copied over it?)")
        if not os.path.isfile(run.state_path):
            raise FileNotFoundError(f"cannot resume from {run.folder}: the checkpoint set is "
                                    f"incomplete: {run.weights_path} belongs with "
                                    f"{os.path.basename(run.state_path)}, which does not exist. "
                                    f"{RECOVERY}")
        return run

    def state(self):
        """The checked RunState of last.state.safetensors (read once)."""
        if self._state is None:
            self._state = read_state(self.state_path)
        return self._state

    def saved_config(self):
        """The Config fields the run saved, or None when the folder has no state file."""
        if not os.path.isfile(self.state_path):
            return None
        return self.state().config

    def check_world_size(self, world):
        """ValueError unless the run was trained by `world` ranks (where its state says): the
        steps per epoch and every rank's shard of the epoch depend on it, so a run continues
        only with the number of workers it started with."""
        state = self.state()
        if state.world_size is None or state.world_size == world:
            return
        def workers(n):
            return f"{n} worker{'s' if n != 1 else ''}"
        raise ValueError(f"cannot resume from {self.folder}: the run was trained by "
                         f"{workers(state.world_size)} and would continue with {workers(world)}; "
                         f"resume it with nprocs={state.world_size} (a run continues only with the "
                         f"number of workers it started with: its steps per epoch and each "
                         f"worker's share of the epoch depend on it)")

    def check_resume(self, config, fingerprint, world=1):
        """The RunState to continue `config` from, after every check that needs no model:
        the run was trained by `world` ranks (check_world_size); the config (but
        RESUME_FREE_FIELDS) and the training data are the run's; the weights file is the
        run's own last weights at the state's step; the history fits the run position."""
        from .train import RESUME_FREE_FIELDS
        state = self.state()
        self.check_world_size(world)
        epochs = state.config["epochs"]
        if state.epoch >= epochs and config.epochs != epochs:
            raise ValueError(f"cannot resume from {self.folder}: the run is finished ({state.epoch} "
                             f"of {epochs} epochs) and a finished run is not extended (its "
                             f"learning-rate schedule ended with epoch {epochs}). To train "
                             f"{config.epochs} epochs, start a new run: in another checkpoint_dir, "
                             f"or in this one with overwrite=True (python -m codext train "
                             f"--epochs {config.epochs} --overwrite)")
        differ = _config_differences(state.config, config, RESUME_FREE_FIELDS)
        if differ:
            raise ValueError(f"cannot resume from {state.path}: it was written with another "
                             f"configuration ({'; '.join(differ)})")
        data_differ = [f"{k}: checkpoint {state.data.get(k)!r}, now {v!r}"
                       for k, v in fingerprint.items() if state.data.get(k) != v]
        if data_differ:
            raise ValueError(f"cannot resume from {state.path}: the training data differs "
                             f"({'; '.join(data_differ)})")
        n_epochs, n_steps = len(state.history["epoch"]), len(state.history["step_loss"])
        if n_epochs != state.epoch or n_steps != state.step:
            raise RunMetadataError(state.path, "codext_history", f"records {n_epochs} epochs and "
                                   f"{n_steps} steps, the run position is epoch {state.epoch}, "
                                   f"step {state.step}")
        if state.best["epoch"] is not None and state.best["epoch"] >= state.epoch:
            raise RunMetadataError(state.path, "codext_best.epoch", f"{state.best['epoch']} is "
                                   f"not an epoch done (the run has done {state.epoch})")
        weights = read_weights_info(self.weights_path)
        if weights.kind != "last":
            raise ValueError(f"cannot resume: {weights.path} holds the {weights.kind} (EMA) "
                             f"weights, not the run's last weights (was {BEST} copied over it?)")
        if weights.run_id != state.run_id:
            raise ValueError(f"cannot resume: {weights.path} (run {weights.run_id}) and "
                             f"{state.path} (run {state.run_id}) belong to different runs")
        if weights.step != state.step:
            raise ValueError(f"cannot resume: {weights.path} (step {weights.step}) and "
                             f"{state.path} (step {state.step}) belong to different epochs"
                             + ("" if weights.state_file else " (a checkpoint of the layout "
                                "before issue 11, interrupted while it was written)")
                             + f". {RECOVERY}")

        if weights.crc32 != state.last_crc32:
            raise ValueError(f"cannot resume: {weights.path} (weights digest {weights.crc32}) is "
                             f"not the file {state.path} was saved with (digest "
                             f"{state.last_crc32})")
        return state

    def check_state_size(self):
        """The state file has the size last.safetensors recorded for it (run after the
        state's own checks, which name what is wrong inside it)."""
        weights = read_weights_info(self.weights_path)
        if weights.state_file is not None:
            size = os.path.getsize(self.state_path)
            if size != weights.state_size:
                raise RunMetadataError(self.state_path, "size", f"{size} bytes, but {LAST} was "
                                       f"written with a state of {weights.state_size} bytes (the "
                                       f"set is damaged). {RECOVERY}")

    def check_weights(self, params):
        """The weights loaded from last.safetensors are those the state was saved with."""
        digest = weights_digest(params)
        if digest != self.state().last_crc32:
            raise ValueError(f"cannot resume: the weights in {self.weights_path} (digest {digest}) "
                             f"are not those {self.state_path} was saved with (digest "
                             f"{self.state().last_crc32})")


def _config_differences(saved, config, free):
    ours = config.to_dict()
    differ = []
    for key in sorted(set(saved) | set(ours)):
        if key in free:
            continue
        a, b = saved.get(key, "<absent>"), ours.get(key, "<absent>")
        if isinstance(a, (list, tuple)):
            a = list(a)
        if isinstance(b, (list, tuple)):
            b = list(b)
        if a != b:
            differ.append(f"{key}: checkpoint {a!r}, now {b!r}")
    return differ
