"""The seed's launchers for real, not simulated through their variables:

- `torchrun --nproc_per_node=2 ... -m codext train --use-ddp` under PyTorch's own torchrun
  (tools/torchrun.py), when CODEXT_TORCH_PYTHON names a Python with torch (for example
  `CODEXT_TORCH_PYTHON=$(tools/reference-python.sh)`);
- `srun -n 2 python -m codext train --use-ddp` under a real Slurm, when CODEXT_TEST_SRUN=1
  (tools/slurm_single_node.sh starts a one-node cluster here).

Skipped otherwise. CI has neither: there tests/test_ddp_entry_points.py and
tests/test_launch.py stand in (the variables each sets, torchrun's agent listening on
MASTER_PORT: the behaviour the first real torchrun run showed us)."""
import os
import subprocess
import sys

import pytest

from test_ddp_entry_points import TINY, env_with, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@pytest.fixture
def torch_python():
    python = os.environ.get("CODEXT_TORCH_PYTHON", "").strip()
    if not python:
        pytest.skip("CODEXT_TORCH_PYTHON is not set (a Python with torch, for real torchrun)")
    probe = subprocess.run([python, "-c", "import torch.distributed.run"], capture_output=True,
                           text=True, env=env_with())
    assert probe.returncode == 0, f"CODEXT_TORCH_PYTHON={python} cannot import torch.distributed.run: {probe.stderr}"
    return python


@pytest.mark.timeout(180)
def test_two_ranks_train_under_real_torchrun(torch_python, tmp_path):
    ck = tmp_path / "ck"
    port = free_port()
    res = subprocess.run(
        [torch_python, os.path.join(ROOT, "tools", "torchrun.py"), "--nproc_per_node=2",
         f"--master_port={port}", "--no_python", sys.executable, "-m", "codext", "train",
         "--use-ddp", *TINY, "--checkpoint-dir", str(ck)],
        env=env_with(OMP_NUM_THREADS=1), capture_output=True, text=True, cwd=str(tmp_path),
        timeout=170)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "data parallel: 2 ranks" in res.stdout and "epoch 2/2" in res.stdout, res.stdout
    assert (ck / "last.safetensors").is_file() and (ck / "history.json").is_file()
    from codext._dist import _secret_dir
    assert not any(n.startswith(f"codext-store-{port}") for n in os.listdir(_secret_dir()))


@pytest.mark.timeout(180)
def test_two_ranks_train_under_real_srun(tmp_path):
    if os.environ.get("CODEXT_TEST_SRUN") != "1":
        pytest.skip("CODEXT_TEST_SRUN=1 is not set (a Slurm cluster to run srun on)")
    ck = tmp_path / "ck"
    env = {k: v for k, v in env_with(OMP_NUM_THREADS=1).items() if not k.startswith("SLURM_")}
    res = subprocess.run(
        ["srun", "-n", "2", "--cpus-per-task=1", sys.executable, "-m", "codext", "train",
         "--use-ddp", *TINY, "--checkpoint-dir", str(ck)],
        env=env, capture_output=True, text=True, cwd=str(tmp_path), timeout=170)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "data parallel: 2 ranks" in res.stdout and "epoch 2/2" in res.stdout, res.stdout
    assert res.stdout.count("epoch 2/2") == 1  # rank 1 writes no log lines
    assert (ck / "last.safetensors").is_file() and (ck / "history.json").is_file()
