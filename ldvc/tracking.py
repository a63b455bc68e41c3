"""MLflow tracking for pipeline stages: one child run per stage execution, grouped under one
parent run per pipeline run / DVC experiment.

Why it looks like this (see toolchain.md):
- The store is anchored at the repository root (`mlflow.db`, artifacts in `mlartifacts/`), found
  from DVC_ROOT when DVC runs us, so experiments that DVC runs in temporary copies
  (.dvc/tmp/exps/...) or queues land in the same store as the workspace's.
- A "pipeline run" is identified by the DVC experiment name when there is one, otherwise by the
  git commit plus a hash of the parameters: re-running stages of the same configuration files
  their runs under the same parent. The parent is found by tags, or created (and marked finished:
  children attach by id, it need not stay RUNNING).
- DVC's run-cache can restore a stage's outputs without running its command, and then no MLflow
  run is logged. We accept that deliberately: every stage writes the id of the run that produced
  its outputs into them (`mlflow_run.json`), so restored outputs still point at their run.
- Under `accelerate launch` only the main process logs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ldvc.config import Config, flatten, repo_root

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "1")


def tracking_uri(root: Path | None = None) -> str:
    return f"sqlite:///{(root or repo_root()) / 'mlflow.db'}"


def artifact_location(root: Path | None = None) -> str:
    return ((root or repo_root()) / "mlartifacts").as_uri()


def git_commit(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def params_hash(cfg: Config) -> str:
    blob = json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def pipeline_id(cfg: Config, commit: str | None = None) -> str:
    exp = os.environ.get("DVC_EXP_NAME")
    if exp:
        return f"exp:{exp}"
    return f"{(commit or git_commit())[:10]}-{params_hash(cfg)}"


def _client_and_experiment(cfg: Config):
    import mlflow
    from mlflow.tracking import MlflowClient

    root = repo_root()
    mlflow.set_tracking_uri(tracking_uri(root))
    client = MlflowClient()
    name = cfg.project.mlflow_experiment
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            exp_id = client.create_experiment(name, artifact_location=artifact_location(root))
        except Exception:  # another process created it between our lookup and create
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
    return client, exp_id


def ensure_parent_run(cfg: Config, client, exp_id: str, pid: str, commit: str) -> str:
    """The parent run of this pipeline run / DVC experiment (found by tag, else created)."""
    found = client.search_runs(
        [exp_id], filter_string=f"tags.`ldvc.role` = 'pipeline' AND tags.`ldvc.pipeline_id` = '{pid}'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    tags = {
        "ldvc.role": "pipeline",
        "ldvc.pipeline_id": pid,
        "git.commit": commit,
        "dvc.exp_name": exp_name,
        "ldvc.dataset": cfg.data.dataset,
        "mlflow.runName": exp_name or f"pipeline {pid}",
    }
    run = client.create_run(exp_id, tags=tags)
    client.log_dict(run.info.run_id, cfg.to_dict(), "params.json")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@dataclass
class StageRun:
    """What a stage logs through. A no-op on non-main processes (run_id None)."""

    run_id: str | None
    stage: str
    started: float = field(default_factory=time.perf_counter)

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if not self.active:
            return
        import mlflow

        clean = {k: float(v.item() if hasattr(v, "item") else v) for k, v in metrics.items()
                 if isinstance(v, (int, float)) or hasattr(v, "item")}
        if clean:
            mlflow.log_metrics(clean, step=step)

    def log_params(self, params: dict[str, Any]) -> None:
        if not self.active:
            return
        import mlflow

        mlflow.log_params({k: _param_str(v) for k, v in flatten(params).items()})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if not self.active:
            return
        import mlflow

        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_path or path.name)
        elif path.exists():
            mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        if self.active:
            import mlflow

            mlflow.log_dict(data, name)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.active:
            import mlflow

            mlflow.set_tags({k: str(v) for k, v in tags.items()})


def _param_str(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return s[:6000]  # MLflow's param value limit


@contextlib.contextmanager
def stage_run(stage: str, cfg: Config, tags: dict[str, Any] | None = None, main_process: bool = True,
              record_to: Path | None = None) -> Iterator[StageRun]:
    """Open the MLflow run of one stage execution (child of the pipeline's parent run).

    Logs the full flattened config as params, the tags users filter by, and the stage's wall time
    (also printed at the end of the stage log). `record_to`: a JSON file among the stage's outputs
    that receives the run id, parent id and stage, so that outputs restored by DVC's run-cache
    still name the run that produced them.
    """
    if not main_process:
        yield StageRun(None, stage)
        return
    import mlflow

    # One store lookup and one `git rev-parse` per stage, shared by the parent and the child run.
    client, exp_id = _client_and_experiment(cfg)
    commit = git_commit()
    pid = pipeline_id(cfg, commit)
    parent = ensure_parent_run(cfg, client, exp_id, pid, commit)
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    all_tags = {
        "ldvc.role": "stage",
        "ldvc.stage": stage,
        "ldvc.dataset": cfg.data.dataset,
        "ldvc.pipeline_id": pid,
        "git.commit": commit,
        "dvc.exp_name": exp_name,
        "dvc.stage": os.environ.get("DVC_STAGE", stage),
        **{k: str(v) for k, v in (tags or {}).items()},
    }
    run_name = stage + "".join(f" {tags[k]}" for k in ("ldvc.variant", "ldvc.seed") if tags and k in tags)
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, parent_run_id=parent, tags=all_tags) as run:
        handle = StageRun(run.info.run_id, stage)
        handle.log_params(cfg.to_dict())
        status = "FINISHED"
        try:
            yield handle
        except BaseException:
            status = "FAILED"
            raise
        finally:
            seconds = time.perf_counter() - handle.started
            mlflow.log_metric("stage_seconds", seconds)
            if record_to is not None and status == "FINISHED":
                write_json_atomic(Path(record_to),
                                  {"run_id": run.info.run_id, "parent_run_id": parent, "stage": stage,
                                   "tracking_uri": tracking_uri()})
            print(f"[{stage}] wall time: {seconds:.1f} s  (MLflow run {run.info.run_id})", flush=True)
            mlflow.end_run(status=status)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file beside `path`, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
