"""atheris harness: command lines (codext/cli.py), run in-process up to where work starts.

Input: read by Decoder (see make_argv): a command (train, eval, predict or none), then flags taken from the
real parser's flags (build_parser(); as "--flag value", "--flag=value" or abbreviated),
each with a value from EXTREMES, a prepared path (PATHS) or a fuzzed string.

The dry-run seam: the functions where the work would start are replaced for the run
(codext.train.train, codext.launch.launch / train_as_rank, codext.data.load and
synthetic, codext.train.evaluate, Model.predict) by stubs that check their arguments and
raise ReachedWork; codext.load keeps loading (once per file, cached) so that eval and
predict reach their checks of the run's saved settings. setup() checks that a valid
command line reaches each stub, so a refactor that moves the work elsewhere fails the
harness instead of training inside the fuzz loop. cli.build_parser is built once and
reused (building it is most of an iteration's cost). The process runs in a scratch folder
(fuzzed paths are relative names inside it, never absolute).

Accepted: ReachedWork with arguments in their documented ranges, or SystemExit(0) for
--help. Refused: main() returns 2 (a usage error) or 1 (a failure) having printed one
line "...: error: MESSAGE" (and "(see ... --help)" for 2), no traceback.
"""
import contextlib
import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pyharness  # noqa: E402
from pyharness import Finding, expect  # noqa: E402

READER = "cli"
INSTRUMENT = ("codext",)
COMMANDS = ("train", "eval", "predict", "")
EXTREMES = ("0", "-0", "1", "-1", "2", "3", "4", "7", "8", "31", "32", "33", "64", "255", "256",
            "1023", "4096", "4097", "65535", "65536", "100000", "100001", "10000000", "10000001",
            "2147483647", "2147483648", "-2147483649", "4294967296", "9223372036854775807",
            "9223372036854775808", "18446744073709551615", "18446744073709551616", "1e300",
            "1e400", "-1e400", "1e-400", "5e-324", "nan", "-nan", "inf", "-inf", "0.5", "0.999",
            "1.0", "0.0", "-0.0", "1e-8", "0x10", "1_000", " 3", "3 ", "", "abc", "\u00e9",
            "--", "-", "=", "1" * 400, "edgenext_tiny_test", "cosine", "sm", "none")
PATHS = ("run", "run/last.safetensors", "run/best.safetensors", "run/last.state.safetensors",
         "run/history.json", "empty", "nothing-here", "image.png", "images", "notes.txt", "out")

_m = {}


class ReachedWork(BaseException):
    """Raised by the stubs: the command line was accepted up to where work starts."""


