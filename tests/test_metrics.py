"""Dataset-level IoU metrics and fragmentation statistics against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ldvc.eval.fragmentation import FragmentationMeter, image_fragmentation, summarize_fragmentation
from ldvc.eval.metrics import ConfusionMatrix, harmonic_iou, summarize


def _reference(preds, gts, n_classes, seen, unseen):
    """Independent numpy computation: per-class I and U summed over images, then divided."""
    inter = np.zeros(n_classes)
    union = np.zeros(n_classes)
    correct = total = 0
    for p, g in zip(preds, gts):
        valid = g != 255
        p, g = p[valid], g[valid]
        correct += int((p == g).sum())
        total += g.size
        for c in range(n_classes):
            inter[c] += np.logical_and(p == c, g == c).sum()
            union[c] += np.logical_or(p == c, g == c).sum()
    iou = np.array([inter[c] / union[c] * 100 if union[c] > 0 else np.nan for c in range(n_classes)])
    s, u = np.nanmean(iou[seen]), np.nanmean(iou[unseen])
    return iou, correct / total * 100, np.nanmean(iou), s, u, 2 * s * u / (s + u)


def test_metrics_match_independent_computation_with_absent_classes():
    rng = np.random.default_rng(0)
    n_classes, seen, unseen = 8, [0, 1, 2, 3, 6], [4, 5, 7]
    preds, gts = [], []
    cm = ConfusionMatrix(n_classes)
    for _ in range(5):
        h, w = rng.integers(10, 30, size=2)
        # class 7 never appears (absent from pred and gt); class 6 only in predictions
        g = rng.choice([0, 1, 2, 3, 4, 5, 255], size=(h, w))
        p = rng.choice([0, 1, 2, 3, 4, 5, 6], size=(h, w))
        p[g == 1] = 1  # some correlation so IoUs are not all tiny
        preds.append(p)
        gts.append(g)
        cm.update(torch.from_numpy(p), torch.from_numpy(g))
    got = summarize(cm.matrix, [f"c{i}" for i in range(n_classes)], seen, unseen)
    iou, pacc, miou, s, u, h = _reference(preds, gts, n_classes, seen, unseen)
    per = np.array([got["per_class"][f"c{i}"] for i in range(n_classes)])
    assert math.isnan(per[7]) and np.isnan(iou[7])
    assert per[6] == 0.0  # predicted but never true: IoU 0, counted in the mean
    np.testing.assert_allclose(per[:7], iou[:7])
    assert got["pAcc"] == pytest.approx(pacc)
    assert got["mIoU"] == pytest.approx(miou)
    assert got["mIoU_seen"] == pytest.approx(s)
    assert got["mIoU_unseen"] == pytest.approx(u)
    assert got["hIoU"] == pytest.approx(h)
    # dataset-level, not a mean of per-image IoUs: the confusion matrix counts every valid pixel once
    assert int(cm.matrix.sum()) == sum(int((g != 255).sum()) for g in gts)


def test_perfect_prediction_and_ignore():
    gt = torch.tensor([[0, 1], [255, 2]])
    pred = torch.tensor([[0, 1], [1, 2]])  # the wrong pixel is under ignore
    cm = ConfusionMatrix(3)
    cm.update(pred, gt)
    m = summarize(cm.matrix, ["a", "b", "c"], [0, 1], [2])
    assert m["pAcc"] == 100.0 and m["mIoU"] == 100.0 and m["hIoU"] == 100.0


def test_bad_labels_and_shapes_are_rejected():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="outside 0..2"):
        cm.update(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 7))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long))


def test_harmonic_iou_edge_cases():
    assert harmonic_iou(80.0, 20.0) == pytest.approx(32.0)
    assert harmonic_iou(0.0, 0.0) == 0.0
    assert math.isnan(harmonic_iou(float("nan"), 50.0))


def test_fragmentation_counts_components_and_small_share():
    m = np.full((20, 20), 255)
    m[0:10, 0:10] = 0  # one big component of class 0 (100 px)
    m[15, 15] = 0  # a 1-px fragment of class 0
    m[12:14, 0:2] = 1  # class 1: one 4-px component
    m[17, 3] = 1
    m[18, 4] = 1  # diagonal neighbour of (17, 3): same component under 8-connectivity
    comps, small = image_fragmentation(m, small_px=5)
    # class 0: 2 components, 1/101 small; class 1: 2 components, all 6 px small
    assert comps == pytest.approx(2.0)
    assert small == pytest.approx((1 / 101 + 1.0) / 2)
    meter = FragmentationMeter(small_px=5)
    meter.update(torch.from_numpy(m), torch.from_numpy(np.full((20, 20), 255)))  # gt: no classes
    out = summarize_fragmentation(meter.totals())
    assert out["frag_components_pred"] == pytest.approx(2.0)
    assert out["frag_small_share_pred"] == pytest.approx(small * 100)
    assert math.isnan(out["frag_components_gt"])
