"""Writes tests/data/backbone/*.npz: timm EdgeNeXt features and gradients in float64 (CPU).

Run with a Python that has torch and timm (not needed by the tests):
    PY=$(tools/reference-python.sh) && OMP_NUM_THREADS=2 $PY tools/make_reference.py

For each (config, input) below: timm's EdgeNeXt(**CONFIGS[name], num_classes=0) gets the
weights of reference_weights.make_weights(param_names_and_shapes(cfg), seed=0) and is
converted to float64. Features f0..f3 are the four stage outputs (strides 4, 8, 16, 32; the
head's norm is not applied; timm's norm_pre is Identity for these configs). A random linear
loss L = sum_i <c_i, f_i> with c_i = make_cotangents(feature shapes, seed=1) gives dL/dx and
dL/dparam by autograd. Everything is computed in float64 from float32 data and stored as
float32. The same network in float32 gives the fp32 yardstick (relative errors vs float64).
The larger configs keep whole parameter gradients only for the stem, stages 0-1 and small
tensors, and a fixed sample plus the sum of squares for the rest (keeps_full_gradient and
gradient_sample_positions in reference_weights.py).
See tests/data/backbone/README.md for the file format.
"""
import argparse
import copy
import json
import os
import sys

import numpy as np
import torch
import timm
from timm.models.edgenext import EdgeNeXt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_weights import (CONFIGS, count_params, gradient_sample_positions,  # noqa: E402
                               keeps_full_gradient, make_cotangents, make_input, make_weights,
                               param_names_and_shapes)

WEIGHT_SEED = 0
COT_SEED = 1
# (config, input shape, input seed); one file each.
CASES = [
    ("edgenext_tiny_test", (2, 3, 64, 64), 100),
    ("edgenext_tiny_test", (1, 3, 64, 96), 101),
    ("edgenext_xx_small", (2, 3, 64, 96), 102),
    ("edgenext_x_small", (2, 3, 64, 96), 103),
]
# Parameters without the classifier head (head.norm.* and head.fc.*), as timm counts them (docs/model.md).
EXPECTED_PARAMS = {
    "edgenext_xx_small": 1_157_880,
    "edgenext_x_small": 2_143_420,
    "edgenext_small": 5_281_224,
    "edgenext_base": 17_925_124,
}
EXPECTED_BASE_WITH_HEAD = 18_511_292
MIN_BLOCK_EFFECT = 1e-2


def rel(a, b):
    """||a - b|| / ||b|| in float64."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm((a - b).ravel()) / np.linalg.norm(b.ravel()))


def backbone_list(model):
    """[(name, shape)] of the state_dict without head.*; checks there are no buffers."""
    sd = [(k, tuple(v.shape)) for k, v in model.state_dict().items() if not k.startswith("head.")]
    params = [(k, tuple(p.shape)) for k, p in model.named_parameters() if not k.startswith("head.")]
    assert sd == params, "state_dict and named_parameters differ (buffers?)"
    return sd


def build(name):
    torch.manual_seed(0)
    model = EdgeNeXt(**CONFIGS[name], num_classes=0).eval()
    if name in EXPECTED_PARAMS:  # the registered variant must be the same network
        reg = timm.create_model(name, pretrained=False, num_classes=0)
        assert backbone_list(reg) == backbone_list(model), f"CONFIGS[{name!r}] differs from timm's {name}"
    assert backbone_list(model) == [(n, tuple(s)) for n, s in param_names_and_shapes(CONFIGS[name])], \
        f"param_names_and_shapes({name}) differs from timm"
    return model


def load(model, weights):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in weights:
                p.copy_(torch.from_numpy(weights[n]))


def features(model, x):
    return model.forward_intermediates(x, indices=4, norm=False, intermediates_only=True)


def manual_features(model, x):
    out = []
    x = model.stem(x)
    for s in model.stages:
        x = s(x)
        out.append(x)
    return out


def forward_backward(model, x_np, cots, dtype):
    x = torch.tensor(x_np, dtype=dtype, requires_grad=True)
    model.zero_grad(set_to_none=True)
    feats = features(model, x)
    loss = sum((f * torch.tensor(c, dtype=dtype)).sum() for f, c in zip(feats, cots))
    loss.backward()
    grads = {n: p.grad.detach().numpy().astype(np.float64) for n, p in model.named_parameters()
             if not n.startswith("head.")}
    return [f.detach().numpy().astype(np.float64) for f in feats], x.grad.numpy().astype(np.float64), grads


def check_blocks_matter(model64, x_np, feats64, cfg):
    """Zeroing any block's gamma (and, for SDTA, gamma_xca or the positional encoding alone)
    must change that stage's output by > MIN_BLOCK_EFFECT (relative)."""
    x = torch.tensor(x_np, dtype=torch.float64)
    effects = []
    for i in range(4):
        for j in range(cfg["depths"][i]):
            blk = model64.stages[i].blocks[j]
            groups = [["gamma"]]
            if hasattr(blk, "gamma_xca"):
                groups.append(["gamma_xca"])
                if blk.pos_embd is not None:
                    groups.append(["pos_embd.token_projection.weight", "pos_embd.token_projection.bias"])
            for group in groups:
                m = copy.deepcopy(model64)
                b = m.stages[i].blocks[j]
                with torch.no_grad():
                    for pname in group:
                        b.get_parameter(pname).zero_()
                    f = features(m, x)[i].numpy()
                e = rel(f, feats64[i])
                effects.append((f"stages.{i}.blocks.{j}:{'+'.join(group)}", e))
                assert e > MIN_BLOCK_EFFECT, f"stages.{i}.blocks.{j} {group} barely matters: {e:.3g}"
    return effects


