"""Test-time inference of the ZegCLIP protocol (protocol.md, "Inference"), as its public code does it
(ZiqinZhou66/ZegCLIP, models/segmentor/zegclip.py slide_inference / encode_decode and
decode_seg.py semantic_inference):

- Each window's output is SCORES: the sigmoid of the mask logits upsampled to the window size.
  ZegCLIP averages these scores (not logits) over overlapping windows and resizes the averaged
  scores bilinearly to the original image size; we do the same.
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

How it runs (our choices; none changes a prediction):
- Windows are batched ACROSS the images of a loader batch, `eval.batch_size` windows per forward
  (ZegCLIP runs one window at a time; the old code here sent one image's 2-3 windows at a time).
- Scores are accumulated, averaged, resized, calibrated and arg-maxed ON THE MODEL'S DEVICE; only
  the (H, W) label maps leave it.
- Bounded memory for many classes (A-847, PC-459): the averaged scores of an image at its
  evaluation size are (C, h, w) floats (847 classes at 512x683: 1.2 GB, and as much again at the
  original size). They are built `eval.class_chunk` classes at a time, keeping a running maximum
  and arg-maximum over the chunks: exact, since every step after the decoder (bilinear
  upsampling, sigmoid, window average, resize, seen bias) acts on each class alone; the argmax
  keeps the FIRST maximal class, as torch.argmax does (ties across chunks: strict >). The decoder
  itself runs once per window on ALL classes: LDVC's cross-attention takes a softmax over the
  classes, so a class's logits depend on the whole class set and the decoder cannot be chunked.
  For that, a Segmentor's decoder is called without its final upsampling (`out_size=None`,
  low-resolution (C, h/16, w/16) logits, tiny), and each chunk is upsampled to the window here,
  in float32: the same bilinear interpolation the decoder would do (in the autocast dtype).
  Any other model (tests' toy modules) is called as model(images, class_ids) -> window-size logits.
- Fixed batch shapes (`fixed_batch`, default on CUDA): the last, partial window batch is padded
  with empty windows, so the model sees ONE batch shape in an evaluation and a shape-static
  compiled function (the LCTD's FlexAttention on CUDA) never recompiles per call.
- `amp`: bf16 autocast for the forward (eval.mixed_precision: bf16); the scores are float32 from
  the logits on. The device check (benchmarks/device_check.py) measures how often the bf16 argmax
  agrees with float32's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ldvc.config import EvalConfig
from ldvc.data.normalize import normalize


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _is_segmentor(model: nn.Module) -> bool:
    return all(hasattr(model, n) for n in ("image_encoder", "text_encoder", "decoder"))


def _window_logits(model: nn.Module, images: torch.Tensor, class_ids: torch.Tensor | None) -> tuple[torch.Tensor,
                                                                                                    bool]:
    """(B, 3, win, win) [0, 1] -> (float32 logits, whether they are at the window size already).

    A Segmentor gives its decoder's low-resolution logits (B, C, h, w), upsampled per class chunk by
    the caller; any other module is called whole and gives (B, C, win, win)."""
    x = normalize(images)
    ids = class_ids.to(x.device) if class_ids is not None else None
    if _is_segmentor(model):
        patches, global_embedding = model.image_encoder(x)  # (B, D, h, w), (B, D)
        text = model.text_encoder(ids)  # (C, D)
        logits = model.decoder(patches, global_embedding, text.to(patches.dtype), out_size=None)  # (B, C, h, w)
        return _at_least_float32(logits), False
    return _at_least_float32(model(x, ids)), True


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """float32 from half precision (autocast); a float64 model (tests) keeps float64."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _scores(logits: torch.Tensor, size: tuple[int, int], full: bool) -> torch.Tensor:
    """(K, h, w) logits of one window -> (K, win, win) sigmoid scores (upsampled first unless `full`)."""
    if not full and tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
    return logits.sigmoid()


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """mmseg's slide placement along one axis: stride steps, the last window flush with the end."""
    n = max(length - window + stride - 1, 0) // stride + 1
    return sorted({max(min(i * stride + window, length) - window, 0) for i in range(n)})


@dataclass
class _Window:
    image: int  # index into the batch of images
    y: int
    x: int
    h: int  # the part of the window inside the image
    w: int


