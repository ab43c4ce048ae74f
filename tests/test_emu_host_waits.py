"""How often a device training step waits for the GPU (issue 10: "no host-device sync in
the training step that isn't needed"; "the loss and its parts read back once per step at
most"), counted by the CUDA emulator.

A wait that drains a stream (a synchronization, a synchronous copy) leaves a real GPU idle
while the host queues what follows. The emulated library counts them (csrc/emu:
codext_emu_host_waits). A dense step waits twice, whatever its number A of micro-batches
(A = 1 and 2 here, two images; A = 4 gave 2 as well when measured):
once for the losses of all its micro-batches (read back into pinned records, checked in
order before the optimizer runs) and once for the optimizer's result. Every pass is queued
without a wait. Before this, every pass ended in one: 4A + 1.

CODEXT_CUDA_SYNC=pass restores a wait after every pass (so that a device fault names its
pass): the same bits, more waits. A value other than step or pass is refused, naming the
variable. A loss that is not finite still stops the step before the optimizer, naming the
step and the micro-batch, with the weights as they were.

The emulator runs every call as it is made, so a race that the dropped waits would open on
a GPU cannot show here; docs/training.md gives the argument why the copy stream's buffers
stay safe (copy_release, copy_claim) and docs/emulator.md says what is not tested.
"""
import re

import pytest

from emu_build import run_emulated_child

pytestmark = pytest.mark.timeout(600)

CHILD = r"""
import ctypes, json, os, sys
import numpy as np
import codext
from codext import _C
lib = ctypes.CDLL(os.environ["CODEXT_CUDA_EMULATED"])
lib.codext_emu_host_waits.restype = ctypes.c_long
S, N = 32, 2
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (N, S, S, 3), dtype=np.uint8)
masks = (rng.random((N, S, S)) > 0.5).astype(np.uint8) * 255
out = {}
for acc, sync in ((1, "step"), (2, "step"), (2, "pass")):
    os.environ["CODEXT_CUDA_SYNC"] = sync
    m = codext.Model(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=3,
                     img_size=S, seed=3, device="cuda")
    t = _C.Trainer(m._native, N, S, S, batch_size=N // acc, accumulation_steps=acc,
                   epochs=2, stage1_epochs=0, lr=1e-3, seed=5, loss_scaling=True)
    waits, losses = [], []
    for epoch in range(2):  # one optimizer step per epoch
        before = lib.codext_emu_host_waits(0)
        t.run_epoch(images, masks)
        waits.append(lib.codext_emu_host_waits(0) - before)
        losses.append(t.last_step()["loss"])
    out[f"{acc}/{sync}"] = {"waits": waits, "losses": losses,
                            "weights": np.asarray(m._native.params()).tobytes().hex()}
os.environ["CODEXT_CUDA_SYNC"] = "step"
m = codext.Model(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=3, img_size=S,
                 seed=3, device="cuda")
state = m.state_dict()
state["decoder.heads.0.bias"][:] = np.nan  # the prediction p1's head: only loss0 sees it
m.load_state_dict(state)
t = _C.Trainer(m._native, N, S, S, batch_size=N // 2, accumulation_steps=2, epochs=2,
               stage1_epochs=0, lr=1e-3, seed=5)
before = m._native.params().tobytes()
try:
    t.run_epoch(images, masks)
    out["nan_loss"] = None
except RuntimeError as e:
    out["nan_loss"] = str(e)
out["nan_loss_after"] = [t.state()["step"], m._native.params().tobytes() == before]
os.environ["CODEXT_CUDA_SYNC"] = "always"
m = codext.Model(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=3, img_size=S,
                 seed=3, device="cuda")
try:
    _C.Trainer(m._native, N, S, S, batch_size=N, accumulation_steps=1, epochs=1)
    out["refused"] = None
except ValueError as e:
    out["refused"] = str(e)
json.dump(out, open(sys.argv[1], "w"))
"""


@pytest.fixture(scope="module")
def waits(emulated, library, tmp_path_factory):
    out = tmp_path_factory.mktemp("waits") / "out.json"
    return run_emulated_child(CHILD, library, emulated[0], out)


@pytest.mark.parametrize("acc", [1, 2])
def test_a_dense_device_step_waits_once_for_its_losses_and_once_for_the_optimizer(waits, acc):
    steady = waits[f"{acc}/step"]["waits"][1:]  # after the first step's plan
    assert steady == [2], waits[f"{acc}/step"]["waits"]


def test_waiting_after_every_pass_changes_no_bit(waits):
    queued, each_pass = waits["2/step"], waits["2/pass"]
    assert queued["losses"] == each_pass["losses"]
    assert queued["weights"] == each_pass["weights"]
    assert all(p > q for p, q in zip(each_pass["waits"], queued["waits"])), (each_pass, queued)


def test_an_unknown_codext_cuda_sync_is_refused_naming_it(waits):
    assert waits["refused"] and "CODEXT_CUDA_SYNC must be 'step'" in waits["refused"] and \
        "got 'always'" in waits["refused"], waits["refused"]


def test_a_non_finite_loss_stops_the_queued_step_before_the_optimizer(waits):
    assert waits["nan_loss"] and re.search(
        r"training stopped at step 0 \(epoch 0, stage 2, micro-batch 0\): the loss is not "
        r"finite: loss0 \(the prediction p1\) = nan;.*decoder\.heads\.0\.bias = nan",
        waits["nan_loss"]), waits["nan_loss"]
    assert waits["nan_loss_after"] == [0, True]  # no step counted, no weight changed
