"""The canonical on-disk dataset format that every preparer writes and every loader reads.

    <root>/meta.json               {"dataset", "classes" (train-id order), "ignore_index": 255 | 65535,
                                    "splits": {"train": n, "val": n} | {"val": n}, "source": {provenance}}
    <root>/images/<split>/<id>.jpg|png   RGB (a non-RGB source image is converted and stored as PNG)
    <root>/labels/<split>/<id>.png       0..C-1 = train ids; up to 255 classes: 8-bit, 255 = ignore;
                                         more (ADE20K-847, PASCAL Context-459): 16-bit, 65535 = ignore
    <root>/lists/<split>.txt             one id per line, sorted

Splits: meta.json's "splits" names exactly the splits a dataset has. A dataset prepared as `data`
(the training data) has both; an evaluation target (params.yaml `cross_dataset`, `open_vocab.targets`)
is prepared with its validation split only (`EVAL_SPLITS`: no train list, images or labels; the
archives and conversions only training needs are skipped, ldvc/data/sources.py). Such a
validation-only dataset is accepted by `validate_canonical(root, splits=EVAL_SPLITS)`; everything that
needs a training split (`validate_canonical` by default, the download stage's check, the training
loader `ldvc.data.dataset.SegmentationFolder(root, "train")`) refuses it with `missing_split_error`,
which says what the folder is and how to get training data.

Wide vocabularies: 847 or 459 train ids do not fit 8 bits below 255, so such datasets store 16-bit
grayscale PNG labels whose ignore value is 65535 (`ignore_index_for`), the convention of the
open-vocabulary references (SAN san/data/datasets/register_ade20k_full.py and register_pcontext.py,
FC-CLIP fcclip/data/datasets/register_ade20k_full.py and register_pascal_ctx_459_sem_seg.py all
register these datasets with `ignore_label=65535` over 16-bit label images). Every dataset with at
most 255 classes keeps the 8-bit format and ignore 255 byte for byte, so nothing prepared before
changes. meta.json's "ignore_index" says which; readers take it from there (`read_label` returns
uint8 or uint16 accordingly).

Writers build the whole tree in a sibling temporary directory (`staging`) and rename it into
place at the end, so a crash never leaves a half-written dataset where a loader would find it.
That directory is made by `fresh_dir`, a plain `os.mkdir` under a random name, so it gets the
permissions any mkdir gets (0o777 & ~umask) - `tempfile.mkdtemp` makes 0700 directories, which
other users of a shared server cannot read once renamed into place. Only images/<split> and
labels/<split> are pre-created: the lists are files (lists/<split>.txt), and pre-creating
lists/<split>/ left two empty folders in every prepared dataset.
`parallel_map` is the shared worker pool with a progress bar used by the converters (our choice:
`multiprocessing` with chunked `imap_unordered`, one process when `num_workers` <= 1).

Every reader of a SOURCE file (an image, a label map, meta.json) turns a decoding failure (a
truncated PNG raises a bare `OSError: image file is truncated` deep inside PIL) into
`UnreadableFileError` naming the file and the fix; a worker's error reaches the parent process
with that message intact (the class takes one message argument, so it pickles).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image
from tqdm import tqdm

IGNORE_INDEX = 255
WIDE_IGNORE_INDEX = 65535  # datasets of more than 255 classes (16-bit labels)
SPLITS = ("train", "val")
EVAL_SPLITS = ("val",)  # an evaluation target: validation split only
IMAGE_EXTS = (".jpg", ".png")
META_FILE = "meta.json"


class CanonicalFormatError(ValueError):
    """A prepared dataset directory does not follow the canonical format."""


class UnreadableFileError(ValueError):
    """A source file (image, label map, annotation) is truncated or corrupt; the message names it."""


# What PIL and the decoders raise for a truncated or corrupt file (UnidentifiedImageError is an
# OSError; SyntaxError comes from some of PIL's format parsers, DecompressionBombError from huge
# dimensions in a damaged header).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
REPLACE_FIX = (
    "replace it with an intact copy (for a downloaded archive, delete its folder under "
    "<data.cache_dir>/extracted/ so the next run extracts it again)"
)


def unreadable(path: str | os.PathLike, what: str, err: BaseException, fix: str = REPLACE_FIX) -> UnreadableFileError:
    """The error for a source file that cannot be read: names the file, the cause and the fix."""
    cause = f"{type(err).__name__}: {err}"
    if isinstance(err, FileNotFoundError):
        return UnreadableFileError(f"{path}: this {what} does not exist ({cause}); {fix}")
    if isinstance(err, PermissionError):
        return UnreadableFileError(f"{path}: this {what} is not readable ({cause}); fix its permissions")
    return UnreadableFileError(f"{path}: cannot read this {what} ({cause}); the file is truncated or corrupt: {fix}")


def read_index_png(path: str | os.PathLike, what: str, modes: Sequence[str] = ("L", "P"), mode_fix: str = "",
                   mode_error: type[ValueError] = ValueError, dtype: type | None = np.uint8) -> np.ndarray:
    """(H, W) pixel values of a single-channel label image (as `dtype`; None = the image's own), fully
    decoded here so that a truncated file fails naming itself. Another mode than `modes` raises
    `mode_error` + `mode_fix`."""
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in modes:
                return np.asarray(im, dtype=dtype).copy()
    except DECODE_ERRORS as err:
        raise unreadable(path, what, err) from None
    raise mode_error(f"{path}: {what} has mode {mode!r}, expected {' or '.join(map(repr, modes))}{mode_fix}")


# --------------------------------------------------------------------------------------------
# Paths and reading
# --------------------------------------------------------------------------------------------


def ignore_index_for(num_classes: int) -> int:
    """The ignore value of a dataset of `num_classes` classes: 255 (8-bit labels) up to 255 classes,
    65535 (16-bit labels) beyond; more than 65535 classes do not fit any label format here."""
    if num_classes <= IGNORE_INDEX:
        return IGNORE_INDEX
    if num_classes <= WIDE_IGNORE_INDEX:
        return WIDE_IGNORE_INDEX
    raise CanonicalFormatError(f"{num_classes} classes do not fit 16-bit labels below {WIDE_IGNORE_INDEX}")


def label_dtype(ignore_index: int) -> type[np.unsignedinteger]:
    """numpy dtype of the label maps of a dataset with this ignore value (uint8 or uint16)."""
    return np.uint8 if ignore_index == IGNORE_INDEX else np.uint16


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
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as err:
        raise CanonicalFormatError(
            f"{path}: not readable JSON ({type(err).__name__}: {err}); re-run the data preparation "
            f"(dvc repro download)"
        ) from None
    if not isinstance(meta, dict):
        raise CanonicalFormatError(f"{path}: expected a JSON object, found {type(meta).__name__}; re-run the "
                                   f"data preparation (dvc repro download)")
    missing = [k for k in ("dataset", "classes", "ignore_index", "splits") if k not in meta]
    if missing:
        raise CanonicalFormatError(f"{path}: missing keys {missing}; re-run the data preparation")
    return meta


def recorded_splits(meta: dict[str, Any], where: str | os.PathLike = "") -> tuple[str, ...]:
    """The splits meta.json records (in SPLITS order); raises for a malformed "splits" entry."""
    splits = meta.get("splits")
    if not isinstance(splits, dict) or not splits or set(splits) - set(SPLITS):
        raise CanonicalFormatError(
            f"{where}/{META_FILE}: 'splits' must map some of {list(SPLITS)} to image counts, found {splits!r}; "
            f"re-run the data preparation"
        )
    return tuple(s for s in SPLITS if s in splits)


def missing_split_error(root: str | os.PathLike, split: str, meta: dict[str, Any]) -> CanonicalFormatError:
    """The error for a dataset without `split` (e.g. training on a validation-only evaluation target)."""
    have = list(recorded_splits(meta, root))
    if have == list(EVAL_SPLITS):
        what = (f"{root} is a validation-only dataset (meta.json records the splits {have}): an evaluation target "
                f"(params.yaml cross_dataset / open_vocab.targets) is prepared without its training split")
        fix = ("training needs a dataset prepared as `data` with both splits: set data.dataset and run the "
               "download stage (dvc repro download), and point data.root at its output, not at a target's folder")
    else:
        what = f"{root} has no {split!r} split (meta.json records the splits {have})"
        fix = "re-run the data preparation (dvc repro download)"
    return CanonicalFormatError(f"{what}; {fix}")


def list_ids(root: str | os.PathLike, split: str) -> list[str]:
    path = list_path(root, split)
    if not path.exists():
        raise CanonicalFormatError(
            f"{path} not found: split {split!r} is missing from {root} (splits are {list(SPLITS)})"
        )
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_label(path: str | os.PathLike) -> np.ndarray:
    """(H, W) train-id map: uint8 (8-bit PNG, ignore 255) or uint16 (16-bit PNG of a dataset with more
    than 255 classes, ignore 65535; Pillow opens those as mode "I;16", older versions as "I")."""
    lab = read_index_png(path, "label", ("L", "P", "I;16", "I"), "; re-run the data preparation (dvc repro download)",
                         mode_error=CanonicalFormatError, dtype=None)
    if lab.dtype == np.uint8 or lab.dtype == np.uint16:
        return lab
    if lab.size and (lab.min() < 0 or lab.max() > WIDE_IGNORE_INDEX):
        raise CanonicalFormatError(f"{path}: label values outside 0..{WIDE_IGNORE_INDEX}; re-run the data preparation")
    return lab.astype(np.uint16)


def validate_canonical(root: str | os.PathLike, check_pixels: bool = False,
                       splits: Sequence[str] = SPLITS) -> dict[str, Any]:
    """Check the layout of a prepared dataset; returns its meta. Raises `CanonicalFormatError`
    naming the first problem. `check_pixels` also opens every label (slow on big datasets).

    `splits`: the splits the dataset must have: both (the default: training data) or `EVAL_SPLITS`
    (a validation-only dataset, an evaluation target, is then accepted). Every split meta.json
    records is checked; a list file of a split it does not record is an error (a mixed-up tree)."""
    root = Path(root)
    meta = read_meta(root)
    have = recorded_splits(meta, root)
    for split in splits:
        if split not in have:
            raise missing_split_error(root, split, meta)
    for split in SPLITS:
        if split not in have and list_path(root, split).exists():
            raise CanonicalFormatError(f"{list_path(root, split)} exists but {root}/{META_FILE} records only the "
                                       f"splits {list(have)}; re-run the data preparation")
    classes = meta["classes"]
    if not isinstance(classes, list) or not classes or len(set(classes)) != len(classes):
        raise CanonicalFormatError(f"{root}/meta.json: 'classes' must be a non-empty list of unique names")
    ignore = ignore_index_for(len(classes))
    if meta["ignore_index"] != ignore:
        raise CanonicalFormatError(
            f"{root}/meta.json: ignore_index is {meta['ignore_index']!r}, expected {ignore} for {len(classes)} classes "
            f"(8-bit labels with ignore 255 up to 255 classes, 16-bit with 65535 beyond); re-run the data preparation"
        )
    for split in have:
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
                want = np.dtype(label_dtype(ignore))
                if lab.dtype != want:
                    raise CanonicalFormatError(
                        f"{label_path(root, split, i)}: {lab.dtype} label, expected {want} for {n} classes "
                        f"(ignore {ignore}); re-run the data preparation"
                    )
                bad = np.unique(lab[(lab >= n) & (lab != ignore)])
                if bad.size:
                    raise CanonicalFormatError(
                        f"{label_path(root, split, i)}: values {bad.tolist()} are neither a train id "
                        f"(0..{n - 1}) nor ignore ({ignore})"
                    )
    return meta


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def staging(out_root: str | os.PathLike, splits: Sequence[str] = SPLITS) -> Iterator[Path]:
    """Yield a temporary sibling of `out_root` to write into; on success it replaces `out_root`
    (the old tree is removed only after the new one is in place); on error it is deleted.
    images/<split> and labels/<split> are pre-created for `splits` only."""
    out_root = Path(out_root)
    out_root.parent.mkdir(parents=True, exist_ok=True)
    tmp = fresh_dir(out_root.parent, f".{out_root.name}.partial-")
    try:
        # lists/ holds files (lists/<split>.txt, made by write_list): no per-split folders there.
        for sub in ("images", "labels"):
            for split in splits:
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


def fresh_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """Create and return a new, empty directory `<parent>/<prefix><random>`.

    Unlike `tempfile.mkdtemp` (always 0700) this is a plain `os.mkdir`, so the directory gets the
    permissions of any other mkdir (0o777 & ~umask): a dataset renamed into place from it is
    readable by the other users of a shared server exactly when their own folders would be."""
    parent = Path(parent)
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue  # a name collision (or a leftover): draw another name
        return path
    raise FileExistsError(f"{parent}: 100 random names starting with {prefix!r} all exist; remove the leftovers")


def update_meta_source(root: str | os.PathLike, **items: Any) -> dict[str, Any]:
    """Add `items` to meta.json's "source" (provenance) record of a prepared dataset, atomically."""
    meta = read_meta(root)
    meta.setdefault("source", {}).update(items)
    write_text_atomic(Path(root) / META_FILE, json.dumps(meta, indent=2) + "\n")
    return meta


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
        "ignore_index": ignore_index_for(len(classes)),
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
    """Save an (H, W) train-id map as a single-channel PNG: uint8 -> 8-bit, uint16 -> 16-bit grayscale."""
    if label.dtype not in (np.uint8, np.uint16) or label.ndim != 2:
        raise ValueError(f"{path}: label must be a 2-D uint8 or uint16 array, got {label.dtype} {label.shape}")
    # Image.fromarray picks mode "L" for uint8 and "I;16" for uint16 (16-bit grayscale PNG).
    Image.fromarray(np.ascontiguousarray(label)).save(path, format="PNG")


def write_image(src: str | os.PathLike, dst_dir: str | os.PathLike, image_id: str) -> tuple[Path, tuple[int, int]]:
    """Place source image `src` as `<dst_dir>/<id>.jpg|png`; returns (path, (H, W)).

    An RGB JPEG is hard-linked (same file system) or copied byte for byte, so no re-encoding loss;
    anything else (grayscale/CMYK JPEGs exist in COCO, PNGs, ...) is converted to RGB and stored
    as PNG, which is lossless."""
    src = Path(src)
    converted = None
    try:
        with Image.open(src) as im:
            mode, fmt, (w, h) = im.mode, im.format, im.size
            if not (mode == "RGB" and fmt == "JPEG"):
                converted = im.convert("RGB")  # decodes the whole image: truncation shows here
            elif not _ends_with_jpeg_eoi(src):
                # Linking reads only the header, so a truncated JPEG would pass unnoticed until
                # training. A file without the end-of-image marker is decoded in full to decide
                # (some cameras append data after the marker; those decode fine and are kept).
                im.load()
    except DECODE_ERRORS as err:
        raise unreadable(src, "image", err) from None
    # Writing is outside the try: a full disk is not a corrupt source image.
    if converted is not None:
        dst = Path(dst_dir) / f"{image_id}.png"
        converted.save(dst, format="PNG")
        return dst, (h, w)
    dst = Path(dst_dir) / f"{image_id}.jpg"
    link_or_copy(src, dst)
    return dst, (h, w)


def _ends_with_jpeg_eoi(path: Path) -> bool:
    """Whether the file ends with the JPEG end-of-image marker FF D9 (two bytes read, no decoding)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < 2:
            return False
        f.seek(-2, os.SEEK_END)
        return f.read(2) == b"\xff\xd9"


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
