"""codext.baselines: the trivial baselines on hand-made masks, the PNG writer, the grid, and
the end-of-run report of `python -m codext train`."""
import math
import struct
import zlib

import numpy as np
import pytest

from codext import baselines, cli


def gt_of(rows):
    """uint8 mask from strings of '#' (foreground, 255) and '.' (background, 0)."""
    return np.array([[255 if c == "#" else 0 for c in row] for row in rows], np.uint8)


# ---- the baselines ---------------------------------------------------------------------------

def test_centred_gaussian_values():
    g = baselines.centred_gaussian((4, 4))  # sd 1 per axis, centre (1.5, 1.5)
    assert g.dtype == np.float32 and g.shape == (4, 4)
    assert g[0, 0] == pytest.approx(math.exp(-0.5 * (1.5 ** 2 + 1.5 ** 2)), rel=1e-6)
    assert g[1, 1] == pytest.approx(math.exp(-0.5 * (0.5 ** 2 + 0.5 ** 2)), rel=1e-6)
    assert g[0, 1] == pytest.approx(math.exp(-0.5 * (1.5 ** 2 + 0.5 ** 2)), rel=1e-6)
    assert np.array_equal(g, g[::-1]) and np.array_equal(g, g[:, ::-1]) and np.array_equal(g, g.T)
    assert baselines.centred_gaussian((1, 1))[0, 0] == 1.0  # odd size: the centre is a pixel
    wide = baselines.centred_gaussian((3, 8))               # sd = a quarter of each side
    assert wide[1, 0] == pytest.approx(math.exp(-0.5 * (3.5 / 2) ** 2), rel=1e-6)
    assert wide[0, 4] == pytest.approx(math.exp(-0.5 * ((1 / 0.75) ** 2 + (0.5 / 2) ** 2)), rel=1e-6)
    with pytest.raises(ValueError, match="at least 1x1"):
        baselines.centred_gaussian((0, 4))


def test_all_foreground_scores():
    gt = gt_of(["....", ".##.", ".##.", "...."])  # 4 of 16 pixels
    s = baselines.baseline_metrics([gt])["all foreground"]
    assert s["mae"] == pytest.approx(0.75) and s["iou"] == pytest.approx(0.25)
    full = baselines.baseline_metrics([np.full((3, 5), 255, np.uint8)])["all foreground"]
    assert (full["sm"], full["mae"], full["iou"]) == pytest.approx((1.0, 0.0, 1.0))
    empty = baselines.baseline_metrics([np.zeros((3, 5), np.uint8)])["all foreground"]
    assert (empty["sm"], empty["mae"]) == pytest.approx((0.0, 1.0))  # S of an empty GT: 1 - mean


def test_gaussian_scores_on_a_full_mask():
    # 2x2: every pixel is one sd from the centre on both axes, exp(-1) everywhere (a constant
    # map, so no min-max normalisation); S of a full GT is the mean prediction
    s = baselines.baseline_metrics([np.full((2, 2), 255, np.uint8)])["centred Gaussian blob"]
    assert s["sm"] == pytest.approx(math.exp(-1), rel=1e-6)
    assert s["mae"] == pytest.approx(1 - math.exp(-1), rel=1e-6)
    assert s["iou"] == 0.0  # exp(-1) < 0.5: nothing called foreground


def test_baselines_are_drawn_at_each_gt_size_and_averaged():
    a = gt_of(["##", "##"])
    b = gt_of(["......", "......", "......"])
    s = baselines.baseline_metrics([a, b])["all foreground"]
    assert s["n_images"] == 2 and s["mae"] == pytest.approx((0.0 + 1.0) / 2)
    with pytest.raises(TypeError, match=r"gts\[1\]"):
        baselines.baseline_metrics([a, b.astype(np.float32)])


def test_module_doctest():
    import doctest
    failures, tried = doctest.testmod(baselines)
    assert tried > 0 and failures == 0


# ---- PNG and grid ----------------------------------------------------------------------------

