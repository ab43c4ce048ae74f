"""Writes the seed corpora of the fuzz harnesses (tests/fuzz/corpus/{json,safetensors}/)
from files the project itself writes: a one-epoch synthetic training run (weights, EMA
weights, training state, history) and the safetensors writer. Real checkpoints are large,
so each becomes a small seed that keeps its real header metadata, its real tensor names
and the smallest of its tensors, rewritten by our writer (valid checksums included); the
headers of those seeds become JSON seeds. The upstream-written reference files of
tests/data/safetensors/ (no checksums, other dtypes) are added as they are.

Run from the repository root with the extension built: python3 tools/make_fuzz_seeds.py
"""
import glob
import json
import os
import shutil
import struct
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import codext  # noqa: E402
from codext import _C  # noqa: E402

CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
REGRESSIONS = os.path.join(ROOT, "tests", "fuzz", "regressions")
SEED_BYTES = 1024  # a seed keeps at most this many data bytes
SEED_TENSORS = 12  # and at most this many tensors


def header_of(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return f.read(n)


def shrink(path, out):
    """Our writer's copy of `path` with its metadata and its smallest tensors."""
    tensors, metadata, _ = _C.safetensors_load(path)
    kept, used = {}, 0
    for name in sorted(tensors, key=lambda n: (tensors[n].size, n)):
        if used + 4 * tensors[name].size > SEED_BYTES or len(kept) == SEED_TENSORS:
            break
        kept[name] = tensors[name]
        used += 4 * tensors[name].size
    _C.safetensors_save(out, list(kept), list(kept.values()), metadata)


def raw_file(path, header, data):
    header = header.encode() + b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + data)


