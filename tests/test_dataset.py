"""Training data order / augmentation are pure functions of (seed, position); eval resizing; errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ldvc.config import AugmentConfig, DataConfig, SyntheticConfig
from ldvc.data.augment import eval_size, random_crop_box, train_augment
from ldvc.data.dataset import (
    DatasetError,
    EvalSet,
    SegmentationFolder,
    StepBatchSampler,
    TrainStream,
    micro_batch_positions,
    shard_indices,
)
from ldvc.data.synthetic import generate_synthetic


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "prepared"
    generate_synthetic(DataConfig(dataset="synthetic", image_size=32,
                                  synthetic=SyntheticConfig(train_images=10, val_images=5)), out)
    return out


def test_train_samples_are_a_pure_function_of_seed_and_position(root):
    folder = SegmentationFolder(root, "train")
    a = TrainStream(folder, seed=3, image_size=32, augment=AugmentConfig())
    b = TrainStream(SegmentationFolder(root, "train"), seed=3, image_size=32, augment=AugmentConfig())
    for pos in (0, 7, 23):  # 23: second epoch
        x, y = a[pos], b[pos]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
        assert x["image"].shape == (3, 32, 32) and x["label"].shape == (32, 32) and x["pad"].shape == (32, 32)
        assert x["image"].min() >= 0 and x["image"].max() <= 1
        valid = x["label"][x["label"] != 255]
        assert valid.numel() == 0 or int(valid.max()) < len(folder.classes)
        assert (x["label"][x["pad"]] == 255).all()  # padding is never a class
    assert not torch.equal(a[0]["image"], a[1]["image"])
    c = TrainStream(folder, seed=4, image_size=32, augment=AugmentConfig())
    assert [c.image_index(p) for p in range(10)] != [a.image_index(p) for p in range(10)]
    # each epoch is a permutation: every image once
    assert sorted(a.image_index(p) for p in range(10)) == list(range(10))
    assert sorted(a.image_index(p) for p in range(10, 20)) == list(range(10))


def test_global_batch_positions_do_not_depend_on_the_layout():
    """Step 5 of a global batch of 8 is positions 40..47 whatever the processes / per-device split."""
    step = list(range(40, 48))
    layouts = [(1, 8), (1, 4), (2, 4), (2, 2), (4, 1), (8, 1)]  # (processes, per device)
    for world, per in layouts:
        accum = 8 // (world * per)
        got = [p for m in range(accum) for r in range(world)
               for p in micro_batch_positions(5, m, batch_size=8, per_device=per, rank=r, world=world)]
        assert got == step, (world, per)
    with pytest.raises(DatasetError, match="not 2 processes x 2"):
        micro_batch_positions(0, 0, batch_size=6, per_device=2, rank=0, world=2)
    sampler = StepBatchSampler(start_step=2, total_steps=4, batch_size=4, per_device=2, rank=0, world=1)
    assert list(sampler) == [[8, 9], [10, 11], [12, 13], [14, 15]] and len(sampler) == 4


def test_crop_respects_cat_max_ratio_when_possible():
    label = torch.zeros(64, 64, dtype=torch.uint8)
    label[:, 32:] = 1  # about half of the 32-px crops are mixed enough (share < 75 %)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        top, left, h, w = random_crop_box(label, 32, g)
        patch = label[top:top + h, left:left + w]
        share = torch.bincount(patch.flatten().long()).max().item() / patch.numel()
        assert share < 0.75  # (seeded: a failure would need 10 unlucky tries in a row)
    flipped = train_augment(torch.rand(3, 40, 40), label[:40, :40], 32,
                            AugmentConfig(scale_min=0.5, scale_max=0.5), torch.Generator().manual_seed(1))
    assert flipped.pad.any()  # 40 px at ratio 0.5 -> 16..20 px: padded to 32


def test_eval_resize_keeps_ratio_and_labels_original_size(root):
    assert eval_size(100, 200, 32) == (32, 64)
    # No long-side cap: mmseg 0.24.0 Resize(keep_ratio=True, min_size=512) (ZegCLIP's test pipeline) rescales
    # to short side 512 whatever the long side (transforms.py lines 249-262); the old 4x cap gave (1, 128).
    assert eval_size(10, 1000, 32) == (32, 3200)
    folder = SegmentationFolder(root, "val")
    item = EvalSet(folder, 16)[0]
    assert item["image"].shape == (3, 16, 16) and item["label"].shape == (32, 32)
    shards = [shard_indices(7, r, 3) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(7))


def test_undecodable_image_and_empty_split(root, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    first = (bad / "lists" / "train.txt").read_text().split()[0]
    (bad / "images" / "train" / f"{first}.png").write_bytes(b"not a png at all")
    folder = SegmentationFolder(bad, "train")
    with pytest.raises(DatasetError, match=f"cannot decode image .*{first}.png"):
        folder.load(0)
    (bad / "lists" / "val.txt").write_text("")
    with pytest.raises(DatasetError, match="split 'val' .* is empty"):
        SegmentationFolder(bad, "val")
