"""mmseg's PhotoMetricDistortion (the ZegCLIP training pipeline's colour augmentation), in torch.

Reproduces mmsegmentation 0.24.0 mmseg/datasets/pipelines/transforms.py, class
PhotoMetricDistortion (lines 861-960), which ZegCLIP's configs use with its defaults
(configs/_base_/datasets/voc12_20_512x512.py line 13), on an image of 8-bit values:
1. brightness (p 0.5): x + U(-32, 32);
2. mode = randint(2); mode 1: contrast (p 0.5): x * U(0.5, 1.5);
3. saturation (p 0.5): to HSV, S * U(0.5, 1.5), back;
4. hue (p 0.5): to HSV, H + randint(-18, 18) modulo 180 on OpenCV's 0-180 hue scale, i.e. whole
   2-degree steps in [-36, +34] degrees: mmseg's `random` is numpy.random (transforms.py line 7),
   whose randint excludes its upper bound, so the shift is one of -18..17;
5. mode 0: contrast (p 0.5).
Every step ends like mmseg's `convert`: clip to [0, 255] and cast to uint8 (truncation toward 0).

Deviation, and why: mmseg converts with OpenCV's uint8 BGR<->HSV (cv2.cvtColor); here the
conversion is the exact float formula with H, S, V rounded to OpenCV's uint8 grids (H in 2-degree
steps, S and V in 1/255) and the result rounded back to 8 bits, so a pixel can differ from OpenCV's
by one level. Random numbers come from a torch.Generator (the pipeline's explicit seeding), not
numpy's global state, so the draws differ from mmseg's while their distributions are the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BRIGHTNESS_DELTA = 32.0
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18  # OpenCV hue units (0-180): +-36 degrees


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _coin(g: torch.Generator) -> bool:
    return bool(torch.randint(0, 2, (), generator=g))  # numpy's random.randint(2)


def _convert(x: torch.Tensor, alpha: float = 1.0, beta: float = 0.0) -> torch.Tensor:
    """mmseg's convert: x * alpha + beta, clipped to [0, 255], cast to uint8 (floor for x >= 0)."""
    return (x * alpha + beta).clamp_(0.0, 255.0).floor_()


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB in [0, 255] -> (3, H, W) HSV on OpenCV's 8-bit grids: H in [0, 180), S, V in [0, 255]."""
    r, g, b = x.unbind(0)
    v, _ = x.max(0)
    m, _ = x.min(0)
    d = v - m
    s = torch.where(v > 0, 255.0 * d / v.clamp(min=1e-6), torch.zeros_like(v))
    dd = d.clamp(min=1e-6)
    h = torch.where(v == r, 60.0 * (g - b) / dd,
                    torch.where(v == g, 120.0 + 60.0 * (b - r) / dd, 240.0 + 60.0 * (r - g) / dd))
    h = torch.where(d > 0, h % 360.0, torch.zeros_like(h))
    return torch.stack([(h / 2.0).round() % 180.0, s.round(), v])


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_hsv`, rounded to 8-bit values."""
    h, s, v = hsv[0] * 2.0, hsv[1] / 255.0, hsv[2]
    c = v * s
    hp = (h % 360.0) / 60.0
    x = c * (1 - ((hp % 2) - 1).abs())
    zero = torch.zeros_like(c)
    sector = hp.floor().long().clamp(0, 5)
    rgb = torch.stack([
        torch.stack([c, x, zero]), torch.stack([x, c, zero]), torch.stack([zero, c, x]),
        torch.stack([zero, x, c]), torch.stack([x, zero, c]), torch.stack([c, zero, x]),
    ])  # (6, 3, H, W)
    out = rgb.gather(0, sector.expand(1, 3, *sector.shape)).squeeze(0) + (v - c)
    return out.round().clamp_(0.0, 255.0)


@dataclass(frozen=True)
class Distortion:
    """The random draws of one PhotoMetricDistortion call (None = the step is skipped)."""

    brightness: float | None  # beta added, in 8-bit units
    contrast_first: bool  # mmseg's mode == 1
    contrast: float | None  # alpha
    saturation: float | None  # alpha on S
    hue: int | None  # OpenCV hue units (2 degrees each)


def draw_distortion(g: torch.Generator) -> Distortion:
    """Draw the steps in mmseg's order and probabilities (each applied with p 0.5)."""
    brightness = _uniform(g, -BRIGHTNESS_DELTA, BRIGHTNESS_DELTA) if _coin(g) else None
    contrast_first = _coin(g)
    contrast_early = _uniform(g, *CONTRAST_RANGE) if contrast_first and _coin(g) else None
    saturation = _uniform(g, *SATURATION_RANGE) if _coin(g) else None
    hue = int(torch.randint(-HUE_DELTA, HUE_DELTA, (), generator=g)) if _coin(g) else None  # numpy: -18..17
    contrast_late = _uniform(g, *CONTRAST_RANGE) if not contrast_first and _coin(g) else None
    return Distortion(brightness, contrast_first, contrast_early if contrast_first else contrast_late,
                      saturation, hue)


def apply_distortion(x: torch.Tensor, d: Distortion) -> torch.Tensor:
    """(3, H, W) RGB of 8-bit values in [0, 255] -> distorted, same scale (mmseg's __call__ order)."""
    if d.brightness is not None:
        x = _convert(x, beta=d.brightness)
    if d.contrast_first and d.contrast is not None:
        x = _convert(x, alpha=d.contrast)
    if d.saturation is not None:
        hsv = rgb_to_hsv(x)
        hsv[1] = _convert(hsv[1], alpha=d.saturation)
        x = hsv_to_rgb(hsv)
    if d.hue is not None:
        hsv = rgb_to_hsv(x)
        hsv[0] = (hsv[0] + d.hue) % 180.0
        x = hsv_to_rgb(hsv)
    if not d.contrast_first and d.contrast is not None:
        x = _convert(x, alpha=d.contrast)
    return x


def photometric_distortion(image: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(3, H, W) float image in [0, 1] (8-bit values) -> distorted, same shape and scale."""
    return apply_distortion((image * 255.0).round(), draw_distortion(g)) / 255.0
