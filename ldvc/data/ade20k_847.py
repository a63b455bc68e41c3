"""Full ADE20K (ADE-847, release ADE20K_2021_17_01) -> canonical format.

The release is handed out only after registration (https://ade20k.csail.mit.edu/), so there is no
download: the user points `data.sources.ade20k_full.url` at their ADE20K_2021_17_01.zip (checked
and extracted once into data.cache_dir) or `data.extracted_dir` at a folder holding the extracted
ADE20K_2021_17_01/; without either, ldvc.data.sources.require_configured says so and where to get it.

Layout used: ADE20K_2021_17_01/images/ADE/{training,validation}/<scene folders>/ADE_<...>.jpg, each
with its class/instance encoding <stem>_seg.png beside it (R, G, B channels).

What the open-vocabulary papers' preparation script does, reproduced step by step (KU-CVLAB/CAT-Seg
datasets/prepare_ade20k_full.py lines 932-1011 at 6d3a188af95165147fe2f34a8237fa7d2633e784, the same
code as bytedance/fc-clip datasets/prepare_ade20k_full_sem_seg.py lines 936-1011 at
2b0bbe213070d44da9182530fa2e826fef03f974, after NVlabs/ODISE):
1. class mask of an image = (R / 10 truncated) * 256 + G of its _seg.png (`loadAde20K`, the ADE20K
   toolkit's decoding), an int32 map of ADE20K class ids (0 = unlabelled);
2. split: "validation" when the file name's second "_" field is "val" (ADE_val_...), else "training";
3. resize when the short side exceeds 512: to short side 512, long side round(long / short * 512)
   (Python's round), the image with OpenCV INTER_LINEAR, the class mask with INTER_NEAREST;
4. label = 65535 everywhere, then the trainId (0..846) of every pixel whose class id is one of
   ADE20K_SEM_SEG_FULL_CATEGORIES' ids (ldvc/data/ade20k_847_classes.py); all others stay 65535,
   the ignore value the references register (`ignore_label=65535`, fcclip/data/datasets/
   register_ade20k_full.py line 56, san/data/datasets/register_ade20k_full.py line 993), saved 16-bit;
5. the image is saved again with PIL at its default JPEG settings (quality 75) - every image, resized
   or not - and those re-encoded images are what the references evaluate.
Here: steps 1-5 the same, labels as 16-bit PNG (canonical.py: ignore 65535 for > 255 classes).

Deviations, each our choice:
- The image list comes from walking images/ADE/{training,validation} for ADE_*.jpg files (each must
  have its _seg.png), not from index_ade20k.pkl: loading a pickle runs arbitrary code, and for an
  intact release the index's folder/filename entries are exactly these files. An image found in the
  training folder under an ADE_val_ name (or the reverse) is an error, so the references' name rule
  and the folders agree. The official release has 25,574 training and 2,000 validation images
  (recorded as "official_counts" in meta.json; other counts are used as found).
- No OpenCV dependency: INTER_NEAREST (`nearest_index`) and INTER_LINEAR for 8-bit images
  (`resize_linear`: half-pixel centres, clamped edges, 11-bit fixed-point weights and OpenCV's
  vectorised vertical rounding) are re-implemented. Measured against opencv-python-headless 5.1.0 on
  this machine (downscales of 13 image sizes from 513x513 to 4000x3000, 1 and 3 channels, random
  content): both identical to cv2.resize, pixel for pixel; tests/test_ade20k_847.py compares them
  with the installed OpenCV (a dev dependency) on every run. OpenCV does not promise INTER_LINEAR to be
  bit-exact across versions and CPUs (that is INTER_LINEAR_EXACT), so neither can we.
- A non-RGB image (grayscale, CMYK) is converted to RGB before the resize; the reference resizes and
  saves it in its own mode (a grayscale JPEG; CMYK would fail to save as JPEG there).
- The training split is prepared too when the dataset is `data` (FC-CLIP's script does; CAT-Seg's
  skips it), so the dataset also works as data.dataset; as an evaluation target (`splits` = val
  only) only validation is prepared, as CAT-Seg does: images/ADE/training is neither extracted
  (ldvc/data/sources.py TRAIN_ONLY_MEMBERS) nor walked nor converted.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ldvc.data import canonical
from ldvc.data.ade20k_847_classes import ADE20K_847_CLASSES, ADE20K_847_IDS
from ldvc.data.voc import VocLayoutError, find_dir

SPLIT_DIRS = {"train": "training", "val": "validation"}
OFFICIAL_COUNTS = {"train": 25574, "val": 2000}
MAX_SIZE = 512  # the references' short-side limit
SEG_SUFFIX = "_seg.png"
MAX_CLASS_ID = 25 * 256 + 255  # (R // 10) * 256 + G with R, G <= 255

# ADE20K class id -> train id (0..846), every other id -> 65535 (ignore).
ID_TO_TRAIN = np.full(MAX_CLASS_ID + 1, canonical.WIDE_IGNORE_INDEX, dtype=np.uint16)
ID_TO_TRAIN[list(ADE20K_847_IDS)] = np.arange(len(ADE20K_847_IDS), dtype=np.uint16)


class AdeFullLayoutError(VocLayoutError):
    """The extracted ADE20K_2021_17_01 release does not have the expected layout."""


class AdeFullAnnotationError(ValueError):
    """An ADE20K image or its _seg.png cannot be read or does not fit (names the file)."""


def find_ade_full_root(base: Path, splits: tuple[str, ...] = canonical.SPLITS) -> Path:
    """The ADE20K_2021_17_01 directory (images/ADE/training and images/ADE/validation; the folders of
    `splits` only)."""
    names = [SPLIT_DIRS[s] for s in splits]
    try:
        return find_dir(
            base,
            lambda d: all((d / "images" / "ADE" / name).is_dir() for name in names),
            f"ADE20K_2021_17_01 directory ({' and '.join(f'images/ADE/{n}' for n in names)})",
        )
    except VocLayoutError as exc:
        raise AdeFullLayoutError(
            f"{exc}: data.dataset = ade20k_847 needs the full ADE20K release ADE20K_2021_17_01 (extracted: "
            f"ADE20K_2021_17_01/images/ADE/...), not ADEChallengeData2016 (that is ade20k_150)"
        ) from None


def split_of(file_name: str) -> str:
    """The references' rule: 'val' when the second '_' field of the name is 'val', else 'train'."""
    parts = file_name.split("_")
    return "val" if len(parts) > 1 and parts[1] == "val" else "train"


