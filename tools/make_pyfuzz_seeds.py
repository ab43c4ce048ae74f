"""Writes the seed corpora and regression cases of the atheris harnesses
(tests/fuzz/fuzz_{images,datacache,rundir,cli}.py) into tests/fuzz/corpus/<reader>/ and
tests/fuzz/regressions/<reader>/, from files the project itself writes:

- images: the synthetic set's images and masks saved the ways datasets store them (PNG,
  JPEG, BMP, TIFF, WebP, GIF; masks as 0/255, 0/1, palette, 16-bit, int32 and float
  TIFFs, with alpha) and a mask `predict` writes; regressions: truncated files, files
  declaring 20000x20000 (PNG) and 60000x60000 (JPEG), a float mask holding NaN, an
  integer mask with negative levels;
- datacache: the cache entry codext.data.load writes for a small dataset folder (two
  sets, one unreadable pair, one mask of another size than its image);
- rundir: a one-epoch run's files (codext.train), shrunk as tools/make_fuzz_seeds.py
  shrinks them (real metadata, the smallest tensors);
- cli: command lines of every command, and the issue-13 cases.
Regression cases found by fuzzing are added to REGRESSIONS below (each a generator, so
the committed file can be remade).

Run from the repository root with the extension built: python3 tools/make_pyfuzz_seeds.py
"""
import io
import json
import os
import shutil
import struct
import sys
import tempfile
import warnings
import zlib

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "fuzz"))
sys.path.insert(0, os.path.join(ROOT, "tools"))

from PIL import Image  # noqa: E402

import codext  # noqa: E402
import fuzz_cli  # noqa: E402
import fuzz_images  # noqa: E402
from fuzz_datacache import pack  # noqa: E402
from make_fuzz_seeds import shrink  # noqa: E402

FUZZ = os.path.join(ROOT, "tests", "fuzz")
READERS = ("images", "datacache", "rundir", "cli")


def _save(im, fmt, **kw):
    out = io.BytesIO()
    im.save(out, fmt, **kw)
    return out.getvalue()


def image_input(blob, mask=False, size_index=0):
    """An images-harness input: the option byte (role, size) then the file."""
    return bytes([int(mask) | (size_index << 1)]) + blob


