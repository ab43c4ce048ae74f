"""Out of memory in a step (issue 9): the ranks agree (the count of ranks that ran out of
memory travels with the loss's all-reduce), every rank discards the step, halves the
micro-batch, doubles accumulation and runs the step again; the global batch and the
arithmetic stay, so the run ends where one without the fault ends. On the CPU the fault is
injected (Trainer.inject_oom, CODEXT_FAULT's "oom" kind); a CUDA allocation failure takes
the same path (csrc/train/trainer.c)."""
import uuid

import numpy as np
import pytest

import codext
from codext import _C
from codext.launch import WorkerError
from codext.model import Model
from opcheck import relative_error
from test_launch import marked, our_segments

N_TRAIN = 21  # 5 steps of 4 images per epoch; the stage switch after the first epoch


def run(batch, accum, oom_steps=(), top_k=0):
    data = codext.data.synthetic(N_TRAIN, 0, 32, seed=2)
    model = Model(backbone="edgenext_tiny_test", decoder_dim=16, num_experts=3, moe_top_k=top_k,
                  img_size=32, seed=100)
    trainer = _C.Trainer(model._native, N_TRAIN, 32, 32, batch_size=batch,
                         accumulation_steps=accum, epochs=2, stage1_epochs=1, lr=1e-3,
                         grad_clip=0.5, seed=11)
    losses, states = [], []
    pending = sorted(oom_steps)
    for _ in range(2):
        loss = np.zeros(trainer.state()["steps_per_epoch"])
        done = 0
        while done < len(loss):  # one step at a time, so that each fault can be armed
            if pending and pending[0] == trainer.state()["step"]:
                trainer.inject_oom(pending.pop(0))
            done += trainer.run_epoch(data.train.images, data.train.masks, loss, max_steps=1)
            states.append(trainer.state())
        losses += loss.tolist()
    return model._params.copy(), trainer.ema().copy(), np.array(losses), states


@pytest.fixture(scope="module")
def one_thread():
    threads = _C.get_num_threads()
    _C.set_num_threads(1)
    yield
    _C.set_num_threads(threads)


def test_a_step_out_of_memory_halves_the_micro_batch_and_ends_where_the_run_without_it_ends(one_thread):
    params, ema, loss, _ = run(4, 1)
    params_oom, ema_oom, loss_oom, states = run(4, 1, oom_steps=(2, 7))
    # step 2 (stage 1) and step 7 (stage 2) ran out of memory: 4x1 -> 2x2 -> 1x4
    after = {s["step"]: (s["batch_size"], s["accumulation_steps"], s["oom_halvings"]) for s in states}
    assert after[2] == (4, 1, 0) and after[3] == (2, 2, 1) and after[7] == (2, 2, 1)
    assert after[8] == (1, 4, 2) and states[-1]["oom_last_step"] == 7
    assert states[-1]["step"] == 10 and states[-1]["oom_last_ranks"] == 1
    assert relative_error(params_oom, params) < 1e-6 and relative_error(ema_oom, ema) < 1e-6
    np.testing.assert_allclose(loss_oom, loss, rtol=1e-5)
    # and the comparison can fail: a run with another split of the same global batch, but
    # other rows per step, lands elsewhere
    start = Model(backbone="edgenext_tiny_test", decoder_dim=16, num_experts=3, img_size=32,
                  seed=100)._params
    assert relative_error(params, start) > 1e-3


@pytest.mark.parametrize("batch, accum, why", [(1, 4, "one image"), (3, 1, "an odd count"),
                                                (2, 1024, "accumulation at its limit")])
