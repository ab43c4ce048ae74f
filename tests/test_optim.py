"""AdamW, schedules, clipping, EMA and the training-state file (csrc/train) against NumPy
transcriptions of torch's float32 arithmetic and the PyTorch twin's fixtures
(tests/data/cod/schedules.npz, cod_train30.npz)."""
import json
import math
import os
import re

import numpy as np
import pytest

import codext
from testing_module import testing

C = testing  # the training arithmetic's bindings are test-only (codext._testing)
HERE = os.path.dirname(os.path.abspath(__file__))
COD = os.path.join(HERE, "data", "cod")
f32 = np.float32


# ----------------------------------------------------------------------------- references
def fma32(a, b, c):
    """Exactly rounded float32 fused multiply-add a * b + c (NumPy has none).

    a * b is exact in float64 (24 + 24 bits); s = a*b + c rounds once and TwoSum gives the
    exact error e. Rounding s to float32 can differ from rounding s + e only when s lies
    exactly halfway between two floats; then e's sign decides."""
    a, b, c = (np.asarray(x, f32) for x in (a, b, c))
    p = a.astype(np.float64) * b.astype(np.float64)
    c64 = c.astype(np.float64)
    s = p + c64
    bb = s - p
    err = (p - (s - bb)) + (c64 - bb)
    r = s.astype(f32)
    d = s - r.astype(np.float64)
    toward = np.where(d > 0, f32(np.inf), f32(-np.inf)).astype(f32)
    other = np.nextafter(r, toward)
    midpoint = (d != 0) & (s == (r.astype(np.float64) + other.astype(np.float64)) / 2)
    flip = midpoint & (err != 0) & (np.sign(err) == np.sign(d))
    return np.where(flip, other, r).astype(f32)


def adamw_ref(p, g, m, v, step, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
    """torch 1.13 _single_tensor_adamw in float32 as its AVX2 CPU kernels compute it:
    Python scalars rounded to float32, add_(alpha) and addcmul_ fused."""
    p = p * f32(1 - lr * wd)
    m = fma32(g, f32(1 - b1), m * f32(b1))
    v = fma32(f32(1 - b2) * g, g, v * f32(b2))
    bias1 = 1 - b1 ** float(step)
    bias2 = 1 - b2 ** float(step)
    denom = np.sqrt(v) / f32(math.sqrt(bias2)) + f32(eps)
    p = p + (f32(-(lr / bias1)) * m) / denom
    return p, m, v


def make_layout(sizes, groups=None, decays=None, gap=16, start=0):
    """params list (name, offset, shape, group, decay) with `gap`-float padding between."""
    params, off = [], start
    for i, shape in enumerate(sizes):
        shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
        n = int(np.prod(shape))
        params.append((f"p{i}", off, shape, groups[i] if groups else i % 2, decays[i] if decays else (i + 1) % 2))
        off += n + gap
    return params, off


def views(buf, params):
    return [buf[o:o + int(np.prod(s))] for _, o, s, _, _ in params]


def random_grads(rng, total):
    return (rng.normal(size=total) * 10.0 ** rng.uniform(-7, 1, size=total)).astype(f32)


def bits(x):
    return np.asarray(x, f32).view(np.uint32)


# ----------------------------------------------------------------------------- fma helper
def test_fma32_reference_is_exact():
    """The NumPy fma emulation against exact rational arithmetic on crafted midpoints."""
    from fractions import Fraction
    rng = np.random.default_rng(5)
    a = rng.normal(size=200).astype(f32)
    b = rng.normal(size=200).astype(f32)
    c = rng.normal(size=200).astype(f32) * f32(4)
    # double rounding traps: a*b + c = a float32 midpoint -+ 2^-70, which float64 rounds onto
    # the midpoint itself (then ties-to-even picks the wrong float in half the cases)
    e = 2.0 ** -23
    traps = [(1 + e, 2.0 ** -24 * (1 - e), 1 + e), (1 + e, 2.0 ** -24 * (1 + e), 1.0),
             (1 + e, 2.0 ** -24 * (1 - e), 1.0), (1 + e, -(2.0 ** -24) * (1 - e), -(1 + e))]
    i = 0
    for ta, tb, tc in traps:
        for scale in (1.0, 2.0 ** 20, 2.0 ** -30):
            a[i], b[i], c[i] = ta * scale, tb, tc * scale
            i += 1
    naive = (a.astype(np.float64) * b + c).astype(f32)
    got = fma32(a, b, c)
    assert (naive != got).any()                 # the traps do trip plain float64 rounding
    for i in range(200):
        exact = Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))
        lo = f32(float(exact))
        cands = [lo, np.nextafter(lo, f32(np.inf)), np.nextafter(lo, f32(-np.inf))]
        best = min(cands, key=lambda x: (abs(Fraction(float(x)) - exact), int(bits(x)) & 1))
        assert bits(got[i]) == bits(best), i


