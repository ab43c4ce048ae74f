"""tools/nvrtc_check.py and tools/ptxas_usage.py: the CUDA 12 check of the device code.

The rules read from the text and the resource-report limits are checked everywhere; the
tests that compile need NVRTC 12 from PyPI (the nvidia-cuda-nvrtc-cu12 wheel): they look
in $CODEXT_NVRTC_WHEELS (CI installs the wheels there and sets it, and then a missing
NVRTC fails them) and else on sys.path, and skip when it is not found.
"""
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")
CHECK = os.path.join(TOOLS, "nvrtc_check.py")
USAGE = os.path.join(TOOLS, "ptxas_usage.py")
DEVICE = os.path.join(ROOT, "kernels", "device")


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(TOOLS, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, TOOLS)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(TOOLS)
    return module


ptxas_usage = load("ptxas_usage")
nvrtc_check = load("nvrtc_check")


def run(*args, script=CHECK):
    # the sanitizer run preloads ASan into every process: NVRTC is not ours to check
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)


def nvrtc_wheels():
    lib, detail = nvrtc_check.find_wheels(None)
    if lib is None:
        if os.environ.get("CODEXT_NVRTC_WHEELS"):
            pytest.fail(f"CODEXT_NVRTC_WHEELS is set but NVRTC 12 is not usable: {detail}")
        pytest.skip("NVRTC 12 (nvidia-cuda-nvrtc-cu12) is not installed")
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(lib))))


def write(folder, name, text):
    path = os.path.join(str(folder), name)
    with open(path, "w") as f:
        f.write(text)
    return path


GOOD = """// nvrtc-check: hot scale_kernel
__global__ void scale_kernel(size_t n, float a, float *y) {
    for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        y[i] *= a;
}
"""

# ---- ptxas's report ----------------------------------------------------------------

# NVRTC 12.8's log (--ptxas-options=-v) and nvcc 13's (--resource-usage), as printed
NVRTC_LOG = """nvrtc: warning: Architectures prior to '<compute/sm>_75' are deprecated
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z22column_partials_kernelILb1EEviiiPKfS1_S1_PfS2_' for 'sm_60'
ptxas info    : Function properties for _Z22column_partials_kernelILb1EEviiiPKfS1_S1_PfS2_
ptxas         .     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 31 registers, used 0 barriers, 1024 bytes smem, 380 bytes cmem[0]
ptxas info    : Compile time = 6.4 ms
"""
NVCC_LOG = """# kernels/norm.cu
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z24layernorm_forward_kerneliifPKfS0_S0_PfS1_' for 'sm_75'
ptxas info    : Function properties for _Z24layernorm_forward_kerneliifPKfS0_S0_PfS1_
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Function properties for _Z9block_sumfPf
    64 bytes stack frame, 60 bytes spill stores, 60 bytes spill loads
ptxas info    : Used 46 registers, used 0 barriers, 400 bytes cmem[0]
"""


def test_parse_reads_nvrtc_and_nvcc_reports():
    (r,) = ptxas_usage.parse(NVRTC_LOG, source="x.cuh")
    assert (r.arch, r.registers, r.stack, r.spill_stores, r.spill_loads, r.static_shared) == (
        "sm_60", 31, 8, 4, 12, 1024)
    assert r.source == "x.cuh"
    if ptxas_usage.shutil.which("c++filt"):
        assert r.name == "column_partials_kernel<true>"
    assert r.base == "column_partials_kernel"
    (n,) = ptxas_usage.parse(NVCC_LOG)
    # the called function's spills are its own, not the kernel's
    assert (n.arch, n.registers, n.stack, n.spill_stores, n.static_shared) == ("sm_75", 46, 0, 0, 0)
    assert (n.source, n.base) == ("kernels/norm.cu", "layernorm_forward_kernel")


def test_without_cxxfilt_names_stay_mangled_and_bases_are_read(monkeypatch):
    monkeypatch.setattr(ptxas_usage.shutil, "which", lambda name: None)
    two = NVRTC_LOG + NVRTC_LOG.replace("ILb1EE", "ILb0EE")
    records = ptxas_usage.parse(two)
    assert [r.base for r in records] == ["column_partials_kernel"] * 2
    assert records[0].name != records[1].name  # one table row per template instance
    assert len(ptxas_usage.check(records, {"column_partials_kernel"})) == 2
    assert "column_partials_kernel" in ptxas_usage.table(records, {"column_partials_kernel"})


