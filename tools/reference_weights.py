"""EdgeNeXt configs and deterministic test weights/inputs (pure NumPy, no torch).

Shared by tools/make_reference.py (which runs timm to write tests/data/backbone/*.npz) and
by the tests (which regenerate the weights with make_weights() instead of storing them).

CONFIGS[name] holds keyword arguments of timm.models.edgenext.EdgeNeXt, so
`EdgeNeXt(**CONFIGS[name], num_classes=0)` builds the same network in timm.

param_names_and_shapes(cfg) lists the backbone parameters (timm's state_dict order and
names, head.* excluded); make_reference.py asserts it matches timm exactly.

Weight rule (make_weights): every tensor is drawn from its own generator
    rng = np.random.default_rng(seed + zlib.crc32(name.encode("utf-8")))
so the order of names does not matter, then cast to float32. By name and shape:
    name ends with "gamma" or "gamma_xca"     U(0.2, 0.8)          (layer scale; timm: 1e-6)
    name ends with "xca.temperature"          U(0.5, 2.0)          (timm: 1)
    ".weight" with ndim >= 2 (conv, linear)   N(0, 1/fan_in), fan_in = prod(shape[1:])
                                              (= in_ch/groups*kh*kw for a conv, in_features
                                              for a linear; pos_embd.token_projection.weight
                                              [C,64,1,1] is a conv: fan_in 64)
    ".weight" with ndim == 1 (LayerNorm)      U(0.7, 1.3)
    ".bias" (conv, linear and LayerNorm)      N(0, 0.05^2)
Normal draws use rng.standard_normal(shape) (float64) * std; uniform draws use
rng.uniform(low, high, shape) (float64); both then .astype(np.float32).
Anything else raises ValueError.
"""
import zlib

import numpy as np

_COMMON = dict(
    kernel_sizes=(3, 5, 7, 9),
    d2_scales=(2, 2, 3, 4),
    use_pos_emb=(False, True, False, False),
    global_block_counts=(0, 1, 1, 1),
    expand_ratio=4,
)

CONFIGS = {
    "edgenext_tiny_test": dict(depths=(1, 2, 2, 2), dims=(16, 24, 32, 48), heads=(2, 2, 2, 2), **_COMMON),
    "edgenext_xx_small": dict(depths=(2, 2, 6, 2), dims=(24, 48, 88, 168), heads=(4, 4, 4, 4), **_COMMON),
    "edgenext_x_small": dict(depths=(3, 3, 9, 3), dims=(32, 64, 100, 192), heads=(4, 4, 4, 4), **_COMMON),
    "edgenext_small": dict(depths=(3, 3, 9, 3), dims=(48, 96, 160, 304), heads=(8, 8, 8, 8), **_COMMON),
    "edgenext_base": dict(depths=(3, 3, 9, 3), dims=(80, 160, 288, 584), heads=(8, 8, 8, 8), **_COMMON),
}

# Hidden size of the Fourier positional encoding (pos_y and pos_x each use this many channels).
POS_HIDDEN = 32


