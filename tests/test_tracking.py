"""ldvc.tracking, ldvc.environment and ldvc.checkpoint_uri against real MLflow stores in temp repos.

- exactly one parent per pipeline run, whatever the variants and seeds; the same commit and params
  (a re-run) reuse it, other params or a DVC experiment name give another; the parent spans its
  stages and carries the params and the report's summary;
- concurrent first stages on a FRESH store (what `dvc queue start -j 2` does) neither crash in
  MLflow's migrations nor create two experiments or parents;
- dataset inputs, logged models and checkpoint resolution (path, run id, runs:/, models:/), also
  through `ldvc predict` and `ldvc evaluate`;
- versions() without importing the packages it reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from fixtures.mlflow_ui import in_repo, make_repo, pipeline_params, simulate_pipeline

from ldvc.config import flatten, load_config

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"zegclip": {"decoder": {"type": "zegclip"}}, "no_route": {"decoder": {"route_attention": False}}}


def client_for(repo: Path):
    from mlflow.tracking import MlflowClient

    from ldvc.tracking import tracking_uri

    return MlflowClient(tracking_uri(repo))


def runs_by_role(repo: Path) -> tuple[list, list]:
    client = client_for(repo)
    exp = client.get_experiment_by_name("ldvc")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return ([r for r in runs if r.data.tags.get("ldvc.role") == "pipeline"],
            [r for r in runs if r.data.tags.get("ldvc.role") == "stage"])


def run_stage(stage: str, tags: dict | None = None, variant: str | None = None, record: Path | None = None,
              fail: bool = False):
    from ldvc.tracking import stage_run

    cfg = load_config("params.yaml")
    cfg = cfg.variant(variant) if variant else cfg
    with stage_run(stage, cfg, tags=tags, record_to=record) as run:
        run.log_metrics({"x": 1.0})
        if fail:
            raise RuntimeError("stage body failed")
    return run


# ---------------------------------------------------------------------------------------------- parents


def test_one_parent_per_pipeline_run_whatever_the_variants_and_seeds(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", pipeline_params([0, 1], VARIANTS))
    with in_repo(repo):
        logged = simulate_pipeline()
        parents, stages = runs_by_role(repo)
        assert [p.info.run_id for p in parents] == [logged["parent"]]
        parent = parents[0]
        # variant and seed are tags of the children, all under the one parent
        ablation = [s for s in stages if s.data.tags["ldvc.stage"] == "ablation"]
        assert {(s.data.tags["ldvc.variant"], s.data.tags["ldvc.seed"]) for s in ablation} == \
            {(v, str(s)) for v in VARIANTS for s in (0, 1)}
        assert {s.data.tags["mlflow.parentRunId"] for s in stages} == {parent.info.run_id}
        # ablation children log their variant's config; the parent the whole params.yaml
        zeg = next(s for s in ablation if s.data.tags["ldvc.variant"] == "zegclip")
        assert zeg.data.params["decoder.type"] == "zegclip"
        whole = {k: str(v) if not isinstance(v, (list, dict)) else json.dumps(v)
                 for k, v in flatten(load_config("params.yaml").to_dict()).items()}
        assert parent.data.params == whole
        assert parent.data.params["decoder.type"] == "lctd"
        # the parent spans its stages and is finished; it carries the summary and params.yaml
        assert parent.info.start_time <= min(s.info.start_time for s in stages)
        assert parent.info.end_time >= max(s.info.end_time for s in stages)
        assert parent.info.status == "FINISHED"
        assert parent.data.metrics["inductive.hIoU"] == pytest.approx(logged["summary"]["inductive"]["hIoU"])
        assert parent.data.metrics["ablation.zegclip.hIoU"] == pytest.approx(40.5)
        arts = {a.path for a in client_for(repo).list_artifacts(parent.info.run_id)}
        assert {"params.yaml", "tables", "figures"} <= arts
        assert parent.data.tags["env.mlflow"] != "absent" and "env.torch" in stages[0].data.tags

        # a re-run of the same commit and params (dvc repro -f) files into the same parent
        run_stage("train_inductive", {"ldvc.variant": "ldvc", "ldvc.seed": "0", "ldvc.setting": "inductive"})
        assert [p.info.run_id for p in runs_by_role(repo)[0]] == [parent.info.run_id]
        # other params (even uncommitted) are another pipeline run
        params = yaml.safe_load(Path("params.yaml").read_text())
        params["train"]["iters"] += 1
        Path("params.yaml").write_text(yaml.safe_dump(params))
        run_stage("split")
        assert len(runs_by_role(repo)[0]) == 2
    # a DVC experiment is keyed by its name, whatever the params
    with in_repo(repo, exp_name="exp-one"):
        run_stage("split")
        run_stage("ablation", {"ldvc.variant": "no_route", "ldvc.seed": "1"}, variant="no_route")
    parents, stages = runs_by_role(repo)
    exp_parents = [p for p in parents if p.data.tags["dvc.exp_name"] == "exp-one"]
    assert len(parents) == 3 and len(exp_parents) == 1
    assert exp_parents[0].data.tags["mlflow.runName"] == "exp-one"
    assert exp_parents[0].data.tags["ldvc.pipeline_id"] == "exp:exp-one"


def test_record_failure_and_non_main_process(tmp_path: Path) -> None:
    from ldvc.tracking import stage_run

    repo = make_repo(tmp_path / "repo", pipeline_params([0], {}))
    with in_repo(repo):
        run = run_stage("split", record=Path("data/split_run.json"))
        rec = json.loads(Path("data/split_run.json").read_text())
        assert rec["run_id"] == run.run_id and rec["stage"] == "split" and rec["parent_run_id"] == run.parent_run_id
        assert rec["tracking_uri"] == f"sqlite:///{repo / 'mlflow.db'}"
        with pytest.raises(RuntimeError, match="stage body failed"):
            run_stage("train_inductive", record=Path("runs/train_run.json"), fail=True)
        assert not Path("runs/train_run.json").exists()  # outputs of a failed stage name no run
        parents, stages = runs_by_role(repo)
        assert {s.data.tags["ldvc.stage"]: s.info.status for s in stages} == \
            {"split": "FINISHED", "train_inductive": "FAILED"}
        assert parents[0].info.status == "FAILED"
        # other processes under accelerate log nothing (and need no store)
        with stage_run("train_inductive", load_config("params.yaml"), main_process=False) as other:
            other.log_metrics({"x": 1})
            other.log_dataset("d", "abc", "data", "train")
            assert other.log_checkpoint(Path("missing.pt")) is None
            other.log_pipeline_summary({"inductive": {"hIoU": 1.0}})
        assert len(runs_by_role(repo)[1]) == 2


def test_experiment_kind_and_view_also_on_an_existing_experiment(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from ldvc.tracking import (
        EXPERIMENT_KIND_TAG,
        TRAINING_KIND,
        VIEW_TAG,
        artifact_location,
        experiment_ui_url,
        tracking_uri,
    )

    repo = make_repo(tmp_path / "repo", pipeline_params([0], {}))
    # an experiment made by an earlier ldvc (no kind, no view): stages must add both, keep its id
    old = MlflowClient(tracking_uri(repo)).create_experiment("ldvc", artifact_location=artifact_location(repo))
    with in_repo(repo):
        run = run_stage("split")
    exp = client_for(repo).get_experiment_by_name("ldvc")
    assert exp.experiment_id == old == run.experiment_id
    assert exp.tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND
    view = json.loads(exp.tags[VIEW_TAG])
    state = json.loads(view["state"])
    assert "metrics.`inductive.hIoU`" in state["selectedColumns"]
    assert state["columnOrder"][3] == "metrics.`inductive.hIoU`"  # right after name, date, duration
    assert experiment_ui_url(old, "http://h:1") == \
        f"http://h:1/#/experiments/{old}/runs?workflowType=machine_learning&viewStateShareKey=ldvc-pipelines"


# ---------------------------------------------------------------------------------------------- concurrency

_FIRST_STAGE = textwrap.dedent("""
    import sys, time
    from ldvc.config import load_config
    from ldvc.tracking import stage_run
    start, name = float(sys.argv[1]), sys.argv[2]
    cfg = load_config("params.yaml")
    time.sleep(max(0.0, start - time.time()))  # all processes hit the fresh store at once
    with stage_run(name, cfg, tags={"ldvc.seed": name}) as run:
        run.log_metrics({"x": 1.0})