def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def huge_png(w, h):
    """A PNG whose IHDR declares w x h (valid CRC), with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


def huge_jpeg(blob, w, h):
    """A JPEG with its SOF0 frame size changed to w x h."""
    at = blob.index(b"\xff\xc0")
    return blob[:at + 5] + struct.pack(">HH", h, w) + blob[at + 9:]


def images_seeds(tmp):
    data = codext.data.synthetic(n_train=2, n_test=0, img_size=32, seed=3)
    image, mask = data.train.images[0][:24, :20], data.train.masks[0][:24, :20]
    rgb, grey = Image.fromarray(image), Image.fromarray(mask)
    seeds = {
        "image.png": image_input(_save(rgb, "PNG")),
        "image.jpg": image_input(_save(rgb, "JPEG", quality=70), size_index=2),
        "image_progressive.jpg": image_input(_save(rgb, "JPEG", progressive=True), size_index=1),
        "image.bmp": image_input(_save(rgb, "BMP"), size_index=3),
        "image.tif": image_input(_save(rgb, "TIFF"), size_index=4),
        "image.webp": image_input(_save(rgb, "WEBP", lossless=True), size_index=5),
        "image.gif": image_input(_save(rgb.convert("P"), "GIF"), size_index=6),
        "image_rgba.png": image_input(_save(rgb.convert("RGBA"), "PNG")),
        "image_grey16.png": image_input(_save(Image.fromarray(mask.astype(np.uint16) * 257), "PNG")),
        "image_cmyk.jpg": image_input(_save(rgb.convert("CMYK"), "JPEG")),
        "mask.png": image_input(_save(grey, "PNG"), mask=True),
        "mask_01.png": image_input(_save(Image.fromarray(mask // 255), "PNG"), mask=True, size_index=2),
        "mask_1bit.png": image_input(_save(grey.convert("1"), "PNG"), mask=True, size_index=3),
        "mask_palette.png": image_input(_save(Image.fromarray(mask // 255).convert("P"), "PNG"), mask=True),
        "mask_16bit.png": image_input(_save(Image.fromarray(mask.astype(np.uint16) * 257), "PNG"), mask=True),
        "mask_int32.tif": image_input(_save(Image.fromarray(mask.astype(np.int32) * 1000), "TIFF"), mask=True),
        "mask_float.tif": image_input(_save(Image.fromarray(mask.astype(np.float32) / 255), "TIFF"), mask=True),
        "mask_la.png": image_input(_save(grey.convert("LA"), "PNG"), mask=True, size_index=4),
        "mask.jpg": image_input(_save(grey, "JPEG"), mask=True, size_index=5),
        "mask.bmp": image_input(_save(grey, "BMP"), mask=True, size_index=6),
    }
    # a mask as `predict` writes it
    model_out = codext.data.to_uint8_levels(np.linspace(0, 1, 35, dtype=np.float32).reshape(5, 7))
    seeds["mask_predict.png"] = image_input(_save(Image.fromarray(model_out, mode="L"), "PNG"), mask=True)
    nan = (mask.astype(np.float32) / 255)
    nan[3, 3] = np.nan
    negative = mask.astype(np.int32)
    negative[0, 0] = -5
    png = _save(rgb, "PNG")
    jpg = _save(rgb, "JPEG")
    regressions = {
        "truncated.png": image_input(png[:len(png) // 2]),
        "truncated.jpg": image_input(jpg[:len(jpg) // 2]),
        "truncated_mask.png": image_input(_save(grey, "PNG")[:60], mask=True),
        "declares_20000x20000.png": image_input(huge_png(20000, 20000)),
        "declares_20000x20000_mask.png": image_input(huge_png(20000, 20000), mask=True),
        "declares_60000x60000.jpg": image_input(huge_jpeg(jpg, 60000, 60000)),
        "mask_float_nan.tif": image_input(_save(Image.fromarray(nan), "TIFF"), mask=True),
        "mask_int32_negative.tif": image_input(_save(Image.fromarray(negative), "TIFF"), mask=True),
        # found by fuzz_images: a mask taller than the C resize's 65535 broke load() (masks_full)
        "mask_66000x1.png": image_input(_save(Image.fromarray(np.zeros((66000, 1), np.uint8)), "PNG"), mask=True),
    }
    return seeds, regressions


def datacache_seeds(tmp):
    root = os.path.join(tmp, "set")
    rng = np.random.default_rng(0)
    for split, n in (("TrainDataset", 3), ("TestDataset/CAMO", 2), ("TestDataset/NC4K", 2)):
        os.makedirs(os.path.join(root, split, "Imgs"))
        os.makedirs(os.path.join(root, split, "GT"))
        for i in range(n):
            h, w = 9 + i, 11
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                os.path.join(root, split, "Imgs", f"s{i}.jpg"))
            mh = h if i else h + 2  # the first mask of each set: another size than its image
            Image.fromarray((rng.random((mh, w)) > 0.5).astype(np.uint8) * 255).save(
                os.path.join(root, split, "GT", f"s{i}.png"))
    with open(os.path.join(root, "TrainDataset", "Imgs", "broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8 not really")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(os.path.join(root, "TrainDataset", "GT", "broken.png"))
    cache = os.path.join(tmp, "cache")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = codext.data.load(root, img_size=8, cache_dir=cache, progress=False)
    entry = data.cache_path
    files = {name: open(os.path.join(entry, name), "rb").read() for name in sorted(os.listdir(entry))}
    # no machine paths in committed files: the entry's paths become relative to the folder
    files["meta.json"] = files["meta.json"].replace(root.encode() + b"/", b"").replace(root.encode(), b".")
    assert b"\n@@file " not in b"".join(files.values())
    seeds = {"entry.cache": pack(files)}
    small = {k: v for k, v in files.items() if k.startswith("train-")}
    meta = json.loads(files["meta.json"])
    small["meta.json"] = edit_meta(files["meta.json"], groups=[g for g in meta["groups"] if g["split"] == "train"],
                                   mismatched=[m for m in meta["mismatched"] if m[0].startswith("s")][:1])
    seeds["entry_train_only.cache"] = pack(small)
    npy = files["train-images-kept.npy"]
    header_end = npy.index(b"\n") + 1
    regressions = {
        # found by fuzz_datacache: a .npy header numpy's tokenizer cannot finish (TokenError,
        # not a ValueError) escaped codext.data.load instead of marking the entry damaged
        "npy_header_unclosed.cache": pack(dict(small, **{"train-images-kept.npy": npy[:10] + b"{'descr': '|u1', \"".ljust(
            header_end - 11) + b"\n" + npy[header_end:]})),
        "npy_truncated.cache": pack(dict(small, **{"train-images-kept.npy": npy[:header_end + 5]})),
        "npy_missing.cache": pack({k: v for k, v in small.items() if k != "train-masks-kept.npy"}),
        # found by fuzz_datacache: entries of "unreadable" / "mismatched" of another shape
        # passed check_meta, then broke load()'s report of skipped files (unpacking)
        "mismatched_pair.cache": pack(dict(small, **{"meta.json": edit_meta(small["meta.json"], mismatched=[["a", [1, 2]]])})),
        "unreadable_string.cache": pack(dict(small, **{"meta.json": edit_meta(small["meta.json"], unreadable=["abc"])})),
        # found probing fuzz_datacache's check: two groups for one Split (two training
        # groups, two test sets of one name) loaded with one of them silently dropped
        "two_train_groups.cache": pack(dict(files, **{"meta.json": edit_meta(files["meta.json"], groups=[
            meta["groups"][0], dict(meta["groups"][1], split="train")] + meta["groups"][2:])})),
        "two_test_sets_one_name.cache": pack(dict(files, **{"meta.json": edit_meta(files["meta.json"], groups=[
            meta["groups"][0], meta["groups"][1], dict(meta["groups"][2], name=meta["groups"][1]["name"])])})),
    }
    return seeds, regressions


def edit_meta(text, **changes):
    import json
    meta = json.loads(text)
    meta.update(changes)
    return json.dumps(meta).encode()


def rundir_seeds(tmp):
    import fuzz_rundir  # noqa: F401  (the same container as datacache)
    run = os.path.join(tmp, "run")
    config = codext.Config(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=2, img_size=32,
                           batch_size=4, epochs=1, stage1_epochs=0, synthetic_train=8, synthetic_test=4,
                           checkpoint_dir=run, amp=False, seed=1)
    codext.train(config, progress=False, log=lambda *a: None)
    small = {}
    for name in ("last.safetensors", "last.state.safetensors", "best.safetensors"):
        out = os.path.join(tmp, "small-" + name)
        shrink(os.path.join(run, name), out)
        small[name] = open(out, "rb").read()
    seeds = {
        "state.input": b"\0" + small["last.state.safetensors"],
        "last.input": b"\1" + small["last.safetensors"],
        "best.input": b"\1" + small["best.safetensors"],
        "set.input": b"\2" + pack({"last.safetensors": small["last.safetensors"],
                                   "last.state.safetensors": small["last.state.safetensors"]}),
        "header.input": b"\3" + small["best.safetensors"],
    }
    state, last = small["last.state.safetensors"], small["last.safetensors"]
    regressions = {  # issue 13's run metadata of the wrong type or missing
        "config_list.input": b"\0" + edit_header(state, meta={"codext_config": "[]"}),
        "history_empty.input": b"\0" + edit_header(state, meta={"codext_history": "{}"}),
        "best_empty.input": b"\0" + edit_header(state, meta={"codext_best": "{}"}),
        "data_list.input": b"\0" + edit_header(state, meta={"codext_data": "[]"}),
        "config_seed_1e400.input": b"\0" + edit_header(state, config={"seed": 1e400}),
        "config_synthetic_test_1e7.input": b"\0" + edit_header(state, config={"synthetic_test": 10000001}),
        "epoch_2e62.input": b"\0" + edit_header(state, meta={"epoch": str(2 ** 62)}),
        "metadata_string.input": b"\3" + edit_header(state, whole=lambda h: dict(h, __metadata__="x")),
        "header_list.input": b"\3" + edit_header(state, whole=lambda h: [h]),
        "best_over_last.input": b"\2" + pack({"last.safetensors": small["best.safetensors"],
                                               "last.state.safetensors": state}),
        "step_edited.input": b"\2" + pack({"last.safetensors": edit_header(last, meta={"codext_train_step": "7"}),
                                            "last.state.safetensors": state}),
    }
    return seeds, regressions


def edit_header(blob, meta=None, config=None, whole=None):
    """A safetensors file with its JSON header changed: metadata entries replaced, fields
    of the saved config (codext_config) replaced, or the whole header mapped; the data
    block is kept."""
    import json
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    if meta:
        header["__metadata__"].update(meta)
    if config:
        saved = json.loads(header["__metadata__"]["codext_config"])
        saved.update(config)
        header["__metadata__"]["codext_config"] = json.dumps(saved)
    if whole:
        header = whole(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + n:]


def encode_argv(command, flags):
    """The cli-harness input that fuzz_cli.make_argv reads as `command` with `flags`:
    [(flag, value or None, form)] (form 0 plain, 6 --flag=value, 7 abbreviated)."""
    fuzz_cli.setup()
    known = fuzz_cli._m["flags"][command]

    def num(value, low, high):
        span = high - low + 1
        need = max(1, (span.bit_length() + 7) // 8)
        return (value - low).to_bytes(need, "little")
    out = num(fuzz_cli.COMMANDS.index(command), 0, len(fuzz_cli.COMMANDS) - 1) + num(len(flags), 0, 8)
    for flag, value, form in flags:
        out += num(known.index(flag), 0, len(known) - 1) + num(form, 0, 7)
        if value is None:
            out += num(3, 0, 3)
        elif value in fuzz_cli.EXTREMES:
            out += num(0, 0, 3) + num(fuzz_cli.EXTREMES.index(value), 0, len(fuzz_cli.EXTREMES) - 1)
        elif value in fuzz_cli.PATHS:
            out += num(1, 0, 3) + num(fuzz_cli.PATHS.index(value), 0, len(fuzz_cli.PATHS) - 1)
        else:
            text = value.encode()
            assert len(text) <= 24, value
            out += num(2, 0, 3) + num(len(text), 0, 24) + text
    fuzz_cli._m.setdefault("check", []).append((out, command, flags))
    return out


def cli_seeds(tmp):
    seeds = {
        "train_demo.argv": encode_argv("train", [("--epochs", "2", 0), ("--img-size", "32", 6)]),
        "train_flags.argv": encode_argv("train", [("--backbone", "edgenext_tiny_test", 0), ("--no-amp", None, 0),
                                                  ("--betas", "0.5", 0), ("--lr", "1e-8", 6)]),
        "train_resume.argv": encode_argv("train", [("--resume", "run", 0), ("--epochs", "4", 0)]),
        "train_dataset.argv": encode_argv("train", [("--dataset-path", "images", 0), ("--num-workers", "2", 0)]),
        "train_ddp.argv": encode_argv("train", [("--use-ddp", None, 0), ("--nprocs", "2", 0),
                                                ("--master-port", "65535", 0)]),
        "eval.argv": encode_argv("eval", [("--checkpoint", "run", 0), ("--seed", "3", 0),
                                          ("--synthetic-test", "2", 0)]),
        "eval_json.argv": encode_argv("eval", [("--checkpoint", "run/best.safetensors", 0), ("--json", "out", 0)]),
        "predict.argv": encode_argv("predict", [("--checkpoint", "run", 0), ("--input", "images", 0),
                                                ("--output", "out", 0), ("--batch-size", "1", 0)]),
        "help.argv": encode_argv("", [("--help", None, 0)]),
    }
    regressions = {  # issue 13's command lines
        "decoder_dim_2e31.argv": encode_argv("train", [("--decoder-dim", "2147483648", 0)]),
        "epochs_2e63.argv": encode_argv("train", [("--epochs", "9223372036854775808", 0)]),
        "warmup_1e300.argv": encode_argv("train", [("--warmup-epochs", "1e300", 0)]),
        "synthetic_test_2e40.argv": encode_argv("train", [("--synthetic-test", "1099511627776", 0)]),
        "eval_synthetic_test_2e40.argv": encode_argv("eval", [("--checkpoint", "run", 0),
                                                              ("--synthetic-test", "1099511627776", 0)]),
        "eval_seed_minus_1.argv": encode_argv("eval", [("--checkpoint", "run", 0), ("--seed", "-1", 0)]),
        "eval_seed_2e64.argv": encode_argv("eval", [("--checkpoint", "run", 0),
                                                    ("--seed", "18446744073709551616", 0)]),
        "lr_nan.argv": encode_argv("train", [("--lr", "nan", 0), ("--eps", "-inf", 6)]),
    }
    for blob, command, flags in fuzz_cli._m.pop("check"):  # the encoder is make_argv's inverse
        argv = fuzz_cli.make_argv(blob)
        want = [command] if command else []
        for flag, value, form in flags:
            want += [flag] if value is None else [f"{flag}={value}"] if form == 6 else [flag, value]
        assert argv == want, (argv, want)
    return seeds, regressions


def main():
    only = sys.argv[1:] or READERS
    with tempfile.TemporaryDirectory() as tmp:
        for reader in only:
            os.makedirs(os.path.join(tmp, reader))
            seeds, regressions = globals()[f"{reader}_seeds"](os.path.join(tmp, reader))
            for kind, files in (("corpus", seeds), ("regressions", regressions)):
                folder = os.path.join(FUZZ, kind, reader)
                os.makedirs(folder, exist_ok=True)
                for name in os.listdir(folder):  # crash files committed by hand (found-*) stay
                    if not name.startswith("found-"):
                        os.remove(os.path.join(folder, name))
                for name, blob in files.items():
                    with open(os.path.join(folder, name), "wb") as f:
                        f.write(blob)
            size = sum(len(b) for b in seeds.values()) + sum(len(b) for b in regressions.values())
            print(f"{reader}: {len(seeds)} seeds, {len(regressions)} regression cases, {size} bytes")


if __name__ == "__main__":
    main()
