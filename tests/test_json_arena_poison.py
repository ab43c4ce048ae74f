"""The JSON reader's arena under the sanitizer build (csrc/io/json.c): each allocation is
followed by a poisoned red zone, so a one-past-the-end write into a string's allocation,
which a plain build would never notice (it lands in the 16-byte rounding), is an ASan
report. Planted with codext._testing._json_string_poke in a subprocess."""
import os
import subprocess
import sys

import pytest

import codext


def _env():
    env = dict(os.environ)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(codext.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _poke(offset):
    code = ("from codext import _testing as t\n"
            f"t._json_string_poke(b'\"abc\"', {offset})\n"
            "print('survived', flush=True)\n")
    return subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)


def test_json_arena_red_zone_catches_one_past_a_string():
    """Under CX_SANITIZE the JSON arena poisons what follows each allocation: writing the
    NUL slot of "abc" (offset 3) is legal, writing one past it (offset 4, still inside
    the 16-byte rounding of a plain build) is an ASan report and the process dies."""
    testing = pytest.importorskip("codext._testing")
    if not testing._sanitized():
        pytest.skip("needs the sanitizer build (CODEXT_SANITIZE=1, the ASan runtime preloaded), as CI runs it")
    inside = _poke(3)
    assert inside.returncode == 0 and "survived" in inside.stdout, inside.stderr[-2000:]
    past = _poke(4)
    assert past.returncode != 0 and "survived" not in past.stdout, past.stdout + past.stderr[-2000:]
    assert "AddressSanitizer" in past.stderr and "poison" in past.stderr, past.stderr[-2000:]
