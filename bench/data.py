"""Data path throughput: synthetic generation, augmentation, and first/second load.

    python bench/data.py                  # all cores
    python bench/data.py --threads 1      # one core

Prints images/s for: the synthetic camouflage set (352x352), augment_batch with and
without augmentation (batch 32 at 352x352), and codext.data.load on a fake COD10K-style
folder of JPEGs written here (decode + resize + cache on the first load, cache
memory-map on the second).
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import codext  # noqa: E402
from codext import _C, data  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--size", type=int, default=352)
    parser.add_argument("--n-synthetic", type=int, default=256)
    parser.add_argument("--n-files", type=int, default=120)
    args = parser.parse_args()
    if args.threads:
        codext.set_num_threads(args.threads)
    s = args.size
    print(f"codext data bench: {codext.get_num_threads()} threads, img_size {s}")

    _C.synthetic(4, s, 0)  # warm-up
    dt, (images, masks) = timed(lambda: _C.synthetic(args.n_synthetic, s, 0))
    print(f"synthetic:          {args.n_synthetic / dt:8.1f} images/s  ({1000 * dt / args.n_synthetic:.2f} ms each)")

    idx = np.arange(32) % len(images)
    for train in (True, False):
        data.augment_batch(images, masks, idx, train=train)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 2.0:
            data.augment_batch(images, masks, idx, epoch=reps, train=train)
            reps += 1
        rate = 32 * reps / (time.perf_counter() - t0)
        print(f"augment_batch({'train' if train else 'eval '}): {rate:8.1f} images/s")

    try:
        from PIL import Image
    except ImportError:
        print("load: skipped (pip install pillow)")
        return
    tmp = tempfile.mkdtemp(prefix="codext-bench-")
    try:
        root = os.path.join(tmp, "COD10K-v3")
        for split in ("Train", "Test"):
            os.makedirs(os.path.join(root, split, "Image"))
            os.makedirs(os.path.join(root, split, "GT_Object"))
        rng = np.random.default_rng(0)
        for i in range(args.n_files):  # COD10K-sized JPEGs from the synthetic set
            split = "Train" if i % 2 == 0 else "Test"
            img = _C.resize_image(images[i % len(images)], 768, 1024)
            img = np.clip(img.astype(np.int16) + rng.integers(-3, 4, img.shape), 0, 255).astype(np.uint8)
            name = f"COD10K-CAM-1-Aquatic-1-Fish-{i}"
            Image.fromarray(img).save(os.path.join(root, split, "Image", name + ".jpg"), quality=90)
            Image.fromarray(_C.resize_mask(masks[i % len(masks)], 768, 1024)).save(
                os.path.join(root, split, "GT_Object", name + ".png"))
        cache = os.path.join(tmp, "cache")
        dt, _ = timed(lambda: data.load(root, img_size=s, cache_dir=cache, progress=False))
        print(f"load, first (1024x768 JPEG decode + resize + cache): {args.n_files / dt:8.1f} images/s")
        dt, d = timed(lambda: data.load(root, img_size=s, cache_dir=cache, progress=False))
        print(f"load, second (cache):  {1000 * dt:.1f} ms for {len(d.train) + len(d.test)} images")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
