"""End to end: the README's `dvc repro` on a reduced default, in a temporary git clone.

What a user relies on: the whole chain runs offline; metrics/*.json and reports/ appear; a second
`dvc repro` does nothing; `dvc exp run -S decoder.route_topk=...` re-runs only the stages that read
the decoder and shows in `dvc exp show`; the MLflow UI (a real `mlflow server` over the store the
pipeline wrote, queried through the REST API the UI uses) has one run per stage execution, under a
parent run, with params, metrics, artifacts and tags.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from fixtures.repo_clone import BIN, clone_working_tree, e2e_env
from fixtures.repo_clone import run as _run

pytestmark = pytest.mark.slow


# Small enough for CI, large enough that every stage does real work.
REDUCED = {
    "data": {"synthetic": {"train_images": 96, "val_images": 24}},
    "clip": {"pretrain": {"steps": 20, "batch_size": 32, "warmup_steps": 2, "eval_images": 48}},
    "train": {"iters": 12, "batch_size": 8, "checkpoint_every": 6, "log_every": 3, "warmup_iters": 2},
    "transductive": {"init_iter": 6, "iters": 6},
    "eval": {"num_visualize": 2},
}
ABLATION = {"zegclip": {"decoder": {"type": "zegclip"}}, "topk_1": {"decoder": {"route_topk": 1}}}
EXPECTED_STAGES = {"download", "split", "clip", "train_inductive", "train_transductive",
                   "evaluate_inductive", "evaluate_transductive", "ablation", "report"}


def _clone(dst: Path) -> None:
    clone_working_tree(dst, REDUCED, {"ablation": ABLATION})


def _stages_run(output: str) -> set[str]:
    return {m.split("@")[0] for m in re.findall(r"Running stage '([^']+)'", output)}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    repo = tmp_path_factory.mktemp("clone")
    _clone(repo)
    t0 = time.perf_counter()
    first = _run(["dvc", "repro"], repo)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = _run(["dvc", "repro"], repo)
    t_second = time.perf_counter() - t0
    return {"repo": repo, "first": first.stdout + first.stderr, "second": second.stdout + second.stderr,
            "t_first": t_first, "t_second": t_second}


def test_repro_runs_whole_chain_and_writes_metrics(pipeline):
    repo = pipeline["repo"]
    assert _stages_run(pipeline["first"]) == EXPECTED_STAGES
    for setting in ("inductive", "transductive"):
        metrics = json.loads((repo / "metrics" / f"{setting}.json").read_text())
        for key in ("pAcc", "mIoU_seen", "mIoU_unseen", "hIoU"):
            assert 0.0 <= metrics[key] <= 100.0, (setting, key, metrics)
    clip = json.loads((repo / "metrics" / "clip.json").read_text())
    assert 0.0 <= clip["zero_shot_acc"] <= 100.0
    for name in ("main.md", "main.csv", "main.tex", "ablation.md", "ablation.csv", "ablation.tex"):
        assert (repo / "reports" / "tables" / name).stat().st_size > 0
    ablation = (repo / "reports" / "tables" / "ablation.md").read_text()
    for variant in ("zegclip", "topk_1"):
        assert variant in ablation
    assert any((repo / "reports" / "figures").glob("*.png"))
    # per-stage wall times are printed at the end of each stage's log
    assert pipeline["first"].count("wall time:") >= len(EXPECTED_STAGES)


def test_second_repro_does_nothing(pipeline):
    assert "Running stage" not in pipeline["second"], pipeline["second"]
    assert pipeline["t_second"] < 30  # the budget is 10 s on an idle machine


def test_experiment_reruns_only_decoder_stages(pipeline):
    repo = pipeline["repo"]
    out = _run(["dvc", "exp", "run", "-S", "decoder.route_topk=2"], repo)
    ran = _stages_run(out.stdout + out.stderr)
    assert {"train_inductive", "train_transductive", "evaluate_inductive", "ablation", "report"} <= ran
    assert not ran & {"download", "split", "clip"}, ran
    show = json.loads(_run(["dvc", "exp", "show", "--json"], repo).stdout)
    text = json.dumps(show)
    assert "route_topk" in text and "mIoU_unseen" in text
    # the experiment's runs are in MLflow, tagged with its name
    exp_names = [e["name"] for rev in show for e in (rev.get("experiments") or []) if e.get("name")]
    assert exp_names
    pipeline["exp_names"] = exp_names
    # the regeneration command adds the experiment's row to the tables
    _run(["python", "-m", "ldvc.reports", "--from-mlflow", "--out", "regenerated"], repo)
    main_table = (repo / "regenerated" / "tables" / "main.md").read_text()
    assert any(f"exp: {name}" in main_table for name in exp_names), main_table


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def test_mlflow_server_shows_every_stage_run(pipeline):
    repo = pipeline["repo"]
    port = _free_port()
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{repo / 'mlflow.db'}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=repo, env=e2e_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                _get(f"{base}/health")
                break
            except Exception:
                time.sleep(0.5)
        exp = _get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ldvc")["experiment"]
        runs = _post(f"{base}/api/2.0/mlflow/runs/search",
                     {"experiment_ids": [exp["experiment_id"]], "max_results": 1000})["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
        parents = {r["info"]["run_id"] for r, t in zip(runs, tags) if t.get("ldvc.role") == "pipeline"}
        stage_runs = [(r, t) for r, t in zip(runs, tags) if t.get("ldvc.role") == "stage"]
        assert parents
        assert EXPECTED_STAGES <= {t["ldvc.stage"] for _, t in stage_runs}
        for run, t in stage_runs:
            assert t.get("mlflow.parentRunId") in parents, t
            assert len(t.get("git.commit", "")) == 40
            metric_keys = {m["key"] for m in run["data"].get("metrics", [])}
            assert "stage_seconds" in metric_keys
            assert run["data"].get("params"), t["ldvc.stage"]
            if t["ldvc.stage"].startswith("evaluate"):
                assert {"mIoU_seen", "mIoU_unseen", "hIoU", "pAcc"} <= metric_keys
                listed = _get(f"{base}/api/2.0/mlflow/artifacts/list?run_id={run['info']['run_id']}")
                names = {f["path"] for f in listed.get("files", [])}
                assert {"metrics.json", "per_class_iou.csv"} <= names, names
        exp_tagged = {t.get("dvc.exp_name") for _, t in stage_runs} - {"", None}
        if "exp_names" in pipeline:
            assert set(pipeline["exp_names"]) & exp_tagged
    finally:
        server.terminate()
        server.wait(timeout=30)
