"""A run is never lost (issue 11): a training process SIGKILLed at random moments and inside
its checkpoint save (CODEXT_KILL_IN_SAVE, codext/_checkpoint.py) always resumes, and its final
weights are bit for bit those of an uninterrupted run.

The killed processes are forked from a forkserver that imported codext once, so each start
costs milliseconds, not an interpreter start."""
import multiprocessing
import os
import random
import re
import time

import numpy as np
import pytest

import crash_child
from codext import _C
from codext._checkpoint import SAVE_POINTS
from codext._rundir import BEST, HISTORY, LAST, RunDir
from codext.train import train

EPOCHS = 32       # 1 step per epoch: about twice what the 20 kills consume
KILLS = 20
SEED = 11         # of the random kill times


def bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def tensors_differ(path_a, path_b):
    a, _, _ = _C.safetensors_load(path_a)
    b, _, _ = _C.safetensors_load(path_b)
    assert sorted(a) == sorted(b)
    return [n for n in a if not np.array_equal(bits(a[n]), bits(b[n]))]


def kill_plan(rng):
    """KILLS attempts: every save point of CODEXT_KILL_IN_SAVE once (at the first or second
    save of the process), the others SIGKILLed after a random delay: a fraction in [0, 2.5) of
    an epoch's time after the process's first line. Reproducible."""
    points = iter([f"{p}:{1 + i % 2}" for i, p in enumerate(SAVE_POINTS)])
    plan = []
    for i in range(KILLS):
        plan.append(("inject", next(points)) if i % 3 == 1 and len(plan) < 3 * len(SAVE_POINTS)
                    else ("random", round(rng.uniform(0.0, 2.5), 4)))
    return plan


def said_resuming(line, folder):
    return re.match(rf"resuming from epoch \d+, step \d+, in {re.escape(folder)} \(checkpoint set "
                    rf"last\.safetensors \+ last\.state\.step\d+\.safetensors\)", line) is not None


def test_the_kill_plan_is_reproducible():
    a, b = kill_plan(random.Random(SEED)), kill_plan(random.Random(SEED))
    assert a == b and len(a) == KILLS
    assert sorted(p for kind, p in a if kind == "inject") == sorted(
        f"{p}:{1 + i % 2}" for i, p in enumerate(SAVE_POINTS))


def _attempt(ctx, folder, kill=None, delay=None):
    """One training process: (exit code, lines it logged, what it resumed from, pid).
    delay: seconds after its first line (which comes before its first step) to SIGKILL it."""
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=crash_child.run, args=(folder, EPOCHS, kill, child))
    proc.start()
    child.close()
    lines, resumed = [], "?"

    def receive(timeout):
        try:
            return parent.recv() if parent.poll(timeout) else None
        except (EOFError, OSError):  # it ended, or a message was cut by the kill
            return None
    first = receive(20)
    if first is not None:
        resumed = first[1]
        if delay is not None:
            line = receive(20)
            if line is not None:
                lines.append(line[1])
                time.sleep(delay)
                proc.kill()
    proc.join(20)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        pytest.fail("the training process hangs")
    while (message := receive(0)) is not None:
        if message[0] == "line":
            lines.append(message[1])
    parent.close()
    return proc.exitcode, lines, resumed, proc.pid


def test_a_run_killed_20_times_resumes_to_the_same_bits(tmp_path):
    ref = crash_child.config(tmp_path / "ref", EPOCHS)
    t0 = time.perf_counter()
    train(ref, progress=False)
    epoch_s = (time.perf_counter() - t0) / EPOCHS  # with its evaluation and save
    folder = str(tmp_path / "killed")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["codext", "codext.train", "crash_child"])
    kills = resumes = 0
    for kind, what in kill_plan(random.Random(SEED)):
        inject = kind == "inject"
        code, lines, resumed, pid = _attempt(ctx, folder, kill=what if inject else None,
                                             delay=None if inject else what * epoch_s)
        # it resumed (or, before the first complete checkpoint, started over) and was killed
        assert code == -9, (kind, what, code, lines)
        kills += 1
        if resumed is not None:
            resumes += 1
            if inject:  # killed in a save: its start was said (a random kill may come first)
                assert any(said_resuming(line, folder) for line in lines), lines
        if inject and what.split(":")[0].endswith("-tmp"):  # a half-written temporary file
            assert any(n.endswith(f".tmp.{pid}") for n in os.listdir(folder)), os.listdir(folder)
    code, lines, resumed, _ = _attempt(ctx, folder)  # the last one runs to the end
    assert code == 0 and resumed == folder and any(said_resuming(ln, folder) for ln in lines), lines
    assert kills == KILLS and resumes >= KILLS // 2
    # the same bits as the uninterrupted run, and nothing left behind
    state = os.path.basename(RunDir(folder).state_path)
    assert state == f"last.state.step{EPOCHS}.safetensors"
    assert sorted(os.listdir(folder)) == sorted([BEST, HISTORY, LAST, state])
    for name in (LAST, BEST, state):
        assert tensors_differ(os.path.join(ref.checkpoint_dir, name), os.path.join(folder, name)) == [], name
