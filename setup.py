"""Builds codext._C (C11, always) and, when a CUDA toolkit is found, codext/libcodext_cuda.so.

Environment:
  CODEXT_CUDA=0|1|auto   0: CPU only; 1: CUDA required (fail if no toolkit); auto (default): CUDA if found
  CODEXT_CUDA_ARCHS      e.g. "75" or "60;75;80;86;89;90;120" (default: those of it that the
                         nvcc found can build); PTX is emitted for the highest
  CUDA_HOME, CUDNN_HOME, NCCL_HOME   where to look for the toolkit and libraries
  CODEXT_CUDA_RESOURCE_REPORT=FILE   also run ptxas with --resource-usage (registers, spills,
                         shared memory of every kernel) and write its report to FILE, one
                         section per .cu file; tools/ptxas_usage.py FILE prints and checks it
  CODEXT_TEST_BUILD=1    the test install: defines CX_TEST_BUILD for all C and also builds
                         codext._testing (csrc/testing/: the op-test runner and the other
                         test-only bindings), linked against codext._C, whose symbols such
                         a build leaves visible. Never set for a wheel that ships.
  CODEXT_SANITIZE=1      AddressSanitizer + UndefinedBehaviorSanitizer build (gcc, CPU only);
                         defines CX_SANITIZE. Run it with the ASan runtime (and libstdc++,
                         for C++ extensions such as matplotlib's) preloaded:
                         LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
                         ASAN_OPTIONS=detect_leaks=0
  CODEXT_WERROR=1        warnings are errors (CI builds with gcc and clang this way)

The CUDA part is a separate shared library that _C opens with dlopen() only when a GPU
worker starts, so `import codext` never loads CUDA libraries (and works without a driver).
"""
import concurrent.futures
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
# Kaggle's P100 (60), T4 (75), L4 (89) and RTX Pro 6000 (120), and the A100/A10/H100 of
# most clouds. Without CODEXT_CUDA_ARCHS the ones this nvcc cannot build are left out
# (CUDA 13 dropped sm_60; sm_120 needs CUDA 12.8): see docs/cuda-build.md.
DEFAULT_ARCHS = "60;75;80;86;89;90;120"


def log(msg):
    print(f"codext build: {msg}", file=sys.stderr, flush=True)


def find_cuda_home():
    for key in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(key)
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return home
    nvcc = shutil.which("nvcc")
    if nvcc:
        return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    return None


def pip_nvidia_dirs(package):
    """Include and lib dirs of the nvidia-<package>-cu* wheels that PyTorch installs (Kaggle)."""
    dirs = []
    for site in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]} | set(sys.path):
        base = os.path.join(site, "nvidia", package)
        if os.path.isdir(base):
            dirs.append(base)
    return dirs


def find_header_and_lib(header, libnames, env_key, cuda_home, pip_pkg, accept=None):
    """Returns (include_dir, lib_dir, lib_file) for a library such as cuDNN or NCCL; `accept`
    (include_dir -> bool) can refuse a copy, e.g. a cuDNN 8 beside the toolkit."""
    roots = []
    if os.environ.get(env_key):
        roots.append(os.environ[env_key])
    roots.append(cuda_home)
    roots += pip_nvidia_dirs(pip_pkg)
    roots += ["/usr", "/usr/local"]
    for root in roots:
        incs = [os.path.join(root, "include"), os.path.join(root, "include", "x86_64-linux-gnu")]
        libs = [os.path.join(root, d) for d in ("lib64", "lib", "lib/x86_64-linux-gnu", "targets/x86_64-linux/lib")]
        inc = next((d for d in incs if os.path.exists(os.path.join(d, header))), None)
        if not inc or (accept and not accept(inc)):
            continue
        for libdir in libs:
            for name in libnames:
                if os.path.exists(os.path.join(libdir, name)):
                    return inc, libdir, name
    return None


def header_version(path, prefix, parts=("MAJOR", "MINOR", "PATCHLEVEL")):
    text = open(path).read()
    vals = []
    for part in parts:
        m = re.search(rf"#define\s+{prefix}_{part}\s+(\d+)", text)
        vals.append(m.group(1) if m else "0")
    return ".".join(vals)


