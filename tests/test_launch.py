"""codext.launch's supervision (codext/launch.py, codext/_worker.py) with the collectives
self-test job: failures of every kind end the run quickly, name the rank, and leave no
process and no shared-memory segment behind."""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest

import codext
from codext import _dist
from codext.launch import WorkerError, run_workers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def marked(mark):
    """Pids of live (non-zombie) processes whose environment holds CODEXT_TEST_MARK=mark."""
    found = []
    needle = f"CODEXT_TEST_MARK={mark}".encode()
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(d + "/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(d + "/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in "ZX":
                    continue
        except OSError:
            continue
        found.append(int(d.split("/")[-1]))
    return found


def our_segments(pid=None):
    return glob.glob(f"/dev/shm/codext-{pid or os.getpid()}-*")


@pytest.fixture
def mark():
    value = uuid.uuid4().hex
    yield value
    assert marked(value) == [], "workers were left running"


def selftest(nprocs, mark, fault=None, steps=20, n=1000, timeout=20):
    env = {"CODEXT_TEST_MARK": mark}
    if fault:
        env["CODEXT_FAULT"] = fault
    return run_workers({"kind": "selftest", "n": n, "steps": steps}, nprocs,
                              timeout=timeout, log=None, env=env)


def test_selftest_runs_on_two_workers(mark):
    result = selftest(2, mark)
    assert result == {"steps": 20, "value": 3.0}
    assert our_segments() == []


def test_killed_worker_ends_the_run_naming_rank_and_signal(mark):
    with pytest.raises(WorkerError) as info:
        selftest(2, mark, fault="1:3:kill")
    raised = time.time()
    err = info.value
    # within 5 s of the kill (the worker printed the time it killed itself): every worker
    # gone and the error raised
    killed_at = re.search(r"injected kill: rank 1 before step 3 \(CODEXT_FAULT\) at unix time "
                          r"([0-9.]+)", str(err))
    assert killed_at, str(err)
    assert 0 <= raised - float(killed_at.group(1)) < 5, raised - float(killed_at.group(1))
    assert err.rank == 1 and err.signal == "SIGKILL"
    assert "rank 1" in str(err) and "SIGKILL" in str(err)
    assert "[rank 1] selftest: 2 ranks" in str(err)  # its last lines
    assert marked(mark) == [] and our_segments() == []


def test_raised_error_arrives_with_message_and_traceback(mark):
    with pytest.raises(WorkerError) as info:
        selftest(2, mark, fault="0:2:raise")
    err = info.value
    assert err.rank == 0 and err.remote_type == "RuntimeError"
    assert "injected fault: rank 0 before step 2" in str(err)
    assert "Traceback (most recent call last)" in err.remote_traceback
    assert "in inject" in err.remote_traceback
    assert our_segments() == []


def test_oom_fault_is_reported(mark):
    with pytest.raises(WorkerError, match="MemoryError: injected out-of-memory: rank 1"):
        selftest(2, mark, fault="1:1:oom")


@pytest.mark.parametrize("how", ["argument", "NCCL_TIMEOUT"])
def test_hang_times_out_naming_the_stalled_rank(mark, how, monkeypatch):
    """The timeout as launch's argument, or from the seed's NCCL_TIMEOUT alone."""
    if how == "NCCL_TIMEOUT":
        monkeypatch.setenv("NCCL_TIMEOUT", "3")
    t0 = time.monotonic()
    with pytest.raises(WorkerError) as info:
        selftest(2, mark, fault="1:2:hang", timeout=3 if how == "argument" else None)
    elapsed = time.monotonic() - t0
    assert 3 <= elapsed < 15, elapsed
    assert info.value.rank == 0
    assert "timed out after 3.0 s" in str(info.value) and "rank 1 did not arrive (stalled)" in str(info.value)
    assert our_segments() == []


def _notebook(mark, args, **env_extra):
    env = dict(os.environ, CODEXT_TEST_MARK=mark,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **env_extra)
    return subprocess.Popen([sys.executable, os.path.join(HERE, "launch_notebook.py"),
                             json.dumps(args)], stdout=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def _wait_for_line(proc, prefix, timeout=20):
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"no line starting with {prefix!r}: {lines}")


@pytest.mark.parametrize("group", [False, True])
def test_sigint_stops_the_workers_and_raises_keyboardinterrupt(mark, group):
    nb = _notebook(mark, {"job": {"kind": "selftest", "n": 10, "steps": 5}, "nprocs": 2,
                          "timeout": 60, "env": {"CODEXT_FAULT": "1:1:hang"}})
    try:
        first = _wait_for_line(nb, "[rank 0] selftest")
        time.sleep(0.3)
        t0 = time.monotonic()
        if group:  # as Jupyter's interrupt may: the whole process group
            os.killpg(nb.pid, signal.SIGINT)
        else:
            nb.send_signal(signal.SIGINT)
        try:
            out = nb.communicate(timeout=15)[0]
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the notebook did not stop within 15 s of SIGINT; its first "
                                 f"lines: {first}") from None
        assert time.monotonic() - t0 < 5
        assert "KEYBOARD-INTERRUPT" in out, out
    finally:
        if nb.poll() is None:
            nb.kill()
            nb.wait()
    assert marked(mark) == [] and our_segments(nb.pid) == []


