"""Two-process data parallelism on a CPU machine (`accelerate launch --multi_gpu --num_processes 2`
with Accelerator(cpu=True): DDP over gloo): training a few steps and evaluating do not hang, every
validation image is counted exactly once, and the 2-process metrics equal the 1-process ones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.engine import REPO, tiny_setup, valid_gt_pixels

from ldvc.data.canonical import list_ids

pytestmark = pytest.mark.slow

# eval.batch_size 1: whole-image inference then sees identical inputs in both runs (BLAS may round
# a batched matmul differently from a single one; shards change batch composition).
OVERRIDES = {"train": {"iters": 3, "checkpoint_every": 3, "batch_size": 4}, "transductive": {"init_iter": 3},
             "data": {"synthetic": {"val_images": 7}}, "eval": {"batch_size": 1}}


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("RANK", None)
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def _launch(n: int) -> list[str]:
    accelerate = str(Path(sys.executable).parent / "accelerate")
    if n == 1:
        return [accelerate, "launch", "--config_file", str(REPO / "configs/accelerate/cpu.yaml"), "-m", "ldvc"]
    return [accelerate, "launch", "--multi_gpu", "--num_processes", str(n), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533", "-m", "ldvc"]


def test_two_processes_train_and_evaluate_like_one(tmp_path):
    _, _, root, params, split = tiny_setup(tmp_path, OVERRIDES)
    run = tmp_path / "run2"
    args = ["--params", str(params), "--split", str(split), "--data-root", str(root)]
    out = _run(_launch(2) + ["train", *args, "--out", str(run)])
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["num_processes"] == 2 and summary["step"] == 3
    ckpt = run / "model.pt"

    eval2, eval1 = tmp_path / "eval2", tmp_path / "eval1"
    _run(_launch(2) + ["evaluate", *args, "--checkpoint", str(ckpt), "--out", str(eval2)])
    _run(_launch(1) + ["evaluate", *args, "--checkpoint", str(ckpt), "--out", str(eval1)])
    m2 = json.loads((eval2 / "metrics.json").read_text())
    m1 = json.loads((eval1 / "metrics.json").read_text())
    assert m2["num_processes"] == 2 and m1["num_processes"] == 1
    assert m2["num_images"] == m1["num_images"] == len(list_ids(root, "val")) == 7  # 7: uneven shards
    assert m2["num_pixels"] == m1["num_pixels"] == valid_gt_pixels(root)
    for k in ("pAcc", "mIoU", "mIoU_seen", "mIoU_unseen", "hIoU", "frag_components_pred",
              "frag_small_share_pred", "frag_components_gt", "frag_small_share_gt"):
        assert m2[k] == pytest.approx(m1[k], nan_ok=True), k
    assert (eval2 / "per_class_iou.csv").read_text() == (eval1 / "per_class_iou.csv").read_text()
    assert sorted(p.name for p in (eval2 / "overlays").iterdir()) == sorted(
        p.name for p in (eval1 / "overlays").iterdir())
    shutil.rmtree(tmp_path / "data", ignore_errors=True)