class BuildWithCuda(build_ext):
    def run(self):
        # setuptools clears self.inplace while building and copies the extensions into the
        # source tree afterwards; remember it for libcodext_cuda.so.
        self.into_source = bool(self.inplace or getattr(self, "editable_mode", False))
        super().run()

    def build_extensions(self):
        mode = os.environ.get("CODEXT_CUDA", "auto").lower()
        if mode not in ("0", "1", "auto"):
            raise SystemExit(f"CODEXT_CUDA must be 0, 1 or auto, got {mode!r}")
        ext = self.extensions[0]
        if env_flag("CODEXT_SANITIZE"):
            # The sanitizer variant checks the C engine on the CPU; device pointers in a
            # host-instrumented build would only confuse ASan.
            if mode == "1":
                raise SystemExit("CODEXT_SANITIZE=1 builds the CPU-only variant: unset CODEXT_CUDA=1")
            mode = "0"
        cuda = None
        if mode != "0":
            cuda = self.configure_cuda(required=(mode == "1"))
        if cuda:
            self.build_cuda_library(cuda)
            ext.define_macros += [
                ("CX_BUILD_CUDA", "1"),
                ("CX_BUILD_CUDA_VERSION", f'"{cuda["cuda_version"]}"'),
                ("CX_BUILD_CUDNN_VERSION", f'"{cuda["cudnn_version"]}"'),
                ("CX_BUILD_NCCL_VERSION", f'"{cuda["nccl_version"]}"'),
                ("CX_BUILD_CUDA_ARCHS", f'"{cuda["archs_text"]}"'),
            ]
        else:
            log("building the CPU-only variant")
            # A library left by an earlier CUDA build would be packaged or loaded by mistake.
            for stale in {os.path.join(self.build_lib, "codext", "libcodext_cuda.so"),
                          os.path.join(ROOT, "codext", "libcodext_cuda.so") if getattr(self, "into_source", False) else ""}:
                if stale and os.path.exists(stale):
                    log(f"removing {stale} from an earlier CUDA build")
                    os.remove(stale)
        self.link_testing_module(ext)
        # setuptools rebuilds _C only when a source is newer than it: a switch between the
        # CPU and CUDA variants changes only macros, so force a rebuild when they change.
        os.makedirs(self.build_temp, exist_ok=True)
        stamp = os.path.join(self.build_temp, "codext_variant.txt")
        variant = repr(sorted(ext.define_macros))
        previous = open(stamp).read() if os.path.exists(stamp) else None
        if previous != variant:
            self.force = True
        # One extension after the other, _C first: _testing links against the built _C, so
        # build_ext's --parallel (which builds extensions side by side) must not apply here.
        self.check_extensions_list(self.extensions)
        for extension in self.extensions:
            self.build_extension(extension)
        with open(stamp, "w") as f:
            f.write(variant)

    def link_testing_module(self, engine):
        """codext._testing links against _C by file name (found at run time through
        $ORIGIN); a build without it removes a _testing left by an earlier test build."""
        testing = [e for e in self.extensions if e.name == "codext._testing"]
        if not testing:
            for stale in glob.glob(os.path.join(self.build_lib, "codext", "_testing.*")) + (
                    glob.glob(os.path.join(ROOT, "codext", "_testing.*")) if getattr(self, "into_source", False) else []):
                log(f"removing {stale} from an earlier test build")
                os.remove(stale)
            return
        engine_path = self.get_ext_fullpath(engine.name)
        testing[0].library_dirs = [os.path.dirname(engine_path)]
        testing[0].extra_link_args = [f"-l:{os.path.basename(engine_path)}"] + testing[0].extra_link_args
        # _testing must be relinked whenever _C changes
        testing[0].depends = list(testing[0].depends) + [engine_path]

    def configure_cuda(self, required):
        cuda_home = find_cuda_home()
        # kernels/*.cu are the translation units; kernels/device/*.cuh, the device code
        # they include, is compiled through them (and checked alone by tools/nvrtc_check.py).
        kernels = sorted(glob.glob(os.path.join(ROOT, "kernels", "*.cu")))

        def missing(what):
            if required:
                raise SystemExit(f"CODEXT_CUDA=1 but {what}")
            log(f"CUDA disabled: {what}")
            return None

        if not cuda_home:
            return missing("no CUDA toolkit was found (set CUDA_HOME or put nvcc on PATH)")
        if not kernels:
            return missing("kernels/ has no .cu files")
        cudnn = find_header_and_lib(
            "cudnn_version.h", ["libcudnn.so.9"], "CUDNN_HOME", cuda_home, "cudnn",
            accept=lambda inc: header_version(os.path.join(inc, "cudnn_version.h"), "CUDNN").startswith("9."))
        nccl = find_header_and_lib("nccl.h", ["libnccl.so.2", "libnccl.so"], "NCCL_HOME", cuda_home, "nccl")
        if not cudnn:
            return missing("cuDNN 9 was not found (set CUDNN_HOME)")
        if not nccl:
            return missing("NCCL was not found (set NCCL_HOME)")
        nvcc = os.path.join(cuda_home, "bin", "nvcc")
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
        m = re.search(r"release (\d+\.\d+)", out)
        cuda_version = m.group(1) if m else "unknown"
        requested = os.environ.get("CODEXT_CUDA_ARCHS", "").strip()
        archs, dropped = choose_archs(requested or DEFAULT_ARCHS, bool(requested),
                                      nvcc_cubin_archs(nvcc), cuda_version)
        if dropped:
            log(f"nvcc {cuda_version} cannot build {', '.join('sm_' + a for a in dropped)}: left out "
                "of the default architectures (set CODEXT_CUDA_ARCHS to choose them)")
        cudnn_version = header_version(os.path.join(cudnn[0], "cudnn_version.h"), "CUDNN")
        nccl_version = header_version(os.path.join(nccl[0], "nccl.h"), "NCCL", ("MAJOR", "MINOR", "PATCH"))
        log(f"CUDA {cuda_version} at {cuda_home}, cuDNN {cudnn_version}, NCCL {nccl_version}, archs {archs}")
        return dict(home=cuda_home, nvcc=nvcc, kernels=kernels, cudnn=cudnn, nccl=nccl,
                    cuda_version=cuda_version, cudnn_version=cudnn_version,
                    nccl_version=nccl_version, archs=archs,
                    archs_text=";".join(f"sm_{a}" for a in archs))

    def build_cuda_library(self, cuda):
        build_dir = os.path.join(self.build_temp, "kernels")
        os.makedirs(build_dir, exist_ok=True)
        gencode = []
        for a in cuda["archs"]:
            gencode += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
        top = max(cuda["archs"], key=int)
        gencode += ["-gencode", f"arch=compute_{top},code=compute_{top}"]
        incs = ["-I" + os.path.join(ROOT, "csrc"), "-I" + os.path.join(ROOT, "kernels"),
                "-I" + cuda["cudnn"][0], "-I" + cuda["nccl"][0]]
        # Only cx_cuda_get_api is exported (kernels/backend_cuda.cu marks it).
        flags = ["-O3", "-std=c++17", "-Xcompiler", "-fPIC,-fvisibility=hidden",
                 "--expt-relaxed-constexpr", "-lineinfo"]
        if any(int(a) < 75 for a in cuda["archs"]):
            # CUDA 12 builds sm_60 but warns that it is deprecated: we build it on purpose
            # (Kaggle's P100), so the warning would only hide real ones
            flags.append("-Wno-deprecated-gpu-targets")
        report_path = os.environ.get("CODEXT_CUDA_RESOURCE_REPORT", "").strip()
        if report_path:
            flags.append("--resource-usage")  # ptxas -v: one report per kernel and arch
        jobs = []
        for src in cuda["kernels"]:
            obj = os.path.join(build_dir, os.path.basename(src) + ".o")
            jobs.append([cuda["nvcc"], "-c", src, "-o", obj] + flags + gencode + incs)
        # The .cu files compile in parallel (one nvcc per core): the slow part of the build.
        workers = max(1, min(len(jobs), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
        log(f"compiling {len(jobs)} CUDA files for {cuda['archs_text']} with {workers} job(s)")
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda cmd: (cmd, subprocess.run(cmd, capture_output=True, text=True)), jobs))
        report = []
        for cmd, res in results:
            # ptxas's resource lines go to the report; anything else (warnings) is logged
            output, usage = split_resource_usage(res.stdout + res.stderr)
            if output.strip():
                log(f"{os.path.basename(cmd[2])}:\n{output}")
            if usage:
                report.append(f"# {os.path.relpath(cmd[2], ROOT)}\n{usage}")
            if res.returncode != 0:
                raise SystemExit(f"nvcc failed on {cmd[2]}:\n{' '.join(cmd)}")
        if report_path:
            with open(report_path, "w") as f:
                f.write("".join(report))
            log(f"ptxas resource report of {len(report)} file(s) written to {report_path}")
        objects = [cmd[4] for cmd, _ in results]
        # The library holds no copy of csrc/core: the loader hands it _C's cx_fail, so errors
        # reach Python, and --no-undefined turns a stray call into _C into a build error.
        out_dir = os.path.join(self.build_lib, "codext")
        os.makedirs(out_dir, exist_ok=True)
        lib = os.path.join(out_dir, "libcodext_cuda.so")
        libdirs = sorted({os.path.join(cuda["home"], "lib64"), os.path.join(cuda["home"], "lib"),
                          cuda["cudnn"][1], cuda["nccl"][1]})
        libdirs = [d for d in libdirs if os.path.isdir(d)]
        # Versioned sonames by name: pip's nvidia wheels ship only libcudnn.so.9 / libnccl.so.2.
        # Never -lcuda: the driver library is opened by the CUDA runtime when first used.
        link = [cuda["nvcc"], "-shared", "-cudart", "shared", "-o", lib] + objects + gencode
        link += [f for f in flags if f == "-Wno-deprecated-gpu-targets"]
        link += [f"-L{d}" for d in libdirs]
        link += ["-lcublas", "-lcublasLt", f"-l:{cuda['cudnn'][2]}", f"-l:{cuda['nccl'][2]}"]
        rpath = ["$ORIGIN"] + libdirs
        link += ["-Xlinker", "-rpath=" + ":".join(rpath), "-Xlinker", "--no-undefined"]
        log(" ".join(link))
        subprocess.check_call(link)
        # Keep an in-place copy for `pip install -e .` / build_ext --inplace.
        if getattr(self, "into_source", False):
            shutil.copy(lib, os.path.join(ROOT, "codext", "libcodext_cuda.so"))


