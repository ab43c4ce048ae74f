"""Shared-memory collectives (csrc/dist/comm_shm.c) between real processes."""
import glob
import json
import os
import re
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from codext import _C

sys.path.insert(0, os.path.dirname(__file__))
from comm_worker import data_for  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def shm_name():
    return f"/codext-test-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def leftover(name):
    return os.path.exists("/dev/shm" + name)


def run_ranks(world, action, tmp_path, wait=40.0, wait_ranks=None):
    """Starts `world` ranks, waits for them (killing stragglers after `wait` s); returns
    (results or None per rank, error text or None per rank, elapsed seconds, name)."""
    name = shm_name()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               CODEXT_NUM_THREADS="1")
    outs = [str(tmp_path / f"rank{r}.npy") for r in range(world)]
    start = time.monotonic()
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "comm_worker.py"), name, str(r),
                               str(world), json.dumps(action), outs[r]], env=env)
             for r in range(world)]
    try:
        for p in (procs if wait_ranks is None else [procs[r] for r in wait_ranks]):
            p.wait(timeout=max(0.1, wait - (time.monotonic() - start)))
    except subprocess.TimeoutExpired:
        pass
    finally:
        elapsed = time.monotonic() - start
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    results = [np.load(o) if os.path.exists(o) else None for o in outs]
    errors = [open(o + ".err").read() if os.path.exists(o + ".err") else None for o in outs]
    assert not leftover(name), f"/dev/shm{name} was left behind"
    return results, errors, elapsed, name


def reference_sum(seed, world, n, order=None):
    total = None
    for r in (order or range(world)):
        x = data_for(seed, r, n)
        total = x.copy() if total is None else (total + x).astype(np.float32)
    return total


@pytest.mark.parametrize("world,n,capacity", [(2, 2500, 1000), (3, 4097, 512), (2, 7, 0)])
def test_all_reduce_sums_in_rank_order_whoever_arrives_first(world, n, capacity, tmp_path):
    action = {"op": "all_reduce", "n": n, "capacity": capacity, "seed": 5, "repeat": 3,
              "delay": 0.05}
    results, errors, _, _ = run_ranks(world, action, tmp_path)
    assert errors == [None] * world, errors
    for i in range(3):
        expected = reference_sum(5 + i, world, n)
        for r in range(world):
            np.testing.assert_array_equal(results[r][i], expected)
    # with 3 ranks the check can fail: another order gives other bits (a + b is commutative,
    # (a + b) + c is not associative)
    assert world < 3 or not np.array_equal(reference_sum(5, world, n),
                              reference_sum(5, world, n, order=list(reversed(range(world)))))


def test_broadcast_copies_the_root_bytes_across_chunks(tmp_path):
    results, errors, _, _ = run_ranks(3, {"op": "broadcast", "n": 3001, "capacity": 256,
                                          "root": 1, "seed": 2}, tmp_path)
    assert errors == [None] * 3, errors
    for r in range(3):
        np.testing.assert_array_equal(results[r][0], data_for(2, 1, 3001))


def test_stalled_rank_is_named_after_the_timeout(tmp_path):
    results, errors, elapsed, _ = run_ranks(2, {"op": "stall", "n": 10, "timeout": 1.5}, tmp_path,
                                            wait=20, wait_ranks=[0])
    assert errors[0] is not None and "timed out after 1.5 s" in errors[0], errors
    assert "rank 1 did not arrive" in errors[0]
    assert elapsed < 15


def test_a_rank_stalled_inside_an_all_reduce_is_named_and_woken_by_the_abort(tmp_path):
    """The hang fault (stall_next_all_reduce): rank 1 posts its chunk and passes the first
    barrier, then stops; rank 0 waits in the middle of the collective, times out naming
    rank 1, and its abort wakes rank 1, whose call fails with that reason (no process is
    left wedged once the run is aborted)."""
    results, errors, elapsed, _ = run_ranks(
        2, {"op": "stall_inside", "n": 3000, "capacity": 1000, "timeout": 1.5}, tmp_path, wait=20)
    assert errors[0] is not None and "timed out after 1.5 s" in errors[0], errors
    assert "rank 1 did not arrive (stalled)" in errors[0]
    assert errors[1] is not None and "rank 1 did not arrive (stalled)" in errors[1], errors
    assert results == [None, None]
    assert elapsed < 15


def test_a_dead_peer_is_reported_without_waiting_for_the_timeout(tmp_path):
    t0 = time.monotonic()
    results, errors, elapsed, _ = run_ranks(2, {"op": "exit", "n": 10, "timeout": 30}, tmp_path,
                                            wait=25)
    assert errors[0] is not None and "rank 1 (pid" in errors[0] and "exited" in errors[0], errors
    assert elapsed < 10


def test_abort_wakes_the_waiting_rank_with_the_reason(tmp_path):
    results, errors, elapsed, _ = run_ranks(2, {"op": "abort", "n": 10, "timeout": 30}, tmp_path,
                                            wait=25)
    assert errors[0] is not None and "rank 1 aborted the run: rank 1 gives up: boom" in errors[0], errors
    assert elapsed < 10


def test_world_size_disagreement_is_an_error(tmp_path):
    name = shm_name()
    env = dict(os.environ, PYTHONPATH=ROOT)
    code = ("import sys; from codext import _C\n"
            "try:\n    _C.ShmComm(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), timeout=3)\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    p0 = subprocess.Popen([sys.executable, "-c", code, name, "0", "2"], env=env,
                          stdout=subprocess.PIPE, text=True)
    p1 = subprocess.Popen([sys.executable, "-c", code, name, "1", "3"], env=env,
                          stdout=subprocess.PIPE, text=True)
    out1 = p1.communicate(timeout=30)[0]
    out0 = p0.communicate(timeout=30)[0]
    assert "disagree on the world size" in out1, out1
    assert "rank 1 did not arrive" in out0 or "timed out" in out0, out0
    assert not leftover(name)


def test_single_rank_and_bad_arguments():
    name = shm_name()
    comm = _C.ShmComm(name, 0, 1, timeout=5)
    assert not leftover(name)
    a = np.arange(5, dtype=np.float32)
    comm.all_reduce(a)
    np.testing.assert_array_equal(a, np.arange(5, dtype=np.float32))
    comm.barrier()
    with pytest.raises(TypeError, match="float32"):
        comm.all_reduce(np.zeros(3))
    with pytest.raises(ValueError, match="root 2"):
        comm.broadcast(a, 2)
    comm.abort("stop here")
    with pytest.raises(RuntimeError, match="stop here"):
        comm.barrier()
    comm.close()
    with pytest.raises(RuntimeError, match="closed"):
        comm.barrier()
    with pytest.raises(ValueError, match="must start with '/'"):
        _C.ShmComm("no-slash", 0, 1)
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        _C.ShmComm(shm_name(), 2, 2)
    ok, why = _C.nccl_available()  # CPU-only build: no CUDA library, said so (never a fallback)
    if not ok:
        assert "without CUDA" in why or "CODEXT_CUDA_LIBRARY" in why, why
        with pytest.raises(RuntimeError, match=re.escape(why[:40])):
            _C.NcclComm(bytes(128), 0, 1)
    with pytest.raises(ValueError, match="128 bytes, got 3"):
        _C.NcclComm(b"abc", 0, 1)
    assert _C.shm_segment_bytes(2) < 32 << 20 and _C.shm_segment_bytes(64) <= 32 << 20
