"""A user's own COCO-format dataset (instances and/or stuff JSON) -> canonical format.

Annotations are loaded with pycocotools (`COCO`) and rasterised with `pycocotools.mask`:
polygons, uncompressed RLE (iscrowd=1 regions) and compressed RLE are all supported.
Choices (ours; the protocol is silent):
- Paint order is BY AREA, largest first, so a small object lying on a large region (a cup on
  a table, a person on grass) stays visible; ties keep annotation-id order. Pixels no
  annotation covers are 255 (ignore).
- iscrowd=1 regions are painted with their class: for semantic segmentation a crowd of people
  is still "person".
- Classes: `data.coco_json.classes` (train-id order) when given, else the train file's
  categories sorted by category id. Categories whose name is not in the list stay ignore; a
  listed name that no category has is an error (a typo would otherwise silently never appear).
- Val categories are matched to the class list by NAME, so the two files may number them
  differently. Image ids are the file names' stems (sub-folders joined with "__").
The unseen classes come from `split.unseen` (there is no default split for a user's data).
Failures name their file: an annotation file that is not valid COCO JSON names the file; a
segmentation that cannot be rasterised names the annotation file, the annotation id and the
image; an image that cannot be decoded names the image (`canonical.UnreadableFileError`).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import io
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from ldvc.data import canonical
from ldvc.data.sources import input_path

if TYPE_CHECKING:
    from ldvc.config import CocoJsonConfig


class CocoJsonError(ValueError):
    """The COCO-format dataset description is incomplete or inconsistent."""


def _required_paths(cfg: CocoJsonConfig, repo_root: Path,
                    splits: tuple[str, ...] = canonical.SPLITS) -> dict[str, Path]:
    """The image folder and annotation file of each split of `splits`, resolved against the repository
    root (ldvc/data/sources.py, "Paths"); a validation-only target needs only the val_* keys."""
    keys = tuple(f"{s}_{what}" for s in splits for what in ("images", "annotations"))
    missing = [k for k in keys if not getattr(cfg, k)]
    if missing:
        raise CocoJsonError(
            f"data.dataset = coco_json needs data.coco_json.{missing[0]} (missing: {missing}); set the "
            f"image folders and annotation JSON files of your dataset in params.yaml"
        )
    paths = {k: input_path(str(getattr(cfg, k)), repo_root) for k in keys}
    for k, p in paths.items():
        if (k.endswith("images") and not p.is_dir()) or (k.endswith("annotations") and not p.is_file()):
            raise CocoJsonError(f"data.coco_json.{k}: {p} does not exist")
    return paths


def _load_json(annotation_file: str | os.PathLike) -> dict[str, Any]:
    try:
        with open(annotation_file) as f:
            data = json.load(f)
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CocoJsonError(
            f"{annotation_file}: cannot read the COCO annotation file ({type(err).__name__}: {err}); "
            f"fix or replace the file (data.coco_json.*_annotations)"
        ) from None
    if not isinstance(data, dict):
        raise CocoJsonError(f"{annotation_file}: expected a COCO JSON object with 'images', 'annotations' and "
                            f"'categories', found a {type(data).__name__}")
    return data


def categories_by_id(annotation_file: str | os.PathLike) -> list[dict[str, Any]]:
    cats = _load_json(annotation_file).get("categories", [])
    if not cats:
        raise CocoJsonError(f"{annotation_file}: no 'categories' in the annotation file")
    return sorted(cats, key=lambda c: c["id"])


def coco_json_classes(cfg: CocoJsonConfig, repo_root: Path | None = None,
                      splits: tuple[str, ...] = canonical.SPLITS) -> list[str]:
    """Class names in train-id order: `cfg.classes`, else the train file's category names (for a
    validation-only target without a train file: the val file's)."""
    if cfg.classes:
        return list(cfg.classes)
    if not cfg.train_annotations and "train" not in splits and cfg.val_annotations:
        path = Path(cfg.val_annotations)
    elif not cfg.train_annotations:
        raise CocoJsonError("data.coco_json.train_annotations is not set (needed for the class list)")
    else:
        path = Path(cfg.train_annotations)
    if repo_root is None:
        from ldvc.config import repo_root as find_repo_root

        repo_root = find_repo_root()
    path = input_path(path, repo_root)
    return [c["name"] for c in categories_by_id(path)]


