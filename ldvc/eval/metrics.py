"""Segmentation metrics of the ZegCLIP protocol (protocol.md, "Metric").

mmseg-style: intersections and unions are summed over the WHOLE dataset (one confusion matrix),
then divided per class; a class whose union is zero (absent from both prediction and ground
truth) has IoU nan and is left out of every mean (nan-mean). Pixels labelled `ignore_index` (255)
are not counted. Reported in percent: pAcc, mIoU (all classes), mIoU_seen, mIoU_unseen,
hIoU = 2*S*U/(S+U) (ZegCLIP computed it by hand; we compute it here), per-class IoU.

The confusion matrix is a plain (C, C) int64 tensor so that data-parallel evaluation can sum it
across processes (`accelerator.reduce(..., "sum")`) before `summarize`. It lives on the device it
is given (the evaluation's: counting on a GPU needs no copy of the label maps to the host); its
range checks read values, a host synchronisation, so callers whose labels are valid by
construction skip them (`check=False`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

IGNORE_INDEX = 255


class ConfusionMatrix:
    """Dataset-level confusion counts; rows = ground truth class, columns = predicted class."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX,
                 device: torch.device | str = "cpu") -> None:
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)  # (C_gt, C_pred)

    def update(self, pred: torch.Tensor, gt: torch.Tensor, check: bool = True) -> None:
        """pred, gt: (..., H, W) integer class indices of the same shape; gt may hold ignore_index.
        `check=False`: the caller guarantees gt in 0..C-1 or ignore_index and pred in 0..C-1."""
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != ground truth {tuple(gt.shape)}")
        device = self.matrix.device
        gt = gt.reshape(-1).long().to(device)
        pred = pred.reshape(-1).long().to(device)
        c = self.num_classes
        if not check:  # no boolean indexing either (its output size is a host read)
            valid = gt != self.ignore_index
            index = torch.where(valid, gt * c + pred, c * c)  # ignored pixels land in an extra bin
            self.matrix += torch.bincount(index, minlength=c * c + 1)[: c * c].view(c, c)
            return
        valid = gt != self.ignore_index
        gt, pred = gt[valid], pred[valid]
        if gt.numel() and (int(gt.max()) >= c or int(gt.min()) < 0):
            raise ValueError(f"ground truth holds class {int(gt.max())} outside 0..{c - 1} (and not "
                             f"{self.ignore_index}); the labels do not match the class list")
        if pred.numel() and (int(pred.max()) >= c or int(pred.min()) < 0):
            raise ValueError(f"prediction holds class {int(pred.max())} outside 0..{c - 1}")
        self.matrix += torch.bincount(gt * c + pred, minlength=c * c).view(c, c)


def iou_per_class(matrix: torch.Tensor) -> np.ndarray:
    """(C, C) confusion -> (C,) IoU in [0, 1], nan where the union is zero."""
    m = matrix.double().cpu().numpy()
    inter = np.diag(m)
    union = m.sum(0) + m.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def harmonic_iou(seen: float, unseen: float) -> float:
    """hIoU = 2SU/(S+U); nan if either is nan, 0 if both are 0."""
    if math.isnan(seen) or math.isnan(unseen):
        return float("nan")
    return 0.0 if seen + unseen == 0 else 2 * seen * unseen / (seen + unseen)


def summarize(matrix: torch.Tensor, class_names: Sequence[str], seen: Sequence[int],
              unseen: Sequence[int]) -> dict:
    """Metrics in percent from a dataset-level confusion matrix.

    Returns {"pAcc", "mIoU", "mIoU_seen", "mIoU_unseen", "hIoU", "per_class": {name: IoU}}.
    """
    if matrix.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion matrix {tuple(matrix.shape)} does not match {len(class_names)} classes")
    iou = iou_per_class(matrix) * 100.0
    total = float(matrix.sum())
    pacc = float(torch.diagonal(matrix).sum()) / total * 100.0 if total > 0 else float("nan")
    s = _nanmean(iou[list(seen)]) if len(seen) else float("nan")
    u = _nanmean(iou[list(unseen)]) if len(unseen) else float("nan")
    return {
        "pAcc": pacc,
        "mIoU": _nanmean(iou),
        "mIoU_seen": s,
        "mIoU_unseen": u,
        "hIoU": harmonic_iou(s, u),
        "per_class": {name: float(v) for name, v in zip(class_names, iou)},
    }
