"""Decoding dataset folders once and caching the uint8 arrays (used by codext.data.load).

A cache entry is a folder <cache_dir>/<dataset>-<path hash>-<img_size>px-<content key>
holding, per group (the merged training sets, and each test set):
  <group>-images.npy      uint8 [N, S, S, 3]
  <group>-masks.npy       uint8 [N, S, S], 0/255
  <group>-masks_full.npy  uint8, every test mask at its own size, flattened end to end
and meta.json (names, mask shapes and offsets, files skipped and why). The key hashes
the resolved dataset path, every paired file's path, size and mtime, img_size and the
options, so a changed, added or removed file gives a new entry (the stale one is
deleted). An entry is written in a temporary folder and renamed into place when
complete, so an interrupted decode never leaves a half-written entry behind.
"""
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np

from . import _C
from ._shared import SharedBuffer, file_desc, map_array

CACHE_VERSION = 2  # 2: a mask of one level <= 128 everywhere (no 0) reads as it is (codext/_masks.py)
MAX_MASK_SIDE = 65535  # pixels a side of a mask file (csrc/python/data_binding.c's resize limit)


def default_cache_dir():
    """CODEXT_CACHE_DIR, else ~/.cache/codext.

    Not /kaggle/working: Kaggle saves that folder as notebook output, and a COD10K cache
    (full-size test masks included) is gigabytes. ~/.cache is on the local disk there too."""
    env = os.environ.get("CODEXT_CACHE_DIR")
    if env:
        return env
    return os.path.join(os.path.expanduser("~"), ".cache", "codext")


# ---- decoding ------------------------------------------------------------------------

def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("codext.data.load needs Pillow to decode images: pip install pillow") from None
    return Image


_DECODE_ERRORS = (OSError, ValueError, SyntaxError, MemoryError)  # Pillow's documented ones


@contextlib.contextmanager
def _pillow_decoding(path):
    """Pillow's documented decode errors (OSError, ValueError, SyntaxError, its
    DecompressionBombError) pass as they are; anything else it raises on a malformed file
    (a TIFF tag of the wrong type gives a TypeError, found by fuzzing) becomes an OSError
    naming the file, so callers that report unreadable files see it as one."""
    try:
        yield
    except _DECODE_ERRORS:
        raise
    except Exception as e:
        if type(e).__name__ == "DecompressionBombError":
            raise
        name = path if isinstance(path, (str, os.PathLike)) else getattr(path, "name", None)
        label = os.fspath(name) if isinstance(name, (str, os.PathLike)) else "<bytes>"
        raise OSError(f"{label}: Pillow cannot decode it ({type(e).__name__}: {e})") from e


def decode_image(path):
    """uint8 [H, W, 3]: the one decoder for images (the data path and `codext predict`).
    Grayscale, palette, CMYK and 16-bit images are converted to RGB; 16-bit, integer and
    float grey levels become uint8 by codext.data.to_uint8_levels (16-bit keeps its top 8
    bits; float NaN or infinity is an error); an alpha channel is dropped. EXIF
    orientation is ignored (masks are drawn on the stored pixel grid)."""
    from .data import to_uint8_levels
    Image = _pil()
    with _pillow_decoding(path), Image.open(path) as im:
        if im.mode.startswith("I") or im.mode == "F":  # Pillow would clip these at 255
            grey = to_uint8_levels(np.asarray(im), sixteen_bit=im.mode.startswith("I;16"))
            return np.repeat(grey[:, :, None], 3, axis=2)
        if im.mode != "RGB":
            im = im.convert("RGB")
        return np.asarray(im, dtype=np.uint8)


