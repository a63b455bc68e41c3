"""Image normalisation shared by every model input (segmentation training, evaluation, predict,
and the synthetic CLIP's pre-training).

ZegCLIP normalises with ImageNet statistics rather than CLIP's own (a quirk of its mmseg configs);
we follow it so that numbers are comparable with the protocol.
"""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 1] -> normalised, same shape."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std
