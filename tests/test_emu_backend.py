"""The whole CUDA backend on the CUDA emulator: tests/gpu against an emulated
libcodext_cuda.so.

tests/emu_build.build_cuda_library compiles every kernels/*.cu (backend_cuda.cu's state,
errors and table, each op family's host code and the device code it includes) with the
emulator and its cuBLAS and cuDNN (csrc/emu) into a library that exports
cx_cuda_get_api, as nvcc's build does. tests/gpu (every case of the op-test runner, the
CUDA backend against float64 NumPy and against the CPU backend, accumulation, NULL
gradients, determinism, refusal of the ops it lacks) then runs in a subprocess with
CODEXT_CUDA_EMULATED pointing at it: _C opens it with dlopen through the same ABI as on
a GPU, and tests/gpu/conftest.py fails (rather than skips) unless the backend is the
emulator's.

The library is built with AddressSanitizer and UBSan, so the subprocess's Python gets
the sanitizer runtime preloaded (a sanitized library cannot be dlopened into a Python
started without it; docs/emulator.md). Under CI's sanitizer pass, where this Python
already runs with gcc's libasan preloaded and _C is instrumented by gcc, the library is
built by g++ to share that runtime; otherwise by clang++ when installed (it refills
static shared memory per block; g++ cannot).

A second library, built from a copy of kernels/ with deliberate bugs (MUTATIONS),
must fail the op tests that should catch each bug, and only those.
"""
import os
import re
import subprocess
import sys

import pytest

from emu_build import ROOT, emulated_env, mutated_kernels
from testing_module import testing  # noqa: F401  (tests/gpu needs the test build too)

pytestmark = pytest.mark.timeout(900)

# Deliberate bugs (file under kernels/, text, replacement), each caught by named op tests.
MUTATIONS = [
    # linear backward: dx overwritten instead of accumulated (cuBLAS beta 0): the
    # emulated cuBLAS honours beta, test_backward_accumulates sees it
    ("linear.cu", "w_count, dy, out_features, dy_count, 1.0f, dx, in_features,",
     "w_count, dy, out_features, dy_count, 0.0f, dx, in_features,"),
    # conv forward: the bias indexed by element instead of by channel (device code)
    ("device/conv.cuh", "bias[(i / (size_t)hw) % (size_t)channels]", "bias[i % (size_t)channels]"),
    # conv backward filter: the workspace the algorithm asked for is not passed on
    ("conv.cu", "choice->workspace_bytes, &one, choice->w,", "0, &one, choice->w,"),
    # depthwise filter gradient: the tree over the block without its barrier (a thread
    # reads a partner's partial before the partner has added to it)
    ("device/direct_conv.cuh", "            partial[threadIdx.x] += partial[threadIdx.x + half];\n        __syncthreads();",
     "            partial[threadIdx.x] += partial[threadIdx.x + half];"),
    # mixed precision: a half data gradient overwrites dx instead of adding to it
    ("conv.cu", "cu_widen(st, dx_out, dx, x_count(s), 1);", "cu_widen(st, dx_out, dx, x_count(s), 0);"),
    # a 1x1 convolution's data gradient (a product per image) overwrites dx
    ("conv.cu", "in, w_n, 1.0f, out + b * x_img, hw, 1,", "in, w_n, 0.0f, out + b * x_img, hw, 1,"),
]


def run_gpu_tests(compiler, lib, *pytest_args, env=None):
    """tests/gpu in a subprocess on the emulated library (with `env` added to its
    environment); (returncode, output)."""
    env = dict(emulated_env(lib, compiler), **(env or {}))
    # test_device_training.py compares training on a GPU with the CPU: on the emulator
    # that is test_emu_trainer.py's and test_emu_ddp.py's work
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs",
           "--timeout=300", os.path.join(ROOT, "tests", "gpu"),
           "--ignore=" + os.path.join(ROOT, "tests", "gpu", "test_device_training.py")] + list(pytest_args)
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=800)
    return res.returncode, res.stdout + res.stderr


def model_creation_error(env):
    """A child that makes a tiny model on "cuda" under `env` and prints the RuntimeError or
    ValueError that refuses it (nothing when it is made): the CompletedProcess."""
    code = ("import codext\n"
            "try:\n"
            "    codext.Model(backbone='edgenext_tiny_test', decoder_dim=8, num_experts=2, device='cuda')\n"
            "except (RuntimeError, ValueError) as e:\n"
            "    print(e)\n")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def summary_counts(output):
    """{'passed': n, 'failed': n, ...} from pytest's last line."""
    last = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    assert last, output[-3000:]
    return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last[-1])}


