"""`torchrun --nproc_per_node=2 -m codext train --use-ddp` under PyTorch's real torchrun
(tools/torchrun.py), when a Python with torch is named by CODEXT_TORCH_PYTHON (for example
`CODEXT_TORCH_PYTHON=$(tools/reference-python.sh)`); skipped otherwise. CI has no torch:
there tests/test_ddp_entry_points.py stands in for torchrun's agent (its listener on
MASTER_PORT, TORCHELASTIC_RUN_ID), the behaviour this real run first showed us."""
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
