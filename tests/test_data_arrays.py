"""from_arrays validation, and sharing datasets with worker processes without copies."""
import gc
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import codext
from codext import data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(codext.__file__)))

CHILD = r"""
import hashlib, json, sys
from codext import data
d = data.Dataset.from_shared(json.loads(sys.stdin.readline()))
def digest(a):
    return hashlib.sha256(a.tobytes()).hexdigest()
out = {"train_images": digest(d.train.images), "train_masks": digest(d.train.masks),
       "test": {k: [digest(s.images), digest(s.masks), [digest(m) for m in s.masks_full or []]]
                for k, s in d.tests.items()},
       "names": d.train.names, "writeable": bool(d.train.images.flags.writeable)}
print(json.dumps(out), flush=True)
sys.stdin.readline()  # the parent writes into the shared memory, then wakes us
print(int(d.train.images[0, 0, 0, 0]), flush=True)
"""


def digest(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def run_child(dataset):
    """Starts a worker the way launch() would (pass_fds), returns (first reply, process)."""
    info = dataset.share()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, pass_fds=dataset.fds(), env=env)
    proc.stdin.write(json.dumps(info) + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise AssertionError(f"child failed with exit code {proc.returncode}")
    return json.loads(line), proc


def check_same_bytes(dataset, reply):
    assert reply["train_images"] == digest(dataset.train.images)
    assert reply["train_masks"] == digest(dataset.train.masks)
    assert reply["names"] == dataset.train.names
    assert not reply["writeable"]  # workers map read-only
    for name, split in dataset.tests.items():
        assert reply["test"][name] == [digest(split.images), digest(split.masks),
                                       [digest(m) for m in split.masks_full]]


def test_child_maps_memfd_of_user_arrays():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 24, 24, 3), dtype=np.uint8)
    masks = rng.random((5, 24, 24)) > 0.7  # bool masks become 0/255
    d = data.from_arrays(images, masks, images[:2], masks[:2])
    assert d.train.images is images  # no copy until shared
    assert d.fds()  # moved into a memfd
    assert np.array_equal(d.train.images, images) and d.train.images is not images
    reply, proc = run_child(d)
    try:
        check_same_bytes(d, reply)
        d.train.images[0, 0, 0, 0] = 201  # visible in the child: one copy, shared
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "201"
    finally:
        proc.stdin.close()
        proc.wait(10)
    assert proc.returncode == 0


def test_child_maps_synthetic_data():
    d = data.synthetic(6, 3, 32, seed=2)
    reply, proc = run_child(d)
    proc.stdin.write("go\n")
    proc.stdin.close()
    proc.wait(10)
    check_same_bytes(d, reply)
    assert proc.returncode == 0


def test_child_maps_cache_files(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image
    root = tmp_path / "NC4K"
    os.makedirs(root / "Imgs")
    os.makedirs(root / "GT")
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(root / f"Imgs/{i}.png")
        Image.fromarray(np.full((20, 30), 255 * (i % 2), np.uint8)).save(root / f"GT/{i}.png")
    d = data.load(str(root), img_size=16, cache_dir=str(tmp_path / "cache"), progress=False)
    assert d.fds() == []  # file-backed: nothing to pass
    assert d.tests["NC4K"].share()["images"]["path"].startswith(str(tmp_path / "cache"))
    reply, proc = run_child(d)
    proc.stdin.write("go\n")
    proc.stdin.close()
    proc.wait(10)
    check_same_bytes(d, reply)


def test_from_shared_in_process_and_repr():
    d = data.synthetic(3, 2, 32, seed=0)
    again = data.Dataset.from_shared(d.share())
    assert np.array_equal(again.test.masks_full[1], d.test.masks_full[1])
    assert again.share() == d.share()
    assert "train=3 images" in repr(d) and "synthetic: 2" in repr(d)
    assert repr(d.train) == "Split('train', 3 images of 32x32)"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_memfd_closed_with_the_dataset():
    d = data.synthetic(2, 0, 16, seed=0)
    fds = d.fds()
    target = os.readlink(f"/proc/self/fd/{fds[0]}")
    assert "memfd:codext-synthetic" in target
    del d
    gc.collect()
    for fd in fds:
        try:
            assert os.readlink(f"/proc/self/fd/{fd}") != target
        except OSError:
            pass  # closed


# ---- from_arrays validation --------------------------------------------------------------

def good(n=4, h=8, w=8):
    rng = np.random.default_rng(1)
    return (rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8),
            (rng.random((n, h, w)) > 0.5).astype(np.uint8) * 255)


def test_from_arrays_accepts_uint8_and_bool():
    images, masks = good()
    d = data.from_arrays(images, masks)
    assert d.img_size == 8 and len(d.train) == 4 and len(d.test) == 0 and d.tests == {}
    d = data.from_arrays(images, masks > 0, images, masks)
    assert np.array_equal(d.train.masks, masks) and d.train.masks.dtype == np.uint8
    assert len(d.test.masks_full) == 4
    rect = data.from_arrays(*good(h=8, w=12))
    assert rect.img_size == (8, 12)


@pytest.mark.parametrize("change,error,pattern", [
    (lambda i, m: (i.astype(np.float32), m), TypeError, r"images must have dtype uint8 \(0..255\), got float32"),
    (lambda i, m: (i.tolist(), m), TypeError, "images must be a numpy array"),
    (lambda i, m: (i[..., 0], m), ValueError, r"images must have shape \[N, H, W, 3\]"),
    (lambda i, m: (i[..., :2], m), ValueError, r"got \(4, 8, 8, 2\)"),
    (lambda i, m: (i, m.astype(np.int64)), TypeError, r"masks must be uint8 holding 0/255 \(or 0/1\) or bool, got int64"),
    (lambda i, m: (i, m.astype(np.float32) / 255), TypeError, "got float32"),
    (lambda i, m: (i, m // 255 + 2 * np.eye(8, dtype=np.uint8)), ValueError,
     r"only 0 and 255.*found values \[0, 1, 2, 3\].*> 0\)"),  # 0/1 alone is binary (test_masks.py)
    (lambda i, m: (i, m[:3]), ValueError, "does not match images shape"),
    (lambda i, m: (i, m[:, :7]), ValueError, "does not match images shape"),
    (lambda i, m: (i, m[..., None]), ValueError, r"masks must have shape \[N, H, W\]"),
])
def test_from_arrays_rejects(change, error, pattern):
    images, masks = change(*good())
    with pytest.raises(error, match=pattern):
        data.from_arrays(images, masks)


def test_from_arrays_test_split_errors():
    images, masks = good()
    with pytest.raises(ValueError, match="both test_images and test_masks"):
        data.from_arrays(images, masks, test_images=images)
    small_i, small_m = good(h=4, w=4)
    with pytest.raises(ValueError, match="one image size per dataset"):
        data.from_arrays(images, masks, small_i, small_m)
    with pytest.raises(TypeError, match="test_masks must be uint8"):
        data.from_arrays(images, masks, images, masks.astype(np.float64))
