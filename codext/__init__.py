"""codext: camouflaged-object detection trained in C and CUDA.

    >>> import codext
    >>> codext.build_info()["cuda"] in (True, False)
    True
"""
from . import _C

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
