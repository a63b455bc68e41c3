"""ldvc.tracking against a team's tracking server (PostgreSQL + `mlflow server --serve-artifacts`,
tests/fixtures/mlflow_server.py), and the store resolution every reader and writer shares.

- one resolution: MLFLOW_TRACKING_URI (server or any store URI), else <repo>/mlflow.db, used by the
  stages, checkpoint lookup (`ldvc predict/evaluate --checkpoint`) and the reports' MLflow rebuild;
- a server that is down fails a stage in seconds, before its body runs, naming the URI;
- with a server nothing is written to a local mlflow.db; a new experiment keeps its artifacts
  behind the server's proxy; an existing one whose artifacts live at a path is refused before work;
- two stage processes on "two machines" that really race (a barrier holds both right before they
  create the parent) end with one parent holding both children;
- a server that stops answering mid-stage: the stage completes, every record goes to the pending
  journal (files copied: the originals may vanish), and `ldvc mlflow-sync` logs them: metrics,
  params, tags, artifacts, dataset inputs, the logged model (loadable), the parent summary, the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fixtures.mlflow_server import free_port, mlflow_server_or_skip
from fixtures.mlflow_ui import in_repo, make_repo, pipeline_params

from ldvc.config import load_config

REPO = Path(__file__).resolve().parents[1]


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _server_repo(tmp: Path, experiment: str, name: str = "repo") -> Path:
    return make_repo(tmp / name, pipeline_params([0], {}, project={"mlflow_experiment": experiment}))


# ---------------------------------------------------------------------------------------------- resolution


def test_one_store_resolution_for_every_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ldvc.checkpoint_uri import CheckpointNotFound, store_uri
    from ldvc.reports import ReportError, load_mlflow
    from ldvc.tracking_store import resolve_store, store_kind, tracking_uri

    repo = make_repo(tmp_path / "repo", pipeline_params([0], {}))
    monkeypatch.setenv("DVC_ROOT", str(repo))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri() == f"sqlite:///{repo / 'mlflow.db'}"
    assert resolve_store().kind == "sqlite" and resolve_store().db_path == repo / "mlflow.db"
    for uri, kind in [("http://mlflow.lab:5000", "server"), ("https://x/y", "server"),
                      ("postgresql+psycopg2://u:p@db/mlflow", "database"), ("sqlite:////nfs/m.db", "sqlite"),
                      ("databricks", "hosted"), ("/abs/mlruns", "file")]:
        assert store_kind(uri) == kind, uri
    other = tmp_path / "elsewhere.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{other}")
    assert tracking_uri() == f"sqlite:///{other}"
    # checkpoint lookup and the report rebuild read the same store: both name the missing file
    with pytest.raises(CheckpointNotFound, match=str(other)):
        store_uri()
    with pytest.raises(ReportError, match=str(other)):
        load_mlflow(None)
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    with pytest.raises(RuntimeError, match=dead):
        store_uri()
    with pytest.raises(ReportError, match=dead):
        load_mlflow(None)


def test_server_down_fails_the_stage_before_any_work(tmp_path: Path) -> None:
    from ldvc.tracking import stage_run
    from ldvc.tracking_store import StoreError

    repo = make_repo(tmp_path / "repo", pipeline_params([0], {}))
    dead = f"http://127.0.0.1:{free_port()}"
    ran = []
    with in_repo(repo):
        os.environ["MLFLOW_TRACKING_URI"] = dead
        t0 = time.monotonic()
        with pytest.raises(StoreError, match=f"{dead}.*does not answer.*Nothing was run"):
            with stage_run("split", load_config("params.yaml")):
                ran.append(True)
        # also in a non-main process: no DDP rank starts work while the main one failed
        with pytest.raises(StoreError, match=dead):
            with stage_run("train_inductive", load_config("params.yaml"), main_process=False):
                ran.append(True)
        seconds = time.monotonic() - t0
    assert not ran and seconds < 20, seconds  # bounded tries, not MLflow's minutes of retries
    assert not (repo / "mlflow.db").exists() and not (repo / "mlflow-pending").exists()


# ---------------------------------------------------------------------------------------------- the server


def test_server_store_artifacts_go_through_the_proxy(tmp_path: Path) -> None:
    from ldvc.tracking import stage_run
    from ldvc.tracking_store import StoreError

    server = mlflow_server_or_skip()
    repo = _server_repo(tmp_path, "proxy-check")
    with in_repo(repo):
        os.environ["MLFLOW_TRACKING_URI"] = server.uri
        Path("note.txt").write_text("hello")
        with stage_run("split", load_config("params.yaml"), record_to=Path("data/split_run.json")) as run:
            run.log_artifact("note.txt")
        rec = json.loads(Path("data/split_run.json").read_text())
    client = _client(server.uri)
    exp = client.get_experiment_by_name("proxy-check")
    assert exp.artifact_location == "mlflow-artifacts:/proxy-check"
    assert rec["tracking_uri"] == server.uri and "mlflow_pending" not in rec
    assert [a.path for a in client.list_artifacts(rec["run_id"])] == ["note.txt"]
    stored = list((server.mlflow.artifacts / "proxy-check").rglob("note.txt"))
    assert len(stored) == 1 and stored[0].read_text() == "hello"  # on the server's side, via the proxy
    assert not (repo / "mlflow.db").exists() and not (repo / "mlartifacts").exists()

    # an experiment someone made with a path as artifact location: refused before any work, with the fix
    client.create_experiment("local-artifacts", artifact_location=str(tmp_path / "one-machine"))
    repo2 = _server_repo(tmp_path, "local-artifacts", "repo2")
    ran = []
    with in_repo(repo2):
        os.environ["MLFLOW_TRACKING_URI"] = server.uri
        with pytest.raises(StoreError, match="a path on one machine.*--serve-artifacts.*project.mlflow_experiment"):
            with stage_run("split", load_config("params.yaml")):
                ran.append(True)
    assert not ran
    exp2 = client.get_experiment_by_name("local-artifacts")
    assert client.search_runs([exp2.experiment_id]) == []  # not even a parent was created


_RACER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from mlflow.tracking import MlflowClient
    from ldvc.config import load_config
    from ldvc.tracking import stage_run

    barrier, me = Path(sys.argv[1]), sys.argv[2]
    original = MlflowClient.create_run

    def create_run(self, experiment_id, start_time=None, tags=None, run_name=None):
        if (tags or {}).get("ldvc.role") == "pipeline":  # searched, found nothing: wait for the other writer
            (barrier / me).touch()
            deadline = time.time() + 120
            while len(list(barrier.iterdir())) < 2 and time.time() < deadline:
                time.sleep(0.02)
            print("CREATING PARENT", flush=True)
        return original(self, experiment_id, start_time=start_time, tags=tags, run_name=run_name)

    MlflowClient.create_run = create_run
    with stage_run(f"train_inductive", load_config("params.yaml"), tags={"ldvc.seed": me}) as run:
        run.log_metrics({"x": 1.0})
    print("PARENT", run.parent_run_id, flush=True)
""")


