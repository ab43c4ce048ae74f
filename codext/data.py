"""Datasets as uint8 NumPy arrays, augmentation in C, and the built-in camouflage set.

    >>> import codext
    >>> data = codext.data.synthetic(n_train=8, n_test=4, img_size=64, seed=0)
    >>> data.train.images.shape, data.train.masks.shape, data.test.images.dtype
    ((8, 64, 64, 3), (8, 64, 64), dtype('uint8'))
    >>> x, y = data.train.batch([0, 5, 2], seed=0, epoch=1)
    >>> x.shape, y.shape
    ((3, 3, 64, 64), (3, 1, 64, 64))

Three ways to get a Dataset (each with .train, .test and .tests):

- load(path, img_size=352): a COD dataset folder. The layouts recognised are listed in
  codext._layouts (COD10K-v3, CAMO-V.1.0-CVIU2019, NC4K, CHAMELEON, SINet-V2's
  TrainDataset/TestDataset, and collections of these). Images are decoded once with
  Pillow in a thread pool, resized with codext's own C resize (bilinear, PyTorch's
  align_corners=False convention, rounded to nearest; masks nearest then > 128 -> 255)
  and cached as .npy files in a writable cache folder: cache_dir, else
  $CODEXT_CACHE_DIR, else ~/.cache/codext (never beside the input, which is read-only
  on Kaggle; not /kaggle/working either, which Kaggle saves as notebook output). Later loads map the cache;
  changing, adding or removing a source file invalidates it.
- from_arrays(images, masks, test_images, test_masks): your own arrays.
- synthetic(n_train, n_test, img_size, seed): procedural camouflage images made in C.

Arrays: images uint8 [N, H, W, 3], masks uint8 [N, H, W] holding 0 and 255, names a list
of str; test splits also have masks_full, each test mask at its original size (metrics
are computed at GT resolution, as the COD benchmark does).

Sharing with worker processes (no copy per process). Loaded datasets live in the cache
files, memory-mapped read-only: every process on the host shares the page cache, the
files survive kernel restarts, and nothing counts against /dev/shm (64 MB in Docker and
on Kaggle, where shm_open beyond it dies with SIGBUS). Arrays without a file
(from_arrays, synthetic) are placed in an anonymous memfd (reserved with
posix_fallocate, so a shortage raises here rather than SIGBUS later), which a worker
receives with subprocess.Popen(pass_fds=dataset.fds()). Dataset.share() returns a
picklable description (paths or fds, offsets, dtypes, shapes, names) and
Dataset.from_shared(description) maps the same bytes in the worker.

Bad input: a missing or unrecognised folder raises DatasetLayoutError (a
FileNotFoundError) naming the layouts tried and what the folder holds. Images without
masks and masks without images are listed in a warning and skipped, or raise ValueError
when strict=True; so are unreadable or truncated files (OSError when strict). A mask of
another size than its image is accepted with a warning: image and mask are each resized
to img_size, and masks_full keeps the mask's own size. Grayscale, palette and RGBA
images are converted to RGB (alpha dropped); masks stored as 0/1 or palette indices are
read as 0/255 (the one mask rule of codext/_masks.py, also that of from_arrays and
codext.metrics.evaluate).
"""
import os
import warnings

import numpy as np

from . import _C
from . import _datacache, _layouts, _masks, _shared
from ._layouts import DatasetLayoutError  # noqa: F401  (part of the API)

__all__ = ["Dataset", "Split", "DatasetLayoutError", "load", "from_arrays", "synthetic",
           "augment_batch", "resize_image", "resize_mask", "resize_probs", "as_rgb_uint8",
           "to_uint8_levels",
           "default_cache_dir"]

default_cache_dir = _datacache.default_cache_dir
AUGMENT_RANGES = ("flip_prob", "scale_min", "scale_max", "rotate_deg", "brightness",
                  "contrast", "saturation")


# ---- splits and datasets ----------------------------------------------------------------

