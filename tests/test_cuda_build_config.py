"""setup.py's CUDA choices that need no toolkit: which architectures a build targets for
the nvcc at hand, and how ptxas's resource report is told apart from real compiler output.

setup.py runs setup() when executed, so its helpers are taken from its syntax tree and
run here alone (they use only re and subprocess).
"""
import ast
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPERS = ("nvcc_cubin_archs", "choose_archs", "split_resource_usage")


def load_helpers():
    with open(os.path.join(ROOT, "setup.py")) as f:
        tree = ast.parse(f.read())
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in HELPERS]
    assert sorted(f.name for f in funcs) == sorted(HELPERS)
    namespace = {"re": re, "subprocess": subprocess, "os": os}
    exec(compile(ast.Module(body=funcs, type_ignores=[]), "setup.py", "exec"), namespace)
    default = next(n for n in tree.body if isinstance(n, ast.Assign) and
                   getattr(n.targets[0], "id", "") == "DEFAULT_ARCHS")
    namespace["DEFAULT_ARCHS"] = ast.literal_eval(default.value)
    return namespace


setup_py = load_helpers()
choose_archs = setup_py["choose_archs"]
CUDA_13 = {"75", "80", "86", "87", "89", "90", "100", "103", "110", "120", "121"}
CUDA_12_8 = {"50", "52", "53", "60", "61", "62", "70", "72", "75", "80", "86", "87", "89",
             "90", "100", "101", "120"}


def test_default_archs_serve_kaggles_gpus_with_cuda_12_8():
    archs, dropped = choose_archs(setup_py["DEFAULT_ARCHS"], False, CUDA_12_8, "12.8")
    assert {"60", "75", "89", "120"} <= set(archs)  # P100, T4, L4, RTX Pro 6000
    assert dropped == []


def test_default_archs_drop_sm60_with_cuda_13():
    archs, dropped = choose_archs(setup_py["DEFAULT_ARCHS"], False, CUDA_13, "13.0")
    assert dropped == ["60"]
    assert "60" not in archs and {"75", "120"} <= set(archs)


def test_an_explicit_arch_nvcc_cannot_build_is_refused_by_name():
    with pytest.raises(SystemExit, match=r"asks for sm_60, which nvcc 13.0 cannot build"):
        choose_archs("60;75", True, CUDA_13, "13.0")
    assert choose_archs("sm_75, 80", True, CUDA_13, "13.0") == (["75", "80"], [])


def test_bad_arch_text_and_unknown_support():
    with pytest.raises(SystemExit, match="'7x' is not an architecture number"):
        choose_archs("75;sm_7x", True, CUDA_13, "13.0")
    # an nvcc that cannot list its targets: nothing is dropped, nvcc decides
    assert choose_archs("60;75", False, None, "10.2") == (["60", "75"], [])
    with pytest.raises(SystemExit, match="can build none"):
        choose_archs("60", False, {"75"}, "13.0")


def test_nvcc_cubin_archs_reads_the_list(tmp_path):
    fake = tmp_path / "nvcc"
    fake.write_text("#!/bin/sh\necho sm_75; echo sm_80; echo sm_120\n")
    fake.chmod(0o755)
    assert setup_py["nvcc_cubin_archs"](str(fake)) == {"75", "80", "120"}
    fake.write_text("#!/bin/sh\nexit 1\n")
    assert setup_py["nvcc_cubin_archs"](str(fake)) is None


def test_resource_lines_leave_the_log_and_warnings_stay():
    out = ("ptxas info    : Compiling entry function '_Z1kPf' for 'sm_75'\n"
           "ptxas info    : Function properties for _Z1kPf\n"
           "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
           "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
           "ptxas info    : Used 10 registers, 368 bytes cmem[0]\n"
           "kernels/x.cu(3): warning #177-D: variable \"v\" was declared but never referenced\n"
           "ptxas warning : Registers are spilled to local memory in function '_Z1kPf'\n")
    other, usage = setup_py["split_resource_usage"](out)
    assert other.splitlines() == out.splitlines()[5:]
    assert usage.splitlines() == out.splitlines()[:5]
