"""A research group's set-up end to end: one tracking server (PostgreSQL + `mlflow server
--serve-artifacts`, tests/fixtures/mlflow_server.py), one DVC remote, two clones (docs/team.md).

One reduced pipeline serves every check (its training is the only expensive part):

1. clone A runs `dvc repro` with MLFLOW_TRACKING_URI pointing at the server; the test kills the
   server while train_inductive runs. That stage still writes its outputs (checkpoint, summary,
   *_run.json), exits 0 and names the missing records and `ldvc mlflow-sync`; the next stage fails
   before any work, naming the server. The server comes back, `ldvc mlflow-sync` logs the records
   (metrics, logged model, end), and `dvc repro` finishes without re-training.
2. A commits and pushes to a local-directory DVC remote (`dvc remote add -d`, `dvc push`); clone B
   (`git clone` + `dvc pull`) is clean in `dvc status` and its `dvc repro` runs nothing but the
   always-running input fingerprints.
3. B runs `dvc exp run -S eval.seen_bias=...` against the server: the server holds two parent rows
   with their headline metrics, each clone's children under its own parent, no clone has a local
   mlflow.db, and B segments an image with A's logged model (`ldvc predict --checkpoint models:/...`).
4. The README's experiment table command (`dvc exp show` narrowed to the changed params and the
   inductive S / U / hIoU) fits 100 columns.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from fixtures.mlflow_server import mlflow_server_or_skip
from fixtures.repo_clone import clone_working_tree, e2e_env

pytestmark = pytest.mark.slow

EXPERIMENT = "team-e2e"
REDUCED = {
    "project": {"mlflow_experiment": EXPERIMENT},
    "data": {"synthetic": {"train_images": 48, "val_images": 12}},
    "clip": {"pretrain": {"steps": 10, "batch_size": 32, "warmup_steps": 2, "eval_images": 32}},
    "train": {"iters": 12, "batch_size": 8, "checkpoint_every": 6, "log_every": 2, "warmup_iters": 2},
    "transductive": {"init_iter": 6, "iters": 4},
    "eval": {"num_visualize": 1},
}
# main runs only: ablation, cross-dataset and open-vocabulary stages do not read anything checked here
REPLACE = {"ablation": {}, "cross_dataset": {}, "open_vocab": {"model": "fully_supervised", "targets": {}}}
EXP_KEY, EXP_VALUE = "eval.seen_bias", "0.05"  # cheap: only the evaluations and the report re-run
# The experiment table of docs/team.md ("Comparing experiments"): each experiment's changed params and its
# inductive S / U / hIoU. DVC's own table cannot fit them in 100 columns: a metric that several metrics files
# share (hIoU: inductive.json, transductive.json) is named with its file, and metric headers never wrap.
EXP_SHOW = ("dvc exp show --csv --only-changed --drop '/|:|^(typ|parent|Created|runs|presets)$' "
            "--keep '^(Experiment|rev)$|^metrics/inductive\\.json:(mIoU_seen|mIoU_unseen|hIoU)$' "
            "| sed 's#metrics/inductive\\.json:##g' | column -t -s,")


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 900, check: bool = True
         ) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-5000:]}\n"
                             f"{done.stderr[-5000:]}")
    return done


def _stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def _always_changed(repo: Path) -> set[str]:
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    return {name for name, spec in stages.items() if spec.get("always_changed")}


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _kill_during_training(server, repo: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start `dvc repro` and kill the server once train_inductive's run is open on it (params logged)."""
    proc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=open(log, "w"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, text=True)
    client = _client(server.uri)
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        exp = client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            runs = client.search_runs([exp.experiment_id], "tags.`ldvc.stage` = 'train_inductive'")
            if runs and runs[0].data.params:
                server.mlflow.kill()
                return proc
        time.sleep(0.25)
    proc.kill()
    raise AssertionError(f"train_inductive never opened its run while `dvc repro` ran:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    server = mlflow_server_or_skip()
    t_start = time.perf_counter()
    base = tmp_path_factory.mktemp("team")
    a, b, remote = base / "clone-a", base / "clone-b", base / "dvc-remote"
    a.mkdir()
    clone_working_tree(a, REDUCED, REPLACE)
    env = {**e2e_env(), "MLFLOW_TRACKING_URI": server.uri}
    result: dict = {"server": server, "a": a, "b": b, "env": env, "timings": {}}

    # 1. the server dies during training
    log = base / "repro-a1.log"
    t0 = time.perf_counter()
    proc = _kill_during_training(server, a, env, log)
    proc.wait(timeout=900)
    result["first"] = log.read_text()
    result["first_rc"] = proc.returncode
    result["record_a"] = json.loads((a / "runs/ldvc/seed0/inductive/train_run.json").read_text())
    result["lock_after_kill"] = yaml.safe_load((a / "dvc.lock").read_text())
    server.mlflow.start()  # back, same database, artifacts and address
    result["sync"] = _run(["ldvc", "mlflow-sync"], a, env)
    second = _run(["dvc", "repro"], a, env)
    result["second"] = second.stdout + second.stderr
    result["timings"]["clone A: dvc repro (killed, sync, resumed)"] = time.perf_counter() - t0

    # 2. share: commit, push to a local-directory remote, fresh clone, pull, repro
    t0 = time.perf_counter()
    remote.mkdir()
    _run(["git", "add", "-A"], a, env)
    _run(["git", "commit", "-qm", "reduced pipeline run"], a, env)
    _run(["dvc", "remote", "add", "-d", "storage", str(remote)], a, env)
    _run(["git", "commit", "-qm", "DVC remote", ".dvc/config"], a, env)
    result["push"] = _run(["dvc", "push"], a, env).stdout
    _run(["git", "clone", "-q", str(a), str(b)], base, env)
    result["pull"] = _run(["dvc", "pull"], b, env)
    result["status_b"] = json.loads(_run(["dvc", "status", "--json"], b, env).stdout or "{}")
    repro_b = _run(["dvc", "repro"], b, env)
    result["repro_b"] = repro_b.stdout + repro_b.stderr
    result["timings"]["share: push, clone, pull, repro"] = time.perf_counter() - t0

    # 3. clone B's experiment on the same server
    t0 = time.perf_counter()
    exp_b = _run(["dvc", "exp", "run", "-S", f"{EXP_KEY}={EXP_VALUE}"], b, env)
    result["exp_b"] = exp_b.stdout + exp_b.stderr
    result["timings"]["clone B: dvc exp run -S"] = time.perf_counter() - t0
    result["timings"]["total"] = time.perf_counter() - t_start
    print("team e2e timings (s):", {k: round(v, 1) for k, v in result["timings"].items()})
    return result


def test_server_killed_during_training_loses_no_output(team):
    from mlflow.entities import LoggedModelStatus

    a, first = team["a"], team["first"]
    ran = _stages_run(first)
    assert "train_inductive@0" in ran, first[-3000:]
    after = ran[ran.index("train_inductive@0") + 1:]
    assert after, "no stage started after the killed one"
    # the training stage finished its work and its DVC outputs, and said what is missing from MLflow
    killed = first.split("Running stage 'train_inductive@0'")[1].split("Running stage")[0]
    assert "MLflow records NOT logged" in killed and "ldvc mlflow-sync" in killed, killed[-3000:]
    assert "logged model" in killed and "metric values" in killed
    run_dir = a / "runs/ldvc/seed0/inductive"
    for name in ("model.pt", "train_summary.json", "train_run.json", "train_log.csv"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "checkpoints").iterdir())
    assert team["record_a"]["mlflow_pending"] and team["record_a"]["run_id"]
    lock = team["lock_after_kill"]["stages"]["train_inductive@0"]
    assert any(o["path"].endswith("model.pt") for o in lock["outs"])  # DVC committed the stage
    # the next stage failed before any work, naming the server
    failed = first.split(f"Running stage '{after[0]}'")[1]
    assert team["first_rc"] != 0 and team["server"].uri in failed and "Nothing was run" in failed
    assert "wall time" not in failed
    # the sync logged what was missing; the resumed repro did not train inductive again
    assert "logged" in team["sync"].stdout and not any((a / "mlflow-pending").iterdir())
    assert "train_inductive@0" not in _stages_run(team["second"])
    client = _client(team["server"].uri)
    run = client.get_run(team["record_a"]["run_id"])
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert run.info.status == "FINISHED"
    assert run.data.metrics["last_loss"] == pytest.approx(summary["last_loss"])
    with open(run_dir / "train_log.csv") as f:
        logged_steps = [int(row["step"]) for row in csv.DictReader(f)]
    history = client.get_metric_history(run.info.run_id, "train/loss")  # every logged step, synced or not
    assert sorted(m.step for m in history) == logged_steps
    assert "train_log.csv" in {f.path for f in client.list_artifacts(run.info.run_id)}
    (model_out,) = run.outputs.model_outputs
    assert client.get_logged_model(model_out.model_id).status == LoggedModelStatus.READY