def plan_ade20k_847(ade_root: Path,
                    splits: tuple[str, ...] = canonical.SPLITS) -> dict[str, list[tuple[str, str, str, str]]]:
    """Per split of `splits`, the (split, id, image, _seg.png) of every ADE_*.jpg below images/ADE/<split folder>."""
    plan: dict[str, list[tuple[str, str, str, str]]] = {}
    seen: dict[str, Path] = {}
    for split in splits:
        name = SPLIT_DIRS[split]
        folder = ade_root / "images" / "ADE" / name
        items = []
        for image in sorted(folder.rglob("ADE_*.jpg")):
            if split_of(image.name) != split:
                raise AdeFullLayoutError(f"{image}: a {split_of(image.name)} file name in the {name} folder; the "
                                         f"release's folders and file names disagree")
            if image.stem in seen:
                raise AdeFullLayoutError(f"{image}: image id {image.stem} also at {seen[image.stem]}")
            seen[image.stem] = image
            seg = image.with_name(image.stem + SEG_SUFFIX)
            if not seg.is_file():
                raise AdeFullLayoutError(f"{seg}: the class encoding of {image.name} is missing (every image of "
                                         f"the release has its {SEG_SUFFIX}); the extraction is incomplete")
            items.append((split, image.stem, str(image), str(seg)))
        if not items:
            raise AdeFullLayoutError(f"{folder}: no ADE_*.jpg images below it")
        plan[split] = items
    return plan


# --------------------------------------------------------------------------------------------
# The reference's per-image steps
# --------------------------------------------------------------------------------------------