def decode_mask(path):
    """uint8 [H, W] grey levels, by the mask rules of _C.mask_from_levels (csrc/data/mask.c):
    16-bit and integer levels above 255 are foreground above half their maximum; a mask
    holding only 0 and one other value v <= 128 (saved as 0/1 or as palette indices) is
    read as 0/255. A side longer than MAX_MASK_SIDE is refused (ValueError)."""
    Image = _pil()
    with _pillow_decoding(path), Image.open(path) as im:
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            levels = np.asarray(im)  # Pillow would clip these at 255
            # refused rather than read as an empty mask (NaN and negatives would clip to 0)
            if levels.dtype.kind == "f" and not np.all(np.isfinite(levels)):
                raise ValueError(f"the float mask ({im.mode}) holds NaN or infinite values")
            if levels.size and levels.min() < 0:
                raise ValueError(f"the mask ({im.mode}) holds negative values (min {levels.min()})")
        else:
            levels = np.asarray(im if im.mode == "L" else im.convert("L"), dtype=np.uint8)
    if max(levels.shape) > MAX_MASK_SIDE:  # masks_full keeps the mask's size: the C resize's limit
        raise ValueError(f"the mask is {levels.shape[0]}x{levels.shape[1]} pixels; codext reads masks "
                         f"up to {MAX_MASK_SIDE} pixels a side")
    return _C.mask_from_levels(levels)


def mask_size(path):
    Image = _pil()
    with _pillow_decoding(path), Image.open(path) as im:
        w, h = im.size
    return h, w


# ---- progress ------------------------------------------------------------------------

class Progress:
    """tqdm when installed, else a line of text every 10 % (on stderr)."""

    def __init__(self, total, enabled):
        self.total, self.done, self.enabled = total, 0, enabled and total > 0
        self.start = time.time()
        self.bar = None
        self.next_report = 0.1
        if not self.enabled:
            return
        try:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, unit="img", desc="codext.data: decoding")
        except ImportError:
            print(f"codext.data: decoding {total} images (once; later loads read the cache)",
                  file=sys.stderr, flush=True)

    def update(self, n=1):
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
        elif self.done >= self.next_report * self.total or self.done == self.total:
            elapsed = time.time() - self.start
            print(f"codext.data: {self.done}/{self.total} images ({100 * self.done // self.total}%), "
                  f"{elapsed:.1f} s", file=sys.stderr, flush=True)
            while self.next_report * self.total <= self.done:
                self.next_report += 0.1

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ---- storage -------------------------------------------------------------------------

class FileStore:
    """Arrays as .npy files in a folder, written through memory maps."""

    def __init__(self, folder):
        self.folder = folder

    def new(self, name, shape):
        path = os.path.join(self.folder, name + ".npy")
        if int(np.prod(shape)) == 0:
            np.save(path, np.zeros(shape, np.uint8))
            return np.zeros(shape, np.uint8)
        return np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=tuple(shape))

    def flush(self, arr):
        if isinstance(arr, np.memmap):
            arr.flush()

    def drop(self, name):
        os.remove(os.path.join(self.folder, name + ".npy"))


class MemoryStore:
    """Arrays in SharedBuffers (when the cache folder cannot be written)."""

    def __init__(self):
        self.buffers = {}
        self.descs = {}

    def new(self, name, shape):
        buf = SharedBuffer(np.prod(shape, dtype=np.int64), label=f"codext-{name}")
        arr, desc = buf.array(0, np.uint8, shape)
        self.buffers[name] = buf
        self.descs[name] = desc
        return arr

    def flush(self, arr):
        pass

    def drop(self, name):
        self.buffers.pop(name).close()
        del self.descs[name]