def test_sigint_during_training_keeps_the_last_checkpoint_which_resumes(mark, tmp_path):
    """Ctrl-C in the middle of a real launch: rank 1 hangs in the second epoch's first step
    (CODEXT_FAULT), after the first epoch's checkpoint set was written; SIGINT to the
    notebook stops every worker within 5 s and raises KeyboardInterrupt, nothing is left
    behind, and the run resumes from that checkpoint to the end with two workers."""
    folder = tmp_path / "run"
    fields = dict(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=2, img_size=32,
                  epochs=3, stage1_epochs=1, lr=1e-3, synthetic_train=8, synthetic_test=2,
                  seed=3, amp=False, num_threads=1, batch_size=2, device="cpu",
                  checkpoint_dir=str(folder))
    nb = _notebook(mark, {"launch": fields, "nprocs": 2, "timeout": 60},
                   CODEXT_FAULT="1:2:hang")  # 2 steps an epoch: rank 1 hangs in epoch 2
    try:
        deadline = time.monotonic() + 60
        while not (folder / "history.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (folder / "history.json").exists(), "the first epoch's checkpoint never came"
        time.sleep(0.5)  # rank 1 is hanging in step 2, rank 0 waits for it in a collective
        t0 = time.monotonic()
        nb.send_signal(signal.SIGINT)
        out = nb.communicate(timeout=15)[0]
        assert time.monotonic() - t0 < 5, out
        assert "KEYBOARD-INTERRUPT" in out, out
    finally:
        if nb.poll() is None:
            nb.kill()
            nb.wait()
    assert marked(mark) == [] and our_segments(nb.pid) == []
    result = codext.launch(codext.Config(**fields), nprocs=2, resume=str(folder), log=None,
                           timeout=60)
    assert len(result.history["epoch"]) == 3 and result.history["epoch"][0] == 0


def test_workers_die_with_a_killed_notebook(mark):
    nb = _notebook(mark, {"job": {"kind": "selftest", "n": 10, "steps": 5}, "nprocs": 2,
                          "timeout": 60, "env": {"CODEXT_FAULT": "1:1:hang"}})
    _wait_for_line(nb, "[rank 0] selftest")
    nb.kill()
    nb.wait()
    deadline = time.monotonic() + 5
    while marked(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marked(mark) == [], "workers outlived the notebook (PR_SET_PDEATHSIG)"
    assert our_segments(nb.pid) == []


def test_preflight_errors(monkeypatch):
    with pytest.raises(ValueError, match="more than the .* CPU cores"):
        run_workers({"kind": "selftest", "n": 1, "steps": 1}, 1000)
    with pytest.raises(ValueError, match="nprocs must be a positive integer"):
        run_workers({"kind": "selftest", "n": 1, "steps": 1}, 0)
    with pytest.raises(ValueError, match="NCCL_TIMEOUT must be a number"):
        monkeypatch.setenv("NCCL_TIMEOUT", "soon")
        run_workers({"kind": "selftest", "n": 1, "steps": 1}, 1)
    monkeypatch.delenv("NCCL_TIMEOUT")
    monkeypatch.setenv("CODEXT_WORKER", "1")
    with pytest.raises(RuntimeError, match="inside a codext worker"):
        run_workers({"kind": "selftest", "n": 1, "steps": 1}, 1)


# ---- the environment of torchrun and Slurm ---------------------------------------------------

def test_place_from_torchrun_and_slurm_variables():
    assert _dist.place_from_env({}) is None
    p = _dist.place_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
                              "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                              "MASTER_PORT": "29512"})
    assert (p.rank, p.world, p.local_rank, p.master_port, p.source) == (1, 2, 1, 29512, "torchrun")
    assert p.single_host
    p = _dist.place_from_env({"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "3",
                              "SLURM_NNODES": "1", "SLURM_JOB_NODELIST": "gpu[07-08,11]"})
    assert (p.rank, p.world, p.master_addr, p.master_port, p.source) == (3, 4, "gpu07", 29500, "slurm")
    assert p.single_host
    multi = _dist.place_from_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_NNODES": "2",
                                  "SLURM_JOB_NODELIST": "a,b", "MASTER_PORT": "1234"})
    assert multi.master_addr == "a" and not multi.single_host
    with pytest.raises(RuntimeError, match="spans several hosts"):
        _dist.connect(multi, timeout=1)
    # torchrun under srun: Slurm counts the agents, not the ranks
    p = _dist.place_from_env({"RANK": "5", "WORLD_SIZE": "8", "MASTER_ADDR": "127.0.0.1",
                              "MASTER_PORT": "1", "SLURM_PROCID": "1", "SLURM_NTASKS": "2",
                              "TORCHELASTIC_RUN_ID": "x", "LOCAL_WORLD_SIZE": "4"})
    assert p.rank == 5 and not p.single_host