class Split:
    """One split: images uint8 [N, H, W, 3], masks uint8 [N, H, W] (0/255), names, and for
    test splits masks_full (list of uint8 [h_i, w_i] at the original size)."""

    def __init__(self, images, masks, names, masks_full=None, name="train", _sources=None,
                 _backing=None):
        self.images = images
        self.masks = masks
        self.names = list(names)
        self.masks_full = masks_full
        self.name = name
        self._sources = _sources  # descriptors for workers, or None until shared
        self._backing = _backing or []  # SharedBuffers to keep alive

    def __len__(self):
        return len(self.names)

    def __repr__(self):
        h, w = self.images.shape[1:3]
        return f"Split({self.name!r}, {len(self)} images of {h}x{w})"

    def batch(self, indices, seed=0, epoch=0, train=True, **ranges):
        """float32 (x [B, 3, H, W], y [B, 1, H, W]) for dataset rows `indices`; see
        augment_batch."""
        return augment_batch(self.images, self.masks, indices, seed, epoch, train, **ranges)

    # -- sharing --
    def share(self):
        """What a worker process needs to map these arrays: a picklable dict of
        descriptors ({"path" or "fd", "offset", "dtype", "shape"}), names and mask shapes.
        Arrays without a file are moved into a memfd on the first call."""
        if self._sources is None:
            self._move_to_shared_memory()
        return {"name": self.name, "names": list(self.names), **self._sources}

    def fds(self):
        """File descriptors a worker must inherit (subprocess pass_fds) to map this split."""
        return sorted(_fds_in(self.share()))

    @classmethod
    def from_shared(cls, info):
        """Maps (read-only) the arrays described by Split.share() in another process."""
        images = _shared.map_array(info["images"])
        masks = _shared.map_array(info["masks"])
        masks_full = None
        if info.get("masks_full"):
            flat = _shared.map_array(info["masks_full"]["buffer"])
            masks_full = _ragged(flat, info["masks_full"]["shapes"], info["masks_full"]["offsets"])
        sources = {k: info[k] for k in ("images", "masks", "masks_full")}
        return cls(images, masks, info["names"], masks_full, info["name"], _sources=sources)

    def _move_to_shared_memory(self):
        n, h, w = self.masks.shape
        image_bytes = _shared.nbytes_of(np.uint8, self.images.shape)
        mask_offset = _shared.align(image_bytes)
        total = mask_offset + _shared.nbytes_of(np.uint8, self.masks.shape)
        buf = _shared.SharedBuffer(total, label=f"codext-{self.name}")
        images, images_desc = buf.array(0, np.uint8, self.images.shape)
        masks, masks_desc = buf.array(mask_offset, np.uint8, self.masks.shape)
        images[...] = self.images
        masks[...] = self.masks
        full_desc = None
        if self.masks_full is not None:
            if _is_view_of_masks(self.masks_full, self.masks):
                flat_desc = dict(masks_desc, shape=[n * h * w])
                shapes, offsets = [[h, w]] * n, [i * h * w for i in range(n)]
                self.masks_full = _ragged(masks.reshape(-1), shapes, offsets)
            else:
                shapes = [list(m.shape) for m in self.masks_full]
                offsets = list(np.cumsum([0] + [a * b for a, b in shapes])[:-1].tolist())
                size = sum(a * b for a, b in shapes)
                fbuf = _shared.SharedBuffer(size, label=f"codext-{self.name}-full")
                flat, flat_desc = fbuf.array(0, np.uint8, (size,))
                for m, (a, b), o in zip(self.masks_full, shapes, offsets):
                    flat[o:o + a * b] = np.asarray(m).reshape(-1)
                self.masks_full = _ragged(flat, shapes, offsets)
                self._backing.append(fbuf)
            full_desc = {"buffer": flat_desc, "shapes": shapes, "offsets": offsets}
        self.images, self.masks = images, masks
        self._backing.append(buf)
        self._sources = {"images": images_desc, "masks": masks_desc, "masks_full": full_desc}


def _ragged(flat, shapes, offsets):
    return [flat[o:o + a * b].reshape(a, b) for (a, b), o in zip(shapes, offsets)]


def _is_view_of_masks(masks_full, masks):
    return len(masks_full) == len(masks) and all(
        m.shape == masks.shape[1:] and np.shares_memory(m, masks) for m in masks_full)


