"""The trainer's batch prefetch (csrc/train/prefetch.c, issue 10's data path): a worker
thread augments the next micro-batch while the current one trains. A batch is a pure
function of (seed, epoch, rows), so a run with the prefetch must end with the bits of the
run without it, through accumulation, chunked run_epoch calls, an out-of-memory halving
(the prefetched batch no longer fits the new split and is dropped), an epoch boundary
and new data arrays. On the CPU the prefetch is off unless asked for (prefetch=1); on a
CUDA model it is on, with pinned buffers (tests/emu_trainer_child.py runs that path)."""
import numpy as np
import pytest

import codext
from codext import _C
from codext.model import Model

N_TRAIN = 21  # batch 2 x accumulation 2: 5 steps per epoch


def run(prefetch, chunk=None, oom_step=None, copy_each_call=False):
    data = codext.data.synthetic(N_TRAIN, 0, 32, seed=4)
    model = Model(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=2, img_size=32,
                  seed=7)
    kwargs = {} if prefetch is None else {"prefetch": prefetch}
    trainer = _C.Trainer(model._native, N_TRAIN, 32, 32, batch_size=2, accumulation_steps=2,
                         epochs=2, stage1_epochs=1, lr=1e-3, seed=3, **kwargs)
    if oom_step is not None:
        trainer.inject_oom(oom_step)
    losses = []
    for _ in range(2):
        loss = np.zeros(trainer.state()["steps_per_epoch"])
        done = 0
        while done < len(loss):
            images, masks = data.train.images, data.train.masks
            if copy_each_call:  # new arrays (other addresses) every call
                images, masks = images.copy(), masks.copy()
            done += trainer.run_epoch(images, masks, loss, max_steps=-1 if chunk is None else chunk)
        losses += loss.tolist()
    return np.array(losses), model._params.copy(), trainer.ema().copy(), trainer.state()


@pytest.fixture(scope="module")
def plain():
    return run(prefetch=0)


@pytest.mark.parametrize("chunk, oom_step, copy_each_call", [
    (None, None, False), (1, None, False), (2, 3, False), (1, None, True)],
    ids=["whole-epochs", "one-step-calls", "oom-halving", "new-arrays-each-call"])
def test_prefetch_changes_no_bit(plain, chunk, oom_step, copy_each_call):
    losses, params, ema, state = run(1, chunk, oom_step, copy_each_call)
    ref_losses, ref_params, ref_ema, ref_state = plain
    if oom_step is None:
        assert losses.tobytes() == ref_losses.tobytes()
        assert params.tobytes() == ref_params.tobytes() and ema.tobytes() == ref_ema.tobytes()
    else:  # the halved run is the plain one with half the micro-batch (tests/test_oom_halving)
        assert state["oom_halvings"] == 1 and state["batch_size"] == 1
        halved = run(0, chunk, oom_step)
        assert losses.tobytes() == halved[0].tobytes() and params.tobytes() == halved[1].tobytes()
    # every batch came from the worker but the first of each epoch (the worker is never
    # asked across an epoch's end), the first of each call on new arrays, and the first
    # after the halving (2 x 5 steps of 2 micro-batches; with the halving at step 3: 3
    # steps of 2, the failed first micro-batch of step 3, then 7 steps of 4)
    takes = 20 if oom_step is None else 3 * 2 + 1 + 7 * 4
    misses = 10 if copy_each_call else 2 if oom_step is None else 3
    assert (state["prefetch_hits"], state["prefetch_misses"]) == (takes - misses, misses), state
    assert state["data_wait_seconds"] > 0


def test_the_cpu_default_builds_batches_in_the_step(plain):
    losses, params, _, state = run(prefetch=None)
    assert state["prefetch_hits"] == state["prefetch_misses"] == 0
    assert losses.tobytes() == plain[0].tobytes() and params.tobytes() == plain[1].tobytes()
    assert state["data_wait_seconds"] > 0  # the augmentation, timed as the step's data wait


def test_prefetch_setting_is_checked():
    model = Model(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=2, img_size=32)
    with pytest.raises(ValueError, match=r"prefetch must be -1 \(auto\), 0 or 1, got 2"):
        _C.Trainer(model._native, 4, 32, 32, batch_size=2, prefetch=2)
