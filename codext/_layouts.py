"""Recognises the folder layouts of the COD datasets (used by codext.data.load).

Folder names are matched case-insensitively:

- image folders: Imgs, Image, Images, Img, JPEGImages
- mask folders (first match wins): GT_Object, GT, GTs, Masks, Mask, GT_Objects
  (never GT_Edge or GT_Instance)
- train folders: Train, Training, TrainDataset, Train_Dataset
- test folders: Test, Testing, TestDataset, Test_Dataset

Layouts, tried in this order at the given folder:

1. split folders: <root>/<train>/{<images>,<masks>} and/or <root>/<test>/{<images>,<masks>},
   where a train or test folder may instead hold one folder per set, each with
   {<images>,<masks>}. This covers COD10K-v3 (Train|Test/Image + GT_Object) and SINet-V2's
   packaging (TrainDataset/{Imgs,GT}, TestDataset/{CAMO,CHAMELEON,COD10K,NC4K}/{Imgs,GT}).
2. CAMO: <root>/<images>/{Train,Test} with the masks of both splits in one <root>/<masks>
   folder (CAMO-V.1.0-CVIU2019), or in <root>/<masks>/{Train,Test}.
3. one set: <root>/{<images>,<masks>} (NC4K, CHAMELEON, a SINet-V2 set). It is a training
   set when the folder's name contains "train", else a test set.
4. a collection: each folder one or two levels below the root matched by 1-3 (e.g. a
   Kaggle dataset holding COD10K-v3, CAMO-V.1.0-CVIU2019 and NC4K side by side). All
   training sets are merged; each test set stays separate.

Images and masks are paired by file stem (a.jpg with a.png). COD10K's non-camouflaged
images (names starting COD10K-NonCAM) are dropped unless include_noncam. Hidden files
(".DS_Store", "._x.jpg") are ignored.
"""
import os
from dataclasses import dataclass, field

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
IMAGE_DIRS = ("imgs", "image", "images", "img", "jpegimages")
MASK_DIRS = ("gt_object", "gt", "gts", "masks", "mask", "gt_objects")
TRAIN_DIRS = ("train", "training", "traindataset", "train_dataset")
TEST_DIRS = ("test", "testing", "testdataset", "test_dataset")
KNOWN_SETS = ("COD10K", "CAMO", "NC4K", "CHAMELEON")  # preference for the primary test set

TRIED = (
    "split folders: Train|TrainDataset and/or Test|TestDataset, each holding "
    "{Image|Imgs|Images} + {GT_Object|GT|Masks} or one such folder per set (COD10K-v3, SINet-V2)",
    "CAMO: Images/{Train,Test} + GT (CAMO-V.1.0-CVIU2019)",
    "one set: {Imgs|Image|Images} + {GT|GT_Object|Masks} (NC4K, CHAMELEON)",
    "a collection of the above one or two folders down",
)


class DatasetLayoutError(FileNotFoundError):
    """No known dataset layout at the given path (the message says what was found)."""


@dataclass
class SetSpec:
    """One image set: (stem, image path, mask path) triples, sorted by stem."""
    split: str  # "train" or "test"
    name: str
    folder: str
    pairs: list = field(default_factory=list)
    images_without_masks: list = field(default_factory=list)  # paths
    masks_without_images: list = field(default_factory=list)
    duplicates: list = field(default_factory=list)  # paths ignored: same stem twice
    dropped_noncam: int = 0


@dataclass
class Layout:
    kind: str
    root: str
    sets: list


def set_name(folder_name):
    """Canonical set name from a folder name ("COD10K-v3" -> "COD10K")."""
    low = folder_name.lower()
    for known in KNOWN_SETS:
        if known.lower() in low:
            return known
    return folder_name


def _subdirs(path):
    try:
        with os.scandir(path) as it:
            return sorted((e.name for e in it if e.is_dir() and not e.name.startswith(".")))
    except OSError:
        return []


def _find_dir(path, wanted):
    """Child folder of `path` whose lower-cased name is the first of `wanted` present."""
    by_low = {}
    for name in _subdirs(path):
        by_low.setdefault(name.lower(), name)
    for want in wanted:
        if want in by_low:
            return os.path.join(path, by_low[want])
    return None


def _image_files(folder):
    """{stem: path} of the image files in `folder`, plus paths ignored as duplicates."""
    files, duplicates = {}, []
    try:
        with os.scandir(folder) as it:
            entries = sorted(e.name for e in it if e.is_file() and not e.name.startswith("."))
    except OSError:
        return files, duplicates
    for name in entries:
        stem, ext = os.path.splitext(name)
        if ext.lower() not in IMAGE_EXTS:
            continue
        path = os.path.join(folder, name)
        if stem in files:
            duplicates.append(path)
        else:
            files[stem] = path
    return files, duplicates


def pair_folder(folder):
    """(image folder, mask folder) when `folder` holds both, else None."""
    images = _find_dir(folder, IMAGE_DIRS)
    masks = _find_dir(folder, MASK_DIRS)
    return (images, masks) if images and masks else None


def make_set(split, name, folder, image_dir, mask_dir, include_noncam, image_files=None,
             mask_files=None):
    images, dup_i = _image_files(image_dir) if image_files is None else (image_files, [])
    masks, dup_m = _image_files(mask_dir) if mask_files is None else (mask_files, [])
    spec = SetSpec(split, name, folder, duplicates=dup_i + dup_m)
    if not include_noncam:
        for files in (images, masks):
            drop = [s for s in files if s.startswith("COD10K-NonCAM")]
            for s in drop:
                del files[s]
            if files is images:
                spec.dropped_noncam = len(drop)
    spec.pairs = [(s, images[s], masks[s]) for s in sorted(images) if s in masks]
    spec.images_without_masks = [images[s] for s in sorted(images) if s not in masks]
    spec.masks_without_images = [masks[s] for s in sorted(masks) if s not in images]
    return spec


