"""The COD model: EdgeNeXt backbone + mixture-of-experts neck + reverse-attention decoder.

Native C forward and backward (csrc/model/cod*.c); the arithmetic, parameter names and
order are those of the PyTorch twin tools/cod_twin.py (docs/model.md).

    >>> import numpy as np, codext
    >>> m = codext.Model("edgenext_tiny_test", decoder_dim=16, num_experts=3, img_size=64)
    >>> probs = m.predict(np.zeros((50, 70, 3), np.uint8))
    >>> probs.shape, probs.dtype
    ((50, 70), dtype('float32'))
"""
import dataclasses
import json

import numpy as np

from . import _C
from ._params import LoadResult, ParameterBuffer, _list_names
from .backbone import CONFIGS, check_image_batch
from .config import INT_MULTIPLES, INT_RANGES

METADATA_KEY = "codext_model"
# Fields that change the parameters: a checkpoint must agree on these to load.
ARCHITECTURE_FIELDS = ("backbone", "decoder_dim", "num_experts")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a Model (it travels in checkpoint metadata)."""
    backbone: str = "edgenext_base"
    decoder_dim: int = 64
    num_experts: int = 7
    moe_top_k: int = 0
    seed: int = 0
    ds_weight: float = 0.5
    balance_weight: float = 0.01
    img_size: int = 352

    def __str__(self):
        mode = f"top-{self.moe_top_k}" if self.moe_top_k else "dense"
        return (f"COD model ({self.backbone}, decoder_dim {self.decoder_dim}, "
                f"{self.num_experts} experts {mode})")

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text, where="checkpoint"):
        try:
            fields = json.loads(text)
        except ValueError as e:
            raise ValueError(f"{where}: {METADATA_KEY} metadata is not JSON ({e})") from None
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(fields, dict) or not set(fields) <= known:
            extra = sorted(set(fields) - known) if isinstance(fields, dict) else fields
            raise ValueError(f"{where}: unknown model config fields {extra}")
        return cls(**fields)


def _validate(cfg):
    if cfg.backbone not in CONFIGS:
        raise ValueError(f"unknown backbone {cfg.backbone!r}; known: {', '.join(CONFIGS)}")
    for name in ("decoder_dim", "num_experts", "moe_top_k", "seed", "img_size"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    for name in ("decoder_dim", "num_experts", "seed", "img_size"):
        low, high = INT_RANGES[name]
        step = INT_MULTIPLES.get(name, 1)
        value = getattr(cfg, name)
        if not low <= value <= high or value % step:
            what = f"a multiple of {step} in {low}..{high}" if step > 1 else f"in {low}..{high}"
            raise ValueError(f"{name} must be {what}, got {value}")
    if not 0 <= cfg.moe_top_k <= cfg.num_experts:
        raise ValueError(f"moe_top_k must be in [0, num_experts = {cfg.num_experts}] "
                         f"(0: dense), got {cfg.moe_top_k}")
    for name in ("ds_weight", "balance_weight"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a number, got {value!r}")
        if not np.isfinite(float(value)) or float(value) < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _parse_device(device):
    """"cpu", "cuda" or "cuda:N" -> "cpu" or "cuda:N"."""
    if isinstance(device, str):
        if device == "cpu":
            return device
        if device == "cuda":
            return "cuda:0"
        head, _, ordinal = device.partition(":")
        if head == "cuda" and ordinal.isdigit():
            return f"cuda:{int(ordinal)}"
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def _as_image_list(images):
    """-> (list of uint8 [H, W, 3] arrays, how to return: 'single', 'batch' or 'list')."""
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            items, kind = [images], "single"
        elif images.ndim == 4:
            items, kind = list(images), "batch"
        else:
            raise ValueError(f"images must be [H, W, 3], [N, H, W, 3] or a list of [H, W, 3], "
                             f"got an array of shape {images.shape}")
        if images.ndim == 4 and images.shape[0] == 0:
            raise ValueError("images is an empty batch")
    elif isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images is an empty list")
        items, kind = list(images), "list"
    else:
        raise TypeError(f"images must be a uint8 numpy array or a list of them, got {type(images).__name__}")
    for i, img in enumerate(items):
        what = "image" if kind == "single" else f"image {i}"
        if not isinstance(img, np.ndarray):
            raise TypeError(f"{what} must be a numpy array, got {type(img).__name__}")
        if img.dtype != np.uint8:
            raise TypeError(f"{what} must be uint8 RGB (0..255), got dtype {img.dtype}; "
                            f"codext.data.as_rgb_uint8 converts other kinds")
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"{what} must have shape [H, W, 3], got {img.shape}")
        if img.shape[0] < 1 or img.shape[1] < 1:
            raise ValueError(f"{what} is empty (shape {img.shape})")
    return items, kind


class Model(ParameterBuffer):
    """The COD model with native forward, loss and backward.

    Model(config) with a codext.Config, or Model(backbone, decoder_dim, num_experts,
    moe_top_k, seed, ds_weight, balance_weight, img_size): parameters initialised from `seed` (backbone as timm, the rest as PyTorch's
    defaults; gates zero; edge filters Sobel / Laplacian). moe_top_k 0 is the dense
    mixture. Parameter names: `backbone.<timm name>`, `neck.{i}.proj.*`,
    `neck.{i}.moe.gate.*`, `neck.{i}.moe.experts.{e}.*`, `decoder.fuse.{k}.*`,
    `decoder.heads.{k}.*` (docs/model.md).

    gradient_checkpointing (keyword, or Config.gradient_checkpointing; the attribute may be
    changed at any time): training forwards keep only the backbone's input and its four
    stage outputs, and backward recomputes each stage just before its backward. Less
    activation memory, one more backbone forward per step, the same gradients bit for bit
    (docs/ops.md, "What a training forward keeps"). It is not part of the saved config.

    device (keyword): "cpu" (default) or "cuda" (or "cuda:N"): the parameters, gradients
    and activations live in that GPU's memory and every op runs there (libcodext_cuda.so,
    loaded on first use; docs/backends.md). state_dict(), grads() and forward() return host
    copies; load_state_dict() and load() upload. A _C.Trainer made on such a model keeps
    its optimizer state on the device too (docs/training.md, "On a CUDA device").

    deterministic (keyword, or Config.deterministic; default True here): on a GPU, only
    convolution algorithms whose result does not depend on scheduling (cuDNN's
    deterministic ones, else our direct kernels; the other kernels and cuBLAS, without
    atomics, always are), so two runs give the same bits; False lets cuDNN pick its
    fastest algorithm. The CPU is always deterministic.
    Model.deterministic says what the backend was made with.
    """


    def __init__(self, backbone="edgenext_base", decoder_dim=64, num_experts=7, moe_top_k=0,
                 seed=0, ds_weight=0.5, balance_weight=0.01, img_size=352, *,
                 gradient_checkpointing=False, device="cpu", deterministic=True):
        from .config import Config
        if isinstance(backbone, Config):
            c = backbone
            backbone, decoder_dim, num_experts, moe_top_k = c.backbone, c.decoder_dim, c.num_experts, c.moe_top_k
            seed, ds_weight, balance_weight, img_size = c.seed, c.ds_weight, c.balance_weight, c.img_size
            gradient_checkpointing = c.gradient_checkpointing
            deterministic = c.deterministic
            if not c.deep_supervision:
                ds_weight = 0.0
        if not isinstance(backbone, str):
            raise TypeError(f"backbone must be a name such as 'edgenext_base', got {type(backbone).__name__}")
        cfg = ModelConfig(backbone, decoder_dim, num_experts, moe_top_k, seed, float(ds_weight),
                          float(balance_weight), img_size)
        _validate(cfg)
        self.config = dataclasses.replace(cfg, decoder_dim=int(decoder_dim), num_experts=int(num_experts),
                                          moe_top_k=int(moe_top_k), seed=int(seed), img_size=int(img_size))
        self.device = _parse_device(device)
        backend, _, ordinal = self.device.partition(":")
        self._native = _C.CODModel(backbone, self.config.decoder_dim, self.config.num_experts,
                                   self.config.moe_top_k, self.config.seed, self.config.ds_weight,
                                   self.config.balance_weight, backend=backend, device=int(ordinal or 0),
                                   deterministic=bool(deterministic))
        self._source = None  # the file the weights came from (load / Model.load), for errors
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self._table = self._native.param_table()
        if backend == "cpu":  # views of the native buffers
            self._params = self._native.params()
            self._grads = self._native.grads()
        else:  # device memory: read through host copies, written with upload_params
            self._params = self._grads = None

    @property
    def deterministic(self):
        """Whether the backend runs deterministic kernels only (always True on the CPU)."""
        return self._native.deterministic()

    def __repr__(self):
        where = "" if self.device == "cpu" else f", on {self.device}"
        return f"codext.Model({self.config}, {self.num_parameters():,} parameters{where})"

    # ---- files ----------------------------------------------------------------------
    def save(self, path):
        """Writes the parameters as safetensors (float32), the config as JSON metadata."""
        names = self.parameter_names()
        state = self.state_dict()
        _C.safetensors_save(str(path), names, [state[n] for n in names],
                            {"format": "pt", METADATA_KEY: self.config.to_json()})

    def load(self, path, strict=True, prefix=""):
        """Loads parameters from a safetensors file written by save() (or any file with
        these names after `prefix`, e.g. "ema."). A file whose config has another
        architecture fails naming the fields that differ."""
        tensors, metadata, _ = _C.safetensors_load(str(path))
        if METADATA_KEY in metadata:
            theirs = ModelConfig.from_json(metadata[METADATA_KEY], str(path))
            differ = [f"{f}: file {getattr(theirs, f)!r}, model {getattr(self.config, f)!r}"
                      for f in ARCHITECTURE_FIELDS if getattr(theirs, f) != getattr(self.config, f)]
            if differ:
                raise ValueError(f"{path} holds another model configuration ({'; '.join(differ)})")
        if prefix:
            tensors = {n[len(prefix):]: v for n, v in tensors.items() if n.startswith(prefix)}
        try:
            result = self.load_state_dict(tensors, strict=strict)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        self._source = str(path)
        return result

    def load_backbone(self, path):
        """Loads the backbone from a safetensors file with timm names (timm's
        model.safetensors or Backbone.save); timm's classifier head.* is ignored and
        reported. Every backbone tensor must be there; the rest of the model is kept."""
        tensors, _, _ = _C.safetensors_load(str(path))
        ignored = sorted(n for n in tensors if n.startswith("head."))
        state = {"backbone." + n: v for n, v in tensors.items() if not n.startswith("head.")}
        ours = {n for n in self.parameter_names() if n.startswith("backbone.")}
        missing = [n[len("backbone."):] for n in ours if n not in state]
        unexpected = [n[len("backbone."):] for n in state if n not in ours]
        problems = ([f"missing keys: {_list_names(missing)}"] if missing else []) + \
                   ([f"unexpected keys: {_list_names(unexpected)}"] if unexpected else [])
        if problems:
            raise ValueError(f"{path}: not a {self.config.backbone} backbone: " + " | ".join(problems))
        self.load_state_dict(state, strict=False)
        return LoadResult([], [], ignored)

    # ---- compute --------------------------------------------------------------------
    def forward(self, x):
        """x float32 [B, 3, H, W] (H, W multiples of 32, normalised) -> four float32 logit
        maps [B, 1, H, W]: the prediction p1 (scale 0, stride 4) first, then the
        deep-supervision outputs of strides 8, 16, 32."""
        return tuple(self._native.forward(check_image_batch(x), self._train_mode(True)))

    def _train_mode(self, train_backbone):
        """The native forward mode of a training step (csrc/model/cod.h)."""
        if not train_backbone:
            return "train_head"  # stage 1: the backbone keeps no activation
        return "train_checkpoint" if self.gradient_checkpointing else "train"

    def loss_and_grads(self, x, y, train_backbone=True):
        """One forward and backward on (x, y) from zeroed gradients.

        y: float32 [B, 1, H, W] in {0, 1}. Returns (parts, grads): parts holds total,
        loss{k} (batch means), wbce{k} / wiou{k} (per image) and balance (sparse mode);
        grads maps every parameter name to d total / d parameter. train_backbone False
        is stage 1: no backward through the backbone, whose gradients stay zero (and its
        forward keeps none of its activations). With gradient_checkpointing the backbone's
        stages are recomputed in backward; the gradients are the same bits."""
        x = check_image_batch(x)
        y = self._check_masks(y, x.shape)
        self._native.zero_grads()
        self._native.forward(x, self._train_mode(train_backbone))
        parts = self._native.loss(y)
        self._native.backward(1.0, bool(train_backbone))
        return parts, self.grads()

    @staticmethod
    def _check_masks(y, x_shape):
        if not isinstance(y, np.ndarray) or y.dtype != np.float32:
            raise TypeError(f"y must be a float32 numpy array, got {getattr(y, 'dtype', type(y).__name__)}")
        want = (x_shape[0], 1, x_shape[2], x_shape[3])
        if y.shape != want:
            raise ValueError(f"y must have shape {want}, got {y.shape}")
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("y must hold only 0 and 1")
        return np.ascontiguousarray(y)

    def predict(self, images, batch_size=8):
        """Foreground probabilities of uint8 RGB images at their own sizes.

        images: one [H, W, 3] array, a batch [N, H, W, 3] or a list of [H, W, 3] arrays of
        any sizes. Each image is resized to img_size (codext.data's bilinear resize),
        normalised as the evaluation data path does, run in batches of batch_size, and
        sigmoid(p1) is resized back to the image's size. Returns float32 [H, W] (one
        image), [N, H, W] (a batch array) or a list of [H_i, W_i].

        Weights or an output that are not finite raise RuntimeError naming the model's
        file (or "the model" when it came from no file), never a map of zeros."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        items, kind = _as_image_list(images)
        results = self._predict_at(items, [img.shape[:2] for img in items], batch_size)
        if kind == "single":
            return results[0]
        if kind == "batch":
            return np.stack(results)
        return results

    def _predict_at(self, images, out_sizes, batch_size):
        """predict's work, with the output size (h, w) of each image given: one C call per
        batch (resize to img_size, normalise, forward, sigmoid, resize to each out size)."""
        items, _ = _as_image_list(images)
        if len(out_sizes) != len(items):
            raise ValueError(f"{len(items)} images but {len(out_sizes)} output sizes")
        size = self.config.img_size
        results = []
        for start in range(0, len(items), batch_size):
            chunk = [np.ascontiguousarray(img) for img in items[start:start + batch_size]]
            sizes = [(int(h), int(w)) for h, w in out_sizes[start:start + batch_size]]
            try:
                results.extend(self._native.predict_batch(chunk, size, sizes))
            except RuntimeError as e:  # weights or output not finite (csrc/train/predict.c)
                where = self._source if self._source is not None else "the model"
                raise RuntimeError(f"{where}: cannot predict: {e}") from None
        return results

    def activation_bytes(self):
        """Bytes of the activation arena: the largest plan so far (each forward plans for its
        input shape and mode; the arena only grows)."""
        return self._native.arena_bytes()

    PLAN_MODES = ("train", "train_head", "train_checkpoint", "predict")

    def planned_activation_bytes(self, batch, height=None, width=None, mode=None):
        """Activation bytes one step of `batch` images of height x width (default img_size)
        needs, as the planner measures them, without allocating them: mode "train" (plain),
        "train_checkpoint" (gradient checkpointing), "train_head" (stage 1: frozen
        backbone), "predict", or None (what loss_and_grads uses: "train_checkpoint" when
        gradient_checkpointing is on, else "train"). Training modes include loss and
        backward. The last forward's results are forgotten."""
        mode = self._train_mode(True) if mode is None else mode
        if mode not in self.PLAN_MODES:
            raise ValueError(f"mode must be one of {', '.join(self.PLAN_MODES)}, got {mode!r}")
        size = self.config.img_size
        return self._native.plan_bytes(int(batch), int(height or size), int(width or size), mode)


def load(path):
    """Rebuilds a Model from a file written by Model.save (its config is in the metadata)."""
    tensors, metadata, _ = _C.safetensors_load(str(path))
    if METADATA_KEY not in metadata:
        raise ValueError(f"{path} is not a codext model checkpoint (no {METADATA_KEY!r} metadata; "
                         f"a backbone file loads with Model.load_backbone)")
    cfg = ModelConfig.from_json(metadata[METADATA_KEY], str(path))
    try:
        model = Model(**dataclasses.asdict(cfg))
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"{path}: {METADATA_KEY} metadata: {e}") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    model._source = str(path)
    return model
