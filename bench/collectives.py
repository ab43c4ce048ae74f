"""Shared-memory all-reduce (csrc/dist/comm_shm.c) against a plain memcpy of the same
bytes, at the gradient sizes of the demo model and of the full model (informational; not
a test).

    python bench/collectives.py [--ranks 2] [--repeat 10] [--sizes demo,base]

Each rank is a process of its own (this script started again with --rank); rank 0 times
`repeat` all-reduces after one warm-up and reports the best. GB/s is the gradient's bytes
over the time of one all-reduce (every rank gets the sum of all); memcpy is numpy.copyto
of the same bytes in one process. The all-reduce moves each byte about 3 times per rank
(into the staging slot, the sliced sum reads W slots, the result back), so on an idle
machine expect it a few times below memcpy. On 2 shared cores the ranks also compete with
everything else running.

Measured on a quiet 2-core VM (2 ranks, best of 10, 2026-12-06, `python bench/collectives.py`):

    gradient of                                 MiB  all-reduce ms    GB/s  memcpy ms    GB/s  ratio
    edgenext_xx_small, D 32, 7 experts          5.1           0.80    6.69       0.12   44.02    6.6x
    edgenext_base, D 64, 7 experts             71.1          15.99    4.66       5.37   13.90    3.0x

At the full model's size the all-reduce costs 3x a memcpy, which is what moving each byte
3 times costs; the small gradient fits in cache for the memcpy, not for the 2-rank
exchange. Earlier, on the same kind of VM shared with other jobs (load average ~9.5, so
the all-reduce mostly waited for the other rank to be scheduled; best of 20):

    gradient of                                 MiB  all-reduce ms    GB/s  memcpy ms    GB/s  ratio
    edgenext_xx_small, D 32, 7 experts          5.1           6.89    0.78       0.33   16.26   20.9x
    edgenext_base, D 64, 7 experts             71.1         198.47    0.38      13.45    5.54   14.8x
"""
import argparse
import json
import os
import subprocess
import sys
import time
import uuid

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from codext import _C  # noqa: E402

# floats in the gradient buffer of codext.Model(...) (model._params.size)
SIZES = {"demo": ("edgenext_xx_small, D 32, 7 experts", 1342384),
         "base": ("edgenext_base, D 64, 7 experts", 18647904)}


def rank_main(args):
    comm = _C.ShmComm(args.name, args.rank, args.ranks, timeout=120)
    out = {}
    for key in args.sizes.split(","):
        n = SIZES[key][1]
        buf = np.full(n, args.rank + 1, np.float32)
        comm.all_reduce(buf)  # warm-up: pages touched, segment mapped
        best = float("inf")
        for _ in range(args.repeat):
            comm.barrier()
            t0 = time.perf_counter()
            comm.all_reduce(buf)
            best = min(best, time.perf_counter() - t0)
        out[key] = best
    if args.rank == 0:
        print(json.dumps(out), flush=True)
    comm.close()


def memcpy_time(n, repeat):
    src = np.ones(n, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--sizes", default="demo,base")
    p.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--name", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rank is not None:
        return rank_main(args)
    name = f"/codext-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, CODEXT_NUM_THREADS="1")
    cmd = [sys.executable, os.path.abspath(__file__), "--ranks", str(args.ranks), "--repeat",
           str(args.repeat), "--sizes", args.sizes, "--name", name]
    procs = [subprocess.Popen(cmd + ["--rank", str(r)], stdout=subprocess.PIPE, text=True, env=env)
             for r in range(args.ranks)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        sys.exit(f"a rank failed: {[p.returncode for p in procs]}")
    times = json.loads(outs[0])
    print(f"shared-memory all-reduce, {args.ranks} ranks, best of {args.repeat} "
          f"({len(os.sched_getaffinity(0))} cores)")
    print(f"{'gradient of':38s} {'MiB':>8s} {'all-reduce ms':>14s} {'GB/s':>7s} "
          f"{'memcpy ms':>10s} {'GB/s':>7s} {'ratio':>6s}")
    for key in args.sizes.split(","):
        what, n = SIZES[key]
        nbytes = 4 * n
        t_ar, t_cp = times[key], memcpy_time(n, args.repeat)
        print(f"{what:38s} {nbytes / 2**20:8.1f} {t_ar * 1e3:14.2f} {nbytes / t_ar / 1e9:7.2f} "
              f"{t_cp * 1e3:10.2f} {nbytes / t_cp / 1e9:7.2f} {t_ar / t_cp:6.1f}x")


if __name__ == "__main__":
    main()
