"""atheris harness: image and mask files through the dataset loader's decoding path.

What codext.data.load does to each pair (codext/_datacache.py, _decode_group), and
`predict` to each image: decode_image / decode_mask / mask_size (Pillow, then the mask
rules of csrc/data/mask.c), then the C resizes (csrc/data/resize.c) to the training size
and, for masks, to their own size (masks_full).

Input: byte 0 chooses what the rest is: bit 0 an image (0) or a mask (1); bits 1-3 the
training size (SIZES); the remaining bytes are the file (PNG, JPEG, BMP, TIFF, GIF, WebP,
whatever Pillow opens). Pillow's decompression-bomb limit is lowered to BOMB_PIXELS
here so that huge-declared files cost milliseconds (the project keeps Pillow's default;
the refusal is the same exception).

Accepted: the arrays have the documented dtype and shape and resize without error (the
loader does not catch errors there); masks hold 0 and 255 only; a
float mask holding NaN or infinity, or an integer mask holding negative levels, must have
been refused. Refused: OSError, ValueError, SyntaxError or PIL's DecompressionBombError,
with a message (what decode errors the loader and `predict` report).
"""
import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pyharness  # noqa: E402
from pyharness import expect, refused  # noqa: E402

READER = "images"
INSTRUMENT = ("codext", "PIL")
SIZES = (8, 9, 13, 16, 31, 32, 64, 1)
BOMB_PIXELS = 1 << 22

_m = {}


def setup():
    if _m:
        return
    import numpy as np
    from PIL import Image
    import codext  # noqa: F401
    from codext import _C, _datacache
    Image.MAX_IMAGE_PIXELS = BOMB_PIXELS
    _m.update(np=np, Image=Image, C=_C, cache=_datacache,
              allowed=(OSError, ValueError, SyntaxError, Image.DecompressionBombError))


def _independent_levels(blob):
    """The mask's levels as Pillow decodes them without codext, or None."""
    Image, np = _m["Image"], _m["np"]
    try:
        with Image.open(io.BytesIO(blob)) as im:
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                return np.asarray(im)
    except Exception:  # the harness's own look; codext's decode is what is checked
        return None
    return None


def one_input(data):
    setup()
    if len(data) < 1:
        return
    np, C, cache = _m["np"], _m["C"], _m["cache"]
    role, size, blob = data[0] & 1, SIZES[(data[0] >> 1) & 7], bytes(data[1:])
    if role == 0:
        try:
            image = cache.decode_image(io.BytesIO(blob))
        except Exception as e:
            return refused(e, _m["allowed"], "decode_image")
        expect(isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
               and image.shape[2] == 3, f"decode_image gave {type(image)} {getattr(image, 'shape', '')}")
        out = np.zeros((size, size, 3), np.uint8)
        C.resize_image(image, size, size, out=out)  # the loader does not expect this to fail
        return
    try:
        h, w = cache.mask_size(io.BytesIO(blob))
        mask = cache.decode_mask(io.BytesIO(blob))
    except Exception as e:
        return refused(e, _m["allowed"], "decode_mask")
    levels = _independent_levels(blob)
    if levels is not None and levels.size:
        if levels.dtype.kind == "f":
            expect(bool(np.all(np.isfinite(levels))), "a float mask holding NaN or infinity was accepted")
        expect(levels.min() >= 0, f"a mask with negative levels (min {levels.min()}) was accepted")
    expect(isinstance(mask, np.ndarray) and mask.dtype == np.uint8 and mask.shape == (h, w),
           f"decode_mask gave {getattr(mask, 'dtype', type(mask))} {getattr(mask, 'shape', '')}, "
           f"mask_size said {(h, w)}")
    for out_h, out_w in ((size, size), (h, w)):
        out = np.zeros((out_h, out_w), np.uint8)
        C.resize_mask(mask, out_h, out_w, out=out)  # nor this
        expect(bool(np.all((out == 0) | (out == 255))), "resize_mask gave levels other than 0/255")


if __name__ == "__main__":
    pyharness.run(sys.modules[__name__])
