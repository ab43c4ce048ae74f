"""codext.launch(): data-parallel training from a notebook or a script, with supervised
worker processes (docs/distributed.md).

    >>> import codext, tempfile
    >>> cfg = codext.Config(backbone="edgenext_tiny_test", img_size=32, decoder_dim=16,
    ...                     num_experts=3, batch_size=2, epochs=1, synthetic_train=8,
    ...                     synthetic_test=4, checkpoint_dir=tempfile.mkdtemp())
    >>> result = codext.launch(cfg, nprocs=2, log=None)   # doctest: +SKIP
    >>> result.history["step_loss"].shape                 # doctest: +SKIP
    (2,)

How the workers start and end:

- Each worker is a fresh interpreter (`python -m codext._worker`, fork + exec through
  subprocess), never a bare fork: the notebook may hold a CUDA context, codext's thread
  pool or ipykernel's threads, none of which survive a fork. The launcher itself never
  touches CUDA.
- Workers write to pipes owned by the launcher, never to the notebook's fds 1 and 2;
  reader threads queue rank 0's lines with a "[rank 0] " prefix (all ranks' with
  show_all_ranks=True) for the launcher's thread to show, and keep every rank's last
  lines for error messages.
- Progress: rank 0 sends events (steps, evaluations, epochs, its own lines) through a
  pipe of their own; the launcher draws them as one progress bar and an epoch table
  (codext/_launch_progress.py).
- The dataset reaches the workers once, through its memfd (or cache file) descriptors
  (pass_fds), mapped read-only: no copy per worker.
- Rendezvous: the launcher hosts the store (csrc/dist/store_*.c) on 127.0.0.1 on a port
  the system picks (the socket stays open: no "address already in use"), with a fresh
  32-byte secret passed to the workers in their environment, and puts the shared-memory
  segment's name in it.
- The collectives' segment lives in /dev/shm when it has room, else in a file-backed
  mapping in the temporary directory (and the launcher says so).
- Every worker dies with the launcher (PR_SET_PDEATHSIG).

Supervision: a worker that exits with an error code, dies from a signal or reports an
exception stops the run: the others get SIGTERM, then SIGKILL 2 s later, and launch()
raises WorkerError naming the rank, the signal or exit code or the exception (message and
traceback), and that rank's last lines. A collective that waits longer than `timeout`
fails naming the rank that never arrived. Ctrl-C (SIGINT) stops every worker and raises
KeyboardInterrupt. In every case the workers are reaped and no shared-memory segment is
left in /dev/shm.
"""
import collections
import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from . import _C, _dist, _launch_progress

__all__ = ["launch", "WorkerError"]

TAIL_LINES = 30
GRACE_S = 2.0
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# variables of other launchers that must not leak into our workers' view of their place
_FOREIGN_PLACE_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                       "MASTER_PORT", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
                       "TORCHELASTIC_RUN_ID", "GROUP_RANK")


class WorkerError(RuntimeError):
    """A worker of codext.launch() failed. rank; exitcode (None if killed by a signal);
    signal (a signal name or None); remote_type / remote_traceback (the worker's exception,
    when it raised one); last_lines (its last output lines)."""

    def __init__(self, message, rank, exitcode=None, signal=None, remote_type=None,
                 remote_traceback=None, last_lines=()):
        super().__init__(message)
        self.rank = rank
        self.exitcode = exitcode
        self.signal = signal
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback
        self.last_lines = list(last_lines)


def _cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _timeout_from(timeout):
    if timeout is not None:
        value, what = timeout, "timeout"
    elif os.environ.get("NCCL_TIMEOUT"):
        value, what = os.environ["NCCL_TIMEOUT"], "NCCL_TIMEOUT"
    else:
        return _dist.DEFAULT_TIMEOUT
    try:
        value = float(value)
    except ValueError:
        raise ValueError(f"{what} must be a number of seconds, got {value!r}") from None
    if not value > 0:
        raise ValueError(f"{what} must be > 0 seconds, got {value}")
    return value