# ----------------------------------------------------------------------------- AdamW
def test_adamw_matches_torch_float32_transcription_30_steps():
    rng = np.random.default_rng(0)
    sizes = [(8, 3, 3, 3), (8,), (37, 11), (1,), (129,), (5, 7)]
    params, total = make_layout(sizes)
    groups = [p[3] for p in params]
    decays = [p[4] for p in params]
    values = np.full(total, np.nan, f32)   # padding NaN: must stay untouched
    for view in views(values, params):
        view[:] = rng.normal(size=view.size)
    m = np.zeros(total, f32)
    v = np.zeros(total, f32)
    steps = np.zeros(len(params), np.int64)
    ref = [(x.copy(), np.zeros_like(x), np.zeros_like(x)) for x in views(values, params)]
    lrs = (3e-5, 1e-3)
    for step in range(1, 31):
        grads = random_grads(rng, total)
        C.adamw_step(values, grads, m, v, steps, params, lrs, weight_decay=1e-4)
        ref = [adamw_ref(p, g, mm, vv, step, lrs[groups[i]], 1e-4 if decays[i] else 0.0)
               for i, ((p, mm, vv), g) in enumerate(zip(ref, views(grads, params)))]
    for i, (p, mm, vv) in enumerate(ref):
        assert np.array_equal(bits(views(values, params)[i]), bits(p)), params[i]
        assert np.array_equal(bits(views(m, params)[i]), bits(mm)), params[i]
        assert np.array_equal(bits(views(v, params)[i]), bits(vv)), params[i]
    assert list(steps) == [30] * len(params)
    pad = np.ones(total, bool)
    for _, o, s, _, _ in params:
        pad[o:o + int(np.prod(s))] = False
    assert np.isnan(values[pad]).all() and not m[pad].any() and not v[pad].any()


def test_adamw_mask_and_per_parameter_steps():
    """Masked-out parameters keep value, moments and step count (torch skips a parameter
    whose grad is None); each parameter's bias correction uses its own step count."""
    rng = np.random.default_rng(1)
    params, total = make_layout([100, 50, 3000, 7], groups=[0, 0, 1, 1], decays=[1, 0, 1, 0])
    values = rng.normal(size=total).astype(f32)
    m = np.zeros(total, f32)
    v = np.zeros(total, f32)
    steps = np.zeros(4, np.int64)
    ref = [(x.copy(), np.zeros_like(x), np.zeros_like(x)) for x in views(values, params)]
    ref_steps = [0] * 4
    masks = [[0, 0, 1, 1]] * 3 + [[1, 1, 1, 0], [1, 0, 1, 1], [1, 1, 1, 1]]
    for mask in masks:
        grads = random_grads(rng, total)
        before = values.copy()
        C.adamw_step(values, grads, m, v, steps, params, (2e-4, 1e-3), mask=np.array(mask, np.uint8))
        for i, on in enumerate(mask):
            if not on:
                assert np.array_equal(bits(views(values, params)[i]), bits(views(before, params)[i]))
                continue
            ref_steps[i] += 1
            p, mm, vv = ref[i]
            ref[i] = adamw_ref(p, views(grads, params)[i], mm, vv, ref_steps[i], (2e-4, 1e-3)[params[i][3]],
                               1e-4 if params[i][4] else 0.0)
    assert list(steps) == ref_steps == [3, 2, 6, 5]
    for i in range(4):
        assert np.array_equal(bits(views(values, params)[i]), bits(ref[i][0]))
        assert np.array_equal(bits(views(v, params)[i]), bits(ref[i][2]))