def category_to_train_id(coco: COCO, classes: list[str]) -> dict[int, int]:
    """COCO category id -> train id, by name; unlisted categories are left out (ignored)."""
    index = {c: i for i, c in enumerate(classes)}
    return {c["id"]: index[c["name"]] for c in coco.loadCats(coco.getCatIds()) if c["name"] in index}


def check_classes(classes: list[str], cat_names: list[str], where: str) -> None:
    if len(set(classes)) != len(classes):
        raise CocoJsonError("data.coco_json.classes has duplicate names")
    if len(classes) >= canonical.IGNORE_INDEX:
        raise CocoJsonError(f"{len(classes)} classes do not fit uint8 labels (at most 254)")
    for name in classes:
        if name not in cat_names:
            close = difflib.get_close_matches(name, cat_names, n=5, cutoff=0.5)
            raise CocoJsonError(
                f"data.coco_json.classes: {name!r} is not a category of {where} "
                f"({'close matches: ' + str(close) if close else 'categories: ' + str(cat_names)})"
            )


def ann_mask(segmentation: Any, h: int, w: int) -> np.ndarray:
    """(H, W) uint8 0/1 mask of one annotation: polygons, uncompressed or compressed RLE."""
    if isinstance(segmentation, list):  # polygons [[x1, y1, x2, y2, ...], ...]
        if not segmentation:
            return np.zeros((h, w), dtype=np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, h, w)  # uncompressed RLE (iscrowd=1)
    elif isinstance(segmentation, dict):
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    else:
        raise CocoJsonError(f"unsupported segmentation of type {type(segmentation).__name__}")
    with warnings.catch_warnings():
        # pycocotools' Cython decode trips numpy 2's copy-keyword DeprecationWarning (harmless).
        warnings.simplefilter("ignore", DeprecationWarning)
        m = mask_utils.decode(rle)
    if m.shape != (h, w):
        raise CocoJsonError(f"annotation mask is {m.shape}, the image is {(h, w)}")
    return m


def rasterize(anns: list[tuple[int, float, int, Any]], h: int, w: int) -> np.ndarray:
    """anns: (train_id, area, ann_id, segmentation) -> (H, W) uint8 label, largest area painted first."""
    label = np.full((h, w), canonical.IGNORE_INDEX, dtype=np.uint8)
    for train_id, _, ann_id, seg in sorted(anns, key=lambda a: (-a[1], a[2])):
        try:
            mask = ann_mask(seg, h, w)
        except Exception as err:  # noqa: BLE001 - pycocotools raises a bare Exception ("input type is not
            # supported") or TypeError/ValueError for malformed polygons or RLE counts; whatever it is,
            # it is this annotation's content, and the message must name it.
            raise CocoJsonError(f"annotation id {ann_id}: cannot rasterise its segmentation "
                                f"({type(err).__name__}: {err})") from None
        label[mask.astype(bool)] = train_id
    return label


def _convert_one(item: tuple[str, str, str, int, int, list, str], out: str) -> tuple[str, str]:
    split, image_id, image_src, h, w, anns, ann_file = item
    _, (ih, iw) = canonical.write_image(image_src, Path(out) / "images" / split, image_id)
    if (ih, iw) != (h, w):
        raise CocoJsonError(f"{image_src}: the image is {ih}x{iw}, its annotation file {ann_file} says {h}x{w}")
    try:
        label = rasterize(anns, h, w)
    except CocoJsonError as err:
        raise CocoJsonError(f"{ann_file}: image {image_src}: {err}; fix that annotation") from None
    canonical.write_label(Path(out) / "labels" / split / f"{image_id}.png", label)
    return split, image_id