def _fds_in(obj):
    if isinstance(obj, dict):
        found = set()
        if obj.get("fd") is not None:
            found.add(int(obj["fd"]))
        for v in obj.values():
            if isinstance(v, (dict, list)):
                found |= _fds_in(v)
        return found
    if isinstance(obj, list):
        return set().union(*(_fds_in(v) for v in obj)) if obj else set()
    return set()


def _empty_split(name, size):
    h, w = size if isinstance(size, tuple) else (size, size)

    def desc(shape):  # nothing to map: workers make the empty array themselves
        return {"path": None, "fd": None, "offset": 0, "dtype": "|u1", "shape": list(shape)}
    sources = {"images": desc((0, h, w, 3)), "masks": desc((0, h, w)),
               "masks_full": {"buffer": desc((0,)), "shapes": [], "offsets": []}}
    return Split(np.zeros((0, h, w, 3), np.uint8), np.zeros((0, h, w), np.uint8), [], [], name,
                 _sources=sources)


class Dataset:
    """A training split and one or more test sets.

    train: Split; tests: {set name: Split}; test: the primary test set (COD10K when
    present, else CAMO, NC4K, CHAMELEON, else the first); img_size; source (the folder,
    "synthetic" or "arrays"); cache_path (the cache entry, or None).
    """

    def __init__(self, train, tests, img_size, source, cache_path=None, layout=None):
        self.train = train
        self.tests = dict(tests)
        self.img_size = img_size
        self.source = source
        self.cache_path = cache_path
        self.layout = layout

    @property
    def test(self):
        for name in _layouts.KNOWN_SETS:
            if name in self.tests:
                return self.tests[name]
        if self.tests:
            return next(iter(self.tests.values()))
        return _empty_split("test", self.img_size)

    def __repr__(self):
        tests = ", ".join(f"{k}: {len(v)}" for k, v in self.tests.items()) or "none"
        return (f"Dataset(source={self.source!r}, img_size={self.img_size}, train={len(self.train)} "
                f"images, test sets {{{tests}}}, cache={self.cache_path!r})")

    def share(self):
        """Picklable description for worker processes (see Split.share)."""
        return {"train": self.train.share(), "tests": {k: v.share() for k, v in self.tests.items()},
                "img_size": self.img_size, "source": self.source, "cache_path": self.cache_path,
                "layout": self.layout}

    def fds(self):
        """File descriptors a worker must inherit: subprocess.Popen(..., pass_fds=data.fds())."""
        return sorted(_fds_in(self.share()))

    @classmethod
    def from_shared(cls, info):
        img_size = info["img_size"]
        return cls(Split.from_shared(info["train"]),
                   {k: Split.from_shared(v) for k, v in info["tests"].items()},
                   tuple(img_size) if isinstance(img_size, list) else img_size,
                   info["source"], info.get("cache_path"), info.get("layout"))


# ---- from user arrays ----------------------------------------------------------------------

def _check_images(images, what):
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{what} must be a numpy array of shape [N, H, W, 3], got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise TypeError(f"{what} must have dtype uint8 (0..255), got {images.dtype}; "
                        f"for floats in [0, 1] use (x * 255).round().astype(np.uint8)")
    if images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"{what} must have shape [N, H, W, 3], got {images.shape}")
    if images.shape[1] < 1 or images.shape[2] < 1:
        raise ValueError(f"{what} has an empty image size: {images.shape}")
    return np.ascontiguousarray(images)


def _check_masks(masks, what, images, images_what):
    if not isinstance(masks, np.ndarray):
        raise TypeError(f"{what} must be a numpy array of shape [N, H, W], got {type(masks).__name__}")
    if masks.dtype != np.bool_ and masks.dtype != np.uint8:
        raise TypeError(f"{what} must be uint8 holding 0/255 (or 0/1) or bool, got {masks.dtype}; "
                        f"for another 0/1 array use ({what} > 0)")
    if masks.ndim != 3:
        raise ValueError(f"{what} must have shape [N, H, W], got {masks.shape}")
    masks = _masks.as_levels(masks)  # 0/1 (0 and one level <= 128) per mask -> 0/255
    if masks.shape != images.shape[:3]:
        raise ValueError(f"{what} shape {masks.shape} does not match {images_what} shape "
                         f"{images.shape} (need [N, H, W] equal)")
    if masks.size and np.any((masks != 0) & (masks != 255)):
        found = np.unique(masks)
        cut = 0 if found.max() <= 128 else 128  # low levels only: > 128 would empty them
        raise ValueError(f"{what} must hold only 0 and 255, or 0 and one level <= 128 such as "
                         f"0/1 (or be bool), found values {found[:8].tolist()}"
                         f"{' ...' if found.size > 8 else ''}; binarise with ({what} > {cut})")
    return np.ascontiguousarray(masks)


