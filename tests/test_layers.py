"""The include rule of tools/check_layers.py: the sources keep it, and it catches a break."""
import importlib.util
import os
import subprocess
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tools", "check_layers.py")
_spec = importlib.util.spec_from_file_location("check_layers", SCRIPT)
check_layers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_layers)


def run_check(root):
    """The script's verdict on a tree, in-process (as its command line prints it)."""
    found = check_layers.violations(root)
    return types.SimpleNamespace(returncode=1 if found else 0, stdout="\n".join(found))


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_sources_keep_the_layer_order():
    res = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def small_tree(root):
    write(root, "csrc/core/cx.h", "#include <stddef.h>\n")
    write(root, "csrc/ops/ops.h", '#include "../core/cx.h"\n')
    write(root, "csrc/model/cod.h", '#include "../ops/ops.h"\n')
    write(root, "csrc/data/data.h", '#include "../core/cx.h"\n')
    write(root, "csrc/python/binding.h", '#include "../core/cx.h"\n')
    write(root, "csrc/python/metrics_binding.c", '#include "binding.h"\n')
    write(root, "csrc/python/cod_types.c", '#include "binding.h"\n#include "../model/cod.h"\n')
    write(root, "kernels/common.cuh", '#include "ops/ops.h"\n')
    write(root, "kernels/device/helpers.cuh", "#define CX_HELPERS 1\n")
    write(root, "kernels/device/norm.cuh", '#include "helpers.cuh"\n')
    write(root, "kernels/norm.cu", '#include "common.cuh"\n#include "device/norm.cuh"\n')


def test_a_clean_tree_passes(tmp_path):
    small_tree(str(tmp_path))
    res = run_check(str(tmp_path))
    assert res.returncode == 0, res.stdout


def test_core_including_a_higher_layer_fails(tmp_path):
    small_tree(str(tmp_path))
    write(str(tmp_path), "csrc/core/cx.h", '#include "../ops/ops.h"\n')
    res = subprocess.run([sys.executable, SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "csrc/core/cx.h (core) reaches ops" in res.stdout


def test_data_reaching_the_model_through_a_header_fails(tmp_path):
    small_tree(str(tmp_path))
    write(str(tmp_path), "csrc/data/augment.c", '#include "data.h"\n#include "../model/cod.h"\n')
    res = run_check(str(tmp_path))
    assert res.returncode == 1
    assert "csrc/data/augment.c (data) reaches model" in res.stdout


def test_kernels_reaching_test_code_fails(tmp_path):
    small_tree(str(tmp_path))
    write(str(tmp_path), "csrc/testing/op_call.h", '#include "../core/cx.h"\n')
    write(str(tmp_path), "csrc/ops/ops.h", '#include "../core/cx.h"\n#include "../testing/op_call.h"\n')
    res = run_check(str(tmp_path))
    assert res.returncode == 1
    assert "kernels/common.cuh (kernels) reaches testing" in res.stdout
    assert "csrc/ops/ops.h (ops) reaches testing" in res.stdout


def test_device_code_reaching_a_host_header_fails(tmp_path):
    """kernels/device/ must stay compilable alone by NVRTC: no host header of ours."""
    small_tree(str(tmp_path))
    write(str(tmp_path), "kernels/device/norm.cuh", '#include "helpers.cuh"\n#include "../common.cuh"\n')
    res = run_check(str(tmp_path))
    assert res.returncode == 1
    assert "kernels/device/norm.cuh (kernels/device) reaches kernels" in res.stdout
    write(str(tmp_path), "kernels/device/norm.cuh", '#include "ops/ops.h"\n')
    res = run_check(str(tmp_path))
    assert res.returncode == 1
    assert "kernels/device/norm.cuh (kernels/device) reaches ops" in res.stdout


def test_model_free_binding_reaching_the_model_fails(tmp_path):
    small_tree(str(tmp_path))
    write(str(tmp_path), "csrc/python/binding.h", '#include "../core/cx.h"\n#include "../model/cod.h"\n')
    res = run_check(str(tmp_path))
    assert res.returncode == 1
    assert "csrc/python/metrics_binding.c (python) reaches model" in res.stdout
    # cod_types.c may include the model: only the model-free bindings are reported
    assert "cod_types.c" not in res.stdout


def test_only_module_c_creates_the_module():
    roots = []
    for name in sorted(os.listdir(os.path.join(ROOT, "csrc", "python"))):
        with open(os.path.join(ROOT, "csrc", "python", name)) as f:
            text = f.read()
        if "PyModule_Create" in text or "PyMODINIT_FUNC" in text:
            roots.append(name)
    assert roots == ["module.c"]


def test_kernels_may_include_the_emulator_but_not_the_reverse(tmp_path):
    small_tree(str(tmp_path))
    write(str(tmp_path), "csrc/emu/emu_cuda.h", "#include <stddef.h>\n")
    write(str(tmp_path), "kernels/launch.cuh", '#include "emu/emu_cuda.h"\n')
    assert run_check(str(tmp_path)).returncode == 0
    write(str(tmp_path), "csrc/emu/emu_sched.cc", '#include "emu_cuda.h"\n#include "../ops/ops.h"\n')
    res = run_check(str(tmp_path))
    assert res.returncode == 1
    assert "csrc/emu/emu_sched.cc (emu) reaches ops" in res.stdout
