"""Config.device in runs (issue 10; codext/_device.py): "auto" resolves to the CPU on a build
or machine without a usable CUDA backend, data-parallel runs refuse "cuda:N" (each rank
takes its local rank's GPU) and "cuda" on a CPU-only build, take "auto" as the CPU there
(the GPU launch itself: tests/test_emu_launch.py), and a resumed run may change device, also a run saved
before Config.device existed. The device run itself, against the CPU, is
tests/test_emu_trainer.py::test_codext_train_on_the_device (the emulated CUDA library)."""
import doctest
import json
import os
import struct

import pytest

import codext
from codext import _device, cli
from codext._rundir import RunDir
from codext.config import Config
from codext.launch import launch, train_as_rank
from codext.train import train

TINY = dict(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=2, img_size=32,
            batch_size=4, epochs=2, stage1_epochs=1, lr=1e-3, synthetic_train=8,
            synthetic_test=4, amp=False, seed=3)


def cpu_only():
    usable, why = _device.cuda_status()
    if usable:
        pytest.skip(f"a usable CUDA backend here ({why})")
    return why


class Stop(Exception):
    pass


def stop_after_first_epoch(line):
    if line.startswith("epoch "):
        raise Stop(line)


def edit_saved_config(folder, change):
    """Rewrites the saved config of the folder's checkpoint set in place, keeping the state
    file's size (last.safetensors records it): change(dict) edits the config; the header is
    written compactly and padded with spaces to its old length."""
    path = RunDir(folder).state_path
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        data = f.read()
    meta = header["__metadata__"]
    config = json.loads(meta["codext_config"])
    change(config)
    meta["codext_config"] = json.dumps(config, sort_keys=True)
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= size
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", size) + text + b" " * (size - len(text)) + data)


@pytest.fixture
def stopped(tmp_path):
    """A run of 2 epochs (device "auto") stopped after its first: its folder."""
    folder = str(tmp_path / "run")
    with pytest.raises(Stop):
        train(Config(**TINY, checkpoint_dir=folder), log=stop_after_first_epoch)
    return folder


def test_module_doctest():
    failures, tried = doctest.testmod(_device)
    assert tried >= 2 and failures == 0


# ---- one process --------------------------------------------------------------------------

def test_auto_is_the_cpu_without_a_usable_cuda_backend():
    cpu_only()
    # a CUDA build on a machine without a GPU, as a CPU-only build: the start line says
    # "training on the CPU" and nothing more
    assert _device.resolve("auto") == ("cpu", None)
    assert _device.resolve("cpu") == ("cpu", None) and _device.describe("cpu") == "the CPU"


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_usable_backend_names_the_reason(device, tmp_path):
    why = cpu_only()
    message = (f"Config.device {device!r} needs the CUDA backend, which is not usable here: "
               f"{why}. Set Config.device 'cpu' (or 'auto') to train on the CPU")
    with pytest.raises(RuntimeError) as e:
        _device.resolve(device)
    assert str(e.value) == message
    # codext.train resolves first: nothing is written
    folder = tmp_path / "run"
    with pytest.raises(RuntimeError) as e:
        train(Config(**TINY, device=device, checkpoint_dir=str(folder)), progress=False)
    assert str(e.value) == message and not folder.exists()


def test_a_run_says_where_it_trains_and_returns_it(tmp_path):
    cpu_only()
    lines = []
    result = train(Config(**TINY, checkpoint_dir=str(tmp_path)), log=lines.append)
    assert result.device == "cpu" and result.config.device == "auto"
    start = next(line for line in lines if line.startswith("codext.train: "))
    assert "; training on the CPU; checkpoints in " in start
    # the saved config keeps the device asked for, not the one it resolved to
    assert RunDir(str(tmp_path)).saved_config()["device"] == "auto"


# ---- data-parallel runs ---------------------------------------------------------------------

