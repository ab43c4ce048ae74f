"""The device optimizer step (kernels/optim.cu, kernels/device/optim.cuh) on the CUDA
emulator, against the CPU reference (csrc/train/clip.c, optim.c, ema.c through
codext._testing).

kernels/optim.cu is compiled as C++ against the emulator (csrc/emu) under AddressSanitizer
and UBSan with tests/emu/optim_harness.cu, which runs a sequence of optimizer steps and
writes the state after each. The sequence is a two-stage run on a parameter table of ~300
tensors of odd sizes (some crossing the 16384-float chunks, one empty) with padding between
them: stage 1 trains the head only (backbone lr 0, a NaN gradient in the frozen backbone
that must be ignored), a stage reset, stage 2 with all tensors, then with a few "experts"
masked out, clipping active, inactive and measure-only, two steps with inf / NaN gradients
that must leave everything unchanged, and a step after them.

Checked: the norm to 1e-12 relative (double sums in another order than the CPU's), and
params, exp_avg, exp_avg_sq, EMA (padding included) and step counts bit-identical to the
CPU whenever the two norms give the same float32 clip factor (the float32 arithmetic is the
CPU's operation for operation; the emulator runs it with the host's libm), else to 1e-6
relative; every output bit-identical across CX_EMU_ORDER forward, reverse and random:5.
Three deliberate bugs, each planted in its own temporary copy, must be caught.
"""
import math
import os
import re
import subprocess

import numpy as np
import pytest

from emu_build import CASES, FLAGS, ROOT, clean_env, compilers, emulator_sources, sanitizer_findings
from testing_module import testing as C

ORDERS = ["forward", "reverse", "random:5"]
KERNELS = os.path.join(ROOT, "kernels")
f32 = np.float32

pytestmark = pytest.mark.timeout(300)

# Deliberate bugs: name -> [(file under kernels/, text, replacement)].
MUTATIONS = {
    # the barrier between the tree steps of the norm's block sums dropped
    "dropped_barrier": [("device/optim.cuh",
                         "            shared[threadIdx.x] += shared[threadIdx.x + half];\n"
                         "        __syncthreads();\n",
                         "            shared[threadIdx.x] += shared[threadIdx.x + half];\n")],
    # the second moment's bias correction with beta1
    "wrong_bias_correction": [("device/optim.cuh",
                               "double bias2 = OPTIM_DADD(1.0, -pow(h.beta2, (double)t));",
                               "double bias2 = OPTIM_DADD(1.0, -pow(h.beta1, (double)t));")],
    # AdamW ignores the mask: masked-out tensors get stepped (decay, moments, count)
    "mask_ignored": [("device/optim.cuh", "if (applied && (!mask || mask[i])) {",
                      "if (applied && (!mask || mask[i] || !mask[i])) {")],
}


# ---------------------------------------------------------------------------- building

def compile_one(compiler, src, obj, extra=()):
    res = subprocess.run(["nice", compiler] + FLAGS + list(extra) + ["-c", src, "-o", obj],
                         capture_output=True, text=True, env=clean_env())
    assert res.returncode == 0, f"{compiler} {src}:\n{res.stderr}"
    return obj


def build_harness(compiler, out_dir, emu_objects, mutations=()):
    """optim.cu (a copy, with `mutations` applied) + the harness, linked with the
    emulator's objects; returns the binary."""
    os.makedirs(os.path.join(out_dir, "device"), exist_ok=True)
    for name in ("optim.cu", "device/optim.cuh", "device/helpers.cuh"):
        with open(os.path.join(KERNELS, name)) as f:
            text = f.read()
        for file_name, old, new in mutations:
            if file_name == name:
                assert old in text, f"kernels/{name} no longer holds the text a mutation replaces"
                text = text.replace(old, new)
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(text)
    objects = [compile_one(compiler, os.path.join(out_dir, "optim.cu"),
                           os.path.join(out_dir, "optim.o")),
               compile_one(compiler, os.path.join(CASES, "optim_harness.cu"),
                           os.path.join(out_dir, "optim_harness.o"))]
    binary = os.path.join(out_dir, "optim_harness")
    res = subprocess.run([compiler, "-fsanitize=address,undefined", "-o", binary] + emu_objects +
                         objects, capture_output=True, text=True, env=clean_env())
    assert res.returncode == 0, res.stderr
    return binary


@pytest.fixture(scope="session")
def emu_objects(tmp_path_factory):
    """{compiler: the emulator's object files}, compiled once per session."""
    built = {}

    def get(compiler):
        if compiler not in built:
            out = str(tmp_path_factory.mktemp("emu-optim-emu-" + compiler.replace("+", "x")))
            built[compiler] = [compile_one(compiler, src, os.path.join(out, os.path.basename(src) + ".o"))
                               for src in emulator_sources()]
        return built[compiler]
    return get


