"""Dynamic loss scaling in the C trainer (csrc/train/retry.c; the GPU's fp16 path uses it):
backward runs on loss x scale and the gradients are divided by the scale again; a
non-finite gradient norm halves the scale and runs the step again on the same rows; a run
of finite steps doubles it. The scale is a power of two, so in fp32 on the CPU the scaled
run is bit-identical to the unscaled one, which is what makes the logic testable here."""
import numpy as np
import pytest

import codext
from codext import _C
from codext.model import Model

N_TRAIN = 21  # 5 steps of 4 images per epoch, the stage switch after the first epoch


def run(overflow_steps=(), **scaling):
    data = codext.data.synthetic(N_TRAIN, 0, 32, seed=2)
    model = Model(backbone="edgenext_tiny_test", decoder_dim=16, num_experts=3, img_size=32,
                  seed=100)
    trainer = _C.Trainer(model._native, N_TRAIN, 32, 32, batch_size=4, epochs=2,
                         stage1_epochs=1, lr=1e-3, grad_clip=0.5, seed=11, **scaling)
    pending, states = sorted(overflow_steps), []
    for _ in range(2):
        loss = np.zeros(trainer.state()["steps_per_epoch"])
        done = 0
        while done < len(loss):
            if pending and pending[0] == trainer.state()["step"]:
                trainer.inject_overflow(pending.pop(0))
            done += trainer.run_epoch(data.train.images, data.train.masks, loss, max_steps=1)
            states.append(trainer.state())
    return model._params.copy(), trainer.ema().copy(), states


@pytest.fixture(scope="module")
def plain():
    return run()


def test_scaled_fp32_training_is_bit_identical_to_unscaled(plain):
    params, ema, states = run(loss_scaling=True, loss_scale_init=2.0 ** 16,
                              loss_scale_growth_interval=3)
    np.testing.assert_array_equal(params, plain[0])
    np.testing.assert_array_equal(ema, plain[1])
    # 10 finite steps in a row with growth every 3: 2^16 -> 2^17 -> 2^18 -> 2^19
    assert [s["loss_scale"] for s in states] == [2.0 ** 16] * 2 + [2.0 ** 17] * 3 + \
        [2.0 ** 18] * 3 + [2.0 ** 19] * 2
    assert states[-1]["loss_scale_good_steps"] == 1 and states[-1]["overflow_retries"] == 0
    assert all(s["loss_scale"] == 1.0 for s in plain[2])  # off: scale 1, never changes


def test_an_overflow_halves_the_scale_and_runs_the_step_again(plain):
    params, ema, states = run(overflow_steps=(3, 7), loss_scaling=True,
                              loss_scale_init=1024.0, loss_scale_growth_interval=100)
    by_step = {s["step"]: s for s in states}
    assert by_step[3]["loss_scale"] == 1024.0 and by_step[4]["loss_scale"] == 512.0
    assert by_step[8]["loss_scale"] == 256.0 and by_step[8]["overflow_retries"] == 2
    assert by_step[4]["loss_scale_good_steps"] == 1  # the count restarts at the back-off
    # every batch was applied once, with no update from the overflowed attempts
    np.testing.assert_array_equal(params, plain[0])
    np.testing.assert_array_equal(ema, plain[1])


def test_without_loss_scaling_an_overflow_stops_the_run_naming_it():
    data = codext.data.synthetic(8, 0, 32, seed=2)
    model = Model(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=2, img_size=32, seed=1)
    trainer = _C.Trainer(model._native, 8, 32, 32, batch_size=4, epochs=1, lr=1e-3, seed=1)
    trainer.inject_overflow(1)
    loss = np.zeros(2)
    with pytest.raises(RuntimeError, match=r"training stopped at step 1 .*gradient"):
        trainer.run_epoch(data.train.images, data.train.masks, loss)
    assert trainer.state()["step"] == 1


def test_an_overflow_at_the_floor_is_not_retried_forever():
    data = codext.data.synthetic(8, 0, 32, seed=2)
    model = Model(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=2, img_size=32, seed=1)
    trainer = _C.Trainer(model._native, 8, 32, 32, batch_size=4, epochs=1, lr=1e-3, seed=1,
                         loss_scaling=True, loss_scale_init=1.0)
    trainer.inject_overflow(0, 1000)  # an overflow that no scale cures
    with pytest.raises(RuntimeError, match="training stopped at step 0 .*gradient"):
        trainer.run_epoch(data.train.images, data.train.masks, np.zeros(2))
    assert trainer.state()["overflow_retries"] == 24  # 1 -> 2^-24, then it gives up
    assert trainer.state()["step"] == 0 and trainer.state()["loss_scale"] == 2.0 ** -24


