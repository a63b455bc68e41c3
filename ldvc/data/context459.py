"""PASCAL Context-459 -> canonical format: every PASCAL-Context class, 0 (unlabelled) ignored.

The open-vocabulary papers' preparation scripts, all from the same trainval/<id>.mat `LabelMap`:
- bytedance/fc-clip datasets/prepare_pascal_ctx_full_sem_seg.py lines 19-27 (commit
  2b0bbe213070d44da9182530fa2e826fef03f974; "Reference: NVlabs/ODISE"): `label_map[label_map == 0]
  = 65535; label_map = label_map - 1; label_map[label_map == 65534] = 65535`, saved as a 16-bit
  TIFF and registered with `ignore_label=65535` (fcclip/data/datasets/register_pascal_ctx_459_sem_seg.py
  line 73);
- MendelXu/SAN datasets/prepare_pcontext_sem_seg_459cls.py line 43 (`mask - 1` on the uint16 map,
  so 0 wraps to 65535; commit e19262d1a23992fc2cef934d6756b89ff50fe5c3), registered with
  `ignore_label=65535` (san/data/datasets/register_pcontext.py line 569);
- KU-CVLAB/CAT-Seg datasets/prepare_pascal_context_459.py line 16 (`mask - 1`, commit
  6d3a188af95165147fe2f34a8237fa7d2633e784).
So: 459-class id k (1..459) -> train id k - 1 (labels.txt order, CONTEXT459_CLASSES), 0 -> 65535
(ignore). 459 classes do not fit 8-bit labels: the canonical labels are 16-bit PNGs with ignore
65535 (ldvc/data/canonical.py), the references' convention.

labels.txt is required and ALL 459 names are verified against CONTEXT459_CLASSES (spacing and case
aside) on every conversion: this mapping is the labels.txt order itself.

Deviations: (1) splits are VOC2010's official ImageSets/Main lists (4,998 train / 5,105 val, as for
Context-59, ldvc/data/context59.py); the references evaluate the Detail API's 5,104 val ids (CAT-Seg
datasets/pascalcontext_val.txt; FC-CLIP and SAN list their images through the Detail JSON).
(2) CAT-Seg registers this dataset with `ignore_label=459` (cat_seg/data/datasets/
register_pascal_context.py line 75) while its labels hold 65535 for unlabelled pixels; we follow
FC-CLIP and SAN (65535 ignored), the only reading under which those pixels are not scored.
(3) Train split prepared too when the dataset is `data` (the references prepare val only, or both:
FC-CLIP), so the dataset is usable as data.dataset; as a target only val is prepared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ldvc.data.canonical import SPLITS, WIDE_IGNORE_INDEX
from ldvc.data.classes import CONTEXT459_CLASSES
from ldvc.data.pascal_context import NUM_RAW, ContextVariant, prepare_context


def raw_to_train_lut() -> np.ndarray:
    """(NUM_RAW + 1,) uint16 lookup table: 459-class id k -> k - 1, 0 -> 65535 (ignore)."""
    lut = np.arange(-1, NUM_RAW, dtype=np.int64)
    lut[0] = WIDE_IGNORE_INDEX
    return lut.astype(np.uint16)


RAW_TO_TRAIN = raw_to_train_lut()

CONTEXT459 = ContextVariant(
    dataset="context459", title="Context-459", classes=CONTEXT459_CLASSES, lut=RAW_TO_TRAIN,
    named_ids=tuple(enumerate(CONTEXT459_CLASSES, start=1)),
)


def prepare_context459(
    voc_base: Path, context_base: Path, out_root: Path, num_workers: int = 4, source: dict[str, Any] | None = None,
    splits: tuple[str, ...] = SPLITS,
) -> dict[str, Any]:
    """Convert extracted VOC2010 + PASCAL-Context trainval into the Context-459 canonical dataset."""
    return prepare_context(CONTEXT459, voc_base, context_base, out_root, num_workers, source,
                           {"mapping": "459-class id k -> k - 1; 0 (unlabelled) -> 65535 (ignore)"}, splits)
