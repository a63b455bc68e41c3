"""PASCAL Context-60 -> canonical format: background is a SCORED class (issue 17, item 7).

What ZegCLIP evaluates in configs/cross_dataset/coco-to-context.py (commit
9ba4bb5c9b621c04005fb9cef7254e79bb9c9991): `_base_/datasets/context_60_512x512.py`, 60 classes
(base_class 0..59, all scored), whose dataset class ZeroPascalContextDataset60 (only its compiled
configs/_base_/datasets/dataloader/__pycache__/context60.cpython-37.pyc is in the repository) holds
CLASSES ('background', 'aeroplane', 'bag', ..., 'wood') and `reduce_zero_label=False`: mmseg's
PascalContextDataset with the labels of mmseg's Context converter (tools/dataset_converters/
pascal_context.py: `_mapping` = 0 and the 59 459-class ids, np.digitize over it gives 0..59).

Mapping here (same archives, splits and labels.txt check as Context-59, ldvc/data/pascal_context.py):
459-class id CONTEXT59_RAW_IDS[k] -> train id k + 1; 0 (unlabelled) and the 400 other classes -> 0
(background, scored). mmseg's Detail masks hold only the 59 classes and 0, so every other pixel is
background there too. No pixel is ignored: the labels never hold 255 (ZegCLIP's 60-class evaluation
scores every pixel). Train ids 1..59 are Context-59's 0..58 shifted by one.
Deviation (shared with context59.py, documented there): VOC2010's official 4,998 / 5,105 split
lists, not mmseg's Detail-derived 4,996 / 5,104.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ldvc.data.canonical import SPLITS
from ldvc.data.classes import CONTEXT59_CLASSES, CONTEXT60_CLASSES
from ldvc.data.context59 import CONTEXT59_RAW_IDS
from ldvc.data.pascal_context import NUM_RAW, ContextVariant, prepare_context

BACKGROUND = 0  # train id of "background" (every pixel outside the 59 classes)


def raw_to_train_lut() -> np.ndarray:
    """(NUM_RAW + 1,) uint8 lookup table: 459-class id -> Context-60 train id (never ignore)."""
    lut = np.full(NUM_RAW + 1, BACKGROUND, dtype=np.uint8)
    lut[list(CONTEXT59_RAW_IDS)] = np.arange(1, len(CONTEXT59_RAW_IDS) + 1, dtype=np.uint8)
    return lut


RAW_TO_TRAIN = raw_to_train_lut()

CONTEXT60 = ContextVariant(
    dataset="context60", title="Context-60", classes=CONTEXT60_CLASSES, lut=RAW_TO_TRAIN,
    named_ids=tuple(zip(CONTEXT59_RAW_IDS, CONTEXT59_CLASSES, strict=True)),
)


def prepare_context60(
    voc_base: Path, context_base: Path, out_root: Path, num_workers: int = 4, source: dict[str, Any] | None = None,
    splits: tuple[str, ...] = SPLITS,
) -> dict[str, Any]:
    """Convert extracted VOC2010 + PASCAL-Context trainval into the Context-60 canonical dataset."""
    return prepare_context(CONTEXT60, voc_base, context_base, out_root, num_workers, source,
                           {"raw_ids": [0, *CONTEXT59_RAW_IDS], "background": "0 and every id outside the 59 -> 0"},
                           splits)
