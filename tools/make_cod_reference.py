"""Writes tests/data/cod/*.npz: the COD twin (tools/cod_twin.py) in float64 on the CPU.

Run with a Python that has torch and timm (not needed by the tests):
    PY=$(tools/reference-python.sh) && OMP_NUM_THREADS=2 $PY tools/make_cod_reference.py

Small config: backbone edgenext_tiny_test, decoder_dim 16, batch 2 of 64x64.
  cod_dense_e7.npz        E = 7 dense: outputs, intermediates, loss parts, every gradient
  cod_sparse_e3_top2.npz  E = 3 sparse top-2: the same plus routing and balance
  cod_train30.npz         30 optimizer steps of the dense model on the batch of cod_dense_e7
                          (stage 1 steps 0..9, stage 2 steps 10..29): loss, lr, grad norm per
                          step, final weights and EMA weights
  schedules.npz           OneCycle and cosine-with-warmup lr tables (several lengths)
Weights follow reference_weights.make_weights(zip(names, shapes), seed) with the full names
(backbone.* included), float32; the model runs in float64 from those values. Before writing,
the script checks the naming contract, init, the no-decay rule, the schedules against torch,
dense/sparse MoE semantics, the loss against NumPy, gradcheck, stage-1 freezing and thread
independence (see tests/data/cod/README.md).
"""
import argparse
import copy
import json
import os
import sys

import numpy as np
import timm
import torch
from torch.nn.utils.stateless import functional_call

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cod_twin as T  # noqa: E402
from reference_weights import CONFIGS, make_weights, param_names_and_shapes  # noqa: E402

