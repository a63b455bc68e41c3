"""Test-time inference of the ZegCLIP protocol (protocol.md, "Inference"), as its public code does it
(ZiqinZhou66/ZegCLIP, models/segmentor/zegclip.py slide_inference / encode_decode and
decode_seg.py semantic_inference):

- Each window's output is SCORES: the sigmoid of the mask logits (already upsampled to the window
  size by the decoder). ZegCLIP averages these scores (not logits) over overlapping windows and
  resizes the averaged scores bilinearly to the original image size; we do the same.
- whole: resize the (already keep-ratio resized) image to image_size x image_size, one forward,
  scores resized to the original label size.
- slide (ZegCLIP's default): windows of `eval.window` with `eval.stride` over the keep-ratio
  resized image, mmseg's window placement (the last window is flush with the border), scores
  summed and divided by the per-pixel window count, then resized to the original size.
  Our choice: a window larger than the image is zero-padded to the window size and its scores
  cropped back (ZegCLIP feeds the smaller crop; our model is built for one input size; VOC and
  COCO images resized to short side 512 never need it).
- Inductive calibration: `eval.seen_bias` subtracted from the seen classes' scores before the
  argmax (ZegCLIP: 0.1; it subtracts after averaging, which is the same since the bias is a
  constant); transductive, fully supervised and cross-dataset: plain argmax of the scores.
- `class_ids` restricts the candidate classes (eval.vocabulary: unseen): scores come back for
  those classes only, in that order.
Images are (3, h, w) floats in [0, 1]; ImageNet normalisation happens here (normalize.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ldvc.config import EvalConfig
from ldvc.data.normalize import normalize


def _forward(model: nn.Module, images: torch.Tensor, class_ids: torch.Tensor | None) -> torch.Tensor:
    """(B, 3, h, w) [0, 1] -> (B, C, h, w) sigmoid scores (float32)."""
    device = next(model.parameters()).device
    logits = model(normalize(images.to(device)), class_ids.to(device) if class_ids is not None else None)
    return logits.float().sigmoid()


@torch.no_grad()
def whole_inference(model: nn.Module, images: Sequence[torch.Tensor], out_sizes: Sequence[tuple[int, int]],
                    image_size: int, class_ids: torch.Tensor | None = None) -> list[torch.Tensor]:
    """One forward for the whole batch at image_size^2; returns per-image (C, H, W) scores."""
    batch = torch.stack([F.interpolate(im[None], size=(image_size, image_size), mode="bilinear",
                                       align_corners=False)[0] for im in images])  # (B, 3, S, S)
    scores = _forward(model, batch, class_ids)  # (B, C, S, S)
    return [F.interpolate(sc[None], size=tuple(sz), mode="bilinear", align_corners=False)[0].cpu()
            for sc, sz in zip(scores, out_sizes)]


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """mmseg's slide placement along one axis: stride steps, the last window flush with the end."""
    n = max(length - window + stride - 1, 0) // stride + 1
    return sorted({max(min(i * stride + window, length) - window, 0) for i in range(n)})


@torch.no_grad()
def slide_inference(model: nn.Module, image: torch.Tensor, out_size: tuple[int, int], window: int,
                    stride: int, class_ids: torch.Tensor | None = None, max_batch: int = 16) -> torch.Tensor:
    """Sliding-window scores of one (3, h, w) image, averaged, resized to out_size: (C, H, W)."""
    h, w = image.shape[-2:]
    boxes = [(y, x) for y in window_starts(h, window, stride) for x in window_starts(w, window, stride)]
    crops = []
    for y, x in boxes:
        crop = image[:, y:y + window, x:x + window]
        padded = image.new_zeros(3, window, window)  # windows larger than the image: zero-pad
        padded[:, :crop.shape[1], :crop.shape[2]] = crop
        crops.append(padded)
    total: torch.Tensor | None = None
    count = torch.zeros(1, h, w)
    for i in range(0, len(crops), max_batch):
        scores = _forward(model, torch.stack(crops[i:i + max_batch]), class_ids).cpu()  # (b, C, win, win)
        if total is None:
            total = torch.zeros(scores.shape[1], h, w)
        for lg, (y, x) in zip(scores, boxes[i:i + max_batch]):
            ch, cw = min(window, h - y), min(window, w - x)
            total[:, y:y + ch, x:x + cw] += lg[:, :ch, :cw]
            count[:, y:y + ch, x:x + cw] += 1
    assert total is not None
    avg = total / count  # every pixel is covered by at least one window
    return F.interpolate(avg[None], size=tuple(out_size), mode="bilinear", align_corners=False)[0]


def infer_scores(model: nn.Module, images: Sequence[torch.Tensor], out_sizes: Sequence[tuple[int, int]],
                 eval_cfg: EvalConfig, image_size: int, class_ids: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Per-image (C, H, W) sigmoid scores at out_sizes with the configured `eval.mode`."""
    if eval_cfg.mode == "whole":
        return whole_inference(model, images, out_sizes, image_size, class_ids)
    if eval_cfg.mode == "slide":
        return [slide_inference(model, im, sz, eval_cfg.window, eval_cfg.stride, class_ids,
                                max_batch=eval_cfg.batch_size) for im, sz in zip(images, out_sizes)]
    raise ValueError(f"eval.mode {eval_cfg.mode!r} is not 'whole' or 'slide'")


def calibrated_labels(scores: torch.Tensor, seen: Sequence[int], seen_bias: float, inductive: bool) -> torch.Tensor:
    """(..., C, H, W) sigmoid scores -> (..., H, W) class indices: minus seen_bias on seen classes
    when inductive (ZegCLIP's calibration against the seen-class bias), argmax."""
    if inductive and seen_bias and len(seen):
        idx = torch.as_tensor(list(seen), dtype=torch.long, device=scores.device)
        scores = scores.index_add(-3, idx, torch.full_like(scores.index_select(-3, idx), -seen_bias))
    return scores.argmax(dim=-3)