def test_optimizer_results_do_not_depend_on_thread_count():
    rng = np.random.default_rng(2)
    # several CX_REDUCE_CHUNK (16384) chunks, parameters crossing chunk borders
    params, total = make_layout([20000, 3, 40001, 16384, 9999, 5], gap=5)
    values0 = rng.normal(size=total).astype(f32)
    grads = [random_grads(rng, total) for _ in range(3)]
    outs = []
    old = codext.get_num_threads()
    try:
        for threads in (1, 2, 3):
            codext.set_num_threads(threads)
            values, m, v = values0.copy(), np.zeros(total, f32), np.zeros(total, f32)
            ema = values0.copy()
            steps = np.zeros(len(params), np.int64)
            norms = []
            for t, g in enumerate(grads):
                g = g.copy()
                norms.append(C.clip_grad_norm(g, params, max_norm=0.5))
                C.adamw_step(values, g, m, v, steps, params, (1e-4, 1e-3))
                C.ema_update(ema, values, params, 0.999, t)
            outs.append((values, m, v, ema, norms))
    finally:
        codext.set_num_threads(old)
    for other in outs[1:]:
        for a, b in zip(outs[0][:4], other[:4]):
            assert np.array_equal(bits(a), bits(b))
        assert outs[0][4] == other[4]


def test_adamw_bad_arguments():
    params, total = make_layout([10, 10])
    values, grads = np.zeros(total, f32), np.zeros(total, f32)
    m, v, steps = np.zeros(total, f32), np.zeros(total, f32), np.zeros(2, np.int64)
    with pytest.raises(ValueError, match="lr"):
        C.adamw_step(values, grads, m, v, steps, params, (-1e-3, 1e-3))
    with pytest.raises(ValueError, match="betas"):
        C.adamw_step(values, grads, m, v, steps, params, (1e-3, 1e-3), betas=(1.0, 0.999))
    with pytest.raises(TypeError, match="exp_avg"):
        C.adamw_step(values, grads, m.astype(np.float64), v, steps, params, (1e-3, 1e-3))
    with pytest.raises(ValueError, match="p1.*overlaps"):
        C.adamw_step(values, grads, m, v, steps, [("p0", 0, (10,), 0, 1), ("p1", 5, (10,), 1, 1)], (1e-3, 1e-3))
    with pytest.raises(ValueError, match="outside the buffer"):
        C.adamw_step(values, grads, m, v, steps, [("p0", 0, (10,), 0, 1), ("p1", total - 5, (10,), 1, 1)],
                     (1e-3, 1e-3))
    with pytest.raises(ValueError, match="length"):
        C.adamw_step(values, grads[:-1], m, v, steps, params, (1e-3, 1e-3))


def test_parameter_classes_follow_the_twin_rule():
    d = np.load(os.path.join(COD, "cod_dense_e7.npz"))
    names = [str(n) for n in d["names"]]
    shapes = json.loads(str(d["shapes"]))
    shapes = [shapes[n] for n in names] if isinstance(shapes, dict) else shapes
    classes = C.optim_classify(names, [len(s) for s in shapes])
    for name, shape, (group, decay) in zip(names, shapes, classes):
        assert group == (0 if name.startswith("backbone.") else 1), name
        no_decay = len(shape) <= 1 or name.endswith("temperature") or ".moe.gate." in name
        assert decay == (not no_decay), name
    by_name = dict(zip(names, classes))
    assert by_name["neck.0.moe.gate.weight"] == (1, 0)
    assert by_name["neck.0.moe.experts.4.gate.fc1.weight"] == (1, 1)     # contrast expert's SE gate
    assert by_name["neck.1.moe.experts.2.edge.weight"] == (1, 1)         # edge filters decay
    assert by_name["backbone.stages.1.blocks.1.xca.temperature"] == (0, 0)
    assert by_name["decoder.heads.0.bias"] == (1, 0)
    assert sum(1 for _, dec in classes if dec) > 0 and sum(1 for _, dec in classes if not dec) > 0