def pos_embd_fp32_effect(model64, x_np, feats64):
    """timm computes the Fourier features in float32 even in a float64 model (then casts);
    returns the relative feature change when they are computed in float64 instead."""
    import math
    from timm.models import edgenext as E
    orig = E.PositionalEncodingFourier.forward

    def fwd64(self, shape):
        B, H, W = shape
        y = torch.arange(1, H + 1, dtype=torch.float64)[None, :, None].expand(B, H, W)
        xx = torch.arange(1, W + 1, dtype=torch.float64)[None, None, :].expand(B, H, W)
        y = y / (H + 1e-6) * self.scale
        xx = xx / (W + 1e-6) * self.scale
        d = torch.arange(self.hidden_dim, dtype=torch.float64)
        d = self.temperature ** (2 * torch.div(d, 2, rounding_mode="floor") / self.hidden_dim)
        px, py = xx[..., None] / d, y[..., None] / d
        px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
        py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
        pos = torch.cat((py, px), dim=3).permute(0, 3, 1, 2)
        assert math.isclose(self.scale, 2 * math.pi)
        return self.token_projection(pos.to(self.token_projection.weight.dtype))

    try:
        E.PositionalEncodingFourier.forward = fwd64
        with torch.no_grad():
            f = features(model64, torch.tensor(x_np, dtype=torch.float64))
    finally:
        E.PositionalEncodingFourier.forward = orig
    return [rel(a.numpy(), b) for a, b in zip(f, feats64)]