""")


def test_parallel_first_stages_on_a_fresh_store(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", pipeline_params([0], {}))
    env = {**os.environ, "DVC_ROOT": str(repo), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("DVC_EXP_NAME", None)
    start = time.time() + 6  # after the (light) imports of all four processes; mlflow is imported later
    procs = [subprocess.Popen([sys.executable, "-c", _FIRST_STAGE, str(start), f"stage{i}"], cwd=repo, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(4)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n---\n".join(o[-2000:] for o in outs)
    client = client_for(repo)
    assert [e.name for e in client.search_experiments()].count("ldvc") == 1
    parents, stages = runs_by_role(repo)
    assert len(parents) == 1 and len(stages) == 4
    assert {s.data.tags["mlflow.parentRunId"] for s in stages} == {parents[0].info.run_id}


# ---------------------------------------------------------------------------------------------- datasets, models


def test_dataset_inputs_and_logged_checkpoints(tmp_path: Path) -> None:
    from mlflow.entities import LoggedModelStatus

    from ldvc.checkpoint_uri import CheckpointNotFound, resolve_checkpoint
    from ldvc.tracking import dvc_lock_digest

    repo = make_repo(tmp_path / "repo", pipeline_params([0], {}))
    with in_repo(repo):
        logged = simulate_pipeline()
        client = client_for(repo)
        train_run = client.get_run(logged["runs"][0])
        (inp,) = train_run.inputs.dataset_inputs
        assert inp.dataset.name == "voc/train" and inp.dataset.digest == "cdaf6af6c8c7"
        assert json.loads(inp.dataset.profile)["digest"] == "cdaf6af6c8c7333c69fd0765eab56b31.dir"
        assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "training"
        parent = client.get_run(logged["parent"])
        assert {d.dataset.name for d in parent.inputs.dataset_inputs} == {"voc/train", "voc/val"}
        (out,) = train_run.outputs.model_outputs
        model = client.get_logged_model(out.model_id)
        assert model.source_run_id == train_run.info.run_id and model.name == "ldvc-inductive-seed0"
        assert model.status == LoggedModelStatus.READY
        assert model.params["clip.model"] and model.tags["ldvc.checkpoint_file"] == "model.pt"
        assert train_run.data.tags["ldvc.model_id"] == out.model_id
        rec = json.loads(Path("runs/ldvc/seed0/inductive/train_run.json").read_text())
        assert rec["model_ids"] == [out.model_id]

        local = Path("runs/ldvc/seed0/inductive/model.pt")
        want = local.read_bytes()
        assert resolve_checkpoint(str(local)) == local
        assert resolve_checkpoint("runs/ldvc/seed0/inductive") == local  # a run folder: its model.pt
        for spec in (f"models:/{out.model_id}", train_run.info.run_id,
                     f"runs:/{train_run.info.run_id}/ldvc-inductive-seed0/model.pt"):
            got = resolve_checkpoint(spec)
            assert got.read_bytes() == want, spec
            assert resolve_checkpoint(spec) == got  # the second time from the cache
        for spec, words in [("models:/m-0123456789abcdef", "models:/m-0123456789abcdef"),
                            ("0" * 32, "no MLflow run"),
                            (logged["parent"], "logged no checkpoint"),
                            ("nope/model.pt", "no such file")]:
            with pytest.raises(CheckpointNotFound, match=words):
                resolve_checkpoint(spec)
        Path("dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {
            "train": {"deps": [{"path": "data/prepared", "md5": "dep.dir"}]},
            "download": {"outs": [{"path": "data/prepared", "md5": "out.dir"}]}}}))
        assert dvc_lock_digest("data/prepared") == "out.dir" and dvc_lock_digest("other") is None
    with pytest.raises(CheckpointNotFound, match="no MLflow store"):
        with in_repo(make_repo(tmp_path / "empty", pipeline_params([0], {}))):
            resolve_checkpoint(f"models:/{out.model_id}")


def test_clip_weights_resolution(tmp_path: Path) -> None:
    from ldvc.checkpoint_uri import portable_path, resolve_clip_weights

    repo = make_repo(tmp_path / "repo", pipeline_params([0], {}))
    weights = repo / "models" / "clip" / "clip.pt"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"w")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with in_repo(elsewhere, root=repo):  # cwd outside the repository: found from the repository root
        assert portable_path(weights) == "models/clip/clip.pt"
        assert resolve_clip_weights("models/clip/clip.pt", "ck.pt") == repo / "models/clip/clip.pt"
        # an absolute path of another clone / a DVC experiment copy: found by its trailing parts
        assert resolve_clip_weights("/old/clone/.dvc/tmp/exps/x/models/clip/clip.pt", "ck.pt") == \
            repo / "models/clip/clip.pt"
        assert resolve_clip_weights(None, "ck.pt") is None
        assert resolve_clip_weights("models/clip/clip.pt", "ck.pt", given=weights) == weights
        with pytest.raises(FileNotFoundError, match="pass --clip-weights"):
            resolve_clip_weights("models/clip/other.pt", "ck.pt")
        with pytest.raises(FileNotFoundError, match="--clip-weights /nope"):
            resolve_clip_weights("models/clip/clip.pt", "ck.pt", given="/nope")
    with in_repo(repo):
        (repo / "local.pt").write_bytes(b"l")
        assert resolve_clip_weights("local.pt", "ck.pt") == repo / "local.pt"  # the cwd first


def test_predict_and_evaluate_accept_mlflow_checkpoints(tmp_path: Path) -> None:
    """`ldvc predict --checkpoint models:/<id>` (and a run id) segments with the logged checkpoint;
    `ldvc evaluate --checkpoint` with an unknown URI fails in one line naming it."""
    from fixtures.engine import fresh_checkpoint, tiny_setup

    from ldvc.cli import main
    from ldvc.predict import predict
    from ldvc.tracking import stage_run

    cfg, split, data_root, params, split_path = tiny_setup(tmp_path)
    repo = make_repo(tmp_path / "repo", yaml.safe_load(params.read_text()))
    with in_repo(repo):
        ckpt = fresh_checkpoint(cfg, split, repo / "model.pt")
        with stage_run("train_inductive", cfg, tags={"ldvc.variant": "ldvc", "ldvc.seed": "0",
                                                     "ldvc.setting": "inductive"}) as run:
            model_id = run.log_checkpoint(ckpt, step=0)
        ckpt.unlink()  # only the store has it now
        image = next((data_root / "images" / "val").iterdir())
        for spec in (f"models:/{model_id}", run.run_id):
            res = predict([image], ["red", "blue"], spec, tmp_path / "pred", mode="whole")
            assert Path(res[0]["labels"]).exists(), spec
        code = main(["evaluate", "--params", str(params), "--split", str(split_path), "--data-root", str(data_root),
                     "--checkpoint", "models:/m-missing", "--out", str(tmp_path / "eval")])
        assert code == 2


# ---------------------------------------------------------------------------------------------- versions


def test_versions_without_importing_the_packages() -> None:
    code = textwrap.dedent("""
        import json, sys
        from ldvc.environment import versions
        v = versions()
        heavy = [m for m in ("torch", "mlflow", "dvc", "numpy", "accelerate", "open_clip") if m in sys.modules]
        print(json.dumps({"v": v, "heavy": heavy}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                         cwd=REPO)
    got = json.loads(out.stdout)
    assert got["heavy"] == []
    v = got["v"]
    assert set(v) == {"torch", "torchvision", "open_clip_torch", "dvc", "mlflow", "accelerate", "numpy", "python",
                      "platform", "cuda", "cudnn"}
    import mlflow
    import torch

    assert v["mlflow"] == mlflow.__version__
    assert v["torch"] == torch.__version__
    assert v["cuda"] == (torch.version.cuda or "none")


def test_versions_report_absent_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    from ldvc import environment

    real = metadata.version

    def fake(name: str) -> str:
        if name in ("mlflow", "dvc"):
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(environment.metadata, "version", fake)
    environment._versions.cache_clear()
    try:
        v = environment.versions()
        assert v["mlflow"] == "absent" and v["dvc"] == "absent" and v["torch"] != "absent"
    finally:
        environment._versions.cache_clear()


def test_store_lock_timeout_names_the_lock(tmp_path: Path) -> None:
    from filelock import FileLock

    from ldvc.tracking import LOCK_FILE, store_lock

    holder = FileLock(str(tmp_path / LOCK_FILE))
    with holder:
        with pytest.raises(RuntimeError, match="waited 0 s for the MLflow store lock .*mlflow.db.lock"):
            with store_lock(tmp_path, timeout=0.2):
                pass
    with store_lock(tmp_path, timeout=0.2):  # free again
        pass


def test_saved_view_shows_every_setting_headline_as_the_report_stage_logs_it() -> None:
    """The report stage logs cross-dataset and open-vocabulary targets as `<section>.<target>.mIoU` (they
    have no seen/unseen partition, so no hIoU): the saved view shows them as columns, beside the
    zero-shot headline and the ablations' hIoU, and leaves the secondary numbers one click away."""
    from ldvc.tracking_ops import view_columns

    keys = {"inductive.hIoU", "inductive.pAcc", "ablation.zegclip.hIoU", "ablation.zegclip.mIoU_seen",
            "cross.shifted.mIoU", "cross.shifted.pAcc", "open_vocab.wide.mIoU", "open_vocab.wide.mIoU_novel"}
    columns = view_columns(keys)
    assert {"inductive.hIoU", "ablation.zegclip.hIoU", "cross.shifted.mIoU", "open_vocab.wide.mIoU"} <= set(columns)
    assert not {"cross.shifted.pAcc", "open_vocab.wide.mIoU_novel", "ablation.zegclip.mIoU_seen"} & set(columns)