def test_a_hot_kernel_that_spills_fails_and_a_cold_one_passes():
    records = ptxas_usage.parse(NVRTC_LOG)
    problems = ptxas_usage.check(records, {"column_partials_kernel"})
    assert len(problems) == 1 and "spills registers on sm_60" in problems[0], problems
    assert "column_partials_kernel" in problems[0]
    assert ptxas_usage.check(records, set()) == []


def test_static_shared_memory_above_t4s_limit_fails():
    text = NVRTC_LOG.replace("1024 bytes smem", "49156 bytes smem")
    problems = ptxas_usage.check(ptxas_usage.parse(text), set())
    assert len(problems) == 1 and "49156 bytes of static shared memory" in problems[0]
    at_limit = NVRTC_LOG.replace("1024 bytes smem", "49152 bytes smem")
    assert ptxas_usage.check(ptxas_usage.parse(at_limit), set()) == []


def test_a_report_without_spill_lines_is_refused_for_hot_kernels():
    """nvcc output whose 'bytes stack frame' lines were lost cannot prove 'no spills'."""
    text = "\n".join(l for l in NVCC_LOG.splitlines() if "stack frame" not in l)
    problems = ptxas_usage.check(ptxas_usage.parse(text), {"layernorm_forward_kernel"})
    assert len(problems) == 1 and "no spill information" in problems[0]


def test_report_cli_needs_every_hot_kernel(tmp_path):
    report = write(tmp_path, "report.txt", NVCC_LOG)
    sources = tmp_path / "device"
    sources.mkdir()
    write(sources, "norm.cuh", "// nvrtc-check: hot layernorm_forward_kernel\n")
    res = run(report, "--sources", str(sources), script=USAGE)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "layernorm_forward_kernel *" in res.stdout
    write(sources, "norm.cuh", "// nvrtc-check: hot layernorm_forward_kernel gelu_kernel\n")
    res = run(report, "--sources", str(sources), script=USAGE)
    assert res.returncode == 1
    assert "hot kernel gelu_kernel" in res.stdout and "norm.cuh" in res.stdout
    empty = write(tmp_path, "empty.txt", "")
    res = run(empty, "--sources", str(sources), script=USAGE)
    assert res.returncode == 1 and "holds no kernel" in res.stdout


# ---- the rules read from the text (no compiler needed) -----------------------------------

@pytest.mark.parametrize("include, complaint", [
    ("#include <stdio.h>", "includes <stdio.h>, a host header"),
    ("#include <cublas_v2.h>", "includes <cublas_v2.h>, a host header"),
    ("#include <cuda_runtime.h>", "includes <cuda_runtime.h>, a host header"),
    ('#include "../common.cuh"', 'includes "../common.cuh", which is not a file of'),
    ('#include "missing.cuh"', 'includes "missing.cuh", which is not a file of'),
])
def test_a_host_include_fails_naming_the_file(tmp_path, include, complaint):
    write(tmp_path, "common.cuh", "#define X 1\n")
    bad = write(tmp_path, "bad.cuh", include + "\n" + GOOD)
    res = run(bad)
    assert res.returncode == 1
    assert f"bad.cuh:1: {complaint}" in res.stdout, res.stdout


def test_device_headers_are_allowed(tmp_path):
    text = "#include <cuda_fp16.h>\n#include \"helpers.cuh\"\n" + GOOD
    write(tmp_path, "helpers.cuh", "#define X 1\n")
    problems, _ = nvrtc_check.static_problems(os.path.join(str(tmp_path), "ok.cuh"), text)
    assert problems == []


def test_directives_must_name_kernels_of_the_file(tmp_path):
    template = ("template <bool B>\n__global__ void t_kernel(float *y) { y[0] = B; }\n" + GOOD)
    res = run(write(tmp_path, "t.cuh", template))
    assert res.returncode == 1
    assert "t.cuh: template kernel t_kernel has no '// nvrtc-check: instantiate" in res.stdout
    fixed = "// nvrtc-check: instantiate t_kernel<true>\n" + template
    assert nvrtc_check.static_problems(write(tmp_path, "t.cuh", fixed), fixed)[0] == []
    res = run(write(tmp_path, "h.cuh", "// nvrtc-check: hot scale_kernl\n" + GOOD))
    assert res.returncode == 1
    assert "h.cuh: 'nvrtc-check: hot scale_kernl' names no kernel of the file" in res.stdout
    res = run(write(tmp_path, "u.cuh", "// nvrtc-check: hto scale_kernel\n" + GOOD))
    assert res.returncode == 1 and "u.cuh:1: unknown directive" in res.stdout


