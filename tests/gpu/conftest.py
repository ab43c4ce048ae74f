"""GPU tests: they need a usable CUDA device and skip themselves otherwise, giving the
loader's reason (CPU-only build, library that cannot load, no driver, no device).

Asking loads libcodext_cuda.so and the CUDA libraries into the pytest process, so the
question is asked only when a test of this folder runs, never at collection.
CODEXT_GPU_TEST_BACKEND=cpu runs the op checks on the CPU backend instead (no skipping).
CODEXT_CUDA_EMULATED=PATH runs them on the emulated CUDA library at PATH (kernels/ built
against the CUDA emulator, tests/emu_build.py): it becomes CODEXT_CUDA_LIBRARY, and a
backend that is unusable or is not the emulator's fails the tests instead of skipping them."""
import functools
import os

import pytest

EMULATED = os.environ.get("CODEXT_CUDA_EMULATED", "")
if EMULATED:
    # before anything loads the library: _C opens it on first use, from this variable
    os.environ["CODEXT_CUDA_LIBRARY"] = EMULATED

from codext import _C  # noqa: E402


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
    if EMULATED:
        assert ok, f"the emulated CUDA library {EMULATED} is not usable: {reason}"
        assert "CUDA emulator" in reason, f"CODEXT_CUDA_EMULATED is set but the backend is not the emulator's: {reason}"
    elif not ok:
        pytest.skip(f"no usable CUDA backend: {reason}")