class _Worker:
    def __init__(self, rank, proc, event_fd, progress_fd, show, display):
        self.rank, self.proc = rank, proc
        self.tail = collections.deque(maxlen=TAIL_LINES)
        self.events = []
        self.lock = threading.Lock()
        self.readers = [
            threading.Thread(target=self._read_output, args=(show, display), daemon=True),
            threading.Thread(target=self._read_events, args=(event_fd,), daemon=True)]
        if progress_fd is not None:
            self.readers.append(threading.Thread(target=self._read_progress,
                                                 args=(progress_fd, display), daemon=True))
        for t in self.readers:
            t.start()

    def _read_output(self, show, display):
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.lock:
                self.tail.append(line)
            if show:
                display.put_line(self.rank, line)
        self.proc.stdout.close()

    def _read_progress(self, fd, display):
        def on_event(event):
            line = _launch_progress.event_line(event)
            if line is not None:  # codext.train's lines count for error messages
                with self.lock:
                    self.tail.append(line)
            display.put_event(event)
        _launch_progress.read_events(fd, on_event)

    def _read_events(self, fd):
        with os.fdopen(fd, "rb") as f:
            for raw in f:
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                with self.lock:
                    self.events.append(event)

    def event(self, kind):
        with self.lock:
            return next((e for e in self.events if e.get("kind") == kind), None)

    def last_lines(self):
        with self.lock:
            return list(self.tail)


def _describe_exit(worker):
    code = worker.proc.returncode
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}", None, name
    return f"exited with code {code}", code, None


def _consequence(message):
    """True for errors that only report another rank's failure."""
    return any(s in message for s in ("aborted the run", "exited without reaching"))


def _failure(workers):
    """WorkerError for the rank whose failure caused the others', or None."""
    crashed, raised = [], []
    for w in workers:
        err = w.event("error")
        if err is not None:
            raised.append((w, err))
        elif w.proc.returncode not in (None, 0):
            crashed.append(w)
    if not crashed and not raised:
        return None
    if crashed:
        w = crashed[0]
        how, code, sig = _describe_exit(w)
        lines = w.last_lines()
        message = f"codext.launch: rank {w.rank} (pid {w.proc.pid}) {how}"
        message += ("; its last lines:\n" + "\n".join(f"[rank {w.rank}] {l}" for l in lines)
                    if lines else " (it printed nothing)")
        return WorkerError(message, w.rank, code, sig, last_lines=lines)
    primary = [(w, e) for w, e in raised if not _consequence(e.get("message", ""))] or raised
    w, err = primary[0]
    lines = w.last_lines()
    message = (f"codext.launch: rank {w.rank} failed: {err.get('type')}: {err.get('message')}\n\n"
               f"rank {w.rank}'s traceback:\n{err.get('traceback', '').rstrip()}")
    if lines:
        message += "\n\nits last lines:\n" + "\n".join(f"[rank {w.rank}] {l}" for l in lines)
    code = w.proc.returncode if w.proc.returncode is not None and w.proc.returncode >= 0 else None
    return WorkerError(message, w.rank, code, None, err.get("type"), err.get("traceback"), lines)


def _stop(workers):
    """SIGTERM, then SIGKILL after GRACE_S; reaps every worker."""
    for w in workers:
        if w.proc.poll() is None:
            try:
                w.proc.terminate()
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + GRACE_S
    for w in workers:
        try:
            w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.proc.kill()
    for w in workers:
        w.proc.wait()
        for t in w.readers:
            t.join(timeout=1.0)


def _worker_env(rank, world, port, secret, threads, job_fd, event_fd, progress_fd, extra):
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_PLACE_VARS}
    path = env.get("PYTHONPATH")
    env.update({
        _dist.ENV_RANK: str(rank), _dist.ENV_WORLD: str(world), _dist.ENV_ADDR: "127.0.0.1",
        _dist.ENV_PORT: str(port), _dist.ENV_SECRET: secret.hex(), _dist.ENV_WORKER: "1",
        "CODEXT_PARENT_PID": str(os.getpid()), "CODEXT_NUM_THREADS": str(threads),
        "CODEXT_JOB_FD": str(job_fd), "CODEXT_EVENT_FD": str(event_fd),
        "PYTHONUNBUFFERED": "1",
        **({_launch_progress.ENV_FD: str(progress_fd)} if progress_fd is not None else {}),
        # the workers import the codext this process imported
        "PYTHONPATH": _PACKAGE_PARENT + (os.pathsep + path if path else ""),
    })
    env.update(extra or {})
    return env


