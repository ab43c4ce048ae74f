"""The synthetic camouflage set is pinned: its bytes change only on purpose.

Every demo figure, the CLI's default run and several tests train or score on the set made by
csrc/data/synthetic.c. A change to its formulas (a constant, a rounding, the order of the
RNG draws) would silently move all of them, so a few images and masks are pinned here by
the SHA-256 of their bytes, per (seed, split, index, size).

Changing the generator on purpose: make the change, then run
    PYTHONPATH=. python3 tests/test_synthetic_pinned.py
which prints the table below for the current build; paste it over PINNED in the SAME commit
as the generator change and say in the commit message why the set changed (and re-measure
what depends on it: README's demo numbers, bench/train_synthetic.py's tables).

Portability: the generator uses libm (sin, cos, exp, atan2, sqrt) and float arithmetic
without fused multiply-add contraction (C11 mode with GCC; x86-64 without -march has no FMA).
The table was made on x86-64 with glibc; another libm, or a target where the compiler
contracts a*b+c into FMA (aarch64 with clang, -march=native with FMA), may differ in the last
bit of a few values and so in a few pixels. Such a mismatch is reported as such below.
"""
import hashlib

import numpy as np
import pytest

from codext import _C, data

TRAIN, TEST = 0, 1  # the split's stream number in cx_synthetic

# (seed, split, index, size): (sha256 of the image [size, size, 3] uint8, of the mask [size, size])
PINNED = {
    (0, TRAIN, 0, 64): ("cb0d59b44b984fdad7c969d3bc4c6135a6be039171ecbe9ad56456e3ba84c5b5",
                        "40c8bbdd92b293ffe6ae2ab791a528b91e43ac524f9a4c962b99baca7b7adfc6"),
    (0, TRAIN, 1023, 64): ("560f06e2a45d162d97e56c0a9a5b106c741e4db2e497694b4ade692a281873dc",
                           "fad1ba89d34a4aade89050034b681abd7ef1881b6f7f33a36060237a3f2f423e"),
    (0, TEST, 0, 64): ("19c0fdd1ad5842f5e5a7c07d2c51a846dc0a2385b5e2b6630065a838fcba2cbf",
                       "8186ddd69f2863506d4be1c3ebf1c02ca82d21159f086948ba1a78169740c525"),
    (0, TEST, 255, 64): ("461419d00423221afb0950eeb7a053c592cebb23715102bba7582ff3b07d4505",
                         "682b2d984b9fcb41b6405721f2913f36ac504c52320001b84f7c81a28612abea"),
    (3, TRAIN, 2, 96): ("3972a05794a95e88aff8f3e0ecc21cb1534a8617198d6d037cf1a58f21de3ae6",
                        "93f8c8c950d0635400cd40999da0ad27de26e7309af0022443cb06d2ab6ed8fe"),
    (11, TEST, 5, 37): ("18abfe96cfd02b2d995b1fc658e704ee74c1bd86db3a97a351112ad22f7f0265",
                        "5993e7d599668b6a8d4e64b3cc478a19637c5275b67c23568959d311eaf09422"),
    (2**63 + 5, TRAIN, 17, 64): ("8eef99df48d0df24093f1877f723664524c0fc24e3fa5f423643b44b636ecd9a",
                                 "2ccd826e627f6d8762713689483237762358e1614cb08351493fb2219b8ef0b6"),
    (1, TRAIN, 3, 352): ("0377c8f5de4f53178cf19a415f324972319f70463f7ca527c5c26c20857645cc",
                         "15bdf1fc6a27ab742a75c3bee5c4270c5b9851bdb35fc213be3ed8dbbddc4b7a"),
}


def sha256(array):
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def make_one(seed, split, index, size):
    images, masks = _C.synthetic(1, size, seed, split, index)
    assert images.shape == (1, size, size, 3) and images.dtype == np.uint8
    assert masks.shape == (1, size, size) and masks.dtype == np.uint8
    return images[0], masks[0]


@pytest.mark.parametrize("key", sorted(PINNED), ids=lambda k: "seed%d-%s-i%d-s%d" % (
    k[0], "train" if k[1] == TRAIN else "test", k[2], k[3]))
def test_image_and_mask_bytes_are_pinned(key):
    image, mask = make_one(*key)
    want_image, want_mask = PINNED[key]
    got_image, got_mask = sha256(image), sha256(mask)
    assert (got_image, got_mask) == (want_image, want_mask), (
        f"synthetic image {key} (seed, split, index, size) changed: image sha256 {got_image} "
        f"(pinned {want_image}), mask sha256 {got_mask} (pinned {want_mask}). If the generator "
        "was changed on purpose, update PINNED as this file's docstring says.")


def test_the_public_api_gives_the_pinned_images():
    """codext.data.synthetic numbers splits and indices as the table does (train 0.., test 0..)."""
    d = data.synthetic(n_train=2, n_test=1, img_size=64, seed=0)
    assert (sha256(d.train.images[0]), sha256(d.train.masks[0])) == PINNED[(0, TRAIN, 0, 64)]
    assert (sha256(d.test.images[0]), sha256(d.test.masks[0])) == PINNED[(0, TEST, 0, 64)]
    assert sha256(d.test.masks_full[0]) == PINNED[(0, TEST, 0, 64)][1]


def test_a_changed_byte_changes_the_checksum():
    """The check is sensitive: one pixel off by one is a different checksum."""
    image, mask = make_one(0, TRAIN, 0, 64)
    image = image.copy()
    image[31, 17, 2] ^= 1
    assert sha256(image) != PINNED[(0, TRAIN, 0, 64)][0]


if __name__ == "__main__":
    # Prints PINNED for the current build (see the docstring before pasting it).
    names = {TRAIN: "TRAIN", TEST: "TEST"}
    print("PINNED = {")
    for seed, split, index, size in sorted(PINNED):
        image, mask = make_one(seed, split, index, size)
        seed_text = "2**63 + 5" if seed == 2**63 + 5 else str(seed)
        head = f"    ({seed_text}, {names[split]}, {index}, {size}): ("
        print(f'{head}"{sha256(image)}",\n{" " * len(head)}"{sha256(mask)}"),')
    print("}")
