"""Writes the reference safetensors files that tests/test_safetensors.py reads.

Run with a Python that has torch, timm, safetensors and numpy (not needed by the tests;
tools/reference-python.sh prints one):
    PY=$(tools/reference-python.sh) && $PY tools/make_safetensors_fixtures.py [out_dir]
    # default out_dir: tests/data/safetensors

For each <name>.safetensors it writes <name>.npz (the expected float32 values, one .npy per
tensor, as torch/numpy convert them) and records in manifest.json the header order, dtypes,
shapes and metadata. Only quiet NaNs are used: hardware conversions may quiet signalling
ones, and the bit patterns must not depend on the machine that made the expectations.
"""
import json
import os
import struct
import sys

import numpy as np
import safetensors.numpy
import safetensors.torch
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def header_order(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n), object_pairs_hook=lambda pairs: pairs)
    return [k for k, _ in header if k != "__metadata__"]


def record(out_dir, manifest, name, expected, dtypes, metadata):
    path = os.path.join(out_dir, name + ".safetensors")
    np.savez(os.path.join(out_dir, name + ".npz"), **expected)
    manifest[name] = {
        "order": header_order(path),
        "dtypes": dtypes,
        "shapes": {k: list(v.shape) for k, v in expected.items()},
        "metadata": metadata or {},
    }


def half_specials():
    bits = np.array([0x0001, 0x03FF, 0x0400, 0x7BFF, 0x7C00, 0xFC00, 0x7E00, 0x7E01, 0xFE00,
                     0x8000, 0x0000, 0x3555, 0xB001], dtype=np.uint16)
    return bits.view(np.float16)


def numpy_file(out_dir, manifest):
    rng = np.random.default_rng(1)
    f32 = rng.standard_normal((3, 4)).astype(np.float32)
    f32.ravel()[:5] = [np.inf, -np.inf, np.nan, -0.0, np.float32(1e-45)]
    f64 = np.array([[0.1, 1 / 3, 1e39, -1e-50, 1.401298464324817e-45, np.nan],
                    [-2.5, 3.4028234663852886e38, 1e-40, 123456789.123, -np.inf, 7.0]])
    tensors = {
        "layer.weight": f32,
        "double": f64,
        "half": half_specials(),
        "scalar": np.array(2.75, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    metadata = {"format": "np", "note": 'unicode \u00e9 \u2713 \U0001F600 "quoted" back\\slash\nnewline', "empty": ""}
    safetensors.numpy.save_file(tensors, os.path.join(out_dir, "np_mixed.safetensors"), metadata=metadata)
    expected = {k: v.astype(np.float32) for k, v in tensors.items()}
    dtypes = {"layer.weight": "F32", "double": "F64", "half": "F16", "scalar": "F32", "empty": "F32"}
    record(out_dir, manifest, "np_mixed", expected, dtypes, metadata)


def torch_file(out_dir, manifest):
    g = torch.Generator().manual_seed(2)
    bf16 = torch.randn(4, 5, generator=g).to(torch.bfloat16)
    bf16.view(-1)[:6] = torch.tensor([float("inf"), float("-inf"), float("nan"), 1e-40, -0.0, 3.0e38])
    tensors = {
        "bf16": bf16,
        "f16_odd": torch.tensor([1.0, -0.5, 65504.0], dtype=torch.float16),
        "f32": torch.randn(2, 2, 3, generator=g),
        "f64": torch.randn(5, generator=g, dtype=torch.float64),
        "bf16_scalar": torch.tensor(-1.5, dtype=torch.bfloat16),
        "empty": torch.zeros(2, 0, 3),
    }
    metadata = {"format": "pt"}
    safetensors.torch.save_file(tensors, os.path.join(out_dir, "torch_mixed.safetensors"), metadata=metadata)
    expected = {k: v.float().numpy() for k, v in tensors.items()}
    dtypes = {"bf16": "BF16", "f16_odd": "F16", "f32": "F32", "f64": "F64", "bf16_scalar": "BF16", "empty": "F32"}
    record(out_dir, manifest, "torch_mixed", expected, dtypes, metadata)


def timm_file(out_dir, manifest):
    """A slice (stem, stages 0-1) of a tiny timm EdgeNeXt's state_dict, saved with the call
    timm's save_for_hf makes (safetensors.torch.save_file(model.state_dict(), ...))."""
    from timm.models import edgenext

    torch.manual_seed(3)
    model = edgenext.EdgeNeXt(depths=(1, 1, 1, 1), dims=(4, 8, 12, 16), heads=(2, 2, 2, 2),
                              d2_scales=(2, 2, 2, 2), num_classes=0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape))
    state = {k: v for k, v in model.state_dict().items() if k.startswith(("stem.", "stages.0.", "stages.1."))}
    safetensors.torch.save_file(state, os.path.join(out_dir, "timm_edgenext_slice.safetensors"))
    expected = {k: v.float().numpy() for k, v in state.items()}
    record(out_dir, manifest, "timm_edgenext_slice", expected, {k: "F32" for k in state}, None)


def int_file(out_dir, manifest):
    """Holds an I64 buffer (as BatchNorm's num_batches_tracked): loading must name it."""
    tensors = {"bn.weight": torch.ones(3), "bn.num_batches_tracked": torch.tensor(7, dtype=torch.int64)}
    safetensors.torch.save_file(tensors, os.path.join(out_dir, "torch_int64.safetensors"))


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "data", "safetensors")
    os.makedirs(out_dir, exist_ok=True)
    manifest = {}
    numpy_file(out_dir, manifest)
    torch_file(out_dir, manifest)
    timm_file(out_dir, manifest)
    int_file(out_dir, manifest)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True, ensure_ascii=True)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(out_dir, n)) for n in os.listdir(out_dir))
    print(f"wrote {len(os.listdir(out_dir))} files, {total} bytes, to {out_dir}")


if __name__ == "__main__":
    main()