def load_coco(ann_file: Path) -> COCO:
    """A pycocotools COCO index of `ann_file`; any failure names the file."""
    data = _load_json(ann_file)
    coco = COCO()  # built from the parsed dict: pycocotools' own loader names no file on errors
    coco.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
            coco.createIndex()
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CocoJsonError(
            f"{ann_file}: not a valid COCO annotation file ({type(err).__name__}: {err}); every image needs "
            f"'id', 'file_name', 'height', 'width', every annotation 'id', 'image_id', 'category_id'"
        ) from None
    return coco


def plan_split(split: str, images_dir: Path, ann_file: Path, classes: list[str]) -> tuple[list, dict[str, Any]]:
    coco = load_coco(ann_file)
    items, seen_ids = [], {}
    n_anns = n_crowd = n_rle = 0
    current: Any = "categories"  # the entry being planned, for the error message
    try:
        cat_names = [c["name"] for c in coco.loadCats(coco.getCatIds())]
        check_classes(classes, cat_names, str(ann_file))
        to_train = category_to_train_id(coco, classes)
        for img in coco.loadImgs(sorted(coco.getImgIds())):
            current = img.get("file_name", img.get("id")) if isinstance(img, dict) else img
            rel = Path(img["file_name"])
            image_id = "__".join(rel.with_suffix("").parts)
            if image_id in seen_ids:
                raise CocoJsonError(
                    f"{ann_file}: images {seen_ids[image_id]!r} and {img['file_name']!r} share id {image_id!r}"
                )
            seen_ids[image_id] = img["file_name"]
            src = images_dir / rel
            if not src.is_file():
                raise CocoJsonError(f"{ann_file}: image {img['file_name']!r} not found in {images_dir}")
            anns = []
            for a in coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]], iscrowd=None)):
                if a["category_id"] not in to_train or "segmentation" not in a:
                    continue
                anns.append((to_train[a["category_id"]], float(a.get("area", 0.0)), a["id"], a["segmentation"]))
                n_anns += 1
                n_crowd += int(a.get("iscrowd", 0))
                n_rle += int(isinstance(a["segmentation"], dict))
            items.append((split, image_id, str(src), int(img["height"]), int(img["width"]), anns, str(ann_file)))
    except CocoJsonError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise CocoJsonError(
            f"{ann_file}: entry {current!r} (an image with its annotations, or the categories) has a missing "
            f"or malformed field"
            f"({type(err).__name__}: {err}); fix the annotation file"
        ) from None
    ignored = sorted(set(cat_names) - set(classes))
    stats = {"annotations": str(ann_file), "images_dir": str(images_dir), "painted_annotations": n_anns,
             "crowd_annotations": n_crowd, "rle_annotations": n_rle, "ignored_categories": ignored}
    return items, stats


def prepare_coco_json(cfg: CocoJsonConfig, out_root: Path, repo_root: Path, num_workers: int = 4,
                      splits: tuple[str, ...] = canonical.SPLITS) -> dict[str, Any]:
    """Rasterise the COCO-format annotations of `splits` (train and val, or val only for an evaluation
    target) into `out_root`; returns meta."""
    paths = _required_paths(cfg, Path(repo_root), splits)
    classes = coco_json_classes(cfg, Path(repo_root), splits)
    plans, stats = {}, {}
    for split in splits:
        plans[split], stats[split] = plan_split(split, paths[f"{split}_images"], paths[f"{split}_annotations"], classes)
        if not plans[split]:
            raise CocoJsonError(f"{paths[f'{split}_annotations']}: no images in the {split} annotation file")
    with canonical.staging(out_root, splits) as tmp:
        canonical.parallel_map(functools.partial(_convert_one, out=str(tmp)), [i for s in splits for i in plans[s]],
                               num_workers, "COCO JSON -> canonical")
        splits = {s: len(canonical.write_list(tmp, s, [i[1] for i in plans[s]])) for s in plans}
        canonical.write_meta(tmp, "coco_json", classes, splits, {"paint_order": "area_desc", **stats})
    return canonical.read_meta(out_root)
