"""The shell entry points of data-parallel training: `python -m codext train --use-ddp`
under a torchrun-style environment (two ranks started by hand, as torchrun would), and the
top-level launch_ddp.py and train_ddp.sh."""
import os
import re
import socket
import subprocess
import sys
import uuid

import pytest

from test_launch import marked

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TINY = ["--backbone", "edgenext_tiny_test", "--decoder-dim", "16", "--num-experts", "3",
        "--img-size", "32", "--batch-size", "2", "--epochs", "2", "--stage1-epochs", "1",
        "--synthetic-train", "9", "--synthetic-test", "4", "--seed", "3", "--num-threads", "1"]


def env_with(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("agent,secret", [(True, False), (False, False), (True, True)])
def test_torchrun_style_ranks_train_together(tmp_path, agent, secret):
    """As torchrun starts them. agent=True: as real torchrun does, its agent (here: this
    test) listens on MASTER_PORT with torch's store and sets TORCHELASTIC_RUN_ID; rank 0
    hosts ours on a free port and publishes it in the rendezvous file keyed by the agent's
    pid (the first real torchrun run found rank 0 failing on "Address already in use").
    agent=False: the variables set by hand; rank 0 hosts the store on MASTER_PORT.
    secret: CODEXT_STORE_SECRET given (then the file carries the port only)."""
    ck = tmp_path / "ck"
    with socket.socket() as agent_store:
        agent_store.bind(("127.0.0.1", 0))
        agent_store.listen()
        port = agent_store.getsockname()[1] if agent else free_port()
        if not agent:
            agent_store.close()
        extra = {"TORCHELASTIC_RUN_ID": "t", "TORCHELASTIC_RESTART_COUNT": "0"} if agent else {}
        if secret:
            extra["CODEXT_STORE_SECRET"] = os.urandom(32).hex()
        procs = [subprocess.Popen(
            [sys.executable, "-m", "codext", "train", "--use-ddp", *TINY, "--checkpoint-dir", str(ck)],
            env=env_with(RANK=r, WORLD_SIZE=2, LOCAL_RANK=r, LOCAL_WORLD_SIZE=2,
                         MASTER_ADDR="127.0.0.1", MASTER_PORT=port, **extra),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))
            for r in range(2)]
        outs = []
        try:
            for p in procs:
                outs.append(p.communicate(timeout=50))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out + err
    assert "epoch 2/2" in outs[0][0] and "best weights" in outs[0][0]
    assert outs[1][0] == ""                        # rank 1 writes no log lines
    assert (ck / "last.safetensors").is_file() and (ck / "history.json").is_file()
    assert not any(n.startswith(f"codext-store-{port}") for n in os.listdir(_secret_dir()))


def _secret_dir():
    from codext._dist import _secret_dir
    return _secret_dir()


def test_disagreeing_environment_is_a_usage_failure(tmp_path):
    r = subprocess.run([sys.executable, "-m", "codext", "train", "--use-ddp", *TINY],
                       env=env_with(RANK=1, WORLD_SIZE=2, SLURM_PROCID=0, SLURM_NTASKS=2,
                                    MASTER_ADDR="127.0.0.1", MASTER_PORT=free_port()),
                       capture_output=True, text=True, cwd=str(tmp_path), timeout=50)
    assert r.returncode == 1 and "RANK=1 but SLURM_PROCID=0" in r.stderr, r.stderr


def test_launch_ddp_py_and_train_ddp_sh(tmp_path):
    mark = uuid.uuid4().hex
    r = subprocess.run([sys.executable, os.path.join(ROOT, "launch_ddp.py"), *TINY, "--nprocs", "2",
                        "--checkpoint-dir", str(tmp_path / "a")],
                       env=env_with(CODEXT_TEST_MARK=mark), capture_output=True, text=True,
                       cwd=str(tmp_path), timeout=50)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^ +2/2 +2 ", r.stdout, re.M), r.stdout   # the launcher's epoch table
    assert (tmp_path / "a" / "best.safetensors").is_file()
    r = subprocess.run(["bash", os.path.join(ROOT, "train_ddp.sh"), *TINY,
                        "--checkpoint-dir", str(tmp_path / "b")],
                       env=env_with(CODEXT_TEST_MARK=mark, NPROCS=2, PYTHON=sys.executable),
                       capture_output=True, text=True, cwd=str(tmp_path), timeout=50)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "b" / "last.safetensors").is_file()
    assert marked(mark) == []


def test_a_taken_master_port_is_named(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, os.path.join(ROOT, "launch_ddp.py"), *TINY,
                            "--master-port", str(port), "--checkpoint-dir", str(tmp_path)],
                           env=env_with(), capture_output=True, text=True, cwd=str(tmp_path),
                           timeout=50)
    assert r.returncode == 1 and f"master port {port}" in r.stderr and "taken" in r.stderr, r.stderr