# ----------------------------------------------------------------------------- schedules
def test_schedules_match_the_twin_tables_exactly():
    s = np.load(os.path.join(COD, "schedules.npz"))
    cfg = json.loads(str(s["params"]))
    n = 0
    for key in s.files:
        if key == "params":
            continue
        m = re.fullmatch(r"onecycle_T(\d+)", key)
        if m:
            got = C.schedule_lr("onecycle", int(m[1]), cfg["onecycle"]["max_lr"])
        else:
            T, W = map(int, re.fullmatch(r"cosine_T(\d+)_W(\d+)", key).groups())
            got = C.schedule_lr("cosine", T, cfg["cosine"]["base_lr"], W, cfg["cosine"]["min_lr"])
        assert got.dtype == np.float64 and np.array_equal(got, s[key]), key
        n += 1
    assert n == 13


def onecycle_py(step, total, max_lr):
    """torch's OneCycleLR (pct_start 0.1, cos, div 25, final 1e4); zero-width phase: pct 0."""
    initial = max_lr / 25.0
    phases = [(float(0.1 * total) - 1, initial, max_lr), (total - 1, max_lr, initial / 1e4)]
    start = 0
    for i, (end, lr_from, lr_to) in enumerate(phases):
        if step <= end or i == len(phases) - 1:
            pct = (step - start) / (end - start) if end != start else 0.0
            return lr_to + (lr_from - lr_to) / 2.0 * (math.cos(math.pi * pct) + 1)
        start = end


def test_onecycle_every_length_and_the_ten_step_rule():
    for total in list(range(1, 60)) + [99, 100, 101, 1000]:
        want = [onecycle_py(s, total, 1e-3) for s in range(total)]
        assert C.schedule_lr("onecycle", total, 1e-3).tolist() == want, total
    ten = C.schedule_lr("onecycle", 10, 1e-3)
    assert ten[0] == pytest.approx(1e-3 / 25, rel=1e-15) and ten[1] == pytest.approx(9.698e-4, rel=1e-4) and ten.max() < 1e-3


def test_lr_plan_and_ema_decay_match_the_twin_training_run():
    t = np.load(os.path.join(COD, "cod_train30.npz"))
    r = json.loads(str(t["config"]))["recipe"]
    plan = C.lr_plan(r["scheduler"], r["stage1_steps"], r["stage2_steps"], r["lr"], r["stage2_lr"],
                     r["backbone_lr_mult"], 0, 1e-6)
    assert np.array_equal(plan["lr_head"], t["lr_head"])
    assert np.array_equal(plan["lr_backbone"], t["lr_backbone"])
    assert np.array_equal(plan["stage"], t["stage"])
    assert np.flatnonzero(plan["stage_begins"]).tolist() == [0, 10]
    decays = [C.ema_decay_at(r["ema_decay"], s) for s in range(30)]
    assert np.array_equal(np.array(decays), t["ema_decay"])


def test_cosine_plan_scales_each_groups_floor():
    lr, lr2, mult, min_lr, warm = 3e-4, 7e-4, 0.1, 1e-6, 3
    plan = C.lr_plan("cosine", 8, 12, lr, lr2, mult, warm, min_lr)

    def cosine(step, total, base, floor):
        w = min(warm, total)
        if step < w:
            return base * (step + 1) / w
        span = total - 1 - w
        q = (step - w) / span if span > 0 else 1.0
        return floor + (base - floor) * (1 + math.cos(math.pi * q)) / 2

    head = [cosine(s, 8, lr, min_lr * lr / lr) for s in range(8)]
    head += [cosine(s, 12, lr2 * 1.0, min_lr * (lr2 * 1.0) / lr2) for s in range(12)]
    backbone = [0.0] * 8 + [cosine(s, 12, lr2 * mult, min_lr * (lr2 * mult) / lr2) for s in range(12)]
    assert plan["lr_head"].tolist() == head and plan["lr_backbone"].tolist() == backbone
    assert plan["lr_backbone"][-1] == pytest.approx(min_lr * mult, rel=1e-12)
    # stage 1 of zero epochs: the run starts in stage 2
    only2 = C.lr_plan("onecycle", 0, 5, lr, lr2, mult, 0, min_lr)
    assert only2["stage"].tolist() == [2] * 5 and only2["stage_begins"].tolist() == [1, 0, 0, 0, 0]


