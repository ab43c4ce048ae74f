"""codext.launch() with GPU workers (issues 9 and 10), on the CUDA emulator: the fake NVML of
tests/conftest.py shows the launcher two T4s, the emulated libcodext_cuda (two devices,
CODEXT_EMU_DEVICES=2) runs the workers' models, and the two ranks join through the
shared-memory communicator with their gradients staged through host memory.

Config.device "cuda" with nprocs left out starts one worker per GPU (two), says which GPUs
it uses, trains each rank on cuda:<rank>, and ends where two CPU workers end: epoch
losses within 1e-5 relative, the last weights within 1e-5 of the largest weight, and the
best epoch's validation scores within 1e-4 (observed: 3e-8, 8e-9, 3e-8). The launcher process itself loads no CUDA library (its
memory map is read at the end)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from emu_build import ROOT, emulated_env
from opcheck import relative_error

pytestmark = pytest.mark.timeout(900)

CHILD = r"""
import json, sys
import codext
from codext.config import Config
out, device = sys.argv[1], sys.argv[2]
cfg = Config(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=2, img_size=32,
             batch_size=2, epochs=2, stage1_epochs=1, lr=1e-3, synthetic_train=8,
             synthetic_test=4, amp=False, seed=3, device=device, checkpoint_dir=out)
lines = []
result = codext.launch(cfg, nprocs=None if device == "cuda" else 2, log=lines.append)
maps = open("/proc/self/maps").read()
print(json.dumps({"device": result.device, "loss": result.history["epoch_loss"].tolist(),
                  "metrics": result.metrics, "last": result.last_checkpoint, "lines": lines,
                  "launcher_cuda": [n for n in ("libcuda.so", "libcudart", "libcodext_cuda")
                                    if n in maps]}))
"""


def launch_in_child(env, out, device):
    env = dict(env, PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", CHILD, str(out), device], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=800)
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_gpu_workers_match_cpu_workers(emulated, library, fake_nvml, tmp_path):
    import codext
    compiler, _ = emulated
    env = emulated_env(library, compiler, CODEXT_CUDA_LIBRARY=library, CODEXT_EMU_DEVICES="2",
                       CODEXT_NVML_LIBRARY=fake_nvml, FAKE_NVML_CUDA="99000")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    gpu = launch_in_child(env, tmp_path / "gpu", "cuda")
    cpu = launch_in_child(env, tmp_path / "cpu", "cpu")
    assert gpu["device"] == "cuda:0" and cpu["device"] == "cpu"
    assert any(line.startswith("2 GPU worker(s): cuda:0 Tesla T4 (sm_75, 15 GiB), cuda:1 Tesla "
                               "T4 (sm_75, 15 GiB)") for line in gpu["lines"]), gpu["lines"]
    assert gpu["launcher_cuda"] == [], gpu["launcher_cuda"]
    # the GPU workers' collectives run over the emulated NCCL, the CPU workers' over shm
    assert any("collectives over NCCL (emulated NCCL 2." in line for line in gpu["lines"]), gpu["lines"]
    assert any("collectives over shared memory" in line for line in cpu["lines"]), cpu["lines"]
    np.testing.assert_allclose(gpu["loss"], cpu["loss"], rtol=1e-5)
    w_gpu = codext.load(gpu["last"]).state_dict()
    w_cpu = codext.load(cpu["last"]).state_dict()
    flat = lambda w: np.concatenate([w[k].ravel() for k in sorted(w)])  # noqa: E731
    assert relative_error(flat(w_gpu), flat(w_cpu)) < 1e-5
    for key in ("sm", "mae"):
        assert abs(gpu["metrics"][key] - cpu["metrics"][key]) < 1e-4, (gpu["metrics"], cpu["metrics"])