def from_arrays(images, masks, test_images=None, test_masks=None):
    """Wraps your arrays into a Dataset.

    images uint8 [N, H, W, 3]; masks uint8 [N, H, W] holding 0/255, or bool (converted to
    0/255); a mask holding only 0 and one level <= 128 (0/1) is binary and becomes 0/255
    (codext/_masks.py: the rule mask files and codext.metrics follow too); test arrays likewise (optional, same H and W). The arrays are used as they
    are (no copy) until the dataset is shared with worker processes, when they are copied
    once into shared memory.
    """
    images = _check_images(images, "images")
    masks = _check_masks(masks, "masks", images, "images")
    n, h, w = masks.shape
    size = h if h == w else (h, w)
    train = Split(images, masks, [f"train-{i:06d}" for i in range(n)], None, "train")
    if (test_images is None) != (test_masks is None):
        raise ValueError("give both test_images and test_masks, or neither")
    tests = {}
    if test_images is not None:
        test_images = _check_images(test_images, "test_images")
        test_masks = _check_masks(test_masks, "test_masks", test_images, "test_images")
        if test_images.shape[1:3] != (h, w):
            raise ValueError(f"test_images are {test_images.shape[1]}x{test_images.shape[2]} but "
                             f"images are {h}x{w}: one image size per dataset")
        m = len(test_masks)
        tests["test"] = Split(test_images, test_masks, [f"test-{i:06d}" for i in range(m)],
                              list(test_masks), "test")
    return Dataset(train, tests, size, "arrays")


# ---- synthetic ---------------------------------------------------------------------------

def synthetic_bytes(n_train, n_test, img_size):
    """Bytes of shared memory synthetic(n_train, n_test, img_size) commits."""
    return sum(_shared.align(n * img_size * img_size * 3) + n * img_size * img_size
               for n in (n_train, n_test))


def _check_img_size(img_size):
    """The sizes load() and synthetic() make (and a dataset cache may hold)."""
    if not _datacache.MIN_IMG_SIZE <= img_size <= _datacache.MAX_IMG_SIZE:
        raise ValueError(f"img_size must be in {_datacache.MIN_IMG_SIZE}..{_datacache.MAX_IMG_SIZE}, "
                         f"got {img_size}")


def synthetic(n_train=512, n_test=128, img_size=352, seed=0):
    """The built-in camouflage set, made in C (about 4 ms per 352x352 image per core).

    Each image has a procedural textured background and 1-3 smooth blob objects wearing
    nearly the same texture (turned, rescaled, slightly recoloured), with exact 0/255
    masks; objects cover about 6-30 % of the image. The test split is test set
    "synthetic" (data.test), with masks_full = its masks. Deterministic: the same
    (seed, split, index) always gives the same image, whatever n_train and n_test.
    A set larger than the memory available (MemAvailable, the cgroup limit) is refused
    with MemoryError before any is committed.
    """
    n_train, n_test, img_size, seed = int(n_train), int(n_test), int(img_size), int(seed)
    if n_train < 0 or n_test < 0:
        raise ValueError(f"n_train and n_test must be >= 0, got {n_train}, {n_test}")
    _check_img_size(img_size)
    _shared.check_memory(synthetic_bytes(n_train, n_test, img_size),
                         f"synthetic(n_train={n_train}, n_test={n_test}, img_size={img_size})")
    splits = []
    for stream, (name, n) in enumerate((("train", n_train), ("test", n_test))):
        image_bytes = n * img_size * img_size * 3
        mask_offset = _shared.align(image_bytes)
        buf = _shared.SharedBuffer(mask_offset + n * img_size * img_size, label=f"codext-synthetic-{name}")
        images, images_desc = buf.array(0, np.uint8, (n, img_size, img_size, 3))
        masks, masks_desc = buf.array(mask_offset, np.uint8, (n, img_size, img_size))
        if n:
            _C.synthetic(n, img_size, seed & (2**64 - 1), stream, 0, images, masks)
        names = [f"synthetic-{name}-{i:06d}" for i in range(n)]
        full = full_desc = None
        if name == "test":
            shapes, offsets = [[img_size, img_size]] * n, [i * img_size * img_size for i in range(n)]
            full = _ragged(masks.reshape(-1), shapes, offsets)
            full_desc = {"buffer": dict(masks_desc, shape=[n * img_size * img_size]),
                         "shapes": shapes, "offsets": offsets}
        sources = {"images": images_desc, "masks": masks_desc, "masks_full": full_desc}
        splits.append(Split(images, masks, names, full, name, _sources=sources, _backing=[buf]))
    return Dataset(splits[0], {"synthetic": splits[1]}, img_size, "synthetic")


