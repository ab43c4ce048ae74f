"""Where a run trains: Config.device resolved against this build and this machine (issue 10).

    >>> from codext._device import resolve
    >>> resolve("cpu")
    ('cpu', None)
    >>> resolve("cpu", data_parallel=True)
    ('cpu', None)

resolve(device) is called once at the start of codext.train (codext/train.py, _train) and
by the CLI before anything starts (codext/cli.py, so that a bad --device is a usage error):

- one process (codext.train, ``python -m codext train`` without --use-ddp): "cpu" is the
  CPU; "cuda" / "cuda:N" is that GPU, and a build or machine without a usable CUDA backend
  is a RuntimeError naming the loader's reason (_C.cuda_backend_available: no
  libcodext_cuda.so in a CPU-only build, no driver, no visible device, ...); "auto" is
  "cuda:0" when that backend is usable, else the CPU.
- a data-parallel run (codext.launch, --use-ddp, torchrun/srun; data_parallel=True): its
  workers train on the CPU. The device trainer has no collectives yet (GPU data-parallel
  training needs the NCCL backend, not built yet: the C trainer refuses world_size > 1
  and a communicator), so "cuda" is a ValueError saying so, before any worker starts, and
  "auto" becomes "cpu" (with a note when this build has the CUDA backend, so that a user
  with a GPU learns why it stays idle). Nothing here loads a CUDA library for such a run:
  the launcher never touches CUDA (codext/launch.py).

Probing the backend loads libcodext_cuda.so and the CUDA libraries into this process (the
loader caches its answer), which is why it happens only where a single-process run is
about to train anyway.
"""
import re

from . import _C
from .config import parse_device

CUDA_TO_COME = ("GPU data-parallel training needs the NCCL backend, which is not built yet")


def cuda_status():
    """(usable, reason) of the CUDA backend: _C.cuda_backend_available(), with an error of
    the loader itself as (False, its message)."""
    try:
        ok, reason = _C.cuda_backend_available()
    except (OSError, RuntimeError) as e:
        return False, str(e)
    return bool(ok), reason


def build_has_cuda():
    """This build compiled the CUDA backend (codext.build_info(); loads no CUDA library)."""
    return bool(_C.build_info().get("cuda"))


def resolve(device, data_parallel=False):
    """(device, note): the device a run of Config.device `device` trains on, "cpu" or
    "cuda:N", and a line to show the user or None (see the module docstring). ValueError
    for a device that is not a Config.device or "cuda" in a data-parallel run;
    RuntimeError for "cuda" where the backend is not usable or has no such device."""
    canonical = parse_device(device) if isinstance(device, str) else None
    if canonical is None:
        raise ValueError(f"Config.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if data_parallel:
        if canonical.startswith("cuda"):
            raise ValueError(f"Config.device {device!r} in a data-parallel run (codext.launch, "
                             f"--use-ddp, torchrun or srun): {CUDA_TO_COME}. Train on one GPU "
                             f"in one process (codext.train, or python -m codext train without "
                             f"--use-ddp), or set Config.device 'cpu' for CPU workers")
        note = None
        if canonical == "auto" and build_has_cuda():
            note = (f"note: Config.device 'auto' trains data-parallel runs on CPU workers: "
                    f"{CUDA_TO_COME}")
        return "cpu", note
    if canonical == "cpu":
        return "cpu", None
    ok, reason = cuda_status()
    if canonical == "auto":
        if ok:
            return "cuda:0", None
        # a CPU-only build on a CPU machine is the expected case: nothing to say
        note = (f"note: Config.device 'auto' trains on the CPU: the CUDA backend is not "
                f"usable ({reason})") if build_has_cuda() else None
        return "cpu", note
    if not ok:
        raise RuntimeError(f"Config.device {device!r} needs the CUDA backend, which is not usable "
                           f"here: {reason}. Set Config.device 'cpu' (or 'auto') to train on the "
                           f"CPU")
    count = _device_count(reason)
    ordinal = int(canonical.partition(":")[2])
    if count is not None and ordinal >= count:
        raise RuntimeError(f"Config.device {device!r}: this machine has {count} CUDA device(s), "
                           f"cuda:0..cuda:{count - 1}")
    return canonical, None


def describe(device):
    """How the start of a run names its device: "the CPU", or "cuda:0 (device 0: NAME
    (sm_XY, N SMs, M GiB))" from the loader's report where it names the device."""
    if device == "cpu":
        return "the CPU"
    ok, reason = cuda_status()
    ordinal = device.partition(":")[2]
    found = re.search(rf"(device {ordinal}: .*? GiB\))", reason) if ok else None
    return f"{device} ({found.group(1)})" if found else device


def _device_count(reason):
    """The device count at the start of the loader's report ("2 CUDA device(s); ..."), or
    None when it does not say."""
    found = re.match(r"(\d+) CUDA device", reason)
    return int(found.group(1)) if found else None
