"""Bad input fails early with an error naming the problem and the fix; nothing half-written is left."""

from __future__ import annotations

import shutil

import pytest
from fixtures.engine import fresh_checkpoint, tiny_setup

from ldvc.data.dataset import DatasetError
from ldvc.train.checkpoint import CheckpointError, atomic_save, latest_checkpoint, load_checkpoint


def test_corrupt_and_mismatched_checkpoints(tmp_path):
    from ldvc.eval.evaluate import evaluate_checkpoint

    cfg, split, root, _, _ = tiny_setup(tmp_path)
    good = fresh_checkpoint(cfg, split, tmp_path / "good.pt")
    out = tmp_path / "eval"

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # truncated write
    with pytest.raises(CheckpointError, match="corrupt.pt is corrupt"):
        evaluate_checkpoint(cfg, "inductive", split, root, corrupt, None, out)
    with pytest.raises(CheckpointError, match="does not exist"):
        evaluate_checkpoint(cfg, "inductive", split, root, tmp_path / "nope.pt", None, out)

    # the model is built from the checkpoint's own config: weights that do not fit it are named
    tampered = load_checkpoint(good)
    tampered["config"]["decoder"]["layers"] = 2
    atomic_save(tampered, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="does not fit this model.*another architecture"):
        evaluate_checkpoint(cfg, "inductive", split, root, tmp_path / "tampered.pt", None, out)

    ckpt = load_checkpoint(good)
    ckpt["class_names"] = ckpt["class_names"][:5]  # trained on another dataset / class count
    atomic_save(ckpt, tmp_path / "other_classes.pt")
    with pytest.raises(CheckpointError, match="trained for 5 classes"):
        evaluate_checkpoint(cfg, "inductive", split, root, tmp_path / "other_classes.pt", None, out)
    assert not (out / "metrics.json").exists()


def test_empty_split_and_undecodable_image(tmp_path):
    from ldvc.eval.evaluate import evaluate_checkpoint
    from ldvc.train.loop import train_segmentor

    cfg, split, root, _, _ = tiny_setup(tmp_path)
    good = fresh_checkpoint(cfg, split, tmp_path / "good.pt")
    empty = tmp_path / "empty"
    shutil.copytree(root, empty)
    (empty / "lists" / "train.txt").write_text("")
    with pytest.raises(DatasetError, match="split 'train' .* is empty"):
        train_segmentor(cfg, "inductive", split, empty, None, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # failed before any work or output

    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    victim = (broken / "lists" / "val.txt").read_text().split()[-1]
    (broken / "images" / "val" / f"{victim}.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "eval"
    with pytest.raises(DatasetError, match=f"cannot decode image .*val/{victim}.png"):
        evaluate_checkpoint(cfg, "inductive", split, broken, good, None, out)
    assert not (out / "metrics.json").exists() and not (out / "per_class_iou.csv").exists()


def test_nan_loss_stops_naming_step_and_last_checkpoint(tmp_path, monkeypatch):
    from ldvc.model import losses
    from ldvc.train.loop import TrainingDivergedError, train_segmentor

    cfg, split, root, _, _ = tiny_setup(tmp_path)
    real = losses.segmentation_loss
    calls = {"n": 0}

    def poisoned(logits, target, loss_cfg, num_masks=None, **kw):
        calls["n"] += 1
        loss, parts = real(logits, target, loss_cfg, num_masks, **kw)
        return (loss * float("nan"), parts) if calls["n"] == 3 else (loss, parts)  # 3rd step: step index 2

    monkeypatch.setattr(losses, "segmentation_loss", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"nan at step 2 .*iter_000002\.pt"):
        train_segmentor(cfg, "inductive", split, root, None, run)
    assert latest_checkpoint(run).name == "iter_000002.pt"
    assert load_checkpoint(latest_checkpoint(run))["step"] == 2  # complete and loadable
    leftovers = [p.name for p in run.rglob("*") if ".tmp" in p.name]
    assert leftovers == [] and not (run / "model.pt").exists()
