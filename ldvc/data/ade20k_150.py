"""ADE20K SceneParsing (150 classes, ADEChallengeData2016.zip) -> canonical format.

Archive (ldvc/data/sources.py "ade20k_challenge", SHA-1 as published by gluon-cv):
ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_<8 digits>.jpg and
annotations/{training,validation}/<same stem>.png, 8-bit maps of 0 (unlabelled, "other") and the
150 classes 1..150 in objectInfo150 order; 20,210 training and 2,000 validation images.

Mapping (label 0 ignored, classes shifted down by one): value k (1..150) -> train id k - 1, 0 -> 255.
That is mmseg's ADE20KDataset with `reduce_zero_label=True` (open-mmlab/mmsegmentation at 088894bd,
mmseg/datasets/ade.py; LoadAnnotations: 0 -> 255, k -> k - 1) and the detectron2 preparation script
the open-vocabulary papers run (`img - 1` on the uint8 map, so 0 wraps to 255: KU-CVLAB/CAT-Seg
datasets/prepare_ade20k_150.py line 15 at 6d3a188af95165147fe2f34a8237fa7d2633e784; MendelXu/SAN
datasets/prepare_ade20k_sem_seg.py line 15 at e19262d1a23992fc2cef934d6756b89ff50fe5c3; FC-CLIP
datasets/prepare_ade20k_sem_seg.py line 21), registered with `ignore_label=255`. A value above 150
is a corrupt annotation and raises, naming the file.

Splits: val = validation (what every reference evaluates), train = training: our choice to prepare
both (the archive holds both, the images are only hard-linked, and the dataset then also works as
data.dataset, e.g. for a fully supervised ADE run); the cost is the conversion of 20,210 label PNGs,
paid only by a dataset prepared as `data`: as an evaluation target (`splits` = val only) the
training folders are neither extracted (ldvc/data/sources.py TRAIN_ONLY_MEMBERS) nor required nor
converted.
Images are used as they are (hard link or byte copy; a non-RGB JPEG becomes an RGB PNG, as for every
dataset: canonical.write_image) - the references also read the original JPEGs.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from ldvc.data import canonical
from ldvc.data.classes import ADE20K_150_CLASSES
from ldvc.data.voc import VocLayoutError, find_dir

SPLIT_DIRS = {"train": "training", "val": "validation"}
OFFICIAL_COUNTS = {"train": 20210, "val": 2000}
NUM_RAW = 150  # annotation values 0..150

# annotation value -> train id: 0 -> 255 (ignore), k -> k - 1 (uint8 wrap-around of `img - 1`).
RAW_TO_TRAIN = (np.arange(256, dtype=np.int64) - 1).astype(np.uint8)
RAW_TO_TRAIN[NUM_RAW + 1:] = canonical.IGNORE_INDEX  # never used: such values raise first


class AdeLayoutError(VocLayoutError):
    """The extracted ADEChallengeData2016 does not have the expected layout."""


def find_ade_root(base: Path, splits: tuple[str, ...] = canonical.SPLITS) -> Path:
    """The ADEChallengeData2016 directory (images/ and annotations/, each with the folders of `splits`:
    training/ and validation/)."""
    names = [SPLIT_DIRS[s] for s in splits]
    folders = "{" + ",".join(names) + "}" if len(names) > 1 else names[0]
    try:
        return find_dir(
            base,
            lambda d: all((d / sub / name).is_dir() for sub in ("images", "annotations") for name in names),
            f"ADEChallengeData2016 directory (images/{folders} and annotations/{folders})",
        )
    except VocLayoutError as exc:
        raise AdeLayoutError(str(exc)) from None


def convert_label(raw: np.ndarray, where: str = "") -> np.ndarray:
    """(H, W) annotation values 0..150 -> (H, W) uint8 train ids (0..149, 255 = ignore)."""
    if raw.size and int(raw.max()) > NUM_RAW:
        bad = np.unique(raw[raw > NUM_RAW])[:10].tolist()
        raise ValueError(f"{where}: ADE20K annotation values {bad} are outside 0..{NUM_RAW} (a corrupt or foreign "
                         f"annotation: ADEChallengeData2016's PNGs hold 0 and the 150 class indices)")
    return RAW_TO_TRAIN[raw]


def plan_ade20k_150(ade_root: Path,
                    splits: tuple[str, ...] = canonical.SPLITS) -> dict[str, list[tuple[str, str, str, str]]]:
    """Per split of `splits`, the (split, id, image file, annotation PNG) of every image; every image needs its PNG."""
    plan: dict[str, list[tuple[str, str, str, str]]] = {}
    for split in splits:
        name = SPLIT_DIRS[split]
        images = {p.stem: p for p in (ade_root / "images" / name).iterdir() if p.suffix.lower() == ".jpg"}
        labels = {p.stem: p for p in (ade_root / "annotations" / name).iterdir() if p.suffix.lower() == ".png"}
        if not images:
            raise AdeLayoutError(f"{ade_root / 'images' / name}: no .jpg images")
        for what, have, other in (("annotation", labels, images), ("image", images, labels)):
            missing = sorted(set(other) - set(have))
            if missing:
                raise AdeLayoutError(f"{len(missing)} {name} files have no {what} in {ade_root}/"
                                     f"{'annotations' if what == 'annotation' else 'images'}/{name} (first: "
                                     f"{missing[:3]}): the archive is incomplete")
        plan[split] = [(split, i, str(images[i]), str(labels[i])) for i in sorted(images)]
    return plan


def _convert_one(item: tuple[str, str, str, str], out: str) -> tuple[str, str]:
    split, image_id, image_src, label_src = item
    raw = canonical.read_index_png(label_src, "ADE20K annotation", ("L", "P"), " (8-bit class indices, as in "
                                   "ADEChallengeData2016.zip)")
    label = convert_label(raw, label_src)
    _, (h, w) = canonical.write_image(image_src, Path(out) / "images" / split, image_id)
    if (h, w) != label.shape:
        raise ValueError(f"{image_id}: image is {h}x{w} but {label_src} is {label.shape[0]}x{label.shape[1]}")
    canonical.write_label(Path(out) / "labels" / split / f"{image_id}.png", label)
    return split, image_id


def prepare_ade20k_150(ade_base: Path, out_root: Path, num_workers: int = 4, source: dict[str, Any] | None = None,
                       splits: tuple[str, ...] = canonical.SPLITS) -> dict[str, Any]:
    """Convert the extracted ADEChallengeData2016 under `ade_base` into `out_root` (`splits`: both, or
    val only for an evaluation target); returns meta."""
    ade_root = find_ade_root(Path(ade_base), splits)
    plan = plan_ade20k_150(ade_root, splits)
    with canonical.staging(out_root, splits) as tmp:
        canonical.parallel_map(functools.partial(_convert_one, out=str(tmp)), [i for s in splits for i in plan[s]],
                               num_workers, "ADE20K-150 -> canonical")
        counts = {s: len(canonical.write_list(tmp, s, [i[1] for i in plan[s]])) for s in splits}
        canonical.write_meta(tmp, "ade20k_150", ADE20K_150_CLASSES, counts, {
            **(source or {}), "ade_root": str(ade_root),
            "official_counts": all(counts[s] == OFFICIAL_COUNTS[s] for s in splits),
            "mapping": "annotation k (1..150) -> k - 1, 0 -> 255 (ignore)",
        })
    return canonical.read_meta(out_root)