# ---- augmentation and resizing -----------------------------------------------------------

def _check_config_source(config):
    """The pre-flight check of what for_config will load: Config.dataset_path, when set,
    must be a folder (FileNotFoundError / NotADirectoryError naming the field and the
    path), before a run touches its checkpoint folder."""
    path = config.dataset_path
    if path is None:
        return
    if not os.path.exists(path):
        parent = os.path.dirname(os.path.abspath(path))
        hint = f"; {parent} holds: {_layouts.describe(parent)}" if os.path.isdir(parent) else ""
        raise FileNotFoundError(f"Config.dataset_path {path!r}: no such dataset folder{hint}")
    if not os.path.isdir(path):
        raise NotADirectoryError(f"Config.dataset_path {path!r} is a file, not a dataset folder "
                                 f"(unpack archives first)")


def for_config(config, log=None):
    """The dataset a run trains on when its caller passes none: Config.dataset_path loaded
    at Config.img_size (decoded once into the dataset cache), else the built-in synthetic
    set of Config.synthetic_train / synthetic_test images (memory checked first, the
    error naming those fields). log: where "data: ..." is said (None: nowhere)."""
    if config.dataset_path is not None:
        _check_config_source(config)
        data = load(config.dataset_path, img_size=config.img_size,
                    workers=max(1, config.num_workers))
        if log is not None:
            log(f"data: {data}")
        return data
    _shared.check_memory(synthetic_bytes(config.synthetic_train, config.synthetic_test,
                                         config.img_size),
                         f"Config.synthetic_train {config.synthetic_train} and "
                         f"Config.synthetic_test {config.synthetic_test} at img_size "
                         f"{config.img_size}")
    return synthetic(config.synthetic_train, config.synthetic_test, config.img_size, config.seed)


def augment_batch(images, masks, indices, seed=0, epoch=0, train=True, **ranges):
    """A float32 batch from dataset rows `indices`, augmented in C.

    images uint8 [N, H, W, 3], masks uint8 [N, H, W] (0/255) or None, indices int [B].
    Returns x float32 [B, 3, H, W] (ImageNet mean/std normalised) and y float32
    [B, 1, H, W] in {0, 1} (None without masks). With train=True each sample gets a
    horizontal flip (p 0.5), a scale in [0.75, 1.25] then a random crop or pad back to
    H x W, a rotation within +-15 degrees (bilinear image, nearest mask; uncovered pixels
    are the mean colour in x and background in y), and brightness, contrast and
    saturation jitter of +-0.2. The transform is keyed by (seed, epoch, index), so it does
    not depend on the batch it is in, the rank or the thread count. Keyword overrides:
    flip_prob, scale_min, scale_max, rotate_deg, brightness, contrast, saturation.
    """
    unknown = set(ranges) - set(AUGMENT_RANGES)
    if unknown:
        raise TypeError(f"unknown augmentation setting(s) {sorted(unknown)}; known: {list(AUGMENT_RANGES)}")
    idx = np.asarray(indices)
    if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
        raise TypeError(f"indices must be a 1-D array of integers, got dtype {idx.dtype} shape {idx.shape}")
    if int(seed) < 0 or int(epoch) < 0:
        raise ValueError(f"seed and epoch must be >= 0, got {seed}, {epoch}")
    return _C.augment_batch(images, masks, idx.astype(np.int64), int(seed), int(epoch), bool(train),
                            **{k: float(v) for k, v in ranges.items()})


