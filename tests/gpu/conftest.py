"""GPU tests: they need a usable CUDA device and skip themselves otherwise, giving the
loader's reason (CPU-only build, library that cannot load, no driver, no device).

Asking loads libcodext_cuda.so and the CUDA libraries into the pytest process, so the
question is asked only when a test of this folder runs, never at collection.
CODEXT_GPU_TEST_BACKEND=cpu runs the op checks on the CPU backend instead (no skipping)."""
import functools
import os

import pytest

from codext import _C


@functools.lru_cache(maxsize=None)
def cuda_backend_status():
    """(usable, reason) from the loader, cached for the session."""
    if not hasattr(_C, "cuda_backend_available"):
        return False, "codext._C has no cuda_backend_available() (the binding is not built in)"
    ok, reason = _C.cuda_backend_available()
    return bool(ok), reason


@pytest.fixture(autouse=True)
def require_cuda_backend():
    if os.environ.get("CODEXT_GPU_TEST_BACKEND", "cuda") == "cpu":
        return  # test_cuda_backend.py's checks run on the CPU backend instead
    ok, reason = cuda_backend_status()
    if not ok:
        pytest.skip(f"no usable CUDA backend: {reason}")