def test_the_library_is_the_emulator_behind_the_cuda_abi(emulated, library):
    """_C loads the emulated library through CODEXT_CUDA_LIBRARY and the loader's ABI
    checks, and sees the emulator's T4."""
    compiler, _ = emulated
    env = emulated_env(library, compiler, CODEXT_CUDA_LIBRARY=library)
    code = "from codext import _C; print(_C.cuda_backend_available())"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("(True, ") and "Tesla T4 (CUDA emulator) (sm_75" in res.stdout, res.stdout
    assert library in res.stdout, res.stdout


def test_a_gpu_without_a_kernel_image_is_refused_at_creation(emulated, library):
    """A GPU the build has no kernel image for (an architecture below the build's, no PTX to
    JIT: a P100 under a build for sm_75 and up) fails when the backend is created, naming
    the device, its architecture and what to do, not at the first op of a step."""
    compiler, _ = emulated
    res = model_creation_error(emulated_env(library, compiler, CODEXT_CUDA_LIBRARY=library,
                                            CODEXT_EMU_NO_KERNEL_IMAGE="1"))
    assert res.returncode == 0, res.stderr
    assert "device 0 (sm_75) cannot run this build's kernels" in res.stdout, res.stdout
    assert "cudaErrorNoKernelImageForDevice" in res.stdout and "CODEXT_CUDA_ARCHS=75" in res.stdout


@pytest.mark.parametrize("driver, expected", [
    ("11080", "the driver supports CUDA 11.8, codext was built with CUDA runtime 12.8: update "
              "the driver or build codext with an older toolkit"),
    ("12070", "the driver supports CUDA 12.7, codext was built with CUDA runtime 12.8"),
    ("0", "no NVIDIA driver was found (libcuda.so.1)"),
])
def test_a_driver_too_old_for_the_build_is_refused_naming_both_versions(emulated, library,
                                                                         driver, expected):
    """A driver older than the runtime the library was built with (a CUDA 13 build on
    Kaggle's CUDA 12 driver; here the emulated runtime is 12.8 and CODEXT_EMU_DRIVER sets
    the driver's version) is refused when the model is made, before any training, with
    both versions and what to do; no driver at all says so."""
    compiler, _ = emulated
    env = emulated_env(library, compiler, CODEXT_CUDA_LIBRARY=library, CODEXT_EMU_DRIVER=driver)
    res = model_creation_error(env)
    assert res.returncode == 0, res.stderr
    assert "cudaErrorInsufficientDriver" in res.stdout and expected in res.stdout, res.stdout
    code = "from codext import _C; print(_C.cuda_backend_available())"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("(False, ") and expected in res.stdout, \
        res.stdout + res.stderr


def test_the_driver_the_runtime_was_built_for_is_accepted(emulated, library):
    """The edge: a driver of exactly the runtime's version (12.8) serves it."""
    compiler, _ = emulated
    env = emulated_env(library, compiler, CODEXT_CUDA_LIBRARY=library, CODEXT_EMU_DRIVER="12080")
    res = model_creation_error(env)
    assert res.returncode == 0 and res.stdout == "", res.stdout + res.stderr


def test_gpu_suite_passes_on_the_emulator(emulated, library):
    """Every test of tests/gpu passes and none skips: the ops the backend implements run
    on the emulator against NumPy and the CPU backend; the others are refused by name."""
    compiler, _ = emulated
    # (test_own_kernels.py runs in test_our_own_gemm_... below: its children are the slow part)
    code, output = run_gpu_tests(compiler, library, "-k", "not own_kernels")
    counts = summary_counts(output)
    assert code == 0, output[-6000:]
    assert counts.get("passed", 0) >= 250 and set(counts) <= {"passed", "deselected", "in"}, output[-3000:]


def test_bf16_runs_on_an_emulated_sm80(emulated, library):
    """bf16 needs sm_80+: on the emulator reporting sm_80 every op-test case runs in bf16
    against the CPU backend (on the default sm_75 each bf16 call must be refused)."""
    compiler, _ = emulated
    code, output = run_gpu_tests(compiler, library, "-k", "bf16", env={"CODEXT_EMU_SM": "80"})
    counts = summary_counts(output)
    assert code == 0, output[-6000:]
    assert counts.get("passed", 0) >= 50 and set(counts) <= {"passed", "deselected", "in"}, output[-3000:]


def test_convolutions_without_a_deterministic_cudnn_algorithm_fall_back(emulated, library):
    """The emulated cuDNN told to offer no deterministic algorithm: the deterministic
    backend runs every convolution on its direct kernels (kernels/device/direct_conv.cuh)
    instead of failing, and the conv cases still match NumPy and the CPU backend."""
    compiler, _ = emulated
    code, output = run_gpu_tests(compiler, library, "-k", "conv and not low_precision",
                                 env={"CODEXT_EMU_CUDNN_NONDETERMINISTIC": "1"})
    counts = summary_counts(output)
    assert code == 0, output[-6000:]
    assert counts.get("passed", 0) >= 60 and set(counts) <= {"passed", "deselected", "in"}, output[-3000:]


