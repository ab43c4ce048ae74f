import os
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