def nvcc_cubin_archs(nvcc):
    """The sm numbers this nvcc builds cubins for (nvcc --list-gpu-code), or None when it
    cannot say (an nvcc older than CUDA 11)."""
    res = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True)
    found = set(re.findall(r"\bsm_(\d+)\b", res.stdout)) if res.returncode == 0 else set()
    return found or None


def choose_archs(text, explicit, supported, cuda_version):
    """(archs to build, archs left out) from a list like "60;75" or "sm_75,80". An explicit
    list (CODEXT_CUDA_ARCHS) must be buildable by this nvcc; the default list loses what
    it cannot build. supported: nvcc's sm numbers, or None when unknown (nothing is left
    out then: nvcc itself refuses what it cannot build)."""
    archs = [a.strip().replace("sm_", "") for a in re.split(r"[;, ]+", text) if a.strip()]
    for a in archs:
        if not a.isdigit():
            raise SystemExit(f"CODEXT_CUDA_ARCHS: {a!r} is not an architecture number like 75")
    if supported is None:
        return archs, []
    missing = [a for a in archs if a not in supported]
    if explicit and missing:
        raise SystemExit(f"CODEXT_CUDA_ARCHS asks for {', '.join('sm_' + a for a in missing)}, which "
                         f"nvcc {cuda_version} cannot build (it builds "
                         f"{', '.join('sm_' + a for a in sorted(supported, key=int))}); CUDA 13 "
                         "dropped sm_60 and sm_70: build with a CUDA 12 toolkit for those")
    kept = [a for a in archs if a in supported]
    if not kept:
        raise SystemExit(f"nvcc {cuda_version} can build none of the architectures {text!r}")
    return kept, missing


