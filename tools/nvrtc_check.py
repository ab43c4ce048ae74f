#!/usr/bin/env python3
"""Compile-checks the device-only CUDA sources (kernels/device/) with NVRTC 12.

Kaggle builds codext with CUDA 12.8; this machine and CI have CUDA 13, whose nvcc no
longer targets sm_60. PyPI has no CUDA 12 nvcc but has CUDA 12 NVRTC, so CI compiles
every device source with it, for every architecture we serve, as run-time compilation
would (docs/cuda-build.md). For each file:
  1. the rules that keep it NVRTC-clean, read from the text: it includes only files of
     its own folder and CUDA's device headers (ALLOWED_SYSTEM_HEADERS); every template
     kernel is instantiated by a `// nvrtc-check: instantiate NAME<ARGS>` line; every
     name on a `// nvrtc-check: hot` line is a kernel of the file; and (when run on
     kernels/device) no kernel is defined in the host files of kernels/;
  2. NVRTC compiles it alone to a cubin for each architecture, with ptxas's resource
     report (--ptxas-options=-v); an error or a warning fails the check;
  3. the report's limits (tools/ptxas_usage.py): no spills in hot kernels, static shared
     memory within T4's 48 KiB per block.
A table of registers, spills, stack and shared memory per kernel and architecture is
printed; the exit status is 1 when anything failed.

NVRTC comes from PyPI's wheels, installed beside nothing else (CI keeps them in a cache):
    python3 -m pip install --target DIR "nvidia-cuda-nvrtc-cu12==12.8.*" \\
        "nvidia-cuda-runtime-cu12==12.8.*"
    python3 tools/nvrtc_check.py --wheels DIR
The runtime wheel supplies the device headers NVRTC lacks (cuda_fp16.h, cuda_bf16.h).
Without --wheels: $CODEXT_NVRTC_WHEELS, then the nvidia/ folders on sys.path.

Exit status: 0 all passed; 1 a check failed; 2 NVRTC 12 was not found.
"""
import argparse
import ctypes
import glob
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ptxas_usage  # noqa: E402  (tools/ptxas_usage.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SOURCES = os.path.join(ROOT, "kernels", "device")
# P100, T4, A100, L4, RTX Pro 6000 (Kaggle's GPUs and the A100 of most clouds)
DEFAULT_ARCHS = "60,75,80,89,120"
NVRTC_MAJOR = 12
NVRTC_SONAME = "libnvrtc.so.12"
# CUDA's device headers a device source may include (NVRTC's own built-ins, or the
# runtime wheel's include/): no host library, no C library.
ALLOWED_SYSTEM_HEADERS = {
    "cuda_fp16.h", "cuda_bf16.h", "cuda_fp8.h", "math_constants.h", "mma.h",
    "cooperative_groups.h", "cooperative_groups/reduce.h", "cuda_pipeline.h",
}
# NVRTC 12.8 says this for sm_60 (still compiled and supported): not a problem of ours.
KNOWN_WARNINGS = ("Architectures prior to '<compute/sm>_75' are deprecated",)
# nvcc's flags in setup.py that NVRTC shares (NVRTC has no --expt-relaxed-constexpr: device
# code must not call host constexpr functions), and ptxas's resource report
NVRTC_OPTIONS = ["-std=c++17", "-lineinfo", "--ptxas-options=-v"]

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)
KERNEL = re.compile(r"__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+"
                    r"(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(")
TEMPLATE_KERNEL = re.compile(r"template\s*<[^>]*>\s*__global__\s+(?:__launch_bounds__\s*"
                             r"\([^)]*\)\s*)?void\s+(\w+)")


def display(path):
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


# ---- 1. the rules read from the text -----------------------------------------------

