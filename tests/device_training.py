"""The device trainer's comparison with the CPU trainer, shared by the CUDA emulator's tests
(tests/test_emu_trainer.py) and the GPU's (tests/gpu/test_device_training.py): both run
tests/emu_trainer_child.py in a child Python and read back its recorded checks."""
import json
import os
import subprocess
import sys

import pytest

from emu_build import ROOT

CHILD = os.path.join(ROOT, "tests", "emu_trainer_child.py")

# the checks of the child's "all" mode (the C trainer) and of its "codext.train" mode
TRAINER_CHECKS = {
    "forward_outputs", "loss_parts_stage1", "loss_parts_stage2", "gradients_stage1",
    "gradients_stage2", "step_losses", "step_grad_norms", "step_lrs", "run_position",
    "retries_happened", "param_steps", "device_prefetch", "after3_weights", "after3_ema", "after3_exp_avg",
    "after3_exp_avg_sq", "device_state_loads_on_cpu", "cpu_state_loads_on_device",
    "continued_weights", "continued_ema", "continued_param_steps", "python_host_copies",
    "overflow_stops_the_run", "sparse_param_steps", "sparse_weights",
    "device_checkpointing_weights", "device_checkpointing_ema"}
OLD_GPU_CHECKS = {"sm60_is_sm60", "sm60_fp32_step_losses", "amp_says_its_precision",
                  "amp_step_losses", "amp_not_the_fp32_bits", "amp_loss_scale"}
CODEXT_TRAIN_CHECKS = {
    "auto_is_the_gpu", "train_ran_on_the_device", "train_step_losses",
    "train_losses_not_the_cpus_bits", "train_epoch_losses", "train_step_lrs",
    "train_last_weights", "train_val_scores", "train_best_weights", "train_device_validation",
    "train_resumes_on_the_cpu", "amp_says_its_precision", "amp_step_losses", "amp_not_the_fp32_bits",
    "amp_loss_scale"}


def run_child(env, out, mode, timeout=1500):
    """The child's result ({"checks": ..., "timings": ...}) for mode "all", "train" or
    "codext.train", run with env (the emulated library's, or this process's on a GPU)."""
    env = dict(env, PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, CHILD, str(out), mode], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0 and out.exists(), (res.stdout + res.stderr)[-6000:]
    result = json.loads(out.read_text())
    assert "error" not in result, result["error"]
    if "missing_ops" in result:
        pytest.fail("the CUDA backend cannot run the tiny model yet (the device trainer's "
                    f"end-to-end test needs every op): {result['missing_ops']}")
    return result


def report(result):
    """One line per check: ok or BAD, the worst relative difference and its tolerance."""
    lines = [f"{name:32s} {'ok ' if c['ok'] else 'BAD'} max_rel {c['max_rel']:.3g} (tol "
             f"{c['tol']:g}){'' if c['ok'] else ' at ' + str(c['worst'])}"
             for name, c in result["checks"].items()]
    return "\n".join(lines) + f"\ntimings (s): {result['timings']}"


def assert_all_pass(result, expected):
    """Every expected check was made, and none failed (the report shows all of them)."""
    text = report(result)
    print(text)
    assert expected <= set(result["checks"]), text
    bad = [name for name, c in result["checks"].items() if not c["ok"]]
    assert not bad, text


# tests/ddp_worker.py's run for device ranks: 8 images, 2 ranks of batch 2, so 2 steps per
# epoch; epoch 1 with the backbone frozen, epoch 2 in stage 2, whose first step (global
# step 2) runs out of memory on rank 1 alone
DDP_ARGS = {"n": 8, "batch": 2, "epochs": 2, "oom_step": 2, "oom_rank": 1}


def ddp_start_weights():
    """Rank 0's starting weights in tests/ddp_worker.py (seed 100)."""
    from codext.model import Model
    return Model(backbone="edgenext_tiny_test", decoder_dim=16, num_experts=3, img_size=32,
                 seed=100)._native.params()


def assert_device_ranks_match_cpu_ranks(dev, cpu, start_weights):
    """Two device ranks (dev) against two CPU ranks (cpu) of tests/ddp_worker.py: every
    device rank holds the same bits (weights, EMA, moments, losses), the injected out of
    memory halved the micro-batch on all of them, and the device run agrees with the CPU's
    (losses 1e-5 relative, weights and EMA 1e-5 of the largest weight) while training
    moved the weights by more than 1e-3 (so the comparison could fail)."""
    import numpy as np

    from opcheck import relative_error

    assert [str(r["backend"]) for r in dev] == ["cuda"] * len(dev)
    for key in ("params", "ema", "exp_avg", "loss"):
        for r in dev[1:]:
            np.testing.assert_array_equal(dev[0][key], r[key], err_msg=key)
    assert int(dev[0]["steps"]) == int(cpu[0]["steps"])
    for r in dev + cpu:
        assert int(r["oom_halvings"]) == 1, int(r["oom_halvings"])
        assert int(r["batch_size"]) == int(cpu[0]["batch_size"])
    np.testing.assert_allclose(dev[0]["loss"], cpu[0]["loss"], rtol=1e-5)
    assert relative_error(dev[0]["params"], cpu[0]["params"]) < 1e-5
    assert relative_error(dev[0]["ema"], cpu[0]["ema"]) < 1e-5
    assert relative_error(cpu[0]["params"], start_weights) > 1e-3
