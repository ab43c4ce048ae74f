"""The build: which variant is installed, what each shared object links, that
`import codext` loads no CUDA library, and that the shipped codext._C holds no test code.

Works on both variants. CODEXT_EXPECT_CUDA=0|1 (set by CI) says which one must be
installed; without it the test checks whichever is there for consistency.
CODEXT_SHIPPED_BUILD=<dir> (tools/check_shipped.sh sets it) names a directory holding a
shipped build's codext package (built without CODEXT_TEST_BUILD), checked the same way.
"""
import os
import re
import struct
import subprocess
import sys

import pytest

import codext
from codext import _C

PACKAGE_DIR = os.path.dirname(os.path.abspath(_C.__file__))
# Test-only bindings: they live in codext._testing (test builds) and never in codext._C.
TEST_ONLY_NAMES = [
    "op", "op_names", "op_info", "backend_op_names", "table_ops", "backend_supports", "bind_model",
    "adamw_step", "optim_classify", "schedule_lr", "lr_plan", "clip_grad_norm", "grads_scale",
    "ema_update", "ema_decay_at", "train_state_save", "train_state_load",
    "test_alloc_fail_at", "test_alloc_count", "test_alloc_live", "test_scratch_release", "_json_parse",
    "augment_params", "metrics_edt", "hmac_sha256", "_json_string_poke", "_sanitized",
]
CUDA_LIBRARY = os.path.join(PACKAGE_DIR, "libcodext_cuda.so")
# Basenames of CUDA libraries that must never be in the notebook process or linked by _C.
CUDA_LIB_PATTERN = re.compile(r"^lib(cuda|cudart|cudnn\w*|nccl|cublas\w*|codext_cuda)\.so")


def expected_cuda():
    value = os.environ.get("CODEXT_EXPECT_CUDA")
    if value is None:
        return os.path.exists(CUDA_LIBRARY)
    assert value in ("0", "1"), f"CODEXT_EXPECT_CUDA must be 0 or 1, got {value!r}"
    return value == "1"


# ---- a small ELF64 reader: the dynamic section and the exported symbols -------------

def _sections(data):
    assert data[:4] == b"\x7fELF", "not an ELF file"
    assert data[4] == 2 and data[5] == 1, "expected a 64-bit little-endian ELF"
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = []
    for i in range(shnum):
        name, kind, flags, addr, offset, size, link, info, align, entsize = struct.unpack_from(
            "<IIQQQQIIQQ", data, shoff + i * shentsize)
        sections.append(dict(type=kind, offset=offset, size=size, link=link, entsize=entsize))
    return sections


def _string(data, section, index):
    start = section["offset"] + index
    return data[start:data.index(b"\0", start)].decode()


def elf_dynamic(path):
    """(NEEDED sonames, RUNPATH/RPATH entries, exported defined function names)."""
    with open(path, "rb") as f:
        data = f.read()
    sections = _sections(data)
    needed, runpath, exported = [], [], []
    for sec in sections:
        if sec["type"] == 6:  # SHT_DYNAMIC
            strtab = sections[sec["link"]]
            for off in range(sec["offset"], sec["offset"] + sec["size"], 16):
                tag, value = struct.unpack_from("<qQ", data, off)
                if tag == 0:
                    break
                if tag == 1:  # DT_NEEDED
                    needed.append(_string(data, strtab, value))
                elif tag in (15, 29):  # DT_RPATH, DT_RUNPATH
                    runpath += _string(data, strtab, value).split(":")
        elif sec["type"] == 11:  # SHT_DYNSYM
            strtab = sections[sec["link"]]
            for off in range(sec["offset"], sec["offset"] + sec["size"], 24):
                name, info, other, shndx, value, size = struct.unpack_from("<IBBHQQ", data, off)
                bind, kind, visibility = info >> 4, info & 0xF, other & 3
                if shndx != 0 and bind in (1, 2) and kind == 2 and visibility == 0:
                    exported.append(_string(data, strtab, name))
    return needed, runpath, exported


def c_extension_path():
    return os.path.abspath(_C.__file__)


# ---- the tests -----------------------------------------------------------------------

def test_installed_variant_is_the_expected_one():
    info = codext.build_info()
    want = expected_cuda()
    assert info["cuda"] is want, f"build_info()['cuda'] is {info['cuda']}, expected {want}: {info}"
    assert os.path.exists(CUDA_LIBRARY) is want, (
        f"{CUDA_LIBRARY} {'is missing' if want else 'exists'} in a "
        f"{'CUDA' if want else 'CPU-only'} build")
    if want:
        assert re.fullmatch(r"\d+\.\d+", info["cuda_version"]), info
        assert info["cudnn_version"].startswith("9."), info
        assert re.fullmatch(r"2\.\d+\.\d+", info["nccl_version"]), info
        assert info["cuda_archs"] and all(re.fullmatch(r"sm_\d+", a) for a in info["cuda_archs"]), info
    else:
        assert info["cuda_version"] is None and info["cudnn_version"] is None, info
        assert info["nccl_version"] is None and info["cuda_archs"] == [], info


