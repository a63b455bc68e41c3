"""Training (inductive -> transductive) and evaluation end to end in-process on a tiny setup, plus
the pieces a user relies on: label mapping, pseudo-labels, calibration, sliding windows, outputs.

The tiny set-up (tiny CLIP with random weights, 64 px synthetic data) is tests/fixtures/engine.py.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from fixtures.engine import tiny_config, tiny_setup, valid_gt_pixels

from ldvc.data.canonical import list_ids

# ------------------------------------------------------------------------------------------- units


def test_label_mapping_per_setting():
    from ldvc.train.loop import label_lut

    split = {"classes": ["a", "b", "c", "d"], "seen": [0, 2, 3], "unseen": [1]}
    raw = torch.tensor([0, 1, 2, 3, 255])
    assert label_lut(split, "inductive")[raw].tolist() == [0, 255, 1, 2, 255]  # seen index space
    # all-class space; unseen pixels marked for pseudo-labelling, apart from truly ignored ones
    assert label_lut(split, "transductive")[raw].tolist() == [0, -1, 2, 3, 255]


def test_pseudo_labels_fill_unseen_pixels_with_best_unseen_class_and_leave_ignore_alone():
    from ldvc.train.loop import pseudo_label

    logits = torch.full((1, 4, 1, 4), -5.0)
    logits[0, 0] = 9.0  # a SEEN class scores highest everywhere: must never be a pseudo-label
    logits[0, 1, 0, :2] = 1.0
    logits[0, 3, 0, 2:] = 2.0
    logits[0, 3, 0, 3] = -4.0  # weak: below the threshold below
    target = torch.tensor([[[-1, 2, -1, -1]]])  # three unseen-class pixels, one seen
    pad = torch.tensor([[[False, False, False, False]]])
    unseen = torch.tensor([1, 3])
    assert pseudo_label(logits, target, pad, unseen, None).tolist() == [[[1, 2, 3, 3]]]
    assert pseudo_label(logits, target, pad, unseen, 0.5).tolist() == [[[1, 2, 3, 255]]]
    pad[0, 0, 0] = True  # crop padding is not part of the photo: stays ignored
    assert pseudo_label(logits, target, pad, unseen, None)[0, 0, 0] == 255
    # truly ignored pixels (background, boundaries) are never pseudo-labelled (ZegCLIP keeps them 255)
    assert pseudo_label(logits, torch.tensor([[[255, 2, 255, 255]]]), pad, unseen, None).tolist() == \
        [[[255, 2, 255, 255]]]


def test_inductive_calibration_lowers_seen_scores():
    from ldvc.eval.inference import calibrated_labels

    scores = torch.tensor([0.60, 0.55]).view(2, 1, 1)  # sigmoid scores: seen 0.60 vs unseen 0.55
    assert calibrated_labels(scores, [0], 0.1, inductive=True).item() == 1
    assert calibrated_labels(scores, [0], 0.1, inductive=False).item() == 0


def test_sliding_window_covers_every_pixel_and_matches_whole_for_one_window():
    from ldvc.eval.inference import slide_inference, whole_inference, window_starts

    assert window_starts(100, 64, 40) == [0, 36]
    assert window_starts(64, 64, 40) == [0]
    assert window_starts(30, 64, 40) == [0]

    class Mean(torch.nn.Module):  # logits = a local function of the pixels: windows must agree
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2, 3))

        def forward(self, x, class_ids=None):
            return torch.einsum("kc,bchw->bkhw", self.w, x)

    m = Mean()
    img = torch.rand(3, 64, 100)
    out = slide_inference(m, img, (64, 100), window=64, stride=40)
    assert out.shape == (2, 64, 100) and torch.isfinite(out).all()
    square = torch.rand(3, 64, 64)
    a = slide_inference(m, square, (64, 64), window=64, stride=40)
    b = whole_inference(m, [square], [(64, 64)], image_size=64)[0]
    torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------------------- end to end


def test_train_inductive_then_transductive_and_evaluate(tmp_path):
    from ldvc.eval.evaluate import evaluate_checkpoint
    from ldvc.train.loop import train_segmentor

    cfg, split, root, _, _ = tiny_setup(tmp_path)
    logged: list[tuple[dict, int]] = []
    ind = tmp_path / "inductive"
    summary = train_segmentor(cfg, "inductive", split, root, None, ind, log=lambda m, s: logged.append((m, s)))
    assert summary["step"] == 4 and summary["learnable_params"] > 0
    assert summary["total_params"] > summary["learnable_params"]
    assert sorted(p.name for p in (ind / "checkpoints").iterdir()) == ["iter_000002.pt", "iter_000004.pt"]
    assert (ind / "model.pt").exists()
    rows = list(csv.DictReader(open(ind / "train_log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4] and all(np.isfinite(float(r["loss"])) for r in rows)
    assert [s for _, s in logged] == [1, 2, 3, 4]
    assert {"train/loss", "train/lr", "train/images_per_s", "train/effective_batch_size"} <= set(logged[0][0])
    ckpt = torch.load(ind / "checkpoints" / "iter_000002.pt", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["class_names"] == split["classes"] and "rng" in ckpt
    # only the learnable state is stored, not the frozen CLIP
    assert sum(v.numel() for v in ckpt["model"].values()) == summary["learnable_params"]
    assert ckpt["clip"]["model"] == cfg.clip.model

    trans = tmp_path / "transductive"
    tsum = train_segmentor(cfg, "transductive", split, root, None, trans,
                           init_checkpoint=ind / "checkpoints" / "iter_000002.pt")
    assert tsum["step"] == 2 and (trans / "model.pt").exists()

    n_val = len(list_ids(root, "val"))
    for setting, run in (("inductive", ind), ("transductive", trans)):
        m = evaluate_checkpoint(cfg, setting, split, root, run / "model.pt", None, run)
        saved = json.loads((run / "metrics.json").read_text())
        for k in ("pAcc", "mIoU", "mIoU_seen", "mIoU_unseen", "hIoU", "frag_components_pred",
                  "frag_components_gt", "frag_small_share_pred", "frag_small_share_gt"):
            assert k in saved and saved[k] == pytest.approx(m[k], nan_ok=True)
        assert 0 <= saved["pAcc"] <= 100
        assert saved["num_images"] == n_val and saved["num_pixels"] == valid_gt_pixels(root)
        per = list(csv.DictReader(open(run / "per_class_iou.csv")))
        assert [r["class"] for r in per] == split["classes"]
        assert {r["split"] for r in per if r["class"] in split["unseen_names"]} == {"unseen"}
        assert (run / "confusion.png").stat().st_size > 0
    first = sorted(p.name for p in (ind / "overlays").iterdir())
    assert len(first) == cfg.eval.num_visualize
    assert sorted(p.name for p in (trans / "overlays").iterdir()) == first  # same images every run

    slide = tiny_config({"eval": {"mode": "slide"}})
    ms = evaluate_checkpoint(slide, "inductive", split, root, ind / "model.pt", None, tmp_path / "slide")
    assert ms["num_images"] == n_val and ms["eval_mode"] == "slide"


def test_slide_windows_average_sigmoid_scores_as_zegclip():
    """ZegCLIP averages the windows' SCORES (sigmoid), not their logits, where windows overlap."""
    from ldvc.eval.inference import slide_inference

    class Const(torch.nn.Module):  # window 0 (left) says logit +4, window 1 (right) says -4
        def __init__(self) -> None:
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, class_ids=None):
            left = (x[:, :1, :1, :1] > -10).float()  # every window gets a constant map
            sign = torch.tensor([4.0, -4.0])[: x.shape[0]].view(-1, 1, 1, 1)
            return left * sign.expand(-1, 1, x.shape[2], x.shape[3])

    image = torch.zeros(3, 32, 48)  # two 32-px windows at x = 0 and x = 16: overlap 16..31
    scores = slide_inference(Const(), image, (32, 48), window=32, stride=16)
    overlap = scores[0, :, 16:32]
    expected = (torch.sigmoid(torch.tensor(4.0)) + torch.sigmoid(torch.tensor(-4.0))) / 2  # 0.5
    torch.testing.assert_close(overlap, torch.full_like(overlap, float(expected)))
    assert abs(float(scores[0, 0, 0]) - float(torch.sigmoid(torch.tensor(4.0)))) < 1e-6