def test_data_parallel_runs_refuse_cuda_n_before_any_worker_starts(tmp_path):
    """"cuda:N" would put every rank on one GPU: each rank takes the GPU of its local rank."""
    with pytest.raises(ValueError) as e:
        _device.resolve("cuda:1", data_parallel=True)
    assert "Config.device 'cuda:1' in a data-parallel run" in str(e.value)
    assert "the GPU of its local rank; set Config.device 'cuda'" in str(e.value)
    cfg = Config(**TINY, device="cuda:1", checkpoint_dir=str(tmp_path / "run"))
    for nprocs in (None, 1, 2):
        with pytest.raises(ValueError, match="the GPU of its local rank"):
            launch(cfg, nprocs=nprocs, log=None)
    assert not (tmp_path / "run").exists()  # refused before the folder was claimed
    with pytest.raises(ValueError, match="the GPU of its local rank"):  # a torchrun/srun rank
        train_as_rank(cfg, None, place=None)


def test_gpu_workers_on_a_cpu_only_build_are_refused_naming_the_cause(tmp_path, monkeypatch):
    cpu_only()
    monkeypatch.delenv("CODEXT_CUDA_LIBRARY", raising=False)
    if _device.build_has_cuda():
        pytest.skip("this build has the CUDA backend")
    cfg = Config(**TINY, device="cuda", checkpoint_dir=str(tmp_path / "run"))
    with pytest.raises(RuntimeError, match=r"this build of codext has no CUDA backend \(a "
                                           r"CPU-only build\)"):
        launch(cfg, log=None)
    assert not (tmp_path / "run").exists()
    with pytest.raises(RuntimeError, match="needs the CUDA backend"):  # a torchrun/srun rank
        train_as_rank(cfg, None, place=None)


def test_data_parallel_auto_is_the_cpu_without_a_gpu(monkeypatch):
    cpu_only()
    monkeypatch.delenv("CODEXT_CUDA_LIBRARY", raising=False)
    assert _device.resolve("auto", data_parallel=True, local_rank=1) == ("cpu", None)
    assert _device.resolve("cpu", data_parallel=True) == ("cpu", None)
    device, workers, notes = _device.plan_launch("auto", None)
    assert (device, workers) == ("cpu", 1)
    assert notes == []  # the start line says where it trains
    assert _device.plan_launch("cpu", 3) == ("cpu", 3, [])


# ---- resume ---------------------------------------------------------------------------------

def test_a_run_saved_without_device_resumes_on_another_device(stopped):
    """A state written before Config.device existed (no "device" in its config) resumes; the
    device is not part of what must equal the saved run (RESUME_FREE_FIELDS)."""
    edit_saved_config(stopped, lambda c: c.pop("device"))
    assert "device" not in RunDir(stopped).saved_config()
    cfg, demo, _ = cli.train_config(cli.build_parser().parse_args(["train", "--resume", stopped]))
    assert not demo and cfg.device == "auto"  # the default fills the field the run lacks
    result = train(Config(**TINY, device="cpu", checkpoint_dir=stopped), resume=stopped,
                   progress=False)
    assert result.device == "cpu" and len(result.history["epoch"]) == 2
    assert RunDir(stopped).saved_config()["device"] == "cpu"  # saved from now on