def write_regressions():
    """Silent acceptances found by fuzzing from outside (issue 13), kept as inputs the
    harness must see refused: a safetensors file that opened with them would break the
    harness's coverage or checksum checks. The JSON cases are the number-grammar corners
    a planted bug slipped through; the harness checks every accepted number against the
    grammar."""
    st_dir = os.path.join(REGRESSIONS, "safetensors")
    json_dir = os.path.join(REGRESSIONS, "json")
    for d in (st_dir, json_dir):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    with tempfile.TemporaryDirectory() as tmp:
        ours = os.path.join(tmp, "ours.safetensors")
        _C.safetensors_save(ours, ["a", "b", "c"], [np.arange(6, dtype=np.float32), np.ones((2, 2), np.float32),
                                                   np.float32([0.5, -2.0])], {"k": "v"})
        blob = open(ours, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    padding = n - len(blob[8:8 + n].rstrip(b" "))
    assert padding >= 3, padding
    for k in range(1, padding + 1):  # header length lowered into the padding: data shifted
        with open(os.path.join(st_dir, f"lowered_header_{k}.safetensors"), "wb") as f:
            f.write(struct.pack("<Q", n - k) + blob[8:])
    flipped = bytearray(blob)
    flipped[-3] ^= 0x10  # a bit of tensor c
    with open(os.path.join(st_dir, "checksum_flipped_bit.safetensors"), "wb") as f:
        f.write(bytes(flipped))
    header = json.loads(blob[8:8 + n])
    assert header["a"]["data_offsets"] == [0, 24] and header["b"]["data_offsets"] == [24, 40]
    header["b"]["data_offsets"], header["a"]["data_offsets"] = [0, 16], [16, 40]  # still tiles; wrong bytes
    raw_file(os.path.join(st_dir, "checksum_moved_offsets.safetensors"), json.dumps(header), blob[8 + n:])
    entry = lambda b, e, shape: {"dtype": "F32", "shape": shape, "data_offsets": [b, e]}
    for name, head, data in [
        ("gap_between", {"a": entry(0, 4, [1]), "b": entry(5, 9, [1])}, 9),
        ("gap_at_start", {"a": entry(4, 8, [1])}, 8),
        ("trailing_byte", {"a": entry(0, 4, [1])}, 5),
        ("empty_inside_other", {"a": entry(0, 8, [2]), "e": entry(4, 4, [0])}, 8),
    ]:
        raw_file(os.path.join(st_dir, name + ".safetensors"), json.dumps(head), b"\x3f" * data)
    for i, text in enumerate([b".0", b"[.5]", b"[1.]", b"[01]", b"[-01]", b"[1.e5]", b"[1e]", b"[-]", b"[+1]",
                              b"[0.]", b"[-.0]", b"[1E+]", b"[00]"]):
        with open(os.path.join(json_dir, f"number_{i:02d}.json"), "wb") as f:
            f.write(text)


def main():
    for kind in ("json", "safetensors"):
        shutil.rmtree(os.path.join(CORPUS, kind), ignore_errors=True)
        os.makedirs(os.path.join(CORPUS, kind))
    st_dir, json_dir = os.path.join(CORPUS, "safetensors"), os.path.join(CORPUS, "json")
    with tempfile.TemporaryDirectory() as tmp:
        config = codext.Config(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=2, img_size=32,
                               batch_size=4, epochs=1, stage1_epochs=0, synthetic_train=8, synthetic_test=4,
                               checkpoint_dir=os.path.join(tmp, "run"), amp=False, seed=1)
        codext.train(config, progress=False, log=lambda *a: None)
        written = sorted(glob.glob(os.path.join(tmp, "run", "*")))
        for path in written:
            base = os.path.basename(path)
            if base == "best.safetensors":  # the same layout as last.safetensors
                continue
            if path.endswith(".safetensors"):
                seed = os.path.join(st_dir, "run_" + base)
                shrink(path, seed)
                with open(os.path.join(json_dir, "header_run_" + base + ".json"), "wb") as f:
                    f.write(header_of(seed))
            elif path.endswith(".json"):
                shutil.copy(path, os.path.join(json_dir, "run_" + base))
    rng = np.random.default_rng(0)
    small = {
        "writer_mixed.safetensors": ({"w": rng.standard_normal((3, 4)).astype(np.float32),
                                      "s": np.array(1.5, np.float32), "e": np.zeros((0, 2), np.float32),
                                      "caf\u00e9 \"q\" \\\n": np.ones(2, np.float32)},
                                     {"format": "pt", "u": "\u2713 \U0001F600", "esc": "\"\\\n\t\x01"}),
        "writer_empty.safetensors": ({}, {}),
        "writer_eight_dims.safetensors": ({"x": np.arange(8, dtype=np.float32).reshape(1, 2, 1, 2, 1, 2, 1, 1)}, {}),
    }
    for name, (tensors, metadata) in small.items():
        path = os.path.join(st_dir, name)
        _C.safetensors_save(path, list(tensors), list(tensors.values()), metadata)
        with open(os.path.join(json_dir, "header_" + name + ".json"), "wb") as f:
            f.write(header_of(path))
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "data", "safetensors", "*.safetensors"))):
        if os.path.getsize(path) <= 2 * SEED_BYTES:
            shutil.copy(path, os.path.join(st_dir, "upstream_" + os.path.basename(path)))
        with open(os.path.join(json_dir, "header_upstream_" + os.path.basename(path) + ".json"), "wb") as f:
            f.write(header_of(path))
    grammar = {  # the JSON grammar's corners, one document each
        "numbers": b'[0, -0, 1, -1, 0.5, -0.5e-3, 1E+5, 1e400, 18446744073709551615, 18446744073709551616]',
        "escapes": b'["\\" \\\\ \\/ \\b \\f \\n \\r \\t", "\\u00e9\\u2713\\ud83d\\ude00", "\xc3\xa9\xe2\x9c\x93\xf0\x9f\x98\x80"]',
        "literals": b' {"t": true, "f": false, "n": null, "o": {}, "a": []} \r\n\t',
        "nesting": b"[" * 64 + b"]" * 64,
    }
    for name, text in grammar.items():
        json.loads(text)
        with open(os.path.join(json_dir, "grammar_" + name + ".json"), "wb") as f:
            f.write(text)
    write_regressions()
    for kind in ("json", "safetensors"):
        files = sorted(os.listdir(os.path.join(CORPUS, kind)))
        size = sum(os.path.getsize(os.path.join(CORPUS, kind, f)) for f in files)
        print(f"{kind}: {len(files)} seeds, {size} bytes")


if __name__ == "__main__":
    main()