BACKBONE, DIM, SHAPE = "edgenext_tiny_test", 16, (2, 3, 64, 64)
WEIGHT_SEED, DATA_SEED = 0, 200
CASES = {"cod_dense_e7": dict(num_experts=7, moe_top_k=0), "cod_sparse_e3_top2": dict(num_experts=3, moe_top_k=2)}
LOSS_W = dict(ds_weight=0.5, balance_weight=0.01)
TRAIN = dict(stage1_steps=10, stage2_steps=20, lr=1e-3, stage2_lr=1e-3, backbone_lr_mult=0.1, weight_decay=1e-4,
             betas=(0.9, 0.999), eps=1e-8, grad_clip=0.5, ema_decay=0.999, scheduler="onecycle", **LOSS_W)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EXPERT_PARAMS = [  # per type: (suffix, shape(D)) in registration order (the naming contract)
    [(f"dw.{j}.{t}", (lambda d, t=t: (d, 1, 3, 3) if t == "weight" else (d,))) for j in range(4) for t in ("weight", "bias")]
    + [("pw.weight", lambda d: (d, d, 1, 1)), ("pw.bias", lambda d: (d,)), ("norm.weight", lambda d: (d,)), ("norm.bias", lambda d: (d,))],
    [("dw.weight", lambda d: (d, 1, 7, 7)), ("dw.bias", lambda d: (d,)), ("pw.weight", lambda d: (d, d, 1, 1)),
     ("pw.bias", lambda d: (d,)), ("norm.weight", lambda d: (d,)), ("norm.bias", lambda d: (d,))],
    [("edge.weight", lambda d: (3 * d, 1, 3, 3)), ("edge.bias", lambda d: (3 * d,)), ("pw.weight", lambda d: (d, 3 * d, 1, 1)),
     ("pw.bias", lambda d: (d,)), ("norm.weight", lambda d: (d,)), ("norm.bias", lambda d: (d,))],
    [("pw.weight", lambda d: (d, 3 * d, 1, 1)), ("pw.bias", lambda d: (d,)), ("norm.weight", lambda d: (d,)), ("norm.bias", lambda d: (d,))],
    [("pw.weight", lambda d: (d, 2 * d, 1, 1)), ("pw.bias", lambda d: (d,)), ("gate.fc1.weight", lambda d: (d // 4, d)),
     ("gate.fc1.bias", lambda d: (d // 4,)), ("gate.fc2.weight", lambda d: (d, d // 4)), ("gate.fc2.bias", lambda d: (d,))],
    [(f"pools.{j}.{t}", (lambda d, t=t: (d // 4, d, 1, 1) if t == "weight" else (d // 4,))) for j in range(3) for t in ("weight", "bias")]
    + [("pw.weight", lambda d: (d, d + 3 * (d // 4), 1, 1)), ("pw.bias", lambda d: (d,)), ("norm.weight", lambda d: (d,)), ("norm.bias", lambda d: (d,))],
    [("norm.weight", lambda d: (d,)), ("norm.bias", lambda d: (d,)), ("xca.temperature", lambda d: (4, 1, 1)),
     ("xca.qkv.weight", lambda d: (3 * d, d)), ("xca.qkv.bias", lambda d: (3 * d,)), ("xca.proj.weight", lambda d: (d, d)),
     ("xca.proj.bias", lambda d: (d,))],
]


def contract_names(cfg, d, e_count):
    """[(name, shape)] written from the naming contract, independently of the twin."""
    out = [("backbone." + n, tuple(s)) for n, s in param_names_and_shapes(cfg)]
    for i, c in enumerate(cfg["dims"]):
        p = f"neck.{i}."
        out += [(p + "proj.conv.weight", (d, c, 1, 1)), (p + "proj.conv.bias", (d,)), (p + "proj.norm.weight", (d,)),
                (p + "proj.norm.bias", (d,)), (p + "moe.gate.weight", (e_count, d)), (p + "moe.gate.bias", (e_count,))]
        for e in range(e_count):
            out += [(p + f"moe.experts.{e}.{s}", tuple(f(d))) for s, f in EXPERT_PARAMS[e % 7]]
    for k in range(3):
        p = f"decoder.fuse.{k}."
        out += [(p + "conv1.weight", (d, 2 * d, 3, 3)), (p + "conv1.bias", (d,)), (p + "norm1.weight", (d,)), (p + "norm1.bias", (d,)),
                (p + "conv2.weight", (d, d, 3, 3)), (p + "conv2.bias", (d,)), (p + "norm2.weight", (d,)), (p + "norm2.bias", (d,))]
    for k in range(4):
        out += [(f"decoder.heads.{k}.weight", (1, d, 1, 1)), (f"decoder.heads.{k}.bias", (1,))]
    return out


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    nb = np.linalg.norm(b.ravel())
    return float(np.linalg.norm((a - b).ravel()) / (nb if nb > 0 else 1.0))


def tnp(t):
    return t.detach().cpu().numpy().astype(np.float64)


def make_batch(n, h, w, seed):
    """x [n,3,h,w] ImageNet-normalised, y [n,1,h,w] in {0,1} (1-3 ellipses), both float32."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    mean, std = np.array(IMAGENET_MEAN)[:, None, None], np.array(IMAGENET_STD)[:, None, None]
    x, y = np.empty((n, 3, h, w)), np.zeros((n, 1, h, w))
    for i in range(n):
        m = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
            ry, rx = rng.uniform(0.1, 0.3) * h, rng.uniform(0.1, 0.3) * w
            m |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        fg, bg = rng.uniform(0, 1, 3)[:, None, None], rng.uniform(0, 1, 3)[:, None, None]
        img = 0.6 * rng.uniform(0, 1, (3, h, w)) + 0.4 * np.where(m, fg, bg)
        x[i], y[i, 0] = (img - mean) / std, m
    return x.astype(np.float32), y.astype(np.float32)


def build(case, dtype, seed=WEIGHT_SEED):
    torch.manual_seed(0)
    model = T.CODModel(BACKBONE, DIM, **CASES[case])
    plist = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    weights = make_weights(plist, seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(torch.from_numpy(weights[n]))
    return model.to(dtype), plist, weights


def run_case(model, x_np, y_np, dtype):
    model.zero_grad(set_to_none=True)
    x, y = torch.tensor(x_np, dtype=dtype), torch.tensor(y_np, dtype=dtype)
    out = model(x)
    total, parts = T.cod_loss(out, y, **LOSS_W)
    total.backward()
    grads = {n: tnp(p.grad) if p.grad is not None else np.zeros(tuple(p.shape)) for n, p in model.named_parameters()}
    return out, parts, grads


# ----------------------------------------------------------------------------- checks
def check_contract_and_init():
    for case, kw in list(CASES.items()) + [("e9_top3", dict(num_experts=9, moe_top_k=3))]:
        torch.manual_seed(0)
        m = T.CODModel(BACKBONE, DIM, **kw)
        got = [(n, tuple(p.shape)) for n, p in m.named_parameters()]
        assert got == contract_names(CONFIGS[BACKBONE], DIM, kw["num_experts"]), f"naming contract broken ({case})"
        assert [n for n, _ in m.state_dict().items()] == [n for n, _ in got], "buffers in the state dict"
    sob = torch.tensor((T.SOBEL_X, T.SOBEL_Y, T.LAPLACIAN), dtype=torch.float32)
    for n, p in m.named_parameters():
        if ".moe.gate." in n or (n.endswith(".bias") and ".edge." in n):
            assert not p.any(), n
        elif n.endswith("edge.weight"):
            assert torch.equal(p[:, 0], sob.repeat(p.shape[0] // 3, 1, 1)), n
        elif not T.is_backbone(n) and n.endswith("temperature"):
            assert torch.equal(p, torch.ones_like(p)), n
    for mod_name, mod in m.named_modules():
        if isinstance(mod, torch.nn.LayerNorm) and not mod_name.startswith("backbone."):
            assert torch.equal(mod.weight, torch.ones_like(mod.weight)) and not mod.bias.any(), mod_name
            assert mod.eps == 1e-6, mod_name
    # no-decay name rule == module-type rule
    types = {}
    for mod_name, mod in m.named_modules():
        for pn, p in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{pn}"
            types[full] = (pn == "bias" or isinstance(mod, torch.nn.LayerNorm) or pn in ("gamma", "gamma_xca", "temperature")
                           or ".moe.gate" in full)
    for n, p in m.named_parameters():
        assert T.no_weight_decay(n, p) == types[n], n
    print("  naming contract, init values and no-decay rule: ok")


def check_schedules():
    for total in (1, 2, 3, 5, 7, 11, 20, 37, 100, 1000):
        for max_lr in (2.5e-4, 1e-3, 0.37):
            opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=max_lr)
            sch = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total, pct_start=0.1,
                                                      anneal_strategy="cos", div_factor=25.0, final_div_factor=1e4,
                                                      cycle_momentum=False)
            for s in range(total):
                assert opt.param_groups[0]["lr"] == T.onecycle_lr(s, total, max_lr), (total, max_lr, s)
                opt.step()
                sch.step()
    try:
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10, pct_start=0.1, cycle_momentum=False)
        raise AssertionError("torch's OneCycleLR accepted 10 steps; revisit interpretation 11")
    except ZeroDivisionError:
        pass
    assert abs(T.onecycle_lr(0, 10, 1.0) - 1.0 / 25) < 1e-16 and T.onecycle_lr(1, 10, 1.0) < 1.0
    assert abs(T.cosine_warmup_lr(4, 20, 5, 1.0, 0.01) - 1.0) < 1e-15 and T.cosine_warmup_lr(19, 20, 5, 1.0, 0.01) == 0.01
    print("  OneCycle == torch.optim.lr_scheduler.OneCycleLR bit for bit (T = 1..1000 except 10, where torch "
          "divides by zero): ok")


def check_moe_semantics():
    g = torch.Generator().manual_seed(5)
    z = torch.randn(8, DIM, 8, 8, generator=g, dtype=torch.float64)
    torch.manual_seed(1)
    dense = T.MoE(DIM, 7, 0).double()
    with torch.no_grad():  # gate zero (init): every expert weighs 1/E
        out, info = dense(z)
        mean = sum(ex(z) for ex in dense.experts) / 7
        assert rel(tnp(out), tnp(z + mean)) < 1e-14 and torch.allclose(info["probs"], torch.full((8, 7), 1 / 7., dtype=torch.float64))
    for e_count, k in ((7, 2), (3, 2), (9, 3), (5, 1)):
        torch.manual_seed(2)
        moe = T.MoE(DIM, e_count, k).double()
        with torch.no_grad():
            moe.gate.weight.normal_(0, 3.0, generator=g)
            moe.gate.bias.normal_(0, 1.0, generator=g)
        rows_seen = [0] * e_count
        hooks = [ex.register_forward_hook(lambda mod, inp, o, e=e: rows_seen.__setitem__(e, rows_seen[e] + inp[0].shape[0]))
                 for e, ex in enumerate(moe.experts)]
        with torch.no_grad():
            out, info = moe(z)
        for h in hooks:
            h.remove()
        probs = tnp(info["probs"])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        assert np.array_equal(order, info["chosen"].numpy())
        assert rows_seen == [int((order == e).sum()) for e in range(e_count)] and sum(rows_seen) == 8 * k
        with torch.no_grad():
            full = [tnp(ex(z)) for ex in moe.experts]
        ref = tnp(z).copy()
        for n in range(8):
            top = probs[n, order[n]]
            for j, e in enumerate(order[n]):
                ref[n] += top[j] / top.sum() * full[e][n]
        assert rel(tnp(out), ref) < 1e-14
        f = np.array([(order == e).sum() for e in range(e_count)]) / (8 * k)
        assert abs(float(info["balance"]) - e_count * float((f * probs.mean(0)).sum())) < 1e-14
        assert len({tuple(r) for r in order}) > 1, "routing did not vary in the check"
    moe_k = copy.deepcopy(moe)
    moe_k.top_k = e_count
    moe_d = copy.deepcopy(moe)
    moe_d.top_k = 0
    with torch.no_grad():
        assert rel(tnp(moe_k(z)[0]), tnp(moe_d(z)[0])) < 1e-14
    print("  dense with equal gates = mean of experts; sparse runs exactly the top-k experts per image "
          "(renormalised; E,k = 7,2 3,2 9,3 5,1); top-k = E equals dense: ok")


def np_avgpool_incl(y, k):
    pad = k // 2
    yp = np.pad(y, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    c = np.pad(yp.cumsum(2).cumsum(3), ((0, 0), (0, 0), (1, 0), (1, 0)))
    h, w = y.shape[2:]
    return (c[:, :, k:k + h, k:k + w] - c[:, :, :h, k:k + w] - c[:, :, k:k + h, :w] + c[:, :, :h, :w]) / (k * k)


def check_loss(x_logits, y):
    lg, ym = tnp(x_logits), np.asarray(y, np.float64)
    w = 1 + 5 * np.abs(np_avgpool_incl(ym, 31) - ym)
    bce = np.maximum(lg, 0) - lg * ym + np.log1p(np.exp(-np.abs(lg)))
    wbce = (w * bce).sum((1, 2, 3)) / w.sum((1, 2, 3))
    p = 1 / (1 + np.exp(-lg))
    inter, union = (w * p * ym).sum((1, 2, 3)), (w * (p + ym)).sum((1, 2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    loss, tw, ti = T.structure_loss(x_logits, torch.tensor(ym))
    assert rel(tnp(tw), wbce) < 1e-13 and rel(tnp(ti), wiou) < 1e-13 and abs(float(loss) - (wbce + wiou).mean()) < 1e-13
    # the weights really are used: the unweighted mean BCE differs
    assert abs(wbce - bce.mean((1, 2, 3))).max() > 1e-3


GRADCHECK_PICKS = ["backbone.stem.0.weight", "backbone.stages.1.blocks.1.pos_embd.token_projection.weight",
                   "backbone.stages.3.blocks.1.xca.temperature", "neck.0.proj.conv.weight", "neck.1.proj.norm.bias",
                   "neck.2.moe.gate.weight", "neck.3.moe.gate.bias", "neck.0.moe.experts.0.dw.3.weight",
                   "neck.1.moe.experts.1.dw.weight", "neck.2.moe.experts.2.edge.weight", "neck.3.moe.experts.2.norm.weight",
                   "neck.0.moe.experts.3.pw.weight", "neck.1.moe.experts.4.gate.fc1.weight", "neck.2.moe.experts.4.pw.bias",
                   "neck.3.moe.experts.5.pools.2.weight", "neck.0.moe.experts.5.pools.0.bias",
                   "neck.1.moe.experts.6.xca.temperature", "neck.3.moe.experts.6.xca.qkv.weight",
                   "decoder.fuse.0.conv1.weight", "decoder.fuse.2.norm2.bias", "decoder.heads.3.bias", "decoder.heads.0.weight"]


def check_gradcheck(case):
    model, _, _ = build(case, torch.float64)
    x_np, y_np = make_batch(2, 32, 32, DATA_SEED + 7)
    x, y = torch.tensor(x_np, dtype=torch.float64), torch.tensor(y_np, dtype=torch.float64)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    picks = [(n, base[n].numel() // 2) for n in GRADCHECK_PICKS if n in base]
    picks += [(n, 0) for n in GRADCHECK_PICKS if n in base and base[n].numel() > 1]

    def f(delta):
        params = dict(base)
        for j, (n, i) in enumerate(picks):
            params[n] = params[n].flatten().index_add(0, torch.tensor([i]), delta[j:j + 1]).view(base[n].shape)
        return T.cod_loss(functional_call(model, params, (x,)), y, **LOSS_W)[0]

    delta = torch.zeros(len(picks), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (delta,), eps=1e-6, atol=1e-8, rtol=1e-5)
    check_loss(functional_call(model, base, (x,))["preds"][0], y_np)
    print(f"  gradcheck {case} (batch 2 of 32x32, {len(picks)} elements of {len({n for n, _ in picks})} tensors) "
          "and structure loss == NumPy: ok")


# ----------------------------------------------------------------------------- fixtures
def common_arrays(plist, case_cfg):
    return {"names": np.array([n for n, _ in plist]), "shapes": np.array(json.dumps([list(s) for _, s in plist])),
            "config": np.array(json.dumps({"backbone": BACKBONE, "backbone_config": CONFIGS[BACKBONE], "decoder_dim": DIM,
                                           **case_cfg, **LOSS_W})),
            "seeds": np.array([WEIGHT_SEED, DATA_SEED], dtype=np.int64),
            "versions": np.array(json.dumps({"torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__}))}


def write(out_dir, name, arrays):
    path = os.path.join(out_dir, name + ".npz")
    np.savez_compressed(path, **arrays)
    print(f"  wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")
    return os.path.getsize(path)


def make_forward_case(case, x_np, y_np, out_dir):
    model, plist, weights = build(case, torch.float64)
    out, parts, grads = run_case(model, x_np, y_np, torch.float64)
    m32, _, _ = build(case, torch.float32)
    out32, parts32, grads32 = run_case(m32, x_np, y_np, torch.float32)
    names = [n for n, _ in plist]
    zero = [n for n in names if not np.any(grads[n])]
    if CASES[case]["moe_top_k"] == 0:
        assert not zero, f"zero gradients: {zero}"
    a = common_arrays(plist, CASES[case])
    a["x"], a["y"] = x_np, y_np
    for i in range(4):
        a[f"out{i}"] = tnp(out["preds"][i]).astype(np.float32)
        a[f"logit{i}"] = tnp(out["logits"][i]).astype(np.float32)
        a[f"feat{i}"] = tnp(out["feats"][i]).astype(np.float32)
        a[f"dec{i}"] = tnp(out["decs"][i]).astype(np.float32)
        a[f"proj{i}"] = tnp(out["projs"][i]).astype(np.float32)
        a[f"neck{i}"] = tnp(out["necks"][i]).astype(np.float32)
        info = out["moe"][i]
        a[f"gate{i}"] = tnp(info["probs"])
        a[f"moe_weight{i}"] = tnp(info["weights"])
        if "chosen" in info:
            a[f"chosen{i}"] = info["chosen"].numpy().astype(np.int64)
            a[f"balance{i}"] = np.float64(float(info["balance"]))
    for key, v in parts.items():
        a["loss:" + key] = tnp(v)
    for n in names:
        a["grad:" + n] = grads[n].astype(np.float32)
    # fp32 yardstick: the same network in float32 (torch, CPU)
    a["out_fp32_relerr"] = np.array([rel(tnp(out32["preds"][i]), tnp(out["preds"][i])) for i in range(4)])
    a["loss_fp32_relerr"] = np.float64(rel(float(parts32["total"]), float(parts["total"])))
    g_err = np.array([rel(grads32[n], grads[n]) for n in names])
    a["grad_fp32_relerr"] = g_err
    worst = int(np.argmax(g_err))
    print(f"  {case}: loss {float(parts['total']):.6f}; fp32 yardstick: out {['%.1e' % e for e in a['out_fp32_relerr']]}, "
          f"loss {a['loss_fp32_relerr']:.1e}, worst grad {g_err[worst]:.1e} ({names[worst]}), "
          f"median grad {np.median(g_err):.1e}; zero-gradient tensors: {len(zero)}")
    if CASES[case]["moe_top_k"]:
        k = CASES[case]["moe_top_k"]
        margins = []
        for i in range(4):
            g = np.sort(a[f"gate{i}"], axis=1)[:, ::-1]
            margins.append(float((g[:, k - 1] - g[:, k]).min()))
        a["route_margin"] = np.array(margins)
        routes = [a[f"chosen{i}"].tolist() for i in range(4)]
        print(f"    routing per scale {routes}; smallest gap k-th vs (k+1)-th gate per scale "
              f"{['%.3g' % m for m in margins]}; balance {[float(a[f'balance{i}']) for i in range(4)]}")
        assert min(margins) > 1e-3, "routing too close to a tie for a float32 implementation"
        for i in range(4):
            assert np.array_equal(a[f"chosen{i}"], out32["moe"][i]["chosen"].numpy()), "fp32 routes differently"
    return write(out_dir, case, a), model, names


def train_run(dtype, x_np, y_np, check=False):
    model, plist, weights = build("cod_dense_e7", dtype)
    x, y = torch.tensor(x_np, dtype=dtype), torch.tensor(y_np, dtype=dtype)
    tr = T.Trainer(model, TRAIN["stage1_steps"], TRAIN["stage2_steps"], **{k: v for k, v in TRAIN.items() if "steps" not in k})
    hist = []
    bb0 = {n: p.detach().clone() for n, p in model.named_parameters() if T.is_backbone(n)}
    for s in range(TRAIN["stage1_steps"] + TRAIN["stage2_steps"]):
        if check and s == TRAIN["stage1_steps"] - 1:  # stage 1 (begun at step 0): no graph through the backbone
            assert tr.stage == 1 and not any(f.requires_grad for f in model.features(x))
        hist.append(tr.step([(x, y)]))
        if check and s < TRAIN["stage1_steps"]:
            assert all(p.grad is None for n, p in model.named_parameters() if T.is_backbone(n))
            assert all(torch.equal(p, bb0[n]) for n, p in model.named_parameters() if T.is_backbone(n))
    if check:
        assert not any(torch.equal(p, bb0[n]) for n, p in model.named_parameters() if T.is_backbone(n)), "stage 2 froze"
    final = {n: tnp(p) for n, p in model.named_parameters()}
    ema = {n: tnp(v) for n, v in tr.ema.shadow.items()}
    return hist, final, ema, weights, plist


def make_train_case(x_np, y_np, out_dir):
    hist, final, ema, weights, plist = train_run(torch.float64, x_np, y_np, check=True)
    hist32, final32, ema32, _, _ = train_run(torch.float32, x_np, y_np)
    names = [n for n, _ in plist]
    a = common_arrays(plist, dict(CASES["cod_dense_e7"], recipe=TRAIN))
    a["x"], a["y"] = x_np, y_np
    for key in ("loss", "lr_head", "lr_backbone", "grad_norm", "ema_decay"):
        a[key] = np.array([h[key] for h in hist], dtype=np.float64)
    a["stage"] = np.array([h["stage"] for h in hist], dtype=np.int64)
    for n in names:
        a["final:" + n] = final[n].astype(np.float32)
        a["ema:" + n] = ema[n].astype(np.float32)
    loss32 = np.array([h["loss"] for h in hist32])
    a["loss_fp32_relerr"] = np.abs(loss32 - a["loss"]) / np.abs(a["loss"])
    a["final_fp32_relerr"] = np.array([rel(final32[n], final[n]) for n in names])
    a["delta_fp32_relerr"] = np.array([rel(final32[n] - weights[n], final[n] - weights[n]) for n in names])
    a["ema_fp32_relerr"] = np.array([rel(ema32[n], ema[n]) for n in names])
    a["delta_rel"] = np.array([rel(final[n], weights[n]) for n in names])  # how far each tensor moved
    print(f"  train30: loss {a['loss'][0]:.5f} -> {a['loss'][9]:.5f} (end of stage 1) -> {a['loss'][-1]:.5f}; "
          f"lr head {a['lr_head'][0]:.3g}..{a['lr_head'].max():.3g}, grad norm {a['grad_norm'][0]:.3g} .. {a['grad_norm'][-1]:.3g}")
    print(f"    fp32 yardstick: worst step loss {a['loss_fp32_relerr'].max():.1e}, final weights worst "
          f"{a['final_fp32_relerr'].max():.1e} ({names[int(np.argmax(a['final_fp32_relerr']))]}), update (final - init) worst "
          f"{a['delta_fp32_relerr'].max():.1e} median {np.median(a['delta_fp32_relerr']):.1e}, ema worst {a['ema_fp32_relerr'].max():.1e}")
    print(f"    how far tensors moved, ||final - init|| / ||init||: median {np.median(a['delta_rel']):.2e}, "
          f"min {a['delta_rel'].min():.1e}, max {a['delta_rel'].max():.1e}")
    assert a["loss"][-1] < a["loss"][0] and a["loss"][9] < a["loss"][0]
    return write(out_dir, "cod_train30", a)


def make_schedules(out_dir):
    a = {}
    for total in (1, 2, 5, 10, 20, 37, 300):
        a[f"onecycle_T{total}"] = np.array([T.onecycle_lr(s, total, 2.5e-4) for s in range(total)])
    for total, warm in ((20, 0), (20, 5), (37, 10), (5, 5), (5, 8), (300, 30)):
        a[f"cosine_T{total}_W{warm}"] = np.array([T.cosine_warmup_lr(s, total, warm, 2.5e-4, 1e-6) for s in range(total)])
    a["params"] = np.array(json.dumps({"onecycle": dict(max_lr=2.5e-4, pct_start=0.1, div_factor=25.0, final_div_factor=1e4),
                                       "cosine": dict(base_lr=2.5e-4, min_lr=1e-6)}))
    return write(out_dir, "schedules", a)


def check_threads(x_np, y_np, ref_model, ref_names):
    """float64 results with 1 thread vs the fixture's 2: forward bit-identical, gradients within
    rounding (torch's CPU reductions, e.g. LayerNorm backward, split by thread count)."""
    torch.set_num_threads(1)
    model, _, _ = build("cod_dense_e7", torch.float64)
    out, parts, grads = run_case(model, x_np, y_np, torch.float64)
    torch.set_num_threads(2)
    with torch.no_grad():
        ref = ref_model(torch.tensor(x_np, dtype=torch.float64))
    same_fwd = all(torch.equal(a, b) for a, b in zip(out["preds"], ref["preds"]))
    worst = max(rel(grads[n], tnp(p.grad)) for n, p in zip(ref_names, ref_model.parameters()))
    assert same_fwd and worst < 1e-12, (same_fwd, worst)
    print(f"  dense case with 1 vs 2 threads: outputs bit-identical, gradients within {worst:.1e} relative")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data", "cod"))
    ap.add_argument("--no-checks", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    print(f"torch {torch.__version__}, timm {timm.__version__}, numpy {np.__version__}, threads {torch.get_num_threads()}")
    if not args.no_checks:
        check_contract_and_init()
        check_schedules()
        check_moe_semantics()
        for case in CASES:
            check_gradcheck(case)
    x_np, y_np = make_batch(*SHAPE[:1], *SHAPE[2:], DATA_SEED)
    total = 0
    for case in CASES:
        size, model, names = make_forward_case(case, x_np, y_np, args.out)
        total += size
        if case == "cod_dense_e7" and not args.no_checks:
            check_threads(x_np, y_np, model, names)
    total += make_train_case(x_np, y_np, args.out)
    total += make_schedules(args.out)
    print(f"total {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
