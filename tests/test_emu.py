"""The CUDA emulator (csrc/emu, docs/emulator.md): kernels written for nvcc, compiled as C++
with AddressSanitizer and UBSan, run on emulated threads.

tests/emu/*.cu hold kernels and host checks; each case prints key=value lines. The binary
is built once per session and per compiler found (clang++ and g++; CX_EMU_CXX names one),
in a temporary folder. Without any C++ compiler the module skips.
"""
import os
import shutil
import signal
import subprocess

import numpy as np
import pytest

from emu_build import CASES, ROOT, build, clean_env, compilers, sanitizer_findings

ORDERS = ["forward", "reverse", "random:1", "random:7"]

pytestmark = pytest.mark.timeout(300)  # the first test of each compiler pays for its build


def build_cases(compiler, tmp_path_factory, all_flags=()):
    """The cases binary (tests/emu/*_cases.cu) and an object that runs its cases."""
    out_dir = str(tmp_path_factory.mktemp("emu-" + compiler.replace("+", "x")))
    sources = [os.path.join(CASES, name) for name in ("emu_cases.cu", "emu_runtime_cases.cu",
                                                      "emu_fp16_cases.cu", "emu_library_cases.cu")]
    binary = build(compiler, out_dir, sources, "emu_cases", all_flags=all_flags)

    class Emu:
        name = compiler
        clang = "clang" in os.path.basename(compiler)

        @staticmethod
        def run(case, order="forward", expect_clean=True, **env):
            full_env = clean_env(CX_EMU_ORDER=order, ASAN_OPTIONS="detect_leaks=1")
            full_env.update(env)
            res = subprocess.run([binary, case], capture_output=True, text=True, env=full_env,
                                 timeout=120)
            if expect_clean:
                assert res.returncode == 0, f"{case} ({order}): exit {res.returncode}\n{res.stderr}"
                assert not sanitizer_findings(res.stderr), res.stderr
                return dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
            return res

    return Emu


@pytest.fixture(scope="session", params=compilers() or [None])
def emu(request, tmp_path_factory):
    if request.param is None:
        pytest.skip("no C++ compiler (clang++ or g++) to build the CUDA emulator")
    return build_cases(request.param, tmp_path_factory)


@pytest.fixture(scope="session")
def emu_ucontext(tmp_path_factory):
    """The portable fiber switch (swapcontext), which x86-64 builds otherwise skip."""
    if not compilers():
        pytest.skip("no C++ compiler (clang++ or g++) to build the CUDA emulator")
    return build_cases(compilers()[0], tmp_path_factory, ["-DCX_EMU_UCONTEXT"])


# ---- barriers and shared memory ----

@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("case", ["reduce_static", "reduce_dynamic"])
def test_reduction_is_right_under_every_order(emu, case, order):
    out = emu.run(case, order)
    assert out["launch"] == "cudaSuccess"
    assert float(out["sum"]) == float(out["expected"])


def test_a_dropped_barrier_is_caught(emu):
    """The reduction without __syncthreads: some order reads a partial sum not yet written
    (a NaN from the shared-memory fill) and the result is wrong."""
    sums = {order: emu.run("reduce_no_barrier", order) for order in ORDERS}
    expected = float(sums["forward"]["expected"])
    wrong = [order for order, out in sums.items() if float(out["sum"]) != expected]
    assert wrong, sums
    assert "forward" in wrong  # thread 0 runs first and reads the unwritten upper half


@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_barrier_in_a_branch_is_divergence(emu, order):
    out = emu.run("barrier_in_branch", order)
    assert out["launch"] == "cudaErrorLaunchFailure"
    message = out["launch_message"]
    assert "barrier divergence in kernel 'barrier_in_branch'" in message
    assert "16 thread(s) waits at __syncthreads (" in message and "emu_cases.cu:" in message
    assert "16 thread(s) has exited" in message
    assert out["next_launch"] == "cudaSuccess"  # the emulator keeps working


