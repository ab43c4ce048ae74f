"""Training on a real GPU against the CPU (issues 9 and 10): the comparisons that
tests/test_emu_trainer.py and tests/test_emu_ddp.py make on the CUDA emulator in CI, made
here on the GPU with cuDNN, cuBLAS and (with two GPUs) NCCL, which the emulator replaces.

- the C trainer on the device against the CPU trainer (forward, gradients, three
  optimizer steps with loss scaling, an overflow and an out of memory, states that move
  between the two, sparse MoE): tests/emu_trainer_child.py's checks and tolerances;
- codext.train end to end with Config.device "cuda" and "cpu";
- two device ranks on one GPU joined over shared memory (the staged host route), and on
  two GPUs over NCCL, against two CPU ranks: identical bits on every rank, the CPU's
  numbers to 1e-5.

The tolerances are the emulator's, whose cuDNN and cuBLAS are plain fp32 loops; the GPU's
libraries pick other algorithms (TF32 stays off: kernels/conv.cu, backend_cuda.cu), so a
failure here first asks whether the tolerance or the device code is wrong.
On the emulator these would repeat the tests above: tests/test_emu_backend.py leaves this
file out, and CODEXT_GPU_TEST_BACKEND=cpu (the harness check) has no device to compare."""
import os

import pytest

from device_training import (CODEXT_TRAIN_CHECKS, DDP_ARGS, TRAINER_CHECKS, assert_all_pass,
                             assert_device_ranks_match_cpu_ranks, ddp_start_weights, run_child)
from test_ddp import run_ranks

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(os.environ.get("CODEXT_GPU_TEST_BACKEND", "cuda") == "cpu",
                       reason="compares the GPU with the CPU: no GPU under CODEXT_GPU_TEST_BACKEND=cpu"),
    pytest.mark.skipif(bool(os.environ.get("CODEXT_CUDA_EMULATED")),
                       reason="on the emulator: tests/test_emu_trainer.py and test_emu_ddp.py"),
]


def test_device_trainer_matches_the_cpu_trainer(tmp_path):
    assert_all_pass(run_child(dict(os.environ), tmp_path / "result.json", "all", timeout=500),
                    TRAINER_CHECKS)


def test_codext_train_on_the_device(tmp_path):
    assert_all_pass(run_child(dict(os.environ), tmp_path / "result.json", "codext.train",
                              timeout=500), CODEXT_TRAIN_CHECKS)


def test_codext_train_in_fp16_as_a_t4_does(tmp_path):
    """T4 (Kaggle's usual GPU) has no bf16: amp there is fp16 with dynamic loss scaling.
    CODEXT_AMP_DTYPE=fp16 forces that path on whatever GPU runs this (bf16 on sm_80+
    otherwise): the same end-to-end checks, the amp ones with the T4's precision and its
    loss scale kept at 2^16."""
    env = dict(os.environ, CODEXT_AMP_DTYPE="fp16")
    assert_all_pass(run_child(env, tmp_path / "result.json", "codext.train", timeout=500),
                    CODEXT_TRAIN_CHECKS)


def test_two_ranks_on_one_gpu_over_shared_memory_match_two_cpu_ranks(tmp_path):
    env = dict(os.environ, CODEXT_GPU_TRANSPORT="shm")
    dev = run_ranks(2, dict(DDP_ARGS, device="cuda", connect=True), tmp_path / "cuda", env=env,
                    timeout=300)
    cpu = run_ranks(2, DDP_ARGS, tmp_path / "cpu", timeout=300)
    assert [str(r["comm_backend"]) for r in dev] == ["shm", "shm"]
    assert_device_ranks_match_cpu_ranks(dev, cpu, ddp_start_weights())


