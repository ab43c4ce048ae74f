"""The atheris harnesses' committed inputs, replayed without atheris (tests/fuzz/fuzz_*.py).

Each reader's seeds (files the project writes) and regression cases (what fuzzing found,
fixed since) go through the harness's one_input, which raises on a broken promise: an
input that is neither loaded (and checked) nor refused with a documented exception type
and a message. Fuzzing itself is tools/fuzz.sh (CI runs its short budget).
"""
import json
import os
import subprocess
import sys

import pytest

import codext

HERE = os.path.dirname(os.path.abspath(__file__))
FUZZ = os.path.join(HERE, "fuzz")
READERS = ("images", "datacache", "rundir", "cli")


def _env():
    env = dict(os.environ)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(codext.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.pop("CODEXT_DEBUG", None)
    return env


@pytest.mark.parametrize("reader", READERS)
def test_committed_fuzz_inputs_keep_their_promise(reader):
    """Every seed and regression case of the reader is loaded or refused properly."""
    seeds = os.listdir(os.path.join(FUZZ, "corpus", reader))
    regressions = os.listdir(os.path.join(FUZZ, "regressions", reader))
    assert seeds and regressions, f"{reader}: committed seeds and regression cases expected"
    proc = subprocess.run([sys.executable, os.path.join(FUZZ, "pyharness.py"), reader], env=_env(),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(seeds) + len(regressions), proc.stdout[-2000:]
    broken = [f"{r['file']}: {r['problem']}" for r in results if r["problem"]]
    assert not broken, "\n".join(broken)


def test_harness_flags_a_broken_promise():
    """The replay can fail: an input the images harness must see refused (a float mask
    holding NaN), replayed against a decode_mask that accepts it, is reported."""
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "import fuzz_images as h, pyharness\n"
        "h.setup()\n"
        "h._m['cache'].decode_mask = lambda f: __import__('numpy').zeros((24, 20), 'uint8')\n"
        "h._m['cache'].mask_size = lambda f: (24, 20)\n"
        "try:\n"
        "    h.one_input(open(%r, 'rb').read())\n"
        "except pyharness.Finding as e:\n"
        "    print('finding:', e)\n" % (FUZZ, os.path.join(FUZZ, "regressions", "images", "mask_float_nan.tif")))
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert "finding: a float mask holding NaN or infinity was accepted" in proc.stdout, proc.stdout + proc.stderr
