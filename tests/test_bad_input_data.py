"""Bad data from issue 13's fuzzing: synthetic sets larger than the memory (refused before
posix_fallocate commits it), masks holding NaN or negatives, a damaged dataset cache, a
decompression-bomb PNG given to predict."""
import json
import os
import shutil
import struct
import zlib

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

import codext  # noqa: E402
from codext import _datacache, _shared, cli, data  # noqa: E402

S = 16


def write_pair(img_dir, mask_dir, stem, mask=None, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(mask_dir, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(os.path.join(img_dir, stem + ".jpg"))
    if mask is None:
        m = np.zeros((24, 32), np.uint8)
        m[6:14, 10:15] = 255
        Image.fromarray(m).save(os.path.join(mask_dir, stem + ".png"))
    else:
        mask.save(os.path.join(mask_dir, stem + ".tif"))


# ---- memory ------------------------------------------------------------------------------------

def test_synthetic_memory_edge(monkeypatch):
    need = data.synthetic_bytes(3, 2, 32)
    monkeypatch.setattr(_shared, "available_memory", lambda: (need, "MemAvailable"))
    assert len(data.synthetic(3, 2, 32).train) == 3  # exactly what is available: accepted
    monkeypatch.setattr(_shared, "available_memory", lambda: (need - 1, "MemAvailable"))
    with pytest.raises(MemoryError, match=r"synthetic\(n_train=3, n_test=2, img_size=32\): .* of memory "
                                          r"needed, only .* available \(MemAvailable\)"):
        data.synthetic(3, 2, 32)


def test_available_memory_reads_meminfo_or_the_cgroup():
    avail, source = _shared.available_memory()
    if os.path.exists("/proc/meminfo"):
        assert avail > 0 and source in ("MemAvailable", "the memory cgroup's limit")


def test_cli_train_refuses_a_synthetic_set_larger_than_memory(capsys):
    # 10^7 images of 4096x4096 (the largest values each flag accepts): 640 TiB
    argv = ["train", "--img-size", "4096", "--synthetic-train", "10000000", "--quiet"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("python -m codext train: error: --synthetic-train 10000000 and "
                             "--synthetic-test ") and "of memory needed, only" in err[0]
    assert len(err) == 2


def test_cli_eval_names_the_flag_and_sizes(tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "m.safetensors"
    codext.Model("edgenext_tiny_test", decoder_dim=8, num_experts=2, img_size=32).save(ckpt)
    monkeypatch.setattr(_shared, "available_memory", lambda: (2 ** 20, "the memory cgroup's limit"))
    assert cli.main(["eval", "--checkpoint", str(ckpt), "--synthetic-test", "1000"]) == 2
    err = capsys.readouterr().err.splitlines()[0]
    assert err == ("python -m codext eval: error: --synthetic-test 1000 (32x32 images): 3.9 MiB of "
                   "memory needed, only 1.0 MiB available (the memory cgroup's limit)")


# ---- masks -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mask, problem", [
    (Image.fromarray(np.full((24, 32), np.nan, np.float32), mode="F"), "holds NaN or infinite values"),
    (Image.fromarray(np.array([[0.0, np.inf]], np.float32).repeat(12, 0).repeat(16, 1), mode="F"),
     "holds NaN or infinite values"),
    (Image.fromarray(np.full((24, 32), -5, np.int32), mode="I"), "holds negative values (min -5)"),
])
def test_masks_with_nan_or_negatives_are_refused_naming_the_file(tmp_path, mask, problem):
    root = tmp_path / "NC4K"
    write_pair(f"{root}/Imgs", f"{root}/GT", "good")
    write_pair(f"{root}/Imgs", f"{root}/GT", "bad", mask=mask, seed=1)
    bad_path = os.path.join(root, "GT", "bad.tif")
    with pytest.raises(ValueError, match="holds"):
        _datacache.decode_mask(bad_path)
    with pytest.warns(UserWarning) as rec:
        d = data.load(str(root), img_size=S, cache_dir=str(tmp_path / "c"), progress=False)
    text = " ".join(str(w.message) for w in rec)
    assert f"{bad_path}: ValueError: the" in text and problem in text
    assert d.test.names == ["good"]
    with pytest.raises(OSError, match=rf"{bad_path}: ValueError: .*{problem[:10]}"):
        data.load(str(root), img_size=S, cache_dir=str(tmp_path / "c2"), progress=False, strict=True)


def test_valid_float_and_int_masks_still_load():
    m = np.zeros((4, 4), np.float32)
    m[1:3, 1:3] = 1.0
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"codext-mask-{os.getpid()}.tif")
    try:
        Image.fromarray(m, mode="F").save(path)
        assert _datacache.decode_mask(path).max() == 255
        Image.fromarray(np.zeros((4, 4), np.int32), mode="I").save(path)  # min 0: the edge
        assert _datacache.decode_mask(path).max() == 0
    finally:
        os.remove(path)


# ---- the dataset cache -----------------------------------------------------------------------

def _cached(tmp_path, n=3):
    root = tmp_path / "NC4K"
    for i in range(n):
        write_pair(f"{root}/Imgs", f"{root}/GT", f"{i}", seed=i)
    first = data.load(str(root), img_size=S, cache_dir=str(tmp_path / "c"), progress=False)
    return root, first


def _edit_meta(entry, change):
    path = os.path.join(entry, "meta.json")
    with open(path) as f:
        meta = json.load(f)
    change(meta)
    with open(path, "w") as f:
        json.dump(meta, f)


@pytest.mark.parametrize("change, field", [
    (lambda m: m["groups"][0].pop("names"), "groups[0].names: missing"),
    (lambda m: m["groups"][0]["names"].pop(), "groups[0].masks_full: 3 shapes and 3 offsets for 2 names"),
    (lambda m: m["groups"][0]["masks_full"]["shapes"].__setitem__(0, [25, 32]), "masks_full.shapes[1] [24, 32] at offset 768 overlaps the previous mask"),
    (lambda m: m["groups"][0]["masks_full"]["shapes"].__setitem__(2, [24, 33]), "masks_full.shapes[2] [24, 33]"),
    (lambda m: m["groups"][0]["masks_full"]["shapes"].__setitem__(1, [0, 32]), "groups[0].masks_full.shapes[1]: must be [h, w] > 0"),
    (lambda m: m["groups"][0]["masks_full"]["offsets"].__setitem__(1, -1), "groups[0].masks_full.shapes[1]: must be"),
    (lambda m: m.__setitem__("groups", {}), "groups: missing or not list"),
    (lambda m: m["groups"][0].__setitem__("masks_full", []), "groups[0].masks_full: must be null or"),
    (lambda m: m.__setitem__("img_size", -8), "img_size: must be in 8..8192, got -8"),  # found by fuzzing
    (lambda m: m.__setitem__("img_size", 7), "img_size: must be in 8..8192, got 7"),
    (lambda m: m.__setitem__("img_size", 8193), "img_size: must be in 8..8192, got 8193"),
])
def test_a_damaged_cache_is_refused_and_decoded_again(tmp_path, change, field):
    root, first = _cached(tmp_path)
    _edit_meta(first.cache_path, change)
    with pytest.raises(ValueError, match=r"meta\.json: " + field.replace("[", r"\[").replace("(", r"\(")):
        _datacache.open_entry(first.cache_path)
    with pytest.warns(UserWarning, match="cache entry .* is damaged .*decoding the dataset again"):
        again = data.load(str(root), img_size=S, cache_dir=str(tmp_path / "c"), progress=False)
    assert again.test.names == first.test.names
    assert all(np.array_equal(a, b) for a, b in zip(again.test.masks_full, first.test.masks_full))
    _datacache.open_entry(again.cache_path)  # the rebuilt entry is whole


@pytest.mark.parametrize("edge", [8, 8192])
def test_the_cache_img_size_bound_admits_its_edges(tmp_path, edge):
    """8 and 8192 pass meta.json's schema (and then the arrays, of another size, are refused)."""
    root, first = _cached(tmp_path)
    _edit_meta(first.cache_path, lambda m: m.__setitem__("img_size", edge))
    with pytest.raises(ValueError, match=rf"NC4K-images\.npy is uint8 \(3, {S}, {S}, 3\), meta\.json says "
                                         rf"3 names of {edge}x{edge} RGB"):
        _datacache.open_entry(first.cache_path)


def test_an_edited_cache_img_size_is_decoded_again(tmp_path):
    """An entry whose meta.json names another img_size (arrays and all) is not used for this one."""
    root, first = _cached(tmp_path)
    other = data.load(str(root), img_size=2 * S, cache_dir=str(tmp_path / "o"), progress=False)
    target = first.cache_path
    with open(os.path.join(target, "meta.json")) as f:
        key = json.load(f)["key"]
    for name in os.listdir(target):
        os.remove(os.path.join(target, name))
    for name in os.listdir(other.cache_path):
        shutil.copyfile(os.path.join(other.cache_path, name), os.path.join(target, name))
    _edit_meta(target, lambda m: m.__setitem__("key", key))
    with pytest.warns(UserWarning, match=rf"holds {2 * S}px arrays, not {S}px; decoding the dataset again"):
        again = data.load(str(root), img_size=S, cache_dir=str(tmp_path / "c"), progress=False)
    assert again.train.images.shape[1:] == (S, S, 3) and again.test.images.shape[1:] == (S, S, 3)
    assert np.array_equal(again.test.images, first.test.images)


def test_a_cache_array_of_another_shape_is_refused(tmp_path):
    root, first = _cached(tmp_path)
    np.save(os.path.join(first.cache_path, "NC4K-masks.npy"), np.zeros((2, S, S), np.uint8))
    with pytest.raises(ValueError, match=r"NC4K-masks\.npy is uint8 \(2, 16, 16\), meta\.json says 3 names"):
        _datacache.open_entry(first.cache_path)


# ---- predict -----------------------------------------------------------------------------------

def _png_declaring(path, width, height):
    """A PNG whose header declares width x height (no pixel data needed: Pillow refuses the
    size when it opens the file)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                chunk(b"IEND", b""))


def test_predict_names_a_decompression_bomb(tmp_path, capsys):
    ckpt = tmp_path / "m.safetensors"
    codext.Model("edgenext_tiny_test", decoder_dim=8, num_experts=2, img_size=32).save(ckpt)
    bomb = tmp_path / "in" / "huge.png"
    bomb.parent.mkdir()
    _png_declaring(bomb, 20000, 20000)
    assert cli.main(["predict", "--checkpoint", str(ckpt), "--input", str(bomb), "--output",
                     str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"codext: error: {bomb}: refused as a possible decompression bomb (")
    assert "\n" not in err and "400000000 pixels" in err


def test_train_names_the_config_fields_when_the_synthetic_set_does_not_fit(tmp_path, monkeypatch):
    from codext.train import train
    monkeypatch.setattr(_shared, "available_memory", lambda: (2 ** 20, "MemAvailable"))
    cfg = codext.Config(backbone="edgenext_tiny_test", img_size=32, decoder_dim=8, num_experts=2,
                        batch_size=4, epochs=1, stage1_epochs=0, synthetic_train=1000,
                        synthetic_test=4, checkpoint_dir=str(tmp_path))
    with pytest.raises(MemoryError, match=r"^Config\.synthetic_train 1000 and Config\.synthetic_test 4 "
                                          r"at img_size 32: 3\.9 MiB of memory needed, only 1\.0 MiB"):
        train(cfg, progress=False)
