"""The failures of the NCCL backend of the collectives (csrc/dist/comm_nccl.c over
kernels/nccl.cu) on the emulated CUDA library with the emulated NCCL
(csrc/emu/emu_nccl.cc), GPU ranks joining through codext._dist.connect (rank 0 makes the
unique id and shares it through the store). Training over NCCL against the staged
shared-memory path and CPU ranks: tests/test_emu_ddp.py.

- A rank that never joins: rank 0's init fails within its timeout, naming the operation.
- A rank that joins but stops taking part: rank 0's first collective times out.
- A rank that aborts: the other fails at its next collective, long before the timeout.
"""
import re

import numpy as np
import pytest

from emu_build import emulated_env
from test_ddp import run_ranks

pytestmark = pytest.mark.timeout(600)

from test_emu_ddp import ARGS


def _seconds(error):
    return float(re.search(r"\[after ([0-9.]+) s\]", error).group(1))


def test_gpu_ranks_choose_their_transport():
    from codext import _dist
    assert _dist._nccl_choice("cpu", {}) == (False, "CPU ranks use shared memory")
    assert _dist._nccl_choice("cuda:0", {"CODEXT_GPU_TRANSPORT": "shm"}) == (False, "CODEXT_GPU_TRANSPORT=shm")
    with pytest.raises(ValueError, match="CODEXT_GPU_TRANSPORT must be"):
        _dist._nccl_choice("cuda:0", {"CODEXT_GPU_TRANSPORT": "mpi"})
    assert _dist.gpu_ordinal("cuda:3") == 3 and _dist.gpu_ordinal("cpu") is None


def test_a_rank_that_never_joins_times_out_the_init(emulated, library, tmp_path):
    compiler, _ = emulated
    args = dict(ARGS, device="cuda", connect=True, timeout=3)
    errors = run_ranks(2, args, tmp_path, env=emulated_env(library, compiler), timeout=120,
                       ranks=[0], check=False)
    error = errors[0]
    assert error and "NCCL init" in error and "on rank 0 of 2" in error, error
    assert "did not complete within the timeout of 3 s" in error, error
    assert _seconds(error) < 3 + 30  # the worker's start (imports under ASan) + the timeout


def test_a_rank_that_stops_taking_part_times_out_the_collective(emulated, library, tmp_path):
    compiler, _ = emulated
    args = dict(ARGS, device="cuda", connect=True, timeout=3, stall_rank=1)
    errors = run_ranks(2, args, tmp_path, env=emulated_env(library, compiler), timeout=120,
                       check=False)
    error = errors[0]
    # rank 1 joined the communicator, then never made the join's broadcast
    assert error and "NCCL broadcast on rank 0 of 2 did not complete within the timeout of 3 s" in error, error
    assert "stalled on purpose" in (errors[1] or ""), errors[1]


def test_a_rank_stalled_inside_a_gradient_all_reduce_times_out_its_peer(emulated, library, tmp_path):
    """CODEXT_FAULT's hang over NCCL: rank 1 joins, takes part in the join's broadcast, then
    never enqueues its first training all-reduce; rank 0's NCCL call in that step fails
    after the timeout (its watchdog), naming the operation. (Rank 1 stays wedged, as a
    real one would: the launcher kills it; here run_ranks does.)"""
    compiler, _ = emulated
    args = dict(ARGS, device="cuda", connect=True, timeout=3, stall_inside_rank=1)
    errors = run_ranks(2, args, tmp_path, env=emulated_env(library, compiler), timeout=120,
                       check=False, wait_for=[0])
    error = errors[0]
    # the first gradient bucket (ncclAvg, on the communication thread during the backward)
    assert error and "NCCL all_reduce (ncclAvg) on rank 0 of 2 did not complete within the timeout of 3 s" in error, error


def test_an_abort_on_one_rank_fails_the_other_at_once(emulated, library, tmp_path):
    compiler, _ = emulated
    args = dict(ARGS, device="cuda", connect=True, timeout=120, abort_rank=1)
    errors = run_ranks(2, args, tmp_path, env=emulated_env(library, compiler), timeout=200,
                       check=False)
    assert "aborted the communicator on purpose" in (errors[1] or ""), errors[1]
    error = errors[0]
    assert error and re.search(r"NCCL (broadcast|all_reduce \(ncclAvg\)) on rank 0 of 2 failed", error), error
    assert "rank 1 aborted the communicator" in error, error
    assert _seconds(error) < 60  # far below the 120 s timeout: the abort woke rank 0