def test_barriers_at_two_call_sites_are_divergence(emu):
    out = emu.run("barrier_at_two_sites")
    assert out["launch"] == "cudaErrorLaunchFailure"
    message = out["launch_message"]
    assert "barrier divergence in kernel 'barrier_at_two_sites'" in message
    assert message.count("waits at __syncthreads") == 2


def test_unwritten_shared_memory_reads_nan(emu):
    """Block 0 writes one element of each shared array; block 1 reads it without writing:
    the dynamic buffer is refilled with NaN before each block; static __shared__ arrays too
    when built with clang++ (g++ keeps them as plain statics: docs/emulator.md)."""
    out = emu.run("unwritten_shared")
    assert out["launch"] == "cudaSuccess"
    assert float(out["static_block0"]) == 1.0 and float(out["dynamic_block0"]) == 1.0
    assert out["dynamic_block1"].lstrip("-") == "nan"
    if emu.clang:
        assert out["static_block1"].lstrip("-") == "nan"
    else:
        assert float(out["static_block1"]) == 1.0


# ---- warps, atomics, order ----

@pytest.mark.parametrize("order", ORDERS)
def test_warp_shuffles_and_votes(emu, order):
    out = emu.run("warp_ops", order)
    assert out["launch"] == "cudaSuccess"
    assert out["wrong"] == "0", out


def test_warp_operation_missing_a_lane_is_divergence(emu):
    out = emu.run("warp_divergent")
    assert out["launch"] == "cudaErrorLaunchFailure"
    message = out["launch_message"]
    assert "warp divergence in kernel 'warp_divergent'" in message
    assert "lanes 0x0000ffff wait at __shfl_xor_sync" in message
    assert "lane 16 (thread (16,0,0)) has exited" in message


@pytest.mark.parametrize("order", ["forward", "random:3"])
def test_atomics(emu, order):
    out = emu.run("atomics", order)
    assert out["launch"] == "cudaSuccess"
    assert int(out["counter"]) == 512
    assert float(out["fsum"]) == 256.0
    assert out["maximum"] == out["expected_maximum"]
    assert int(out["wrap"]) == 512 % 10
    assert int(out["cas_sum"]) == sum(range(512))


def test_thread_order_is_selectable(emu):
    def order(name):
        out = emu.run("order", name)
        assert out["launch"] == "cudaSuccess"
        return [int(v) for v in out["order"].split(",")]

    assert order("forward") == list(range(64))
    assert order("reverse") == list(range(63, -1, -1))
    first, again, other = order("random:1"), order("random:1"), order("random:2")
    assert sorted(first) == list(range(64)) and first not in (list(range(64)), list(range(63, -1, -1)))
    assert first == again and first != other


def test_a_bad_order_is_a_launch_error(emu):
    out = emu.run("order", "sideways")
    assert out["launch"] == "cudaErrorInvalidValue"
    assert "CX_EMU_ORDER='sideways'" in out["launch_message"]


# ---- memory faults ----

def test_host_dereference_of_device_memory_crashes(emu):
    res = emu.run("host_reads_device", expect_clean=False, ASAN_OPTIONS="handle_segv=0")
    assert "host reads device memory" in res.stdout
    assert res.returncode == -signal.SIGSEGV, (res.returncode, res.stderr)


def test_kernel_write_past_an_allocation_is_caught(emu):
    res = emu.run("kernel_writes_past", expect_clean=False)
    assert res.returncode != 0
    assert "ERROR: AddressSanitizer" in res.stderr and "write_past" in res.stderr, res.stderr
    assert "launch=" not in res.stdout  # it stopped at the write


# ---- the runtime ----