def _decode_group(store, group, specs, img_size, keep_full, workers, progress):
    """Decodes the pairs of `specs` (SetSpecs of one group) into the store.
    Returns the group's meta entry and the problems found."""
    pairs = [p for spec in specs for p in spec.pairs]
    n = len(pairs)
    images = store.new(f"{group}-images", (n, img_size, img_size, 3))
    masks = store.new(f"{group}-masks", (n, img_size, img_size))
    unreadable, mismatched = [], []
    ok = np.zeros(n, bool)
    full, shapes, offsets = None, [], []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        if keep_full:
            sizes = list(pool.map(lambda p: _try(mask_size, p[2]), pairs))
            offset = 0
            for (stem, _, mpath), size in zip(pairs, sizes):
                if isinstance(size, Exception):
                    size = (0, 0)  # reported when the mask is decoded below
                shapes.append(list(size))
                offsets.append(offset)
                offset += size[0] * size[1]
            full = store.new(f"{group}-masks_full", (offset,))

        def work(i):
            stem, ipath, mpath = pairs[i]
            try:
                image = decode_image(ipath)
            except Exception as e:  # Pillow raises OSError, ValueError, SyntaxError ...
                return i, (ipath, f"{type(e).__name__}: {e}"), None
            try:
                mask = decode_mask(mpath)
            except Exception as e:
                return i, (mpath, f"{type(e).__name__}: {e}"), None
            _C.resize_image(image, img_size, img_size, out=images[i])
            _C.resize_mask(mask, img_size, img_size, out=masks[i])
            if full is not None:
                h, w = mask.shape
                if [h, w] != shapes[i]:
                    return i, (mpath, f"mask size changed while reading ({shapes[i]} -> {[h, w]})"), None
                view = full[offsets[i]:offsets[i] + h * w].reshape(h, w)
                _C.resize_mask(mask, h, w, out=view)  # same size: the binarisation (> 128 -> 255) alone
            odd = None if image.shape[:2] == mask.shape else (stem, list(image.shape[:2]), list(mask.shape))
            return i, None, odd

        futures = [pool.submit(work, i) for i in range(n)]
        for future in as_completed(futures):
            i, bad, odd = future.result()
            if bad:
                unreadable.append(bad)
            else:
                ok[i] = True
            if odd:
                mismatched.append(odd)
            progress.update()
    keep = np.flatnonzero(ok)
    if len(keep) < n:  # drop the rows of unreadable pairs
        images_kept = store.new(f"{group}-images-kept", (len(keep), img_size, img_size, 3))
        masks_kept = store.new(f"{group}-masks-kept", (len(keep), img_size, img_size))
        for j, i in enumerate(keep):
            images_kept[j] = images[i]
            masks_kept[j] = masks[i]
        del images, masks
        store.drop(f"{group}-images")
        store.drop(f"{group}-masks")
        images, masks = images_kept, masks_kept
        suffix = "-kept"
    else:
        suffix = ""
    for arr in (images, masks, full):
        if arr is not None:
            store.flush(arr)
    entry = {
        "group": group,
        "split": specs[0].split,
        "name": group if specs[0].split == "test" else "train",
        "sets": [s.name for s in specs],
        "names": [pairs[i][0] for i in keep],
        "images": f"{group}-images{suffix}",
        "masks": f"{group}-masks{suffix}",
        "masks_full": None if full is None else {
            "file": f"{group}-masks_full",
            "shapes": [shapes[i] for i in keep],
            "offsets": [offsets[i] for i in keep]},
    }
    return entry, sorted(unreadable), sorted(mismatched)


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception as e:
        return e


def groups_of(sets):
    """[(group name, [SetSpec])]: all training sets merged, each test set alone."""
    groups = []
    train = [s for s in sets if s.split == "train" and s.pairs]
    if train:
        groups.append(("train", train))
    used = set()
    for s in sets:
        if s.split != "test" or not s.pairs:
            continue
        name, k = s.name, 2
        while name in used or name == "train":
            name, k = f"{s.name}-{k}", k + 1
        used.add(name)
        groups.append((name, [s]))
    return groups


def cache_key(root, groups, img_size, include_noncam):
    h = hashlib.sha256()
    h.update(json.dumps({"version": CACHE_VERSION, "root": os.path.realpath(root),
                         "img_size": img_size, "include_noncam": include_noncam}).encode())
    for group, specs in groups:
        h.update(f"[{group}]\n".encode())
        for spec in specs:
            for stem, ipath, mpath in spec.pairs:
                si, sm = os.stat(ipath), os.stat(mpath)
                h.update(f"{stem}\0{ipath}\0{si.st_size}\0{si.st_mtime_ns}\0"
                         f"{mpath}\0{sm.st_size}\0{sm.st_mtime_ns}\n".encode())
    return h.hexdigest()