def test_two_machines_racing_to_create_the_parent_end_with_one(tmp_path: Path) -> None:
    """Two clones ("machines") of one DVC experiment start a stage at once; both find no parent and,
    held by a barrier, both create one. The rule leaves one parent holding both children."""
    from mlflow.entities import ViewType

    server = mlflow_server_or_skip()
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = []
    for me in ("a", "b"):
        repo = _server_repo(tmp_path, "race", f"machine-{me}")
        env = {**os.environ, "MLFLOW_TRACKING_URI": server.uri, "DVC_ROOT": str(repo), "DVC_EXP_NAME": "race-exp",
               "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", _RACER, str(barrier), me], cwd=repo, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(o[-3000:] for o in outs)
    assert all("CREATING PARENT" in o for o in outs), "the barrier did not hold both writers before creating"
    client = _client(server.uri)
    exp = client.get_experiment_by_name("race")
    pid_filter = "tags.`ldvc.role` = 'pipeline' AND tags.`ldvc.pipeline_id` = 'exp:race-exp'"
    created = client.search_runs([exp.experiment_id], pid_filter, run_view_type=ViewType.ALL)
    active = client.search_runs([exp.experiment_id], pid_filter, run_view_type=ViewType.ACTIVE_ONLY)
    assert len(created) == 2 and len(active) == 1  # both created one; one is left
    parent = active[0].info.run_id
    assert parent == min(r.info.run_id for r in created)
    children = client.search_runs([exp.experiment_id], "tags.`ldvc.role` = 'stage'")
    assert sorted(c.data.tags["ldvc.seed"] for c in children) == ["a", "b"]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent}
    assert all(f"PARENT {parent}" in o for o in outs)  # both stages ended knowing the one parent
    assert all(not (tmp_path / f"machine-{m}" / "mlflow.db").exists() for m in "ab")


class _Unreachable:
    """Stands in for the MLflow client once the server is gone: every call fails like a dead socket."""

    def __getattr__(self, name: str):
        def fail(*args, **kwargs):
            import requests

            raise requests.exceptions.ConnectionError(f"[Errno 111] Connection refused ({name})")
        return fail


