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
conversion (a missing labels.txt is an error: ldvc/data/pascal_context.py, which holds the reading,
layout and conversion shared with Context-60 and Context-459). Not verifiable offline: that the
Detail RLE masks equal the .mat label maps pixel for pixel (both come from the same annotation
effort; no difference is documented).

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

from pathlib import Path
from typing import Any

import numpy as np

from ldvc.data.canonical import SPLITS
from ldvc.data.classes import CONTEXT59_CLASSES
from ldvc.data.pascal_context import (  # noqa: F401  (re-exported: the Context-59 API predates the shared module)
    DETAIL_COUNTS,
    NUM_RAW,
    OFFICIAL_COUNTS,
    OFFICIAL_TRAINVAL,
    ContextAnnotationError,
    ContextLayoutError,
    ContextVariant,
    find_context_root,
    find_voc2010_root,
    plan_context,
    prepare_context,
    read_label_map,
    read_labels_txt,
)
from ldvc.data.pascal_context import check_labels_txt as _check_labels_txt

# 459-class ids (PASCAL-Context labels.txt) of the 59 classes, in train-id order (= ascending id).
CONTEXT59_RAW_IDS: tuple[int, ...] = (
    2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105, 113, 115,
    144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308, 324, 326, 347, 349,
    354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458,
)

assert len(CONTEXT59_RAW_IDS) == len(CONTEXT59_CLASSES) == 59
assert list(CONTEXT59_RAW_IDS) == sorted(set(CONTEXT59_RAW_IDS))


def raw_to_train_lut() -> np.ndarray:
    """(65536,) uint8 lookup table: 459-class id -> train id (255 = ignore)."""
    lut = np.full(1 << 16, 255, dtype=np.uint8)
    lut[list(CONTEXT59_RAW_IDS)] = np.arange(len(CONTEXT59_RAW_IDS), dtype=np.uint8)
    return lut


RAW_TO_TRAIN = raw_to_train_lut()

CONTEXT59 = ContextVariant(
    dataset="context59", title="Context-59", classes=CONTEXT59_CLASSES, lut=RAW_TO_TRAIN,
    named_ids=tuple(zip(CONTEXT59_RAW_IDS, CONTEXT59_CLASSES, strict=True)),
)


def convert_label(raw: np.ndarray) -> np.ndarray:
    """(H, W) 459-class ids (0..459) -> (H, W) uint8 train ids (0..58, 255 = ignore)."""
    return RAW_TO_TRAIN[raw]


def check_labels_txt(path: Path) -> int:
    """Check that labels.txt names the 59 classes at CONTEXT59_RAW_IDS; returns its entry count."""
    return _check_labels_txt(path, CONTEXT59)


def plan_context59(voc_root: Path, context_root: Path) -> dict[str, list[tuple[str, str, str, str]]]:
    """Per split, the (split, id, image file, .mat file) of every image to convert."""
    return plan_context(voc_root, context_root)


def prepare_context59(
    voc_base: Path, context_base: Path, out_root: Path, num_workers: int = 4, source: dict[str, Any] | None = None,
    splits: tuple[str, ...] = SPLITS,
) -> dict[str, Any]:
    """Convert extracted VOC2010 (`voc_base`) + PASCAL-Context trainval (`context_base`) into `out_root`."""
    return prepare_context(CONTEXT59, voc_base, context_base, out_root, num_workers, source,
                           {"raw_ids": list(CONTEXT59_RAW_IDS)}, splits)
