"""MLflow tracking for pipeline stages: one child run per stage execution, grouped under exactly one
parent run per pipeline run / DVC experiment, in a store anchored at the repository root.

What a user sees in `mlflow ui` (MLflow 3.17) and why it is built this way:
- The store is `mlflow.db` at the repository root (artifacts in `mlartifacts/`), found from
  DVC_ROOT when DVC runs us, so experiments that DVC runs in temporary copies (.dvc/tmp/exps/...)
  or queues land in the same store as the workspace's.
- One parent per pipeline run. Its key is the DVC experiment name when there is one, otherwise the
  git commit plus a hash of the WHOLE params.yaml (resolved: defaults filled, comments ignored).
  It is not derived from a stage's own config: an ablation variant's merged config would give every
  variant its own parent. Re-running the same commit and parameters (or a DVC run-cache restore,
  which runs nothing) files into the same parent; variant, seed and setting are tags of the children.
- The parent is a real summary row: the flattened params.yaml as params, params.yaml itself as an
  artifact, a start time at its first stage and an end time moved forward at the end of every
  stage (so its duration spans the stages that ran), and, from the report stage, the headline
  metrics and the regenerated tables/figures (`StageRun.log_pipeline_summary`). Two DVC
  experiments therefore give two parent rows with the same metric keys, side by side.
- Store creation, experiment creation and find-or-create of the parent run under a file lock next
  to mlflow.db: several processes creating a FRESH sqlite store at once crash in MLflow's schema
  migrations, and two processes could each create a parent. Once those exist, parallel writers
  are fine, so the child runs are written without the lock.
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
- Under `accelerate launch` only the main process logs; the others get a no-op handle.
- Every run carries `env.<name>` tags with the package versions (ldvc.environment).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ldvc.config import Config, flatten, load_config, read_yaml, repo_root
from ldvc.environment import versions
from ldvc.files import sha256_file, write_json_atomic

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "1")

STORE_FILE = "mlflow.db"
LOCK_FILE = "mlflow.db.lock"  # next to the store; holds no data (filelock keeps the file)
ARTIFACT_DIR = "mlartifacts"
LOCK_TIMEOUT_S = 600.0  # a stage waits this long for another process's store setup

ROLE_TAG = "ldvc.role"
PIPELINE_ID_TAG = "ldvc.pipeline_id"
MODEL_ID_TAG = "ldvc.model_id"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"  # the UI's "Model training" (vs genai_development)
VIEW_KEY = "ldvc-pipelines"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"  # a saved view of the runs table (UI "Views" menu)
VIEW_NAME = "ldvc pipelines"
CHECKPOINT_MODEL_TYPE = "ldvc-checkpoint"
SETTINGS = ("inductive", "transductive")
HEADLINE_FIELDS = ("hIoU", "mIoU_seen", "mIoU_unseen", "pAcc")
# Summary metric keys that the saved view shows as columns, in this order (others stay one click away).
_VIEW_COLUMN_PATTERNS = (
    *(re.compile(rf"^{s}\.{f}$") for s in SETTINGS for f in HEADLINE_FIELDS),
    re.compile(r"^cross\.[^.]+\.hIoU$"),
    re.compile(r"^ablation\.[^.]+\.hIoU$"),
)
_MODEL_NAME_BAD = re.compile(r"[/:.%\"'\s]+")  # characters MLflow refuses in a LoggedModel name


# ---------------------------------------------------------------------------------------------- store


def tracking_uri(root: Path | None = None) -> str:
    return f"sqlite:///{(root or repo_root()) / STORE_FILE}"


def artifact_location(root: Path | None = None) -> str:
    return ((root or repo_root()) / ARTIFACT_DIR).as_uri()


@contextlib.contextmanager
def store_lock(root: Path | None = None, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the inter-process lock that serialises store/experiment/parent creation (module doc).

    An OS file lock (flock): a process that dies releases it, so a leftover lock file is harmless.
    """
    from filelock import FileLock, Timeout  # ships with torch; imported here to keep `import ldvc.tracking` light

    root = root or repo_root()
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root / LOCK_FILE), timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise RuntimeError(f"waited {timeout:.0f} s for the MLflow store lock {root / LOCK_FILE}, held by another "
                           f"process (`fuser {root / LOCK_FILE}` names it); a stage stuck inside MLflow? stop it "
                           f"and re-run") from None
    try:
        yield
    finally:
        lock.release()


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


