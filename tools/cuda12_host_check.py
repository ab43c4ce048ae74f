#!/usr/bin/env python3
"""Compiles the host side of every kernels/*.cu against CUDA 12's own headers.

Kaggle installs codext with CUDA 12.8, cuDNN 9.8 and NCCL 2.25; this machine and CI have
CUDA 13. nvcc 13 builds the whole library (host and device) against CUDA 13, NVRTC 12
compiles the device sources for CUDA 12 (tools/nvrtc_check.py); this closes the last gap:
the host code (runtime, cuBLAS, cuDNN and NCCL calls, the launches) against the CUDA 12
runtime, cuBLAS 12, cuDNN 9 and NCCL 2 headers that Kaggle's build will read. An API that
changed between those and CUDA 13's shows here, not on a user's first install.

PyPI has no CUDA 12 nvcc, but its CUDA 12 wheels carry the headers (the nvcc wheel the
`crt/` folder the runtime headers need), and clang compiles CUDA itself: `clang++ -x cuda
--cuda-path=DIR --cuda-host-only -fsyntax-only` parses each file as nvcc's host pass
would, against the wheels' headers only. Clang 17 or newer is needed (older clangs' CUDA
wrapper uses the `texture` template CUDA 12 removed; Debian 12 ships clang-19). Clang's
own CUDA 13 support is not there yet (its wrapper includes headers CUDA 13 dropped), so
CUDA 13 stays nvcc's check.

    python3 tools/cuda12_host_check.py [--headers DIR] [--clang clang++-19] [FILE.cu ...]

--headers: a folder laid out as a CUDA install (include/, bin/, lib64/), made on first use
from the pinned wheels (PINNED; `pip download`, about 1.8 GB fetched, 23 MB kept) and
reused after; default $CODEXT_CUDA12_HEADERS, else ~/.cache/codext-ci/cuda12-headers.
Warnings are errors (-Wall -Wextra; -Wno-unused-parameter for the stubs of ops a library
does not implement), and so is a header read from anywhere but the CUDA 12 folder, this
tree, clang's own headers and the C/C++ library's (/usr/include, /usr/lib/gcc). Prints one
line per file and the header versions checked against.

Exit status: 0 every file compiled; 1 a file failed; 2 no suitable clang or no headers.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What Kaggle's GPU image has: CUDA 12.8, cuDNN 9.8, NCCL 2.25 (docs/cuda-build.md)
# (CCCL for <nv/target>, which cuda_fp16.hpp includes; cuRAND because clang's CUDA wrapper
# includes curand_mtgp32_kernel.h)
PINNED = ("nvidia-cuda-runtime-cu12==12.8.*", "nvidia-cuda-nvcc-cu12==12.8.*",
          "nvidia-cuda-cccl-cu12==12.8.*", "nvidia-curand-cu12==10.3.9.*",
          "nvidia-cublas-cu12==12.8.*", "nvidia-cudnn-cu12==9.8.*", "nvidia-nccl-cu12==2.25.*")
CLANGS = ("clang++-21", "clang++-20", "clang++-19", "clang++-18", "clang++-17", "clang++")
MIN_CLANG = 17
FLAGS = ["-x", "cuda", "--cuda-host-only", "-fsyntax-only", "-nocudalib",
         "-Wno-unknown-cuda-version", "--cuda-gpu-arch=sm_75", "-std=c++17",
         "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror"]
VERSION_MACROS = (("cuda_runtime_api.h", "CUDART_VERSION"), ("cudnn_version.h", "CUDNN_MAJOR"),
                  ("cudnn_version.h", "CUDNN_MINOR"), ("cublas_api.h", "CUBLAS_VER_MAJOR"),
                  ("cublas_api.h", "CUBLAS_VER_MINOR"), ("nccl.h", "NCCL_MAJOR"),
                  ("nccl.h", "NCCL_MINOR"))
REQUIRED = ("cuda_runtime.h", "crt/host_defines.h", "nv/target", "curand_mtgp32_kernel.h",
            "cublas_v2.h", "cudnn.h", "nccl.h")


def default_headers():
    env = os.environ.get("CODEXT_CUDA12_HEADERS", "").strip()
    if env:
        return env
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "codext-ci", "cuda12-headers")


def headers_complete(root):
    return all(os.path.exists(os.path.join(root, "include", h)) for h in REQUIRED)


def fetch_headers(root):
    """Downloads the pinned wheels and keeps only their include/ folders, merged into
    root/include (a CUDA install's layout, which clang's --cuda-path expects)."""
    partial = root + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(os.path.join(partial, "include"))
    for sub in ("bin", "lib64"):  # clang recognises an install by these folders
        os.makedirs(os.path.join(partial, sub))
    with tempfile.TemporaryDirectory(prefix="codext-cuda12-") as wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d",
                        wheels, *PINNED], check=True)
        for wheel in sorted(glob.glob(os.path.join(wheels, "*.whl"))):
            with zipfile.ZipFile(wheel) as z:
                for name in z.namelist():
                    m = re.match(r"nvidia/[^/]+/include/(.+)$", name)
                    if not m or name.endswith("/") or m.group(1).endswith(".py"):
                        continue
                    dest = os.path.join(partial, "include", m.group(1))
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    with z.open(name) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out)
            os.unlink(wheel)  # hundreds of MB each: gone as soon as read
    with open(os.path.join(partial, "PINNED"), "w") as f:
        f.write("\n".join(PINNED) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    os.replace(partial, root)


def header_versions(root):
    found = []
    for header, macro in VERSION_MACROS:
        try:
            with open(os.path.join(root, "include", header), errors="replace") as f:
                m = re.search(r"#\s*define\s+" + macro + r"\s+(\d+)", f.read())
        except OSError:
            m = None
        found.append(f"{macro}={m.group(1) if m else '?'}")
    return " ".join(found)


def clang_major(clang):
    try:
        out = subprocess.run([clang, "--version"], capture_output=True, text=True).stdout
    except OSError:
        return None
    m = re.search(r"clang version (\d+)", out)
    return int(m.group(1)) if m else None


def find_clang(asked):
    for clang in ([asked] if asked else CLANGS):
        path = shutil.which(clang)
        major = clang_major(path) if path else None
        if major is not None and major >= MIN_CLANG:
            return path, major
        if asked:
            return None, major
    return None, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--headers", default=None, help="CUDA 12 header folder (made on first use)")
    ap.add_argument("--clang", default=None, help=f"clang++ {MIN_CLANG} or newer")
    ap.add_argument("--no-fetch", action="store_true", help="fail instead of downloading")
    ap.add_argument("files", nargs="*", help="sources (default: kernels/*.cu)")
    args = ap.parse_args(argv)
    clang, major = find_clang(args.clang)
    if clang is None:
        print(f"cuda12_host_check: needs clang++ {MIN_CLANG} or newer for CUDA 12 "
              f"({args.clang or 'none found'}{f' is clang {major}' if major else ''}; on "
              f"Debian 12: apt-get install clang-19)", file=sys.stderr)
        return 2
    root = os.path.realpath(args.headers or default_headers())
    if not headers_complete(root):
        if args.no_fetch:
            print(f"cuda12_host_check: no CUDA 12 headers in {root}", file=sys.stderr)
            return 2
        print(f"cuda12_host_check: fetching the CUDA 12 headers into {root}", flush=True)
        fetch_headers(root)
    files = args.files or sorted(glob.glob(os.path.join(ROOT, "kernels", "*.cu")))
    includes = ["-I" + os.path.join(ROOT, "csrc"), "-I" + os.path.join(ROOT, "kernels")]
    print(f"cuda12_host_check: clang {major}, headers {header_versions(root)}")
    # -isystem puts the CUDA 12 headers ahead of the system folders, where a machine may
    # hold another CUDA's (this one links CUDA 13's into /usr/local/include, with headers
    # CUDA 12 lacks, such as nccl_device.h); the dependency list (-MD) names every header
    # read, and one from outside the CUDA 12 folder, this tree, clang's own headers and the
    # C/C++ library's fails the file.
    includes += ["-isystem", os.path.join(root, "include")]
    resource = subprocess.run([clang, "-print-resource-dir"], capture_output=True,
                              text=True).stdout.strip()
    allowed = [root, os.path.realpath(ROOT), "/usr/include", "/usr/lib/gcc"]
    if resource:
        allowed.append(os.path.realpath(resource))
    failed = 0
    with tempfile.TemporaryDirectory(prefix="codext-cuda12-deps-") as scratch:
        deps = os.path.join(scratch, "deps")
        for src in files:
            cmd = [clang, f"--cuda-path={root}", *FLAGS, *includes, "-MD", "-MF", deps, src]
            res = subprocess.run(cmd, capture_output=True, text=True)
            name = os.path.relpath(src, ROOT)
            diagnostics = res.stderr.strip().splitlines()
            try:
                with open(deps) as f:
                    read = f.read().replace("\\\n", " ").split()[1:]
                os.unlink(deps)
            except OSError:
                read = []
                if res.returncode == 0:
                    diagnostics.append("clang wrote no dependency list")
            own = os.path.realpath(src)
            foreign = [path for path in read if os.path.realpath(path) != own
                       and not any(os.path.realpath(path).startswith(a + os.sep) for a in allowed)]
            diagnostics = [f"read {path}: neither a CUDA 12 header of {root} nor a C/C++ "
                           f"library header" for path in foreign[:5]] + diagnostics
            if res.returncode == 0 and not diagnostics:
                print(f"  ok      {name}")
            else:
                failed += 1
                print(f"  FAILED  {name}\n" + "\n".join("    " + line
                                                         for line in diagnostics[:40]))
    print(f"cuda12_host_check: {len(files) - failed} of {len(files)} host sides compile "
          f"against CUDA 12")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
