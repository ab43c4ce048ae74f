"""The wheel users install offline (Kaggle: a wheel attached as a dataset, `pip install
--no-index`) works on its own: installed into a fresh venv that has only NumPy besides,
it imports from the venv and runs a two-worker codext.launch from outside the source tree.

Building a wheel compiles the whole C engine (a minute or two on 2 cores), so the suite
does not build one by itself: CI builds it once (.ci/run) and passes its path in
CODEXT_WHEEL; CODEXT_WHEEL=build makes this test build it."""
import glob
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHEEL = os.environ.get("CODEXT_WHEEL")

pytestmark = pytest.mark.skipif(not WHEEL, reason="needs CODEXT_WHEEL (a built wheel, or 'build'); "
                                "CI sets it (.ci/run)")


def built_wheel(tmp_path):
    if WHEEL != "build":
        assert os.path.isfile(WHEEL), f"CODEXT_WHEEL={WHEEL!r} is not a file"
        return WHEEL
    out = tmp_path / "wheelhouse"
    env = dict(os.environ, CODEXT_CUDA="0")
    env.pop("CODEXT_TEST_BUILD", None)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
                    "-w", str(out), ROOT], check=True, env=env)
    return glob.glob(str(out / "codext-*.whl"))[0]


def venv_with_numpy_only(path):
    """A venv without the system's site-packages that sees NumPy (as Kaggle's image
    already has it) through a .pth file pointing at a folder holding only numpy."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    python = str(path / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    only_numpy = path / "numpy-only"
    only_numpy.mkdir()
    numpy_dir = os.path.dirname(np.__file__)
    for name in os.listdir(os.path.dirname(numpy_dir)):
        if name == "numpy" or name == "numpy.libs" or (name.startswith("numpy-") and name.endswith("-info")):
            os.symlink(os.path.join(os.path.dirname(numpy_dir), name), only_numpy / name)
    with open(os.path.join(site, "numpy_only.pth"), "w") as f:
        f.write(str(only_numpy) + "\n")
    return python


@pytest.mark.timeout(600)
def test_offline_wheel_in_a_fresh_venv_runs_a_two_worker_launch(tmp_path):
    wheel = built_wheel(tmp_path)
    python = venv_with_numpy_only(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "CODEXT_FAULT")}
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", wheel],
                   check=True, env=env)
    work = tmp_path / "elsewhere"
    work.mkdir()
    script = textwrap.dedent(f"""
        import os, codext
        assert codext.__file__.startswith({str(tmp_path / 'venv')!r}), codext.__file__
        cfg = codext.Config(backbone="edgenext_tiny_test", img_size=32, decoder_dim=16, num_experts=3,
                            batch_size=2, epochs=1, stage1_epochs=0, synthetic_train=8,
                            synthetic_test=4, amp=False, checkpoint_dir="run")
        result = codext.launch(cfg, nprocs=2, log=None)
        assert result.history["step_loss"].shape == (2,), result.history["step_loss"].shape
        assert os.path.exists(result.best_checkpoint)
        print("ok", codext.__file__)
        """)
    run = subprocess.run([python, "-c", script], cwd=work, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("ok"), run.stdout
