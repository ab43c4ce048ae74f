import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def emulated(tmp_path_factory):
    """(compiler, build(kernels_dir) -> library path) for the emulated libcodext_cuda
    (tests/emu_build.py), compiled objects shared by every build of the session
    (tests/test_emu_backend.py, tests/test_emu_trainer.py)."""
    from emu_build import ROOT, build_cuda_library, library_compiler
    compiler = library_compiler()
    if not compiler:
        pytest.skip("no C++ compiler (clang++ or g++) to build the CUDA emulator")
    cache = str(tmp_path_factory.mktemp("emu-cuda-objects"))

    def build(kernels_dir=os.path.join(ROOT, "kernels")):
        out = str(tmp_path_factory.mktemp("emu-cuda-lib"))
        return build_cuda_library(compiler, out, kernels_dir=kernels_dir, cache_dir=cache)

    return compiler, build


@pytest.fixture(scope="session")
def library(emulated):
    """The emulated libcodext_cuda built from kernels/ as it is, once per session."""
    return emulated[1]()


FAKE_NVML = r"""
#include <stdio.h>
#include <stdlib.h>
typedef struct { unsigned long long total, free, used; } memory_info;
static int count(void) { const char *s = getenv("FAKE_NVML_COUNT"); return s ? atoi(s) : 2; }
int nvmlInit_v2(void) { return getenv("FAKE_NVML_FAIL_INIT") ? 3 : 0; }
int nvmlShutdown(void) { return 0; }
int nvmlDeviceGetCount_v2(unsigned *n) { *n = (unsigned)count(); return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned i, void **h) {
    if ((int)i >= count()) return 2;
    *h = (void *)(size_t)(i + 1);
    return 0;
}
int nvmlDeviceGetName(void *h, char *buf, unsigned len) { snprintf(buf, len, "Tesla T4"); return 0; }
int nvmlDeviceGetUUID(void *h, char *buf, unsigned len) {
    snprintf(buf, len, "GPU-%08d-aaaa", (int)(size_t)h - 1);
    return 0;
}
int nvmlDeviceGetMemoryInfo(void *h, memory_info *m) {
    m->total = 15ull << 30; m->free = m->total; m->used = 0;
    return 0;
}
int nvmlDeviceGetCudaComputeCapability(void *h, int *major, int *minor) {
    *major = 7; *minor = 5;
    return 0;
}
int nvmlSystemGetCudaDriverVersion_v2(int *v) {
    const char *s = getenv("FAKE_NVML_CUDA");
    *v = s ? atoi(s) : 12080;
    return 0;
}
"""


@pytest.fixture(scope="session")
def fake_nvml(tmp_path_factory):
    """A fake NVML library (codext/_gpus.py reads it through CODEXT_NVML_LIBRARY) that
    reports two Tesla T4s (sm_75, 15 GiB; FAKE_NVML_COUNT changes the count) and a driver
    for CUDA 12.8 (FAKE_NVML_CUDA=13000: 13.0); FAKE_NVML_FAIL_INIT makes nvmlInit fail."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler for the fake NVML")
    folder = tmp_path_factory.mktemp("fake-nvml")
    src, lib = folder / "nvml.c", folder / "libnvidia-ml-fake.so"
    src.write_text(FAKE_NVML)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return str(lib)
