"""A training run killed with SIGKILL right after it wrote a checkpoint and resumed (train.resume:
auto) ends with exactly the weights and metrics of an uninterrupted run (CPU, deterministic)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fixtures.engine import REPO, tiny_setup

from ldvc.train.checkpoint import list_checkpoints, load_checkpoint

pytestmark = pytest.mark.slow

OVERRIDES = {"train": {"iters": 10, "checkpoint_every": 2, "batch_size": 2}, "transductive": {"init_iter": 2}}


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _train_cmd(params: Path, split: Path, root: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "ldvc", "train", "--params", str(params), "--split", str(split),
            "--data-root", str(root), "--out", str(out)]


def _evaluate(params: Path, split: Path, root: Path, out: Path) -> dict:
    cmd = [sys.executable, "-m", "ldvc", "evaluate", "--params", str(params), "--split", str(split),
           "--data-root", str(root), "--out", str(out)]
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


def test_killed_run_resumes_to_identical_weights_and_metrics(tmp_path):
    _, _, root, params, split = tiny_setup(tmp_path, OVERRIDES)
    full, killed = tmp_path / "full", tmp_path / "killed"
    done = subprocess.run(_train_cmd(params, split, root, full), cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    proc = subprocess.Popen(_train_cmd(params, split, root, killed), cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not list_checkpoints(killed) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # mid-run, right after its first checkpoint
    finally:
        proc.wait(timeout=30)
    steps = [s for s, _ in list_checkpoints(killed)]
    assert steps and steps[-1] < 10 and not (killed / "model.pt").exists(), "the run was not killed mid-way"

    resumed = subprocess.run(_train_cmd(params, split, root, killed), cwd=REPO, env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = load_checkpoint(full / "model.pt"), load_checkpoint(killed / "model.pt")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    # the same optimizer state at the last checkpoint, too
    oa = load_checkpoint(full / "checkpoints" / "iter_000010.pt")["optimizer"]["state"]
    ob = load_checkpoint(killed / "checkpoints" / "iter_000010.pt")["optimizer"]["state"]
    assert all(torch.equal(oa[i]["exp_avg"], ob[i]["exp_avg"]) for i in oa)
    # the training log is continuous (the killed run's rows past its checkpoint are dropped)
    log = (killed / "train_log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in log] == list(range(1, 11))

    ma, mb = _evaluate(params, split, root, full), _evaluate(params, split, root, killed)
    for k in ("pAcc", "mIoU", "mIoU_seen", "mIoU_unseen", "hIoU", "frag_components_pred"):
        assert ma[k] == pytest.approx(mb[k], nan_ok=True, abs=0), k
