"""COCO-Stuff 164k -> canonical format (protocol.md, "Splits": 182 raw ids -> 171 train ids).

stuffthingmaps_trainval2017.zip holds one grayscale PNG per COCO 2017 image whose values are the
COCO category id minus one (0 = person ... 181 = wood) and 255 = unlabelled. Eleven of those
182 raw ids belong to COCO categories that were never annotated (raw 11, 25, 28, 29, 44, 65, 67,
68, 70, 82, 90: street sign, hat, shoe, eye glasses, plate, mirror, window, desk, door, blender,
hair brush), so the remaining 171 ids are renumbered consecutively in raw order - the same
mapping as mmsegmentation's coco_stuff164k converter (e.g. 12 -> 11, 26 -> 24, 181 -> 170).
Our choice: the unused raw ids map to 255 (mmseg leaves them unchanged; they never occur).
A stuff map or image that cannot be decoded fails naming the file (`canonical.UnreadableFileError`).
As an evaluation target (`splits` = val only) only val2017 is used: train2017.zip is not fetched,
the train2017/ maps of stuffthingmaps_trainval2017.zip are not extracted (ldvc/data/sources.py) and
no training image is looked for or converted.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from ldvc.data import canonical
from ldvc.data.classes import COCO_STUFF_CLASSES

UNUSED_RAW_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
NUM_RAW = 182
SPLIT_DIRS = {"train": "train2017", "val": "val2017"}
OFFICIAL_COUNTS = {"train": 118287, "val": 5000}


def raw_to_train_lut() -> np.ndarray:
    """(256,) uint8 lookup table raw stuffthingmaps value -> train id (255 = ignore)."""
    lut = np.full(256, 255, dtype=np.uint8)
    used = [r for r in range(NUM_RAW) if r not in UNUSED_RAW_IDS]
    lut[used] = np.arange(len(used), dtype=np.uint8)
    return lut


RAW_TO_TRAIN = raw_to_train_lut()
assert int((RAW_TO_TRAIN != 255).sum()) == len(COCO_STUFF_CLASSES)


class CocoLayoutError(FileNotFoundError):
    """The extracted COCO images / stuff maps do not have the expected layout."""


def find_split_dir(base: Path, split_dir: str, suffix: str, max_depth: int = 4) -> Path:
    """The shallowest `<...>/<split_dir>` under `base` whose first file ends in `suffix`."""
    level = [Path(base)]
    for _ in range(max_depth + 1):
        nxt = []
        for d in level:
            cand = d / split_dir
            if cand.is_dir() and _first_file_suffix(cand) == suffix:
                return cand
            nxt += [c for c in sorted(d.iterdir()) if c.is_dir() and not c.name.startswith(".")]
        level = nxt
    raise CocoLayoutError(f"{base}: no '{split_dir}' directory of {suffix} files within {max_depth} levels")


def _first_file_suffix(d: Path) -> str | None:
    for entry in d.iterdir():
        if entry.is_file() and not entry.name.startswith("."):
            return entry.suffix.lower()
    return None


def convert_label(raw: np.ndarray) -> np.ndarray:
    """(H, W) raw stuffthingmaps ids -> (H, W) uint8 train ids."""
    return RAW_TO_TRAIN[raw]


def _convert_one(item: tuple[str, str, str, str], out: str) -> tuple[str, str]:
    split, image_id, image_src, label_src = item
    raw = canonical.read_index_png(label_src, "stuff map", ("L", "P"),
                                   " (8-bit grayscale raw ids, as in stuffthingmaps_trainval2017.zip)")
    _, (h, w) = canonical.write_image(image_src, Path(out) / "images" / split, image_id)
    if (h, w) != raw.shape:
        raise ValueError(f"{image_id}: image is {h}x{w} but {label_src} is {raw.shape[0]}x{raw.shape[1]}")
    canonical.write_label(Path(out) / "labels" / split / f"{image_id}.png", convert_label(raw))
    return split, image_id


def plan_coco_stuff(
    image_dirs: dict[str, Path], map_dirs: dict[str, Path]
) -> dict[str, list[tuple[str, str, str, str]]]:
    """Per split of `image_dirs`, the (split, id, image, stuff map) of every image."""
    plan = {}
    for split in image_dirs:
        images = {p.stem: p for p in image_dirs[split].iterdir() if p.suffix.lower() == ".jpg"}
        maps = {p.stem: p for p in map_dirs[split].iterdir() if p.suffix.lower() == ".png"}
        if not images:
            raise CocoLayoutError(f"{image_dirs[split]}: no .jpg images")
        missing = sorted(set(images) - set(maps))
        if missing:
            raise CocoLayoutError(
                f"{len(missing)} {split} images have no stuff map in {map_dirs[split]} (first: {missing[:3]}); "
                f"the images and stuffthingmaps archives do not match"
            )
        plan[split] = [(split, i, str(images[i]), str(maps[i])) for i in sorted(images)]
    return plan


def prepare_coco_stuff(
    image_base: Path | dict[str, Path], map_base: Path, out_root: Path, num_workers: int = 4,
    source: dict[str, Any] | None = None, splits: tuple[str, ...] = canonical.SPLITS,
) -> dict[str, Any]:
    """Convert extracted COCO 2017 images + stuffthingmaps into `out_root` (`splits`: both, or val
    only for an evaluation target); returns meta.

    `image_base`: one directory holding train2017/ and val2017/ (at any depth <= 4), or a dict
    split -> such a base (for `splits` only); `map_base`: the extracted stuffthingmaps (train2017/,
    val2017/ PNGs)."""
    bases = image_base if isinstance(image_base, dict) else {s: image_base for s in splits}
    image_dirs = {s: find_split_dir(Path(bases[s]), SPLIT_DIRS[s], ".jpg") for s in splits}
    map_dirs = {s: find_split_dir(Path(map_base), SPLIT_DIRS[s], ".png") for s in splits}
    plan = plan_coco_stuff(image_dirs, map_dirs)
    with canonical.staging(out_root, splits) as tmp:
        items = [i for s in splits for i in plan[s]]
        canonical.parallel_map(functools.partial(_convert_one, out=str(tmp)), items, num_workers,
                               "COCO-Stuff -> canonical")
        counts = {s: len(canonical.write_list(tmp, s, [i[1] for i in plan[s]])) for s in splits}
        canonical.write_meta(tmp, "coco_stuff", COCO_STUFF_CLASSES, counts, {
            **(source or {}), "images": {s: str(d) for s, d in image_dirs.items()},
            "stuffthingmaps": {s: str(d) for s, d in map_dirs.items()},
            "official_counts": all(counts[s] == OFFICIAL_COUNTS[s] for s in splits),
        })
    return canonical.read_meta(out_root)