def test_fully_supervised_cross_dataset_and_unseen_vocabulary(tmp_path):
    from ldvc.config import config_from_dict, deep_merge
    from ldvc.eval.evaluate import cross_split, evaluate_checkpoint
    from ldvc.pipeline import training_split
    from ldvc.train.loop import train_segmentor

    cfg, split, root, _, _ = tiny_setup(tmp_path)
    # fully supervised (an ablation variant): the training split has every class seen; evaluation
    # keeps the benchmark split, so mIoU(S)/(U) compare with the zero-shot rows
    full_cfg = config_from_dict(deep_merge(cfg.to_dict(), {"split": {"unseen": []}}), variant=True)
    full_split = training_split(full_cfg, split)
    assert full_split["unseen"] == [] and len(full_split["seen"]) == len(split["classes"])
    run = tmp_path / "fully"
    train_segmentor(full_cfg, "inductive", full_split, root, None, run)
    assert torch.load(run / "model.pt", weights_only=True)["fully_supervised"]
    m = evaluate_checkpoint(cfg, "fully_supervised", split, root, run / "model.pt", None, run)
    assert not m["calibrated"] and np.isfinite(m["mIoU_unseen"])

    # unseen vocabulary: only unseen names are candidates, only unseen pixels are scored
    unseen_cfg = tiny_config({"eval": {"vocabulary": "unseen"}})
    mu = evaluate_checkpoint(unseen_cfg, "inductive", split, root, run / "model.pt", None, tmp_path / "u")
    assert mu["vocabulary"] == "unseen" and np.isnan(mu["mIoU_seen"]) and np.isfinite(mu["mIoU_unseen"])
    assert mu["num_pixels"] < m["num_pixels"]

    # cross-dataset: another world's vocabulary (names, order) scored with the target's class names
    target = tiny_config({"data": {"synthetic": {"world": "shifted", "train_images": 2, "val_images": 4}}})
    from ldvc.data.synthetic import generate_synthetic

    generate_synthetic(target.data, tmp_path / "shifted")
    classes = json.loads((tmp_path / "shifted" / "meta.json").read_text())["classes"]
    assert classes != split["classes"]
    mc = evaluate_checkpoint(cfg, "cross", cross_split(classes), tmp_path / "shifted", run / "model.pt", None,
                             tmp_path / "cross")
    per = list(csv.DictReader(open(tmp_path / "cross" / "per_class_iou.csv")))
    assert [r["class"] for r in per] == classes and 0 <= mc["mIoU"] <= 100 and not mc["calibrated"]


