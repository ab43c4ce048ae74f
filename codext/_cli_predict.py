"""``python -m codext predict``: one PNG mask per input image (codext/cli.py dispatches here)."""
import os
import time

from .cli import UsageError, _load_model


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(path):
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, f)))
        if not files:
            raise UsageError(f"--input {path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
        return files
    if not os.path.isfile(path):
        raise UsageError(f"--input {path}: no such file or folder")
    return [path]


def cmd_predict(args):
    """predict --checkpoint PATH --input IMG_OR_DIR --output DIR."""
    files = list_images(args.input)
    stems = {}
    for f in files:
        stems.setdefault(os.path.splitext(os.path.basename(f))[0], []).append(f)
    clashes = [v for v in stems.values() if len(v) > 1]
    if clashes:
        raise UsageError(f"--input: these images would write the same mask name: {clashes[0]}")
    try:
        from PIL import Image
    except ImportError:
        raise RuntimeError("predict needs Pillow to read and write images: pip install pillow") from None
    import codext
    from codext._datacache import decode_image
    path, model = _load_model(args)
    os.makedirs(args.output, exist_ok=True)
    t0 = time.perf_counter()
    for start in range(0, len(files), args.batch_size):
        chunk = files[start:start + args.batch_size]
        images = []
        for f in chunk:
            try:
                images.append(decode_image(f))
            except Image.DecompressionBombError as e:
                raise ValueError(f"{f}: refused as a possible decompression bomb ({e})") from None
            except (OSError, SyntaxError, ValueError) as e:
                raise OSError(f"{f}: cannot read the image ({e})") from None
        probs = model.predict(images, batch_size=args.batch_size)
        for f, p in zip(chunk, probs):
            out = os.path.join(args.output, os.path.splitext(os.path.basename(f))[0] + ".png")
            # probabilities in [0, 1]: to_uint8_levels scales them by 255 and rounds
            Image.fromarray(codext.data.to_uint8_levels(p), mode="L").save(out)
    print(f"wrote {len(files)} mask(s) to {args.output} with {path} "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    return 0