def _size_pair(size):
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def resize_image(image, size):
    """uint8 image(s) [H, W, C] or [N, H, W, C] to `size` (int or (h, w)) with codext's
    bilinear resize (the one used for training and caching)."""
    h, w = _size_pair(size)
    return _C.resize_image(image, h, w)


def resize_mask(mask, size):
    """uint8 mask(s) [H, W] or [N, H, W] to `size`: nearest, then > 128 -> 255, else 0."""
    h, w = _size_pair(size)
    return _C.resize_mask(mask, h, w)


def resize_probs(probs, size):
    """float maps [..., H, W] to `size` with the same bilinear convention (float32 out)."""
    h, w = _size_pair(size)
    return _C.resize_float(np.asarray(probs), h, w)


def to_uint8_levels(values, sixteen_bit=False):
    """The one rule codext turns image values into uint8 levels 0..255 by (user arrays,
    decoded files, written probability maps), any shape:

    - uint8: as is; bool: 0/255;
    - floats: taken as 0..1 when their maximum is <= 1 (scaled by 255), else as 0..255;
      rounded to nearest, clipped; NaN or infinity is an error (ValueError);
    - other integers: 16-bit data (sixteen_bit, e.g. a 16-bit file, or any level above
      255) keeps its top 8 bits (levels clipped to 0..65535, then >> 8); else clipped to
      0..255."""
    arr = np.asarray(values)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)
    if arr.dtype.kind == "f":
        finite = arr[np.isfinite(arr)]
        if finite.size != arr.size:
            raise ValueError("image holds NaN or infinite values")
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        return np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"image must hold numbers, got dtype {arr.dtype}")
    if sixteen_bit or (arr.size and arr.max() > 255):
        return (np.clip(arr, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


def as_rgb_uint8(image):
    """One image as uint8 [H, W, 3]: grayscale [H, W] or [H, W, 1] is repeated, an alpha
    channel dropped; values become uint8 levels by to_uint8_levels (bool 0/255, floats
    0..1 or 0..255, 16-bit levels their top 8 bits)."""
    arr = to_uint8_levels(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


# ---- loading folders -----------------------------------------------------------------------

def _list(paths, limit=20):
    paths = list(paths)
    shown = "".join(f"\n  {p}" for p in paths[:limit])
    return shown + (f"\n  ... and {len(paths) - limit} more" if len(paths) > limit else "")


def _default_workers():
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 2
    return min(16, cpus + 4)


def load(path, img_size=352, cache_dir=None, strict=False, include_noncam=False, workers=None,
         progress=True, test_sets=None):
    """Loads a COD dataset folder (see codext._layouts for the layouts) as a Dataset.

    img_size: images and masks are resized to img_size x img_size. cache_dir: where the
    decoded arrays go (default: see default_cache_dir()). strict: raise instead of
    skipping unpaired or unreadable files. include_noncam: keep COD10K's NonCAM images.
    workers: decoding threads. progress: show a progress bar while decoding. test_sets:
    names of the test sets to keep (default all found, e.g. ["COD10K", "CAMO"]).

        data = codext.data.load("/kaggle/input/cod10k/COD10K-v3", img_size=352)
    """
    root = os.fspath(path)
    if not os.path.exists(root):
        parent = os.path.dirname(os.path.abspath(root))
        hint = f"; {parent} holds: {_layouts.describe(parent)}" if os.path.isdir(parent) else ""
        raise FileNotFoundError(f"dataset folder {root!r} does not exist{hint}")
    if not os.path.isdir(root):
        raise NotADirectoryError(f"{root!r} is a file, not a dataset folder (unpack archives first)")
    img_size = int(img_size)
    _check_img_size(img_size)
    layout = _layouts.scan(root, include_noncam)
    sets = layout.sets
    if test_sets is not None:
        wanted = {str(s) for s in test_sets}
        found = sorted({s.name for s in sets if s.split == "test"})
        missing = wanted - set(found)
        if missing:
            raise ValueError(f"test_sets {sorted(missing)} not found in {root!r}; test sets found: {found}")
        sets = [s for s in sets if s.split == "train" or s.name in wanted]
    _report_unpaired(sets, strict)
    for s in sets:
        if s.duplicates:
            warnings.warn(f"codext.data: files sharing a stem with another in {s.folder}; "
                          f"ignored:{_list(s.duplicates)}", stacklevel=2)
    empty = [s for s in sets if not s.pairs]
    if empty and len(empty) == len(sets):
        dropped = sum(s.dropped_noncam for s in sets)
        note = (f" ({dropped} COD10K-NonCAM images were dropped; include_noncam=True keeps them)"
                if dropped else "")
        raise ValueError(f"found the {layout.kind} layout at {root!r} but no image/mask pairs in: "
                         + "; ".join(f"{s.folder} ({s.split} set {s.name!r})" for s in empty) + note)
    for s in empty:
        warnings.warn(f"codext.data: the {s.split} set {s.name!r} in {s.folder} is empty", stacklevel=2)
    groups = _datacache.groups_of(sets)
    key = _datacache.cache_key(root, groups, img_size, include_noncam)
    cache_dir = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir()
    meta, arrays, store, entry = _datacache.get_or_build(
        root, groups, img_size, key, cache_dir, workers or _default_workers(), progress)
    _report_decode_problems(meta, strict)
    return _assemble(meta, arrays, store, img_size, root, entry, layout.kind)


def _report_unpaired(sets, strict):
    lonely_images = [p for s in sets for p in s.images_without_masks]
    lonely_masks = [p for s in sets for p in s.masks_without_images]
    if not lonely_images and not lonely_masks:
        return
    text = ""
    if lonely_images:
        text += f"\n{len(lonely_images)} image(s) without a mask:{_list(lonely_images)}"
    if lonely_masks:
        text += f"\n{len(lonely_masks)} mask(s) without an image:{_list(lonely_masks)}"
    if strict:
        raise ValueError("codext.data.load(strict=True): unpaired files" + text)
    warnings.warn("codext.data: skipping unpaired files (strict=True raises instead)" + text, stacklevel=3)


def _report_decode_problems(meta, strict):
    if meta["unreadable"]:
        text = _list(f"{p}: {err}" for p, err in meta["unreadable"])
        if strict:
            raise OSError(f"codext.data.load(strict=True): {len(meta['unreadable'])} unreadable "
                          f"file(s):{text}")
        warnings.warn(f"codext.data: skipped {len(meta['unreadable'])} pair(s) with an unreadable "
                      f"file:{text}", stacklevel=3)
    if meta["mismatched"]:
        text = _list(f"{name}: image {tuple(a)}, mask {tuple(b)}" for name, a, b in meta["mismatched"])
        warnings.warn(f"codext.data: {len(meta['mismatched'])} mask(s) differ in size from their "
                      f"image; each was resized to the image size on its own (masks_full keeps "
                      f"the mask's size):{text}", stacklevel=3)


def _assemble(meta, arrays, store, img_size, root, entry, kind):
    train, tests = _empty_split("train", img_size), {}
    for g in meta["groups"]:
        descs, flat = arrays[g["group"]]
        images = _shared.map_array(descs["images"])
        masks = _shared.map_array(descs["masks"])
        full, full_desc = None, None
        if g["masks_full"]:
            full = _ragged(flat, g["masks_full"]["shapes"], g["masks_full"]["offsets"])
            full_desc = {"buffer": descs["masks_full"], "shapes": g["masks_full"]["shapes"],
                         "offsets": g["masks_full"]["offsets"]}
        backing = list(store.buffers.values()) if store else None
        split = Split(images, masks, g["names"], full, g["name"],
                      _sources={"images": descs["images"], "masks": descs["masks"], "masks_full": full_desc},
                      _backing=backing)
        if g["split"] == "train":
            train = split
        else:
            tests[g["name"]] = split
    return Dataset(train, tests, img_size, root, entry, kind)