def sdta_split(dim, scales):
    """Channel split of an SDTA block as timm does it.

    timm: width = ceil(dim / scales); n_convs = max(1, scales - 1); the input is split with
    torch.chunk(n_convs + 1, dim=1), whose pieces have ceil(dim / (n_convs + 1)) channels except
    a shorter last one. Returns (conv_width, chunk_sizes). Raises if the conv width does not match
    the chunks it is applied to (true for every config here; scales == 1 would break in timm too).
    """
    n_convs = max(1, scales - 1)
    width = -(-dim // scales)
    piece = -(-dim // (n_convs + 1))
    sizes = []
    left = dim
    while left > 0:
        sizes.append(min(piece, left))
        left -= piece
    if len(sizes) != n_convs + 1 or any(s != width for s in sizes[:n_convs]):
        raise ValueError(f"SDTA split of {dim} channels in {scales} scales does not work in timm")
    return width, tuple(sizes)


def param_names_and_shapes(cfg):
    """[(name, shape)] of the backbone (no head) in timm's state_dict order."""
    dims, depths = cfg["dims"], cfg["depths"]
    hidden = lambda c: int(cfg.get("expand_ratio", 4) * c)  # noqa: E731
    out = [("stem.0.weight", (dims[0], 3, 4, 4)), ("stem.0.bias", (dims[0],)),
           ("stem.1.weight", (dims[0],)), ("stem.1.bias", (dims[0],))]

    def mlp_and_gamma(p, c):
        return [(p + "norm.weight", (c,)), (p + "norm.bias", (c,)),
                (p + "mlp.fc1.weight", (hidden(c), c)), (p + "mlp.fc1.bias", (hidden(c),)),
                (p + "mlp.fc2.weight", (c, hidden(c))), (p + "mlp.fc2.bias", (c,))]

    for i in range(4):
        c = dims[i]
        if i > 0:
            out += [(f"stages.{i}.downsample.0.weight", (dims[i - 1],)),
                    (f"stages.{i}.downsample.0.bias", (dims[i - 1],)),
                    (f"stages.{i}.downsample.1.weight", (c, dims[i - 1], 2, 2)),
                    (f"stages.{i}.downsample.1.bias", (c,))]
        k = cfg["kernel_sizes"][i]
        for j in range(depths[i]):
            p = f"stages.{i}.blocks.{j}."
            if j < depths[i] - cfg["global_block_counts"][i]:  # ConvBlock
                out += [(p + "gamma", (c,)), (p + "conv_dw.weight", (c, 1, k, k)), (p + "conv_dw.bias", (c,))]
                out += mlp_and_gamma(p, c)
            else:  # SplitTransposeBlock (SDTA)
                width, _ = sdta_split(c, cfg["d2_scales"][i])
                n_convs = max(1, cfg["d2_scales"][i] - 1)
                out += [(p + "gamma_xca", (c,)), (p + "gamma", (c,))]
                for n in range(n_convs):
                    out += [(p + f"convs.{n}.weight", (width, 1, 3, 3)), (p + f"convs.{n}.bias", (width,))]
                if cfg["use_pos_emb"][i]:
                    out += [(p + "pos_embd.token_projection.weight", (c, 2 * POS_HIDDEN, 1, 1)),
                            (p + "pos_embd.token_projection.bias", (c,))]
                out += [(p + "norm_xca.weight", (c,)), (p + "norm_xca.bias", (c,)),
                        (p + "xca.temperature", (cfg["heads"][i], 1, 1)),
                        (p + "xca.qkv.weight", (3 * c, c)), (p + "xca.qkv.bias", (3 * c,)),
                        (p + "xca.proj.weight", (c, c)), (p + "xca.proj.bias", (c,))]
                out += mlp_and_gamma(p, c)
    return out


def count_params(cfg):
    return int(sum(int(np.prod(s)) for _, s in param_names_and_shapes(cfg)))


def _rng(seed, name):
    return np.random.default_rng(int(seed) + zlib.crc32(name.encode("utf-8")))


def make_weight(name, shape, seed):
    """One tensor by the rule in the module docstring (float32)."""
    shape = tuple(int(s) for s in shape)
    rng = _rng(seed, name)
    if name.endswith("gamma") or name.endswith("gamma_xca"):
        w = rng.uniform(0.2, 0.8, shape)
    elif name.endswith("xca.temperature"):
        w = rng.uniform(0.5, 2.0, shape)
    elif name.endswith(".weight") and len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        w = rng.standard_normal(shape) * np.sqrt(1.0 / fan_in)
    elif name.endswith(".weight") and len(shape) == 1:
        w = rng.uniform(0.7, 1.3, shape)
    elif name.endswith(".bias"):
        w = rng.standard_normal(shape) * 0.05
    else:
        raise ValueError(f"make_weights: no rule for parameter {name!r} of shape {shape}")
    return np.asarray(w, dtype=np.float32)


def make_weights(names_and_shapes, seed):
    """dict name -> float32 array; each tensor depends only on (seed, name, shape)."""
    return {name: make_weight(name, shape, seed) for name, shape in names_and_shapes}


def make_input(shape, seed):
    """float32 N(0, 1) of the given shape from default_rng(seed)."""
    return np.random.default_rng(int(seed)).standard_normal(tuple(shape)).astype(np.float32)


def make_cotangents(shapes, seed):
    """[float32 N(0, 1) arrays]; the i-th comes from default_rng([seed, i])."""
    return [np.random.default_rng([int(seed), i]).standard_normal(tuple(s)).astype(np.float32)
            for i, s in enumerate(shapes)]


# Gradient fixtures of the larger configs keep a full gradient only where it is cheap: every
# parameter of the stem and of stages 0 and 1 (which hold one block of each kind: conv
# encoders, an SDTA block with positional encoding, a downsampling layer) and every tensor of
# at most FULL_GRADIENT_MAX_ELEMENTS elements (norms, biases, gammas, temperatures). For the
# other tensors (the large weights of stages 2 and 3) a fixture stores GRADIENT_SAMPLE_SIZE
# values at fixed positions and the sum of squares of the whole gradient (float64).
FULL_GRADIENT_MAX_ELEMENTS = 2048
GRADIENT_SAMPLE_SIZE = 256
FULL_GRADIENT_PREFIXES = ("stem.", "stages.0.", "stages.1.")


def keeps_full_gradient(config, name, shape):
    """True when the fixture of `config` stores the whole gradient of parameter `name`."""
    if config == "edgenext_tiny_test":
        return True
    size = int(np.prod(shape))
    return size <= FULL_GRADIENT_MAX_ELEMENTS or name.startswith(FULL_GRADIENT_PREFIXES)


def gradient_sample_positions(name, size):
    """Sorted flat positions (int64) of a parameter's sampled gradient values; depends only on
    (name, size)."""
    rng = np.random.default_rng(zlib.crc32(name.encode("utf-8")))
    return np.sort(rng.choice(int(size), min(int(size), GRADIENT_SAMPLE_SIZE), replace=False)).astype(np.int64)
