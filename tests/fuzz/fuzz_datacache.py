"""atheris harness: a dataset cache entry (codext/_datacache.py) as codext.data.load reads it.

Input: the files of one cache entry, each introduced by a line "@@file NAME" (NAME: a
plain file name; see pack() / unpack()): meta.json and the .npy arrays it names. The
harness writes them into a fresh folder and runs what load() runs on an existing entry:
_datacache.open_entry (meta.json's schema, the arrays' shapes), the report of the files
skipped when it was built (data._report_decode_problems, strict and not) and the
assembly of the Dataset (data._assemble).

Accepted: every group of meta.json is in the Dataset with its own arrays: names, images
[N, S, S, 3] and masks [N, S, S] uint8 agree, masks_full holds one mask per name of the
shape meta.json gives, and every array's descriptor (what a worker process maps) maps to
the same values. Refused: OSError or ValueError (DamagedEntry among them) with a message:
load() treats these as a damaged entry and decodes the dataset again.
"""
import os
import re
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pyharness  # noqa: E402
from pyharness import expect, refused  # noqa: E402

READER = "datacache"
INSTRUMENT = ("codext",)
MARK = re.compile(rb"(?:\A|\n)@@file ([^\n/\\\x00]{1,80})\n")

_m = {}


def pack(files):
    """bytes of an input from {name: bytes}."""
    return b"".join(b"@@file " + name.encode() + b"\n" + data + b"\n" for name, data in files.items())


def unpack(data):
    """{name: bytes} of an input (the last of a repeated name wins; '.' and '..' dropped)."""
    parts = MARK.split(data)
    files = {}
    for k in range(1, len(parts) - 1, 2):
        name = parts[k].decode("utf-8", "replace")
        body = parts[k + 1]
        if body.endswith(b"\n"):
            body = body[:-1]
        if name not in (".", "..") and "\ufffd" not in name:
            files[name] = body
    return files


def setup():
    if _m:
        return
    import numpy as np
    import codext  # noqa: F401
    from codext import _datacache, _shared, data
    _m.update(np=np, cache=_datacache, shared=_shared, data=data, folder=pyharness.scratch_dir(READER))


def one_input(data):
    setup()
    np, cache, dmod, folder = _m["np"], _m["cache"], _m["data"], _m["folder"]
    pyharness.clear_dir(folder)
    for name, body in unpack(bytes(data)).items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(body)
    if not os.path.exists(os.path.join(folder, "meta.json")):
        return
    allowed = (OSError, ValueError)
    try:
        meta, arrays = cache.open_entry(folder)
    except Exception as e:
        return refused(e, allowed, "open_entry")
    img_size = meta["img_size"]
    for strict in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                dmod._report_decode_problems(meta, strict)
            except Exception as e:
                refused(e, (OSError,) if strict else (), "_report_decode_problems")
    dataset = dmod._assemble(meta, arrays, None, img_size, folder, folder, "fuzz")
    splits = {"train": dataset.train, **{f"test:{k}": v for k, v in dataset.tests.items()}}
    for g in meta["groups"]:
        key = "train" if g["split"] == "train" else f"test:{g['name']}"
        expect(key in splits, f"group {g['group']!r} is missing from the Dataset")
        split = splits.pop(key)
        n = len(g["names"])
        expect(split.names == list(g["names"]), f"group {g['group']!r}: the split has other names")
        expect(split.images.shape == (n, img_size, img_size, 3) and split.images.dtype == np.uint8,
               f"group {g['group']!r}: images {split.images.dtype} {split.images.shape} for {n} names")
        expect(split.masks.shape == (n, img_size, img_size) and split.masks.dtype == np.uint8,
               f"group {g['group']!r}: masks {split.masks.dtype} {split.masks.shape} for {n} names")
        if g["masks_full"] is not None:
            expect(len(split.masks_full) == n and all(
                list(m.shape) == list(s) for m, s in zip(split.masks_full, g["masks_full"]["shapes"])),
                f"group {g['group']!r}: masks_full does not hold one mask per name of its shape")
        shared = split.share()
        for kind, arr in (("images", split.images), ("masks", split.masks)):
            mapped = _m["shared"].map_array(shared[kind])
            expect(mapped.shape == arr.shape and np.array_equal(mapped, arr),
                   f"group {g['group']!r}: {kind} mapped by a worker differ from the loaded array")
        if g["masks_full"] is not None:
            again = dmod.Split.from_shared(shared).masks_full
            expect(all(np.array_equal(a, b) for a, b in zip(again, split.masks_full)),
                   f"group {g['group']!r}: masks_full mapped by a worker differ")
    expect(not splits or list(splits) == ["train"] and not len(splits["train"]),
           f"the Dataset has splits meta.json does not list: {sorted(splits)}")


if __name__ == "__main__":
    pyharness.run(sys.modules[__name__])
