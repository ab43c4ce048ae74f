"""Memory that worker processes map without copying (used by codext.data).

Two kinds of backing, each described by a small dict a worker can use to map the same
bytes read-only: {"path" or "fd", "offset", "dtype", "shape"}.

- A cache file (.npy written by codext.data.load): np.load(mmap_mode="r"). Every process
  on the host shares the page cache, the file survives kernel restarts, and nothing
  counts against /dev/shm.
- SharedBuffer: an anonymous memfd (os.memfd_create) sized with ftruncate and reserved
  with posix_fallocate, for arrays that have no file (from_arrays, synthetic, or a cache
  dir that cannot be written). A worker receives the descriptor through
  subprocess.Popen(pass_fds=...) and maps it. memfd lives outside /dev/shm, so Docker's
  64 MB /dev/shm limit (Kaggle) does not apply, and reserving the pages up front turns
  "out of memory" into an exception here instead of a SIGBUS later. Where memfd_create
  is missing (macOS), an unlinked temporary file plays the same part.
  The memory is freed when the last descriptor and mapping are gone: nothing to clean up
  after a crash.
"""
import mmap
import os
import tempfile
import weakref

import numpy as np

PAGE = mmap.PAGESIZE


def align(offset, to=PAGE):
    return (offset + to - 1) // to * to


def nbytes_of(dtype, shape):
    return int(np.dtype(dtype).itemsize * int(np.prod(shape, dtype=np.int64)))


def _read_int(path):
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (v2, no limit) -> None


def _cgroup_headroom():
    """Bytes left under this process's memory cgroup limits (v2 and v1; the own cgroup and
    the mount root, which is the own one inside a container), or None without a limit."""
    paths = [""]
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if controllers in ("", "memory") or "memory" in controllers.split(","):
                    paths.append(path.lstrip("/"))
    except (OSError, ValueError):
        pass
    left = []
    for rel in paths:
        for base, limit_name, usage_name in (("/sys/fs/cgroup", "memory.max", "memory.current"),
                                             ("/sys/fs/cgroup/memory", "memory.limit_in_bytes",
                                              "memory.usage_in_bytes")):
            folder = os.path.join(base, rel)
            limit = _read_int(os.path.join(folder, limit_name))
            usage = _read_int(os.path.join(folder, usage_name))
            if limit is not None and usage is not None and limit < 2 ** 62:
                left.append(max(limit - usage, 0))
    return min(left) if left else None


def available_memory():
    """(bytes this process can still commit, where the figure comes from): the smaller of
    /proc/meminfo's MemAvailable and the memory cgroup's limit minus its usage; (None, "")
    where neither is known (not Linux)."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append((int(line.split()[1]) * 1024, "MemAvailable"))
    except (OSError, ValueError, IndexError):
        pass
    headroom = _cgroup_headroom()
    if headroom is not None:
        found.append((headroom, "the memory cgroup's limit"))
    return min(found) if found else (None, "")


def human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


class MemoryRequestError(MemoryError):
    """A request for more memory than is available, refused before committing any."""


def check_memory(nbytes, what):
    """MemoryRequestError naming `what` unless nbytes fit in the memory available now
    (committing more with posix_fallocate on a memfd gets the process OOM-killed)."""
    avail, source = available_memory()
    if avail is not None and nbytes > avail:
        raise MemoryRequestError(f"{what}: {human_bytes(nbytes)} of memory needed, only "
                                 f"{human_bytes(avail)} available ({source})")


class SharedBuffer:
    """A block of `nbytes` bytes behind a file descriptor, mapped read-write here. The
    request is checked against the memory available first (MemoryRequestError)."""

    def __init__(self, nbytes, label="codext-data", fallback_dir=None):
        self.nbytes = max(int(nbytes), 1)
        check_memory(self.nbytes, f"shared buffer {label}")
        fd = None
        try:
            fd = os.memfd_create(label, os.MFD_CLOEXEC)
            self.kind = "memfd"
            self._reserve(fd)
        except (AttributeError, OSError) as first:
            if fd is not None:
                os.close(fd)
                fd = None
            try:
                with tempfile.TemporaryFile(prefix="codext-", dir=fallback_dir) as f:
                    fd = os.dup(f.fileno())
                self.kind = "tempfile"
                self._reserve(fd)
            except OSError as second:
                if fd is not None:
                    os.close(fd)
                raise MemoryError(
                    f"cannot reserve {self.nbytes / 2**20:.1f} MiB of shared memory for {label} "
                    f"(memfd: {first}; temporary file: {second})") from second
        self.fd = fd
        self._mmap = mmap.mmap(fd, self.nbytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._finalizer = weakref.finalize(self, os.close, fd)

    def _reserve(self, fd):
        os.ftruncate(fd, self.nbytes)
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fd, 0, self.nbytes)
            except OSError as e:
                if e.errno not in (95, 22):  # EOPNOTSUPP / EINVAL: file system cannot; go on
                    raise

    def array(self, offset, dtype, shape):
        """Writable view of `shape` at byte `offset`, and its descriptor for workers."""
        count = int(np.prod(shape, dtype=np.int64))
        arr = np.frombuffer(self._mmap, dtype=dtype, count=count, offset=offset).reshape(shape)
        desc = {"fd": self.fd, "offset": int(offset), "dtype": np.dtype(dtype).str,
                "shape": [int(s) for s in shape]}
        return arr, desc

    def close(self):
        """Closes the descriptor (mapped arrays stay valid until they are dropped)."""
        self._finalizer()


def file_desc(arr, path):
    """Descriptor of an array loaded with np.load(path, mmap_mode='r')."""
    offset = getattr(arr, "offset", None)
    if offset is None:
        raise ValueError(f"{path} is not memory-mapped")
    return {"path": os.path.abspath(path), "offset": int(offset), "dtype": arr.dtype.str,
            "shape": [int(s) for s in arr.shape]}


def map_array(desc):
    """Read-only array described by `desc` (see the module docstring)."""
    shape = tuple(int(s) for s in desc["shape"])
    dtype = np.dtype(desc["dtype"])
    size = nbytes_of(dtype, shape)
    if size == 0:
        arr = np.zeros(shape, dtype)
        arr.flags.writeable = False
        return arr
    if desc.get("path"):
        return np.memmap(desc["path"], dtype=dtype, mode="r", offset=int(desc["offset"]), shape=shape)
    fd = int(desc["fd"])
    # the array keeps the mapping alive; it goes away with the last view
    mm = mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED, mmap.PROT_READ)
    if int(desc["offset"]) + size > len(mm):
        raise ValueError(f"descriptor {desc} reaches past the end of fd {fd} ({len(mm)} bytes)")
    return np.frombuffer(mm, dtype=dtype, count=int(np.prod(shape)), offset=int(desc["offset"])).reshape(shape)
