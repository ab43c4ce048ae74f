"""What the atheris harnesses (tests/fuzz/fuzz_<reader>.py) share.

A harness module defines READER (its name in tools/fuzz.sh), INSTRUMENT (the packages
whose Python code atheris instruments for coverage), setup() (made once per process:
prepared files, a temporary folder) and one_input(data: bytes). one_input runs the
reader on `data` and returns when the input either loads and passes the harness's own
checks, or is refused with one of the reader's documented exception types carrying a
message; anything else raises (a Finding for a broken promise, or the reader's own
unexpected exception), which atheris reports as a crash and saves.

tests/test_fuzz_python.py replays the committed seeds and regression cases through the
same one_input without atheris, so a regression fails the ordinary suite.
"""
import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class Finding(AssertionError):
    """A broken promise: silent acceptance of a bad input, a refusal of the wrong kind."""


def expect(condition, what):
    if not condition:
        raise Finding(what)


def refused(error, allowed, where):
    """Checks a refusal: `error` is one of `allowed` and says what is wrong (a message
    that is not empty). Other exception types are re-raised as they are."""
    if not isinstance(error, allowed):
        raise error
    text = str(error).strip()
    expect(text != "", f"{where}: {type(error).__name__} without a message")


def corpus_files(reader):
    """Committed inputs of a reader: its seeds, then its regression cases."""
    out = []
    for kind in ("corpus", "regressions"):
        folder = os.path.join(HERE, kind, reader)
        if os.path.isdir(folder):
            out += [os.path.join(folder, f) for f in sorted(os.listdir(folder))]
    return out


def scratch_dir(label):
    """A fresh private folder for one process, on tmpfs when there is one."""
    import atexit
    import shutil
    import tempfile
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    folder = tempfile.mkdtemp(prefix=f"codext-fuzz-{label}-", dir=base)
    atexit.register(shutil.rmtree, folder, True)
    return folder


def clear_dir(folder):
    """Removes everything inside `folder` (kept itself)."""
    import shutil
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def replay(module, paths):
    """[(path, None or 'ExceptionType: message')] of one_input on each file (no atheris)."""
    import traceback
    module.setup()
    out = []
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module.one_input(data)
            out.append((path, None))
        except Exception as e:
            out.append((path, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=-4)}"))
    return out


def _replay_main(reader):
    """python3 tests/fuzz/pyharness.py READER: replays READER's committed inputs and prints
    one JSON line per file (tests/test_fuzz_python.py runs this in a fresh process: the cli
    harness stubs codext's work functions and changes the working folder)."""
    import importlib
    import json
    sys.path.append(ROOT)
    paths = corpus_files(reader)
    module = importlib.import_module(f"fuzz_{reader}")
    for path, problem in replay(module, paths):
        print(json.dumps({"file": os.path.relpath(path, HERE), "problem": problem}), flush=True)


def run(module):
    """Fuzzes module.one_input with atheris; libFuzzer's flags come from sys.argv."""
    import atheris
    sys.path.append(ROOT)  # after PYTHONPATH: a sanitizer build given there is the one fuzzed
    with atheris.instrument_imports(include=list(module.INSTRUMENT)):
        for name in module.INSTRUMENT:
            __import__(name)
        module.setup()
    c = sys.modules["codext._C"]
    print(f"fuzz_{module.READER}: codext._C from {c.__file__}", file=sys.stderr)
    warnings.simplefilter("ignore")  # warnings are part of the accepted outcomes
    atheris.Setup(sys.argv, module.one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    _replay_main(sys.argv[1])