def class_mask(seg_rgb: np.ndarray) -> np.ndarray:
    """(H, W, >=3) uint8 _seg.png -> (H, W) int32 ADE20K class ids: (R // 10) * 256 + G."""
    r, g = seg_rgb[..., 0].astype(np.int32), seg_rgb[..., 1].astype(np.int32)
    return (r // 10) * 256 + g


def target_size(h: int, w: int, max_size: int = MAX_SIZE) -> tuple[int, int] | None:
    """(h, w) after the references' resize, or None when the short side is already <= max_size."""
    if w >= h > max_size:
        return max_size, round(w / float(h) * max_size)
    if h >= w > max_size:
        return round(h / float(w) * max_size), max_size
    return None


def nearest_index(src: int, dst: int) -> np.ndarray:
    """(dst,) source indices of OpenCV's INTER_NEAREST: min(floor(x * (1 / (dst / src))), src - 1)."""
    ifx = 1.0 / (dst / src)  # OpenCV computes the inverse scale in double precision, in this order
    return np.minimum(np.floor(np.arange(dst) * ifx).astype(np.int64), src - 1)


COEF_SCALE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE (11-bit weights)


def _linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, a0, a1) per output position: OpenCV INTER_LINEAR's source taps and integer weights
    (a0 + a1 = 2048): fx = float32((x + 0.5) * scale - 0.5), clamped to the edges, a0 = round((1 - fx) * 2048)."""
    scale = 1.0 / (dst / src)
    fx = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    i0 = np.floor(fx).astype(np.int64)
    fx = (fx - i0).astype(np.float32)
    low = i0 < 0
    fx[low], i0[low] = 0, 0
    high = i0 >= src - 1
    fx[high], i0[high] = 0, src - 1
    a0 = np.rint((np.float32(1) - fx) * np.float32(COEF_SCALE)).astype(np.int64)
    return i0, np.minimum(i0 + 1, src - 1), a0, COEF_SCALE - a0


def resize_linear(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """(H, W, C) uint8 -> (h, w, C) uint8 as cv2.resize(image, (w, h), interpolation=INTER_LINEAR)."""
    y0, y1, b0, b1 = _linear_taps(image.shape[0], h)
    x0, x1, a0, a1 = _linear_taps(image.shape[1], w)
    src = image.astype(np.int64)
    rows = src[:, x0] * a0[None, :, None] + src[:, x1] * a1[None, :, None]  # (H, w, C), scaled by 2048
    # OpenCV's vertical pass for 8-bit output: each weighted row is shifted before the sum (its SIMD form).
    out = (((b0[:, None, None] * (rows[y0] >> 4)) >> 16) + ((b1[:, None, None] * (rows[y1] >> 4)) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def convert_pair(image: np.ndarray, seg_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 image and its _seg.png -> (resized image, (h, w) uint16 train ids)."""
    mask = class_mask(seg_rgb)  # (H, W) int32
    size = target_size(*mask.shape)
    if size is not None:
        h, w = size
        image = resize_linear(image, h, w)
        mask = mask[nearest_index(mask.shape[0], h)][:, nearest_index(mask.shape[1], w)]
    return image, ID_TO_TRAIN[mask]


def _read_rgb(path: str, what: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8).copy()
    except canonical.DECODE_ERRORS as err:
        raise canonical.unreadable(path, what, err) from None


def _convert_one(item: tuple[str, str, str, str], out: str) -> tuple[str, str]:
    """Worker: the reference's steps 1-5 for one image into the staging tree `out`."""
    split, image_id, image_src, seg_src = item
    image = _read_rgb(image_src, "ADE20K image")
    seg = _read_rgb(seg_src, "ADE20K class encoding (_seg.png)")
    if image.shape[:2] != seg.shape[:2]:
        raise AdeFullAnnotationError(f"{seg_src}: {seg.shape[0]}x{seg.shape[1]} but image {image_src} is "
                                     f"{image.shape[0]}x{image.shape[1]}")
    image, label = convert_pair(image, seg)
    # PIL's JPEG defaults (quality 75, 4:2:0), exactly the reference's `Image.fromarray(img).save(<name>.jpg)`.
    Image.fromarray(image).save(Path(out) / "images" / split / f"{image_id}.jpg", format="JPEG")
    canonical.write_label(Path(out) / "labels" / split / f"{image_id}.png", label)
    return split, image_id


def prepare_ade20k_847(ade_base: Path, out_root: Path, num_workers: int = 4, source: dict[str, Any] | None = None,
                       splits: tuple[str, ...] = canonical.SPLITS) -> dict[str, Any]:
    """Convert the extracted ADE20K_2021_17_01 release under `ade_base` into `out_root` (`splits`: both,
    or val only for an evaluation target); returns meta."""
    ade_root = find_ade_full_root(Path(ade_base), splits)
    plan = plan_ade20k_847(ade_root, splits)
    with canonical.staging(out_root, splits) as tmp:
        canonical.parallel_map(functools.partial(_convert_one, out=str(tmp)), [i for s in splits for i in plan[s]],
                               num_workers, "ADE20K-847 -> canonical")
        counts = {s: len(canonical.write_list(tmp, s, [i[1] for i in plan[s]])) for s in splits}
        canonical.write_meta(tmp, "ade20k_847", ADE20K_847_CLASSES, counts, {
            **(source or {}), "ade_root": str(ade_root),
            "official_counts": all(counts[s] == OFFICIAL_COUNTS[s] for s in splits),
            "mapping": "class id (R // 10) * 256 + G of _seg.png -> trainId of the 847 categories, else 65535",
            "resize": f"short side > {MAX_SIZE} -> {MAX_SIZE} (image bilinear, label nearest); images re-encoded "
                      f"as JPEG at PIL's defaults",
        })
    return canonical.read_meta(out_root)