def entry_prefix(root, img_size):
    base = os.path.basename(os.path.realpath(root)) or "dataset"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", base)[:40]
    path_hash = hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:8]
    return f"{slug}-{path_hash}-{img_size}px-"


class DamagedEntry(ValueError):
    """A cache entry whose meta.json or arrays do not describe each other."""


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


MIN_IMG_SIZE, MAX_IMG_SIZE = 8, 8192  # the sizes codext.data.load accepts


def check_meta(meta, where):
    """DamagedEntry naming `where` and the field unless meta has the layout build() writes."""
    def bad(field, problem):
        raise DamagedEntry(f"{where}: {field}: {problem}")
    if not isinstance(meta, dict):
        bad("meta.json", "not a JSON object")
    for key, kind in (("version", int), ("key", str), ("img_size", int), ("groups", list),
                      ("unreadable", list), ("mismatched", list)):
        if not isinstance(meta.get(key), kind):
            bad(key, f"missing or not {kind.__name__}")
    if not MIN_IMG_SIZE <= meta["img_size"] <= MAX_IMG_SIZE:  # load()'s bounds
        bad("img_size", f"must be in {MIN_IMG_SIZE}..{MAX_IMG_SIZE}, got {meta['img_size']}")
    for i, item in enumerate(meta["unreadable"]):  # [path, reason]
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(v, str) for v in item)):
            bad(f"unreadable[{i}]", f"must be [path, reason], got {item!r}"[:200])
    for i, item in enumerate(meta["mismatched"]):  # [name, image [h, w], mask [h, w]]
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str) and all(
                isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size) for size in item[1:])):
            bad(f"mismatched[{i}]", f"must be [name, [h, w], [h, w]], got {item!r}"[:200])
    seen = set()
    for j, g in enumerate(meta["groups"]):
        at = f"groups[{j}]"
        if not isinstance(g, dict):
            bad(at, "not a JSON object")
        for key in ("group", "split", "name", "images", "masks"):
            if not isinstance(g.get(key), str):
                bad(f"{at}.{key}", "missing or not a string")
        if g["split"] not in ("train", "test"):
            bad(f"{at}.split", f"must be 'train' or 'test', got {g['split']!r}")
        # one array set per group and one Split per train/test name: a repeat would drop one
        split_key = "train" if g["split"] == "train" else "test:" + g["name"]
        if g["group"] in seen or split_key in seen:
            bad(f"{at}", f"a second group {g['group']!r}" if g["group"] in seen else
                "a second training group" if g["split"] == "train" else f"a second test set {g['name']!r}")
        seen |= {g["group"], split_key}
        if not isinstance(g.get("names"), list) or not all(isinstance(n, str) for n in g["names"]):
            bad(f"{at}.names", "missing or not a list of strings")
        full = g.get("masks_full", "absent")
        if full is None:
            continue
        if not isinstance(full, dict) or not isinstance(full.get("file"), str) or \
                not isinstance(full.get("shapes"), list) or not isinstance(full.get("offsets"), list):
            bad(f"{at}.masks_full", "must be null or {file, shapes, offsets}")
        if len(full["shapes"]) != len(g["names"]) or len(full["offsets"]) != len(g["names"]):
            bad(f"{at}.masks_full", f"{len(full['shapes'])} shapes and {len(full['offsets'])} "
                                    f"offsets for {len(g['names'])} names")
        for i, (shape, off) in enumerate(zip(full["shapes"], full["offsets"])):
            if not (isinstance(shape, list) and len(shape) == 2 and all(_is_int(v) and v > 0 for v in shape)
                    and _is_int(off) and off >= 0):
                bad(f"{at}.masks_full.shapes[{i}]", f"must be [h, w] > 0 with an offset >= 0, got "
                                                    f"{shape!r} at {off!r}")