def test_launch_configuration_checks(emu):
    out = emu.run("launch_checks")
    assert out["block_2048"] == out["grid_y_70000"] == out["grid_0"] == "cudaErrorInvalidConfiguration"
    assert "kernel 'fill': block (2048,1,1)" in out["block_2048_message"]
    assert out["shared_48k"] == "cudaSuccess"
    assert out["shared_48k_plus_1"] == "cudaErrorInvalidValue"
    assert "49153 bytes of dynamic shared memory" in out["shared_48k_plus_1_message"]
    assert out["optin_64k"] == out["shared_64k_opted_in"] == "cudaSuccess"
    assert out["optin_64k_plus_1"] == "cudaErrorInvalidValue"
    assert out["bad_stream"] == "cudaErrorInvalidResourceHandle"


def test_copy_and_memset_checks(emu):
    out = emu.run("copy_checks")
    assert out["h2d"] == out["d2d"] == out["default"] == "cudaSuccess"
    assert out["h2d_past_end"] == "cudaErrorInvalidValue"
    assert "runs 4 bytes past the end of its 256-byte allocation" in out["h2d_past_end_message"]
    assert out["d2h_as_h2d"] == "cudaErrorInvalidValue"
    assert "cudaMemcpyHostToDevice, but the destination is host memory" in out["d2h_as_h2d_message"]
    assert out["memset_past_end"] == out["memset_host"] == "cudaErrorInvalidValue"
    assert out["free_inside"] == out["free_twice"] == "cudaErrorInvalidDevicePointer"
    assert out["filled"] == "3,3,0"
    assert int(out["in_use"]) == 512
    assert out["free"] == "cudaSuccess"


def test_streams_and_events(emu):
    out = emu.run("stream_checks")
    for key in ("stream_create", "event_create", "record", "launch_on_stream", "async_copy",
                "wait_event", "sync", "elapsed", "stream_destroy"):
        assert out[key] == "cudaSuccess", key
    assert out["elapsed_nonnegative"] == "1" and float(out["value"]) == 5.0
    for key in ("stream_destroy_twice", "sync_dead_stream", "record_dead_event"):
        assert out[key] == "cudaErrorInvalidResourceHandle", key


def test_the_device_is_a_t4(emu):
    out = emu.run("device_checks")
    assert out["count"] == "1" and out["cc"] == "7.5" and out["sms"] == "40"
    assert out["warp"] == "32" and out["shared_per_block"] == "49152" and out["optin"] == "65536"
    assert "T4" in out["name"]
    assert out["set_device_1"] == "cudaErrorInvalidDevice"


# ---- the emulated cuBLAS and cuDNN (csrc/emu/emu_cublas.cc, emu_cudnn.cc) ----

CUBLAS_INVALID_VALUE, CUBLAS_EXECUTION_FAILED, CUBLAS_NOT_INITIALIZED = "7", "13", "1"
CUDNN_BAD_PARAM, CUDNN_NOT_SUPPORTED, CUDNN_EXECUTION_FAILED = "2000", "3000", "5000"


def floats(text):
    return np.array([float(v) for v in text.split(",")])


def column_major(values, rows, cols):
    return values.reshape(cols, rows).T


