"""The canonical on-disk dataset format that every preparer writes and every loader reads.

    <root>/meta.json               {"dataset", "classes" (train-id order), "ignore_index": 255,
                                    "splits": {"train": n, "val": n}, "source": {provenance}}
    <root>/images/<split>/<id>.jpg|png   RGB (a non-RGB source image is converted and stored as PNG)
    <root>/labels/<split>/<id>.png       uint8, 0..C-1 = train ids, 255 = ignore
    <root>/lists/<split>.txt             one id per line, sorted

Writers build the whole tree in a sibling temporary directory (`staging`) and rename it into
place at the end, so a crash never leaves a half-written dataset where a loader would find it.
`parallel_map` is the shared worker pool with a progress bar used by the converters (our choice:
`multiprocessing` with chunked `imap_unordered`, one process when `num_workers` <= 1).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image
from tqdm import tqdm

IGNORE_INDEX = 255
SPLITS = ("train", "val")
IMAGE_EXTS = (".jpg", ".png")
META_FILE = "meta.json"


class CanonicalFormatError(ValueError):
    """A prepared dataset directory does not follow the canonical format."""


# --------------------------------------------------------------------------------------------
# Paths and reading
# --------------------------------------------------------------------------------------------


def image_path(root: str | os.PathLike, split: str, image_id: str) -> Path:
    """The image of `image_id` (JPEG preferred, else PNG); raises if neither exists."""
    base = Path(root) / "images" / split
    for ext in IMAGE_EXTS:
        p = base / f"{image_id}{ext}"
        if p.exists():
            return p
    raise FileNotFoundError(
        f"{base}/{image_id}.jpg|.png: image of id {image_id!r} (split {split!r}) not found; "
        f"re-run the data preparation (dvc repro download)"
    )


def label_path(root: str | os.PathLike, split: str, image_id: str) -> Path:
    return Path(root) / "labels" / split / f"{image_id}.png"


def list_path(root: str | os.PathLike, split: str) -> Path:
    return Path(root) / "lists" / f"{split}.txt"


def read_meta(root: str | os.PathLike) -> dict[str, Any]:
    path = Path(root) / META_FILE
    if not path.exists():
        raise CanonicalFormatError(
            f"{path} not found: {root} is not a prepared dataset (run the download/prepare stage first)"
        )
    with open(path) as f:
        meta = json.load(f)
    missing = [k for k in ("dataset", "classes", "ignore_index", "splits") if k not in meta]
    if missing:
        raise CanonicalFormatError(f"{path}: missing keys {missing}; re-run the data preparation")
    return meta


def list_ids(root: str | os.PathLike, split: str) -> list[str]:
    path = list_path(root, split)
    if not path.exists():
        raise CanonicalFormatError(
            f"{path} not found: split {split!r} is missing from {root} (splits are {list(SPLITS)})"
        )
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_label(path: str | os.PathLike) -> np.ndarray:
    """(H, W) uint8 train-id map."""
    with Image.open(path) as im:
        if im.mode not in ("L", "P"):
            raise CanonicalFormatError(f"{path}: label mode {im.mode!r}, expected single-channel 'L'")
        return np.asarray(im, dtype=np.uint8).copy()


def validate_canonical(root: str | os.PathLike, check_pixels: bool = False) -> dict[str, Any]:
    """Check the layout of a prepared dataset; returns its meta. Raises `CanonicalFormatError`
    naming the first problem. `check_pixels` also opens every label (slow on big datasets)."""
    root = Path(root)
    meta = read_meta(root)
    classes = meta["classes"]
    if not isinstance(classes, list) or not classes or len(set(classes)) != len(classes):
        raise CanonicalFormatError(f"{root}/meta.json: 'classes' must be a non-empty list of unique names")
    if len(classes) > IGNORE_INDEX:
        raise CanonicalFormatError(f"{root}: {len(classes)} classes do not fit uint8 labels below 255")
    for split in SPLITS:
        ids = list_ids(root, split)
        if not ids:
            raise CanonicalFormatError(f"{list_path(root, split)}: split {split!r} is empty")
        if ids != sorted(ids) or len(set(ids)) != len(ids):
            raise CanonicalFormatError(f"{list_path(root, split)}: ids must be unique and sorted")
        expected = meta["splits"].get(split)
        if expected != len(ids):
            raise CanonicalFormatError(
                f"{root}/meta.json says split {split!r} has {expected} images, the list has {len(ids)}"
            )
        images = {p.stem for p in (root / "images" / split).glob("*") if p.suffix in IMAGE_EXTS}
        labels = {p.stem for p in (root / "labels" / split).glob("*.png")}
        for what, have in (("image", images), ("label", labels)):
            missing = [i for i in ids if i not in have]
            if missing:
                raise CanonicalFormatError(
                    f"{root}: {len(missing)} {split} ids have no {what} (first: {missing[:3]})"
                )
        orphans = sorted(images - labels)
        if orphans:
            raise CanonicalFormatError(f"{root}: {split} image without label: {orphans[:3]}")
        if check_pixels:
            n = len(classes)
            for i in ids:
                lab = read_label(label_path(root, split, i))
                bad = np.unique(lab[(lab >= n) & (lab != IGNORE_INDEX)])
                if bad.size:
                    raise CanonicalFormatError(
                        f"{label_path(root, split, i)}: values {bad.tolist()} are neither a train id "
                        f"(0..{n - 1}) nor ignore (255)"
                    )
    return meta


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def staging(out_root: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `out_root` to write into; on success it replaces `out_root`
    (the old tree is removed only after the new one is in place); on error it is deleted."""
    out_root = Path(out_root)
    out_root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_root.name}.partial-", dir=out_root.parent))
    try:
        for sub in ("images", "labels", "lists"):
            for split in SPLITS:
                (tmp / sub / split).mkdir(parents=True, exist_ok=True)
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out_root.exists() or out_root.is_symlink():
        old = out_root.parent / f".{out_root.name}.old-{os.getpid()}"
        os.replace(out_root, old)
    os.replace(tmp, out_root)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def write_meta(
    root: str | os.PathLike,
    dataset: str,
    classes: Sequence[str],
    splits: dict[str, int],
    source: dict[str, Any] | None = None,
) -> Path:
    meta = {
        "dataset": dataset,
        "classes": list(classes),
        "ignore_index": IGNORE_INDEX,
        "splits": {k: int(v) for k, v in splits.items()},
        "source": source or {},
    }
    path = Path(root) / META_FILE
    return write_text_atomic(path, json.dumps(meta, indent=2) + "\n")


