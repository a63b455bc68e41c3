"""PASCAL-Context -> canonical format, shared by the Context-59, Context-60 and Context-459 datasets.

One annotation release and one image set serve all three (ldvc/data/sources.py):
- images and the split lists: the PASCAL VOC 2010 trainval tar: VOCdevkit/VOC2010/JPEGImages and
  ImageSets/Main/{train,val}.txt;
- labels: the PASCAL-Context release of the dataset authors (Mottaghi et al., CVPR 2014,
  trainval.tar.gz): trainval/<id>.mat, each holding `LabelMap`, an (H, W) uint16 map of the
  459-class ids listed in labels.txt ("<id>: <name>", ids 1..459; 0 = unlabelled).
The variants differ only in how a 459-class id becomes a train id (a lookup table) and in the
labels.txt entries their mapping rests on; each is a `ContextVariant` defined in its own module
(context59.py, context60.py, context459.py, whose docstrings cite the reference mappings).

labels.txt is required and verified on EVERY conversion (issue 17, item 9): every id a variant's
mapping uses must carry the expected class name (compared without case, spaces or punctuation:
"air conditioner" == "airconditioner"); a missing labels.txt is an error naming where it was looked
for and how to restore it - never a silent skip, since without it nothing says that the ids of the
.mat files are the ids the mapping was written for.

Splits (all variants): VOC2010's own ImageSets/Main/train.txt (4,998 ids) and val.txt (5,105 ids),
which PASCAL-Context annotates in full; see context59.py for why these and not the 4,996 / 5,104
ids of mmseg's Detail-JSON lists (the open-vocabulary repositories evaluate the 5,104 too: CAT-Seg
datasets/pascalcontext_val.txt, FC-CLIP's images from the Detail API). With the official lists the
release must hold exactly their 10,103 .mat files; smaller lists (tests, subsets) are used as
given, and every listed id must have an image and a .mat.

As an evaluation target (`splits` = val only) only the val ids are converted; the archives are the
same (VOC2010 keeps every split's images in one JPEGImages folder). The checks that rest on both
lists (no id in both; the official release complete) still run when train.txt is there, as it is in
the official tar: they read lists only. Extracted data without train.txt is accepted for val only.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from ldvc.data import canonical
from ldvc.data.voc import VocLayoutError, find_dir, read_id_list

NUM_RAW = 459  # labels.txt ids 1..459; 0 = unlabelled
OFFICIAL_COUNTS = {"train": 4998, "val": 5105}  # VOC2010 ImageSets/Main
DETAIL_COUNTS = {"train": 4996, "val": 5104}  # mmseg / Detail JSON (documentation only)
OFFICIAL_TRAINVAL = 10103
LABELS_TXT = "labels.txt"


class ContextLayoutError(VocLayoutError):
    """The extracted VOC2010 / PASCAL-Context data does not have the expected layout."""


class ContextAnnotationError(ValueError):
    """A PASCAL-Context annotation file cannot be read or holds invalid values (names the file)."""


@dataclass(frozen=True)
class ContextVariant:
    """How one PASCAL-Context dataset maps the 459-class ids to its train ids."""

    dataset: str  # data.dataset value: context59 | context60 | context459
    title: str  # for progress bars and messages, e.g. "Context-59"
    classes: tuple[str, ...]  # train-id order
    lut: np.ndarray  # (NUM_RAW + 1,) or longer: 459-class id -> train id (uint8 or uint16; ignore 255 / 65535)
    named_ids: tuple[tuple[int, str], ...]  # labels.txt entries the mapping rests on: (459-class id, class name)

    def __post_init__(self) -> None:
        ignore = canonical.ignore_index_for(len(self.classes))
        if self.lut.dtype != canonical.label_dtype(ignore) or self.lut.shape[0] <= NUM_RAW:
            raise ValueError(f"{self.dataset}: lookup table must be {canonical.label_dtype(ignore).__name__} covering "
                             f"ids 0..{NUM_RAW}, got {self.lut.dtype} of {self.lut.shape[0]}")
        used = np.unique(self.lut[: NUM_RAW + 1])
        if not set(used.tolist()) <= set(range(len(self.classes))) | {ignore}:
            raise ValueError(f"{self.dataset}: lookup table holds values outside 0..{len(self.classes) - 1}, {ignore}")

    def convert(self, raw: np.ndarray) -> np.ndarray:
        """(H, W) 459-class ids (0..459) -> (H, W) train ids of this variant."""
        return self.lut[raw]


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


def normalise_name(name: str) -> str:
    """Lower case, letters and digits only: labels.txt's "air conditioner" == CAT-Seg's "airconditioner"."""
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


def check_labels_txt(path: Path, variant: ContextVariant) -> int:
    """Check that labels.txt names every id `variant`'s mapping uses as expected; returns its entry count."""
    names = read_labels_txt(path)
    wrong = [
        f"{i}: {names.get(i)!r} (expected {c!r})"
        for i, c in variant.named_ids
        if normalise_name(names.get(i, "")) != normalise_name(c)
    ]
    if wrong:
        raise ContextLayoutError(
            f"{path}: the 459-class ids of the {variant.title} classes do not name them ({len(wrong)} wrong, first: "
            f"{wrong[:3]}); this is not the PASCAL-Context labels.txt the {variant.title} mapping is defined on"
        )
    return len(names)


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------