class Decoder:
    """Reads an input as the harness's choices (a plain decoder, the same with and without
    atheris, so committed inputs replay exactly; encode() in the seed generator is its
    inverse)."""

    def __init__(self, data):
        self.data, self.at = bytes(data), 0

    def int_in(self, low, high):
        """low..high from the next bytes (as many as the span needs, little-endian)."""
        span = high - low + 1
        need = max(1, (span.bit_length() + 7) // 8)
        chunk = self.data[self.at:self.at + need]
        self.at += len(chunk)
        return low + int.from_bytes(chunk.ljust(need, b"\0"), "little") % span

    def text(self, n):
        chunk = self.data[self.at:self.at + n]
        self.at += len(chunk)
        return chunk.decode("utf-8", "replace")

    def left(self):
        return len(self.data) - self.at


def _check_config(cfg):
    from codext.config import FLOAT_RANGES, INT_RANGES, Config
    import math
    expect(isinstance(cfg, Config), f"train got {type(cfg).__name__}")
    for name, (low, high) in INT_RANGES.items():
        v = getattr(cfg, name)
        expect(v is None or (type(v) is int and low <= v <= high), f"Config.{name} = {v!r} out of {low}..{high}")
    for name, (low, _, high, _) in FLOAT_RANGES.items():
        for v in (getattr(cfg, name),) if name != "betas" else cfg.betas:
            expect(v is None or (isinstance(v, float) and not math.isnan(v) and low <= v <= high),
                   f"Config.{name} = {v!r} out of its range")


def _stub(what, check=None):
    def stub(*args, **kw):
        if check is not None:
            check(*args, **kw)
        raise ReachedWork(what)
    return stub


def _check_train(cfg, data=None, **kw):
    _check_config(cfg)


def _check_launch(cfg, data=None, nprocs=None, master_port=None, **kw):
    _check_config(cfg)
    expect(nprocs is None or 1 <= nprocs <= 64, f"launch(nprocs={nprocs})")
    expect(master_port is None or 1 <= master_port <= 65535, f"launch(master_port={master_port})")


def _check_synthetic(n_train=0, n_test=0, img_size=352, seed=0):
    from codext.config import INT_RANGES
    expect(0 <= n_train and 1 <= n_test <= INT_RANGES["synthetic_test"][1], f"synthetic({n_train}, {n_test})")
    expect(type(seed) is int and 0 <= seed < 2 ** 64, f"synthetic(seed={seed!r})")
    expect(8 <= img_size <= 8192, f"synthetic(img_size={img_size})")


def _check_evaluate(model, split, batch_size=16):
    expect(1 <= batch_size <= 4096, f"evaluate(batch_size={batch_size})")


def setup():
    if _m:
        return
    import numpy as np
    from PIL import Image
    import codext
    import codext.launch
    import codext.model
    import codext.train
    from codext import cli
    folder = pyharness.scratch_dir(READER)
    os.chdir(folder)  # every fuzzed path is relative: it lands here
    os.environ.pop("CODEXT_DEBUG", None)
    run = os.path.join(folder, "run")
    config = codext.Config(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=2, img_size=32,
                           batch_size=4, epochs=1, stage1_epochs=0, synthetic_train=4, synthetic_test=2,
                           checkpoint_dir=run, amp=False, seed=1)
    codext.train(config, progress=False, log=lambda *a: None)  # before the stubs: a real run
    os.makedirs("empty")
    os.makedirs("images")
    for path in ("image.png", "images/a.png", "images/b.jpg"):
        Image.fromarray(np.full((9, 7, 3), 90, np.uint8)).save(path)
    with open("notes.txt", "w") as f:
        f.write("not an image\n")
    real_load, loaded = codext.load, {}

    def load_once(path):
        st = os.stat(path)
        key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
        if key not in loaded:
            loaded[key] = real_load(path)
        return loaded[key]
    train_module, launch_module = sys.modules["codext.train"], sys.modules["codext.launch"]
    train_module.train = _stub("train", _check_train)
    train_module.evaluate = _stub("evaluate", _check_evaluate)
    launch_module.launch = _stub("launch", _check_launch)
    launch_module.train_as_rank = _stub("train_as_rank", _check_train)
    codext.data.load = _stub("data.load")
    codext.data.synthetic = _stub("synthetic", _check_synthetic)
    codext.model.Model.predict = _stub("predict")
    codext.load = load_once
    parser = cli.build_parser()  # built once (80 % of an iteration); parse_args does not change it
    cli.build_parser = lambda: parser
    _m.update(cli=cli, flags=_flags(cli))
    for argv, reached in ((["train", "--epochs", "2"], "train"), (["train", "--use-ddp"], "launch"),
                          (["train", "--resume", "run"], "train"),
                          (["train", "--dataset-path", "images"], "data.load"),
                          (["eval", "--checkpoint", "run"], "synthetic"),
                          (["predict", "--checkpoint", "run", "--input", "images", "--output", "out"], "predict")):
        outcome = _run(argv)
        if outcome[0] != "reached" or outcome[1] != reached:
            raise RuntimeError(f"fuzz_cli's dry-run seam is broken: {argv} gave {outcome}, expected to "
                               f"reach the {reached} stub (did codext/cli.py change how it starts work?)")


def _flags(cli):
    """{command: [option strings]} of the real parser."""
    import argparse
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = {"": [s for a in parser._actions for s in a.option_strings]}
    for name, p in sub.choices.items():
        out[name] = [s for a in p._actions for s in a.option_strings]
    return out


def _run(argv):
    """('reached', stub) | ('exit', code) | ('returned', rc, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            rc = _m["cli"].main(argv)
        except ReachedWork as e:
            return "reached", str(e)
        except SystemExit as e:
            return "exit", e.code, err.getvalue()
    return "returned", rc, err.getvalue()


def make_argv(data):
    """The argument vector an input stands for: a command byte, a flag count byte, then
    per flag: its index (1 byte, modulo the command's flags), a form byte (6: --flag=value,
    7: abbreviated), a source byte (0 EXTREMES, 1 PATHS, 2 text, 3 no value) and the value
    (an index byte, or a length byte and that many bytes of UTF-8)."""
    fdp = Decoder(data)
    command = COMMANDS[fdp.int_in(0, len(COMMANDS) - 1)]
    flags = _m["flags"][command]
    argv = [command] if command else []
    for _ in range(fdp.int_in(0, 8)):
        if fdp.left() == 0:
            break
        flag = flags[fdp.int_in(0, len(flags) - 1)]
        how = fdp.int_in(0, 7)
        source = fdp.int_in(0, 3)
        if source == 0:
            value = EXTREMES[fdp.int_in(0, len(EXTREMES) - 1)]
        elif source == 1:
            value = PATHS[fdp.int_in(0, len(PATHS) - 1)]
        elif source == 2:  # NUL cannot be in an argument; a newline would split the echo
            value = fdp.text(fdp.int_in(0, 24)).replace("\0", "").replace("\n", " ").replace("\r", " ")
        else:
            value = None  # a flag alone (booleans, or a missing value)
        if value is not None and (value.startswith("/") or "\\" in value or ".." in value):
            value = "fz_" + value.replace("/", "_").replace("\\", "_").replace("..", "__")
        if how == 7 and len(flag) > 4:  # abbreviated
            flag = flag[:max(3, len(flag) - 3)]
        if value is None:
            argv.append(flag)
        elif how == 6 and flag.startswith("--"):
            argv.append(f"{flag}={value}")
        else:
            argv += [flag, value]
    return argv


def one_input(data):
    setup()
    argv = make_argv(data)
    outcome = _run(argv)
    kind = outcome[0]
    if kind == "reached":
        return
    if kind == "exit":
        expect(outcome[1] == 0 and any(a in ("-h", "--help") or (a.startswith("--h") and "--help".startswith(a))
                                       for a in argv), f"SystemExit({outcome[1]!r}) for {argv}")
        return
    rc, err = outcome[1], outcome[2]
    if rc == 130 and err.startswith("interrupted"):
        # the fuzzing itself was stopped (Ctrl-C, SIGINT): cli.main turned it into its
        # "interrupted" exit, as it should; stop here instead of saving the input as a crash
        raise KeyboardInterrupt
    expect("Traceback" not in err, f"a traceback for {argv}:\n{err}")
    expect(rc in (1, 2), f"main returned {rc!r} for {argv} without reaching work:\n{err}")
    lines = [l for l in err.split("\n") if not l.startswith("note: ") and l.strip()]  # not splitlines():
    # a value may hold \x1e or \x0c, which it would take for line breaks
    errors = [l for l in lines if ": error: " in l]
    rest = [l for l in lines if ": error: " not in l and not l.startswith("(see ")
            and "Warning" not in l and not l.startswith("  ")]
    if len(errors) != 1 or errors[0].split(": error: ", 1)[1].strip() == "" or rest:
        raise Finding(f"main returned {rc} for {argv} without one error line:\n{err}")


if __name__ == "__main__":
    pyharness.run(sys.modules[__name__])
