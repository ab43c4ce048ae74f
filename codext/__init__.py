"""codext: camouflaged-object detection trained in C and CUDA.

    >>> import codext
    >>> codext.build_info()["cuda"] in (True, False)
    True
"""
import glob as _glob
import os as _os
import sys as _sys


def _nvidia_lib_dirs():
    """The lib folders of pip's nvidia-* wheels on sys.path (what torch's CUDA wheels
    install: nvidia/cudnn/lib, nvidia/cublas/lib, ...). The CUDA library loader looks there
    for a library its build linked that the system cannot find (csrc/ops/cuda_loader.c);
    listing them loads nothing."""
    found = []
    for entry in _sys.path:
        for lib in sorted(_glob.glob(_os.path.join(entry or ".", "nvidia", "*", "lib"))):
            if _os.path.isdir(lib) and lib not in found:
                found.append(lib)
    return found


if "CODEXT_NVIDIA_LIB_DIRS" not in _os.environ:
    _os.environ["CODEXT_NVIDIA_LIB_DIRS"] = ":".join(_nvidia_lib_dirs())

from . import _C  # noqa: E402

__version__ = "0.1.0"


def build_info():
    """What this build compiled in: CUDA (and its version), cuDNN and NCCL versions,
    the CUDA target architectures and the CPU thread count.

    Reading it loads no CUDA library: the versions are those the build compiled against.
    """
    return _C.build_info()


def get_num_threads():
    """Threads the CPU engine uses (default: the CPUs this process may run on, or
    CODEXT_NUM_THREADS)."""
    return _C.get_num_threads()


def set_num_threads(n):
    """Sets the threads the CPU engine uses. Results do not depend on it."""
    _C.set_num_threads(int(n))


from .backbone import Backbone, CONFIGS as BACKBONES  # noqa: E402
from . import data  # noqa: E402,F401
from . import metrics  # noqa: E402,F401
from .config import Config  # noqa: E402,F401
from .model import Model, ModelConfig, load  # noqa: E402,F401
from .train import TrainResult, evaluate, train  # noqa: E402,F401
from .launch import WorkerError, launch  # noqa: E402,F401
from .plots import show_predictions  # noqa: E402,F401
