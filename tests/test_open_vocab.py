"""Open-vocabulary transfer, pipeline side (issue 20): which target classes count as never trained on,
the split the evaluation gets, where each target section's stages read and write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ldvc.config import load_config  # noqa: E402
from ldvc.pipeline import SECTIONS, StageError, novel_classes, target_model  # noqa: E402
from stages.evaluate_cross import per_class_entries, target_split  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COCO_LIKE = ["person", "dining table", "tv", "wall-other", "building-other", "potted plant", "floor-wood"]


def test_novel_classes_rule() -> None:
    """Synonyms (',' / '/'), case, spaces, '-' and '_' do not matter; COCO-Stuff's -other / -stuff / -merged
    suffixes are dropped; a different word is novel even for the same concept (the text encoder never met it)."""
    target = ["background", "diningtable", "tvmonitor", "wall", "building, edifice", "Person", "pottedplant",
              "floor_wood", "sky"]
    novel = novel_classes(target, COCO_LIKE)
    assert [target[i] for i in novel] == ["background", "tvmonitor", "sky"]
    assert novel_classes(["a", "b"], []) == [0, 1]
    assert novel_classes(["red", "red circle"], ["red"]) == [1]


def _checkpoint(path: Path, classes: list[str], unseen: list[int]) -> Path:
    torch.save({"class_names": classes, "seen": [i for i in range(len(classes)) if i not in unseen],
                "unseen": unseen, "model": {}, "step": 1, "config": {}, "clip": {}}, path)
    return path


def test_target_split_scores_the_novel_classes_apart(tmp_path: Path) -> None:
    """An open-vocabulary target: every class a candidate (seen + unseen = all, nothing calibrated), the
    classes never in the checkpoint's training vocabulary as the unseen part; a cross target: all seen."""
    ckpt = _checkpoint(tmp_path / "fully.pt", ["red", "striped red", "blue"], [])
    classes = ["blue", "red circle", "striped red", "red triangle"]
    split, extra = target_split(classes, ckpt, open_vocab=True)
    assert split["classes"] == classes and split["unseen"] == [1, 3] and split["seen"] == [0, 2]
    assert split["unseen_names"] == ["red circle", "red triangle"] and split["seen_names"] == ["blue", "striped red"]
    assert extra == {"num_classes": 4, "num_training_classes": 3, "novel_classes": ["red circle", "red triangle"],
                     "num_novel_classes": 2}
    cross, extra = target_split(classes, ckpt, open_vocab=False)
    assert cross["unseen"] == [] and cross["seen"] == [0, 1, 2, 3] and extra == {}
    held_out = _checkpoint(tmp_path / "zs.pt", ["red", "striped red", "blue"], [2])
    with pytest.raises(StageError, match="trained with 1 classes held out"):
        target_split(classes, held_out, open_vocab=True)


def test_sections_read_and_write_apart() -> None:
    cfg = load_config(REPO / "params.yaml")
    cross, ov = SECTIONS["cross_dataset"], SECTIONS["open_vocab"]
    assert (cross.data_root("x"), ov.data_root("x")) == (Path("data/cross/x"), Path("data/open_vocab/x"))
    assert (cross.run_root("x"), ov.run_root("x")) == (Path("runs/cross/x"), Path("runs/open_vocab/x"))
    assert ov.digest_file("wide") == Path("data/open_vocab/wide_digest.json")
    assert (cross.evaluate_stage, ov.evaluate_stage, ov.setting) == ("evaluate_cross", "evaluate_open_vocab",
                                                                      "open_vocab")
    assert target_model(cfg, cross) == ("ldvc", "inductive")
    assert target_model(cfg, ov) == ("fully_supervised", "fully_supervised")
    # dvc.yaml runs the same two stage modules for both sections
    dvc = (REPO / "dvc.yaml").read_text()
    assert "-m stages.evaluate_cross --section open_vocab --target ${key}" in dvc
    assert "python -m stages.prepare_cross --section open_vocab --target ${key}" in dvc
    assert "runs/${open_vocab.model}" in dvc


def test_a_missing_every_class_model_stops_repro_in_its_first_stage(tmp_path: Path) -> None:
    """The always-running inputs_open_vocab stage (the first of `dvc repro`) refuses open-vocabulary targets
    whose model is no ablation variant, naming the key; the training data's stages do not need it."""
    import subprocess
    import sys

    from fixtures.repo_clone import clone_working_tree, e2e_env

    repo = clone_working_tree(tmp_path / "repo", replace={"ablation": {}}, commit=False)
    (repo / "data" / "inputs_open_vocab.json").unlink(missing_ok=True)  # the committed record of the default
    env = {**e2e_env(), "PYTHONPATH": str(repo)}
    bad = subprocess.run([sys.executable, "-m", "stages.inputs_open_vocab"], cwd=repo, env=env, capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "'open_vocab.model' = 'fully_supervised' is not an ablation variant" in bad.stderr
    assert not (repo / "data" / "inputs_open_vocab.json").exists()
    ok = subprocess.run([sys.executable, "-m", "stages.inputs"], cwd=repo, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


def test_per_class_iou_in_metrics_json_marks_the_novel_classes() -> None:
    split = {"classes": ["blue", "red circle", "striped red"], "unseen": [1], "seen": [0, 2]}
    entries = per_class_entries({"blue": 80.123456, "red circle": 12.5, "striped red": float("nan")}, split)
    assert entries == [{"class": "blue", "iou": 80.1235, "seen": True},
                       {"class": "red circle", "iou": 12.5, "seen": False},
                       {"class": "striped red", "iou": None, "seen": True}]
    from ldvc.reports.records import _per_class_from_rows  # what the reports read back

    back = _per_class_from_rows(entries, "metrics.json")
    assert [(c.name, c.seen) for c in back] == [("blue", True), ("red circle", False), ("striped red", True)]