def test_server_lost_mid_stage_loses_nothing_and_sync_logs_it(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from mlflow.entities import LoggedModelStatus

    from ldvc.checkpoint_uri import resolve_checkpoint
    from ldvc.cli import main
    from ldvc.tracking import stage_run

    server = mlflow_server_or_skip()
    repo = _server_repo(tmp_path, "journal")
    exps = repo / ".dvc" / "tmp" / "exps" / "x"  # a DVC temp experiment folder: deleted when it ends
    exps.mkdir(parents=True)
    cfg = load_config(repo / "params.yaml")
    ckpt = exps / "model.pt"
    torch.save({"model": {"w": torch.arange(4.0)}, "step": 3, "config": cfg.to_dict(), "setting": "inductive",
                "class_names": ["a", "b"], "clip": {"model": cfg.clip.model, "weights": None, "sha256": None}}, ckpt)
    (exps / "train_log.csv").write_text("step,loss\n1,0.5\n2,0.25\n")
    (exps / "tables").mkdir()
    (exps / "tables" / "main.md").write_text("| a |\n")
    want = ckpt.read_bytes()
    with in_repo(repo):
        os.environ["MLFLOW_TRACKING_URI"] = server.uri
        tags = {"ldvc.variant": "ldvc", "ldvc.seed": "0", "ldvc.setting": "inductive"}
        with stage_run("train_inductive", cfg, tags=tags, record_to=Path("runs/train_run.json")) as run:
            run.log_metrics({"loss": 0.5}, step=1)  # reaches the server
            run.applier.client = _Unreachable()  # the server is gone from here on
            run.log_metrics({"loss": 0.25}, step=2)
            run.log_params({"extra": {"k": 1}})
            run.set_tags({"ldvc.protocol_conformant": False})
            run.log_dict({"a": 1}, "summary.json")
            run.log_artifact(exps / "train_log.csv")
            run.log_dataset("synthetic", "d" * 32, "data/prepared", "train", "training")
            assert run.log_checkpoint(ckpt) is None  # pending: no model id yet
            run.log_pipeline_summary({"inductive": {"hIoU": 42.0}}, [exps / "tables"])
        rec = json.loads(Path("runs/train_run.json").read_text())
    err = capsys.readouterr().err
    assert "MLflow records NOT logged" in err and "ldvc mlflow-sync" in err and server.uri in err
    for what in ("metric values (loss, stage_seconds)", "artifact train_log.csv", "logged model ldvc-inductive-seed0",
                 "dataset input synthetic/train", "pipeline summary", "the run's end (FINISHED)"):
        assert what in err, what
    assert rec["run_id"] and Path(rec["mlflow_pending"]).is_dir()  # the outputs name the run and the journal
    shutil.rmtree(exps)  # the experiment folder is gone before the sync: the journal kept copies
    client = _client(server.uri)
    assert client.get_run(rec["run_id"]).info.status == "RUNNING"  # what the server saw last

    # the server is still "down" for a sync aimed at a dead address: nothing is lost, exit 1
    with in_repo(repo):
        dead = f"http://127.0.0.1:{free_port()}"
        assert main(["mlflow-sync", "--tracking-uri", dead]) == 1
        assert Path(rec["mlflow_pending"]).is_dir()
        assert main(["mlflow-sync", "--list"]) == 0
        assert main(["mlflow-sync"]) == 0  # the server of the journal's header
        assert not Path(rec["mlflow_pending"]).exists()
        assert main(["mlflow-sync"]) == 0  # nothing left
    run = client.get_run(rec["run_id"])
    assert run.info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(rec["run_id"], "loss")] == [0.5, 0.25]
    assert run.data.params["extra.k"] == "1" and run.data.tags["ldvc.protocol_conformant"] == "False"
    assert {a.path for a in client.list_artifacts(rec["run_id"])} >= {"summary.json", "train_log.csv"}
    assert run.inputs.dataset_inputs[0].dataset.name == "synthetic/train"
    (out,) = run.outputs.model_outputs
    assert client.get_logged_model(out.model_id).status == LoggedModelStatus.READY
    with in_repo(repo):
        os.environ["MLFLOW_TRACKING_URI"] = server.uri
        assert resolve_checkpoint(f"models:/{out.model_id}").read_bytes() == want
    parent = client.get_run(rec["parent_run_id"])
    assert parent.data.metrics["inductive.hIoU"] == 42.0 and parent.info.status == "FINISHED"
    assert "tables" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {d.dataset.name for d in parent.inputs.dataset_inputs} == {"synthetic/train"}