@pytest.mark.parametrize("env,message", [
    ({"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "2",
      "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK=1 but SLURM_PROCID=0"),
    ({"RANK": "0", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "3",
      "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "WORLD_SIZE=2 but SLURM_NTASKS=3"),
    ({"RANK": "1"}, "RANK and WORLD_SIZE must be set together"),
    ({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK=2 is not a rank"),
    ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "1"}, "MASTER_ADDR is not set"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "70000"}, "outside 1..65535"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1",
      "CODEXT_STORE_SECRET": "abcd"}, "at least 16 bytes"),
    ({"CODEXT_RANK": "0", "CODEXT_WORLD_SIZE": "2", "RANK": "1", "WORLD_SIZE": "2"},
     "CODEXT_RANK=0 but RANK=1"),
])
def test_disagreeing_or_incomplete_variables_are_clear_errors(env, message):
    with pytest.raises(ValueError, match=message):
        _dist.place_from_env(env)


def test_fault_setting_is_checked():
    from codext._worker import parse_faults
    assert parse_faults("1:3:kill, 0:5:raise") == {(1, 3): "kill", (0, 5): "raise"}
    assert parse_faults("") == {}
    with pytest.raises(ValueError, match="CODEXT_FAULT item '1:x:kill'"):
        parse_faults("1:x:kill")
    with pytest.raises(ValueError, match="kind one of kill, raise, hang, oom"):
        parse_faults("1:2:explode")


def test_workers_map_the_dataset_read_only_without_a_copy(mark):
    import numpy as np
    import codext
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (400, 128, 128, 3), dtype=np.uint8)   # 19 MiB
    masks = (rng.random((400, 128, 128)) > 0.5).astype(np.uint8) * 255
    data = codext.data.from_arrays(images, masks)
    result = run_workers({"kind": "datacheck"}, 2, data=data, timeout=20, log=None,
                         env={"CODEXT_TEST_MARK": mark})
    assert result["bytes"] == images.nbytes + masks.nbytes
    assert result["checksum"] == int(images.sum(dtype=np.uint64)) + int(masks.sum(dtype=np.uint64))
    assert result["writeable"] is False
    if result["private_kib"] is not None:  # Linux: a copy would cost ~25 MiB
        assert result["private_kib"] * 1024 < 0.1 * result["bytes"], result


