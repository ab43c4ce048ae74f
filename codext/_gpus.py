"""The GPUs this process may use, found without creating a CUDA context.

The launcher runs in the user's notebook, which may already hold a CUDA context (torch
imported and used) or must stay free of one (fork + exec'd workers take the GPUs). So it
never initialises CUDA: it asks NVML (libnvidia-ml, the driver's management library, which
creates no context) and, where NVML cannot be loaded, `nvidia-smi`. CUDA_VISIBLE_DEVICES is
applied as the CUDA runtime applies it.

    visible_gpus() -> GpuReport(gpus=[Gpu], driver_cuda=(12, 8) or None, source, problem)

CODEXT_NVML_LIBRARY names another NVML library (tests load a fake one)."""
import ctypes
import dataclasses
import os
import re
import shutil
import subprocess
from typing import List, Optional, Tuple

NVML_SUCCESS = 0


@dataclasses.dataclass(frozen=True)
class Gpu:
    index: int              # the physical index (nvidia-smi's)
    ordinal: int            # the CUDA ordinal in this process (after CUDA_VISIBLE_DEVICES)
    name: str
    uuid: str
    memory_bytes: int
    compute_capability: Optional[Tuple[int, int]]

    @property
    def arch(self):
        """'sm_75' (None when unknown)."""
        cc = self.compute_capability
        return None if cc is None else f"sm_{cc[0]}{cc[1]}"


@dataclasses.dataclass(frozen=True)
class GpuReport:
    gpus: List[Gpu]
    driver_cuda: Optional[Tuple[int, int]]  # the newest CUDA the driver runs, (12, 8)
    source: str                              # "nvml", "nvidia-smi" or "none"
    problem: Optional[str] = None            # why nothing was found, when that is known


class _Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong),
                ("used", ctypes.c_ulonglong)]


def _nvml_devices(lib):
    """[(index, name, uuid, memory, cc)] and the driver's CUDA version, from a loaded NVML."""
    count = ctypes.c_uint(0)
    if lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) != NVML_SUCCESS:
        raise OSError("nvmlDeviceGetCount_v2 failed")
    devices = []
    for i in range(count.value):
        handle = ctypes.c_void_p()
        if lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(i), ctypes.byref(handle)) != NVML_SUCCESS:
            continue
        name, uuid = ctypes.create_string_buffer(96), ctypes.create_string_buffer(96)
        memory, major, minor = _Memory(), ctypes.c_int(0), ctypes.c_int(0)
        got_name = lib.nvmlDeviceGetName(handle, name, ctypes.c_uint(96)) == NVML_SUCCESS
        got_uuid = lib.nvmlDeviceGetUUID(handle, uuid, ctypes.c_uint(96)) == NVML_SUCCESS
        got_memory = lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) == NVML_SUCCESS
        got_cc = lib.nvmlDeviceGetCudaComputeCapability(handle, ctypes.byref(major),
                                                       ctypes.byref(minor)) == NVML_SUCCESS
        devices.append((i, name.value.decode(errors="replace") if got_name else "unknown GPU",
                        uuid.value.decode(errors="replace") if got_uuid else "",
                        memory.total if got_memory else 0,
                        (major.value, minor.value) if got_cc else None))
    version = ctypes.c_int(0)
    driver = None
    if lib.nvmlSystemGetCudaDriverVersion_v2(ctypes.byref(version)) == NVML_SUCCESS and version.value > 0:
        driver = (version.value // 1000, version.value % 1000 // 10)
    return devices, driver


def _from_nvml():
    path = os.environ.get("CODEXT_NVML_LIBRARY") or "libnvidia-ml.so.1"
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        return None, f"NVML ({path}) cannot be loaded: {e}"
    if lib.nvmlInit_v2() != NVML_SUCCESS:
        return None, f"NVML ({path}) did not initialise (no NVIDIA driver running?)"
    try:
        return _nvml_devices(lib), None
    except OSError as e:
        return None, f"NVML ({path}): {e}"
    finally:
        lib.nvmlShutdown()


def _from_smi():
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None, "nvidia-smi is not on the PATH"
    try:
        query = subprocess.run([smi, "--query-gpu=index,name,uuid,memory.total,compute_cap",
                                "--format=csv,noheader,nounits"], capture_output=True, text=True,
                               timeout=30)
        header = subprocess.run([smi], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"nvidia-smi failed: {e}"
    if query.returncode != 0:
        return None, f"nvidia-smi failed: {(query.stderr or query.stdout).strip()[:200]}"
    devices = []
    for line in query.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5 or not parts[0].isdigit():
            continue
        memory = int(parts[3]) * 2**20 if parts[3].isdigit() else 0
        cc = re.fullmatch(r"(\d+)\.(\d+)", parts[4])
        devices.append((int(parts[0]), parts[1], parts[2], memory,
                        (int(cc.group(1)), int(cc.group(2))) if cc else None))
    version = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", header.stdout or "")
    driver = (int(version.group(1)), int(version.group(2))) if version else None
    return (devices, driver), None


def apply_visible_devices(devices, value):
    """The devices CUDA shows a process whose CUDA_VISIBLE_DEVICES is `value` (None: unset),
    in that order. Entries are indices or UUIDs ("GPU-..." or a unique prefix of one); as
    in the CUDA runtime, the list ends at the first entry that names no device, and a device
    named twice ends it too."""
    if value is None:
        return list(devices)
    chosen = []
    for entry in value.split(","):
        entry = entry.strip()
        match = None
        if re.fullmatch(r"\d+", entry):
            match = next((d for d in devices if d[0] == int(entry)), None)
        elif entry.startswith("GPU-"):
            found = [d for d in devices if d[2].startswith(entry)]
            match = found[0] if len(found) == 1 else None
        if match is None or match in chosen:
            break
        chosen.append(match)
    return chosen


def visible_gpus():
    """The GPUs this process may use (GpuReport); never initialises CUDA."""
    found, problem = _from_nvml()
    source = "nvml"
    if found is None:
        found, smi_problem = _from_smi()
        source = "nvidia-smi"
        if found is None:
            return GpuReport([], None, "none", f"{problem}; {smi_problem}")
    devices, driver = found
    visible = apply_visible_devices(devices, os.environ.get("CUDA_VISIBLE_DEVICES"))
    gpus = [Gpu(index=d[0], ordinal=k, name=d[1], uuid=d[2], memory_bytes=d[3],
                compute_capability=d[4]) for k, d in enumerate(visible)]
    why = None
    if not gpus:
        why = (f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r} hides the "
               f"{len(devices)} GPU(s)" if devices else "the driver reports no GPU")
    return GpuReport(gpus, driver, source, why)