@pytest.mark.parametrize("kwargs, message", [
    (dict(loss_scale_init=3.0), "loss_scale_init must be a power of two in \\[1, 2\\^24\\], got 3"),
    (dict(loss_scale_init=0.5), "got 0.5"), (dict(loss_scale_init=2.0 ** 25), "got 3.35544e\\+07"),
    (dict(loss_scale_growth_interval=0), "loss_scale_growth_interval must be in 1..2\\^40, got 0")])
def test_scaler_settings_are_checked(kwargs, message):
    model = Model(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=2, img_size=32, seed=1)
    with pytest.raises(ValueError, match=message):
        _C.Trainer(model._native, 8, 32, 32, batch_size=4, epochs=1, loss_scaling=True, **kwargs)
    # the edges that pass
    for ok in (dict(loss_scale_init=1.0), dict(loss_scale_init=2.0 ** 24),
               dict(loss_scale_growth_interval=1)):
        _C.Trainer(model._native, 8, 32, 32, batch_size=4, epochs=1, loss_scaling=True, **ok)


def test_the_saved_scale_carries_over_only_between_runs_that_scale(tmp_path):
    """The state file records whether its scale is live ("loss_scaling"): a run that starts
    scaling (a CPU or bf16 run resumed on an fp16 GPU) starts from loss_scale_init, not from
    the 1 an unscaled run saved; scaled runs carry their scale; a run that stops keeps 1.
    A file written before the key existed is judged by its scale; any other value of the
    key is refused, naming the file."""
    from test_bad_input_rundir import set_meta
    data = codext.data.synthetic(N_TRAIN, 0, 32, seed=2)

    def trainer(**scaling):
        model = Model(backbone="edgenext_tiny_test", decoder_dim=16, num_experts=3,
                      img_size=32, seed=100)
        t = _C.Trainer(model._native, N_TRAIN, 32, 32, batch_size=4, epochs=2,
                       stage1_epochs=1, lr=1e-3, seed=11, **scaling)
        return model, t

    def saved(name, **scaling):
        model, t = trainer(**scaling)
        t.run_epoch(data.train.images, data.train.masks, max_steps=2)
        t.save_state(str(tmp_path / name))
        return str(tmp_path / name), t.state()

    def loaded(path, **scaling):
        _, t = trainer(**scaling)
        t.load_state(path)
        return t.state()

    scaled = dict(loss_scaling=True, loss_scale_init=2.0 ** 10, loss_scale_growth_interval=1)
    plain_file, _ = saved("plain.safetensors")
    scaled_file, scaled_state = saved("scaled.safetensors", **scaled)
    assert scaled_state["loss_scale"] == 2.0 ** 12  # grew after each of its 2 steps
    starts = loaded(plain_file, **dict(scaled, loss_scale_init=2.0 ** 16))
    assert (starts["loss_scale"], starts["loss_scale_good_steps"]) == (2.0 ** 16, 0)
    assert loaded(scaled_file, **dict(scaled, loss_scale_init=2.0 ** 16))["loss_scale"] == 2.0 ** 12
    assert loaded(scaled_file)["loss_scale"] == 1.0
    # files written before the key existed: a scale that moved (or counted good steps) was
    # live and carries over; 1 with no good steps was not, and the scaled run starts afresh
    set_meta(scaled_file, loss_scaling=None)
    assert loaded(scaled_file, **dict(scaled, loss_scale_init=2.0 ** 16))["loss_scale"] == 2.0 ** 12
    set_meta(plain_file, loss_scaling=None)
    assert loaded(plain_file, **dict(scaled, loss_scale_init=2.0 ** 16))["loss_scale"] == 2.0 ** 16
    for bad in ("2", "-1", "yes"):
        set_meta(scaled_file, loss_scaling=bad)
        with pytest.raises(OSError, match=f"{scaled_file}: training state (metadata )?\"?loss_scaling"):
            loaded(scaled_file, **scaled)