def test_two_gpus_over_nccl_match_two_cpu_ranks(tmp_path):
    from codext._gpus import visible_gpus
    gpus = visible_gpus().gpus
    if len(gpus) < 2:
        pytest.skip(f"NCCL between two ranks needs two GPUs; {len(gpus)} visible")
    dev = run_ranks(2, dict(DDP_ARGS, device="cuda:rank", connect=True), tmp_path / "nccl",
                    timeout=300)
    cpu = run_ranks(2, DDP_ARGS, tmp_path / "cpu", timeout=300)
    assert [str(r["comm_backend"]) for r in dev] == ["nccl", "nccl"]
    assert str(dev[0]["transport"]).startswith("NCCL")
    assert_device_ranks_match_cpu_ranks(dev, cpu, ddp_start_weights())


def test_twenty_steps_follow_the_cpu_and_repeat_bit_for_bit():
    """20 optimizer steps (two epochs, the stage switch between them) of the device trainer
    against the CPU trainer's losses, and a second device run giving the same bits (the
    backend is deterministic: fixed-order kernels, cuBLAS without atomics, deterministic
    cuDNN algorithms or our direct kernels). fp32: amp would add half rounding."""
    import numpy as np

    import codext
    from codext import _C

    data = codext.data.synthetic(40, 0, 64, seed=3)

    def run(device):
        model = codext.Model(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=3,
                             img_size=64, seed=1, device=device)
        trainer = _C.Trainer(model._native, 40, 64, 64, batch_size=4, epochs=2,
                             stage1_epochs=1, lr=1e-3, seed=2)
        losses = []
        for _ in range(2):
            epoch = np.zeros(trainer.state()["steps_per_epoch"])
            trainer.run_epoch(data.train.images, data.train.masks, epoch)
            losses += epoch.tolist()
        return np.array(losses), model._native.params()

    cpu_losses, cpu_params = run("cpu")
    first, second = run("cuda"), run("cuda")
    assert len(cpu_losses) == 20
    assert first[0].tobytes() == second[0].tobytes() and first[1].tobytes() == second[1].tobytes()
    rel = np.abs(first[0] - cpu_losses) / np.abs(cpu_losses)
    assert rel.max() < 1e-4, rel
    drift = np.linalg.norm(first[1] - cpu_params) / np.linalg.norm(cpu_params)
    assert drift < 1e-4, drift


def test_the_full_model_forward_and_gradients_match_the_cpu():
    """The model users train (EdgeNeXt-B, the 7-expert neck, decoder width 64) once on the
    device and once on the CPU, from the same weights and batch: the four output maps, the
    loss parts and every parameter's gradient. Tolerances: the tiny model's on the emulator
    (outputs 1e-5, gradients 1e-4 relative per parameter), in fp32."""
    import numpy as np

    import codext

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 64, 64)).astype(np.float32)
    y = (rng.random((2, 1, 64, 64)) > 0.5).astype(np.float32)
    runs = {}
    for device in ("cpu", "cuda"):
        model = codext.Model(backbone="edgenext_base", img_size=64, seed=4, device=device)
        outs = [np.asarray(o) for o in model._native.forward(x, True)]
        parts = model._native.loss(y)
        model._native.zero_grads()
        model._native.backward()
        runs[device] = (outs, parts, model._native.grads(), model._table)
    (outs_c, parts_c, grads_c, table), (outs_d, parts_d, grads_d, _) = runs["cpu"], runs["cuda"]
    for k, (a, b) in enumerate(zip(outs_d, outs_c)):
        err = np.linalg.norm(a - b) / np.linalg.norm(b)
        assert err < 1e-5, f"output {k}: {err:.2e}"
    assert abs(parts_d["total"] - parts_c["total"]) <= 1e-5 * abs(parts_c["total"])
    worst = max((np.linalg.norm(grads_d[o:o + int(np.prod(s))] - grads_c[o:o + int(np.prod(s))])
                 / max(np.linalg.norm(grads_c[o:o + int(np.prod(s))]), 1e-30), n)
                for n, s, o, _ in table)
    assert worst[0] < 1e-4, worst