def make_case(name, shape, in_seed, out_dir, checks):
    cfg = CONFIGS[name]
    model = build(name)
    plist = backbone_list(model)
    weights = make_weights(plist, WEIGHT_SEED)
    load(model, weights)
    model32 = model
    model64 = copy.deepcopy(model).double()

    x = make_input(shape, in_seed)
    with torch.no_grad():
        f_probe = features(model64, torch.tensor(x, dtype=torch.float64))
        f_manual = manual_features(model64, torch.tensor(x, dtype=torch.float64))
    for a, b in zip(f_probe, f_manual):  # forward_intermediates == plain stage outputs
        assert torch.equal(a, b)
    strides = [shape[2] // f.shape[2] for f in f_probe]
    assert strides == [4, 8, 16, 32] and [shape[3] // f.shape[3] for f in f_probe] == strides, strides
    assert [f.shape[1] for f in f_probe] == list(cfg["dims"])
    if name in EXPECTED_PARAMS:  # features_only (FeatureListNet, names stem_0/stages_0...) agrees
        fo = timm.create_model(name, pretrained=False, features_only=True).double().eval()
        fo.load_state_dict({n.replace("stem.", "stem_", 1).replace("stages.", "stages_", 1):
                            torch.from_numpy(w).double() for n, w in weights.items()})
        with torch.no_grad():
            for a, b in zip(fo(torch.tensor(x, dtype=torch.float64)), f_probe):
                assert torch.equal(a, b)

    cots = make_cotangents([tuple(f.shape) for f in f_probe], COT_SEED)
    f64, dx64, g64 = forward_backward(model64, x, cots, torch.float64)
    f32, dx32, g32 = forward_backward(model32, x, cots, torch.float32)
    names = [n for n, _ in plist]
    zero = [n for n in names if not np.any(g64[n])]
    assert not zero, f"parameters with zero gradient: {zero}"

    feat_err = [rel(a, b) for a, b in zip(f32, f64)]
    grad_err = [rel(g32[n], g64[n]) for n in names]
    dx_err = rel(dx32, dx64)
    worst = int(np.argmax(grad_err))
    print(f"  fp32 yardstick: feat relerr {['%.2e' % e for e in feat_err]}, dx {dx_err:.2e}, "
          f"worst grad {grad_err[worst]:.2e} ({names[worst]})")

    if checks:
        effects = check_blocks_matter(model64, x, f64, cfg)
        lo = min(effects, key=lambda t: t[1])
        print(f"  block effects: {len(effects)} checks, smallest {lo[1]:.3g} ({lo[0]})")
        if cfg["use_pos_emb"][1]:
            print(f"  float64 vs timm's float32 Fourier features: feature change "
                  f"{['%.1e' % e for e in pos_embd_fp32_effect(model64, x, f64)]}")

    arrays = {"x": x}
    for i in range(4):
        arrays[f"feat{i}"] = f64[i].astype(np.float32)
        arrays[f"cot{i}"] = cots[i]
    arrays["dx"] = dx64.astype(np.float32)
    for n, param_shape in plist:
        if keeps_full_gradient(name, n, param_shape):
            arrays["grad:" + n] = g64[n].astype(np.float32)
        else:
            flat = g64[n].ravel()
            arrays["gradsample:" + n] = flat[gradient_sample_positions(n, flat.size)].astype(np.float32)
            arrays["gradsumsq:" + n] = np.float64(np.dot(flat, flat))
    arrays["names"] = np.array(names)
    arrays["shapes"] = np.array(json.dumps([list(s) for _, s in plist]))
    arrays["config"] = np.array(json.dumps({"name": name, **cfg}))
    arrays["seeds"] = np.array([WEIGHT_SEED, in_seed, COT_SEED], dtype=np.int64)
    arrays["feat_fp32_relerr"] = np.array(feat_err, dtype=np.float32)
    arrays["grad_fp32_relerr"] = np.array(grad_err, dtype=np.float32)
    arrays["dx_fp32_relerr"] = np.float32(dx_err)
    arrays["grad_fp32_relerr_max"] = np.float32(max(max(grad_err), dx_err))
    arrays["versions"] = np.array(json.dumps({"torch": torch.__version__, "timm": timm.__version__,
                                              "numpy": np.__version__}))
    path = os.path.join(out_dir, f"{name}_{'x'.join(str(s) for s in shape)}.npz")
    np.savez_compressed(path, **arrays)
    print(f"  wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB, {len(names)} tensors, "
          f"{sum(int(np.prod(s)) for _, s in plist):,} parameters)")
    return path


def check_param_counts():
    for name, expected in EXPECTED_PARAMS.items():
        model = timm.create_model(name, pretrained=False, num_classes=0)
        n = sum(int(np.prod(s)) for _, s in backbone_list(model))
        print(f"{name}: {n:,} parameters without the head")
        assert n == expected == count_params(CONFIGS[name]), (name, n, expected)
    full = timm.create_model("edgenext_base", pretrained=False)
    n = sum(p.numel() for p in full.parameters())
    print(f"edgenext_base: {n:,} parameters with the 1000-class head")
    assert n == EXPECTED_BASE_WITH_HEAD
    print(f"edgenext_tiny_test: {count_params(CONFIGS['edgenext_tiny_test']):,} parameters")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data", "backbone"))
    ap.add_argument("--no-checks", action="store_true", help="skip the block-effect sanity checks")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    print(f"torch {torch.__version__}, timm {timm.__version__}, numpy {np.__version__}, "
          f"threads {torch.get_num_threads()}")
    check_param_counts()
    total = 0
    for k, (name, shape, seed) in enumerate(CASES):
        print(f"{name} {shape}:")
        # the block checks are forward-only; run them once per config
        first = all(c[0] != name for c in CASES[:k])
        total += os.path.getsize(make_case(name, shape, seed, args.out, checks=first and not args.no_checks))
    print(f"total {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
