"""MLflow tracking for pipeline stages: one child run per stage execution, grouped under exactly one
parent run per pipeline run / DVC experiment, in the store MLFLOW_TRACKING_URI names (a team's
tracking server) or else the repository's own mlflow.db.

What a user sees in `mlflow ui` (MLflow 3.17) and why it is built this way:
- The store (ldvc/tracking_store.py, one resolution for every reader and writer): MLFLOW_TRACKING_URI
  when set (an `http(s)://` server, docs/team.md, or any MLflow store URI), else `mlflow.db` at the
  repository root (artifacts in `mlartifacts/`), found from DVC_ROOT when DVC runs us, so experiments
  that DVC runs in temporary copies (.dvc/tmp/exps/...) or queues land in the same store. With a
  server nothing is written to a local mlflow.db; artifacts and logged models go through the
  server's artifact proxy (`--serve-artifacts`).
- One parent per pipeline run. Its key is the DVC experiment name when there is one, otherwise the
  git commit plus a hash of the WHOLE params.yaml (resolved: defaults filled, comments ignored).
  It is not derived from a stage's own config: an ablation variant's merged config would give every
  variant its own parent. Re-running the same commit and parameters (or a DVC run-cache restore,
  which runs nothing) files into the same parent; variant, seed and setting are tags of the children.
  Stages of one pipeline run may start at once on different machines: find-or-create of the parent
  follows a rule every writer applies the same way (smallest run id wins, duplicates are merged and
  deleted, children re-parented), race-safe without any lock (ldvc/tracking_parent.py). The only
  lock left is sqlite's, for MLflow's fresh-store migrations.
- The parent is a real summary row: the flattened params.yaml as params, params.yaml itself as an
  artifact, a start time at its first stage and an end time moved forward at the end of every
  stage (so its duration spans the stages that ran), and, from the report stage, the headline
  metrics and the regenerated tables/figures (`StageRun.log_pipeline_summary`). Two DVC
  experiments therefore give two parent rows with the same metric keys, side by side.
- The experiment is tagged `mlflow.experimentKind = custom_model_development` (training, not GenAI).
  MLflow 3.17's UI does NOT decide its landing page from that tag: `mlflow/server/js` derives the
  experiment kind from a global "GenAI | Model training" switch (localStorage `mlflow.workflowType`,
  default GenAI, overridden by the URL parameter `workflowType=machine_learning`), and only older
  UIs read the tag. The UI also shows no metric column by default (selected columns: Source, Models,
  Dataset). So the experiment also carries a saved runs-table view (experiment tag
  `mlflow.sharedViewState.ldvc-pipelines`, the format of the UI's own "Views" menu) that selects the
  headline metric columns, and `experiment_ui_url()` gives the link that opens on the runs table
  with that view: one row per pipeline run (children collapsed under it) with its hIoU.
- Datasets and checkpoints are MLflow entities, not just files: `log_dataset` records a dataset
  input (name/split, digest, source; metadata only, no copy) and `log_checkpoint` a LoggedModel
  linked to the training run (the "Models" column / "Logged models"), resolvable later as
  `models:/<model_id>` or `runs:/<run_id>/<name>/<file>` (ldvc.checkpoint_uri).
- DVC's run-cache can restore a stage's outputs without running its command, and then no MLflow
  run is logged. We accept that deliberately: every stage writes the id of the run that produced
  its outputs into them (`record_to`), so restored outputs still point at their run.
- A tracking server that is down when a stage starts fails the stage before any work, naming the
  URI (every process checks it, so no DDP rank waits for a rank that failed). One that goes away
  mid-run loses nothing: every call from then on goes to a pending journal at the repository root
  (ldvc/tracking_journal.py), the stage finishes its work and its DVC outputs, exits 0 and prints
  the missing records and the command that logs them later, `ldvc mlflow-sync`. A request the
  server answers with a refusal (HTTP 4xx) is an error as before.
- Under `accelerate launch` only the main process logs; the others get a no-op handle.
- Every run carries `env.<name>` tags with the package versions (ldvc.environment).
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ldvc.config import Config, load_config, read_yaml, repo_root
from ldvc.files import sha256_file, write_json_atomic
from ldvc.tracking_journal import SYNC_COMMAND, Journal
from ldvc.tracking_ops import (
    CHECKPOINT_MODEL_TYPE,
    DEFAULT_VIEW_METRICS,
    EXPERIMENT_KIND_TAG,
    HEADLINE_FIELDS,
    MODEL_ID_TAG,
    SETTINGS,
    TRAINING_KIND,
    VIEW_KEY,
    VIEW_NAME,
    VIEW_TAG,
    Applier,
    dataset_spec,
    ensure_experiment,
    env_tags,
    experiment_ui_url,
    flat_params,
    is_transport_failure,
    model_name,
    now_ms,
    numeric,
    param_str,
    view_columns,
)
from ldvc.tracking_parent import PIPELINE_ID_TAG, ROLE_TAG
from ldvc.tracking_store import (
    ARTIFACT_DIR,
    LOCK_FILE,
    STORE_FILE,
    Store,
    StoreError,
    artifact_location,
    check_server,
    configure_http,
    redact,
    resolve_store,
    setup_lock,
    store_lock,
    tracking_uri,
)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "1")


# ---------------------------------------------------------------------------------------------- pipeline identity


def git_commit(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def params_file(cwd: Path | None = None) -> Path:
    """params.yaml of the pipeline being run: the working directory's (DVC runs stages there, also in
    experiment copies), else the repository root's."""
    here = (cwd or Path.cwd()) / "params.yaml"
    return here if here.exists() else repo_root() / "params.yaml"