def test_a_micro_batch_that_cannot_be_halved_is_a_clear_memory_error(one_thread, batch, accum, why):
    data = codext.data.synthetic(max(N_TRAIN, batch * accum), 0, 32, seed=2)
    model = Model(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=2, img_size=32, seed=1)
    trainer = _C.Trainer(model._native, len(data.train.images), 32, 32, batch_size=batch,
                         accumulation_steps=accum, epochs=1, stage1_epochs=0, lr=1e-3, seed=1)
    before = model._params.copy()
    trainer.inject_oom(0)
    with pytest.raises(MemoryError, match=rf"out of memory in step 0 on 1 of 1 rank\(s\) with "
                                          rf"micro-batches of {batch} image\(s\) \(accumulation "
                                          rf"{accum}\), which cannot be halved further \({why}\)"):
        trainer.run_epoch(data.train.images, data.train.masks, np.zeros(trainer.state()["steps_per_epoch"]),
                          max_steps=1)
    assert trainer.state()["step"] == 0 and np.array_equal(model._params, before)


TINY = dict(backbone="edgenext_tiny_test", decoder_dim=16, num_experts=3, img_size=32, epochs=2,
            stage1_epochs=1, lr=1e-3, synthetic_train=17, synthetic_test=4, seed=3, amp=False,
            num_threads=1)


def test_ranks_agree_to_halve_when_one_runs_out_of_memory(tmp_path, monkeypatch):
    mark = uuid.uuid4().hex
    monkeypatch.setenv("CODEXT_TEST_MARK", mark)
    cfg = codext.Config(batch_size=2, **TINY)
    whole = codext.launch(cfg.replace(checkpoint_dir=str(tmp_path / "whole")), nprocs=2,
                          timeout=30, log=None)
    monkeypatch.setenv("CODEXT_FAULT", "1:3:oom")  # rank 1 alone, in step 3 of 8
    lines = []
    halved = codext.launch(cfg.replace(checkpoint_dir=str(tmp_path / "oom")), nprocs=2,
                           timeout=30, log=lines.append)
    assert any("out of memory in step 3 on 1 of 2 rank(s): the micro-batch is now 1 images with "
               "accumulation 2; the global batch is unchanged and the step ran again" in line
               for line in lines), lines
    ours = codext.load(halved.last_checkpoint)._params
    assert relative_error(ours, codext.load(whole.last_checkpoint)._params) < 1e-6
    np.testing.assert_allclose(halved.history["step_loss"], whole.history["step_loss"], rtol=1e-5)
    assert marked(mark) == [] and our_segments() == []


def test_ranks_fail_together_when_the_micro_batch_cannot_be_halved(tmp_path, monkeypatch):
    mark = uuid.uuid4().hex
    monkeypatch.setenv("CODEXT_TEST_MARK", mark)
    monkeypatch.setenv("CODEXT_FAULT", "0:1:oom")
    cfg = codext.Config(batch_size=1, checkpoint_dir=str(tmp_path / "one"), **TINY)
    with pytest.raises(WorkerError, match=r"out of memory in step 1 on 1 of 2 rank\(s\) with "
                                          r"micro-batches of 1 image\(s\)"):
        codext.launch(cfg, nprocs=2, timeout=30, log=None)
    assert marked(mark) == [] and our_segments() == []


def test_a_smaller_batch_after_a_larger_one_gives_the_same_loss_and_gradients():
    """The loss's staging area once sat at 8 B doubles into a buffer laid out for the
    largest batch seen, over that batch's wbce/wiou arrays: a model that had run batch 4
    read batch 1's loss parts overwritten (NaN in the run that halved 4 -> 2 -> 1)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    y = (rng.random((4, 1, 32, 32)) > 0.5).astype(np.float32)

    def loss_and_grads(model, batches):
        for n in batches:
            model._native.zero_grads()
            model._native.forward(np.ascontiguousarray(x[:n]), True)
            parts = model._native.loss(np.ascontiguousarray(y[:n]))
            model._native.backward(1.0, train_backbone=True)
        return parts, model._native.grads().copy()

    kwargs = dict(backbone="edgenext_tiny_test", decoder_dim=16, num_experts=3, img_size=32, seed=5)
    fresh_parts, fresh_grads = loss_and_grads(Model(**kwargs), [1])
    parts, grads = loss_and_grads(Model(**kwargs), [4, 2, 1])
    assert np.isfinite(parts["total"]) and parts["total"] == fresh_parts["total"]
    np.testing.assert_array_equal(grads, fresh_grads)