# ---------------------------------------------------------------------------- the case

def make_case(seed=10):
    """A parameter table like the model's (backbone first, offsets aligned to 16 floats,
    decay for ndim > 1) and a 9-step two-stage sequence."""
    rng = np.random.default_rng(seed)
    shapes = []
    for i in range(300):
        if i in (40, 170):
            shapes.append((20001,))           # spans two chunk borders
        elif i == 120:
            shapes.append((97, 169))          # 16393 floats
        elif i == 200:
            shapes.append((0,))               # an empty tensor
        elif rng.random() < 0.5:
            shapes.append((int(rng.integers(1, 300)),))
        else:
            shapes.append((int(rng.integers(1, 20)), int(rng.integers(1, 40))))
    params, off = [], 0
    for i, shape in enumerate(shapes):
        group = 0 if i < 130 else 1
        params.append((f"{'backbone' if group == 0 else 'head'}.p{i}", off, shape, group,
                       1 if len(shape) > 1 else 0))
        off = (off + int(np.prod(shape)) + 15) // 16 * 16
    total = off + 7                            # trailing padding, not a multiple of 16
    count = len(params)
    padding = np.ones(total, bool)
    for _, o, s, _, _ in params:
        padding[o:o + int(np.prod(s))] = False

    def buffer(scale):
        x = (rng.standard_normal(total) * scale).astype(f32)
        x[padding] = f32(123.5)                # must stay (values, EMA) or be zeroed (moments)
        return x

    values = buffer(0.5)
    state = {"values": values, "ema": values.copy(), "exp_avg": buffer(1e-3),
             "exp_avg_sq": np.abs(buffer(1e-6)), "steps": np.full(count, 7, np.int64)}
    backbone = np.array([p[3] == 0 for p in params])
    head_mask = (~backbone).astype(np.uint8)
    all_mask = np.ones(count, np.uint8)
    expert_mask = all_mask.copy()
    expert_mask[[135, 170, 250, 299]] = 0      # sparse MoE: experts no image chose
    base = dict(wd=0.05, b1=0.9, b2=0.999, eps=1e-8)
    steps = [
        dict(reset=1, mask=head_mask, lr=(0.0, 1e-3), max_norm=1.0),
        dict(reset=0, mask=head_mask, lr=(0.0, 8e-4), max_norm=1e9, nan_in=5),   # frozen: ignored
        dict(reset=0, mask=head_mask, lr=(0.0, 6e-4), max_norm=0.0),             # measure only
        dict(reset=1, mask=all_mask, lr=(1e-4, 5e-4), max_norm=1.0),             # stage 2 begins
        dict(reset=0, mask=expert_mask, lr=(9e-5, 4.5e-4), max_norm=1.0),
        dict(reset=0, mask=None, lr=(8e-5, 4e-4), max_norm=5.0),
        dict(reset=0, mask=None, lr=(7e-5, 3.5e-4), max_norm=1.0, inf_in=140),   # overflow
        dict(reset=0, mask=expert_mask, lr=(7e-5, 3.5e-4), max_norm=1.0, nan_in=140),
        dict(reset=0, mask=expert_mask, lr=(6e-5, 3e-4), max_norm=2.0),
    ]
    for s in steps:
        s.update(base)
        g = (rng.standard_normal(total) * 10.0 ** rng.uniform(-3, 0, total)).astype(f32)
        g[padding] = np.nan                    # padding is never read
        for key, value in (("nan_in", np.nan), ("inf_in", np.inf)):
            if key in s:
                _, o, shape, _, _ = params[s[key]]
                g[o + int(np.prod(shape)) // 2] = value
        s["grads"] = g
    return params, total, state, steps


def cpu_reference(params, state, steps, ema_decay=0.999):
    """The CPU trainer's step (csrc/train/optim.h's order) for each step; a non-finite norm
    changes nothing. Returns per step (state copy, norm, clip scale, applied)."""
    s = {k: v.copy() for k, v in state.items()}
    t, out = 0, []
    for step in steps:
        if step["reset"]:
            s["exp_avg"][:] = 0
            s["exp_avg_sq"][:] = 0
            s["steps"][:] = 0
        g = step["grads"].copy()
        mask = step["mask"]
        norm = C.clip_grad_norm(g, params, mask=mask, max_norm=step["max_norm"])
        applied = math.isfinite(norm)
        scale = f32(1)
        if applied and step["max_norm"] > 0:
            factor = step["max_norm"] / (norm + 1e-6)
            scale = f32(factor) if factor < 1 else f32(1)
        step["ema_decay"] = C.ema_decay_at(ema_decay, t)
        if applied:
            C.adamw_step(s["values"], g, s["exp_avg"], s["exp_avg_sq"], s["steps"], params,
                         step["lr"], weight_decay=step["wd"], betas=(step["b1"], step["b2"]),
                         eps=step["eps"], mask=mask)
            assert C.ema_update(s["ema"], s["values"], params, ema_decay, t) == step["ema_decay"]
            t += 1
        out.append(({k: v.copy() for k, v in s.items()}, norm, scale, applied))
    return out


def run_harness(binary, work, params, total, state, steps, order, check=True):
    work = str(work)
    table = np.array([[o, int(np.prod(s)), g, d] for _, o, s, g, d in params], np.int64)
    table.tofile(os.path.join(work, "table.i64"))
    for name in ("values", "exp_avg", "exp_avg_sq", "ema"):
        state[name].astype(f32).tofile(os.path.join(work, name + ".f32"))
    state["steps"].astype(np.int64).tofile(os.path.join(work, "steps.i64"))
    for k, s in enumerate(steps):
        cfg = [s["reset"], s["mask"] is not None, s["lr"][0], s["lr"][1], s["wd"], s["b1"],
               s["b2"], s["eps"], s["max_norm"], s["ema_decay"]]
        np.array(cfg, np.float64).tofile(os.path.join(work, f"step{k}.cfg.f64"))
        s["grads"].tofile(os.path.join(work, f"step{k}.grads.f32"))
        if s["mask"] is not None:
            s["mask"].astype(np.uint8).tofile(os.path.join(work, f"step{k}.mask.u8"))
    res = subprocess.run([binary, work, str(len(params)), str(total), str(len(steps))],
                         capture_output=True, text=True, timeout=240,
                         env=clean_env(CX_EMU_ORDER=order, ASAN_OPTIONS="detect_leaks=1"))
    if not check:
        return res
    assert res.returncode == 0 and not sanitizer_findings(res.stderr), res.stdout + res.stderr
    assert "error=none" in res.stdout and "bad_config=1" in res.stdout, res.stdout
    out = []
    for k in range(len(steps)):
        def read(name, dtype):
            return np.fromfile(os.path.join(work, f"out{k}.{name}"), dtype=dtype)
        got = {n: read(n + ".f32", f32) for n in ("values", "exp_avg", "exp_avg_sq", "ema")}
        got["steps"] = read("steps.i64", np.int64)
        norm, scale, applied = read("result.f64", np.float64)
        out.append((got, float(norm), f32(scale), bool(applied)))
    return out


def bits(x):
    return np.asarray(x).view(np.uint32 if np.asarray(x).dtype == f32 else np.uint64)


def mismatches(device, reference):
    """Problems (one line each) of the device's steps against the CPU's."""
    problems = []
    for k, ((got, norm, scale, applied), (want, ref_norm, ref_scale, ref_applied)) in enumerate(
            zip(device, reference)):
        if applied != ref_applied:
            problems.append(f"step {k}: applied {applied}, CPU {ref_applied}")
        if math.isfinite(ref_norm):
            if not abs(norm - ref_norm) <= 1e-12 * ref_norm:
                problems.append(f"step {k}: norm {norm!r}, CPU {ref_norm!r}")
        elif not (math.isnan(norm) == math.isnan(ref_norm) and math.isinf(norm) == math.isinf(ref_norm)):
            problems.append(f"step {k}: norm {norm!r}, CPU {ref_norm!r}")
        if scale != ref_scale:
            problems.append(f"step {k}: clip scale {scale!r}, CPU {ref_scale!r}")
        for name, ref in want.items():
            ours = got[name]
            if scale == ref_scale or name == "steps":  # the same factor: the same bits
                if not np.array_equal(bits(ours), bits(ref)):
                    bad = np.flatnonzero(bits(ours) != bits(ref))
                    problems.append(f"step {k}: {name} differs from the CPU at {bad.size} floats "
                                    f"(first at {bad[0]}: {ours[bad[0]]!r} vs {ref[bad[0]]!r})")
            elif not np.allclose(ours, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max(), equal_nan=True):
                problems.append(f"step {k}: {name} beyond 1e-6 relative of the CPU")
    return problems


def across_orders(binary, tmp_path_factory, case):
    params, total, state, steps = case
    runs = [run_harness(binary, tmp_path_factory.mktemp("optim-run"), params, total, state,
                        steps, order) for order in ORDERS]
    return runs


def order_differences(runs):
    problems = []
    for order, other in zip(ORDERS[1:], runs[1:]):
        for k, (a, b) in enumerate(zip(runs[0], other)):
            if not (bits(np.float64(a[1])) == bits(np.float64(b[1])) and a[2] == b[2] and a[3] == b[3]):
                problems.append(f"{order}: step {k} norm/scale/applied differ from forward")
            for name in a[0]:
                if not np.array_equal(bits(a[0][name]), bits(b[0][name])):
                    problems.append(f"{order}: step {k} {name} differs from forward")
    return problems


@pytest.fixture(scope="session")
def case():
    params, total, state, steps = make_case()
    return params, total, state, steps, cpu_reference(params, state, steps)


# ---------------------------------------------------------------------------- the tests

def test_the_device_chunk_is_the_cpu_chunk():
    """The norm's partial sums use the CPU's chunks of the buffer (CX_REDUCE_CHUNK)."""
    with open(os.path.join(KERNELS, "device", "optim.cuh")) as f:
        device = re.search(r"#define OPTIM_CHUNK (\d+)", f.read()).group(1)
    with open(os.path.join(ROOT, "csrc", "train", "optim.h")) as f:
        cpu = re.search(r"#define CX_REDUCE_CHUNK (\d+)", f.read()).group(1)
    assert device == cpu


def test_the_reference_sequence_covers_the_cases(case):
    """The CPU run itself: the overflow steps change nothing, the frozen NaN does not
    count, clipping is active in some steps and not in others."""
    params, total, state, steps, reference = case
    applied = [r[3] for r in reference]
    assert applied == [True] * 6 + [False, False, True]
    assert math.isinf(reference[6][1]) and math.isnan(reference[7][1])
    for k in (6, 7):
        for name in state:
            assert np.array_equal(bits(reference[k][0][name]), bits(reference[5][0][name]))
    scales = [r[2] for r in reference]
    assert scales[0] < 1 and scales[1] == 1 and scales[2] == 1 and scales[3] < 1
    # masked-out experts kept their step counts through step 4
    assert list(reference[4][0]["steps"][[135, 170, 250, 299]]) == [1, 1, 1, 1]
    assert reference[4][0]["steps"][0] == 2


@pytest.mark.parametrize("compiler", compilers() or [None])
def test_device_optimizer_matches_cpu_and_is_order_independent(compiler, case, emu_objects,
                                                               tmp_path_factory):
    if compiler is None:
        pytest.skip("no C++ compiler (clang++ or g++) to build the CUDA emulator")
    params, total, state, steps, reference = case
    out = str(tmp_path_factory.mktemp("emu-optim-" + compiler.replace("+", "x")))
    binary = build_harness(compiler, out, emu_objects(compiler))
    runs = across_orders(binary, tmp_path_factory, (params, total, state, steps))
    assert order_differences(runs) == []
    assert mismatches(runs[0], reference) == []


# ---- the net holds: deliberately broken kernels are caught ----

@pytest.fixture(scope="session")
def broken(emu_objects, tmp_path_factory):
    """name -> the harness built with MUTATIONS[name] (the first compiler found)."""
    if not compilers():
        pytest.skip("no C++ compiler (clang++ or g++) to build the CUDA emulator")
    compiler = compilers()[0]
    built = {}

    def get(name):
        if name not in built:
            out = str(tmp_path_factory.mktemp("emu-optim-broken-" + name))
            built[name] = build_harness(compiler, out, emu_objects(compiler), MUTATIONS[name])
        return built[name]
    return get


def test_a_dropped_barrier_in_the_norm_is_caught(case, broken, tmp_path_factory):
    """Without the barrier between tree steps the block sums race: the thread orders give
    different norms, and wrong ones."""
    params, total, state, steps, reference = case
    runs = across_orders(broken("dropped_barrier"), tmp_path_factory, (params, total, state, steps))
    assert any("norm" in p for p in order_differences(runs))
    assert any(any("norm" in p for p in mismatches(run, reference)) for run in runs)


def test_a_wrong_bias_correction_is_caught(case, broken, tmp_path_factory):
    params, total, state, steps, reference = case
    run = run_harness(broken("wrong_bias_correction"), tmp_path_factory.mktemp("optim-run"),
                      params, total, state, steps, "forward")
    problems = mismatches(run, reference)
    assert any("values" in p for p in problems), problems
    assert not any("norm" in p for p in problems), problems  # caught by the update, not the norm


def test_an_ignored_mask_is_caught(case, broken, tmp_path_factory):
    params, total, state, steps, reference = case
    run = run_harness(broken("mask_ignored"), tmp_path_factory.mktemp("optim-run"),
                      params, total, state, steps, "forward")
    problems = mismatches(run, reference)
    assert any(p.startswith("step 0: steps") for p in problems), problems
    assert any(p.startswith("step 0: exp_avg") for p in problems), problems
