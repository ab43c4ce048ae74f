"""codext/_gpus.py: the launcher's GPU census, without a CUDA context (issue 9).

A fake NVML (a small C library compiled here, loaded through CODEXT_NVML_LIBRARY) reports
two Tesla T4s and a driver for CUDA 12.8; the census must report them as NVML does, apply
CUDA_VISIBLE_DEVICES as the CUDA runtime does, and say why it found nothing when neither
NVML nor nvidia-smi is there. A child process proves that the census (and importing
codext) loads no CUDA library: no libcuda, libcudart or libcodext_cuda in its memory map."""
import os
import subprocess
import sys
import textwrap

import pytest

from codext import _gpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

@pytest.fixture
def census(fake_nvml, monkeypatch):
    monkeypatch.setenv("CODEXT_NVML_LIBRARY", fake_nvml)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("FAKE_NVML_FAIL_INIT", raising=False)
    monkeypatch.delenv("FAKE_NVML_COUNT", raising=False)
    return monkeypatch


def test_nvml_reports_the_gpus_and_the_driver(census):
    report = _gpus.visible_gpus()
    assert report.source == "nvml" and report.problem is None
    assert report.driver_cuda == (12, 8)
    assert [(g.index, g.ordinal, g.name, g.arch) for g in report.gpus] == [
        (0, 0, "Tesla T4", "sm_75"), (1, 1, "Tesla T4", "sm_75")]
    assert report.gpus[1].uuid == "GPU-00000001-aaaa"
    assert report.gpus[0].memory_bytes == 15 * 2**30


@pytest.mark.parametrize("value, indices", [
    ("1", [1]),
    ("1,0", [1, 0]),
    ("0,7,1", [0]),                   # the list ends at an index no device has
    ("", []),
    ("-1", []),
    ("GPU-00000001", [1]),            # a UUID prefix naming one device
    ("GPU-0000000", []),              # ... and one naming two: ambiguous, the list ends
    ("0,0,1", [0]),                   # a device named twice ends it too
    ("abc,1", []),
])
def test_cuda_visible_devices_as_the_runtime_applies_it(census, value, indices):
    census.setenv("CUDA_VISIBLE_DEVICES", value)
    report = _gpus.visible_gpus()
    assert [g.index for g in report.gpus] == indices
    assert [g.ordinal for g in report.gpus] == list(range(len(indices)))
    if not indices:
        assert "CUDA_VISIBLE_DEVICES" in report.problem and "2 GPU(s)" in report.problem


def test_no_driver_says_why(census, tmp_path):
    census.setenv("FAKE_NVML_FAIL_INIT", "1")
    census.setenv("PATH", str(tmp_path))  # no nvidia-smi
    report = _gpus.visible_gpus()
    assert report.gpus == [] and report.source == "none"
    assert "did not initialise" in report.problem and "nvidia-smi is not on the PATH" in report.problem
    census.setenv("CODEXT_NVML_LIBRARY", str(tmp_path / "missing.so"))
    assert "cannot be loaded" in _gpus.visible_gpus().problem


def test_nvidia_smi_is_the_fallback(census, tmp_path):
    census.setenv("CODEXT_NVML_LIBRARY", str(tmp_path / "missing.so"))
    smi = tmp_path / "nvidia-smi"
    smi.write_text(textwrap.dedent("""\
        #!/bin/sh
        if [ "$1" = "--query-gpu=index,name,uuid,memory.total,compute_cap" ]; then
            echo "0, Tesla P100-PCIE-16GB, GPU-abc, 16384, 6.0"
        else
            echo "| NVIDIA-SMI 550.54   Driver Version: 550.54   CUDA Version: 12.4 |"
        fi
        """))
    smi.chmod(0o755)
    census.setenv("PATH", str(tmp_path))
    report = _gpus.visible_gpus()
    assert report.source == "nvidia-smi" and report.driver_cuda == (12, 4)
    assert [(g.name, g.arch, g.memory_bytes) for g in report.gpus] == [
        ("Tesla P100-PCIE-16GB", "sm_60", 16 * 2**30)]


def test_the_census_loads_no_cuda_library(fake_nvml):
    child = textwrap.dedent("""\
        import codext
        from codext import _gpus
        report = _gpus.visible_gpus()
        assert len(report.gpus) == 2, report
        maps = open("/proc/self/maps").read()
        loaded = [name for name in ("libcuda.so", "libcudart", "libcodext_cuda") if name in maps]
        assert not loaded, loaded
        assert "libnvidia-ml-fake" in maps  # the census did look
        print("ok")
        """)
    env = dict(os.environ, CODEXT_NVML_LIBRARY=fake_nvml,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    res = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stdout + res.stderr