def split_resource_usage(text):
    """(other output, ptxas resource lines) of one nvcc run with --resource-usage."""
    other, usage = [], []
    for line in text.splitlines(keepends=True):
        # "ptxas info : ..." and the stack/spill line under "Function properties for ..."
        # ("ptxas . 0 bytes stack frame, ..." or indented, depending on the version)
        is_usage = line.startswith("ptxas info") or re.match(r"(ptxas)?\s+\.?\s*\d+ bytes stack frame", line)
        (usage if is_usage else other).append(line)
    return "".join(other), "".join(usage)


def c_sources():
    """codext._C: every C file outside csrc/testing/ (test-only code lives there)."""
    files = sorted(glob.glob("csrc/**/*.c", recursive=True))
    return [f for f in files if "/bench/" not in f and not f.startswith("csrc/testing/")]


def test_sources():
    """codext._testing: csrc/testing/ (test builds only)."""
    return sorted(glob.glob("csrc/testing/*.c"))


def env_flag(name):
    value = os.environ.get(name, "0").strip().lower()
    if value not in ("0", "1", "", "false", "true", "no", "yes"):
        raise SystemExit(f"{name} must be 0 or 1, got {value!r}")
    return value in ("1", "true", "yes")


# The oldest NumPy whose headers _C is known to build against (tools/check_old_numpy.sh
# checks 1.24, Debian 12's). pip's isolated build uses NumPy 2 (pyproject.toml); this matters
# for `pip install --no-build-isolation`, which builds against the NumPy already installed.
MIN_BUILD_NUMPY = (1, 24)


