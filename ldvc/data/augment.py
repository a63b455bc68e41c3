"""Training augmentation and evaluation resizing of the ZegCLIP protocol (mmseg 0.24 pipelines).

Train (protocol.md, "Augmentation"): random keep-ratio resize to a ratio in
[scale_min, scale_max] of the base scale (ZegCLIP: 2048x512; ours: (4*image_size, image_size)),
random crop of image_size x image_size with cat_max_ratio 0.75 (up to 10 tries, as mmseg),
horizontal flip (p 0.5), photometric distortion (mmseg's PhotoMetricDistortion exactly as
ldvc/data/photometric.py reproduces it: hue +-36 degrees in whole OpenCV steps, saturation scaled in
HSV, 8-bit values after every step), then padding to the crop size: label 255, image marked in
`Sample.pad` and set to 0 AFTER normalisation (ldvc/data/normalize.py), as ZegCLIP's Normalize ->
Pad(pad_val=0) order makes the padding the mean colour.
Eval: keep-ratio resize so that the short side is image_size, whatever the long side: ZegCLIP's test
pipeline is Resize(img_scale=(2048, 512), keep_ratio=True, min_size=512) (configs/_base_/datasets/
voc12_20_512x512.py line 27), and mmseg 0.24.0's Resize._resize_img with min_size (transforms.py lines
249-262) replaces the scale by (512 * h / w, 512) before mmcv.imrescale, so the 2048 cap never applies.

Every random draw comes from an explicit `torch.Generator`, so an augmented sample is a pure
function of the seed the caller derives (dataset.py: from (seed, sample position)); this is what
makes resume exact. Operations are plain torch on (3, H, W) float images in [0, 1] and (H, W)
uint8 labels. Resizing is bilinear WITHOUT antialiasing (mmcv.imresize's default cv2 INTER_LINEAR,
which mmseg's Resize uses for images; nearest for labels), and a resized image is rounded back to
8-bit values, as cv2 returns for mmseg's uint8 images.

The synthetic protocol turns photometric distortion off (presets/synthetic.yaml): its classes are
named colours, and a +-36 degree hue rotation can turn one into its neighbour (synthetic.py,
MAX_SAFE_HUE_SHIFT_DEG). The paper presets use it as ZegCLIP does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ldvc.config import AugmentConfig
from ldvc.data.photometric import photometric_distortion

IGNORE_INDEX = 255
CAT_MAX_RATIO = 0.75
CROP_TRIES = 10
BASE_LONG_FACTOR = 4  # base scale (4*image_size, image_size), ZegCLIP's 2048x512 at 512


@dataclass
class Sample:
    image: torch.Tensor  # (3, H, W) float in [0, 1]
    label: torch.Tensor  # (H, W) uint8, 255 = ignore
    pad: torch.Tensor  # (H, W) bool, True where the pixel is padding (not part of the photo)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _coin(g: torch.Generator, p: float = 0.5) -> bool:
    return float(torch.rand((), generator=g)) < p


def resize_pair(image: torch.Tensor, label: torch.Tensor | None, size: tuple[int, int]) -> tuple[
        torch.Tensor, torch.Tensor | None]:
    """Resize image (bilinear, no antialiasing, back to 8-bit values: cv2 on a uint8 image) and label
    (nearest) to size (h, w)."""
    h, w = image.shape[-2:]
    if (h, w) != tuple(size):
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        image = (image * 255.0).round_().clamp_(0, 255) / 255.0
        if label is not None:
            label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].to(label.dtype)
    return image, label


def keep_ratio_size(h: int, w: int, short: float, long: float) -> tuple[int, int]:
    """mmseg's keep-ratio rescale: the largest size with short side <= short, long side <= long."""
    scale = min(long / max(h, w), short / min(h, w))
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def eval_size(h: int, w: int, image_size: int) -> tuple[int, int]:
    """Short side image_size, long side in proportion (mmseg's Resize with min_size; no long-side cap)."""
    return keep_ratio_size(h, w, image_size, math.inf)


def random_crop_box(label: torch.Tensor, crop: int, g: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a crop whose largest class covers < 75 % of its labelled
    pixels when such a crop is found in 10 tries (mmseg's cat_max_ratio), else the last try."""
    h, w = label.shape
    ch, cw = min(crop, h), min(crop, w)
    box = (0, 0, ch, cw)
    for _ in range(CROP_TRIES):
        top = int(torch.randint(0, h - ch + 1, (), generator=g))
        left = int(torch.randint(0, w - cw + 1, (), generator=g))
        box = (top, left, ch, cw)
        patch = label[top:top + ch, left:left + cw]
        counts = torch.bincount(patch[patch != IGNORE_INDEX].long().flatten(), minlength=1)
        counts = counts[counts > 0]
        if len(counts) > 1 and float(counts.max()) / float(counts.sum()) < CAT_MAX_RATIO:
            break
    return box


def train_augment(image: torch.Tensor, label: torch.Tensor, image_size: int, cfg: AugmentConfig,
                  g: torch.Generator) -> Sample:
    """The full training pipeline; output is always (3, S, S), (S, S), (S, S) with S = image_size."""
    h, w = image.shape[-2:]
    ratio = _uniform(g, cfg.scale_min, cfg.scale_max)
    size = keep_ratio_size(h, w, image_size * ratio, BASE_LONG_FACTOR * image_size * ratio)
    image, label = resize_pair(image, label, size)
    top, left, ch, cw = random_crop_box(label, image_size, g)
    image = image[:, top:top + ch, left:left + cw]
    label = label[top:top + ch, left:left + cw]
    if cfg.flip and _coin(g):
        image, label = image.flip(-1), label.flip(-1)
    if cfg.photometric:
        image = photometric_distortion(image, g)
    # Pad bottom/right to the crop size: label 255 as mmseg's Pad; the image's padding becomes 0 only
    # after normalisation (normalize(images, pad)), as ZegCLIP's Normalize -> Pad.
    out_img = image.new_zeros(3, image_size, image_size)
    out_lab = label.new_full((image_size, image_size), IGNORE_INDEX)
    pad = torch.ones(image_size, image_size, dtype=torch.bool)
    out_img[:, :ch, :cw] = image
    out_lab[:ch, :cw] = label
    pad[:ch, :cw] = False
    return Sample(out_img.contiguous(), out_lab.contiguous(), pad)
