"""PASCAL VOC 2012 + SBD -> canonical format (protocol.md, "Splits" and "Official download sources").

- train = train_aug = (VOC train + SBD train + SBD val) minus VOC val (10,582 ids with the
  official lists; checked only when the lists have their official lengths, so small test lists
  work); val = VOC val (1,449 ids).
- Labels: VOC SegmentationClass PNGs are palette images whose pixel values ARE the class
  indices (we read the indices, never the RGB colours); SBD cls/*.mat hold `GTcls.Segmentation`,
  a uint8 map read with scipy.io.loadmat. Raw 0 (background) -> 255, 1..20 -> train ids 0..19,
  255 (VOC's object boundaries / "difficult") stays ignore.
- Our choice: an id with an official VOC SegmentationClass PNG uses it (finer, with boundary
  ignore), other train_aug ids use SBD. mmseg's voc_aug config instead concatenates both sets,
  so the 1,464 VOC train images appear twice there; we keep each image once.
- Images are taken from VOC JPEGImages (which holds every SBD image), else from SBD img/.
- A label or image that cannot be decoded (a truncated PNG among thousands) fails naming the
  file (`canonical.UnreadableFileError`), never with a bare `OSError` from inside PIL or scipy.
- As an evaluation target (`splits` = val only; ZegCLIP's configs/cross_dataset/coco-to-voc.py
  evaluates VOC val) SBD is not needed at all: val is VOC val with VOC's own labels and images, so
  only the VOC2012 tar is used (`sbd_base` None) and no train_aug image is converted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError

from ldvc.data import canonical
from ldvc.data.classes import VOC_CLASSES

OFFICIAL_COUNTS = {"voc_train": 1464, "voc_val": 1449, "sbd_train": 8498, "sbd_val": 2857}
TRAIN_AUG_LEN = 10582
VOC_VAL_LEN = 1449

# raw VOC/SBD value -> train id: background 0 -> ignore, 1..20 -> 0..19, 255 stays ignore.
_LUT = np.full(256, 255, dtype=np.uint8)
_LUT[1:21] = np.arange(20, dtype=np.uint8)
_VALID_RAW = np.zeros(256, dtype=bool)
_VALID_RAW[:21] = True
_VALID_RAW[255] = True


class VocLayoutError(FileNotFoundError):
    """The extracted VOC/SBD data does not have the expected layout."""


def find_dir(base: Path, looks_right: Callable[[Path], bool], what: str, max_depth: int = 4) -> Path:
    """The shallowest directory under `base` (inclusive) for which `looks_right` holds."""
    level = [Path(base)]
    for _ in range(max_depth + 1):
        for d in level:
            if looks_right(d):
                return d
        level = [c for d in level for c in sorted(d.iterdir()) if c.is_dir() and not c.name.startswith(".")]
        if not level:
            break
    raise VocLayoutError(f"{base}: no {what} found within {max_depth} levels")


def find_voc_root(base: Path) -> Path:
    """The VOC2012 directory (JPEGImages, SegmentationClass, ImageSets/Segmentation)."""
    return find_dir(
        base,
        lambda d: (d / "JPEGImages").is_dir() and (d / "SegmentationClass").is_dir()
        and (d / "ImageSets" / "Segmentation" / "val.txt").is_file(),
        "VOC2012 directory (VOCdevkit/VOC2012 with JPEGImages, SegmentationClass, ImageSets/Segmentation)",
    )


def find_sbd_root(base: Path) -> Path:
    """The SBD `dataset` directory (cls/*.mat, img/, train.txt, val.txt)."""
    return find_dir(
        base,
        lambda d: (d / "cls").is_dir() and (d / "train.txt").is_file() and (d / "val.txt").is_file(),
        "SBD directory (benchmark_RELEASE/dataset with cls/, train.txt, val.txt)",
    )


def read_id_list(path: Path) -> list[str]:
    if not path.is_file():
        raise VocLayoutError(f"{path}: id list not found")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def train_aug_ids(voc_train: list[str], voc_val: list[str], sbd_train: list[str], sbd_val: list[str]) -> list[str]:
    """(VOC train + SBD train + SBD val) minus VOC val, sorted and unique."""
    return sorted((set(voc_train) | set(sbd_train) | set(sbd_val)) - set(voc_val))


def read_voc_png(path: Path) -> np.ndarray:
    """(H, W) uint8 raw class indices of a VOC SegmentationClass palette PNG."""
    return canonical.read_index_png(
        path, "VOC label", ("P", "L"),
        "; expected the official palette ('P') PNG whose pixel values are class indices (an "
        "RGB-converted copy loses them: use the original)",
    )


def read_sbd_mat(path: Path) -> np.ndarray:
    """(H, W) uint8 raw class indices from an SBD cls/*.mat (GTcls.Segmentation)."""
    try:
        mat = scipy.io.loadmat(str(path), struct_as_record=False, squeeze_me=True)
    except (MatReadError, OSError, ValueError, TypeError, EOFError, NotImplementedError) as err:
        # A truncated file gives MatReadError ("appears to be truncated") or OSError ("could not
        # read bytes"), and neither names the file.
        raise canonical.unreadable(path, "SBD label (.mat)", err) from None
    if "GTcls" not in mat:
        raise ValueError(f"{path}: no 'GTcls' struct (is this an SBD cls/*.mat file?)")
    try:
        seg = np.asarray(mat["GTcls"].Segmentation)
    except AttributeError:
        raise ValueError(f"{path}: GTcls has no 'Segmentation' field (is this an SBD cls/*.mat file?)") from None
    if seg.ndim != 2:
        raise ValueError(f"{path}: GTcls.Segmentation has shape {seg.shape}, expected (H, W)")
    return seg.astype(np.uint8)


def to_train_ids(raw: np.ndarray, where: str = "") -> np.ndarray:
    """Raw VOC values (0 background, 1..20, 255) -> train ids (0..19, 255 ignore)."""
    bad = ~_VALID_RAW[raw]
    if bad.any():
        raise ValueError(f"{where}: unexpected VOC label values {np.unique(raw[bad]).tolist()} (valid: 0..20, 255)")
    return _LUT[raw]


def _convert_one(item: tuple[str, str, str, str], out: str) -> tuple[str, str]:
    """Worker: copy one image and write its train-id label into the staging tree `out`."""
    split, image_id, image_src, label_src = item
    raw = read_voc_png(Path(label_src)) if label_src.endswith(".png") else read_sbd_mat(Path(label_src))
    label = to_train_ids(raw, label_src)
    _, (h, w) = canonical.write_image(image_src, Path(out) / "images" / split, image_id)
    if (h, w) != label.shape:
        raise ValueError(f"{image_id}: image is {h}x{w} but its label {label_src} is {label.shape[0]}x{label.shape[1]}")
    canonical.write_label(Path(out) / "labels" / split / f"{image_id}.png", label)
    return split, image_id


def plan_voc(voc_root: Path, sbd_root: Path | None,
             splits: tuple[str, ...] = canonical.SPLITS) -> dict[str, list[tuple[str, str, str, str]]]:
    """Per split of `splits`, the (split, id, image file, label file) of every image to convert.
    `sbd_root` is needed for the train split (train_aug) only."""
    seg_sets = voc_root / "ImageSets" / "Segmentation"
    voc_val = read_id_list(seg_sets / "val.txt")
    plan: dict[str, list[tuple[str, str, str, str]]] = {}

    def files(split: str, image_id: str) -> tuple[str, str, str, str]:
        image = voc_root / "JPEGImages" / f"{image_id}.jpg"
        if not image.is_file() and sbd_root is not None:
            image = sbd_root / "img" / f"{image_id}.jpg"
        if not image.is_file():
            raise VocLayoutError(f"image {image_id}.jpg is in neither {voc_root}/JPEGImages nor {sbd_root}/img"
                                 if sbd_root is not None else f"{image}: image of VOC {split} id {image_id} not found")
        label = voc_root / "SegmentationClass" / f"{image_id}.png"
        if not label.is_file() and sbd_root is not None:
            label = sbd_root / "cls" / f"{image_id}.mat"
        if not label.is_file():
            raise VocLayoutError(
                f"no label for {image_id}: neither SegmentationClass/{image_id}.png nor cls/{image_id}.mat"
            )
        return split, image_id, str(image), str(label)

    if "train" in splits:
        if sbd_root is None:
            raise VocLayoutError("the VOC train split (train_aug) needs the extracted SBD archive; none was given")
        voc_train = read_id_list(seg_sets / "train.txt")
        sbd_train, sbd_val = read_id_list(sbd_root / "train.txt"), read_id_list(sbd_root / "val.txt")
        train = train_aug_ids(voc_train, voc_val, sbd_train, sbd_val)
        counts = {"voc_train": len(voc_train), "voc_val": len(voc_val), "sbd_train": len(sbd_train),
                  "sbd_val": len(sbd_val)}
        if counts == OFFICIAL_COUNTS and (len(train), len(voc_val)) != (TRAIN_AUG_LEN, VOC_VAL_LEN):
            raise RuntimeError(
                f"official VOC/SBD lists gave {len(train)} train_aug / {len(voc_val)} val ids, expected "
                f"{TRAIN_AUG_LEN} / {VOC_VAL_LEN}: the archives are not the official ones"
            )
        plan["train"] = [files("train", i) for i in train]
    if "val" in splits:
        # VOC val labels must be the official PNGs (SBD's are coarser): checked by prepare_voc.
        plan["val"] = [files("val", i) for i in voc_val]
    return plan


def prepare_voc(
    voc_base: Path, sbd_base: Path | None, out_root: Path, num_workers: int = 4, source: dict[str, Any] | None = None,
    splits: tuple[str, ...] = canonical.SPLITS,
) -> dict[str, Any]:
    """Convert extracted VOC 2012 (+SBD) under `voc_base`/`sbd_base` into `out_root`; returns meta.
    `splits` = val only (an evaluation target) needs no SBD: `sbd_base` may then be None."""
    voc_root = find_voc_root(Path(voc_base))
    sbd_root = find_sbd_root(Path(sbd_base)) if "train" in splits and sbd_base is not None else None
    plan = plan_voc(voc_root, sbd_root, splits)
    for item in plan.get("val", []):
        if not item[3].endswith(".png"):
            raise VocLayoutError(f"VOC val id {item[1]} has no SegmentationClass PNG in {voc_root}")
    with canonical.staging(out_root, splits) as tmp:
        items = [item for s in splits for item in plan[s]]
        canonical.parallel_map(functools.partial(_convert_one, out=str(tmp)), items, num_workers, "VOC -> canonical")
        counts = {s: len(canonical.write_list(tmp, s, [i[1] for i in plan[s]])) for s in splits}
        provenance = {**(source or {}), "voc_root": str(voc_root)}
        if "train" in splits:
            n_sbd = sum(not i[3].endswith(".png") for i in plan["train"])
            provenance.update(sbd_root=str(sbd_root), train_labels_from_sbd=n_sbd,
                              train_labels_from_voc=counts["train"] - n_sbd)
        canonical.write_meta(tmp, "voc", VOC_CLASSES, counts, provenance)
    return canonical.read_meta(out_root)
