"""PASCAL Context-59 -> canonical format (protocol.md, "PASCAL Context-59").

Sources (ldvc/data/sources.py):
- images and the split lists: the PASCAL VOC 2010 trainval tar (VOCtrainval_03-May-2010.tar,
  md5 published in torchvision's VOC dataset code): VOCdevkit/VOC2010/JPEGImages and
  ImageSets/Main/{train,val}.txt;
- labels: the PASCAL-Context release of the dataset authors (Mottaghi et al., CVPR 2014,
  cs.stanford.edu/~roozbeh/pascal-context/trainval.tar.gz): trainval/<id>.mat, each holding
  `LabelMap`, an (H, W) uint16 map of the 459-class ids listed in labels.txt ("2: aeroplane").
  No checksum is published for it: the sha256 actually downloaded is recorded in meta.json.

Why this annotation source and not mmsegmentation's: mmseg's converter
(tools/dataset_converters/pascal_context.py) reads trainval_merged.json through the Detail API
(ccvl/detail-api); that JSON is a re-encoding of the same annotations made for the "PASCAL in
Detail" challenge (its masks hold only the 59 classes: mmseg's converter asserts that every value is
one of them), covers 10,100 of the 10,103 images, and its one download host
(codalabuser.blob.core.windows.net) is no longer dependable (at least one project now fetches a
Wayback Machine snapshot of it). The .mat release is the authors' own, needs only scipy,
and ships labels.txt, so the id -> name mapping is checked against the archive itself on every
conversion. Not verifiable offline: that the Detail RLE masks equal the .mat label maps pixel for
pixel (both come from the same annotation effort; no difference is documented).

Mapping (the same as mmseg's PascalContextDataset59): mmseg's `_mapping` holds 0 and the 59
459-class ids of the classes [2 aeroplane, 9 bag, 18 bed, ..., 458 wood]; sorted, they number
the classes 1..59 in ascending 459-id order, which is the alphabetical CLASSES order of mmseg and
Cascade-CLIP (CONTEXT59_CLASSES). reduce_zero_label then turns 0 (background = every other class
and unlabelled) into 255 and 1..59 into train ids 0..58. Here in one step: 459-class id
CONTEXT59_RAW_IDS[k] -> train id k; 0 (unlabelled) and the other 400 classes -> 255 (ignore);
a value above 459 is a corrupt file and raises. That the Detail category ids used by mmseg ARE the
labels.txt ids was checked: looked up in CAT-Seg's datasets/pc459.json (the labels.txt names in id
order, used there with LabelMap - 1 as index), the 59 sorted `_mapping` ids name exactly
Cascade-CLIP's 59 classes in order; labels.txt itself is verified again at every conversion.

Splits: the official definition. PASCAL-Context annotates all 10,103 VOC2010 trainval images and
uses VOC2010's own train/val split (ImageSets/Main/train.txt 4,998 ids, val.txt 5,105 ids); the
annotation release ships no lists of its own. mmseg's 4,996 / 5,104 are the "train" / "val"
phases of the Detail JSON, which holds 10,100 of the 10,103 images (counts given by the Detail API
maintainers in ccvl/detail-api issue #1; PyTorch-Encoding issue #155: "the training and test
splits were slightly changed by the dataset organizers"); which 3 ids were dropped is not published.
We keep the official 4,998 / 5,105: a deviation of 2 training images and 1 of 5,105 validation
images from the lists behind the published mmseg-based numbers. With the official lists
(4,998 + 5,105 ids) the annotation release must hold exactly their 10,103 .mat files; smaller
lists (tests, subsets) are used as given, and every listed id must have an image and a .mat.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from ldvc.data import canonical
from ldvc.data.classes import CONTEXT59_CLASSES
from ldvc.data.voc import VocLayoutError, find_dir, read_id_list

# 459-class ids (PASCAL-Context labels.txt) of the 59 classes, in train-id order (= ascending id).
CONTEXT59_RAW_IDS: tuple[int, ...] = (
    2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105, 113, 115,
    144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308, 324, 326, 347, 349,
    354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458,
)
NUM_RAW = 459  # labels.txt ids 1..459; 0 = unlabelled
OFFICIAL_COUNTS = {"train": 4998, "val": 5105}  # VOC2010 ImageSets/Main
DETAIL_COUNTS = {"train": 4996, "val": 5104}  # mmseg / Detail JSON (documentation only)
OFFICIAL_TRAINVAL = 10103

assert len(CONTEXT59_RAW_IDS) == len(CONTEXT59_CLASSES) == 59
assert list(CONTEXT59_RAW_IDS) == sorted(set(CONTEXT59_RAW_IDS))


def raw_to_train_lut() -> np.ndarray:
    """(65536,) uint8 lookup table: 459-class id -> train id (255 = ignore)."""
    lut = np.full(1 << 16, 255, dtype=np.uint8)
    lut[list(CONTEXT59_RAW_IDS)] = np.arange(len(CONTEXT59_RAW_IDS), dtype=np.uint8)
    return lut


RAW_TO_TRAIN = raw_to_train_lut()


class ContextLayoutError(VocLayoutError):
    """The extracted VOC2010 / PASCAL-Context data does not have the expected layout."""


class ContextAnnotationError(ValueError):
    """A PASCAL-Context annotation file cannot be read or holds invalid values (names the file)."""


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_label_map(path: str | Path) -> np.ndarray:
    """(H, W) int64 459-class ids of a PASCAL-Context trainval/<id>.mat (`LabelMap`)."""
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises many types for truncated / non-MAT / v7.3 files
        raise ContextAnnotationError(
            f"{path}: cannot read this PASCAL-Context annotation ({type(exc).__name__}: {exc}); the file is "
            f"corrupt or not from trainval.tar.gz: delete the extracted copy (and the archive) and prepare again"
        ) from None
    if "LabelMap" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise ContextAnnotationError(f"{path}: no 'LabelMap' variable (found {keys}); not a PASCAL-Context .mat")
    lab = np.asarray(mat["LabelMap"])
    if lab.ndim != 2 or lab.dtype.kind not in "ui":
        raise ContextAnnotationError(
            f"{path}: LabelMap is {lab.dtype} with shape {lab.shape}; expected an (H, W) integer map"
        )
    lab = lab.astype(np.int64)
    if lab.size and (lab.min() < 0 or lab.max() > NUM_RAW):
        bad = np.unique(lab[(lab < 0) | (lab > NUM_RAW)])[:10].tolist()
        raise ContextAnnotationError(f"{path}: LabelMap values {bad} are outside 0..{NUM_RAW}")
    return lab


def convert_label(raw: np.ndarray) -> np.ndarray:
    """(H, W) 459-class ids (0..459) -> (H, W) uint8 train ids (0..58, 255 = ignore)."""
    return RAW_TO_TRAIN[raw]


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def read_labels_txt(path: Path) -> dict[int, str]:
    """{id: name} of a PASCAL-Context labels.txt ("<id>: <name>" per line)."""
    out: dict[int, str] = {}
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        m = re.fullmatch(r"\s*(\d+)\s*:\s*(.+?)\s*", line)
        if not m:
            raise ContextLayoutError(f"{path}:{n}: expected '<id>: <name>', got {line!r}")
        out[int(m.group(1))] = m.group(2)
    return out


def check_labels_txt(path: Path) -> int:
    """Check that labels.txt names the 59 classes at CONTEXT59_RAW_IDS; returns its entry count."""
    names = read_labels_txt(path)
    wrong = [
        f"{i}: {names.get(i)!r} (expected {c!r})"
        for i, c in zip(CONTEXT59_RAW_IDS, CONTEXT59_CLASSES, strict=True)
        if _normalise(names.get(i, "")) != _normalise(c)
    ]
    if wrong:
        raise ContextLayoutError(
            f"{path}: the 459-class ids of the 59 classes do not name them ({len(wrong)} wrong, first: "
            f"{wrong[:3]}); this is not the PASCAL-Context labels.txt the 59-class mapping is defined on"
        )
    return len(names)


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------


def find_voc2010_root(base: Path) -> Path:
    """The VOC2010 directory (JPEGImages, ImageSets/Main/{train,val}.txt)."""
    try:
        return find_dir(
            base,
            lambda d: (d / "JPEGImages").is_dir() and (d / "ImageSets" / "Main" / "train.txt").is_file()
            and (d / "ImageSets" / "Main" / "val.txt").is_file(),
            "VOC2010 directory (VOCdevkit/VOC2010 with JPEGImages and ImageSets/Main/{train,val}.txt)",
        )
    except VocLayoutError as exc:
        raise ContextLayoutError(str(exc)) from None


def find_context_root(base: Path) -> Path:
    """The directory holding the PASCAL-Context `trainval/` folder of .mat files."""

    def looks_right(d: Path) -> bool:
        t = d / "trainval"
        return t.is_dir() and next(t.glob("*.mat"), None) is not None

    try:
        return find_dir(base, looks_right, "PASCAL-Context annotations (a 'trainval' folder of <id>.mat files)")
    except VocLayoutError as exc:
        raise ContextLayoutError(str(exc)) from None


def find_labels_txt(context_root: Path) -> Path | None:
    for cand in (context_root / "labels.txt", context_root / "trainval" / "labels.txt"):
        if cand.is_file():
            return cand
    return None


def plan_context59(voc_root: Path, context_root: Path) -> dict[str, list[tuple[str, str, str, str]]]:
    """Per split, the (split, id, image file, .mat file) of every image to convert."""
    main = voc_root / "ImageSets" / "Main"
    lists = {s: read_id_list(main / f"{s}.txt") for s in ("train", "val")}
    both = sorted(set(lists["train"]) & set(lists["val"]))
    if both:
        raise ContextLayoutError(f"{main}: {len(both)} ids are in both train.txt and val.txt (first: {both[:3]})")
    mats = {p.stem for p in (context_root / "trainval").glob("*.mat")}
    official = {s: len(ids) for s, ids in lists.items()} == OFFICIAL_COUNTS
    if official and (len(mats) != OFFICIAL_TRAINVAL or mats != set(lists["train"]) | set(lists["val"])):
        extra = sorted(mats - set(lists["train"]) - set(lists["val"]))
        raise RuntimeError(
            f"the official VOC2010 lists (4,998 train + 5,105 val ids) need exactly their {OFFICIAL_TRAINVAL} "
            f"annotations, {context_root / 'trainval'} holds {len(mats)} .mat files (not in the lists: "
            f"{extra[:3]}): the archives are not the official ones"
        )
    plan: dict[str, list[tuple[str, str, str, str]]] = {}
    for split, ids in lists.items():
        missing = sorted(i for i in ids if i not in mats)
        if missing:
            raise ContextLayoutError(
                f"{len(missing)} {split} ids of {main / (split + '.txt')} have no annotation "
                f"{context_root / 'trainval'}/<id>.mat (first: {missing[:3]})"
            )
        items = []
        for i in sorted(set(ids)):
            image = voc_root / "JPEGImages" / f"{i}.jpg"
            if not image.is_file():
                raise ContextLayoutError(f"{image}: image of {split} id {i} not found")
            items.append((split, i, str(image), str(context_root / "trainval" / f"{i}.mat")))
        plan[split] = items
    return plan


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


def _convert_one(item: tuple[str, str, str, str], out: str) -> tuple[str, str]:
    """Worker: copy one image and write its train-id label into the staging tree `out`."""
    split, image_id, image_src, label_src = item
    label = convert_label(read_label_map(label_src))
    _, (h, w) = canonical.write_image(image_src, Path(out) / "images" / split, image_id)
    if (h, w) != label.shape:
        raise ContextAnnotationError(
            f"{label_src}: LabelMap is {label.shape[0]}x{label.shape[1]} but image {image_src} is {h}x{w}"
        )
    canonical.write_label(Path(out) / "labels" / split / f"{image_id}.png", label)
    return split, image_id


def prepare_context59(
    voc_base: Path, context_base: Path, out_root: Path, num_workers: int = 4, source: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Convert extracted VOC2010 (`voc_base`) + PASCAL-Context trainval (`context_base`) into `out_root`."""
    voc_root, context_root = find_voc2010_root(Path(voc_base)), find_context_root(Path(context_base))
    labels_txt = find_labels_txt(context_root)
    n_labels = check_labels_txt(labels_txt) if labels_txt is not None else None
    plan = plan_context59(voc_root, context_root)
    with canonical.staging(out_root) as tmp:
        items = plan["train"] + plan["val"]
        canonical.parallel_map(functools.partial(_convert_one, out=str(tmp)), items, num_workers,
                               "Context-59 -> canonical")
        splits = {s: len(canonical.write_list(tmp, s, [i[1] for i in plan[s]])) for s in ("train", "val")}
        canonical.write_meta(tmp, "context59", CONTEXT59_CLASSES, splits, {
            **(source or {}), "voc2010_root": str(voc_root), "context_root": str(context_root),
            "labels_txt": str(labels_txt) if labels_txt else None, "labels_txt_entries": n_labels,
            "labels_txt_verified": labels_txt is not None,
            "split_lists": "VOC2010 ImageSets/Main/{train,val}.txt", "official_counts": splits == OFFICIAL_COUNTS,
            "raw_ids": list(CONTEXT59_RAW_IDS),
        })
    return canonical.read_meta(out_root)