def test_schedule_bad_arguments():
    with pytest.raises(ValueError, match="at least 1 step"):
        C.schedule_lr("onecycle", 0, 1e-3)
    with pytest.raises(ValueError, match="scheduler"):
        C.schedule_lr("step", 10, 1e-3)
    with pytest.raises(ValueError, match="warmup"):
        C.schedule_lr("cosine", 10, 1e-3, -1)


# ----------------------------------------------------------------------------- clipping
def test_grad_norm_and_clipping():
    rng = np.random.default_rng(3)
    params, total = make_layout([5000, 17, 30000, 1], groups=[0, 0, 1, 1])
    grads = np.full(total, np.nan, f32)           # padding NaN: never read
    for view in views(grads, params):
        view[:] = rng.normal(size=view.size) * 0.01
    mask = np.array([0, 0, 1, 1], np.uint8)
    live = np.concatenate([x.astype(np.float64) for x in views(grads, params)[2:]])
    want = math.sqrt(np.sum(live * live))
    assert C.clip_grad_norm(grads, params, mask) == pytest.approx(want, rel=1e-13)
    # below the threshold: untouched
    before = grads.copy()
    assert C.clip_grad_norm(grads, params, mask, max_norm=want * 2) == pytest.approx(want, rel=1e-13)
    assert np.array_equal(bits(before), bits(grads))
    # above: grads *= f32(max / (norm + 1e-6)) on the masked parameters only
    norm = C.clip_grad_norm(grads, params, mask, max_norm=0.5)
    factor = f32(min(1.0, 0.5 / (norm + 1e-6)))
    assert factor < 1
    for i in range(4):
        want_view = views(before, params)[i] * (factor if mask[i] else f32(1))
        assert np.array_equal(bits(views(grads, params)[i]), bits(want_view))
    assert C.clip_grad_norm(grads, params, mask) == pytest.approx(0.5, rel=1e-5)
    # a non-finite gradient gives a non-finite norm and leaves the gradients alone
    views(grads, params)[2][7] = np.inf
    before = grads.copy()
    assert math.isinf(C.clip_grad_norm(grads, params, mask, max_norm=0.5))
    assert np.array_equal(bits(before), bits(grads))
    views(grads, params)[3][0] = np.nan
    assert math.isnan(C.clip_grad_norm(grads, params, mask, max_norm=0.5))


def test_grads_scale():
    rng = np.random.default_rng(4)
    params, total = make_layout([300, 20000])
    grads = rng.normal(size=total).astype(f32)
    before = grads.copy()
    C.grads_scale(grads, params, 0.25, mask=np.array([1, 0], np.uint8))
    assert np.array_equal(views(grads, params)[0], views(before, params)[0] * f32(0.25))
    assert np.array_equal(views(grads, params)[1], views(before, params)[1])


# ----------------------------------------------------------------------------- EMA
def test_ema_warmup_and_update():
    assert C.ema_decay_at(0.999, 0) == 0.1
    assert C.ema_decay_at(0.999, 8) == 9 / 18
    assert C.ema_decay_at(0.999, 10 ** 6) == 0.999
    assert C.ema_decay_at(0.5, 9) == 0.5          # (1+9)/(10+9) > 0.5
    rng = np.random.default_rng(6)
    params, total = make_layout([1000, 3, 17000], groups=[0, 1, 1])
    ema = np.full(total, 7.0, f32)
    for view in views(ema, params):
        view[:] = rng.normal(size=view.size)
    pad = ema == f32(7.0)
    ref = ema.copy()
    for t in range(25):
        w = rng.normal(size=total).astype(f32)
        d = C.ema_update(ema, w, params, 0.999, t)
        assert d == min(0.999, (1 + t) / (10 + t))
        ref = fma32(w, f32(1 - d), ref * f32(d))
    live = ~pad
    assert np.array_equal(bits(ema[live]), bits(ref[live]))
    assert (ema[pad] == 7.0).all()


