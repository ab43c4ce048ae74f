"""tools/cuda12_host_check.py: the host side of kernels/*.cu against CUDA 12's headers.

Needs clang++ 17 or newer and the CUDA 12 headers of PyPI's wheels: CI fetches them and
sets $CODEXT_CUDA12_HEADERS (then anything missing fails these tests); elsewhere they
skip when either is missing (`python3 tools/cuda12_host_check.py` fetches the headers).
"""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECK = os.path.join(ROOT, "tools", "cuda12_host_check.py")
CLANG = "clang++-19"


def run(*args):
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # the sanitizer run's
    return subprocess.run([sys.executable, CHECK, "--no-fetch", *args], capture_output=True,
                          text=True, timeout=240, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def headers():
    where = os.environ.get("CODEXT_CUDA12_HEADERS", "").strip()
    required = bool(where)
    if not where:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        where = os.path.join(cache, "codext-ci", "cuda12-headers")
    missing = []
    if shutil.which(CLANG) is None:
        missing.append(CLANG)
    if not os.path.exists(os.path.join(where, "include", "cudnn.h")):
        missing.append(f"the CUDA 12 headers in {where}")
    if missing:
        if required:
            pytest.fail(f"CODEXT_CUDA12_HEADERS is set but {' and '.join(missing)} are missing")
        pytest.skip(f"no {' and no '.join(missing)}")
    return where


def test_every_host_side_compiles_against_cuda12(headers):
    res = run("--clang", CLANG, "--headers", headers)
    assert res.returncode == 0, res.stdout + res.stderr
    sources = sorted(f for f in os.listdir(os.path.join(ROOT, "kernels")) if f.endswith(".cu"))
    for name in sources:
        assert f"ok      kernels/{name}" in res.stdout
    assert f"{len(sources)} of {len(sources)} host sides compile" in res.stdout
    assert "CUDART_VERSION=12080" in res.stdout and "CUDNN_MAJOR=9" in res.stdout


# Host code that CUDA 13 accepts and CUDA 12 does not (CUDA 13 added a default memory pool
# per location), and a cuDNN call removed in cuDNN 8: what the check exists to catch.
CUDA13_ONLY = """#include <cuda_runtime.h>
cudaMemPool_t default_pool(void) {
    cudaMemPool_t pool = 0;
    cudaMemLocation where = {cudaMemLocationTypeDevice, 0};
    cudaMemGetDefaultMemPool(&pool, &where, cudaMemAllocationTypePinned);
    return pool;
}
"""
OLD_CUDNN = """#include <cudnn.h>
void pick(cudnnHandle_t h, cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w,
          cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t y) {
    cudnnConvolutionFwdAlgo_t algo;
    cudnnGetConvolutionForwardAlgorithm(h, x, w, c, y, CUDNN_CONVOLUTION_FWD_PREFER_FASTEST, 0, &algo);
}
"""


@pytest.mark.parametrize("text,symbol", [(CUDA13_ONLY, "cudaMemGetDefaultMemPool"),
                                         (OLD_CUDNN, "cudnnGetConvolutionForwardAlgorithm")])
def test_host_code_cuda12_cannot_compile_fails_the_check(headers, tmp_path, text, symbol):
    src = tmp_path / "drift.cu"
    src.write_text(text)
    res = run("--clang", CLANG, "--headers", headers, str(src))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAILED" in res.stdout and symbol in res.stdout
    assert "0 of 1 host sides compile" in res.stdout


def test_cuda13_only_code_does_compile_with_this_machines_nvcc(tmp_path):
    """The drift case above is real: nvcc 13 takes it (so only the CUDA 12 check sees it)."""
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not os.path.exists(nvcc):
        pytest.skip("no nvcc here")
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    if "release 13" not in out:
        pytest.skip("nvcc is not CUDA 13")
    src = tmp_path / "drift.cu"
    src.write_text(CUDA13_ONLY)
    res = subprocess.run([nvcc, "-c", str(src), "-o", str(tmp_path / "drift.o")],
                         capture_output=True, text=True, timeout=240,
                         env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})
    assert res.returncode == 0, res.stderr


def test_a_clang_too_old_for_cuda12_is_refused_clearly(tmp_path):
    fake = tmp_path / "clang++"
    fake.write_text("#!/bin/sh\necho 'Debian clang version 14.0.6'\n")
    fake.chmod(0o755)
    res = run("--clang", str(fake), "--headers", str(tmp_path))
    assert res.returncode == 2
    assert "needs clang++ 17 or newer" in res.stderr and "is clang 14" in res.stderr


def test_a_cuda_header_read_from_outside_the_cuda12_folder_fails_the_check(headers, tmp_path):
    """A machine may carry another CUDA's headers in a system folder (this one links CUDA
    13's into /usr/local/include): a CUDA header read from anywhere but the CUDA 12 folder
    is named and fails the file, even when it compiles."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "cudnn.h").write_text("#define CX_NOT_CUDNN 1\n")
    src = tmp_path / "shadowed.cu"
    src.write_text('#include "elsewhere/cudnn.h"\nint value = CX_NOT_CUDNN;\n')
    res = run("--clang", CLANG, "--headers", headers, str(src))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "elsewhere/cudnn.h: neither a CUDA 12 header of" in res.stdout


def test_a_header_only_another_cuda_has_fails_the_check(headers, tmp_path):
    """This machine links CUDA 13's headers into /usr/local/include, among them NCCL's
    nccl_device.h that CUDA 12's NCCL lacks: the -isystem order cannot shadow it, so the
    check must refuse it by where it was read."""
    if not os.path.exists("/usr/local/include/nccl_device.h"):
        pytest.skip("no CUDA 13 headers in /usr/local/include here")
    src = tmp_path / "new_nccl.cu"
    src.write_text("#include <nccl_device.h>\n")
    res = run("--clang", CLANG, "--headers", headers, str(src))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "/usr/local/include/nccl_device.h: neither a CUDA 12 header" in res.stdout