def _now_ms() -> int:
    return int(time.time() * 1000)


def _param_str(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return s[:6000]  # MLflow's param value limit


def _numeric(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten nested dicts to dotted keys and keep numbers (tensors via .item(); bools dropped)."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_numeric(v, key + "."))
            continue
        if hasattr(v, "item") and not isinstance(v, (str, bytes)):
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[key] = float(v)
    return out


def env_tags() -> dict[str, str]:
    return {f"env.{k}": v for k, v in versions().items()}


# ---------------------------------------------------------------------------------------------- experiment


def view_columns(metric_keys: Iterable[str]) -> list[str]:
    """Runs-table columns of the saved view for these summary metric keys (headline ones, ordered)."""
    keys = sorted(set(metric_keys))
    chosen: list[str] = []
    for pattern in _VIEW_COLUMN_PATTERNS:
        chosen += [k for k in keys if pattern.match(k) and k not in chosen]
    return chosen


def _view_tag_value(metric_columns: list[str], created_ms: int | None = None) -> str:
    """A saved view in the envelope the 3.17 UI writes for its "Views" menu: {name, createdAt,
    updatedAt, state}, state = JSON of the runs-table state (uncompressed JSON is accepted)."""
    metrics = [f"metrics.`{k}`" for k in metric_columns]
    attributes = ["attributes.`Dataset`", "attributes.`Models`"]  # the UI's defaults minus Source
    state = {
        "selectedColumns": attributes + metrics,
        # ag-grid column ids; the headline metrics right after the run name/date/duration, in our
        # order (the UI would sort them alphabetically: ablation.* first, inductive.hIoU off-screen)
        "columnOrder": ["attributes.`Run Name`", "runDateAndNestInfo", "duration", *metrics, *attributes],
        "columnWidths": {m: min(200, 40 + 7 * len(k)) for m, k in zip(metrics, metric_columns)},
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
    }
    now = _now_ms()
    return json.dumps({"name": VIEW_NAME, "createdAt": created_ms or now, "updatedAt": now,
                       "state": json.dumps(state)})


def _view_metric_columns(value: str | None) -> list[str]:
    if not value:
        return []
    try:
        state = json.loads(json.loads(value)["state"])
    except (ValueError, KeyError, TypeError):
        return []
    cols = state.get("selectedColumns", [])
    return [c[len("metrics.`"):-1] for c in cols if isinstance(c, str) and c.startswith("metrics.`")]


DEFAULT_VIEW_METRICS = [f"{s}.{f}" for s in SETTINGS for f in HEADLINE_FIELDS]


def ensure_experiment(client: MlflowClient, name: str, root: Path) -> str:
    """Id of experiment `name` (created as a model-training experiment with the saved view; an
    existing one gets the tags it lacks). Call under `store_lock`."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(
            name, artifact_location=artifact_location(root),
            tags={EXPERIMENT_KIND_TAG: TRAINING_KIND, VIEW_TAG: _view_tag_value(DEFAULT_VIEW_METRICS)},
        )
    if exp.lifecycle_stage != "active":
        raise RuntimeError(
            f"MLflow experiment {name!r} (id {exp.experiment_id}) in {tracking_uri(root)} is deleted; restore it "
            f"(`mlflow experiments restore --experiment-id {exp.experiment_id}` with MLFLOW_TRACKING_URI set to the "
            f"store) or set project.mlflow_experiment to another name"
        )
    if EXPERIMENT_KIND_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    if VIEW_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, VIEW_TAG, _view_tag_value(DEFAULT_VIEW_METRICS))
    return exp.experiment_id


def experiment_ui_url(experiment_id: str, base: str = "http://127.0.0.1:5000") -> str:
    """The `mlflow ui` link that opens on the runs table with the ldvc view (see the module doc)."""
    query = f"workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def ensure_parent_run(client: MlflowClient, exp_id: str, pid: str, commit: str, params: Mapping[str, Any],
                      params_path: Path | None = None, dataset: str = "") -> str:
    """The parent run of pipeline `pid` (found by tag, else created with the params). Call under
    `store_lock` so that concurrent first stages create one parent, not several."""
    from mlflow.entities import Param, ViewType

    found = client.search_runs(
        [exp_id], filter_string=f"tags.`{ROLE_TAG}` = 'pipeline' AND tags.`{PIPELINE_ID_TAG}` = '{pid}'",
        run_view_type=ViewType.ACTIVE_ONLY, max_results=1, order_by=["attributes.start_time ASC"],
    )
    if found:
        return found[0].info.run_id
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    what = f"DVC experiment {exp_name}" if exp_name else f"commit {commit[:10]}, params {pid.rsplit('-', 1)[-1]}"
    tags = {
        ROLE_TAG: "pipeline",
        PIPELINE_ID_TAG: pid,
        "git.commit": commit,
        "mlflow.source.git.commit": commit,
        "dvc.exp_name": exp_name,
        "ldvc.dataset": dataset,
        "mlflow.runName": exp_name or f"pipeline {pid}",
        "mlflow.note.content": (f"Pipeline run ({what}): one child run per stage execution; headline metrics, "
                                f"tables and figures are logged here by the report stage."),
        **env_tags(),
    }
    run = client.create_run(exp_id, start_time=_now_ms(), tags=tags)
    run_id = run.info.run_id
    client.log_batch(run_id, params=[Param(k, _param_str(v)) for k, v in sorted(flatten(dict(params)).items())])
    if params_path is not None and params_path.exists():
        client.log_artifact(run_id, str(params_path))
    return run_id


# ---------------------------------------------------------------------------------------------- stage run handle


@dataclass
class StageRun:
    """What a stage logs through. A no-op on non-main processes (run_id None)."""

    run_id: str | None
    stage: str
    parent_run_id: str | None = None
    experiment_id: str | None = None
    root: Path | None = None  # repository root holding the store
    tags: dict[str, str] = field(default_factory=dict)
    model_ids: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def _client(self) -> MlflowClient:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri(self.root))

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

    def log_dataset(self, name: str, digest: str, source: str | Path, split: str, context: str = "training",
                    profile: Mapping[str, Any] | None = None) -> None:
        """Record the dataset this run read as an MLflow dataset input (metadata only, no data copy).

        Shown in the UI's "Dataset" column / "Datasets used" as `<name>/<split>` with the first 12
        characters of `digest` (MLflow's digest field is short; the full digest and `profile` are in
        the dataset's profile) and a `context` badge (training / evaluation). Also recorded on the
        parent run (MLflow de-duplicates), so the collapsed pipeline row names its data too.
        `digest`: any content hash, e.g. `dvc_lock_digest("data/prepared")`; `source`: where it lives.
        """
        if not self.active:
            return
        if not digest:
            raise ValueError(f"log_dataset({name!r}, split={split!r}): digest is empty; pass a content hash "
                             f"of the prepared data (e.g. dvc_lock_digest('data/prepared'))")
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            name=f"{name}/{split}", digest=str(digest)[:12], source_type="local",
            source=json.dumps({"uri": str(source)}),
            profile=json.dumps({"split": split, "digest": str(digest), **dict(profile or {})}, default=str),
        )
        inp = DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context), InputTag("ldvc.split", split)])
        client = self._client()
        for run_id in filter(None, (self.run_id, self.parent_run_id)):
            client.log_inputs(run_id, datasets=[inp])

    def log_checkpoint(self, path: str | Path, name: str | None = None, step: int | None = None,
                       info: Mapping[str, Any] | None = None) -> str | None:
        """Log a training checkpoint as an MLflow LoggedModel produced by this run; returns its id.

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
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus

        if info is None or step is None:
            from ldvc.train.checkpoint import load_checkpoint  # torch: a training stage has it loaded already

            ckpt = load_checkpoint(path)
            if info is None:
                info = {"clip": ckpt["clip"], "setting": ckpt.get("setting"), "step": ckpt["step"],
                        "num_classes": len(ckpt["class_names"])}
            if step is None:
                step = int(ckpt["step"])
        client = self._client()
        model_name = _MODEL_NAME_BAD.sub("_", name or self._default_model_name()).strip("_") or "checkpoint"
        sha = sha256_file(path)
        tags = {k: v for k, v in self.tags.items() if k.startswith("ldvc.") and k != ROLE_TAG}
        tags.update({"ldvc.checkpoint_file": path.name, "ldvc.checkpoint_sha256": sha, "ldvc.stage": self.stage})
        params = {k: _param_str(v) for k, v in flatten(dict(info or {})).items()}
        model = client.create_logged_model(self.experiment_id, name=model_name, source_run_id=self.run_id,
                                           tags=tags, params=params or None, model_type=CHECKPOINT_MODEL_TYPE)
        try:
            client.log_model_artifact(model.model_id, str(path))
            with tempfile.TemporaryDirectory() as tmp:
                mlmodel = Path(tmp) / "MLmodel"
                _write_mlmodel(mlmodel, model, self.run_id, path.name, sha)
                client.log_model_artifact(model.model_id, str(mlmodel))
            client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, step=int(step or 0))])
        except BaseException:
            client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
            raise
        client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        client.set_tag(self.run_id, MODEL_ID_TAG, model.model_id)
        self.model_ids.append(model.model_id)
        return model.model_id

    def _default_model_name(self) -> str:
        t = self.tags
        parts = [t.get("ldvc.variant", "ldvc"), t.get("ldvc.setting", "")]
        if t.get("ldvc.seed"):
            parts.append(f"seed{t['ldvc.seed']}")
        return "-".join(p for p in parts if p)

    def log_pipeline_summary(self, metrics: Mapping[str, Any], artifacts: Iterable[str | Path] = ()) -> None:
        """Put the pipeline's headline results on its PARENT run (call it from the report stage).

        `metrics`: nested or flat; flattened to dotted keys, numbers only. Use the same keys in every
        pipeline run so that parents compare column by column: `inductive.{hIoU,mIoU_seen,mIoU_unseen,
        pAcc}`, `transductive.{...}`, `ablation.<variant>.hIoU` (+ more fields), `cross.<target>.hIoU`.
        Re-logging (a re-run of the report) records new values; the UI shows the latest.
        `artifacts`: files or folders (tables, figures, metrics/*.json) copied under their own name.
        The saved runs-table view gains the headline columns among these keys.
        """
        if not self.active or self.parent_run_id is None:
            return
        from mlflow.entities import Metric

        paths = [Path(p) for p in artifacts]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"log_pipeline_summary: artifact(s) {missing} do not exist; pass only what the "
                                    f"report stage wrote")
        flat = _numeric(metrics)
        client = self._client()
        ts = _now_ms()
        if flat:
            client.log_batch(self.parent_run_id, metrics=[Metric(k, v, ts, 0) for k, v in sorted(flat.items())])
        for p in paths:
            if p.is_dir():
                client.log_artifacts(self.parent_run_id, str(p), artifact_path=p.name)
            else:
                client.log_artifact(self.parent_run_id, str(p))
        client.set_tag(self.parent_run_id, "ldvc.summary_run_id", str(self.run_id))
        columns = view_columns(flat)
        if columns and self.experiment_id is not None:
            with store_lock(self.root):  # read-modify-write of the experiment's view (several reports may run)
                exp = client.get_experiment(self.experiment_id)
                old = exp.tags.get(VIEW_TAG)
                merged = view_columns({*_view_metric_columns(old), *columns})
                created = _view_created_ms(old)
                client.set_experiment_tag(self.experiment_id, VIEW_TAG, _view_tag_value(merged, created))
        print(f"[{self.stage}] browse the results: mlflow ui --backend-store-uri {tracking_uri(self.root)} "
              f"--port 5000, then open {experiment_ui_url(self.experiment_id or '0')}", flush=True)


