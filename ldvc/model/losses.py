"""Segmentation loss of ZegCLIP/LDVC: sigmoid focal loss x focal_weight + dice loss x dice_weight.

Matches ZegCLIP's public code exactly (ZiqinZhou66/ZegCLIP, models/losses/atm_loss.py SegLossPlus
and criterion.py SegPlusCriterion.loss_masks, sigmoid_focal_loss, dice_loss; configs: mask_weight
100, dice_weight 1):
- M = the number of (image, class) pairs whose class is PRESENT in the image's target (labels other
  than 255), summed over the whole batch and, in data-parallel training, over all processes and
  divided by the number of processes (ZegCLIP all-reduces it), at least 1: `num_masks`.
- focal = sum over ALL B x C masks of the per-mask mean over the pixels of
  alpha_t * BCE * (1 - p_t)^gamma (alpha 0.25, gamma 2), divided by M. (So the focal term grows with
  C / classes-per-image: it is NOT a mean over masks.)
- dice = sum over the PRESENT masks only of 1 - (2 sum(p*y) + 1) / (sum(p) + sum(y) + 1), divided by M.
- The logits are at the label size already (the segmentor upsamples them), so ZegCLIP's
  interpolation inside the loss is the identity here.
Ignored pixels (255): `ignore_as_negative=True` is ZegCLIP's behaviour: an ignored pixel's one-hot
row is all zeros, so it is a negative for every class in the focal term and its probability counts
in the dice denominator. False (our option) excludes ignored pixels from both terms (the focal
mean then runs over each image's valid pixels; an image without one contributes zero, not NaN).

Deviation: with gradient accumulation (ldvc/train/layout.py) each micro-step is normalised by its
own M, and the micro-steps are averaged; ZegCLIP never accumulates, and with accumulation 1 the two
are identical.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ldvc.config import LossConfig

IGNORE_INDEX = 255


def _check(logits: torch.Tensor, target: torch.Tensor, values: bool = True) -> None:
    if logits.dim() != 4 or target.dim() != 3 or logits.shape[0] != target.shape[0] \
            or logits.shape[-2:] != target.shape[-2:]:
        raise ValueError(
            f"segmentation_loss: expected logits (B, C, H, W) and target (B, H, W) of the same B, H, W; "
            f"got {tuple(logits.shape)} and {tuple(target.shape)} (upsample the logits to the label size)"
        )
    if target.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool):
        raise ValueError(f"segmentation_loss: target must hold integer class ids, got {target.dtype}")
    if not values:  # shapes and dtypes only: reading values is a host synchronisation on a GPU
        return
    C = logits.shape[1]
    bad = ((target < 0) | (target >= C)) & (target != IGNORE_INDEX)
    if bool(bad.any()):
        raise ValueError(
            f"segmentation_loss: target holds ids outside 0..{C - 1} and {IGNORE_INDEX} (e.g. "
            f"{int(target[bad][0])}); map labels to the positions of the classes given to the model "
            f"(ldvc.model.losses.to_local_target)"
        )


def to_local_target(target: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
    """Global class ids -> positions in `class_ids`; classes not listed (unseen) become 255.

    The segmentor's logits for `class_ids` are ordered as class_ids, so the target must be too.
    """
    class_ids = torch.as_tensor(class_ids, device=target.device, dtype=torch.long).reshape(-1)
    if class_ids.numel() == 0 or int(class_ids.min()) < 0 or int(class_ids.max()) >= IGNORE_INDEX:
        raise ValueError(f"to_local_target: class ids must lie in 0..{IGNORE_INDEX - 1}, got {class_ids.tolist()}")
    target = target.long()
    if bool((target < 0).any()):
        raise ValueError("to_local_target: negative label ids; labels are 0..C-1 or 255 (ignore)")
    size = max(int(class_ids.max()), int(target.max()), IGNORE_INDEX) + 1
    table = torch.full((size,), IGNORE_INDEX, dtype=torch.long, device=target.device)  # id -> position
    table[class_ids] = torch.arange(class_ids.numel(), device=target.device)
    return table[target]


def present_masks(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, C) bool: class c occurs in image b's target (255 ignored)."""
    t = target.flatten(1)  # (B, HW)
    valid = t != IGNORE_INDEX
    present = torch.zeros(t.shape[0], num_classes + 1, dtype=torch.bool, device=t.device)
    present.scatter_(1, t.masked_fill(~valid, num_classes).long(), True)
    return present[:, :num_classes]


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, cfg: LossConfig, num_masks: torch.Tensor | float | None = None,
    check_values: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """logits (B, C, H, W), target (B, H, W) long in 0..C-1 or 255 -> (loss, {"focal", "dice"}).

    `num_masks`: ZegCLIP's normaliser M (see the module docstring); None = this batch's own count
    (one process). The dict holds the weighted terms (they sum to the loss), detached, for logging.
    `check_values=False` skips the scan of the target's values (shapes and dtypes are still checked):
    that scan reads a value on the host, a synchronisation per call on a GPU; the training loop's
    targets come from its own label table, whose values are valid by construction.
    """
    _check(logits, target, check_values)
    B, C = logits.shape[:2]
    x = logits.float().flatten(2)  # (B, C, HW)
    t = target.flatten(1)  # (B, HW)
    valid = t != IGNORE_INDEX  # (B, HW)
    onehot = F.one_hot(t.masked_fill(~valid, 0), C).transpose(1, 2).float()  # (B, C, HW)
    onehot = onehot * valid.unsqueeze(1)  # ignored pixels: all-zero rows (negatives everywhere)
    present = present_masks(target, C)  # (B, C)
    if num_masks is None:
        num_masks = present.sum()
    norm = torch.as_tensor(num_masks, dtype=x.dtype, device=x.device).clamp(min=1.0)
    if cfg.ignore_as_negative:
        weight = torch.ones_like(valid, dtype=x.dtype)
    else:
        weight = valid.to(x.dtype)
    weight = weight.unsqueeze(1)  # (B, 1, HW)
    n_pix = weight.sum(dim=-1).clamp(min=1.0)  # (B, 1)

    # Sigmoid focal loss (Lin et al.), per element; per-mask mean over pixels, summed over masks.
    prob = x.sigmoid()
    ce = F.binary_cross_entropy_with_logits(x, onehot, reduction="none")
    p_t = prob * onehot + (1 - prob) * (1 - onehot)
    alpha_t = cfg.focal_alpha * onehot + (1 - cfg.focal_alpha) * (1 - onehot)
    focal = alpha_t * ce * (1 - p_t) ** cfg.focal_gamma  # (B, C, HW)
    focal = ((focal * weight).sum(dim=-1) / n_pix).sum() / norm

    # Dice loss with +1 smoothing, over the masks of the classes present in each image.
    p = prob * weight
    dice = 1 - (2 * (p * onehot).sum(-1) + 1) / (p.sum(-1) + onehot.sum(-1) + 1)  # (B, C)
    dice = (dice * present).sum() / norm

    focal_term = cfg.focal_weight * focal
    dice_term = cfg.dice_weight * dice
    return focal_term + dice_term, {"focal": focal_term.detach(), "dice": dice_term.detach()}