def static_problems(path, text):
    """Problems of one device source that need no compiler; also its directives."""
    name = display(path)
    problems = []
    folder = os.path.dirname(os.path.abspath(path))
    for m in INCLUDE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        header = m.group(2)
        if m.group(1) == '"':
            target = os.path.normpath(os.path.join(folder, header))
            if os.path.dirname(target) != folder or not os.path.isfile(target):
                problems.append(f"{name}:{line}: includes \"{header}\", which is not a file of "
                                f"{display(folder)}/: a device source includes only its own "
                                "folder's files and CUDA's device headers")
        elif header not in ALLOWED_SYSTEM_HEADERS:
            problems.append(f"{name}:{line}: includes <{header}>, a host header: a device "
                            "source may include only CUDA's device headers ("
                            + ", ".join(sorted(ALLOWED_SYSTEM_HEADERS)) + ")")
    found, directive_problems = ptxas_usage.directives(text, name)
    problems += directive_problems
    kernels = set(KERNEL.findall(text)) | set(TEMPLATE_KERNEL.findall(text))
    instantiated = {e.split("<", 1)[0] for e in found["instantiate"]}
    for kernel in sorted(set(TEMPLATE_KERNEL.findall(text)) - instantiated):
        problems.append(f"{name}: template kernel {kernel} has no '// nvrtc-check: "
                        f"instantiate {kernel}<...>' line, so no check would compile it")
    for expr in found["instantiate"]:
        if expr.split("<", 1)[0] not in kernels:
            problems.append(f"{name}: 'nvrtc-check: instantiate {expr}' names no kernel of "
                            "the file")
    for hot in sorted(found["hot"] - kernels):
        problems.append(f"{name}: 'nvrtc-check: hot {hot}' names no kernel of the file")
    return problems, found


def kernels_outside(host_dir):
    """Problems for each kernel defined in the host files (the .cu and .cuh files directly
    in host_dir, e.g. kernels/): kernels belong in the device folder, where this check
    compiles them."""
    problems = []
    for path in sorted(glob.glob(os.path.join(host_dir, "*.cu")) +
                       glob.glob(os.path.join(host_dir, "*.cuh"))):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for m in KERNEL.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            problems.append(f"{display(path)}:{line}: defines kernel {m.group(1)} in host code: "
                            "kernels go in kernels/device/ (device-only, checked by NVRTC)")
    return problems


# ---- 2. NVRTC ------------------------------------------------------------------------

def find_wheels(explicit):
    """(libnvrtc.so.12 path, runtime include dir or None), or (None, reason)."""
    candidates = []
    if explicit:
        candidates.append(explicit)
    elif os.environ.get("CODEXT_NVRTC_WHEELS"):
        candidates.append(os.environ["CODEXT_NVRTC_WHEELS"])
    else:
        candidates += [p for p in sys.path if p and os.path.isdir(p)]
    for base in candidates:
        lib = os.path.join(base, "nvidia", "cuda_nvrtc", "lib", NVRTC_SONAME)
        if os.path.isfile(lib):
            include = os.path.join(base, "nvidia", "cuda_runtime", "include")
            return lib, include if os.path.isdir(include) else None
    where = (explicit and f"--wheels {explicit}") or (
        os.environ.get("CODEXT_NVRTC_WHEELS") and
        f"CODEXT_NVRTC_WHEELS={os.environ['CODEXT_NVRTC_WHEELS']}") or "sys.path"
    return None, (f"{NVRTC_SONAME} (nvidia/cuda_nvrtc/lib/) was not found under {where}; "
                  "install it with: python3 -m pip install --target DIR "
                  "'nvidia-cuda-nvrtc-cu12==12.8.*' 'nvidia-cuda-runtime-cu12==12.8.*' "
                  "and pass --wheels DIR")


class Nvrtc:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._ok(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "version")
        self.version = (major.value, minor.value)

    def _ok(self, status, what):
        if status != 0:
            raise RuntimeError(f"nvrtc {what}: "
                               f"{self.lib.nvrtcGetErrorString(status).decode()}")

    def compile(self, source, name, options, name_expressions=()):
        """(ok, log): compiles `source` (named `name` in messages) to a cubin."""
        prog = ctypes.c_void_p()
        self._ok(self.lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(),
                                             name.encode(), 0, None, None), "create")
        try:
            for expr in name_expressions:
                self._ok(self.lib.nvrtcAddNameExpression(prog, expr.encode()),
                         f"name expression {expr}")
            opts = [o.encode() for o in options]
            status = self.lib.nvrtcCompileProgram(prog, len(opts),
                                                  (ctypes.c_char_p * len(opts))(*opts))
            size = ctypes.c_size_t()
            self._ok(self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "log size")
            log = ctypes.create_string_buffer(size.value + 1)
            self._ok(self.lib.nvrtcGetProgramLog(prog, log), "log")
            text = log.value.decode(errors="replace")
            if status != 0:
                return False, text
            self._ok(self.lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "cubin size")
            if size.value == 0:
                return False, text + "\n(no cubin was produced)"
            return True, text
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


