"""Builds test programs against the CUDA emulator (csrc/emu, docs/emulator.md) with
AddressSanitizer and UBSan: shared by tests/test_emu.py, tests/test_emu_kernels.py and
tests/test_emu_backend.py.

Also builds the emulated CUDA library (build_cuda_library): kernels/*.cu, the whole CUDA
backend as nvcc builds it into libcodext_cuda.so, compiled as C++ against the emulator
with its cuBLAS and cuDNN (csrc/emu), which codext._C opens through CODEXT_CUDA_LIBRARY
like the real one. As a script it builds that library and runs tests/gpu against it:

    python3 tests/emu_build.py [--cxx clang++|g++] [--no-sanitize] [--out DIR] [-- PYTEST ARGS]
"""
import concurrent.futures
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMU = os.path.join(ROOT, "csrc", "emu")
KERNELS = os.path.join(ROOT, "kernels")
CASES = os.path.join(ROOT, "tests", "emu")
FLAGS = ["-x", "c++", "-std=c++17", "-DCX_EMU", "-Wall", "-Wextra", "-Werror", "-g", "-O1",
         "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         "-I", os.path.join(ROOT, "csrc"), "-I", os.path.join(ROOT, "kernels"),
         "-I", os.path.join(EMU, "include")]  # <cuda_runtime.h>, <cuda_fp16.h>, ... -> emulator
# What ASan prints once per process about ucontext: expected, not a finding.
UCONTEXT_NOTE = "ASan doesn't fully support makecontext/swapcontext"


def clean_env(**overrides):
    """The environment for compilers and emulator binaries: without a preloaded sanitizer
    runtime or its options (CI's sanitizer pass preloads gcc's libasan into Python; a
    clang++-built binary carries its own runtime and must not get a second one)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS")}
    env.update(overrides)
    return env


def compilers():
    """The C++ compilers to build with: CX_EMU_CXX alone when set, else clang++ and g++
    (those installed)."""
    chosen = os.environ.get("CX_EMU_CXX")
    names = [chosen] if chosen else ["clang++", "g++"]
    return [name for name in names if shutil.which(name)]


# the emulated cuBLAS and cuDNN: only programs that call them need these
LIBRARY_SOURCES = ("emu_cublas.cc", "emu_cudnn.cc")


def emulator_sources(libraries=True):
    return sorted(os.path.join(EMU, n) for n in os.listdir(EMU)
                  if n.endswith(".cc") and (libraries or n not in LIBRARY_SOURCES))


def build(compiler, out_dir, sources, name, extra_flags=(), all_flags=(), libraries=True):
    """Compiles the emulator (with its cuBLAS and cuDNN unless libraries is False) and
    `sources` (two at a time) and links out_dir/name; extra_flags go to `sources` only,
    all_flags to every file."""
    emulator = emulator_sources(libraries)

    def compile_one(src):
        obj = os.path.join(out_dir, os.path.basename(src) + ".o")
        flags = FLAGS + list(all_flags) + ([] if src in emulator else list(extra_flags))
        res = subprocess.run(["nice", compiler] + flags + ["-c", src, "-o", obj],
                             capture_output=True, text=True, env=clean_env())
        assert res.returncode == 0, f"{compiler} {src}:\n{res.stderr}"
        return obj

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        objects = list(pool.map(compile_one, emulator + list(sources)))
    binary = os.path.join(out_dir, name)
    res = subprocess.run([compiler, "-fsanitize=address,undefined", "-o", binary] + objects,
                         capture_output=True, text=True, env=clean_env())
    assert res.returncode == 0, res.stderr
    return binary


def sanitizer_findings(stderr):
    """stderr without ASan's ucontext note: empty when the sanitizers found nothing."""
    text = stderr.replace(UCONTEXT_NOTE, "")
    return text if ("runtime error" in text or "Sanitizer" in text) else ""


# ---- the emulated CUDA library -------------------------------------------------------------

SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def _include_closure(path, search):
    """path and every file it reaches through quoted #include lines (resolved beside the
    including file, then in `search`), in a fixed order."""
    seen, stack = [], [path]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.append(current)
        with open(current, encoding="utf-8", errors="replace") as f:
            names = INCLUDE.findall(f.read())
        for name in names:
            for base in [os.path.dirname(current)] + list(search):
                candidate = os.path.normpath(os.path.join(base, name))
                if os.path.isfile(candidate):
                    stack.append(candidate)
                    break
    return sorted(seen)


def _emulator_headers():
    return sorted(os.path.join(d, n) for d, _, names in os.walk(EMU) for n in names if n.endswith(".h"))


def sanitizer_preload(compiler):
    """What LD_PRELOAD needs for a Python process to load a sanitized library built by
    `compiler`: its ASan runtime (a process can have one, and it must come first), and
    libstdc++ (ASan's __cxa_throw interceptor must find it at start-up; CI preloads it
    for the same reason)."""
    if "clang" in os.path.basename(compiler):
        runtime = f"libclang_rt.asan-{platform.machine()}.so"
    else:
        runtime = "libasan.so"
    paths = []
    for cxx, name in ((compiler, runtime), ("g++" if shutil.which("g++") else compiler, "libstdc++.so")):
        out = subprocess.run([cxx, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
        assert os.path.isabs(out) and os.path.exists(out), f"{cxx} does not know where {name} is"
        paths.append(out)
    return paths


def mutated_kernels(dest, mutations):
    """A copy of kernels/ in `dest` with each (file, old, new) of `mutations` applied (the
    tests' planted bugs); AssertionError when a file no longer holds `old` exactly once.
    Returns dest."""
    shutil.copytree(KERNELS, dest)
    for name, old, new in mutations:
        path = os.path.join(dest, name)
        with open(path) as f:
            text = f.read()
        assert text.count(old) == 1, f"kernels/{name} no longer holds the text a mutation replaces: {old!r}"
        with open(path, "w") as f:
            f.write(text.replace(old, new))
    return dest


def library_compiler():
    """The compiler for the emulated libcodext_cuda, or None. Under CI's sanitizer pass this
    Python runs with gcc's ASan runtime and imports a _C instrumented by gcc: a process holds
    one ASan runtime, so the library is built by g++ to use it too."""
    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        return shutil.which("g++")
    found = compilers()
    return found[0] if found else None


def build_cuda_library(compiler, out_dir, kernels_dir=KERNELS, sanitize=True, cache_dir=None):
    """The emulated libcodext_cuda.so: every kernels_dir/*.cu (host code and the device code
    it includes) and the emulator with its cuBLAS and cuDNN (csrc/emu/*.cc), compiled as
    C++ with -DCX_EMU (and ASan + UBSan unless sanitize is False), linked like the real
    library (hidden visibility: only cx_cuda_get_api is exported; --no-undefined).

    Objects are kept in cache_dir (default out_dir) under a hash of the compiler, the flags
    and the text of each source and of what it includes, so a second build that changes
    one file (a mutation planted in a copy of kernels/) recompiles only the sources that
    reach it. Returns the library's path. A sanitized library loads only into a process
    with the sanitizer runtime preloaded (sanitizer_preload)."""
    cache_dir = cache_dir or out_dir
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(cache_dir, exist_ok=True)
    flags = [f for f in FLAGS if not f.startswith("-fsanitize") and f != "-fno-sanitize-recover=all"]
    flags += (SANITIZE if sanitize else []) + ["-fPIC", "-fvisibility=hidden"]
    # host warnings nvcc does not give for kernels/: threadIdx.x < int in device code, the
    # parameters of backend_cuda.cu's stubs for ops it does not implement
    kernel_flags = ["-Wno-sign-compare", "-Wno-unused-parameter"]
    kernel_sources = sorted(os.path.join(kernels_dir, n) for n in os.listdir(kernels_dir) if n.endswith(".cu"))
    assert kernel_sources, f"no .cu file in {kernels_dir}"
    search = [kernels_dir, os.path.join(ROOT, "csrc")]
    common = b"".join(open(h, "rb").read() for h in _emulator_headers())

    def compile_one(src):
        src_flags = flags + (kernel_flags if src in kernel_sources else [])
        key = hashlib.sha256("\0".join([compiler] + src_flags).encode() + common)
        for path in _include_closure(src, search):
            key.update(path.encode() if not path.startswith(kernels_dir) else os.path.relpath(path, kernels_dir).encode())
            with open(path, "rb") as f:
                key.update(f.read())
        obj = os.path.join(cache_dir, f"{os.path.basename(src)}-{key.hexdigest()[:16]}.o")
        if not os.path.exists(obj):
            res = subprocess.run(["nice", compiler] + src_flags + ["-c", src, "-o", obj + ".part"],
                                 capture_output=True, text=True, env=clean_env())
            assert res.returncode == 0, f"{compiler} {src}:\n{res.stderr}"
            os.replace(obj + ".part", obj)
        return obj

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        objects = list(pool.map(compile_one, emulator_sources() + kernel_sources))
    lib = os.path.join(out_dir, "libcodext_cuda.so")
    link = [compiler, "-shared", "-o", lib] + objects + ["-Wl,--no-undefined"]
    if sanitize:
        link[1:1] = SANITIZE + (["-shared-libasan"] if "clang" in os.path.basename(compiler) else [])
    res = subprocess.run(link, capture_output=True, text=True, env=clean_env())
    assert res.returncode == 0, f"{' '.join(link)}:\n{res.stderr}"
    return lib


def emulated_env(lib, compiler, sanitize=True, **overrides):
    """The environment for a process that runs tests/gpu on the emulated library `lib`:
    tests/gpu/conftest.py points CODEXT_CUDA_LIBRARY at it and insists that the backend is
    the emulator's; a sanitized library gets its runtime preloaded."""
    env = clean_env()
    env.pop("CODEXT_CUDA_LIBRARY", None)
    env.pop("CODEXT_GPU_TEST_BACKEND", None)
    env["CODEXT_CUDA_EMULATED"] = lib
    if sanitize:
        env["LD_PRELOAD"] = " ".join(sanitizer_preload(compiler))
        # Python's own allocations are not freed at exit: leak checking would only report them
        env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0:halt_on_error=1"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    env.update(overrides)
    return env


def run_emulated_child(code, library, compiler, out, timeout=540, **overrides):
    """Runs `code` (a Python script that writes JSON to sys.argv[1]) in a child on the emulated
    library `library` (emulated_env, with the tree on PYTHONPATH and CODEXT_CUDA_LIBRARY set
    before codext loads it); returns the JSON. The child's output is in the failure."""
    import json
    env = emulated_env(library, compiler, CODEXT_CUDA_LIBRARY=library, **overrides)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0 and os.path.exists(out), (res.stdout + res.stderr)[-6000:]
    with open(out) as f:
        return json.load(f)


def main(argv):
    import argparse
    parser = argparse.ArgumentParser(description="Build the emulated libcodext_cuda.so and run tests/gpu on it.")
    parser.add_argument("--cxx", default=None, help="clang++ (default when installed) or g++")
    parser.add_argument("--no-sanitize", action="store_true", help="build without ASan and UBSan")
    parser.add_argument("--out", default=os.path.join(ROOT, "build", "emu-cuda"))
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("pytest_args", nargs="*", help="after --: arguments for pytest (default: tests/gpu)")
    args = parser.parse_args(argv)
    found = compilers()
    compiler = args.cxx or (found[0] if found else None)
    if not compiler:
        sys.exit("no C++ compiler (clang++ or g++)")
    lib = build_cuda_library(compiler, args.out, sanitize=not args.no_sanitize)
    print(f"built {lib} with {compiler}{'' if args.no_sanitize else ' (ASan + UBSan)'}", flush=True)
    if args.build_only:
        return 0
    env = emulated_env(lib, compiler, sanitize=not args.no_sanitize)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"] + (args.pytest_args or ["tests/gpu"])
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