def check_arrays(g, images, masks, flat, img_size, where):
    """DamagedEntry unless a group's arrays have the shapes its meta entry says."""
    n = len(g["names"])
    if images.dtype != np.uint8 or images.shape != (n, img_size, img_size, 3):
        raise DamagedEntry(f"{where}: {g['images']}.npy is {images.dtype} {images.shape}, meta.json "
                           f"says {n} names of {img_size}x{img_size} RGB")
    if masks.dtype != np.uint8 or masks.shape != (n, img_size, img_size):
        raise DamagedEntry(f"{where}: {g['masks']}.npy is {masks.dtype} {masks.shape}, meta.json "
                           f"says {n} names of {img_size}x{img_size}")
    if g["masks_full"] is None:
        return
    if flat is None or flat.dtype != np.uint8 or flat.ndim != 1:
        raise DamagedEntry(f"{where}: {g['masks_full']['file']}.npy is not a flat uint8 array")
    end = 0  # rows lie in order, apart (rows of dropped pairs leave gaps)
    for i, ((h, w), off) in enumerate(zip(g["masks_full"]["shapes"], g["masks_full"]["offsets"])):
        if off < end or off + h * w > len(flat):
            raise DamagedEntry(f"{where}: masks_full.shapes[{i}] {[h, w]} at offset {off} overlaps "
                               f"the previous mask or runs past the {len(flat)} bytes of "
                               f"{g['masks_full']['file']}.npy")
        end = off + h * w


def _load_npy(path, where):
    """np.load(path, mmap_mode="r"); DamagedEntry naming the file when it is not a readable
    .npy array (a damaged header raises ValueError, SyntaxError or tokenize's TokenError)."""
    try:
        return np.load(path, mmap_mode="r")
    except MemoryError:
        raise
    except Exception as e:
        raise DamagedEntry(f"{where}: {os.path.basename(path)}: not a readable .npy array "
                           f"({type(e).__name__}: {e})") from None


def open_entry(folder):
    """(meta, {group: (descriptors, masks_full flat or None)}) of a complete entry; DamagedEntry
    (a ValueError) naming the entry and the field when meta.json and the arrays disagree."""
    where = os.path.join(folder, "meta.json")
    with open(where) as f:
        meta = json.load(f)
    check_meta(meta, where)
    arrays = {}
    for g in meta["groups"]:
        descs = {}
        loaded = {}
        for kind in ("images", "masks"):
            path = os.path.join(folder, g[kind] + ".npy")
            arr = loaded[kind] = _load_npy(path, where)
            descs[kind] = file_desc(arr, path) if isinstance(arr, np.memmap) else None
        full = None
        if g["masks_full"]:
            path = os.path.join(folder, g["masks_full"]["file"] + ".npy")
            flat = _load_npy(path, where)
            descs["masks_full"] = file_desc(flat, path) if isinstance(flat, np.memmap) else None
            full = flat
        check_arrays(g, loaded["images"], loaded["masks"], full, meta["img_size"], where)
        arrays[g["group"]] = descs, full
    return meta, arrays