def pipeline_params(path: Path) -> dict[str, Any]:
    """The whole params.yaml, resolved (validated, defaults filled) as a plain nested dict."""
    return load_config(path).to_dict()


def params_hash(params: Config | Mapping[str, Any]) -> str:
    data = params.to_dict() if isinstance(params, Config) else dict(params)
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def pipeline_id(params: Config | Mapping[str, Any], commit: str | None = None) -> str:
    """`exp:<DVC_EXP_NAME>` inside a DVC experiment, else `<commit[:10]>-<hash of the whole params>`."""
    exp = os.environ.get("DVC_EXP_NAME")
    if exp:
        return f"exp:{exp}"
    return f"{(commit or git_commit())[:10]}-{params_hash(params)}"


def dvc_lock_digest(path: str | Path, lock_file: Path = Path("dvc.lock")) -> str | None:
    """DVC's content hash of `path` as dvc.lock records it (e.g. "cdaf6...b31.dir" for a folder), or
    None when dvc.lock does not list it yet. The producing stage's `outs` entry is preferred; DVC
    writes it when that stage finishes, before the stages that depend on it run."""
    if not lock_file.exists():
        return None
    target = Path(path).as_posix().rstrip("/")
    lock = read_yaml(lock_file.read_text(), str(lock_file)) or {}
    found: str | None = None
    for stage in (lock.get("stages") or {}).values():
        for section in ("outs", "deps"):
            for entry in stage.get(section) or []:
                if str(entry.get("path", "")).rstrip("/") == target:
                    digest = entry.get("md5") or entry.get("hash")
                    if digest and section == "outs":
                        return str(digest)
                    found = found or (str(digest) if digest else None)
    return found


# ---------------------------------------------------------------------------------------------- stage run handle


def failure_reason(err: BaseException) -> str:
    """A short why for a failed call: the OS error inside MLflow's long message when there is one."""
    text = str(err) or type(err).__name__
    found = re.search(r"\[Errno -?\d+\] [^'\")\]]+", text)
    if found:
        return found.group(0).strip()
    return text.splitlines()[0][:200]