# ----------------------------------------------------------------------------- the recipe
def test_two_stage_recipe_glue_matches_reference():
    """The twin Trainer's per-step sequence on synthetic gradients: lr plan, fresh AdamW at
    each stage, stage mask, clip, AdamW, EMA (what the C trainer loop does)."""
    rng = np.random.default_rng(7)
    params, total = make_layout([600, 40, 900, 30], groups=[0, 0, 1, 1], decays=[1, 0, 1, 0])
    groups = [p[3] for p in params]
    plan = C.lr_plan("onecycle", 4, 6, 1e-3, 1e-3, 0.1, 0, 1e-6)
    values = rng.normal(size=total).astype(f32)
    ema = values.copy()
    m, v, steps = np.zeros(total, f32), np.zeros(total, f32), np.zeros(4, np.int64)
    ref_p = [x.copy() for x in views(values, params)]
    ref_ema = [x.copy() for x in ref_p]
    for t in range(10):
        stage = int(plan["stage"][t])
        mask = np.array([1 if stage == 2 or g == 1 else 0 for g in groups], np.uint8)
        if plan["stage_begins"][t]:
            m[:] = 0
            v[:] = 0
            steps[:] = 0
            ref_m = [np.zeros_like(x) for x in ref_p]
            ref_v = [np.zeros_like(x) for x in ref_p]
            ref_steps = [0] * 4
        lrs = (plan["lr_backbone"][t], plan["lr_head"][t])
        grads = random_grads(rng, total) * f32(100)
        grads_ref = [x.copy() for x in views(grads, params)]
        norm = C.clip_grad_norm(grads, params, mask, max_norm=0.5)
        live = [g.astype(np.float64) for g, on in zip(grads_ref, mask) if on]
        assert norm == pytest.approx(math.sqrt(sum(float(np.sum(g * g)) for g in live)), rel=1e-12)
        factor = f32(min(1.0, 0.5 / (norm + 1e-6)))
        C.adamw_step(values, grads, m, v, steps, params, lrs, weight_decay=1e-4, mask=mask)
        for i, on in enumerate(mask):
            if on:
                ref_steps[i] += 1
                ref_p[i], ref_m[i], ref_v[i] = adamw_ref(ref_p[i], grads_ref[i] * factor, ref_m[i], ref_v[i],
                                                         ref_steps[i], lrs[groups[i]],
                                                         1e-4 if params[i][4] else 0.0)
        d = C.ema_update(ema, values, params, 0.999, t)
        ref_ema = [fma32(p, f32(1 - d), e * f32(d)) for p, e in zip(ref_p, ref_ema)]
    for i in range(4):
        assert np.array_equal(bits(views(values, params)[i]), bits(ref_p[i]))
        assert np.array_equal(bits(views(ema, params)[i]), bits(ref_ema[i]))
    assert list(steps) == [6, 6, 6, 6]