def write_list(root: str | os.PathLike, split: str, ids: Iterable[str]) -> list[str]:
    ids = sorted(ids)
    if len(set(ids)) != len(ids):
        raise CanonicalFormatError(f"split {split!r}: duplicate image ids")
    write_text_atomic(list_path(root, split), "".join(f"{i}\n" for i in ids))
    return ids


def write_text_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_label(path: str | os.PathLike, label: np.ndarray) -> None:
    """Save an (H, W) uint8 train-id map as a single-channel PNG."""
    if label.dtype != np.uint8 or label.ndim != 2:
        raise ValueError(f"{path}: label must be a 2-D uint8 array, got {label.dtype} {label.shape}")
    Image.fromarray(label, mode="L").save(path, format="PNG")


def write_image(src: str | os.PathLike, dst_dir: str | os.PathLike, image_id: str) -> tuple[Path, tuple[int, int]]:
    """Place source image `src` as `<dst_dir>/<id>.jpg|png`; returns (path, (H, W)).

    An RGB JPEG is hard-linked (same file system) or copied byte for byte, so no re-encoding loss;
    anything else (grayscale/CMYK JPEGs exist in COCO, PNGs, ...) is converted to RGB and stored
    as PNG, which is lossless."""
    src = Path(src)
    with Image.open(src) as im:
        mode, fmt, (w, h) = im.mode, im.format, im.size
        if not (mode == "RGB" and fmt == "JPEG"):
            dst = Path(dst_dir) / f"{image_id}.png"
            im.convert("RGB").save(dst, format="PNG")
            return dst, (h, w)
    dst = Path(dst_dir) / f"{image_id}.jpg"
    link_or_copy(src, dst)
    return dst, (h, w)


def link_or_copy(src: Path, dst: Path) -> None:
    # A hard link costs no disk space for the 18 GB of COCO images; DVC's default cache
    # (reflink, copy) copies outputs into its cache, so the link is never written through.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


# --------------------------------------------------------------------------------------------
# Parallel conversion
# --------------------------------------------------------------------------------------------

T = TypeVar("T")
R = TypeVar("R")


def parallel_map(fn: Callable[[T], R], items: Sequence[T], num_workers: int, desc: str) -> list[R]:
    """`[fn(x) for x in items]` over a process pool with a progress bar (results unordered).

    `fn` must be a picklable top-level function (use functools.partial for arguments)."""
    items = list(items)
    if num_workers <= 1 or len(items) < 2:
        return [fn(x) for x in tqdm(items, desc=desc, unit="img")]
    workers = min(num_workers, len(items))
    chunk = max(1, min(64, len(items) // (workers * 8)))
    # fork is cheap and inherits the already-imported modules; spawn elsewhere (macOS/Windows).
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers) as pool:
        return list(tqdm(pool.imap_unordered(fn, items, chunksize=chunk), total=len(items), desc=desc, unit="img"))