def test_the_repository_device_sources_keep_the_rules():
    for name in sorted(os.listdir(DEVICE)):
        path = os.path.join(DEVICE, name)
        with open(path) as f:
            problems, _ = nvrtc_check.static_problems(path, f.read())
        assert problems == [], problems


def test_kernels_live_only_in_kernels_device(tmp_path):
    """A kernel defined in a host .cu file would escape the NVRTC check."""
    assert nvrtc_check.kernels_outside(os.path.join(ROOT, "kernels")) == []
    write(tmp_path, "norm.cu", '#include "common.cuh"\n\n' + GOOD)
    write(tmp_path, "launch.cuh", "/* under nvcc the macro is kernel<<<grid, block>>>; a\n"
          " * __global__ function is launched with it */\n")
    (problem,) = nvrtc_check.kernels_outside(str(tmp_path))
    assert "norm.cu:4: defines kernel scale_kernel in host code" in problem


def test_missing_nvrtc_is_exit_2_with_the_install_command(tmp_path):
    res = run(os.path.join(DEVICE, "pointwise.cuh"), "--wheels", str(tmp_path))
    assert res.returncode == 2
    assert "nvidia-cuda-nvrtc-cu12" in res.stdout and str(tmp_path) in res.stdout


# ---- compiling with NVRTC 12 -------------------------------------------------------------

def test_repository_kernels_compile_for_sm60_and_sm75():
    wheels = nvrtc_wheels()
    res = run("--wheels", wheels, "--archs", "60,75")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "NVRTC 12." in res.stdout
    # every kernel of the sources is in the table, for both architectures
    for name in ("gelu_forward_kernel", "layernorm_forward_kernel", "add_row_bias_kernel",
                 "add_channel_bias_kernel", "channel_partials_kernel"):
        row = next(l for l in res.stdout.splitlines() if l.strip().startswith(name))
        assert row.count("|") == 2, row
    assert "0 problem(s)" in res.stdout


def test_a_syntax_error_fails_naming_the_file(tmp_path):
    wheels = nvrtc_wheels()
    bad = write(tmp_path, "broken.cuh", GOOD.replace("y[i] *= a;", "y[i] *= a"))
    res = run(bad, "--wheels", wheels, "--archs", "75")
    assert res.returncode == 1
    assert "broken.cuh: NVRTC 12." in res.stdout and "cannot compile it for sm_75" in res.stdout
    assert 'broken.cuh(5): error: expected a ";"' in res.stdout, res.stdout


def test_a_host_only_call_fails_to_compile(tmp_path):
    """Host functions (here printf without its header) are errors, as NVRTC sees them."""
    wheels = nvrtc_wheels()
    bad = write(tmp_path, "hostcall.cuh", GOOD.replace("y[i] *= a;", "y[i] = (float)malloc(4);"))
    res = run(bad, "--wheels", wheels, "--archs", "60")
    assert res.returncode == 1
    assert "hostcall.cuh: NVRTC" in res.stdout and "malloc" in res.stdout


def test_a_hot_kernel_that_spills_fails_when_compiled(tmp_path):
    """64 registers at most (1024 threads per block) with 64 live accumulators:
    ptxas must spill, and the kernel is hot."""
    body = "\n".join(f"        acc[{i}] += x[(i + {i}) % n] * {i + 1}.0f;" for i in range(64))
    text = f"""// nvrtc-check: hot pressure_kernel
__global__ void __launch_bounds__(1024, 1) pressure_kernel(int n, const float *x, float *y) {{
    float acc[64];
#pragma unroll
    for (int k = 0; k < 64; k++)
        acc[k] = x[k];
    for (int i = threadIdx.x; i < n; i += 1024) {{
{body}
    }}
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < 64; k++)
        s += acc[k] * acc[(k * 7) % 64];
    y[threadIdx.x] = s;
}}
"""
    wheels = nvrtc_wheels()
    path = write(tmp_path, "pressure.cuh", text)
    res = run(path, "--wheels", wheels, "--archs", "75")
    assert res.returncode == 1, res.stdout
    assert "hot kernel pressure_kernel spills registers on sm_75" in res.stdout
    assert "pressure.cuh" in res.stdout
    cold = write(tmp_path, "pressure.cuh", text.replace("// nvrtc-check: hot pressure_kernel\n", ""))
    res = run(cold, "--wheels", wheels, "--archs", "75")
    assert res.returncode == 0, res.stdout