def _windows(images: Sequence[torch.Tensor], mode: str, window: int, stride: int,
             image_size: int) -> tuple[list[_Window], list[torch.Tensor], int]:
    """The windows of every image and their (3, s, s) crops (s = the window size of the mode)."""
    wins, crops = [], []
    if mode == "whole":
        for i, im in enumerate(images):
            crops.append(F.interpolate(im[None], size=(image_size, image_size), mode="bilinear",
                                       align_corners=False)[0])
            wins.append(_Window(i, 0, 0, image_size, image_size))
        return wins, crops, image_size
    if mode != "slide":
        raise ValueError(f"eval.mode {mode!r} is not 'whole' or 'slide'")
    for i, im in enumerate(images):
        h, w = im.shape[-2:]
        for y in window_starts(h, window, stride):
            for x in window_starts(w, window, stride):
                crop = im[:, y:y + window, x:x + window]
                if crop.shape[-2:] != (window, window):  # windows larger than the image: zero-pad
                    crop = F.pad(crop, (0, window - crop.shape[-1], 0, window - crop.shape[-2]))
                crops.append(crop)
                wins.append(_Window(i, y, x, min(window, h - y), min(window, w - x)))
    return wins, crops, window


def _forward_windows(model: nn.Module, crops: list[torch.Tensor], class_ids: torch.Tensor | None, batch_size: int,
                     fixed_batch: bool, amp: bool) -> tuple[list[torch.Tensor], bool]:
    """Per window: float32 logits (C, h, w) (or (C, s, s) from a non-Segmentor), `batch_size` windows per forward."""
    device = crops[0].device
    out: list[torch.Tensor] = []
    full = True
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    for i in range(0, len(crops), batch_size):
        chunk = crops[i:i + batch_size]
        n = len(chunk)
        if fixed_batch and n < batch_size:  # one batch shape per evaluation (module docstring)
            chunk = chunk + [torch.zeros_like(chunk[0])] * (batch_size - n)
        with autocast:
            logits, full = _window_logits(model, torch.stack(chunk), class_ids)  # (b, C, h, w)
        out.extend(logits[:n].unbind(0))
    return out, full


