"""Gradient checkpointing per backbone stage and the frozen-backbone (stage-1) forward
(csrc/model/edgenext_stages.c, the forward modes of csrc/model/cod.h).

Checkpointing keeps only each stage's input and output and recomputes the stage's forward
just before its backward. On the CPU the recompute runs the same ops on the same inputs with
the same parameters, and every op is deterministic (no dependence on threads or addresses),
so the recomputed activations, and with them every gradient, are the same bits as the plain
run's: the tests assert bit equality, not a tolerance. The frozen-backbone forward changes
only what the backbone keeps, so the head's gradients are the same bits too."""
import re
import sys

import numpy as np
import pytest

import codext
from codext import _C
from codext.model import Model
from testing_module import testing

# (backbone, input side): the tiny test config and a real one at a small size
MODELS = [("edgenext_tiny_test", 64), ("edgenext_xx_small", 64)]


def bits(a):
    return np.ascontiguousarray(a).view(np.uint32)


def model(backbone="edgenext_tiny_test", size=64, **kw):
    args = dict(decoder_dim=16, num_experts=3, img_size=size, seed=1)
    args.update(kw)
    return Model(backbone, **args)


def batch(n, size, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, size, size)).astype(np.float32)
    y = (rng.random((n, 1, size, size)) > 0.6).astype(np.float32)
    return x, y


def differing(a, b, names):
    return [n for n in names if not np.array_equal(bits(a[n]), bits(b[n]))]


@pytest.mark.parametrize("top_k", [0, 2])
@pytest.mark.parametrize("backbone,size", MODELS)
def test_checkpointed_gradients_are_the_same_bits(backbone, size, top_k):
    m = model(backbone, size, moe_top_k=top_k)
    names = m.parameter_names()
    x, y = batch(2, size)
    runs = []
    for checkpointing in (False, True):
        m.gradient_checkpointing = checkpointing
        parts, grads = m.loss_and_grads(x, y)
        m._native.backward(0.5)  # again after the same loss: recomputes again, adds up
        runs.append((parts, grads, m.grads()))
    (parts, plain, plain_twice), (parts_ckpt, ckpt, ckpt_twice) = runs
    assert differing(plain, ckpt, names) == []
    assert differing(plain_twice, ckpt_twice, names) == []
    assert all(np.array_equal(parts[k], parts_ckpt[k]) for k in parts)
    assert any(np.any(ckpt[n]) for n in names if n.startswith("backbone.stages.0."))


def test_skipping_the_recompute_is_caught():
    """The wrong path: backward after a checkpointed forward without the recompute reads
    whatever the arena holds. The bit comparison above must see it."""
    if testing._sanitized():
        pytest.skip("reads released (poisoned) arena memory on purpose")
    m = model()
    names = m.parameter_names()
    x, y = batch(2, 64)
    _, plain = m.loss_and_grads(x, y)
    m.gradient_checkpointing = True
    testing.test_skip_recompute(True)
    try:
        _, wrong = m.loss_and_grads(x, y)
    finally:
        testing.test_skip_recompute(False)
    bad = differing(plain, wrong, names)
    assert bad and all(n.startswith("backbone.") for n in bad)
    assert len(bad) > 0.5 * sum(n.startswith("backbone.") for n in names)
    _, right = m.loss_and_grads(x, y)  # and with the recompute back, the same bits again
    assert differing(plain, right, names) == []


@pytest.mark.parametrize("backbone,size", MODELS)
def test_frozen_backbone_forward_keeps_nothing_and_gives_the_same_head_gradients(backbone, size):
    m = model(backbone, size)
    native = m._native
    names = m.parameter_names()
    head = [n for n in names if not n.startswith("backbone.")]
    x, y = batch(2, size, seed=1)
    native.zero_grads()
    native.forward(x, "train")  # keeps everything; backward stops at the neck
    native.loss(y)
    native.backward(1.0, False)
    full = m.grads()
    _, frozen = m.loss_and_grads(x, y, train_backbone=False)  # mode train_head
    assert differing(full, frozen, head) == []
    # a frozen-backbone forward keeps no backbone activation: backward through it is refused
    # before any gradient is touched
    buffer = native.grads()
    buffer[:] = 7.0
    with pytest.raises(RuntimeError, match="frozen-backbone forward"):
        native.backward(1.0, True)
    assert np.all(buffer == 7.0)
    native.backward(1.0, False)  # the stage-1 backward still runs
    with pytest.raises(ValueError, match="mode must be"):
        native.forward(x, "train_frozen")


