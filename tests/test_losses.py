"""Focal + dice segmentation loss (ldvc/model/losses.py) against a hand computation, both
ignore behaviours, label remapping and input checks."""

from __future__ import annotations

import math

import pytest
import torch

from ldvc.config import LossConfig
from ldvc.model.losses import segmentation_loss, to_local_target

LOGITS = [[0.5, -1.0, 2.0], [-0.3, 0.8, 1.5]]  # (C=2, 3 pixels)
TARGET = [0, 255, 1]


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def hand_loss(ignore_as_negative: bool, alpha=0.25, gamma=2.0, wf=100.0, wd=1.0) -> tuple[float, float]:
    focal_masks, dice_masks = [], []
    for c in range(2):
        f_sum, n, inter, p_sum, y_sum = 0.0, 0, 0.0, 0.0, 0.0
        for i, t in enumerate(TARGET):
            if t == 255 and not ignore_as_negative:
                continue
            y = 1.0 if t == c else 0.0
            p = sig(LOGITS[c][i])
            ce = -(y * math.log(p) + (1 - y) * math.log(1 - p))
            p_t = p if y else 1 - p
            a_t = alpha if y else 1 - alpha
            f_sum += a_t * ce * (1 - p_t) ** gamma
            n += 1
            inter, p_sum, y_sum = inter + p * y, p_sum + p, y_sum + y
        focal_masks.append(f_sum / n)
        dice_masks.append(1 - (2 * inter + 1) / (p_sum + y_sum + 1))
    # both classes occur in TARGET: ZegCLIP's normaliser M = 2 present masks (see the test below)
    return wf * sum(focal_masks) / 2, wd * sum(dice_masks) / 2


@pytest.mark.parametrize("ignore_as_negative", [True, False])
def test_matches_hand_computation(ignore_as_negative):
    cfg = LossConfig(ignore_as_negative=ignore_as_negative)
    logits = torch.tensor(LOGITS).view(1, 2, 1, 3)
    target = torch.tensor(TARGET).view(1, 1, 3)
    loss, parts = segmentation_loss(logits, target, cfg)
    focal, dice = hand_loss(ignore_as_negative)
    assert parts["focal"].item() == pytest.approx(focal, rel=1e-5)
    assert parts["dice"].item() == pytest.approx(dice, rel=1e-5)
    assert loss.item() == pytest.approx(focal + dice, rel=1e-5)


def test_ignore_modes_differ_and_gradients_respect_them():
    logits = torch.tensor(LOGITS).view(1, 2, 1, 3).requires_grad_(True)
    target = torch.tensor(TARGET).view(1, 1, 3)
    segmentation_loss(logits, target, LossConfig(ignore_as_negative=False))[0].backward()
    assert torch.all(logits.grad[..., 1] == 0)  # the ignored pixel gets no gradient
    logits.grad = None
    segmentation_loss(logits, target, LossConfig(ignore_as_negative=True))[0].backward()
    assert torch.all(logits.grad[..., 1] > 0)  # ZegCLIP: pushed down as a negative for both classes


def test_perfect_prediction_is_near_zero_and_all_ignored_is_finite():
    target = torch.tensor([[[0, 1], [1, 0]]])
    logits = torch.where(torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).bool(), 30.0, -30.0)
    loss, _ = segmentation_loss(logits.float(), target, LossConfig())
    assert loss.item() < 1e-3
    ignored = torch.full((1, 2, 2), 255)
    loss, _ = segmentation_loss(torch.zeros(1, 2, 2, 2), ignored, LossConfig(ignore_as_negative=False))
    assert math.isfinite(loss.item())


def test_to_local_target():
    target = torch.tensor([[0, 3, 2, 255, 1]])
    local = to_local_target(target, torch.tensor([3, 0, 1]))  # class 2 unseen
    assert local.tolist() == [[1, 0, 255, 255, 2]]


def test_bad_input():
    cfg = LossConfig()
    with pytest.raises(ValueError, match="outside 0..1"):
        segmentation_loss(torch.zeros(1, 2, 2, 2), torch.tensor([[[0, 2], [1, 0]]]), cfg)
    with pytest.raises(ValueError, match="same B, H, W"):
        segmentation_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, dtype=torch.long), cfg)
    with pytest.raises(ValueError, match="integer class ids"):
        segmentation_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2), cfg)


def test_normalisation_is_zegclip_present_masks():
    """ZegCLIP's SegPlusCriterion: M = (image, class) pairs present in the targets; focal summed over
    ALL masks / M, dice over the PRESENT masks only / M (not a mean over the B x C masks)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 5, generator=g)
    target = torch.full((2, 5, 5), 255)
    target[0, :2], target[0, 3:] = 0, 2  # image 0: classes 0 and 2 (+ an ignored row)
    target[1] = 1  # image 1: class 1 only
    loss, parts = segmentation_loss(logits, target, LossConfig(ignore_as_negative=True))
    focal_sum, dice_sum, masks = 0.0, 0.0, 0
    for b in range(2):
        present = sorted(set(target[b].unique().tolist()) - {255})
        masks += len(present)
        for c in range(4):
            x = logits[b, c].flatten()
            y = (target[b] == c).flatten().float()
            p = x.sigmoid()
            ce = torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction="none")
            p_t = p * y + (1 - p) * (1 - y)
            focal_sum += float(((0.25 * y + 0.75 * (1 - y)) * ce * (1 - p_t) ** 2).mean())
            if c in present:
                dice_sum += float(1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1))
    assert masks == 3
    assert parts["focal"].item() == pytest.approx(100 * focal_sum / masks, rel=1e-5)
    assert parts["dice"].item() == pytest.approx(dice_sum / masks, rel=1e-5)
    # in data-parallel training the count is the all-reduced mean over processes (passed in)
    _, parts6 = segmentation_loss(logits, target, LossConfig(), num_masks=6.0)
    assert parts6["focal"].item() == pytest.approx(parts["focal"].item() / 2, rel=1e-5)