def test_a_16_bit_target_scores_class_255_and_ignores_65535(tmp_path):
    """More than 255 classes (ADE20K-847, PASCAL Context-459): labels are 16-bit, 255 is a class and
    65535 the ignore value (ldvc/data/canonical.py ignore_index_for). Evaluation reads the dataset's
    ignore value: the pixels of class 255 are scored (its IoU is defined), the 65535 pixels are not."""
    from fixtures.engine import fresh_checkpoint
    from PIL import Image

    from ldvc.data.canonical import label_path, write_label, write_list, write_meta
    from ldvc.eval.evaluate import cross_split, evaluate_checkpoint

    cfg, split, _, _, _ = tiny_setup(tmp_path)
    ckpt = fresh_checkpoint(cfg, split, tmp_path / "model.pt")
    classes = [f"thing {i}" for i in range(300)]
    root = tmp_path / "wide16"
    rng = np.random.default_rng(0)
    ids = ["a", "b"]
    for i in ids:
        label = np.full((48, 64), 255, dtype=np.uint16)  # class 255 ...
        label[:, :16] = 65535  # ... beside ignored pixels ...
        label[:, 48:] = 7 if i == "a" else 299  # ... and other classes
        label_path(root, "val", i).parent.mkdir(parents=True, exist_ok=True)
        write_label(label_path(root, "val", i), label)
        (root / "images" / "val").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / "images" / "val" / f"{i}.png")
    write_list(root, "val", ids)
    write_meta(root, "wide16", classes, {"val": len(ids)})
    assert json.loads((root / "meta.json").read_text())["ignore_index"] == 65535

    m = evaluate_checkpoint(cfg, "cross", cross_split(classes), root, ckpt, None, tmp_path / "out")
    assert m["num_pixels"] == 2 * 48 * 48  # every pixel but the 65535 ones
    per = {r["class"]: r for r in csv.DictReader(open(tmp_path / "out" / "per_class_iou.csv"))}
    assert len(per) == 300
    gt = {c: int(r["gt_pixels"]) for c, r in per.items() if int(r["gt_pixels"])}
    assert gt == {"thing 255": 2 * 48 * 32, "thing 7": 48 * 16, "thing 299": 48 * 16}
    assert per["thing 255"]["iou"] != ""  # scored