def test_emulated_sgemm_against_numpy(emu):
    """Every transpose pair, leading dimensions past the rows, alpha and beta, host and
    device scalars; the rows of C past m stay untouched. Small integers: exact."""
    out = emu.run("cublas")
    m, n, k, ld = 3, 4, 5, 7
    a = column_major(np.arange(ld * ld) * 7 % 11 - 5.0, ld, ld)
    b = column_major(np.arange(ld * ld) * 5 % 13 - 6.0, ld, ld)
    c = column_major(np.arange(ld * n) % 5 - 2.0, ld, n)
    op_a = {"N": a[:m, :k], "T": a[:k, :m].T}
    op_b = {"N": b[:k, :n], "T": b[:n, :k].T}
    for ta in "NT":
        for tb in "NT":
            assert out[f"sgemm_{ta}{tb}"] == "0", out[f"sgemm_{ta}{tb}_message"]
            want = c.copy()
            want[:m] = 1.5 * op_a[ta] @ op_b[tb] - 0.5 * c[:m]
            np.testing.assert_array_equal(column_major(floats(out[f"c_{ta}{tb}"]), ld, n), want, f"{ta}{tb}")
    want = c.copy()
    want[:m] = -0.5 * c[:m]
    np.testing.assert_array_equal(column_major(floats(out["c_alpha0"]), ld, n), want)  # A, B unread
    got = column_major(floats(out["c_beta0"]), ld, n)
    np.testing.assert_array_equal(got[:m], 1.5 * op_a["N"] @ op_b["N"])  # the NaN in C unread
    assert np.isnan(got[m:]).all()
    assert out["device_scalars"] == "0"
    want = c.copy()
    want[:m] = 1.5 * op_a["T"] @ op_b["N"] - 0.5 * c[:m]
    np.testing.assert_array_equal(column_major(floats(out["c_device_scalars"]), ld, n), want)
    assert out["device_mode_host_alpha"] == CUBLAS_EXECUTION_FAILED
    assert "alpha" in out["device_mode_host_alpha_message"] and "not device memory" in out["device_mode_host_alpha_message"]
    assert out["math_tf32"] == out["destroy"] == out["property"] == "0" and out["major"] == "12"


def test_emulated_gemmex_reads_half_and_bf16_operands(emu):
    """cublasGemmEx with half and bf16 copies of the same small-integer A and B gives
    sgemm's NN result exactly; its buffers are checked in 2-byte elements (A ends at the
    allocation's last byte from element 18, one element past it from 19); operands of two
    types are refused."""
    out = emu.run("cublas")
    assert out["gemmex_half"] == out["gemmex_bf16"] == out["gemmex_fits"] == "0", out["gemmex_half_message"]
    assert out["c_gemmex_half"] == out["c_gemmex_bf16"] == out["c_NN"]
    assert out["gemmex_short"] == CUBLAS_EXECUTION_FAILED
    assert "62 bytes" in out["gemmex_short_message"] and "past the end" in out["gemmex_short_message"]
    assert out["gemmex_mixed"] == "15"  # CUBLAS_STATUS_NOT_SUPPORTED
    assert "A type 2, B type 0" in out["gemmex_mixed_message"]


def test_emulated_sgemm_refuses_what_it_cannot_do_right(emu):
    out = emu.run("cublas")
    assert out["lda_too_small"] == out["bad_op"] == out["c_is_a"] == out["math_99"] == CUBLAS_INVALID_VALUE
    assert "lda=2" in out["lda_too_small_message"] and "[CUDA emulator]" in out["lda_too_small_message"]
    assert "C overlaps A" in out["c_is_a_message"]
    assert out["c_past_end"] == out["host_b"] == CUBLAS_EXECUTION_FAILED
    assert "C: 96 bytes at offset 0 run 48 bytes past the end of its 48-byte allocation" in out["c_past_end_message"]
    assert "B 0x" in out["host_b_message"] and "not device memory" in out["host_b_message"]
    assert out["bad_stream"] == CUBLAS_INVALID_VALUE
    assert out["destroyed_handle"] == CUBLAS_NOT_INITIALIZED


def conv_reference(x, w, dy, groups, pad, stride, dilation):
    """y, dx (from zeros), dw of a grouped cross-correlation with per-axis padding,
    stride and dilation, in float64."""
    (ph, pw), (sh, sw), (dh, dw_) = pad, stride, dilation
    k, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh = (x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (x.shape[3] + 2 * pw - dw_ * (kw - 1) - 1) // sw + 1
    kg = k // groups
    y, dxp, dw = np.zeros((x.shape[0], k, oh, ow)), np.zeros_like(xp), np.zeros_like(w)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
            cols = slice(j * dw_, j * dw_ + sw * (ow - 1) + 1, sw)
            for g in range(groups):
                cs, ks = slice(g * cg, (g + 1) * cg), slice(g * kg, (g + 1) * kg)
                y[:, ks] += np.einsum("nchw,kc->nkhw", xp[:, cs, rows, cols], w[ks, :, i, j])
                dxp[:, cs, rows, cols] += np.einsum("nkhw,kc->nchw", dy[:, ks], w[ks, :, i, j])
                dw[ks, :, i, j] += np.einsum("nkhw,nchw->kc", dy[:, ks], xp[:, cs, rows, cols])
    return y, dxp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]], dw