def _system_tags() -> dict[str, str]:
    """What `mlflow.start_run` would add: user, source name and type."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    source = " ".join([Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]])[:500]
    return {"mlflow.user": user, "mlflow.source.name": source, "mlflow.source.type": "LOCAL"}


@dataclass
class StageRun:
    """What a stage logs through. A no-op on non-main processes (run_id None).

    Every call is one operation of ldvc/tracking_ops.py, applied at once; after the tracking server
    has failed to answer once, the operations go to the pending journal instead (module doc)."""

    run_id: str | None
    stage: str
    parent_run_id: str | None = None
    experiment_id: str | None = None
    root: Path | None = None  # repository root (default store, pending journal)
    tags: dict[str, str] = field(default_factory=dict)
    model_ids: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    store: Store | None = None
    experiment: str = "ldvc"
    pipeline: str = ""  # the parent's key (ldvc.pipeline_id)
    ref: str = ""  # this run's stage-local reference in operations
    applier: Applier | None = None
    journal: Journal | None = None
    parent_datasets: list[dict[str, str]] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.run_id is not None or bool(self.ref)

    @property
    def offline(self) -> bool:
        """True once the store stopped answering: the rest goes to the pending journal."""
        return self.journal is not None

    # -- the one path every write takes ----------------------------------------------------------

    def _do(self, op: dict[str, Any]) -> Any:
        if self.journal is not None:
            self.journal.append(op)
            return None
        assert self.applier is not None
        try:
            return self.applier.apply(op)
        except Exception as err:
            if self.store is None or self.store.kind != "server" or not is_transport_failure(err):
                raise
            self._go_offline(err)
            self.journal.append(op)
            return None

    def _go_offline(self, err: BaseException) -> None:
        assert self.store is not None and self.applier is not None
        first = failure_reason(err)
        self.journal = Journal(self.root or repo_root(), self.store.uri, self.stage, first, self.applier.ids)
        print(f"[{self.stage}] WARNING: the MLflow server {redact(self.store.uri)} stopped answering ({first}); "
              f"the stage goes on and keeps what it would log in {self.journal.dir}", file=sys.stderr, flush=True)

    # -- child run -------------------------------------------------------------------------------

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if not self.active:
            return
        clean = {k: float(v.item() if hasattr(v, "item") else v) for k, v in metrics.items()
                 if isinstance(v, (int, float)) or hasattr(v, "item")}
        if clean:
            self._do({"op": "metrics", "run": self.ref, "metrics": clean, "step": step, "timestamp": now_ms()})

    def log_params(self, params: dict[str, Any]) -> None:
        if self.active:
            self._do({"op": "params", "run": self.ref, "params": flat_params(params)})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if not self.active:
            return
        path = Path(path)
        if path.is_dir():
            self._do({"op": "artifact", "run": self.ref, "path": str(path.resolve()),
                      "artifact_path": artifact_path or path.name})
        elif path.exists():
            self._do({"op": "artifact", "run": self.ref, "path": str(path.resolve()), "artifact_path": artifact_path})

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        if self.active:
            self._do({"op": "dict", "run": self.ref, "data": json.loads(json.dumps(data, default=str)), "name": name})

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.active:
            self._do({"op": "tags", "run": self.ref, "tags": {k: str(v) for k, v in tags.items()}})

    def log_dataset(self, name: str, digest: str, source: str | Path, split: str, context: str = "training",
                    profile: Mapping[str, Any] | None = None) -> None:
        """Record the dataset this run read as an MLflow dataset input (metadata only, no data copy).

        Shown in the UI's "Dataset" column / "Datasets used" as `<name>/<split>` with the first 12
        characters of `digest` (MLflow's digest field is short; the full digest and `profile` are in
        the dataset's profile) and a `context` badge (training / evaluation). Also recorded on the
        parent run (MLflow de-duplicates) at the end of the stage, when the parent is re-resolved,
        so the collapsed pipeline row names its data too.
        `digest`: any content hash, e.g. `dvc_lock_digest("data/prepared")`; `source`: where it lives.
        """
        if not self.active:
            return
        if not digest:
            raise ValueError(f"log_dataset({name!r}, split={split!r}): digest is empty; pass a content hash "
                             f"of the prepared data (e.g. dvc_lock_digest('data/prepared'))")
        spec = dataset_spec(name, digest, source, split, context, profile)
        self._do({"op": "dataset", "run": self.ref, "dataset": spec})
        if spec not in self.parent_datasets:
            self.parent_datasets.append(spec)

    def log_checkpoint(self, path: str | Path, name: str | None = None, step: int | None = None,
                       info: Mapping[str, Any] | None = None) -> str | None:
        """Log a training checkpoint as an MLflow LoggedModel produced by this run; returns its id
        (None when it went to the pending journal).

        The file itself (learnable weights + recorded CLIP identity, never CLIP) becomes the model's
        artifact, the run lists it under "Logged models" / the "Models" column, and it can be
        loaded later as `models:/<model_id>`, `runs:/<run_id>/<name>/<file>` or just the run id
        (`ldvc predict/evaluate --checkpoint`). `name` defaults to `<variant>-<setting>-seed<seed>`
        from the run's tags; `info` becomes the model's params (default: read from the checkpoint: its
        recorded CLIP {model, weights, sha256}, setting, step, number of classes); `step` is the
        training step it was saved at (default: the checkpoint's).
        """
        if not self.active:
            return None
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"log_checkpoint: {path} is not a file; pass the checkpoint written by "
                                    f"training (e.g. <run dir>/model.pt)")
        if info is None or step is None:
            from ldvc.train.checkpoint import load_checkpoint  # torch: a training stage has it loaded already

            ckpt = load_checkpoint(path)
            if info is None:
                info = {"clip": ckpt["clip"], "setting": ckpt.get("setting"), "step": ckpt["step"],
                        "num_classes": len(ckpt["class_names"])}
            if step is None:
                step = int(ckpt["step"])
        sha = sha256_file(path)
        tags = {k: v for k, v in self.tags.items() if k.startswith("ldvc.") and k != ROLE_TAG}
        tags.update({"ldvc.checkpoint_file": path.name, "ldvc.checkpoint_sha256": sha, "ldvc.stage": self.stage})
        op = {"op": "checkpoint", "run": self.ref, "ref": f"model-{uuid.uuid4().hex}", "experiment": self.experiment,
              "path": str(path.resolve()), "file_name": path.name, "sha256": sha,
              "name": model_name(name or self._default_model_name()), "tags": tags,
              "params": flat_params(dict(info or {})), "step": int(step or 0)}
        model_id = self._do(op)
        if model_id is not None:
            self.model_ids.append(model_id)
        return model_id

    def _default_model_name(self) -> str:
        t = self.tags
        parts = [t.get("ldvc.variant", "ldvc"), t.get("ldvc.setting", "")]
        if t.get("ldvc.seed"):
            parts.append(f"seed{t['ldvc.seed']}")
        return "-".join(p for p in parts if p)

    # -- parent ----------------------------------------------------------------------------------

    def log_pipeline_summary(self, metrics: Mapping[str, Any], artifacts: Iterable[str | Path] = ()) -> None:
        """Put the pipeline's headline results on its PARENT run (call it from the report stage).

        `metrics`: nested or flat; flattened to dotted keys, numbers only. Use the same keys in every
        pipeline run so that parents compare column by column: `inductive.{hIoU,mIoU_seen,mIoU_unseen,
        pAcc}`, `transductive.{...}`, `ablation.<variant>.hIoU` (+ more fields), `cross.<target>.hIoU`.
        Re-logging (a re-run of the report) records new values; the UI shows the latest.
        `artifacts`: files or folders (tables, figures, metrics/*.json) copied under their own name.
        The saved runs-table view gains the headline columns among these keys. The parent is the
        canonical one at this moment (re-resolved, ldvc/tracking_parent.py).
        """
        if not self.active:
            return
        paths = [Path(p) for p in artifacts]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"log_pipeline_summary: artifact(s) {missing} do not exist; pass only what the "
                                    f"report stage wrote")
        op = {"op": "summary", "run": self.ref, "experiment": self.experiment, "pid": self.pipeline,
              "metrics": numeric(metrics), "artifacts": [str(p.resolve()) for p in paths], "timestamp": now_ms()}
        parent = self._do(op)
        if parent is not None:
            self.parent_run_id = parent
            assert self.store is not None
            if self.store.kind == "server":
                where = f"open {experiment_ui_url(self.experiment_id or '0', self.store.uri)}"
            else:
                where = (f"mlflow ui --backend-store-uri {redact(self.store.uri)} --port 5000, then open "
                         f"{experiment_ui_url(self.experiment_id or '0')}")
            print(f"[{self.stage}] browse the results: {where}", flush=True)

    def finish(self, status: str, seconds: float) -> None:
        """End the run: its wall time, status and end; the parent re-resolved (tracking_parent's point 3)."""
        self.log_metrics({"stage_seconds": seconds})
        parent = self._do({"op": "end", "run": self.ref, "experiment": self.experiment, "pid": self.pipeline,
                           "status": status, "end_time": now_ms(), "parent_datasets": self.parent_datasets})
        if parent is not None:
            self.parent_run_id = parent

    def missing_report(self) -> str | None:
        """What went to the pending journal, and the command that logs it (None: nothing did)."""
        if self.journal is None:
            return None
        lines = "\n".join(f"    - {line}" for line in self.journal.summary())
        assert self.store is not None
        return (f"[{self.stage}] MLflow records NOT logged ({redact(self.store.uri)} stopped answering: "
                f"{self.journal.reason}):\n{lines}\n"
                f"[{self.stage}] the stage's outputs are complete; these records are kept in {self.journal.dir}. "
                f"Once the server is back, log them with:\n    {SYNC_COMMAND}")


# ---------------------------------------------------------------------------------------------- stage_run


def _open(store: Store, stage: str, cfg: Config, tags: dict[str, Any] | None, params_path: Path | None,
          root: Path) -> StageRun:
    """Resolve experiment, parent and child for one stage execution (tracking_ops' `open`)."""
    commit = git_commit()
    p_path: Path | None = params_path or params_file()
    if p_path.exists():
        params = pipeline_params(p_path)
    else:  # used as a library outside a pipeline checkout: the stage's own config is all there is
        params, p_path = cfg.to_dict(), None
    pid = pipeline_id(params, commit)
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    what = f"DVC experiment {exp_name}" if exp_name else f"commit {commit[:10]}, params {pid.rsplit('-', 1)[-1]}"
    parent_tags = {
        ROLE_TAG: "pipeline",
        PIPELINE_ID_TAG: pid,
        "git.commit": commit,
        "mlflow.source.git.commit": commit,
        "dvc.exp_name": exp_name,
        "ldvc.dataset": cfg.data.dataset,
        "mlflow.runName": exp_name or f"pipeline {pid}",
        "mlflow.note.content": (f"Pipeline run ({what}): one child run per stage execution; headline metrics, "
                                f"tables and figures are logged here by the report stage."),
        **_system_tags(),
        **env_tags(),
    }
    all_tags = {
        ROLE_TAG: "stage",
        "ldvc.stage": stage,
        "ldvc.dataset": cfg.data.dataset,
        PIPELINE_ID_TAG: pid,
        "git.commit": commit,
        "mlflow.source.git.commit": commit,
        "dvc.exp_name": exp_name,
        "dvc.stage": os.environ.get("DVC_STAGE", stage),
        **_system_tags(),
        **env_tags(),
        **{k: str(v) for k, v in (tags or {}).items()},
    }
    run_name = stage + "".join(f" {tags[k]}" for k in ("ldvc.variant", "ldvc.seed") if tags and k in tags)
    experiment = cfg.project.mlflow_experiment
    handle = StageRun(None, stage, root=root, tags=all_tags, store=store, experiment=experiment, pipeline=pid,
                      ref=f"run-{uuid.uuid4().hex}")
    op = {"op": "open", "ref": handle.ref, "experiment": experiment, "pid": pid,
          "parent": {"tags": parent_tags, "params": flat_params(params),
                     "params_file": str(p_path.resolve()) if p_path is not None else None},
          "child": {"name": run_name, "tags": {**all_tags, "mlflow.runName": run_name}, "start_time": now_ms(),
                    "params": flat_params(cfg.to_dict())}}
    with setup_lock(store):  # sqlite: fresh-store migrations and the experiment, one process at a time
        from mlflow.tracking import MlflowClient

        handle.applier = Applier(store, MlflowClient(store.uri))
        try:
            # errors that are the user's to fix (deleted experiment, artifacts on one machine) stop here
            handle.experiment_id = handle.applier.experiment_id(experiment)
        except StoreError:
            raise
        except Exception as err:
            if store.kind == "server" and is_transport_failure(err):
                raise StoreError(f"the MLflow tracking server {redact(store.uri)} failed while the stage started "
                                 f"({str(err).splitlines()[0][:300]}). Nothing was run; re-run the stage") from None
            raise
    opened = handle._do(op)
    if opened is not None:
        handle.run_id, handle.parent_run_id = opened["run_id"], opened["parent_run_id"]
    return handle


@contextlib.contextmanager
def stage_run(stage: str, cfg: Config, tags: dict[str, Any] | None = None, main_process: bool = True,
              record_to: Path | None = None, params_path: Path | None = None) -> Iterator[StageRun]:
    """Open the MLflow run of one stage execution (child of the pipeline's parent run).

    Logs the stage's config (`cfg`, e.g. an ablation variant's merged config) as params, the tags
    users filter by (`tags`: ldvc.variant / ldvc.seed / ldvc.setting ...), `env.*` version tags and
    the stage's wall time (`stage_seconds`, also printed at the end of the stage log).
    `record_to`: a JSON file among the stage's outputs that receives the run id, parent id, stage
    and logged model ids, so that outputs restored by DVC's run-cache still name their run.
    `params_path`: the pipeline's params.yaml (default: `params_file()`), which keys the parent.
    A tracking server that does not answer fails here, in every process, before the stage works.
    """
    root = repo_root()
    store = resolve_store(root)
    if store.kind == "server":
        configure_http()
        check_server(store.uri)
    if not main_process:
        yield StageRun(None, stage)
        return
    handle = _open(store, stage, cfg, tags, params_path, root)
    status = "FAILED"  # until the stage body returns
    try:
        yield handle
        status = "FINISHED"
    finally:
        seconds = time.perf_counter() - handle.started
        try:
            handle.finish(status, seconds)
        finally:
            if record_to is not None and status == "FINISHED":
                record = {"run_id": handle.run_id, "parent_run_id": handle.parent_run_id, "stage": stage,
                          "experiment_id": handle.experiment_id, "model_ids": handle.model_ids,
                          "tracking_uri": redact(store.uri)}
                if handle.journal is not None:
                    record["mlflow_pending"] = str(handle.journal.dir)
                write_json_atomic(Path(record_to), record)
            print(f"[{stage}] wall time: {seconds:.1f} s  (MLflow run {handle.run_id or 'not created: pending'})",
                  flush=True)
            report = handle.missing_report()
            if report is not None:
                handle.journal.close()
                print(report, file=sys.stderr, flush=True)


__all__ = [
    "ARTIFACT_DIR", "CHECKPOINT_MODEL_TYPE", "DEFAULT_VIEW_METRICS", "EXPERIMENT_KIND_TAG", "HEADLINE_FIELDS",
    "LOCK_FILE", "MODEL_ID_TAG", "PIPELINE_ID_TAG", "ROLE_TAG", "SETTINGS", "STORE_FILE", "TRAINING_KIND",
    "VIEW_KEY", "VIEW_NAME", "VIEW_TAG", "StageRun", "Store", "StoreError", "artifact_location", "dvc_lock_digest",
    "ensure_experiment", "experiment_ui_url", "git_commit", "param_str", "params_file", "pipeline_id",
    "resolve_store", "stage_run", "store_lock", "tracking_uri", "view_columns",
]