def test_cli_resume_of_a_gpu_run_on_the_cpu(stopped, capsys):
    """A run saved with device "cuda" resumed where CUDA is not usable: without --device the
    run's own setting is refused (a usage error saying whose setting it is); --device cpu
    continues it."""
    cpu_only()
    edit_saved_config(stopped, lambda c: c.update(device="cuda"))  # as long as "auto"
    assert cli.main(["train", "--resume", stopped, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m codext train: error: --device 'cuda' needs the CUDA backend")
    assert err.splitlines()[0].endswith("(--device cuda is the resumed run's own setting)")
    assert cli.main(["train", "--resume", stopped, "--device", "cpu", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "best weights" in out
    assert RunDir(stopped).saved_config()["device"] == "cpu"
    assert len(json.loads(open(os.path.join(stopped, "history.json")).read())["epoch"]) == 2


# ---- the launcher's plan for GPU workers (codext/_device.py, plan_launch) ---------------------

@pytest.fixture
def two_gpus(fake_nvml, tmp_path, monkeypatch):
    """The fake NVML's two T4s (driver CUDA 12.8) and a CUDA backend library that exists
    (plan_launch only checks that the file is there; it never loads it)."""
    library = tmp_path / "libcodext_cuda.so"
    library.write_bytes(b"")
    monkeypatch.setenv("CODEXT_NVML_LIBRARY", fake_nvml)
    monkeypatch.setenv("CODEXT_CUDA_LIBRARY", str(library))
    for name in ("CUDA_VISIBLE_DEVICES", "FAKE_NVML_COUNT", "FAKE_NVML_FAIL_INIT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FAKE_NVML_CUDA", "99000")  # newer than any build's CUDA
    return monkeypatch


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_one_gpu_worker_per_visible_gpu(two_gpus, device):
    worker, n, notes = _device.plan_launch(device, None)
    assert (worker, n) == ("cuda", 2)
    assert notes[0].startswith("2 GPU worker(s): cuda:0 Tesla T4 (sm_75, 15 GiB), cuda:1 Tesla "
                               "T4 (sm_75, 15 GiB); their collectives run over NCCL")
    assert _device.plan_launch(device, 1)[:2] == ("cuda", 1)
    two_gpus.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert _device.plan_launch(device, None)[:2] == ("cuda", 1)


def test_more_workers_than_gpus_is_refused(two_gpus):
    with pytest.raises(ValueError, match=r"nprocs=3 GPU workers, but 2 GPU\(s\) are visible "
                                         r"\(cuda:0 Tesla T4, cuda:1 Tesla T4\)"):
        _device.plan_launch("cuda", 3)


def test_no_visible_gpu(two_gpus):
    two_gpus.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(RuntimeError, match=r"no GPU is visible to this process \(CUDA_VISIBLE_"
                                           r"DEVICES='' hides the 2 GPU\(s\)\)"):
        _device.plan_launch("cuda", None)
    assert _device.plan_launch("auto", None) == ("cpu", 1, [])  # auto: CPU workers


def test_a_driver_older_than_the_build(two_gpus, monkeypatch):
    two_gpus.setenv("FAKE_NVML_CUDA", "12080")
    info = dict(codext.build_info(), cuda_version="13.0")
    monkeypatch.setattr(_device._C, "build_info", lambda: info)
    with pytest.raises(RuntimeError, match=r"the NVIDIA driver runs CUDA up to 12.8, but this "
                                           r"build of codext needs CUDA 13.x"):
        _device.plan_launch("cuda", None)
    info["cuda_version"] = "12.9"  # same major: the runtime's minor-version compatibility
    assert _device.plan_launch("cuda", None)[:2] == ("cuda", 2)


def test_amp_dtype_is_chosen_by_the_gpu_unless_codext_amp_dtype_names_one(monkeypatch):
    """Config.amp: bf16 where the GPU takes it, else fp16 (with loss scaling); the
    CODEXT_AMP_DTYPE override (fp16: how a T4 trains, on any GPU) and its refusals."""
    class Native:
        def __init__(self, sm):
            self.sm, self.set = sm, []

        def set_precision(self, p):
            if p == "bf16" and self.sm < 80:
                raise ValueError("bf16 needs sm_80 or newer (this GPU: sm_75)")
            self.set.append(p)

    class Model:
        def __init__(self, sm, device="cuda:0"):
            self.device, self._native = device, Native(sm)

    monkeypatch.delenv("CODEXT_AMP_DTYPE", raising=False)
    assert _device.mixed_precision(Model(90), True) == "bf16"
    assert _device.mixed_precision(Model(75), True) == "fp16"
    assert _device.mixed_precision(Model(90), False) == "fp32"
    assert _device.mixed_precision(Model(90, "cpu"), True) == "fp32"
    monkeypatch.setenv("CODEXT_AMP_DTYPE", "fp16")
    m = Model(90)
    assert _device.mixed_precision(m, True) == "fp16" and m._native.set == ["fp16"]
    monkeypatch.setenv("CODEXT_AMP_DTYPE", "bf16")
    with pytest.raises(ValueError, match="bf16 needs sm_80"):
        _device.mixed_precision(Model(75), True)
    monkeypatch.setenv("CODEXT_AMP_DTYPE", "fp8")
    with pytest.raises(ValueError, match="CODEXT_AMP_DTYPE must be fp16 or bf16"):
        _device.mixed_precision(Model(90), True)