@pytest.mark.parametrize("backbone,size", MODELS)
def test_the_plan_is_smaller_with_checkpointing_and_smaller_still_in_stage1(backbone, size):
    x, y = batch(4, size)
    planned, arena = {}, {}
    for mode in Model.PLAN_MODES:
        m = model(backbone, size)
        planned[mode] = m.planned_activation_bytes(4, mode=mode)
        m.gradient_checkpointing = mode == "train_checkpoint"
        if mode == "predict":
            m._native.forward(x, False)
        else:
            m.loss_and_grads(x, y, train_backbone=mode != "train_head")
        arena[mode] = m.activation_bytes()  # the real run fitted the plan (no "plan bug")
    print(f"\n{backbone} {size}x{size} batch 4, planned arena bytes: {planned}")
    assert arena == planned
    assert planned["train_checkpoint"] < planned["train"]
    assert planned["train_head"] < planned["train_checkpoint"]
    assert planned["predict"] < planned["train_head"]


def test_plan_bytes_checks_its_arguments():
    m = model()
    with pytest.raises(ValueError, match="mode must be one of"):
        m.planned_activation_bytes(2, mode="stage1")
    with pytest.raises(ValueError, match="multiples of 32"):
        m.planned_activation_bytes(2, 48, 64)


def trainer(m, checkpointing):
    return _C.Trainer(m._native, 4, 64, 64, batch_size=2, accumulation_steps=2, epochs=3,
                      stage1_epochs=1, lr=1e-3, grad_clip=0.5, seed=11, augment=False,
                      gradient_checkpointing=checkpointing)


@pytest.mark.parametrize("backbone,size", MODELS)
def test_three_steps_give_the_same_weights_with_and_without_checkpointing(backbone, size):
    """Step 0 is stage 1 (frozen backbone), steps 1 and 2 stage 2; two micro-batches each.
    The arena after each stage shows which forward mode the trainer chose."""
    x, y = batch(4, size, seed=2)
    weights, arenas = [], []
    for checkpointing in (False, True):
        m = model(backbone, size)
        t = trainer(m, checkpointing)
        t.step_on_batch(x, y)
        assert t.last_step()["stage"] == 1
        after_stage1 = m.activation_bytes()
        t.step_on_batch(x, y)
        t.step_on_batch(x, y)
        assert t.last_step()["stage"] == 2
        weights.append(m.state_dict())
        arenas.append((after_stage1, m.activation_bytes()))
    plain, ckpt = weights
    assert differing(plain, ckpt, list(plain)) == []
    probe = model(backbone, size)
    plan = {mode: probe.planned_activation_bytes(2, mode=mode) for mode in Model.PLAN_MODES}
    assert arenas[0] == (plan["train_head"], plan["train"])
    assert arenas[1] == (plan["train_head"], plan["train_checkpoint"])


class Stop(Exception):
    pass


def test_train_passes_the_setting_on_and_a_run_may_switch_it_when_resumed(tmp_path, monkeypatch):
    """codext.train: a plain run of 2 epochs (stage 1, stage 2) against one stopped after
    stage 1 and resumed with Config.gradient_checkpointing on: the same weights, bit for bit,
    and the resumed run's model planned the smaller arena (the model train() builds is
    caught to look at it)."""
    train_module = sys.modules["codext.train"]  # codext.train is also the function
    made = []
    new_model = train_module._new_model
    monkeypatch.setattr(train_module, "_new_model",
                        lambda c, device: made.append(new_model(c, device)) or made[-1])
    data = codext.data.synthetic(8, 0, 32, seed=3)

    def config(folder, checkpointing):
        return codext.Config(backbone="edgenext_tiny_test", decoder_dim=16, num_experts=3,
                             img_size=32, batch_size=4, epochs=2, stage1_epochs=1, lr=1e-3,
                             amp=False, seed=3, checkpoint_dir=str(tmp_path / folder),
                             gradient_checkpointing=checkpointing)

    def stop_after_epoch(line):
        if line.startswith("epoch "):
            raise Stop(line)

    plain = codext.train(config("plain", False), data, progress=False)
    plain_model = made[0]  # the first model train() makes is the trained one
    with pytest.raises(Stop):
        codext.train(config("switched", False), data, log=stop_after_epoch)
    first = len(made)
    lines = []
    switched = codext.train(config("switched", True), data, resume=str(tmp_path / "switched"),
                            log=lines.append)
    resumed_model = made[first]
    # the log says what checkpointing saves (the planner's numbers)
    said = [re.search(r"gradient checkpointing: stage-2 activations ([0-9.]+) MiB a micro-batch "
                      r"instead of ([0-9.]+) MiB \(planned\)", line) for line in lines]
    said = [m for m in said if m]
    assert len(said) == 1, lines
    assert 0 < float(said[0].group(1)) < float(said[0].group(2)), said[0].group(0)
    assert not plain_model.gradient_checkpointing and resumed_model.gradient_checkpointing
    a, b = (_C.safetensors_load(r.last_checkpoint)[0] for r in (plain, switched))
    assert differing(a, b, list(a)) == []
    assert resumed_model.activation_bytes() < plain_model.activation_bytes()