def compile_problems(nvrtc, path, text, found, arch, include):
    """(usage records, problems) of one file for one architecture. Errors name the file
    and the architecture; warnings are the compiler's lines, which name the file."""
    name = display(path)
    options = [f"-arch=sm_{arch}", f"-I{os.path.dirname(os.path.abspath(path))}"]
    if include:
        options.append(f"-I{include}")
    ok, log = nvrtc.compile(text, name, options + NVRTC_OPTIONS, found["instantiate"])
    problems = []
    if not ok:
        detail = "\n".join(line for line in log.splitlines()
                           if line.strip() and not line.startswith("ptxas"))
        problems.append(f"{name}: NVRTC {nvrtc.version[0]}.{nvrtc.version[1]} cannot compile "
                        f"it for sm_{arch}:\n{detail}")
        return [], problems
    for line in log.splitlines():
        # "FILE(LINE): warning #9-D: ...", where FILE may be an included header
        if ("warning" in line and not line.startswith("Remark") and
                not any(w in line for w in KNOWN_WARNINGS)):
            problems.append(f"NVRTC warning: {line.strip()}")
    records = ptxas_usage.parse(log, source=name)
    return records, problems


# ---- the run -----------------------------------------------------------------------------

def device_sources(paths):
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(glob.glob(os.path.join(p, "*.cuh")) + glob.glob(os.path.join(p, "*.cu")))
        else:
            files.append(p)
    return files


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sources", nargs="*", default=[DEFAULT_SOURCES],
                        help="device sources or folders of them (default: kernels/device)")
    parser.add_argument("--wheels", help="the pip --target folder holding nvidia/cuda_nvrtc "
                        "(and nvidia/cuda_runtime)")
    parser.add_argument("--archs", default=DEFAULT_ARCHS,
                        help=f"comma-separated sm numbers (default {DEFAULT_ARCHS})")
    args = parser.parse_args(argv)
    archs = [a.strip().replace("sm_", "") for a in args.archs.split(",") if a.strip()]
    bad = [a for a in archs if not a.isdigit()]
    if bad or not archs:
        print(f"nvrtc_check: --archs {args.archs!r}: expected numbers like 60,75")
        return 1
    files = device_sources(args.sources)
    if not files:
        print(f"nvrtc_check: no device source (*.cuh, *.cu) in {', '.join(args.sources)}")
        return 1
    texts, problems, hot = {}, [], set()
    if args.sources == [DEFAULT_SOURCES]:  # the repository's own layout
        problems += kernels_outside(os.path.dirname(DEFAULT_SOURCES))
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                texts[path] = f.read()
        except OSError as e:
            problems.append(f"{display(path)}: cannot read it: {e.strerror}")
            continue
        p, found = static_problems(path, texts[path])
        problems += p
        hot |= found["hot"]
        texts[path] = (texts[path], found)
    if problems:  # the text breaks the rules: nothing to compile yet
        for p in problems:
            print("FAILED:", p)
        print(f"{len(problems)} problem(s) in {len(files)} device source(s)")
        return 1
    lib, include = find_wheels(args.wheels)
    if lib is None:
        print("nvrtc_check:", include)
        return 2
    nvrtc = Nvrtc(lib)
    if nvrtc.version[0] != NVRTC_MAJOR:
        print(f"nvrtc_check: {lib} is NVRTC {nvrtc.version[0]}.{nvrtc.version[1]}; this check "
              f"needs NVRTC {NVRTC_MAJOR} (Kaggle's CUDA)")
        return 2
    print(f"NVRTC {nvrtc.version[0]}.{nvrtc.version[1]} ({lib}); device headers: "
          f"{include or 'none'}; archs {', '.join('sm_' + a for a in archs)}")
    records = []
    for path in files:
        text, found = texts[path]
        for arch in archs:
            r, p = compile_problems(nvrtc, path, text, found, arch, include)
            records += r
            # a warning in a shared header shows for every includer and arch: once
            problems += [x for x in p if x not in problems]
    if records:
        print(ptxas_usage.table(records, hot))
    problems += ptxas_usage.check(records, hot)
    for p in problems:
        print("FAILED:", p)
    kernels = {(r.source, r.name) for r in records}
    print(f"{len(files)} device source(s), {len(kernels)} kernel(s), {len(archs)} "
          f"architecture(s): {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