def test_emulated_cudnn_against_numpy(emu):
    """Groups, unequal padding, stride and dilation per axis; beta 0 does not read y (NaN
    there), beta 1 accumulates into dx, alpha scales dw. Small integers: exact."""
    out = emu.run("cudnn")
    for key in ("create", "conv_desc", "groups", "math_fma", "output_dim", "filter_algos",
                "filter_ws", "forward", "backward_data", "backward_filter", "destroy"):
        assert out[key] == "0", (key, out[key + "_message"])
    assert out["y_shape"] == "2,6,2,8"
    x = (np.arange(2 * 4 * 5 * 6) * 7 % 9 - 4.0).reshape(2, 4, 5, 6)
    w = (np.arange(6 * 2 * 3 * 3) * 5 % 7 - 3.0).reshape(6, 2, 3, 3)
    dy = (np.arange(2 * 6 * 2 * 8) * 3 % 5 - 2.0).reshape(2, 6, 2, 8)
    y, dx, dw = conv_reference(x, w, dy, 2, (1, 2), (2, 1), (2, 1))
    np.testing.assert_array_equal(floats(out["y"]).reshape(y.shape), y)
    np.testing.assert_array_equal(floats(out["dx"]).reshape(dx.shape), 1.0 + dx)
    np.testing.assert_array_equal(floats(out["dw"]).reshape(dw.shape), 2.0 * dw)
    # an unavailable algorithm first, then determinism, math type and workspace vary
    algos = [tuple(int(v) for v in entry.split(":")) for entry in out["filter_algo_list"].split(",")]
    assert algos == [(2, 3000, 1, 0, 0), (0, 0, 0, 0, 0), (1, 0, 1, 0, 6 * 2 * 3 * 3 * 4)]
    assert out["version"] == "90000"


def test_emulated_cudnn_refuses_what_it_cannot_do_right(emu):
    out = emu.run("cudnn")
    assert out["nhwc"] == out["double"] == out["fft"] == out["flipped"] == CUDNN_NOT_SUPPORTED
    assert "NCHW (0) in float (0), half (2) or bfloat16 (9) only" in out["nhwc_message"]
    assert out["half_desc"] == "0" and out["mixed_types"] == CUDNN_NOT_SUPPORTED
    assert "data types x 2, w 0, y 0: the emulator has one data type for all three" in out["mixed_types_message"]
    assert "forward algorithm 4 is not one the emulator runs" in out["fft_message"]
    assert "CUDNN_CROSS_CORRELATION in float only" in out["flipped_message"]
    for key in ("zero_dim", "unset_desc", "wrong_y", "workspace_short", "y_is_x", "groups_3_forward"):
        assert out[key] == CUDNN_BAD_PARAM, (key, out[key + "_message"])
    assert "never set" in out["unset_desc_message"]
    assert "the output descriptor is [2, 6, 2, 7], the convolution gives [2, 6, 2, 8]" in out["wrong_y_message"]
    assert "needs 432 bytes of workspace, 431 were given" in out["workspace_short_message"]
    assert "the output y overlaps the input x" in out["y_is_x_message"]
    assert "x has 4 channels" in out["groups_3_forward_message"]
    assert out["workspace_host"] == out["y_past_end"] == CUDNN_EXECUTION_FAILED
    assert "the workspace" in out["workspace_host_message"] and "not device memory" in out["workspace_host_message"]
    assert "y: 768 bytes at offset 0 run 4 bytes past the end of its 764-byte allocation" in out["y_past_end_message"]
    assert out["after_error"] == "0" and out["after_error_message"] == ""


