"""Multi-node rehearsal on one host: the training stage as 2 machines x 1 process (`python -m
ldvc.launch` with LDVC_NUM_MACHINES=2, LDVC_MACHINE_RANK 0 / 1, LDVC_MAIN_PROCESS_IP=127.0.0.1, a free
port; DDP over gloo on the CPU), each "machine" in its own copy of the tree as on a cluster.

Checked against the same stage as 1 machine x 2 processes (LDVC_NUM_PROCESSES=2):
- the loss trajectory (train_log.csv) is the same, step for step;
- the global batch is kept: the same layout (2 processes x per-device batch x accumulation) in the
  launcher's plan and in train_summary.json;
- only global rank 0 writes outputs and logs: machine 1's tree is byte-for-byte unchanged (no
  checkpoint, no summary, no mlflow.db, no MLflow run), machine 0's store holds one training run.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.mlflow_server import free_port
from fixtures.repo_clone import clone_working_tree, e2e_env

pytestmark = pytest.mark.slow

# tiny: the point is the process layout, not the model
OVERRIDES = {
    "data": {"synthetic": {"train_images": 16, "val_images": 4}},
    "train": {"iters": 4, "batch_size": 4, "checkpoint_every": 4, "log_every": 1, "warmup_iters": 1,
              "num_workers": 0},
    "transductive": {"init_iter": 4, "iters": 2},
}
STAGE = [sys.executable, "-m", "ldvc.launch", "-m", "stages.train", "--setting", "inductive", "--seed", "0"]
OUT = Path("runs/ldvc/seed0/inductive")


def _prepare(tree: Path) -> None:
    """The inputs of the training stage, made in-process (no DVC): data, digest, split, CLIP record
    (random CLIP weights: no clip stage needed)."""
    from ldvc.config import load_config
    from ldvc.data.digest import DIGEST_FILE, write_dataset_digest
    from ldvc.data.prepare import prepare_dataset
    from ldvc.data.split import make_split, save_split
    from ldvc.files import write_json_atomic
    from ldvc.pipeline import CLIP_RECORD, SPLIT_FILE, dataset_label

    cfg = load_config(tree / "params.yaml")
    root = tree / cfg.data.root
    prepare_dataset(cfg.data, root, tree, progress=False)
    write_dataset_digest(root, tree / DIGEST_FILE, dataset_label(cfg.data))
    classes = json.loads((root / "meta.json").read_text())["classes"]
    save_split(make_split(classes, cfg.split.unseen, cfg.data.dataset), tree / SPLIT_FILE)
    write_json_atomic(tree / CLIP_RECORD, {"model": cfg.clip.model, "pretrained": "none", "path": None})


def _env(**extra: str) -> dict[str, str]:
    env = {**e2e_env(), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", **extra}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MLFLOW_TRACKING_URI", "LDVC_NUM_PROCESSES",
                "LDVC_NUM_MACHINES", "LDVC_MACHINE_RANK", "LDVC_MAIN_PROCESS_IP", "LDVC_MAIN_PROCESS_PORT"):
        if key not in extra:
            env.pop(key, None)
    return env


def _snapshot(tree: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(tree)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in tree.rglob("*") if p.is_file() and ".git" not in p.parts}


def _losses(tree: Path) -> list[tuple[str, str]]:
    with open(tree / OUT / "train_log.csv") as f:
        return [(row["step"], row["loss"]) for row in csv.DictReader(f)]


def _check(done: subprocess.CompletedProcess, what: str) -> str:
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{out[-6000:]}"
    return out


def _training_runs(tree: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tree / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ldvc")
    return client.search_runs([exp.experiment_id], "tags.`ldvc.stage` = 'train_inductive'")


def test_two_machines_train_like_two_processes_on_one(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    clone_working_tree(base, OVERRIDES, {"ablation": {}, "cross_dataset": {},
                                         "open_vocab": {"model": "fully_supervised", "targets": {}}}, commit=False)
    shutil.rmtree(base / "runs")  # the working tree's committed run records: start from none
    _prepare(base)
    one, m0, m1 = tmp_path / "one-machine", tmp_path / "machine0", tmp_path / "machine1"
    for tree in (one, m0, m1):
        shutil.copytree(base, tree)

    # 1 machine x 2 processes
    single = _check(subprocess.run(STAGE, cwd=one, env=_env(LDVC_NUM_PROCESSES="2",
                                                             LDVC_MAIN_PROCESS_PORT=str(free_port())),
                                   capture_output=True, text=True, timeout=600), "1 machine x 2 processes")
    assert "1 machine(s) x 2 process(es) = 2" in single

    # 2 machines x 1 process: rank 1 from its own tree, started first (it waits for rank 0)
    before = _snapshot(m1)
    port = str(free_port())
    common = {"LDVC_NUM_MACHINES": "2", "LDVC_MAIN_PROCESS_IP": "127.0.0.1", "LDVC_MAIN_PROCESS_PORT": port}
    rank1 = subprocess.Popen(STAGE, cwd=m1, env=_env(**common, LDVC_MACHINE_RANK="1"), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        rank0 = subprocess.run(STAGE, cwd=m0, env=_env(**common, LDVC_MACHINE_RANK="0"), capture_output=True,
                               text=True, timeout=600)
        out1 = rank1.communicate(timeout=300)[0]
    finally:
        if rank1.poll() is None:
            rank1.kill()
    out0 = _check(rank0, "machine 0")
    assert rank1.returncode == 0, f"machine 1 failed:\n{out1[-6000:]}"
    for out in (out0, out1):
        assert "2 machine(s) x 1 process(es) = 2" in out

    # the same trajectory, step for step, over the same global batch
    assert len(_losses(m0)) == OVERRIDES["train"]["iters"]
    assert _losses(m0) == _losses(one)
    s2, s1 = (json.loads((t / OUT / "train_summary.json").read_text()) for t in (m0, one))
    for key in ("effective_batch_size", "num_processes", "per_device_batch", "grad_accumulation", "last_loss"):
        assert s2[key] == s1[key], key
    assert s2["num_processes"] * s2["per_device_batch"] * s2["grad_accumulation"] == OVERRIDES["train"]["batch_size"]
    layout = "layout: global batch 4 = 2 process(es) x 2 image(s) per device x 1 accumulation step(s)"
    assert layout in out0 and layout in single

    # only rank 0 wrote and logged
    assert _snapshot(m1) == before, sorted(set(_snapshot(m1)) ^ set(before))
    assert not (m1 / "mlflow.db").exists() and not (m1 / OUT).exists()
    assert (m0 / OUT / "model.pt").is_file()
    runs = _training_runs(m0)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["num_processes"] == 2