def read_png(data):
    """(width, height, colour type, pixels) of a PNG of our writer: an independent decoder
    for filter type 0 rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks.append((kind, body))
        pos += 12 + length
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    w, h, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[0][1])
    channels = {0: 1, 2: 3}[colour]
    raw = np.frombuffer(zlib.decompress(chunks[1][1]), np.uint8).reshape(h, 1 + w * channels)
    assert depth == 8 and not raw[:, 0].any()
    pixels = raw[:, 1:].reshape((h, w, channels) if channels == 3 else (h, w))
    return w, h, colour, pixels


def test_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = baselines.write_png(str(tmp_path / "x.png"), rgb)
    w, h, colour, pixels = read_png(open(path, "rb").read())
    assert (w, h, colour) == (7, 5, 2) and np.array_equal(pixels, rgb)
    grey = rng.integers(0, 256, (3, 2), dtype=np.uint8)
    assert np.array_equal(read_png(baselines.png_bytes(grey))[3], grey)
    assert list(tmp_path.iterdir()) == [tmp_path / "x.png"]  # no temporary file left
    with pytest.raises(ValueError, match="uint8"):
        baselines.png_bytes(rgb.astype(np.float32))
    Image = pytest.importorskip("PIL.Image")  # and a real decoder reads it the same
    with Image.open(path) as im:
        assert np.array_equal(np.asarray(im), rgb)


def test_prediction_grid_layout():
    images = np.stack([np.full((2, 3, 3), 10 * (i + 1), np.uint8) for i in range(2)])
    gts = np.zeros((2, 2, 3), np.uint8)
    gts[1, 0, 0] = 255
    preds = np.zeros((2, 2, 3), np.float32)
    preds[0, 1, 2] = 1.0
    preds[1] = 0.5
    grid = baselines.prediction_grid(images, gts, preds, scale=2, gap=1)
    assert grid.shape == (2 * 4 + 1, 3 * 6 + 2, 3) and grid.dtype == np.uint8
    assert (grid[4, :] == 255).all() and (grid[:, 6] == 255).all() and (grid[:, 13] == 255).all()
    assert (grid[0:4, 0:6] == 10).all() and (grid[5:9, 0:6] == 20).all()     # column 1: images
    assert (grid[5:7, 7:9] == 255).all() and grid[5:9, 9:13].max() == 0      # column 2: GT
    assert (grid[2:4, 18:20] == 255).all() and grid[0:2, 14:20].max() == 0   # column 3: preds
    assert (grid[5:9, 14:20] == 128).all()                                  # round(127.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        baselines.prediction_grid(images, gts, preds * 3)
    with pytest.raises(ValueError, match="gts and preds"):
        baselines.prediction_grid(images, gts[:1], preds)


# ---- the end of `python -m codext train` -------------------------------------------------------

TINY = ["train", "--backbone", "edgenext_tiny_test", "--img-size", "32", "--batch-size", "4",
        "--epochs", "1", "--stage1-epochs", "0", "--decoder-dim", "8", "--num-experts", "2",
        "--synthetic-train", "8", "--synthetic-test", "3", "--seed", "3", "--num-threads", "2"]


def test_train_prints_the_baselines_and_writes_the_grid(tmp_path, capsys):
    ck = tmp_path / "ck"
    assert cli.main(TINY + ["--checkpoint-dir", str(ck)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("test set (3 images)"))
    assert lines[header].split()[-3:] == ["S", "MAE", "IoU"]
    import codext
    gts = list(codext.data.synthetic(0, 3, 32, 3).test.masks)
    expected = baselines.baseline_metrics(gts)
    for name in ("all foreground", "centred Gaussian blob"):
        row = next(line for line in lines[header:] if line.strip().startswith(name))
        assert [float(v) for v in row.split()[-3:]] == pytest.approx(
            [expected[name][k] for k in ("sm", "mae", "iou")], abs=6e-5)
    grid = ck / baselines.GRID_NAME
    assert f"predictions: {grid}" in out
    w, h, colour, pixels = read_png(grid.read_bytes())
    # 3 rows of 32x32 tiles scaled by 4, gaps of 2: image | ground truth | prediction
    assert (w, h, colour) == (3 * 128 + 2 * 2, 3 * 128 + 2 * 2, 2)
    assert np.array_equal(pixels[:128:4, :128:4], codext.data.synthetic(0, 1, 32, 3).test.images[0])