def _parents(client, exp_id: str) -> list:
    return client.search_runs([exp_id], "tags.`ldvc.role` = 'pipeline'")


def test_a_fresh_clone_pulls_everything_and_reruns_nothing(team):
    always = _always_changed(team["a"])
    assert "pushed" in team["push"]
    # every stage is up to date after the pull but the always-running fingerprints
    status = team["status_b"]
    assert set(status) <= always and all(v == ["always changed"] for v in status.values()), status
    ran = {s.split("@")[0] for s in _stages_run(team["repro_b"])}
    assert ran == always, team["repro_b"][-3000:]  # no download, training or evaluation stage
    assert not (team["b"] / "mlflow.db").exists()


def test_two_clones_on_one_server(team):
    a, b, uri = team["a"], team["b"], team["server"].uri
    ran = {s.split("@")[0] for s in _stages_run(team["exp_b"])}
    assert {"evaluate_inductive", "evaluate_transductive", "report"} <= ran
    assert not ran & {"download", "split", "clip", "train_inductive", "train_transductive"}, ran
    client = _client(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp.artifact_location.startswith("mlflow-artifacts:")
    parents = _parents(client, exp.experiment_id)
    assert len(parents) == 2, [p.data.tags.get("ldvc.pipeline_id") for p in parents]
    by_key = {p.data.tags["ldvc.pipeline_id"]: p for p in parents}
    exp_parent = next(p for k, p in by_key.items() if k.startswith("exp:"))
    a_parent = next(p for k, p in by_key.items() if not k.startswith("exp:"))
    # headline metrics on each parent row, as each clone's metrics/inductive.json says
    for parent, repo in ((a_parent, a), (exp_parent, b)):
        if repo == b:
            _run(["dvc", "exp", "apply", exp_parent.data.tags["dvc.exp_name"]], b, team["env"])
        inductive = json.loads((repo / "metrics/inductive.json").read_text())
        for key in ("hIoU", "mIoU_seen", "mIoU_unseen"):
            assert parent.data.metrics[f"inductive.{key}"] == pytest.approx(inductive[key]), (repo.name, key)
    # each clone's children under its own parent
    children = client.search_runs([exp.experiment_id], "tags.`ldvc.role` = 'stage'", max_results=1000)
    for child in children:
        expected = exp_parent if child.data.tags.get("dvc.exp_name") else a_parent
        assert child.data.tags["mlflow.parentRunId"] == expected.info.run_id, child.data.tags["ldvc.stage"]
    under = {p.info.run_id: {c.data.tags["ldvc.stage"] for c in children
                             if c.data.tags["mlflow.parentRunId"] == p.info.run_id} for p in parents}
    stages_a, stages_b = under[a_parent.info.run_id], under[exp_parent.info.run_id]
    assert {"download", "split", "clip", "train_inductive", "train_transductive", "report"} <= stages_a
    assert stages_b == {"evaluate_inductive", "evaluate_transductive", "report"}
    for repo in (a, b):
        assert not (repo / "mlflow.db").exists() and not (repo / "mlartifacts").exists(), repo.name

    # clone B segments an image with the model clone A logged (synced after the server came back)
    (train_a,) = [c for c in children if c.data.tags["ldvc.stage"] == "train_inductive"]
    model_id = train_a.outputs.model_outputs[0].model_id  # logged by the sync after the server came back
    image = sorted((b / "data/prepared/images/val").iterdir())[0]
    out = _run(["ldvc", "predict", str(image), "--classes", "red,blue,green", "--checkpoint",
                f"models:/{model_id}", "--out", "predictions"], b, team["env"])
    assert (b / "predictions" / f"{image.stem}_labels.png").is_file(), out.stdout
    assert (b / ".cache" / "checkpoints").is_dir()  # fetched from the server, not found on disk


def test_experiment_table_fits_100_columns(team):
    b = team["b"]
    shown = subprocess.run(EXP_SHOW, shell=True, cwd=b, env={**team["env"], "COLUMNS": "100"}, capture_output=True,
                           text=True, timeout=300, check=True).stdout
    lines = shown.splitlines()
    assert len(lines) >= 4 and max(len(line) for line in lines) <= 100, shown
    header = lines[0].split()
    assert header == ["Experiment", "rev", "hIoU", "mIoU_seen", "mIoU_unseen", EXP_KEY], shown
    # the experiment's row: its name, its changed param and the S / U / hIoU DVC recorded for it
    exps = json.loads(_run(["dvc", "exp", "show", "--json"], b, team["env"]).stdout)
    (exp,) = [e for rev in exps for e in rev.get("experiments") or []]
    name = exp["name"]
    metrics = exp["revs"][0]["data"]["metrics"]["metrics/inductive.json"]["data"]
    row = next(line.split() for line in lines if line.startswith(name))
    assert row[2:] == [str(metrics["hIoU"]), str(metrics["mIoU_seen"]), str(metrics["mIoU_unseen"]), EXP_VALUE], shown