def test_planted_bugs_are_caught(emulated, tmp_path):
    """The op tests catch each bug of MUTATIONS (and the tests that should not notice a
    bug do not)."""
    compiler, build = emulated
    lib = build(mutated_kernels(str(tmp_path / "kernels"), MUTATIONS))
    code, output = run_gpu_tests(compiler, lib, "-k", "linear or conv")
    assert code != 0, output[-3000:]
    failed = set(re.findall(r"^FAILED \S+::(\S+)", output, re.M))
    # dx no longer accumulates: a gradient from zeros is still right
    assert {"test_backward_accumulates[linear]", "test_backward_accumulates[linear_big]"} <= failed, failed
    assert not failed & {"test_backward_matches_numpy[linear]", "test_matches_cpu_backend[linear]"}, failed
    # the bias is wrong wherever there is one, and only there
    assert "test_forward_matches_numpy[conv3x3]" in failed, failed
    # (depthwise convolutions add their bias in their own kernel)
    assert "test_forward_matches_numpy[conv_dw7x7]" not in failed, failed
    # the depthwise filter gradient without its barrier is wrong; its forward is not
    assert {"test_backward_matches_numpy[conv_dw7x7]", "test_backward_matches_numpy[conv_dw3x3_big]"} <= failed, failed
    assert "test_forward_matches_numpy[conv1x1_no_bias]" not in failed, failed
    # the emulated cuDNN refuses the backward filter without its workspace, saying why (a
    # 1x1 convolution is a product and never asks cuDNN)
    assert "test_backward_matches_numpy[conv3x3_no_bias]" in failed, failed
    assert "test_forward_matches_numpy[conv3x3_no_bias]" not in failed, failed
    assert "test_backward_matches_numpy[conv1x1_no_bias]" not in failed, failed
    # the 1x1 product's data gradient no longer accumulates
    assert "test_backward_accumulates[conv1x1_no_bias]" in failed, failed
    assert re.search(r"cuDNN error in conv2d backward filter .*CUDNN_STATUS_BAD_PARAM.*needs \d+ "
                     r"bytes of workspace, 0 were given", output), output[-6000:]
    # a half data gradient that overwrites dx: the mixed-precision accumulation check sees it
    assert "test_low_precision_matches_cpu_backend[conv3x3-fp16]" in failed, failed


OWN = {"CODEXT_CUDA_GEMM": "own", "CODEXT_CUDA_CONV": "own"}


def test_our_own_gemm_and_convolutions_stand_in_for_cublas_and_cudnn(emulated, library):
    """CODEXT_CUDA_GEMM=own and CODEXT_CUDA_CONV=own: every linear and convolution case runs
    on our kernels (kernels/device/gemm.cuh; direct_conv.cuh for every convolution) instead
    of cuBLAS and cuDNN, in fp32 and on the half copies of fp16, and matches NumPy and the
    CPU backend (tests/gpu/test_own_kernels.py compares the two paths directly)."""
    compiler, _ = emulated
    code, output = run_gpu_tests(
        compiler, library, "-k", "(linear or conv) and (matches or accumulates or low_precision) or own_kernels",
        env=OWN)
    counts = summary_counts(output)
    assert code == 0, output[-6000:]
    assert counts.get("passed", 0) >= 60 and set(counts) <= {"passed", "deselected", "in"}, output[-3000:]


def test_the_own_gemm_is_what_runs_when_chosen_and_a_bad_choice_is_refused(emulated, tmp_path):
    """A GEMM kernel that drops the first term of every k-tile: the linear cases fail with
    CODEXT_CUDA_GEMM=own and pass without it (the switch reaches linear.cu). A value other
    than own or vendor refuses to create the backend, naming the variable."""
    compiler, build = emulated
    lib = build(mutated_kernels(str(tmp_path / "kernels"), [
        ("device/gemm.cuh", "for (int t = 0; t < span; t++)", "for (int t = 1; t < span; t++)")]))
    code, output = run_gpu_tests(compiler, lib, "-k", "matches_numpy and linear", env=OWN)
    assert code != 0 and "FAILED" in output, output[-3000:]
    code, output = run_gpu_tests(compiler, lib, "-k", "matches_numpy and linear")
    assert code == 0, output[-3000:]
    res = model_creation_error(emulated_env(lib, compiler, CODEXT_CUDA_LIBRARY=lib,
                                            CODEXT_CUDA_GEMM="fast"))
    assert "CODEXT_CUDA_GEMM must be 'own' (our kernels) or 'vendor'" in res.stdout + res.stderr, res.stdout + res.stderr