def _image_chunks(model: nn.Module, images: Sequence[torch.Tensor], eval_cfg: EvalConfig, image_size: int,
                  class_ids: torch.Tensor | None, class_chunk: int | None, fixed_batch: bool | None,
                  amp: bool) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yields (image index, first class of the chunk, averaged scores (K, h_i, w_i) at the image's
    evaluation size, on the model's device), chunk by chunk and image by image."""
    device = _device(model)
    images = [im.to(device, non_blocking=True) for im in images]
    fixed = device.type == "cuda" if fixed_batch is None else fixed_batch
    wins, crops, size = _windows(images, eval_cfg.mode, eval_cfg.window, eval_cfg.stride, image_size)
    logits, full = _forward_windows(model, crops, class_ids, eval_cfg.batch_size, fixed, amp)
    C = logits[0].shape[0]
    K = C if class_chunk is None else max(1, class_chunk)
    by_image: dict[int, list[int]] = {}
    for j, win in enumerate(wins):
        by_image.setdefault(win.image, []).append(j)
    for i, im in enumerate(images):
        h, w = (image_size, image_size) if eval_cfg.mode == "whole" else tuple(im.shape[-2:])
        count = None
        if eval_cfg.mode == "slide":
            count = torch.zeros(1, h, w, device=device, dtype=logits[0].dtype)
            for j in by_image[i]:
                win = wins[j]
                count[:, win.y:win.y + win.h, win.x:win.x + win.w] += 1
        for c0 in range(0, C, K):
            c1 = min(C, c0 + K)
            if eval_cfg.mode == "whole":
                (j,) = by_image[i]
                yield i, c0, _scores(logits[j][c0:c1], (size, size), full)
                continue
            total = torch.zeros(c1 - c0, h, w, device=device, dtype=logits[0].dtype)
            for j in by_image[i]:
                win = wins[j]
                sc = _scores(logits[j][c0:c1], (size, size), full)  # (K, win, win)
                total[:, win.y:win.y + win.h, win.x:win.x + win.w] += sc[:, :win.h, :win.w]
            yield i, c0, total / count  # every pixel is covered by at least one window


def _resize(scores: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(scores[None], size=tuple(out_size), mode="bilinear", align_corners=False)[0]


@torch.no_grad()
def infer_labels(model: nn.Module, images: Sequence[torch.Tensor], out_sizes: Sequence[tuple[int, int]],
                 eval_cfg: EvalConfig, image_size: int, class_ids: torch.Tensor | None = None,
                 seen: Sequence[int] = (), seen_bias: float = 0.0, inductive: bool = False,
                 class_chunk: int | None = None, fixed_batch: bool | None = None,
                 amp: bool = False) -> list[torch.Tensor]:
    """Per image the (H, W) long class index at out_sizes (into `class_ids`' order when given), on the
    model's device: scores averaged over windows, resized, seen-calibrated (`calibrated_labels`),
    arg-maxed, `class_chunk` classes at a time (module docstring; None: all at once)."""
    labels: list[torch.Tensor | None] = [None] * len(images)
    best: list[torch.Tensor | None] = [None] * len(images)
    seen_ids = torch.as_tensor(list(seen), dtype=torch.long)
    for i, c0, avg in _image_chunks(model, images, eval_cfg, image_size, class_ids, class_chunk, fixed_batch, amp):
        scores = _resize(avg, out_sizes[i])  # (K, H, W)
        if inductive and seen_bias and len(seen_ids):
            local = seen_ids[(seen_ids >= c0) & (seen_ids < c0 + scores.shape[0])] - c0
            if len(local):
                local = local.to(scores.device)
                # the same arithmetic as calibrated_labels: score + (-bias)
                scores = scores.index_add(0, local, torch.full_like(scores.index_select(0, local), -seen_bias))
        arg = scores.argmax(dim=0)  # (H, W), first maximum within the chunk
        top = scores.gather(0, arg[None])[0]
        if labels[i] is None:
            labels[i], best[i] = arg + c0, top
        else:
            better = top > best[i]  # strict: an earlier chunk keeps a tie, as argmax would
            labels[i] = torch.where(better, arg + c0, labels[i])
            best[i] = torch.where(better, top, best[i])
    return [lab for lab in labels if lab is not None]


@torch.no_grad()
def infer_scores(model: nn.Module, images: Sequence[torch.Tensor], out_sizes: Sequence[tuple[int, int]],
                 eval_cfg: EvalConfig, image_size: int, class_ids: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Per-image (C, H, W) sigmoid scores at out_sizes with the configured `eval.mode`, on the CPU (all
    classes at once: for predictions that need the scores; evaluation uses `infer_labels`)."""
    out: list[list[torch.Tensor]] = [[] for _ in images]
    for i, _, avg in _image_chunks(model, images, eval_cfg, image_size, class_ids, None, None, False):
        out[i].append(_resize(avg, out_sizes[i]))
    return [torch.cat(parts).cpu() for parts in out]


@torch.no_grad()
def whole_inference(model: nn.Module, images: Sequence[torch.Tensor], out_sizes: Sequence[tuple[int, int]],
                    image_size: int, class_ids: torch.Tensor | None = None) -> list[torch.Tensor]:
    """One forward for the whole batch at image_size^2; returns per-image (C, H, W) scores."""
    cfg = EvalConfig(mode="whole", batch_size=max(1, len(images)))
    return infer_scores(model, images, out_sizes, cfg, image_size, class_ids)


@torch.no_grad()
def slide_inference(model: nn.Module, image: torch.Tensor, out_size: tuple[int, int], window: int,
                    stride: int, class_ids: torch.Tensor | None = None, max_batch: int = 16) -> torch.Tensor:
    """Sliding-window scores of one (3, h, w) image, averaged, resized to out_size: (C, H, W)."""
    cfg = EvalConfig(mode="slide", window=window, stride=stride, batch_size=max_batch)
    return infer_scores(model, [image], [out_size], cfg, window, class_ids)[0]


def calibrated_labels(scores: torch.Tensor, seen: Sequence[int], seen_bias: float, inductive: bool) -> torch.Tensor:
    """(..., C, H, W) sigmoid scores -> (..., H, W) class indices: minus seen_bias on seen classes
    when inductive (ZegCLIP's calibration against the seen-class bias), argmax."""
    if inductive and seen_bias and len(seen):
        idx = torch.as_tensor(list(seen), dtype=torch.long, device=scores.device)
        scores = scores.index_add(-3, idx, torch.full_like(scores.index_select(-3, idx), -seen_bias))
    return scores.argmax(dim=-3)
