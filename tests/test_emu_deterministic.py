"""Config.deterministic reaches the CUDA backend (issue 10: "a deterministic mode that falls
back when cuDNN has no deterministic algorithm"), and cuDNN's algorithms are chosen once per
shape ("algorithms chosen once per shape and cached").

The emulated cuDNN is told to offer no deterministic algorithm
(CODEXT_EMU_CUDNN_NONDETERMINISTIC=1) and counts the convolutions it runs and the algorithm
queries it answers (codext_emu_cudnn_calls). A deterministic model (codext.Model's default, or
Config(deterministic=True)) then runs every convolution of a training step on our direct
kernels: cuDNN runs none. A model made from Config(deterministic=False), as codext.train
makes it, takes cuDNN's algorithms: cuDNN runs them, and its second training step (the
same shapes) asks cuDNN for no algorithm. Model.deterministic says which; the CPU always
is.
"""

import pytest

from emu_build import run_emulated_child

pytestmark = pytest.mark.timeout(600)

CHILD = r"""
import ctypes, json, os, sys
import numpy as np
import codext
from codext import _C
lib = ctypes.CDLL(os.environ["CODEXT_CUDA_EMULATED"])
lib.codext_emu_cudnn_calls.restype = ctypes.c_long
S, N = 32, 2
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (N, S, S, 3), dtype=np.uint8)
masks = (rng.random((N, S, S)) > 0.5).astype(np.uint8) * 255
tiny = dict(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=3, img_size=S, seed=3)
out = {"cpu": codext.Model(**tiny).deterministic}
models = {"default": lambda: codext.Model(**tiny, device="cuda"),
          "config_true": lambda: codext.Model(codext.Config(**tiny, deterministic=True), device="cuda"),
          "config_false": lambda: codext.Model(codext.Config(**tiny, deterministic=False), device="cuda")}
for name, make in models.items():
    m = make()
    steps = 2 if name == "config_false" else 1  # the plan cache is checked on that one
    t = _C.Trainer(m._native, N, S, S, batch_size=N, epochs=steps, stage1_epochs=0, lr=1e-3,
                   seed=5)
    counts = []
    for epoch in range(steps):  # one step each, the same shapes
        before = [lib.codext_emu_cudnn_calls(0), lib.codext_emu_cudnn_calls(1)]
        t.run_epoch(images, masks)
        counts.append([lib.codext_emu_cudnn_calls(0) - before[0],
                       lib.codext_emu_cudnn_calls(1) - before[1]])
        if epoch == 0:
            loss = t.last_step()["loss"]
    out[name] = {"deterministic": m.deterministic, "cudnn": counts[0][0],
                 "steps": counts, "loss": loss}
json.dump(out, open(sys.argv[1], "w"))
"""


@pytest.fixture(scope="module")
def result(emulated, library, tmp_path_factory):
    out = tmp_path_factory.mktemp("deterministic") / "out.json"
    return run_emulated_child(CHILD, library, emulated[0], out, CODEXT_EMU_CUDNN_NONDETERMINISTIC="1")


def test_a_deterministic_model_runs_no_cudnn_algorithm_that_is_not(result):
    for name in ("default", "config_true"):
        assert result[name]["deterministic"] is True and result[name]["cudnn"] == 0, result


def test_config_deterministic_false_lets_cudnn_choose(result):
    assert result["config_false"]["deterministic"] is False, result
    assert result["config_false"]["cudnn"] > 0, result
    # the same step either way, to the emulated cuDNN's rounding (double loops, then float)
    a, b = result["config_false"]["loss"], result["default"]["loss"]
    assert abs(a - b) <= 1e-5 * abs(b), result


def test_cudnn_algorithms_are_chosen_once_per_shape(result):
    """The first step asks cuDNN for an algorithm per convolution shape and direction; the
    second, with the same shapes, runs as many convolutions and asks for none (the
    backend's plan cache, descriptors included, holds them)."""
    (convs_first, asked_first), (convs_second, asked_second) = result["config_false"]["steps"]
    assert asked_first > 0 and convs_second == convs_first > 0, result
    assert asked_second == 0, result


def test_the_cpu_is_always_deterministic(result):
    assert result["cpu"] is True
