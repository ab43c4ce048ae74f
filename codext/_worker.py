"""python -m codext._worker: one rank of a codext.launch() run (started by the launcher
with fork + exec of a fresh interpreter; never by hand).

From the launcher it inherits: its place (CODEXT_RANK, CODEXT_WORLD_SIZE, the store's
address and secret; see codext/_dist.py), CODEXT_JOB_FD (a memfd holding the job as
JSON: {"kind": "train" | "selftest" | "datacheck", ...}), CODEXT_EVENT_FD (a pipe for JSON-line events
to the launcher: "result" from rank 0, "error" with the traceback from any rank) and the
dataset's memfds (mapped read-only). Its stdout and stderr are a pipe the launcher reads.

Fault injection for tests: CODEXT_FAULT="rank:step:kind[,rank:step:kind...]" with kind
kill (SIGKILL itself, first printing the time it did so: `injected kill: ... at unix time
T`), raise (RuntimeError), hang or oom at global step `step` on rank `rank`. A hang stalls
inside the step's first all-reduce (the rank has posted its data and passed the first
barrier, then never finishes the collective; comm.h, stall_next_all_reduce), so its peers
wait in the middle of that collective until their timeout (the peers' abort wakes it over
shared memory; over NCCL it stays until the launcher kills it); without a communicator of
two or more ranks it sleeps forever before the step. In training, oom
is reported by the C step itself (Trainer.inject_oom): every rank then halves the
micro-batch and runs the step again (docs/distributed.md); in the selftest job it raises
MemoryError.
"""
import ctypes
import json
import os
import signal
import sys
import time
import traceback

FAULT_KINDS = ("kill", "raise", "hang", "oom")


def die_with_parent():
    """PR_SET_PDEATHSIG: the kernel kills this worker when the launcher dies (a restarted
    notebook kernel leaves no orphans). Exits at once if the launcher is already gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    parent = int(os.environ.get("CODEXT_PARENT_PID", "0") or 0)
    if parent and os.getppid() != parent:
        os._exit(70)


def parse_faults(text):
    """'1:3:kill,0:5:raise' -> {(1, 3): 'kill', (0, 5): 'raise'}; ValueError names CODEXT_FAULT."""
    faults = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        parts = item.split(":")
        try:
            rank, step, kind = int(parts[0]), int(parts[1]), parts[2]
            if len(parts) != 3 or kind not in FAULT_KINDS or rank < 0 or step < 0:
                raise ValueError
        except (ValueError, IndexError):
            raise ValueError(f"CODEXT_FAULT item {item!r} is not rank:step:kind with kind one of "
                             f"{', '.join(FAULT_KINDS)}") from None
        faults[(rank, step)] = kind
    return faults


def inject(kind, rank, step, comm=None):
    """Fires the fault `kind` (see the module's docstring). Returns only for a hang armed
    in `comm` (the next all-reduce stalls) or raises; kill and a comm-less hang never return."""
    where = f"rank {rank} before step {step} (CODEXT_FAULT)"
    if kind == "kill":
        print(f"injected kill: {where} at unix time {time.time():.3f}", flush=True)
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "raise":
        raise RuntimeError(f"injected fault: {where}")
    if kind == "oom":
        raise MemoryError(f"injected out-of-memory: {where}")
    if kind == "hang" and comm is not None and comm.world > 1:
        print(f"injected hang: rank {rank} stalls inside the first all-reduce of step {step} "
              f"(CODEXT_FAULT) from unix time {time.time():.3f}", flush=True)
        comm.stall_next_all_reduce()
        return
    if kind == "hang":
        print(f"injected hang: {where}", flush=True)
        while True:
            time.sleep(3600)


class Events:
    """JSON lines to the launcher."""

    def __init__(self, fd):
        self.file = os.fdopen(fd, "w", buffering=1) if fd is not None else None

    def send(self, kind, **fields):
        if self.file is not None:
            self.file.write(json.dumps(dict(kind=kind, **fields)) + "\n")
            self.file.flush()


def read_job(fd):
    size = os.fstat(fd).st_size
    return json.loads(os.pread(fd, size, 0).decode())


def selftest(job, conn, faults):
    """`steps` all-reduces of `n` floats, each checked: the launcher's own health check."""
    import numpy as np
    rank, world = conn.place.rank, conn.place.world
    expected = world * (world + 1) / 2
    buf = np.empty(int(job["n"]), np.float32)
    print(f"selftest: {world} ranks, {job['steps']} all-reduces of {buf.size} floats", flush=True)
    for step in range(int(job["steps"])):
        if (rank, step) in faults:
            inject(faults[(rank, step)], rank, step, conn.comm)
        buf[:] = rank + 1
        conn.comm.all_reduce(buf)
        if not np.all(buf == expected):
            raise RuntimeError(f"all_reduce at step {step} gave {buf[0]} instead of {expected}")
    return {"steps": int(job["steps"]), "value": float(buf[0]) if buf.size else expected}


def _private_kib():
    """This process's private memory (Private_Clean + Private_Dirty), KiB; None off Linux."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            return sum(int(line.split()[1]) for line in f if line.startswith("Private_"))
    except OSError:
        return None


def datacheck(job, conn, faults):
    """Maps the job's dataset, reads every byte, and reports how much private memory that
    cost this worker: the launcher's health check that data is shared, not copied."""
    import numpy as np
    from .data import Dataset
    before = _private_kib()
    data = Dataset.from_shared(job["data"])
    checksum = int(data.train.images.sum(dtype=np.uint64)) + int(data.train.masks.sum(dtype=np.uint64))
    after = _private_kib()
    conn.comm.barrier()
    return {"bytes": int(data.train.images.nbytes + data.train.masks.nbytes), "checksum": checksum,
            "private_kib": None if before is None else after - before,
            "writeable": bool(data.train.images.flags.writeable or data.train.masks.flags.writeable)}


def main():
    die_with_parent()
    event_fd = os.environ.get("CODEXT_EVENT_FD")
    events = Events(int(event_fd) if event_fd else None)
    rank = os.environ.get("CODEXT_RANK", "?")
    conn = None
    try:
        from . import _dist
        place = _dist.place_from_env()
        if place is None:
            raise RuntimeError("codext._worker runs only under codext.launch()")
        rank = place.rank
        job = read_job(int(os.environ["CODEXT_JOB_FD"]))
        faults = parse_faults(os.environ.get("CODEXT_FAULT"))
        device = None  # a training GPU rank connects over NCCL when the CUDA library has it
        if job["kind"] == "train":
            from ._device import resolve
            from .config import Config
            device, _ = resolve(Config.from_json(job["config"]).device, data_parallel=True,
                                local_rank=place.local_rank)
        conn = _dist.connect(place, timeout=float(job.get("timeout", _dist.DEFAULT_TIMEOUT)),
                             device=device)
        if job["kind"] == "selftest":
            result = selftest(job, conn, faults)
        elif job["kind"] == "datacheck":
            result = datacheck(job, conn, faults)
        elif job["kind"] == "train":
            from .train import train_worker
            result = train_worker(job, conn, faults)
        else:
            raise ValueError(f"unknown job kind {job['kind']!r}")
        if place.rank == 0:
            events.send("result", rank=0, result=result)
    except BaseException as e:  # everything reaches the launcher, then this worker exits
        if conn is not None:
            conn.comm.abort(f"rank {rank} failed: {type(e).__name__}: {e}")
        events.send("error", rank=rank, type=type(e).__name__, message=str(e),
                    traceback=traceback.format_exc())
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