def _check_workers(nprocs, gpu_workers, master_port):
    """The checks of a launch that need no worker: each a clear error, raised before
    anything is written (launch() runs them before it claims the checkpoint folder)."""
    if os.environ.get(_dist.ENV_WORKER):
        raise RuntimeError("codext.launch() was called inside a codext worker (a worker cannot "
                           "start workers of its own)")
    if not isinstance(nprocs, int) or nprocs < 1:
        raise ValueError(f"nprocs must be a positive integer, got {nprocs!r}")
    cores = _cores()
    if nprocs > cores and not gpu_workers:
        raise ValueError(f"nprocs={nprocs} is more than the {cores} CPU cores this process may "
                         f"use (CPU workers; no GPU is used by this build)")
    if nprocs > 64:
        raise ValueError(f"nprocs={nprocs}: the shared-memory backend takes at most 64 workers")
    if master_port is not None and not (isinstance(master_port, int) and 1 <= master_port <= 65535):
        raise ValueError(f"master_port must be a port number in 1..65535, got {master_port!r}")
    if master_port is not None:  # taken now: say so before the folder is touched
        import socket
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", master_port))
            except OSError as e:
                raise OSError(f"master port {master_port}: the port is taken ({e.strerror}); "
                              f"choose another or leave it to codext") from None


def run_workers(job, nprocs, *, data=None, timeout=None, threads=None, log=print,
                show_all_ranks=False, env=None, master_port=None, display=None,
                gpu_workers=False):
    """Starts `nprocs` workers on `job` (a JSON-ready dict with "kind"), supervises them
    and returns rank 0's result. The machinery under launch(); job "selftest" ({"n",
    "steps"}) checks the collectives alone. env: extra variables for the workers.
    master_port: the store's port (None: one the system picks). display: a
    codext._launch_progress.Display that shows the workers' lines and rank 0's progress
    (None: the lines through log, no progress). gpu_workers: each worker trains on a GPU
    (codext._device.plan_launch counted them), so the CPU cores do not bound nprocs."""
    _check_workers(nprocs, gpu_workers, master_port)
    cores = _cores()
    timeout = _timeout_from(timeout)
    threads = threads or max(1, cores // nprocs)
    display = display if display is not None else _launch_progress.Display(False, log)
    job = dict(job, timeout=timeout, progress=display.worker_spec())
    data_fds = data.fds() if data is not None else []
    if data is not None:
        job["data"] = data.share()

    if gpu_workers and nprocs > 1:  # NCCL's shared-memory transport and a small /dev/shm
        env = dict(_dist.nccl_shm_env(log), **(env or {}))
    secret = secrets.token_bytes(32)
    try:
        server = _C.StoreServer("127.0.0.1", master_port or 0, secret)
    except RuntimeError as e:
        raise OSError(f"master port {master_port}: {e}") from None
    shm_name = _dist.segment_name(nprocs, log=log)
    workers, job_fd, failed = [], None, True
    try:
        store = _C.StoreClient("127.0.0.1", server.port, secret, 10.0)
        store.set(_dist.SHM_KEY, shm_name.encode())
        store.close()
        job_fd = os.memfd_create("codext-job", os.MFD_CLOEXEC)
        os.write(job_fd, json.dumps(job).encode())
        for rank in range(nprocs):
            event_r, event_w = os.pipe()
            # rank 0's progress: a pipe of its own (docs/distributed.md, "Progress")
            progress_r, progress_w = (os.pipe() if rank == 0 and job["progress"] is not None
                                      else (None, None))
            ours = [fd for fd in (event_w, progress_w) if fd is not None]
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "codext._worker"], stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    pass_fds=[job_fd, *ours, *data_fds], start_new_session=True,
                    env=_worker_env(rank, nprocs, server.port, secret, threads, job_fd, event_w,
                                    progress_w, env))
            except BaseException:
                for fd in (event_r, progress_r):
                    if fd is not None:
                        os.close(fd)
                raise
            finally:
                for fd in ours:
                    os.close(fd)
            workers.append(_Worker(rank, proc, event_r, progress_r, rank == 0 or show_all_ranks,
                                   display))
        result = _supervise(workers, display)
        failed = False
        return result
    finally:
        _stop(workers)
        server.close()
        if job_fd is not None:
            os.close(job_fd)
        _dist.remove_segment(shm_name)  # only left when a rank died before all attached
        display.close(quiet=failed)  # what the workers said last, before any error