# ----------------------------------------------------------------------------- training state
def state_fixture(rng):
    names_shapes = [("backbone.stem.0.weight", (4, 3, 2, 2)), ("backbone.stem.0.bias", (4,)),
                    ("neck.0.proj.conv.weight", (8, 4, 1, 1)), ("decoder.heads.0.bias", (1,)),
                    ("neck.0.moe.experts.6.xca.temperature", (4, 1, 1))]
    params, off = [], 0
    for i, (name, shape) in enumerate(names_shapes):
        params.append((name, off, shape, 0 if name.startswith("backbone") else 1, 1))
        off += (int(np.prod(shape)) + 15) // 16 * 16
    total = off
    steps = np.array([0, 0, 12, 12, 11], np.int64)
    state = dict(step=1234, epoch=7, epoch_step=3, stage=2, stage_step=34, seed=2 ** 64 - 1,
                 ema_updates=1234, loss_scale=0.1 + 0.2, loss_scale_good_steps=17,
                 ema=rng.normal(size=total).astype(f32), exp_avg=rng.normal(size=total).astype(f32),
                 exp_avg_sq=rng.random(total).astype(f32), param_steps=steps)
    for key in ("exp_avg", "exp_avg_sq"):       # moments are zero where the step count is 0
        for (_, o, s, _, _), n in zip(params, steps):
            if n == 0:
                state[key][o:o + int(np.prod(s))] = 0
    state["ema"][5] = -0.0
    state["exp_avg"][params[2][1] + 1] = np.float32(1e-45)  # a denormal survives
    return params, total, state


def test_train_state_round_trip_is_bit_exact(tmp_path):
    rng = np.random.default_rng(8)
    params, total, state = state_fixture(rng)
    path = str(tmp_path / "last.state.safetensors")
    extra = {"config": json.dumps({"lr": 2.5e-4}), "best_metric": "0.8125"}
    C.train_state_save(path, params, state, extra)
    loaded, meta = C.train_state_load(path, params, total)
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            live = np.zeros(len(value), bool) if value.dtype == f32 else None
            if live is not None:
                for _, o, s, _, _ in params:
                    live[o:o + int(np.prod(s))] = True
                assert np.array_equal(loaded[key][live].view(np.uint32), value[live].view(np.uint32)), key
            else:
                assert np.array_equal(loaded[key], value), key
        else:
            assert loaded[key] == value and type(loaded[key]) is type(value), key
    assert meta["config"] == extra["config"] and meta["best_metric"] == "0.8125"
    assert meta["format"] == "codext.train_state" and meta["param_steps"] == "[0,0,12,12,11]"
    # frozen parameters (step 0) store no moments, as torch keeps no state for them
    tensors, _, _ = codext._C.safetensors_load(path)
    assert "exp_avg.backbone.stem.0.weight" not in tensors and "ema.backbone.stem.0.weight" in tensors
    assert tensors["exp_avg.neck.0.proj.conv.weight"].shape == (8, 4, 1, 1)
    assert os.listdir(tmp_path) == ["last.state.safetensors"]   # no temp file left behind


def test_train_state_rejects_other_configs_and_bad_files(tmp_path):
    rng = np.random.default_rng(9)
    params, total, state = state_fixture(rng)
    path = str(tmp_path / "s.safetensors")
    C.train_state_save(path, params, state)
    other = list(params)
    other[2] = ("neck.0.proj.conv.weight", params[2][1], (4, 8, 1, 1), 1, 1)
    with pytest.raises(ValueError, match=r"neck\.0\.proj\.conv\.weight.*\[8, 4, 1, 1\].*\[4, 8, 1, 1\]"):
        C.train_state_load(path, other, total)
    renamed = list(params)
    renamed[4] = ("neck.0.moe.experts.6.xca.temp", params[4][1], params[4][2], 1, 1)
    with pytest.raises(ValueError, match="another model config"):
        C.train_state_load(path, renamed, total)
    with pytest.raises(ValueError, match="5 parameters, this model has 4"):
        C.train_state_load(path, params[:4], total)
    weights = str(tmp_path / "w.safetensors")
    codext._C.safetensors_save(weights, ["a"], [np.zeros(3, f32)], {})
    with pytest.raises(OSError, match="not a codext training state|no \"format\""):
        C.train_state_load(weights, params, total)
    with pytest.raises(OSError):
        C.train_state_load(str(tmp_path / "missing.safetensors"), params, total)
    with pytest.raises(OSError, match="nodir"):
        C.train_state_save(str(tmp_path / "nodir" / "s.safetensors"), params, state)
    with pytest.raises(ValueError, match="reserved"):
        C.train_state_save(path, params, state, {"step": "3"})