def test_c_extension_links_no_cuda_library():
    needed, runpath, _ = elf_dynamic(c_extension_path())
    cuda = [n for n in needed if CUDA_LIB_PATTERN.match(n)]
    assert not cuda, f"codext._C must not link CUDA libraries, it needs {cuda}"
    assert not any("cuda" in p.lower() for p in runpath), f"_C has a CUDA rpath: {runpath}"


def test_import_loads_no_cuda_library():
    code = ("import codext, os\n"
            "codext.build_info()\n"
            "names = sorted({os.path.basename(l.split()[-1]) for l in open('/proc/self/maps') "
            "if len(l.split()) >= 6})\n"
            "print('\\n'.join(names))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=os.path.dirname(PACKAGE_DIR)))
    mapped = out.stdout.split()
    assert any(name.startswith("_C.") for name in mapped), "the probe did not load codext._C"
    cuda = [n for n in mapped if CUDA_LIB_PATTERN.match(n)]
    assert not cuda, f"`import codext` loaded CUDA libraries: {cuda}"


@pytest.mark.skipif(not os.path.exists(CUDA_LIBRARY), reason="CPU-only build: no libcodext_cuda.so")
def test_cuda_library_links_versioned_sonames_and_no_driver():
    needed, runpath, exported = elf_dynamic(CUDA_LIBRARY)
    assert not [n for n in needed if n.startswith("libcuda.so")], (
        f"libcodext_cuda.so must not link the driver (libcuda.so.1): {needed}")
    for lib in ("cudart", "cublas", "cudnn"):
        names = [n for n in needed if n.startswith(f"lib{lib}.so")]
        assert names, f"libcodext_cuda.so does not link lib{lib}: {needed}"
        assert all(re.fullmatch(rf"lib{lib}\.so\.\d+", n) for n in names), (
            f"lib{lib} must be linked by its versioned soname: {names}")
    assert not [n for n in needed if re.fullmatch(r"lib\w+\.so", n)], f"unversioned sonames: {needed}"
    assert "$ORIGIN" in runpath, f"no $ORIGIN in the rpath: {runpath}"
    assert exported == ["cx_cuda_get_api"], f"the library should export only its entry point: {exported}"


# ---- the loader's reasons (needs the _C binding cuda_backend_available) --------------

needs_binding = pytest.mark.skipif(not hasattr(_C, "cuda_backend_available"),
                                   reason="codext._C has no cuda_backend_available() yet")


def loader_probe(env_extra):
    """cuda_backend_available() in a fresh process (the loader caches its first answer)."""
    code = "from codext import _C\nok, why = _C.cuda_backend_available()\nprint(ok)\nprint(why)\n"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(PACKAGE_DIR), **env_extra)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=env)
    ok, why = out.stdout.split("\n", 1)
    return ok == "True", why.strip()


@needs_binding
def test_loader_reason_for_this_build():
    ok, why = loader_probe({})
    assert why, "the reason must never be empty"
    if not os.path.exists(CUDA_LIBRARY):
        assert not ok and "built without CUDA" in why, why
    elif not ok:
        # A CUDA build on a machine without a usable GPU: the library loaded, the device
        # query failed and says why.
        assert "built without CUDA" not in why and "cannot load" not in why, why
        assert "cudaGetDeviceCount" in why or "no CUDA device" in why, why
    else:
        assert "CUDA device" in why, why


@needs_binding
@pytest.mark.parametrize("case", ["missing", "not_elf", "not_codext"])
def test_loader_reasons_for_bad_libraries(case, tmp_path):
    if case == "missing":
        path, expect = str(tmp_path / "nothing.so"), "does not exist"
    elif case == "not_elf":
        path, expect = str(tmp_path / "text.so"), "cannot load"
        with open(path, "w") as f:
            f.write("this is not a shared library\n")
    else:
        path, expect = c_extension_path(), "not a codext CUDA library"
    ok, why = loader_probe({"CODEXT_CUDA_LIBRARY": path})
    assert not ok and expect in why and path in why, why