def _view_created_ms(value: str | None) -> int | None:
    try:
        return int(json.loads(value or "")["createdAt"])
    except (ValueError, KeyError, TypeError):
        return None


def _write_mlmodel(dest: Path, model: Any, run_id: str | None, file_name: str, sha: str) -> None:
    """A minimal MLmodel file (no flavor: this is an ldvc checkpoint, loaded by `ldvc`, not pyfunc) so
    that the logged model is a well-formed MLflow model (registrable, described in the UI)."""
    from mlflow.models import Model

    Model(artifact_path=model.artifact_location, model_uuid=model.model_id, model_id=model.model_id, run_id=run_id,
          metadata={"ldvc_checkpoint": file_name, "sha256": sha,
                    "load_with": f"ldvc predict --checkpoint models:/{model.model_id} ..."}).save(str(dest))


# ---------------------------------------------------------------------------------------------- stage_run


def _finish_parent(client: MlflowClient, root: Path, parent: str, status: str) -> None:
    """Move the parent's end time to now (never backwards: stages may finish out of order)."""
    with store_lock(root):
        info = client.get_run(parent).info
        end = max(int(info.end_time or 0), _now_ms())
        client.set_terminated(parent, status=status, end_time=end)


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
    """
    if not main_process:
        yield StageRun(None, stage)
        return
    import mlflow
    from mlflow.tracking import MlflowClient

    root = repo_root()
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    commit = git_commit()
    p_path: Path | None = params_path or params_file()
    if p_path.exists():
        params = pipeline_params(p_path)
    else:  # used as a library outside a pipeline checkout: the stage's own config is all there is
        params, p_path = cfg.to_dict(), None
    pid = pipeline_id(params, commit)
    with store_lock(root):  # fresh-store migrations, experiment and parent: one process at a time
        client = MlflowClient(uri)
        exp_id = ensure_experiment(client, cfg.project.mlflow_experiment, root)
        parent = ensure_parent_run(client, exp_id, pid, commit, params, p_path, cfg.data.dataset)
    client.update_run(parent, status="RUNNING")
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    all_tags = {
        ROLE_TAG: "stage",
        "ldvc.stage": stage,
        "ldvc.dataset": cfg.data.dataset,
        PIPELINE_ID_TAG: pid,
        "git.commit": commit,
        "dvc.exp_name": exp_name,
        "dvc.stage": os.environ.get("DVC_STAGE", stage),
        **env_tags(),
        **{k: str(v) for k, v in (tags or {}).items()},
    }
    run_name = stage + "".join(f" {tags[k]}" for k in ("ldvc.variant", "ldvc.seed") if tags and k in tags)
    status = "FAILED"  # until the stage body returns
    try:
        with mlflow.start_run(experiment_id=exp_id, run_name=run_name, parent_run_id=parent, tags=all_tags) as run:
            handle = StageRun(run.info.run_id, stage, parent, exp_id, root, all_tags)
            try:
                handle.log_params(cfg.to_dict())
                yield handle
                status = "FINISHED"
            finally:
                seconds = time.perf_counter() - handle.started
                mlflow.log_metric("stage_seconds", seconds)
                if record_to is not None and status == "FINISHED":
                    write_json_atomic(Path(record_to),
                                      {"run_id": run.info.run_id, "parent_run_id": parent, "stage": stage,
                                       "experiment_id": exp_id, "model_ids": handle.model_ids,
                                       "tracking_uri": uri})
                print(f"[{stage}] wall time: {seconds:.1f} s  (MLflow run {run.info.run_id})", flush=True)
                mlflow.end_run(status=status)
    finally:
        _finish_parent(client, root, parent, status)


__all__ = [
    "StageRun", "dvc_lock_digest", "ensure_experiment", "ensure_parent_run", "experiment_ui_url", "git_commit",
    "params_file", "pipeline_id", "stage_run", "store_lock", "tracking_uri",
]
