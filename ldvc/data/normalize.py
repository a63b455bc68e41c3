"""Image normalisation shared by every model input (segmentation training, evaluation, predict,
and the synthetic CLIP's pre-training).

ZegCLIP normalises with ImageNet statistics rather than CLIP's own (a quirk of its mmseg configs);
we follow it so that numbers are comparable with the protocol. Its training pipeline normalises and
THEN pads the crop with 0 (configs/_base_/datasets/voc12_20_512x512.py lines 14-15: Normalize, then
Pad(pad_val=0)), so padding is the mean colour after normalisation: `normalize(images, pad)` zeroes
the padded pixels after normalising (augment.py pads before, with any value).
"""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 1] -> normalised, same shape; pixels where `pad` (B, H, W) is True
    become 0 (mmseg's Pad after Normalize)."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = (images - mean) / std
    if pad is not None:
        out = out.masked_fill(pad.unsqueeze(1).to(out.device), 0.0)
    return out
