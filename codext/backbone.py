"""EdgeNeXt backbone: native C forward and backward with timm's parameter names.

    >>> import numpy as np, codext
    >>> b = codext.Backbone("edgenext_xx_small", seed=0)
    >>> feats = b.forward(np.zeros((1, 3, 64, 64), np.float32))
    >>> [f.shape for f in feats]
    [(1, 24, 16, 16), (1, 48, 8, 8), (1, 88, 4, 4), (1, 168, 2, 2)]
"""
import numpy as np

from . import _C
from ._params import LoadResult, ParameterBuffer  # noqa: F401 (LoadResult re-exported)

CONFIGS = ("edgenext_xx_small", "edgenext_x_small", "edgenext_small", "edgenext_base",
           "edgenext_tiny_test")

def check_image_batch(x, what="x"):
    """Validates a float32 NCHW batch for the backbone; returns a C-contiguous array."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what} must be a numpy array of shape [B, 3, H, W], got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"{what} must be float32, got {x.dtype}; convert with {what}.astype(np.float32)")
    if x.ndim != 4:
        raise ValueError(f"{what} must have rank 4 [B, 3, H, W], got shape {x.shape}")
    b, c, h, w = x.shape
    if b < 1:
        raise ValueError(f"{what} has an empty batch (shape {x.shape})")
    if c != 3:
        raise ValueError(f"{what} must have 3 channels in dim 1 (NCHW), got shape {x.shape}")
    if h < 32 or w < 32 or h % 32 or w % 32:
        raise ValueError(f"{what}: height and width must be positive multiples of 32, got {h}x{w}")
    return np.ascontiguousarray(x)


class Backbone(ParameterBuffer):
    """EdgeNeXt feature extractor, identical in arithmetic to timm's.

    Backbone(config, seed) builds one of CONFIGS with timm's initialisation
    (trunc-normal 0.02 weights, zero biases, layer-scale 1e-6) drawn from `seed`.
    forward(x) takes float32 [B, 3, H, W] with H and W multiples of 32 and returns the four
    stage outputs at strides 4, 8, 16, 32. backward(dfeatures) returns dL/dx and leaves the
    parameter gradients in grads() (each call overwrites them).
    """

    def __init__(self, config="edgenext_base", seed=0):
        if not isinstance(config, str):
            raise TypeError(f"config must be a name such as 'edgenext_base', got {type(config).__name__}")
        try:
            self._native = _C.Backbone(config, int(seed))
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        self.config = config
        self._table = self._native.param_table()
        self._params = self._native.params()
        self._grads = self._native.grads()

    def save(self, path):
        """Writes the parameters as safetensors (float32, timm names), atomically."""
        names = self.parameter_names()
        state = self.state_dict()
        _C.safetensors_save(str(path), names, [state[n] for n in names],
                            {"format": "pt", "codext_backbone": self.config})

    def load(self, path, strict=True):
        """Loads a safetensors file (ours, or timm's model.safetensors: F32/F16/BF16).
        timm's classifier (`head.*`) is ignored and reported in the result."""
        tensors, _, _ = _C.safetensors_load(str(path))
        ignored = sorted(n for n in tensors if n.startswith("head."))
        for n in ignored:
            del tensors[n]
        try:
            result = self.load_state_dict(tensors, strict=strict)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        return LoadResult(result.missing_keys, result.unexpected_keys, ignored)

    # ---- compute --------------------------------------------------------------------
    def forward(self, x):
        """x float32 [B, 3, H, W] (H, W multiples of 32) -> four float32 feature maps
        [B, dims[s], H/2^(s+2), W/2^(s+2)]."""
        x = check_image_batch(x)
        self._last_shape = x.shape
        return tuple(self._native.forward(x))

    def backward(self, dfeatures):
        """Gradients of the four feature maps of the last forward -> dL/dx [B, 3, H, W].
        Parameter gradients land in grads(). Needs a forward() before each backward()."""
        if not isinstance(dfeatures, (list, tuple)) or len(dfeatures) != 4:
            raise ValueError("dfeatures must be a list of 4 arrays, one per stage")
        arrays = []
        for s, d in enumerate(dfeatures):
            if not isinstance(d, np.ndarray) or d.dtype != np.float32:
                raise TypeError(f"dfeatures[{s}] must be a float32 numpy array")
            arrays.append(np.ascontiguousarray(d))
        return self._native.backward(arrays)

    def activation_bytes(self):
        """Activation memory planned for the last input shape."""
        return self._native.arena_bytes()