def _split_layout(root, include_noncam, problems):
    """Layout 1. Returns a list of SetSpec or None."""
    found = []
    for split, wanted in (("train", TRAIN_DIRS), ("test", TEST_DIRS)):
        folder = _find_dir(root, wanted)
        if not folder:
            continue
        pair = pair_folder(folder)
        if pair:
            base = os.path.basename(os.path.abspath(root))
            name = "train" if split == "train" else set_name(base)
            found.append(make_set(split, name, folder, *pair, include_noncam))
            continue
        nested = [(sub, pair_folder(os.path.join(folder, sub))) for sub in _subdirs(folder)]
        nested = [(sub, p) for sub, p in nested if p]
        if nested:
            for sub, p in nested:
                found.append(make_set(split, set_name(sub), os.path.join(folder, sub), *p,
                                      include_noncam))
        else:
            problems.append(f"{folder} has no image folder (Image|Imgs|Images) next to a mask "
                            f"folder (GT_Object|GT|Masks), nor set folders holding them")
    return found or None


def _camo_layout(root, include_noncam, problems):
    """Layout 2: <images>/{Train,Test} + one mask folder."""
    image_root = _find_dir(root, IMAGE_DIRS)
    mask_root = _find_dir(root, MASK_DIRS)
    if not image_root:
        return None
    splits = [(split, _find_dir(image_root, wanted))
              for split, wanted in (("train", TRAIN_DIRS), ("test", TEST_DIRS))]
    splits = [(s, d) for s, d in splits if d]
    if not splits:
        return None
    if not mask_root:
        problems.append(f"{image_root} has Train/Test folders but {root} has no mask folder "
                        f"(GT|GT_Object|Masks)")
        return None
    flat_masks, _ = _image_files(mask_root)
    found = []
    for split, image_dir in splits:
        wanted = TRAIN_DIRS if split == "train" else TEST_DIRS
        mask_dir = _find_dir(mask_root, wanted)
        mask_files = _image_files(mask_dir)[0] if mask_dir else dict(flat_masks)
        image_files, dups = _image_files(image_dir)
        if not mask_dir:
            # one mask folder for both splits: its other split's masks are not "missing images"
            mask_files = {s: p for s, p in mask_files.items() if s in image_files}
        name = "train" if split == "train" else set_name(os.path.basename(os.path.abspath(root)))
        spec = make_set(split, name, image_dir, image_dir, mask_root, include_noncam,
                        image_files=image_files, mask_files=mask_files)
        spec.duplicates += dups
        found.append(spec)
    return found


def _flat_layout(root, include_noncam, problems):
    pair = pair_folder(root)
    if not pair:
        return None
    root_abs = os.path.abspath(root)
    base = os.path.basename(root_abs)
    split = "train" if "train" in base.lower() else "test"
    if base.lower() in TRAIN_DIRS + TEST_DIRS:  # e.g. COD10K-v3/Test: name it after its parent
        base = os.path.basename(os.path.dirname(root_abs)) or base
    return [make_set(split, "train" if split == "train" else set_name(base), root, *pair,
                     include_noncam)]


def _match(root, include_noncam, problems):
    for recognise in (_split_layout, _camo_layout, _flat_layout):
        sets = recognise(root, include_noncam, problems)
        if sets:
            return recognise.__name__.strip("_").replace("_layout", ""), sets
    return None, None


def describe(root, depth=2, limit=12):
    """What a folder holds, two levels deep, for error messages."""
    def count_files(path):
        try:
            with os.scandir(path) as it:
                return sum(1 for e in it if e.is_file())
        except OSError:
            return 0

    parts = []
    subs = _subdirs(root)
    for name in subs[:limit]:
        path = os.path.join(root, name)
        inner = _subdirs(path) if depth > 1 else []
        n_files = count_files(path)
        bits = []
        if inner:
            shown = ", ".join(f"{s}/ [{count_files(os.path.join(path, s))} files]" for s in inner[:limit])
            bits.append(shown + (f", ... ({len(inner) - limit} more)" if len(inner) > limit else ""))
        if n_files or not inner:
            bits.append(f"{n_files} files")
        parts.append(f"{name}/ ({'; '.join(bits)})")
    if len(subs) > limit:
        parts.append(f"... ({len(subs) - limit} more folders)")
    n_files = count_files(root)
    if n_files:
        parts.append(f"{n_files} files")
    return ", ".join(parts) if parts else "nothing (the folder is empty)"


def scan(root, include_noncam=False):
    """Finds the layout at `root`; raises DatasetLayoutError naming what was tried and found."""
    problems = []
    kind, sets = _match(root, include_noncam, problems)
    if sets:
        return Layout(kind, root, sets)
    # a collection: datasets one or two folders down
    collected, parts = [], []
    for sub in _subdirs(root):
        path = os.path.join(root, sub)
        kind, sets = _match(path, include_noncam, problems)
        if not sets:
            for sub2 in _subdirs(path):
                kind, sets = _match(os.path.join(path, sub2), include_noncam, problems)
                if sets:
                    collected += sets
                    parts.append(f"{sub}/{sub2}: {kind}")
            continue
        collected += sets
        parts.append(f"{sub}: {kind}")
    if collected:
        return Layout("collection (" + ", ".join(parts) + ")", root, collected)
    tried = "".join(f"\n  - {t}" for t in TRIED)
    notes = "".join(f"\n  note: {p}" for p in dict.fromkeys(problems))
    raise DatasetLayoutError(
        f"no COD dataset layout recognised at {root!r}.\nTried:{tried}\n"
        f"Found: {describe(root)}{notes}")