@needs_binding
def test_loader_takes_a_library_the_system_lacks_from_pip_wheel_folders(tmp_path):
    """A CUDA library whose dependency (here a stand-in, libcxfakedep.so.9) is on no
    search path: the loader names it and the wheel folders it searched; with a folder of
    CODEXT_NVIDIA_LIB_DIRS holding it (pip's nvidia/<pkg>/lib layout), the dependency is
    preloaded and loading gets past it (to the ABI check, which this stand-in fails)."""
    import shutil
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        pytest.skip("no C compiler")
    wheel_lib = tmp_path / "site" / "nvidia" / "fakedep" / "lib"
    wheel_lib.mkdir(parents=True)
    dep = wheel_lib / "libcxfakedep.so.9"
    (tmp_path / "dep.c").write_text("int cx_fake_dep(void) { return 9; }\n")
    (tmp_path / "lib.c").write_text("int cx_fake_dep(void);\nint cx_fake_user(void) { return cx_fake_dep(); }\n")
    subprocess.run([cc, "-shared", "-fPIC", "-Wl,-soname,libcxfakedep.so.9", "-o", str(dep),
                    str(tmp_path / "dep.c")], check=True)
    lib = tmp_path / "libcodext_cuda_standin.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(tmp_path / "lib.c"),
                    "-L" + str(wheel_lib), "-l:libcxfakedep.so.9"], check=True)
    env = {"CODEXT_CUDA_LIBRARY": str(lib), "CODEXT_NVIDIA_LIB_DIRS": ""}
    ok, why = loader_probe(env)
    assert not ok and "libcxfakedep.so.9: cannot open shared object file" in why, why
    assert "wheel folders searched: (none)" in why, why
    ok, why = loader_probe(dict(env, CODEXT_NVIDIA_LIB_DIRS=f"{tmp_path}/nowhere:{wheel_lib}"))
    assert not ok and "cannot open shared object file" not in why, why
    assert "has no cx_cuda_get_api" in why and str(lib) in why, why


def test_codext_lists_the_nvidia_wheel_folders_on_its_path(tmp_path):
    (tmp_path / "nvidia" / "cudnn" / "lib").mkdir(parents=True)
    (tmp_path / "nvidia" / "cublas" / "lib").mkdir(parents=True)
    (tmp_path / "nvidia" / "cudnn" / "include").mkdir(parents=True)
    code = "import os, codext; print(os.environ['CODEXT_NVIDIA_LIB_DIRS'])"
    env = {k: v for k, v in os.environ.items() if k != "CODEXT_NVIDIA_LIB_DIRS"}
    env["PYTHONPATH"] = os.path.dirname(PACKAGE_DIR) + os.pathsep + str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env).stdout.strip().split(":")
    mine = [d for d in out if d.startswith(str(tmp_path))]
    assert mine == [str(tmp_path / "nvidia" / "cublas" / "lib"), str(tmp_path / "nvidia" / "cudnn" / "lib")], out


def test_op_runner_rejects_bad_names():
    import numpy as np
    from testing_module import testing
    x = np.ones(3, np.float32)
    assert "gelu" in testing.op_names() and "conv2d" in testing.op_names()
    with pytest.raises(KeyError, match="no op-test entry"):
        testing.op("no_such_op", [x], backend="cpu")
    with pytest.raises(ValueError, match="backend must be"):
        testing.op("gelu", [x], backend="tpu")


# ---- no test code in the shipped _C ------------------------------------------------------

# 'testing': every codext._testing in the probed package's folder(s). (find_spec alone would
# also see an editable install's finder, which maps codext._testing to another tree.)
SHIPPED_PROBE = (
    "import glob, json, os, codext\n"
    "from codext import _C\n"
    "found = [f for d in codext.__path__ for f in glob.glob(os.path.join(d, '_testing*'))]\n"
    "print(json.dumps({'file': _C.__file__, 'names': sorted(dir(_C)), 'testing': found}))\n")


def probe_package(parent):
    """What the codext package under `parent` holds, seen from a fresh process."""
    import json
    out = subprocess.run([sys.executable, "-c", SHIPPED_PROBE], capture_output=True, text=True, check=True,
                         cwd=parent, env=dict(os.environ, PYTHONPATH=parent))
    return json.loads(out.stdout)


def assert_no_test_code(names, c_file):
    present = [n for n in TEST_ONLY_NAMES if n in names]
    assert not present, f"{c_file} exports test-only bindings: {present}"


def test_c_extension_has_no_test_only_bindings():
    """In every build the test-only bindings live in codext._testing, never in _C."""
    assert_no_test_code(dir(_C), _C.__file__)


def test_c_extension_exports_only_its_init_unless_a_test_build():
    """A build without codext._testing is a shipped build: _C exports PyInit__C alone (a
    test build leaves the engine's symbols visible for _testing)."""
    _, _, exported = elf_dynamic(c_extension_path())
    testing_built = any(name.startswith("_testing.") for name in os.listdir(PACKAGE_DIR))
    if testing_built:
        assert "PyInit__C" in exported and "cx_backend_cpu" in exported, exported[:20]
    else:
        assert exported == ["PyInit__C"], exported


@pytest.mark.skipif(not os.environ.get("CODEXT_SHIPPED_BUILD"),
                    reason="CODEXT_SHIPPED_BUILD names no shipped build (tools/check_shipped.sh sets it)")
def test_shipped_build_has_no_test_code():
    parent = os.path.abspath(os.environ["CODEXT_SHIPPED_BUILD"])
    seen = probe_package(parent)
    assert seen["file"].startswith(parent), f"the probe imported {seen['file']}, not the build in {parent}"
    assert_no_test_code(seen["names"], seen["file"])
    assert not seen["testing"], f"a shipped build has codext._testing: {seen['testing']}"
    _, _, exported = elf_dynamic(seen["file"])
    assert exported == ["PyInit__C"], f"the shipped _C exports {exported[:20]}"