def build(root, groups, img_size, key, cache_dir, workers, progress):
    """Decodes every group into a new cache entry (or into shared memory when the cache
    folder cannot be written). Returns (meta, MemoryStore or None, entry folder or None)."""
    prefix = entry_prefix(root, img_size)
    entry = os.path.join(cache_dir, prefix + key[:16])
    tmp = None
    try:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-" + prefix, dir=cache_dir)
        os.chmod(tmp, 0o755)
        store = FileStore(tmp)
    except OSError as e:
        warnings.warn(f"codext.data: the cache folder {cache_dir!r} cannot be written ({e}); "
                      f"decoding into memory instead (pass cache_dir= or set CODEXT_CACHE_DIR "
                      f"to a writable folder to decode only once)", stacklevel=3)
        store = MemoryStore()
    total = sum(len(s.pairs) for _, specs in groups for s in specs)
    bar = Progress(total, progress)
    meta = {"version": CACHE_VERSION, "key": key, "source": os.path.realpath(root),
            "img_size": img_size, "groups": [], "unreadable": [], "mismatched": []}
    try:
        for group, specs in groups:
            g, unreadable, mismatched = _decode_group(
                store, group, specs, img_size, specs[0].split == "test", workers, bar)
            meta["groups"].append(g)
            meta["unreadable"] += unreadable
            meta["mismatched"] += mismatched
    except BaseException:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    if isinstance(store, MemoryStore):
        return meta, store, None
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f)
        f.flush()
        os.fsync(f.fileno())
    if os.path.exists(entry):  # a damaged entry (we hold the lock, nobody is writing it)
        shutil.rmtree(entry, ignore_errors=True)
    try:
        os.rename(tmp, entry)
    except OSError:  # another process finished the same entry first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    for name in os.listdir(cache_dir):  # stale entries of the same dataset and size
        if name.startswith(prefix) and os.path.join(cache_dir, name) != entry:
            shutil.rmtree(os.path.join(cache_dir, name), ignore_errors=True)
    return meta, None, entry


def memory_arrays(meta, store):
    """{group: (descriptors, masks_full flat array)} of a MemoryStore build."""
    out = {}
    for g in meta["groups"]:
        descs = {k: store.descs[g[k]] for k in ("images", "masks")}
        full = None
        if g["masks_full"]:
            descs["masks_full"] = store.descs[g["masks_full"]["file"]]
            full = map_array(descs["masks_full"])
        out[g["group"]] = descs, full
    return out


@contextlib.contextmanager
def _entry_lock(cache_dir, prefix):
    """Exclusive lock per dataset and size, so ranks that load at the same time (torchrun)
    decode once: the others wait, then read the cache. No lock where none can be taken."""
    fd = None
    try:
        import fcntl
        os.makedirs(cache_dir, exist_ok=True)
        fd = os.open(os.path.join(cache_dir, "." + prefix + "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except (ImportError, OSError):
        if fd is not None:
            os.close(fd)
        fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _try_open(entry, key, img_size, warn=True):
    if not os.path.exists(os.path.join(entry, "meta.json")):
        return None
    try:
        meta, arrays = open_entry(entry)
    except (OSError, ValueError, KeyError, TypeError) as e:  # damaged entry: decode again
        if warn:
            warnings.warn(f"codext.data: the cache entry {entry} is damaged ({e}); decoding the "
                          f"dataset again", stacklevel=4)
        return None
    if meta["key"] != key:
        return None
    if meta["img_size"] != img_size:  # the key covers img_size: only an edited meta.json differs
        if warn:
            warnings.warn(f"codext.data: the cache entry {entry} holds {meta['img_size']}px arrays, "
                          f"not {img_size}px; decoding the dataset again", stacklevel=4)
        return None
    return meta, arrays


def get_or_build(root, groups, img_size, key, cache_dir, workers, progress):
    """(meta, {group: (descriptors, masks_full flat)}, MemoryStore or None, entry or None)."""
    prefix = entry_prefix(root, img_size)
    entry = os.path.join(cache_dir, prefix + key[:16])
    found = _try_open(entry, key, img_size)
    if found:
        return found[0], found[1], None, entry
    with _entry_lock(cache_dir, prefix):
        found = _try_open(entry, key, img_size, warn=False)  # another process may have built it meanwhile
        if found:
            return found[0], found[1], None, entry
        meta, store, entry = build(root, groups, img_size, key, cache_dir, workers, progress)
    if store is not None:
        return meta, memory_arrays(meta, store), store, None
    return meta, open_entry(entry)[1], None, entry
