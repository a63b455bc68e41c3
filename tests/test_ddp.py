"""Two-process data parallelism on a CPU machine (`LDVC_NUM_PROCESSES=2 python -m ldvc.launch`: accelerate
launch --multi_gpu --num_processes 2 with Accelerator(cpu=True), DDP over gloo; toolchain.md, "Accelerate
1.15"): training a few steps and evaluating do not hang, every validation image is counted exactly once,
the 2-process metrics equal the 1-process ones, and 2-process training follows 1-process training of the
same global batch (loss trajectory and final weights; this is what checks ZegCLIP's all-reduced loss
normaliser, ldvc/model/losses.py and TrainStep in ldvc/train/loop.py, end to end)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures.engine import REPO, tiny_setup, valid_gt_pixels
from fixtures.mlflow_server import free_port

from ldvc.data.canonical import list_ids

pytestmark = pytest.mark.slow

ITERS = 4
# eval.batch_size 1: whole-image inference then sees identical inputs in both runs (BLAS may round
# a batched matmul differently from a single one; shards change batch composition).
# Dropout off: its masks are drawn from a per-(step, rank) seed (ldvc/train/loop.py), so 2 processes
# draw other masks than 1 process by design; the comparison is of the data-parallel arithmetic.
OVERRIDES = {"train": {"iters": ITERS, "checkpoint_every": ITERS, "batch_size": 4, "log_every": 1},
             "transductive": {"init_iter": ITERS}, "data": {"synthetic": {"val_images": 7}},
             "eval": {"batch_size": 1}, "encoder": {"prompt_dropout": 0.0, "drop_path": 0.0},
             "decoder": {"dropout": 0.0}}

# Tolerances of 2 processes vs 1 (same global batch 4: 2 x 2 images vs 1 x 4), from a measurement
# (this machine, torch 2.14.1, 4 steps): the per-step losses differed by at most 1.4e-7 relative
# (float32 rounding: batch 2 vs 4 matmuls, gradients averaged by gloo instead of summed in one
# backward), the final weights by at most 7.2e-7 absolute (key biases aside, below). Breaking the
# normaliser on purpose (each process divides by its OWN present-mask count instead of the
# all-reduced one) moved the losses of steps 2-4 by 4.6e-2 .. 2.3e-1 relative and 29 of 38 weight
# tensors by more than 1e-3 (max 4.8e-3). The bounds sit ~15-70x above the rounding and >= 400x below
# the broken normaliser's effect.
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-5


def _env(n: int) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "LDVC_NUM_PROCESSES": str(n), "LDVC_MAIN_PROCESS_PORT": str(free_port())}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LDVC_NUM_MACHINES", "LDVC_MACHINE_RANK",
                "LDVC_MAIN_PROCESS_IP", "LDVC_GPUS_PER_RUN"):
        env.pop(key, None)
    return env


def _ldvc(n: int, *args: str) -> subprocess.CompletedProcess:
    """`python -m ldvc <args>` through the project's launcher on `n` processes (1: one plain process)."""
    cmd = [sys.executable, "-m", "ldvc.launch", "--params", "none", "-m", "ldvc", *args]
    done = subprocess.run(cmd, cwd=REPO, env=_env(n), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """The tiny set-up trained ITERS steps as 1 process and as 2 processes (global batch 4 both)."""
    tmp = tmp_path_factory.mktemp("ddp")
    _, _, root, params, split = tiny_setup(tmp, OVERRIDES)
    args = ["--params", str(params), "--split", str(split), "--data-root", str(root)]
    summaries = {}
    for n in (1, 2):
        out = _ldvc(n, "train", *args, "--out", str(tmp / f"run{n}"))
        summaries[n] = json.loads(out.stdout.strip().splitlines()[-1])
    yield {"tmp": tmp, "root": root, "args": args, "summaries": summaries}
    shutil.rmtree(tmp, ignore_errors=True)


def _losses(run: Path) -> list[float]:
    with open(run / "train_log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    """The learnable state of run/model.pt, key biases left out: the key projection's bias has an
    exact zero gradient (softmax over keys is shift invariant: q.(k + b) adds q.b to every score of a
    query), so what reaches it is float rounding, which AdamW normalises into steps of ~lr with a
    random sign: measured, 1.2e-3 / 2.0e-3 after 4 steps between the 1- and 2-process runs, while the
    query and value thirds of the same tensors agreed to 3e-8. They do not change any output."""
    state = torch.load(run / "model.pt", map_location="cpu", weights_only=False)["model"]
    out = {}
    for name, value in state.items():
        value = value.float()
        if name.endswith(("qkv.bias", "in_proj_bias")):  # (3 W,) = [query | key | value] biases
            w = value.shape[0] // 3
            out[name + "[query]"], out[name + "[value]"] = value[:w], value[2 * w:]
        else:
            out[name] = value
    return out


def test_two_processes_train_like_one_with_the_same_global_batch(trained):
    """Same data, same global batch (1 x 4 images vs 2 x 2), same seed: ZegCLIP's normaliser M is the
    present-mask count all-reduced over processes / processes, and DDP averages the gradients, so each
    step's gradient is the 1-process one and the trajectories agree to float rounding."""
    s1, s2 = trained["summaries"][1], trained["summaries"][2]
    assert (s1["num_processes"], s1["per_device_batch"]) == (1, 4)
    assert (s2["num_processes"], s2["per_device_batch"]) == (2, 2)
    assert s1["effective_batch_size"] == s2["effective_batch_size"] == 4
    assert s1["grad_accumulation"] == s2["grad_accumulation"] == 1
    tmp = trained["tmp"]
    one, two = _losses(tmp / "run1"), _losses(tmp / "run2")
    assert len(one) == len(two) == ITERS
    for step, (a, b) in enumerate(zip(one, two), start=1):
        assert b == pytest.approx(a, rel=LOSS_RTOL), f"step {step}: 1 process {a}, 2 processes {b}"
    w1, w2 = _weights(tmp / "run1"), _weights(tmp / "run2")
    assert w1.keys() == w2.keys()
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=0.0, atol=WEIGHT_ATOL, msg=lambda m, n=name: f"{n}: {m}")


def test_two_processes_evaluate_like_one(trained):
    tmp, root, args = trained["tmp"], trained["root"], trained["args"]
    assert trained["summaries"][2]["num_processes"] == 2 and trained["summaries"][2]["step"] == ITERS
    ckpt = tmp / "run2" / "model.pt"
    eval2, eval1 = tmp / "eval2", tmp / "eval1"
    _ldvc(2, "evaluate", *args, "--checkpoint", str(ckpt), "--out", str(eval2))
    _ldvc(1, "evaluate", *args, "--checkpoint", str(ckpt), "--out", str(eval1))
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
