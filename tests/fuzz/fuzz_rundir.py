"""atheris harness: run metadata (codext/_rundir.py), the reader of a run directory.

Input: byte 0 chooses the entry point; the rest holds the file(s):
  0  a state file (last.state.safetensors)  -> read_state (config, history, best, data ...)
  1  a weights file (last/best.safetensors) -> read_weights_info
  2  a run folder: "@@file NAME" sections (fuzz_datacache.pack) with last.safetensors and
     last.state.safetensors -> RunDir.check_resume with the state's own config and data
     fingerprint (so the checks across the files are reached), as `train --resume` does
  3  any file -> read_header (the safetensors header and __metadata__)

Accepted: the values have the documented types and ranges (the config is a valid Config,
history columns are lists of equal length per kind, step and epoch are integers >= 0,
run id and digests have their pattern), and a set check_resume accepts agrees across its
files. Refused: RunMetadataError, ValueError or OSError with a message.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pyharness  # noqa: E402
from pyharness import expect, refused  # noqa: E402
from fuzz_datacache import pack, unpack  # noqa: E402,F401  (pack: the seed generator's)

READER = "rundir"
INSTRUMENT = ("codext",)

_m = {}


def setup():
    if _m:
        return
    import codext  # noqa: F401
    from codext import _rundir
    from codext.config import Config
    _m.update(rundir=_rundir, Config=Config, folder=pyharness.scratch_dir(READER))


def _check_state(state):
    rd, Config = _m["rundir"], _m["Config"]
    cfg = Config.from_dict(state.config)  # must not raise: read_state validated it
    expect(cfg.to_dict().keys() == dict(state.config, betas=list(cfg.betas)).keys(),
           "read_state's config has other fields than Config")
    expect(isinstance(state.step, int) and isinstance(state.epoch, int) and state.step >= 0
           and state.epoch >= 0, f"step {state.step!r}, epoch {state.epoch!r}")
    for cols, n in ((rd.STEP_COLUMNS, len(state.history["step_loss"])),
                    (rd.EPOCH_COLUMNS, len(state.history["epoch"]))):
        for col in cols:
            expect(isinstance(state.history[col], list) and len(state.history[col]) == n,
                   f"history column {col} has another length")
    expect(re.fullmatch(r"[0-9a-f]{16}", state.run_id) is not None, f"run id {state.run_id!r}")
    expect(re.fullmatch(r"[0-9a-f]{8}", state.last_crc32) is not None, f"digest {state.last_crc32!r}")
    return cfg


def one_input(data):
    setup()
    if len(data) < 1:
        return
    rd, folder = _m["rundir"], _m["folder"]
    mode, body = data[0] % 4, bytes(data[1:])
    pyharness.clear_dir(folder)
    allowed = (ValueError, OSError)  # RunMetadataError is a ValueError
    if mode in (0, 1, 3):
        path = os.path.join(folder, (rd.LAST_STATE, rd.LAST, None, rd.BEST)[mode])
        with open(path, "wb") as f:
            f.write(body)
        reader = (rd.read_state, rd.read_weights_info, None, rd.read_header)[mode]
        try:
            got = reader(path)
        except Exception as e:
            return refused(e, allowed, reader.__name__)
        if mode == 0:
            _check_state(got)
        elif mode == 1:
            expect(got.kind in ("last", "best") and got.step >= 0, f"weights info {got}")
        else:
            expect(isinstance(got, dict) and isinstance(got["__metadata__"], dict) and all(
                isinstance(v, str) for v in got["__metadata__"].values()), "read_header's metadata")
        return
    files = unpack(body)
    for name in (rd.LAST, rd.LAST_STATE):
        if name in files:
            with open(os.path.join(folder, name), "wb") as f:
                f.write(files[name])
    try:
        run = rd.RunDir.for_resume(folder)
        state = run.state()
    except Exception as e:
        return refused(e, allowed, "RunDir")
    cfg = _check_state(state)
    try:
        checked = run.check_resume(cfg, {k: state.data[k] for k in ("n_train", "shape", "crc32")})
    except Exception as e:
        return refused(e, allowed, "check_resume")
    weights = rd.read_weights_info(run.weights_path)
    expect(weights.kind == "last" and weights.run_id == checked.run_id and weights.step == checked.step
           and weights.crc32 == checked.last_crc32, "check_resume accepted a set that disagrees")
    expect(len(checked.history["epoch"]) == checked.epoch and len(checked.history["step_loss"]) == checked.step,
           "check_resume accepted a history that does not fit the run position")


if __name__ == "__main__":
    pyharness.run(sys.modules[__name__])