# ---- half precision ----

def test_half_and_bfloat16_round_to_nearest_even(emu):
    """__half against NumPy's float16 (IEEE binary16, round to nearest even): conversion
    both ways and +, *, / of neighbouring values (NumPy computes in float32 and rounds
    once, which is correctly rounded for these operations); __nv_bfloat16 against the
    bits of float rounded to its top 16 (nearest even) worked out here in integers."""
    out = emu.run("fp16")
    assert out["launch"] == "cudaSuccess"

    def hex_array(key, dtype):
        return np.array([int(v, 16) for v in out[key].split(",")], dtype=np.uint64).astype(dtype)

    bits = hex_array("inputs", np.uint32)
    x = bits.view(np.float32)
    with np.errstate(all="ignore"):
        h = x.astype(np.float16)
        nxt = np.roll(h, -1)
        expected = {"half": h, "sum": h + nxt, "product": h * nxt, "quotient": h / nxt}
    for key, ref in expected.items():
        ours = hex_array(key, np.uint16)
        ref_bits = ref.view(np.uint16)
        nan = np.isnan(ref)
        assert np.array_equal(np.isnan(ours.view(np.float16)), nan), key
        mismatch = np.flatnonzero((ours != ref_bits) & ~nan)
        assert mismatch.size == 0, (key, [(hex(bits[i]), hex(ours[i]), hex(ref_bits[i])) for i in mismatch[:5]])
    back = hex_array("back", np.uint32).view(np.float32)
    assert np.array_equal(back, h.astype(np.float32), equal_nan=True)
    ours_bf = hex_array("bfloat16", np.uint32)
    b = bits.astype(np.uint64)
    ref_bf = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF
    finite = (bits & 0x7FFFFFFF) <= 0x7F800000
    assert np.array_equal(ours_bf[finite], ref_bf[finite])
    assert np.all((ours_bf[~finite] & 0x7FFF) > 0x7F80)  # NaN stays NaN
    assert ours_bf[2] == 0x3F80  # 1.0


# ---- the portable fiber switch ----

@pytest.mark.parametrize("order", ["forward", "random:4"])
def test_ucontext_switch_runs_barriers_and_warps(emu_ucontext, order):
    out = emu_ucontext.run("reduce_static", order)
    assert float(out["sum"]) == float(out["expected"])
    assert emu_ucontext.run("warp_ops", order)["wrong"] == "0"
    out = emu_ucontext.run("barrier_in_branch", order)
    assert "barrier divergence in kernel 'barrier_in_branch'" in out["launch_message"]
    assert out["next_launch"] == "cudaSuccess"


# ---- the same sources under nvcc ----

def nvcc_path():
    found = shutil.which("nvcc")
    if not found:
        home = os.environ.get("CUDA_HOME", os.path.join(os.sep, "usr", "local", "cuda"))
        found = shutil.which("nvcc", path=os.path.join(home, "bin"))
    return found


@pytest.mark.parametrize("case_file", ["emu_cases.cu", "emu_fp16_cases.cu"])
def test_the_cases_compile_with_nvcc(case_file, tmp_path):
    """The kernels and launches of the emulator's cases are CUDA as nvcc takes it (through
    kernels/launch.cuh): what runs on the emulator is what a GPU build compiles."""
    nvcc = nvcc_path()
    if not nvcc:
        pytest.skip("nvcc is not installed")
    res = subprocess.run(["nice", nvcc, "-arch=sm_75", "-std=c++17", "-x", "cu", "-I",
                          os.path.join(ROOT, "kernels"), "-I", os.path.join(ROOT, "csrc"), "-c",
                          os.path.join(CASES, case_file), "-o", str(tmp_path / "case.o")],
                         capture_output=True, text=True, timeout=280, env=clean_env())
    assert res.returncode == 0, res.stderr