def find_voc2010_root(base: Path, splits: tuple[str, ...] = canonical.SPLITS) -> Path:
    """The VOC2010 directory (JPEGImages, ImageSets/Main/<split>.txt for each of `splits`)."""
    try:
        return find_dir(
            base,
            lambda d: (d / "JPEGImages").is_dir()
            and all((d / "ImageSets" / "Main" / f"{s}.txt").is_file() for s in splits),
            f"VOC2010 directory (VOCdevkit/VOC2010 with JPEGImages and ImageSets/Main/{{{','.join(splits)}}}.txt)",
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


def labels_txt_candidates(context_root: Path) -> tuple[Path, Path]:
    """Where labels.txt is looked for: next to trainval/ (the archive's layout) or inside it."""
    return context_root / LABELS_TXT, context_root / "trainval" / LABELS_TXT


def find_labels_txt(context_root: Path, variant: ContextVariant) -> Path:
    """PASCAL-Context's labels.txt; a missing one is an error (the mapping is verified against it)."""
    for cand in labels_txt_candidates(context_root):
        if cand.is_file():
            return cand
    tried = " or ".join(str(c) for c in labels_txt_candidates(context_root))
    raise ContextLayoutError(
        f"{tried}: PASCAL-Context's labels.txt not found. trainval.tar.gz ships it next to trainval/, and the "
        f"{variant.title} mapping (459-class id -> class) is verified against it on every conversion: extract "
        f"labels.txt from trainval.tar.gz again (or delete <data.cache_dir>/extracted/pascal_context so the next "
        f"run extracts the whole archive again)"
    )


def plan_context(voc_root: Path, context_root: Path,
                 splits: tuple[str, ...] = canonical.SPLITS) -> dict[str, list[tuple[str, str, str, str]]]:
    """Per split of `splits`, the (split, id, image file, .mat file) of every image to convert."""
    main = voc_root / "ImageSets" / "Main"
    # Both lists when present (the checks below), whatever is converted.
    lists = {s: read_id_list(main / f"{s}.txt") for s in canonical.SPLITS
             if s in splits or (main / f"{s}.txt").is_file()}
    both = sorted(set(lists.get("train", ())) & set(lists["val"]))
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
    for split in splits:
        ids = lists[split]
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


def _convert_one(item: tuple[str, str, str, str], out: str, lut: np.ndarray) -> tuple[str, str]:
    """Worker: copy one image and write its train-id label into the staging tree `out`."""
    split, image_id, image_src, label_src = item
    label = lut[read_label_map(label_src)]
    _, (h, w) = canonical.write_image(image_src, Path(out) / "images" / split, image_id)
    if (h, w) != label.shape:
        raise ContextAnnotationError(
            f"{label_src}: LabelMap is {label.shape[0]}x{label.shape[1]} but image {image_src} is {h}x{w}"
        )
    canonical.write_label(Path(out) / "labels" / split / f"{image_id}.png", label)
    return split, image_id


def prepare_context(
    variant: ContextVariant, voc_base: Path, context_base: Path, out_root: Path, num_workers: int = 4,
    source: dict[str, Any] | None = None, extra_meta: dict[str, Any] | None = None,
    splits: tuple[str, ...] = canonical.SPLITS,
) -> dict[str, Any]:
    """Convert extracted VOC2010 (`voc_base`) + PASCAL-Context trainval (`context_base`) into `out_root`
    with `variant`'s mapping (`splits`: both, or val only for an evaluation target); labels.txt is
    required and verified first (before any conversion)."""
    voc_root, context_root = find_voc2010_root(Path(voc_base), splits), find_context_root(Path(context_base))
    labels_txt = find_labels_txt(context_root, variant)
    n_labels = check_labels_txt(labels_txt, variant)
    plan = plan_context(voc_root, context_root, splits)
    with canonical.staging(out_root, splits) as tmp:
        items = [item for s in splits for item in plan[s]]
        canonical.parallel_map(functools.partial(_convert_one, out=str(tmp), lut=variant.lut), items, num_workers,
                               f"{variant.title} -> canonical")
        counts = {s: len(canonical.write_list(tmp, s, [i[1] for i in plan[s]])) for s in splits}
        canonical.write_meta(tmp, variant.dataset, variant.classes, counts, {
            **(source or {}), "voc2010_root": str(voc_root), "context_root": str(context_root),
            "labels_txt": str(labels_txt), "labels_txt_entries": n_labels, "labels_txt_verified": True,
            "split_lists": "VOC2010 ImageSets/Main/{train,val}.txt",
            "official_counts": all(counts[s] == OFFICIAL_COUNTS[s] for s in splits),
            **(extra_meta or {}),
        })
    return canonical.read_meta(out_root)
