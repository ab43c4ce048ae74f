#!/usr/bin/env python3
"""Checks that the C sources keep their layers one-way: no file includes a higher layer.

The layers, lowest first (a folder of csrc/, or kernels/ at the top of the repository):

    core                      errors, threads, memory, RNG: includes nothing of ours
    ops                       the op interface (cx_backend), the planning backend, the
                              CUDA backend factory and its ABI: sits on core
    kernels/device            the CUDA device code (kernels and their helpers): includes
                              nothing of ours outside kernels/device, so NVRTC can compile
                              each file alone (docs/cuda-build.md, tools/nvrtc_check.py)
    cpu, kernels              the backends (CPU ops; CUDA ops in libcodext_cuda.so):
                              sit on ops; kernels (the host side) also on kernels/device,
                              and may include emu (the CUDA emulator they compile against
                              outside nvcc)
    emu                       the CUDA emulator (csrc/emu, test infrastructure, never in a
                              shipped build): stands in for the CUDA toolkit, includes
                              nothing of ours
    model                     backbone, neck, decoder, parameters, arena: sits on ops
    data, metrics, io         images, masks and augmentation; COD metrics; JSON and
                              safetensors: each sits on core alone
    dist                      collectives (shared memory, NCCL) and the rendezvous store:
                              sits on core, and on ops for the NCCL backend alone (its
                              calls go through the CUDA library's table, ops/cuda_abi.h)
    train                     optimiser, state, the trainer loop: sits on model, data,
                              metrics, io and dist
    python                    the CPython bindings of codext._C: may include any layer
                              above except testing; the bindings that need no model
                              (binding.c, binding.h, metrics_binding.c, data_binding.c)
                              stay on core, data, metrics, io and dist
    testing                   codext._testing (test builds only): the op-test runner and
                              the test-only bindings; the top, it may include anything

A file may include its own layer and the layers listed as allowed for it below,
directly or through other headers (the rule is checked on the transitive closure of
each file's quoted #include lines; <system> headers are ignored).

Usage: python3 tools/check_layers.py [ROOT]   (ROOT: the repository, default: this one)
Exit status 0 when every include is allowed; 1 with one line per violation otherwise.
"""
import os
import re
import sys

# Layer -> the layers its files may include (its own layer is always allowed).
ALLOWED = {
    "core": set(),
    "ops": {"core"},
    "cpu": {"core", "ops"},
    "kernels/device": set(),
    "kernels": {"core", "ops", "kernels/device", "emu"},
    "emu": set(),
    "model": {"core", "ops"},
    "data": {"core"},
    "metrics": {"core"},
    "io": {"core"},
    "dist": {"core", "ops"},
    "train": {"core", "ops", "model", "data", "metrics", "io", "dist"},
    "python": {"core", "ops", "cpu", "model", "data", "metrics", "io", "dist", "train"},
    "testing": {"core", "ops", "cpu", "model", "data", "metrics", "io", "dist", "train", "python",
                "emu"},
}
# Binding files that must compile without the model (their own sub-layer of python).
MODEL_FREE_BINDINGS = {"binding.c", "binding.h", "metrics_binding.c", "data_binding.c"}
MODEL_FREE_ALLOWED = {"core", "data", "metrics", "io", "dist"}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
SOURCE_EXT = (".c", ".h", ".cu", ".cuh", ".cc")


def layer_of(path, root):
    rel = os.path.relpath(path, root).replace(os.sep, "/")
    parts = rel.split("/")
    if parts[0] == "kernels":
        return "kernels/device" if len(parts) > 2 and parts[1] == "device" else "kernels"
    if parts[0] == "csrc" and len(parts) > 2:
        return parts[1]
    return None


def source_files(root):
    for top in ("csrc", "kernels"):
        for dirpath, _, names in os.walk(os.path.join(root, top)):
            for name in sorted(names):
                if name.endswith(SOURCE_EXT):
                    yield os.path.normpath(os.path.join(dirpath, name))


def resolve(include, including_file, root):
    """Where a quoted include lands: next to the file, then under csrc/ or kernels/ (the
    include paths setup.py passes); None for a header outside the repository's sources."""
    for base in (os.path.dirname(including_file), os.path.join(root, "csrc"),
                 os.path.join(root, "kernels")):
        candidate = os.path.normpath(os.path.join(base, include))
        if os.path.isfile(candidate):
            return candidate
    return None


def direct_includes(path, root, cache):
    if path not in cache:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        found = []
        for name in INCLUDE.findall(text):
            target = resolve(name, path, root)
            if target:
                found.append(target)
        cache[path] = found
    return cache[path]


def closure(path, root, cache):
    """Every file reached from path through quoted includes, with the chain to each."""
    seen = {}
    stack = [(path, (path,))]
    while stack:
        current, chain = stack.pop()
        for target in direct_includes(current, root, cache):
            if target not in seen and target != path:
                seen[target] = chain + (target,)
                stack.append((target, seen[target]))
    return seen


def violations(root):
    root = os.path.abspath(root)
    cache = {}
    found = []
    for path in source_files(root):
        layer = layer_of(path, root)
        if layer is None:
            continue
        if layer not in ALLOWED:
            found.append(f"{os.path.relpath(path, root)}: folder '{layer}' has no layer "
                         "(add it to ALLOWED in tools/check_layers.py)")
            continue
        allowed = ALLOWED[layer] | {layer}
        if layer == "python" and os.path.basename(path) in MODEL_FREE_BINDINGS:
            allowed = MODEL_FREE_ALLOWED | {"python"}
        for target, chain in sorted(closure(path, root, cache).items()):
            target_layer = layer_of(target, root)
            if target_layer is None or target_layer in allowed:
                continue
            via = " -> ".join(os.path.relpath(p, root) for p in chain)
            found.append(f"{os.path.relpath(path, root)} ({layer}) reaches {target_layer}: {via}")
    return found


def main(argv):
    root = argv[1] if len(argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    problems = violations(root)
    for line in problems:
        print(line)
    if problems:
        print(f"{len(problems)} include(s) break the layer order (see tools/check_layers.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