def numpy_include():
    need = ".".join(map(str, MIN_BUILD_NUMPY))
    try:
        import numpy
    except ImportError:
        raise SystemExit(f"codext build: NumPy is not installed; building needs NumPy >= {need} "
                         "(pip's default isolated build brings NumPy 2 itself)")
    found = tuple(int(x) for x in re.findall(r"\d+", numpy.__version__)[:2])
    if found < MIN_BUILD_NUMPY:
        raise SystemExit(f"codext build: NumPy {numpy.__version__} is too old to build against: "
                         f"codext needs NumPy >= {need} (NumPy 2 recommended). Upgrade it "
                         "(pip install 'numpy>=2'), or drop --no-build-isolation so pip builds "
                         "with its own NumPy.")
    return numpy.get_include()


def c_flags():
    """Compile flags, define macros and link flags of codext._C for this build's variant.
    Unused parameters are allowed: every backend implements the whole op table with one
    signature per op, and most backends ignore some arguments."""
    compile_args = ["-std=c11", "-O3", "-fPIC", "-pthread", "-fno-strict-aliasing",
                    "-Wall", "-Wextra", "-Wno-unused-function", "-Wno-unused-parameter"]
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"), ("_GNU_SOURCE", None)]
    link_args = ["-pthread", "-ldl", "-lm", "-lrt"]
    if env_flag("CODEXT_WERROR"):
        compile_args.append("-Werror")
    if TEST_BUILD:
        macros.append(("CX_TEST_BUILD", "1"))
    if env_flag("CODEXT_SANITIZE"):
        # -fno-wrapv: Python's own CFLAGS carry -fwrapv, which hides signed overflow from UBSan.
        sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
        compile_args += sanitize + ["-fno-omit-frame-pointer", "-fno-wrapv", "-O1", "-g"]
        link_args += sanitize
        macros.append(("CX_SANITIZE", "1"))
    return compile_args, macros, link_args


TEST_BUILD = env_flag("CODEXT_TEST_BUILD")
compile_args, macros, link_args = c_flags()
# A shipped _C exports only PyInit__C. A test build leaves the engine's symbols visible for
# codext._testing to call (-fno-semantic-interposition keeps the same code generation).
visibility = ["-fvisibility=default", "-fno-semantic-interposition"] if TEST_BUILD else ["-fvisibility=hidden"]
ext = Extension(
    "codext._C",
    sources=c_sources(),
    include_dirs=[numpy_include(), "csrc"],
    define_macros=list(macros),
    extra_compile_args=compile_args + visibility,
    extra_link_args=link_args,
)
extensions = [ext]
if TEST_BUILD:
    # Linked against _C (BuildWithCuda.link_testing_module adds it) and found next to it.
    extensions.append(Extension(
        "codext._testing",
        sources=test_sources(),
        include_dirs=[numpy_include(), "csrc"],
        define_macros=list(macros),
        extra_compile_args=compile_args + ["-fvisibility=hidden"],
        extra_link_args=link_args + ["-Wl,-rpath,$ORIGIN"],
    ))

setup(ext_modules=extensions, cmdclass={"build_ext": BuildWithCuda})