def _supervise(workers, display):
    while True:
        display.drain()
        error = _failure(workers)
        if error is not None:
            # let the other ranks' reports arrive, so the root cause is picked, then stop
            time.sleep(0.3)
            for w in workers:
                w.proc.poll()
            error = _failure(workers) or error  # before _stop's own SIGTERMs count as deaths
            _stop(workers)
            raise error
        if all(w.proc.poll() == 0 for w in workers):
            for t in workers[0].readers:
                t.join(timeout=5.0)
            result = workers[0].event("result")
            if result is None:
                raise WorkerError("codext.launch: rank 0 exited without reporting a result",
                                  0, 0, last_lines=workers[0].last_lines())
            return result["result"]
        time.sleep(0.05)


def launch(config=None, data=None, nprocs=None, *, timeout=None, log=print, progress=True,
           show_all_ranks=False, master_port=None, resume=None, overwrite=False, **overrides):
    """Trains with `nprocs` data-parallel workers; returns the same TrainResult as
    codext.train.

    config: codext.Config (None: Config.demo()); overrides: Config fields to change
    (launch(cfg, epochs=3)). data: a codext.data Dataset (None: the synthetic set of
    the config). nprocs: workers (default: one per GPU for GPU workers, else 1); the
    engine's threads are split between them.

    Devices (config.device, decided here without loading CUDA: codext/_device.py,
    plan_launch): "cuda" starts one worker per visible GPU (nprocs None; CUDA_VISIBLE_DEVICES
    respected, the GPUs counted through NVML or nvidia-smi), each on the GPU of its rank;
    more workers than GPUs, a CPU-only build or no visible GPU is an error naming the
    cause. "auto" does that where this build has a CUDA backend and a GPU is visible, else
    starts CPU workers; "cpu" starts CPU workers; "cuda:N" is a ValueError (each worker takes
    its own GPU). GPU workers join through the shared-memory communicator, their gradients
    averaged in device memory over NCCL, or staged through host memory by the shared-
    memory communicator where the CUDA library has no NCCL (codext/_dist.py, connect).

    timeout: seconds a collective may wait for the other ranks (default: config.timeout,
    else NCCL_TIMEOUT from the environment, else 600). Each worker trains batch_size images
    per micro-batch: the global batch is batch_size x nprocs x accumulation_steps. Rank 0
    alone writes checkpoints and history. master_port: the rendezvous store's port on 127.0.0.1 (None: a free one; a taken port is an OSError
    naming it). resume / overwrite: as in codext.train (resume continues the run in its
    own folder; a new run refuses a checkpoint_dir holding one unless overwrite=True).

    log: where lines go (print; a callable receives each line; None: nothing is shown).
    progress: as codext.train's: True shows what rank 0 reports, drawn here: one progress
    bar (tqdm.auto's, a widget in Jupyter, when tqdm is importable; an updating line on a
    terminal; else a plain line through log every config.log_every steps) with loss, lr,
    images/s and the ETA of the epoch and of the run, and a table with a row per epoch
    (stage, loss, lr, images/s, time and the validation metrics). False shows no progress
    and none of codext.train's lines (the workers' own output still reaches log). A
    codext._progress.Progress receives the events instead. Other ranks' lines appear with
    show_all_ranks=True, prefixed "[rank N] " like rank 0's own output.

    Raises WorkerError (a RuntimeError) when a worker fails, KeyboardInterrupt on Ctrl-C
    (the last epoch's checkpoint stays as it was); ValueError for bad arguments.
    """
    from .config import Config
    from . import data as _data
    from .train import result_from_worker
    if config is None:  # the demo's defaults: epochs alone also fit its frozen epochs
        config = Config.demo().with_epochs_fitted(**overrides)
    elif not isinstance(config, Config):
        raise TypeError(f"config must be a codext.Config, got {type(config).__name__}")
    elif overrides:
        config = config.replace(**overrides)
    from . import _device
    # CPU or GPU workers, and how many: decided here, without loading CUDA
    worker_device, nprocs, device_notes = _device.plan_launch(config.device, nprocs)
    config = config.replace(device=worker_device)
    display = _launch_progress.Display(progress, log, config.log_every)  # checks progress
    for note in device_notes if log is not None and progress is not False else ():
        log(note)
    from . import _checkpoint, _rundir
    if resume is not None:  # the run's checks, here first so that errors reach the caller
        if overwrite:
            raise ValueError("resume and overwrite=True exclude each other")
        run = _rundir.RunDir.for_resume(resume)
        if isinstance(nprocs, int):
            run.check_world_size(nprocs)
        config = config.replace(checkpoint_dir=run.folder)
    # every check that needs no worker, before the folder is touched (overwrite deletes)
    _check_workers(nprocs if nprocs is not None else 1, worker_device == "cuda", master_port)
    _timeout_from(timeout if timeout is not None else config.timeout)
    if data is None:  # Config.dataset_path, loaded once here and shared, else the synthetic
        data = _data.for_config(config, log)  # set: before the folder is touched
    # the folder the workers will use: "~" expanded here as they expand it, so that the
    # run this claims (or refuses to overwrite) is the one they would write over
    config = config.replace(checkpoint_dir=_checkpoint.prepare_folder(
        config.checkpoint_dir, resuming=resume is not None))
    if resume is None:
        _checkpoint.claim_folder(config.checkpoint_dir, overwrite, log)
    threads = config.num_threads or max(1, _cores() // (nprocs if isinstance(nprocs, int) else 1))
    if timeout is None:
        timeout = config.timeout
    job = {"kind": "train", "config": config.to_json(), "resume": resume and os.path.abspath(resume)}
    result = run_workers(job, nprocs, data=data, timeout=timeout, threads=threads, log=log,
                         show_all_ranks=show_all_ranks, master_port=master_port,
                         display=display, gpu_workers=worker_device == "cuda")
    return result_from_worker(result, config)


def train_as_rank(config, data, place, *, resume=None, overwrite=False, timeout=None, log=print):
    """Trains as one rank of a run that torchrun or srun started (place: from
    codext._dist.place_from_env()); returns the TrainResult (rank 0 alone writes files and
    log lines). CODEXT_FAULT applies as in launch(). Config.device "cuda" (or "auto" with a
    usable GPU) trains on the GPU of the rank's LOCAL_RANK; "cuda:N" is a ValueError before
    this rank connects."""
    from ._device import resolve
    from ._worker import parse_faults
    from .train import _train
    if config.drop_path_rate:
        raise ValueError(f"Config.drop_path_rate must be 0: the C model has no drop path yet, "
                         f"got {config.drop_path_rate}")
    device, _ = resolve(config.device, data_parallel=True,
                        local_rank=place.local_rank if place else 0)
    faults = parse_faults(os.environ.get("CODEXT_FAULT"))
    conn = _dist.connect(place, timeout=_timeout_from(config.timeout if timeout is None else timeout),
                         device=device)
    try:
        if config.num_threads is not None:
            _C.set_num_threads(config.num_threads)
        return _train(config, data, resume, log is not None, log, dist=(conn, faults),
                      overwrite=overwrite)
    except BaseException as e:
        conn.comm.abort(f"rank {place.rank} failed: {type(e).__name__}: {e}")
        raise
    finally:
        conn.close()