def test_a_small_dev_shm_falls_back_to_a_file_backed_segment(mark, monkeypatch, tmp_path):
    import codext._dist as dist
    real = dist.segment_name
    monkeypatch.setattr(dist, "segment_name",
                        lambda world, log=None: real(world, log, shm_dir=str(tmp_path / "none")))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    lines = []
    result = run_workers({"kind": "selftest", "n": 3000, "steps": 5}, 2, timeout=20,
                         log=lines.append, env={"CODEXT_TEST_MARK": mark})
    assert result["value"] == 3.0
    assert any("using a file-backed segment in " + str(tmp_path) in l for l in lines), lines
    assert os.listdir(tmp_path) == [], "the file-backed segment was left behind"


def test_a_small_dev_shm_disables_nccls_shared_memory_transport(tmp_path, monkeypatch):
    """NCCL keeps its shared-memory transport's buffers in /dev/shm: GPU workers get
    NCCL_SHM_DISABLE=1 when it has less than NCCL_SHM_MIN_FREE free, and the log says so;
    a setting of the user's wins; with room, nothing is set."""
    import collections
    Vfs = collections.namedtuple("Vfs", "f_bavail f_frsize")
    lines = []
    monkeypatch.setattr(os, "statvfs", lambda path: Vfs(64 << 20 >> 12, 4096))  # Docker's 64 MB
    assert _dist.nccl_shm_env(lines.append, environ={}) == {"NCCL_SHM_DISABLE": "1"}
    assert "64.0 MiB free" in lines[0] and "NCCL_SHM_DISABLE=1" in lines[0]
    assert _dist.nccl_shm_env(lines.append, environ={"NCCL_SHM_DISABLE": "0"}) == {}
    edge = _dist.NCCL_SHM_MIN_FREE
    monkeypatch.setattr(os, "statvfs", lambda path: Vfs(edge // 4096, 4096))
    assert _dist.nccl_shm_env(None, environ={}) == {}
    monkeypatch.setattr(os, "statvfs", lambda path: Vfs(edge // 4096 - 1, 4096))
    assert _dist.nccl_shm_env(None, environ={}) == {"NCCL_SHM_DISABLE": "1"}


def test_torchrun_gpu_ranks_disable_nccls_shm_transport_themselves(monkeypatch):
    """Under torchrun or srun no launcher of ours sets the workers' environment: a GPU rank
    that takes NCCL checks /dev/shm itself before the communicator is made."""
    import collections
    Vfs = collections.namedtuple("Vfs", "f_bavail f_frsize")
    monkeypatch.setattr(os, "statvfs", lambda path: Vfs(64 << 20 >> 12, 4096))
    monkeypatch.setenv("NCCL_SHM_DISABLE", "x")
    monkeypatch.delenv("NCCL_SHM_DISABLE")  # absent now, and again after the test
    made = {}
    monkeypatch.setattr(_dist, "_nccl_choice", lambda device, env=None: (True, "NCCL 2.25 (fake)"))
    monkeypatch.setattr(_dist._C, "nccl_unique_id", lambda: bytes(128))
    monkeypatch.setattr(_dist._C, "nccl_available", lambda: (True, "NCCL 2.25 (fake)"))
    monkeypatch.setattr(_dist._C, "NcclComm", lambda *a, **k: made.setdefault(
        "shm_disable", os.environ.get("NCCL_SHM_DISABLE")))

    class Store(dict):
        def set(self, key, value):
            self[key] = value

        def get(self, key, timeout=None):
            return self[key]

    place = _dist.Place(rank=0, world=1, local_rank=0, local_world=1, master_addr="127.0.0.1",
                        master_port=29500, source="torchrun")
    store = Store()
    _, transport = _dist._join(place, store, 5, "cuda:0")
    assert transport.startswith("NCCL") and made == {"shm_disable": "1"}
    # rank 0's decision is the run's: another rank applies it whatever its own /dev/shm
    assert store[_dist.NCCL_SHM_KEY] == b"1"
    monkeypatch.delenv("NCCL_SHM_DISABLE")
    monkeypatch.setattr(os, "statvfs", lambda path: Vfs(1 << 40 >> 12, 4096))  # plenty here
    made.clear()
    _dist._join(_dist.Place(**dict(place.__dict__, rank=1, world=2)), store, 5, "cuda:1")
    assert made == {"shm_disable": "1"}


def test_launch_claims_the_folder_its_workers_write_to(tmp_path, monkeypatch):
    """checkpoint_dir "~/run": launch() expands "~" as its workers do, so an old run there is
    refused (it would have been claimed as <cwd>/~/run, empty, and the workers would then
    have overwritten ~/run)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "last.safetensors").write_bytes(b"an old run")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = codext.Config.demo(checkpoint_dir="~/run", epochs=1, synthetic_train=8,
                             synthetic_test=0, device="cpu")
    with pytest.raises(FileExistsError, match=f"{folder} already holds"):
        codext.launch(cfg, nprocs=1, log=None)
    assert (folder / "last.safetensors").read_bytes() == b"an old run"
    assert not (tmp_path / "elsewhere" / "~").exists()


def test_launch_refuses_before_it_touches_the_checkpoint_folder(tmp_path, monkeypatch):
    """Every check that needs no worker runs before launch() claims the folder: with
    overwrite=True a refused launch must not have deleted the old run."""
    import socket
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "last.safetensors").write_bytes(b"an old run")
    cfg = codext.Config.demo(checkpoint_dir=str(folder), epochs=1, synthetic_train=8,
                             synthetic_test=0, device="cpu")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError, match=f"master port {port}: the port is taken"):
            codext.launch(cfg, nprocs=1, overwrite=True, master_port=port, log=None)
    with pytest.raises(ValueError, match="more than the .* CPU cores"):
        codext.launch(cfg, nprocs=1000, overwrite=True, log=None)
    monkeypatch.setenv("CODEXT_WORKER", "1")
    with pytest.raises(RuntimeError, match="inside a codext worker"):
        codext.launch(cfg, nprocs=1, overwrite=True, log=None)
    assert (folder / "last.safetensors").read_bytes() == b"an old run"
    with pytest.raises(OSError, match="cannot be created"):
        monkeypatch.delenv("CODEXT_WORKER")
        codext.launch(cfg.replace(checkpoint_dir=str(folder / "last.safetensors" / "x")),
                      nprocs=1, log=None)


def test_a_single_host_slurm_or_torchrun_store_listens_on_loopback_only(monkeypatch):
    """MASTER_ADDR (or Slurm's first node) names this host by its network name: the store
    still binds to 127.0.0.1 and the ranks reach it there (nothing listens on the network
    for a run that never leaves this host)."""
    seen = {}
    real_server, real_client = _dist._C.StoreServer, _dist._C.StoreClient

    def server(host, port, secret):
        seen["bind"] = host
        return real_server(host, port, secret)

    def client(host, port, secret, timeout):
        seen["reach"] = host
        return real_client(host, port, secret, timeout)

    monkeypatch.setattr(_dist._C, "StoreServer", server)
    monkeypatch.setattr(_dist._C, "StoreClient", client)
    import socket as sockets
    with sockets.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    place = _dist.place_from_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0",
                                  "SLURM_NNODES": "1", "MASTER_PORT": str(port),
                                  "SLURM_JOB_NODELIST": sockets.gethostname()})
    place = _dist.Place(**dict(place.__dict__, world=1, local_world=1))  # alone: no peer to wait for
    conn = _dist.connect(place, timeout=10)
    try:
        assert seen == {"bind": "127.0.0.1", "reach": "127.0.0.1"}
    finally:
        conn.close()


def test_the_rendezvous_file_keeps_the_environments_secret_out_and_ignores_old_formats(
        tmp_path, monkeypatch):
    monkeypatch.setattr(_dist, "_secret_dir", lambda: str(tmp_path))
    run = "my run\x000"
    secret, path = _dist.write_secret_file(29500, 41234, None, run)
    assert _dist.read_secret_file(29500, run) == (41234, secret) and len(secret) == 32
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert _dist.read_secret_file(29500) is None            # another key: another file
    assert _dist.read_secret_file(29500, "my run\x001") is None  # the next restart's
    _dist.write_secret_file(29500, 41235, b"", run)          # CODEXT_STORE_SECRET: port only
    assert open(path, "rb").read() == b"41235\n\n"
    assert _dist.read_secret_file(29500, run) == (41235, None)
    for old in (os.urandom(32), b"70000\nabcd\n", b"x\n", b"1\n" + b"ab" * 8 + b"\n"):
        open(path, "wb").write(old)                          # an older codext's, or damaged
        assert _dist.read_secret_file(29500, run) is None
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(path)]  # no temporary left
