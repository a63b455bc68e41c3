"""PASCAL VOC 2012 with background as a scored class (VOC-21) -> canonical format.

The references (all use the official VOC2012 SegmentationClass PNGs, whose palette indices are the
class ids 0 = background, 1..20, 255 = boundary / difficult):
- ZegCLIP's ZeroPascalVOCDataset21 (configs/_base_/datasets/dataloader/__pycache__/voc12_21.cpython-37.pyc,
  commit 9ba4bb5c9b621c04005fb9cef7254e79bb9c9991): CLASSES ('background', 'aeroplane', ...,
  'tvmonitor') with `reduce_zero_label=False`: raw value = train id;
- bytedance/fc-clip datasets/prepare_pascal_voc_sem_seg.py lines 17-21 (`convert_pas21`: the PNG
  "do nothing", commit 2b0bbe213070d44da9182530fa2e826fef03f974, after NVlabs/ODISE), registered with
  21 classes, "background" first, `ignore_label=255`
  (fcclip/data/datasets/register_pascal_voc_21_semantic.py line 74).
So: raw 0..20 -> train ids 0..20 unchanged (0 = "background"), 255 stays ignore; any other value is
a corrupt label and raises. (CAT-Seg's "VOC-b" protocol differs: it appends background LAST and
describes it by 39 Context words with a special evaluator; not this dataset.)

Splits: val = VOC2012 ImageSets/Segmentation/val.txt (1,449 ids), the split every reference
evaluates. train = ImageSets/Segmentation/train.txt (1,464 ids), as FC-CLIP's script prepares it
(lines 36-40): our choice so the dataset also works as data.dataset. No SBD: VOC-21 is an evaluation
target, and its train split has no use that would justify the 1.4 GB SBD archive (train_aug, with
SBD, stays the `voc` dataset's). As an evaluation target (`splits` = val only) only val is converted.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from ldvc.data import canonical
from ldvc.data.classes import VOC21_CLASSES
from ldvc.data.voc import VocLayoutError, find_voc_root, read_id_list, read_voc_png

OFFICIAL_COUNTS = {"train": 1464, "val": 1449}  # VOC2012 ImageSets/Segmentation

_VALID_RAW = np.zeros(256, dtype=bool)
_VALID_RAW[:21] = True
_VALID_RAW[255] = True


def to_train_ids(raw: np.ndarray, where: str = "") -> np.ndarray:
    """Raw VOC values (0 background, 1..20, 255) -> VOC-21 train ids: the same values (uint8)."""
    bad = ~_VALID_RAW[raw]
    if bad.any():
        raise ValueError(f"{where}: unexpected VOC label values {np.unique(raw[bad]).tolist()} (valid: 0..20, 255)")
    return raw.astype(np.uint8, copy=False)


def _convert_one(item: tuple[str, str, str, str], out: str) -> tuple[str, str]:
    split, image_id, image_src, label_src = item
    label = to_train_ids(read_voc_png(Path(label_src)), label_src)
    _, (h, w) = canonical.write_image(image_src, Path(out) / "images" / split, image_id)
    if (h, w) != label.shape:
        raise ValueError(f"{image_id}: image is {h}x{w} but its label {label_src} is {label.shape[0]}x{label.shape[1]}")
    canonical.write_label(Path(out) / "labels" / split / f"{image_id}.png", label)
    return split, image_id


def plan_voc21(voc_root: Path,
               splits: tuple[str, ...] = canonical.SPLITS) -> dict[str, list[tuple[str, str, str, str]]]:
    """Per split of `splits`, the (split, id, image file, SegmentationClass PNG) of every image to convert."""
    seg_sets = voc_root / "ImageSets" / "Segmentation"
    plan: dict[str, list[tuple[str, str, str, str]]] = {}
    for split in splits:
        items = []
        for i in sorted(set(read_id_list(seg_sets / f"{split}.txt"))):
            image, label = voc_root / "JPEGImages" / f"{i}.jpg", voc_root / "SegmentationClass" / f"{i}.png"
            for what, path in (("image", image), ("label", label)):
                if not path.is_file():
                    raise VocLayoutError(f"{path}: {what} of VOC {split} id {i} not found")
            items.append((split, i, str(image), str(label)))
        plan[split] = items
    return plan


def prepare_voc21(voc_base: Path, out_root: Path, num_workers: int = 4,
                  source: dict[str, Any] | None = None, splits: tuple[str, ...] = canonical.SPLITS) -> dict[str, Any]:
    """Convert the extracted VOC2012 tar under `voc_base` into the VOC-21 canonical dataset at `out_root`
    (`splits`: both, or val only for an evaluation target)."""
    voc_root = find_voc_root(Path(voc_base))
    plan = plan_voc21(voc_root, splits)
    with canonical.staging(out_root, splits) as tmp:
        canonical.parallel_map(functools.partial(_convert_one, out=str(tmp)), [i for s in splits for i in plan[s]],
                               num_workers, "VOC-21 -> canonical")
        counts = {s: len(canonical.write_list(tmp, s, [i[1] for i in plan[s]])) for s in splits}
        canonical.write_meta(tmp, "voc21", VOC21_CLASSES, counts, {
            **(source or {}), "voc_root": str(voc_root),
            "split_lists": "VOC2012 ImageSets/Segmentation/{train,val}.txt",
            "official_counts": all(counts[s] == OFFICIAL_COUNTS[s] for s in splits),
            "mapping": "raw 0..20 unchanged (0 = background), 255 ignore",
        })
    return canonical.read_meta(out_root)
