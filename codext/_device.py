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
- a rank of a data-parallel run (a codext.launch worker, a torchrun/srun rank;
  data_parallel=True, local_rank given): "cpu" is the CPU; "cuda" is the GPU of the rank's
  local rank (cuda:LOCAL_RANK, as torchrun users expect; CUDA_VISIBLE_DEVICES picks which
  GPUs a host offers); "auto" is that GPU when the backend is usable, else the CPU. "cuda:N"
  is a ValueError: N would put every rank on one GPU. The device trainer joins the ranks
  through the shared-memory communicator, its gradients staged through host memory
  (csrc/train/device_step.c), or over NCCL in device memory (codext/_dist.py, connect).
- the launcher (plan_launch, codext.launch): decides CPU or GPU workers and how many
  without loading any CUDA library (the notebook must stay free of a CUDA context): the
  GPUs from NVML or nvidia-smi (codext/_gpus.py), the backend from the build (or
  CODEXT_CUDA_LIBRARY naming one).

Probing the backend loads libcodext_cuda.so and the CUDA libraries into this process (the
loader caches its answer), which is why it happens only where a single-process run is
about to train anyway.
"""
import os
import re

from . import _C
from .config import parse_device

GPU_DDP = ("their collectives run over NCCL where the CUDA library has it, else through "
           "host memory (the shared-memory communicator)")


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


def resolve(device, data_parallel=False, local_rank=0):
    """(device, note): the device a run of Config.device `device` trains on, "cpu" or
    "cuda:N", and a line to show the user or None (see the module docstring). ValueError
    for a device that is not a Config.device, or "cuda:N" in a data-parallel run;
    RuntimeError for "cuda" where the backend is not usable or has no such device."""
    canonical = parse_device(device) if isinstance(device, str) else None
    if canonical is None:
        raise ValueError(f"Config.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if data_parallel and ":" in device:
        raise ValueError(f"Config.device {device!r} in a data-parallel run (codext.launch, "
                         f"--use-ddp, torchrun or srun): each worker trains on the GPU of its "
                         f"local rank; set Config.device 'cuda' (CUDA_VISIBLE_DEVICES chooses "
                         f"the GPUs)")
    if data_parallel and canonical != "cpu":  # the GPU of the rank's local rank
        if canonical == "auto" and not cuda_status()[0]:
            return "cpu", None
        canonical = f"cuda:{local_rank}"
    if canonical == "cpu":
        return "cpu", None
    ok, reason = cuda_status()
    if canonical == "auto":
        if ok:
            return "cuda:0", None
        # the start line says "training on the CPU"; a CUDA build on a machine without a
        # GPU (CI, a laptop) is as expected as a CPU-only build: nothing more to say
        return "cpu", None
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


def _backend_present():
    """A CUDA backend library exists for this build, found without loading it: compiled in,
    or named by CODEXT_CUDA_LIBRARY (the emulator's, in tests)."""
    import os
    named = os.environ.get("CODEXT_CUDA_LIBRARY")
    return build_has_cuda() or bool(named and os.path.isfile(named))


def _version(text):
    found = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(found.group(1)), int(found.group(2))) if found else None


def plan_launch(device, nprocs):
    """(worker device "cpu" or "cuda", workers, notes) for codext.launch, decided without
    loading CUDA. nprocs None: one worker per visible GPU for GPU workers, 1 on the CPU.
    ValueError / RuntimeError, each naming the cause, for: "cuda:N"; "cuda" on a build
    without a CUDA backend or a machine where no GPU is visible (the census's reason); more
    workers than visible GPUs; a driver whose CUDA major version is older than the build's."""
    from . import _gpus
    canonical = parse_device(device) if isinstance(device, str) else None
    if canonical is None:
        raise ValueError(f"Config.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if ":" in device:
        resolve(device, data_parallel=True)  # the ValueError for "cuda:N"
    if canonical == "cpu":
        return "cpu", 1 if nprocs is None else nprocs, []
    present = _backend_present()
    census = _gpus.visible_gpus() if present else None
    if canonical == "auto" and (census is None or not census.gpus):  # CPU workers
        return "cpu", 1 if nprocs is None else nprocs, []  # the start line says "the CPU"
    if not present:
        raise RuntimeError("Config.device 'cuda': this build of codext has no CUDA backend (a "
                           "CPU-only build); install a build with CUDA, or set Config.device "
                           "'cpu' for CPU workers")
    if not census.gpus:
        raise RuntimeError(f"Config.device 'cuda': no GPU is visible to this process "
                           f"({census.problem}); set Config.device 'cpu' for CPU workers")
    gpus = census.gpus
    workers = len(gpus) if nprocs is None else nprocs
    if workers > len(gpus):
        raise ValueError(f"nprocs={workers} GPU workers, but {len(gpus)} GPU(s) are visible "
                         f"({', '.join(f'cuda:{g.ordinal} {g.name}' for g in gpus)}); one worker "
                         f"per GPU at most")
    built = _version(_C.build_info().get("cuda_version"))
    if built and census.driver_cuda and census.driver_cuda[0] < built[0]:
        raise RuntimeError(f"the NVIDIA driver runs CUDA up to {census.driver_cuda[0]}."
                           f"{census.driver_cuda[1]}, but this build of codext needs CUDA "
                           f"{built[0]}.x: update the driver, or install a build made with "
                           f"CUDA {census.driver_cuda[0]}")
    shown = ", ".join(f"cuda:{g.ordinal} {g.name} ({g.arch or 'sm_?'}, "
                      f"{g.memory_bytes / 2**30:.0f} GiB)" for g in gpus[:workers])
    return "cuda", workers, [f"{workers} GPU worker(s): {shown}; {GPU_DDP}"]


# The start line's words for each precision (codext/train.py).
PRECISION_NOTES = {"fp32": "", "fp16": " in mixed precision (fp16, dynamic loss scaling)",
                   "bf16": " in mixed precision (bf16)"}


def mixed_precision(model, amp):
    """Config.amp on a CUDA device: the model's products in bf16 on sm_80+ (Ampere and
    newer), else in fp16, whose step needs dynamic loss scaling (kernels/precision.cu;
    docs/backends.md, "Mixed precision"). Returns the precision set ("fp32" without amp or
    on the CPU, where amp has no effect). CODEXT_AMP_DTYPE=fp16 takes fp16 with loss
    scaling on any GPU (a T4's way, on an A100 or H100: for tests and comparisons); bf16
    insists on bf16 (refused before sm_80)."""
    if not amp or model.device == "cpu":
        return "fp32"
    forced = os.environ.get("CODEXT_AMP_DTYPE", "").strip().lower()
    if forced not in ("", "fp16", "bf16"):
        raise ValueError(f"CODEXT_AMP_DTYPE must be fp16 or bf16 (or unset: bf16 from sm_80 on, "
                         f"else fp16), got {forced!r}")
    if forced:
        model._native.set_precision(forced)
        return forced
    try:
        model._native.set_precision("bf16")
        return "bf16"
    except ValueError:  # before sm_80 (T4, P100): no bf16
        model._native.set_precision("fp16")
        return "fp16"
