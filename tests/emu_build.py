"""Builds test programs against the CUDA emulator (csrc/emu, docs/emulator.md) with
AddressSanitizer and UBSan: shared by tests/test_emu.py and tests/test_emu_kernels.py."""
import concurrent.futures
import os
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMU = os.path.join(ROOT, "csrc", "emu")
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


def emulator_sources():
    return sorted(os.path.join(EMU, n) for n in os.listdir(EMU) if n.endswith(".cc"))


def build(compiler, out_dir, sources, name, extra_flags=(), all_flags=()):
    """Compiles the emulator and `sources` (two at a time) and links out_dir/name;
    extra_flags go to `sources` only, all_flags to every file."""
    def compile_one(src):
        obj = os.path.join(out_dir, os.path.basename(src) + ".o")
        flags = FLAGS + list(all_flags) + ([] if src in emulator_sources() else list(extra_flags))
        res = subprocess.run(["nice", compiler] + flags + ["-c", src, "-o", obj],
                             capture_output=True, text=True, env=clean_env())
        assert res.returncode == 0, f"{compiler} {src}:\n{res.stderr}"
        return obj

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        objects = list(pool.map(compile_one, emulator_sources() + list(sources)))
    binary = os.path.join(out_dir, name)
    res = subprocess.run([compiler, "-fsanitize=address,undefined", "-o", binary] + objects,
                         capture_output=True, text=True, env=clean_env())
    assert res.returncode == 0, res.stderr
    return binary


def sanitizer_findings(stderr):
    """stderr without ASan's ucontext note: empty when the sanitizers found nothing."""
    text = stderr.replace(UCONTEXT_NOTE, "")
    return text if ("runtime error" in text or "Sanitizer" in text) else ""
