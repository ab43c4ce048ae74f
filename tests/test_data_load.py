"""codext.data.load: layouts, cache, and bad input, on small fake datasets written with Pillow."""
import os
import warnings

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from codext import _C, _datacache, data  # noqa: E402

S = 16  # img_size used throughout


def write_pair(img_dir, mask_dir, stem, size=(32, 24), img_ext=".jpg", mask_ext=".png", seed=0,
               mask_size=None):
    """An image with a rectangle object and its mask; returns (image array, mask array)."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mw, mh = mask_size or size
    mask = np.zeros((mh, mw), np.uint8)
    mask[mh // 4: mh // 2 + 2, mw // 3: mw // 3 + 5] = 255
    if img_dir:
        os.makedirs(img_dir, exist_ok=True)
        Image.fromarray(img).save(os.path.join(img_dir, stem + img_ext))
    if mask_dir:
        os.makedirs(mask_dir, exist_ok=True)
        Image.fromarray(mask).save(os.path.join(mask_dir, stem + mask_ext))
    return img, mask


def make_cod10k(root, n_cam=3, n_noncam=2):
    for split in ("Train", "Test"):
        for i in range(n_cam):
            write_pair(f"{root}/{split}/Image", f"{root}/{split}/GT_Object",
                       f"COD10K-CAM-1-Aquatic-1-BatFish-{split}{i}", seed=i, size=(32 + i, 24))
            write_pair(None, f"{root}/{split}/GT_Edge", f"COD10K-CAM-1-Aquatic-1-BatFish-{split}{i}")
        for i in range(n_noncam):
            write_pair(f"{root}/{split}/Image", f"{root}/{split}/GT_Object",
                       f"COD10K-NonCAM-5-Background-5-Sky-{split}{i}", seed=10 + i)


def load(path, tmp_path, **kw):
    kw.setdefault("cache_dir", str(tmp_path / "cache"))
    kw.setdefault("progress", False)
    return data.load(str(path), img_size=S, **kw)


def expected_image(path):
    return _C.resize_image(np.asarray(Image.open(path).convert("RGB")), S, S)


# ---- layouts --------------------------------------------------------------------------

def test_cod10k_v3(tmp_path):
    root = tmp_path / "COD10K-v3"
    make_cod10k(root)
    d = load(root, tmp_path)
    assert d.train.images.shape == (3, S, S, 3) and d.train.masks.shape == (3, S, S)
    assert all(n.startswith("COD10K-CAM-") for n in d.train.names + d.test.names)
    assert list(d.tests) == ["COD10K"] and d.test is d.tests["COD10K"]
    for i, name in enumerate(d.train.names):
        assert np.array_equal(d.train.images[i], expected_image(root / "Train/Image" / (name + ".jpg")))
    assert set(np.unique(d.train.masks)) <= {0, 255} and d.train.masks.any()
    assert [m.shape for m in d.test.masks_full] == [(24, 32), (24, 33), (24, 34)]
    full = np.asarray(Image.open(root / "Test/GT_Object" / (d.test.names[0] + ".png")))
    assert np.array_equal(d.test.masks_full[0], full)
    assert np.array_equal(d.test.masks[0], _C.resize_mask(full, S, S))
    everything = load(root, tmp_path, include_noncam=True)
    assert len(everything.train) == 5 and len(everything.test) == 5


def test_camo(tmp_path):
    root = tmp_path / "CAMO-V.1.0-CVIU2019"
    for split, n in (("Train", 3), ("Test", 2)):
        for i in range(n):
            write_pair(f"{root}/Images/{split}", f"{root}/GT", f"camourflage_{split}{i:04d}", seed=i)
    d = load(root, tmp_path)
    assert len(d.train) == 3 and list(d.tests) == ["CAMO"] and len(d.test) == 2
    assert d.test.names == ["camourflage_Test0000", "camourflage_Test0001"]


@pytest.mark.parametrize("name,dirs", [("NC4K", ("Imgs", "GT")), ("CHAMELEON", ("Image", "GT"))])
def test_single_test_sets(tmp_path, name, dirs):
    root = tmp_path / name
    for i in range(3):
        write_pair(f"{root}/{dirs[0]}", f"{root}/{dirs[1]}", f"{name.lower()}-{i}", seed=i)
    d = load(root, tmp_path)
    assert len(d.train) == 0 and d.train.images.shape == (0, S, S, 3)
    assert list(d.tests) == [name] and len(d.test) == 3 and len(d.test.masks_full) == 3


def test_sinet_v2_packaging(tmp_path):
    root = tmp_path / "Dataset"
    for i in range(4):
        write_pair(f"{root}/TrainDataset/Imgs", f"{root}/TrainDataset/GT", f"COD10K-CAM-{i}", seed=i)
    for set_name, mask_ext in (("CAMO", ".png"), ("COD10K", ".jpg"), ("NC4K", ".tif")):
        for i in range(2):
            write_pair(f"{root}/TestDataset/{set_name}/Imgs", f"{root}/TestDataset/{set_name}/GT",
                       f"{set_name}-{i}", mask_ext=mask_ext, seed=i)
    d = load(root, tmp_path)
    assert len(d.train) == 4 and sorted(d.tests) == ["CAMO", "COD10K", "NC4K"]
    assert d.test is d.tests["COD10K"]
    for split in d.tests.values():  # JPEG masks are binarised at 128
        assert set(np.unique(split.masks)) <= {0, 255} and split.masks.any()
        assert all(set(np.unique(m)) <= {0, 255} for m in split.masks_full)
    only = load(root, tmp_path, test_sets=["CAMO"])
    assert list(only.tests) == ["CAMO"] and len(only.train) == 4
    with pytest.raises(ValueError, match="not found"):
        load(root, tmp_path, test_sets=["MoCA"])


def test_collection_of_datasets(tmp_path):
    make_cod10k(tmp_path / "all/COD10K-v3", n_cam=2, n_noncam=0)
    for split in ("Train", "Test"):
        write_pair(f"{tmp_path}/all/camo/CAMO-V.1.0-CVIU2019/Images/{split}",
                   f"{tmp_path}/all/camo/CAMO-V.1.0-CVIU2019/GT", f"camourflage_{split}")
    write_pair(f"{tmp_path}/all/NC4K/Imgs", f"{tmp_path}/all/NC4K/GT", "1")
    d = load(tmp_path / "all", tmp_path)
    assert len(d.train) == 3 and sorted(d.tests) == ["CAMO", "COD10K", "NC4K"]
    assert "collection" in d.layout


# ---- cache ----------------------------------------------------------------------------

def test_second_load_reads_the_cache(tmp_path, monkeypatch):
    root = tmp_path / "COD10K-v3"
    make_cod10k(root)
    before = sorted(os.listdir(root / "Train"))
    first = load(root, tmp_path)
    assert first.cache_path.startswith(str(tmp_path / "cache"))
    assert sorted(os.listdir(root / "Train")) == before  # nothing written beside the input

    def no_decoding(path):
        raise AssertionError("decoded again")
    monkeypatch.setattr(_datacache, "decode_image", no_decoding)
    second = load(root, tmp_path)
    assert isinstance(second.train.images, np.memmap)
    assert np.array_equal(second.train.images, first.train.images)
    assert second.test.names == first.test.names
    assert all(np.array_equal(a, b) for a, b in zip(second.test.masks_full, first.test.masks_full))


def test_changed_source_invalidates_the_cache(tmp_path, monkeypatch):
    root = tmp_path / "NC4K"
    for i in range(3):
        write_pair(f"{root}/Imgs", f"{root}/GT", f"{i}", seed=i)
    first = load(root, tmp_path)
    old_entry, old_first = first.cache_path, np.array(first.test.images[0])
    calls = []
    real = _datacache.decode_image
    monkeypatch.setattr(_datacache, "decode_image", lambda p: calls.append(p) or real(p))
    write_pair(f"{root}/Imgs", None, "0", seed=99)  # new content, new mtime
    st = os.stat(root / "Imgs/0.jpg")
    os.utime(root / "Imgs/0.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = load(root, tmp_path)
    assert len(calls) == 3 and second.cache_path != old_entry and not os.path.exists(old_entry)
    assert not np.array_equal(second.test.images[0], old_first)
    write_pair(f"{root}/Imgs", f"{root}/GT", "3", seed=3)  # an added pair too
    assert len(load(root, tmp_path).test) == 4


def test_simultaneous_loads_decode_once(tmp_path, monkeypatch):
    import threading
    root = tmp_path / "NC4K"
    for i in range(4):
        write_pair(f"{root}/Imgs", f"{root}/GT", f"{i}", seed=i)
    calls = []
    real = _datacache.decode_image
    monkeypatch.setattr(_datacache, "decode_image", lambda p: calls.append(p) or real(p))
    results = []
    threads = [threading.Thread(target=lambda: results.append(load(root, tmp_path))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 4 and len(results) == 3  # one decode, like ranks under torchrun
    assert len({r.cache_path for r in results}) == 1


def test_damaged_cache_entry_is_rebuilt(tmp_path):
    root = tmp_path / "NC4K"
    for i in range(2):
        write_pair(f"{root}/Imgs", f"{root}/GT", f"{i}", seed=i)
    first = load(root, tmp_path)
    os.remove(os.path.join(first.cache_path, "NC4K-images.npy"))
    with pytest.warns(UserWarning, match="cache entry .* is damaged .*NC4K-images.npy"):
        second = load(root, tmp_path)
    assert second.cache_path == first.cache_path
    assert np.array_equal(second.test.images[1], expected_image(root / "Imgs/1.jpg"))


def test_default_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEXT_CACHE_DIR", str(tmp_path / "envcache"))
    assert data.default_cache_dir() == str(tmp_path / "envcache")
    root = tmp_path / "CHAMELEON"
    write_pair(f"{root}/Imgs", f"{root}/GT", "a")
    d = data.load(str(root), img_size=S, progress=False)
    assert d.cache_path.startswith(str(tmp_path / "envcache"))
    monkeypatch.delenv("CODEXT_CACHE_DIR")
    assert data.default_cache_dir() == os.path.join(os.path.expanduser("~"), ".cache", "codext")


def test_unwritable_cache_dir_falls_back_to_shared_memory(tmp_path):
    root = tmp_path / "NC4K"
    for i in range(2):
        write_pair(f"{root}/Imgs", f"{root}/GT", f"{i}", seed=i)
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.warns(UserWarning, match="cannot be written"):
        d = data.load(str(root), img_size=S, cache_dir=str(tmp_path / "a_file" / "cache"), progress=False)
    assert d.cache_path is None and len(d.fds()) >= 1
    assert np.array_equal(d.test.images[1], expected_image(root / "Imgs/1.jpg"))


def test_progress_text_without_tqdm(tmp_path, capsys, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    root = tmp_path / "NC4K"
    for i in range(3):
        write_pair(f"{root}/Imgs", f"{root}/GT", f"{i}", seed=i)
    load(root, tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "decoding 3 images" in err and "3/3 images (100%)" in err


def test_progress_uses_tqdm_when_present(tmp_path, monkeypatch):
    import sys
    import types
    bars = []

    class FakeTqdm:
        def __init__(self, total, **kw):
            self.total, self.n, self.closed = total, 0, False
            bars.append(self)

        def update(self, n):
            self.n += n

        def close(self):
            self.closed = True
    fake = types.ModuleType("tqdm.auto")
    fake.tqdm = FakeTqdm
    monkeypatch.setitem(sys.modules, "tqdm", types.ModuleType("tqdm"))
    monkeypatch.setitem(sys.modules, "tqdm.auto", fake)
    root = tmp_path / "NC4K"
    for i in range(3):
        write_pair(f"{root}/Imgs", f"{root}/GT", f"{i}", seed=i)
    load(root, tmp_path, progress=True)
    assert len(bars) == 1 and bars[0].total == 3 and bars[0].n == 3 and bars[0].closed
    load(root, tmp_path, progress=True)  # cached: no bar
    assert len(bars) == 1


# ---- bad input ------------------------------------------------------------------------

def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load(str(tmp_path / "nope"))
    (tmp_path / "archive.zip").write_bytes(b"PK")
    with pytest.raises(NotADirectoryError, match="unpack"):
        data.load(str(tmp_path / "archive.zip"))


def test_unrecognised_layout_says_what_was_tried_and_found(tmp_path):
    os.makedirs(tmp_path / "weird/photos")
    write_pair(tmp_path / "weird/photos", None, "a")
    with pytest.raises(data.DatasetLayoutError) as e:
        data.load(str(tmp_path / "weird"))
    msg = str(e.value)
    assert "Tried" in msg and "COD10K-v3" in msg and "CAMO" in msg and "NC4K" in msg
    assert "photos/ (1 files)" in msg
    assert isinstance(e.value, FileNotFoundError)


def test_missing_mask_folder_is_named(tmp_path):
    root = tmp_path / "COD10K-v3"
    write_pair(f"{root}/Train/Image", f"{root}/Train/GT_Edge", "COD10K-CAM-1")
    with pytest.raises(data.DatasetLayoutError) as e:
        data.load(str(root))
    msg = str(e.value)
    assert "GT_Edge/ [1 files]" in msg and "Image/ [1 files]" in msg
    assert "no image folder" in msg and "Train" in msg


def test_empty_directories(tmp_path):
    root = tmp_path / "COD10K-v3"
    for d in ("Train/Image", "Train/GT_Object", "Test/Image", "Test/GT_Object"):
        os.makedirs(root / d)
    with pytest.raises(ValueError, match="no image/mask pairs"):
        load(root, tmp_path)
    write_pair(f"{root}/Test/Image", f"{root}/Test/GT_Object", "COD10K-CAM-1")
    with pytest.warns(UserWarning, match="empty"):
        d = load(root, tmp_path)
    assert len(d.train) == 0 and len(d.test) == 1


def test_unpaired_files_are_listed(tmp_path):
    root = tmp_path / "NC4K"
    for i in range(3):
        write_pair(f"{root}/Imgs", f"{root}/GT", f"{i}", seed=i)
    write_pair(f"{root}/Imgs", None, "lonely_image")
    write_pair(None, f"{root}/GT", "lonely_mask")
    with pytest.warns(UserWarning) as record:
        d = load(root, tmp_path)
    text = "\n".join(str(w.message) for w in record)
    assert "lonely_image.jpg" in text and "lonely_mask.png" in text
    assert "1 image(s) without a mask" in text and "1 mask(s) without an image" in text
    assert len(d.test) == 3
    with pytest.raises(ValueError, match="lonely_image.jpg"):
        load(root, tmp_path, strict=True)


def test_unreadable_and_truncated_files_are_named(tmp_path):
    root = tmp_path / "NC4K"
    for i in range(3):
        write_pair(f"{root}/Imgs", f"{root}/GT", f"{i}", seed=i, size=(64, 48))
    (root / "Imgs/bad.jpg").write_bytes(b"this is not a JPEG")
    write_pair(None, f"{root}/GT", "bad")
    blob = (root / "Imgs/1.jpg").read_bytes()
    (root / "Imgs/1.jpg").write_bytes(blob[: len(blob) // 2])  # truncated
    with pytest.warns(UserWarning) as record:
        d = load(root, tmp_path)
    text = "\n".join(str(w.message) for w in record)
    assert "bad.jpg" in text and "1.jpg" in text and "2 pair(s)" in text
    assert d.test.names == ["0", "2"] and d.test.images.shape == (2, S, S, 3)
    assert [m.shape for m in d.test.masks_full] == [(48, 64), (48, 64)]
    assert np.array_equal(d.test.images[1], expected_image(root / "Imgs/2.jpg"))
    with pytest.raises(OSError, match="bad.jpg"):  # strict, from the cached record
        load(root, tmp_path, strict=True)


def test_mask_of_another_size(tmp_path):
    root = tmp_path / "CHAMELEON"
    write_pair(f"{root}/Imgs", f"{root}/GT", "a", size=(40, 30), mask_size=(80, 60))
    write_pair(f"{root}/Imgs", f"{root}/GT", "b", size=(40, 30))
    with pytest.warns(UserWarning, match=r"a: image \(30, 40\), mask \(60, 80\)"):
        d = load(root, tmp_path)
    assert d.test.masks_full[0].shape == (60, 80) and d.test.masks.shape == (2, S, S)
    assert np.array_equal(d.test.masks[0], _C.resize_mask(np.asarray(Image.open(root / "GT/a.png")), S, S))


def test_image_modes_are_converted(tmp_path):
    root = tmp_path / "NC4K"
    rng = np.random.default_rng(0)
    os.makedirs(root / "Imgs")
    os.makedirs(root / "GT")
    gray = rng.integers(0, 256, (24, 32), dtype=np.uint8)
    Image.fromarray(gray).save(root / "Imgs/gray.png")
    rgba = rng.integers(0, 256, (24, 32, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "Imgs/rgba.png")
    Image.fromarray(rgba[:, :, :3]).convert("P").save(root / "Imgs/palette.png")
    Image.fromarray(rgba[:, :, :3]).convert("CMYK").save(root / "Imgs/cmyk.jpg")
    deep = gray.astype(np.uint16) * 257  # 16-bit grey: same picture in the top 8 bits
    Image.fromarray(deep).save(root / "Imgs/deep.png")
    mask = np.zeros((24, 32), np.uint8)
    mask[4:12, 8:20] = 1
    Image.fromarray(mask).save(root / "GT/gray.png")  # 0/1 mask
    pal = Image.fromarray(mask, "P")
    pal.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)  # VOC-style colour index
    pal.save(root / "GT/palette.png")
    Image.fromarray(np.repeat(mask[:, :, None] * 255, 3, 2)).save(root / "GT/rgba.png")  # RGB mask
    Image.fromarray(mask * 255).convert("1").save(root / "GT/cmyk.png")
    Image.fromarray(mask.astype(np.uint16) * 65535).save(root / "GT/deep.png")  # 16-bit mask
    d = load(root, tmp_path)
    assert d.test.names == ["cmyk", "deep", "gray", "palette", "rgba"]
    want_gray = _C.resize_image(np.repeat(gray[:, :, None], 3, 2), S, S)
    assert np.array_equal(d.test.images[1], want_gray) and np.array_equal(d.test.images[2], want_gray)
    assert np.array_equal(d.test.images[4], _C.resize_image(rgba[:, :, :3].copy(), S, S))
    want = _C.resize_mask(mask * 255, S, S)
    for i in range(5):
        assert np.array_equal(d.test.masks[i], want), d.test.names[i]
        assert np.array_equal(d.test.masks_full[i], mask * 255)


def test_pillow_missing_is_explained(tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_pil(name, *args, **kwargs):
        if name == "PIL" or name.startswith("PIL."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_pil)
    with pytest.raises(ImportError, match="pip install pillow"):
        _datacache.decode_image("x.jpg")


def test_hidden_and_duplicate_files(tmp_path):
    root = tmp_path / "NC4K"
    write_pair(f"{root}/Imgs", f"{root}/GT", "a")
    write_pair(f"{root}/Imgs", None, "a", img_ext=".png")  # same stem twice
    (root / "Imgs/.DS_Store").write_bytes(b"x")
    (root / "Imgs/._a.jpg").write_bytes(b"x")  # macOS resource fork
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        d = load(root, tmp_path)
    assert d.test.names == ["a"]
    assert any("a.png" in str(w.message) for w in record)
