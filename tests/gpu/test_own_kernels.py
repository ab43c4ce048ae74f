"""Our own GEMM and convolution kernels against cuBLAS and cuDNN, on the same device.

CODEXT_CUDA_GEMM=own puts kernels/device/gemm.cuh under every product of the linear layers
instead of cuBLAS; CODEXT_CUDA_CONV=own runs every convolution on the direct kernels of
kernels/device/direct_conv.cuh instead of cuDNN. The backend reads them when it is made
(once per process), so each path runs in a child process of its own: the tiny model's
forward outputs, loss and every gradient, in fp32 and with fp16 products. In fp32 the
paths must agree to float rounding (they sum in other orders): 1e-5 of each tensor's
largest value. With fp16 products our GEMM alone multiplies the same half operands as
cuBLAS (1e-3; the 1x1 convolutions go through it too); our direct convolutions compute in
float32 in every precision, so they are compared in fp32 only.

On the emulator (tests/test_emu_backend.py runs tests/gpu) the vendor side is the
emulated cuBLAS and cuDNN; on a GPU, the real ones.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CHILD = r"""
import json, sys
import numpy as np
import codext
out, precision = sys.argv[1], sys.argv[2]
model = codext.Model(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=3, img_size=32,
                     seed=3, device="cuda")
if precision != "fp32":
    model._native.set_precision(precision)
rng = np.random.default_rng(5)
x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
y = (rng.random((2, 1, 32, 32)) > 0.6).astype(np.float32)
outs = [np.asarray(o) for o in model._native.forward(x, True)]
parts = model._native.loss(y)
model._native.zero_grads()
model._native.backward()
np.savez(out, *outs, grads=model._native.grads(), total=np.float64(parts["total"]))
"""


_vendor = {}  # precision -> the vendor path's arrays (the same for every own variant)


def run_child(tmp_path, env_extra, precision):
    if not env_extra and precision in _vendor:
        return _vendor[precision]
    out = tmp_path / f"{'-'.join(sorted(env_extra)) or 'vendor'}-{precision}.npz"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               **env_extra)
    if os.environ.get("CODEXT_CUDA_EMULATED"):
        env["CODEXT_CUDA_LIBRARY"] = os.environ["CODEXT_CUDA_EMULATED"]
    res = subprocess.run([sys.executable, "-c", CHILD, str(out), precision], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    arrays = dict(np.load(out))
    if not env_extra:
        _vendor[precision] = arrays
    return arrays


def largest_relative(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.max(np.abs(b)) if b.size else 0.0
    return float(np.max(np.abs(a - b)) / scale) if scale > 0 else float(np.max(np.abs(a - b)))


GEMM = {"CODEXT_CUDA_GEMM": "own"}
BOTH = {"CODEXT_CUDA_GEMM": "own", "CODEXT_CUDA_CONV": "own"}


# (our convolutions compute in float32 in every precision: their fp16 run adds nothing)
@pytest.mark.parametrize("own_env,precision,tol", [(BOTH, "fp32", 1e-5), (GEMM, "fp16", 1e-3)],
                         ids=["gemm+conv-fp32", "gemm-fp16"])
def test_own_kernels_agree_with_cublas_and_cudnn(tmp_path, own_env, precision, tol):
    if os.environ.get("CODEXT_GPU_TEST_BACKEND") == "cpu":
        pytest.skip("compares two CUDA paths: nothing to compare on the CPU backend")
    vendor = run_child(tmp_path, {}, precision)
    own = run_child(tmp_path, own_env, precision)
    assert sorted(own) == sorted(vendor)
    worst = {k: largest_relative(own[k], vendor[k]) for k in vendor}
    assert max(worst.values()) <= tol, json.dumps(worst)
    assert all(np.all(np.isfinite(v)) for v in own.values())
