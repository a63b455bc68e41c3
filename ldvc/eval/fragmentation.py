"""Mask fragmentation statistics: LDVC's second claim is that route attention reduces the small
fragments in predicted masks (protocol.md, "What LDVC claims"). The paper shows this only
qualitatively; these numbers are our measurement of it.

Per image and per class present in a label map: the number of connected components, and the
share of the class's pixels lying in components smaller than `eval.small_fragment_px`.
An image's value is the mean over its present classes; the reported value is the mean over
images (frag_components_*, frag_small_share_* in percent), for the prediction and, as the
reference of what real objects look like, for the ground truth.
Our choices: 8-connectivity (diagonal neighbours join a component); the prediction is measured
over the whole image (masking it with the ground truth's ignore region would cut predicted
regions into artificial pieces); ground-truth ignore (255) pixels belong to no class.
Sums and image counts are kept separately so data-parallel shards can be added up.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

IGNORE_INDEX = 255
_EIGHT = np.ones((3, 3), dtype=bool)
KEYS = ("components_pred", "small_share_pred", "components_gt", "small_share_gt")


def image_fragmentation(label_map: np.ndarray, small_px: int,
                        ignore_index: int = IGNORE_INDEX) -> tuple[float, float] | None:
    """(mean components per present class, share of pixels in small components) of one (H, W)
    map; None when the map has no class pixels. `ignore_index`: the dataset's (255, or 65535 for
    the 16-bit labels of datasets with more than 255 classes, where 255 is a class)."""
    comps, small = [], []
    for c in np.unique(label_map):
        if c == ignore_index:
            continue
        lab, n = ndimage.label(label_map == c, structure=_EIGHT)
        sizes = np.bincount(lab.ravel())[1:]  # component sizes, background (0) dropped
        comps.append(n)
        small.append(sizes[sizes < small_px].sum() / sizes.sum())
    if not comps:
        return None
    return float(np.mean(comps)), float(np.mean(small))


class FragmentationMeter:
    """Accumulates per-image fragmentation sums; `totals()` is a tensor for cross-process sums."""

    def __init__(self, small_px: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.small_px, self.ignore_index = small_px, ignore_index
        # [sum comps pred, sum small pred, n pred, sum comps gt, sum small gt, n gt]
        self.sums = torch.zeros(6, dtype=torch.float64)

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        for offset, m in ((0, pred), (3, gt)):
            r = image_fragmentation(m.cpu().numpy().astype(np.int64), self.small_px, self.ignore_index)
            if r is not None:
                self.sums[offset:offset + 3] += torch.tensor([r[0], r[1], 1.0], dtype=torch.float64)

    def totals(self) -> torch.Tensor:
        return self.sums


def summarize_fragmentation(sums: torch.Tensor) -> dict[str, float]:
    s = sums.tolist()

    def mean(total: float, n: float, scale: float = 1.0) -> float:
        return total / n * scale if n else float("nan")

    return {
        "frag_components_pred": mean(s[0], s[2]),
        "frag_small_share_pred": mean(s[1], s[2], 100.0),
        "frag_components_gt": mean(s[3], s[5]),
        "frag_small_share_gt": mean(s[4], s[5], 100.0),
    }
