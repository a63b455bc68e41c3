"""Every write a stage makes to MLflow, as a replayable operation (a JSON-able dict).

A stage's handle (ldvc.tracking.StageRun) builds one operation per call and applies it at once
with `Applier.apply`; when the tracking server cannot be reached, the same dict goes to the
pending journal instead (ldvc/tracking_journal.py) and `ldvc mlflow-sync` later applies it with
the same `Applier`, so what the sync logs is what the stage would have logged.

Operations (key "op"), runs named by a stage-local reference (`ref`) that the applier maps to the
run id once the run exists (`Applier.ids`; the journal stores the map):
    open        experiment (created if missing, see tracking_store), parent (tracking_parent's
                rule), child run with its tags/params     -> {experiment_id, parent_run_id, run_id}
    params / metrics / tags / dict / artifact / dataset   one call on the child run
    checkpoint  a LoggedModel with the checkpoint file and an MLmodel  -> model id
    summary     headline metrics and files on the canonical PARENT, the saved view's columns
    end         child terminated; parent re-resolved (child re-parented), the parent's datasets,
                end time and status

Also here: the experiment's "Model training" kind and saved runs-table view (why: ldvc/tracking.py).
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ldvc.config import flatten
from ldvc.environment import versions
from ldvc.tracking_parent import PARENT_TAG, attach, extend_end_time, find_or_create, tolerate_conflict
from ldvc.tracking_store import Store, StoreError, check_artifact_location, new_experiment_location, redact

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

MODEL_ID_TAG = "ldvc.model_id"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"  # the UI's "Model training" (vs genai_development)
VIEW_KEY = "ldvc-pipelines"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"  # a saved view of the runs table (UI "Views" menu)
VIEW_NAME = "ldvc pipelines"
CHECKPOINT_MODEL_TYPE = "ldvc-checkpoint"
SETTINGS = ("inductive", "transductive")
HEADLINE_FIELDS = ("hIoU", "mIoU_seen", "mIoU_unseen", "pAcc")
DEFAULT_VIEW_METRICS = [f"{s}.{f}" for s in SETTINGS for f in HEADLINE_FIELDS]
# Summary metric keys that the saved view shows as columns, in this order (others stay one click away).
_VIEW_COLUMN_PATTERNS = (
    *(re.compile(rf"^{s}\.{f}$") for s in SETTINGS for f in HEADLINE_FIELDS),
    re.compile(r"^ablation\.[^.]+\.hIoU$"),
    # cross-dataset and open-vocabulary targets have no seen/unseen partition: their headline is mIoU
    re.compile(r"^cross\.[^.]+\.(hIoU|mIoU)$"),
    re.compile(r"^open_vocab\.[^.]+\.mIoU$"),
)
MODEL_NAME_BAD = re.compile(r"[/:.%\"'\s]+")  # characters MLflow refuses in a LoggedModel name
_BATCH = 100  # MLflow's limit of params per log_batch call


def now_ms() -> int:
    return int(time.time() * 1000)


def param_str(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return s[:6000]  # MLflow's param value limit


def flat_params(params: Mapping[str, Any]) -> dict[str, str]:
    return {k: param_str(v) for k, v in flatten(dict(params)).items()}


def numeric(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten nested dicts to dotted keys and keep numbers (tensors via .item(); bools dropped)."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(numeric(v, key + "."))
            continue
        if hasattr(v, "item") and not isinstance(v, (str, bytes)):
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[key] = float(v)
    return out


def env_tags() -> dict[str, str]:
    return {f"env.{k}": v for k, v in versions().items()}


def is_transport_failure(err: BaseException) -> bool:
    """The store could not be reached (connection refused/reset, timeout, HTTP 5xx), as opposed to a
    request it answered and refused (HTTP 4xx: a bug or bad input, raised as usual)."""
    from mlflow.exceptions import MlflowException

    if isinstance(err, StoreError):
        return False
    if isinstance(err, MlflowException):
        return err.get_http_status_code() >= 500
    try:
        import requests

        if isinstance(err, requests.RequestException):
            return True
    except ImportError:  # pragma: no cover - mlflow depends on requests
        pass
    return isinstance(err, (ConnectionError, TimeoutError))


# ---------------------------------------------------------------------------------------------- saved view


def view_columns(metric_keys: Iterable[str]) -> list[str]:
    """Runs-table columns of the saved view for these summary metric keys (headline ones, ordered)."""
    keys = sorted(set(metric_keys))
    chosen: list[str] = []
    for pattern in _VIEW_COLUMN_PATTERNS:
        chosen += [k for k in keys if pattern.match(k) and k not in chosen]
    return chosen


def view_tag_value(metric_columns: list[str], created_ms: int | None = None) -> str:
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
    now = now_ms()
    return json.dumps({"name": VIEW_NAME, "createdAt": created_ms or now, "updatedAt": now,
                       "state": json.dumps(state)})


def view_metric_columns(value: str | None) -> list[str]:
    if not value:
        return []
    try:
        state = json.loads(json.loads(value)["state"])
    except (ValueError, KeyError, TypeError):
        return []
    cols = state.get("selectedColumns", [])
    return [c[len("metrics.`"):-1] for c in cols if isinstance(c, str) and c.startswith("metrics.`")]


def _view_created_ms(value: str | None) -> int | None:
    try:
        return int(json.loads(value or "")["createdAt"])
    except (ValueError, KeyError, TypeError):
        return None


def merge_view_columns(client: MlflowClient, exp_id: str, columns: list[str], tries: int = 3) -> None:
    """Add `columns` to the experiment's saved view. Read-modify-write without a lock (writers may be
    on other machines): write, re-read, and merge again if a concurrent writer dropped ours."""
    for _ in range(tries):
        old = client.get_experiment(exp_id).tags.get(VIEW_TAG)
        have = view_metric_columns(old)
        if set(columns) <= set(have):
            return
        merged = view_columns({*have, *columns})
        client.set_experiment_tag(exp_id, VIEW_TAG, view_tag_value(merged, _view_created_ms(old)))


def experiment_ui_url(experiment_id: str, base: str = "http://127.0.0.1:5000") -> str:
    """The `mlflow ui` link that opens on the runs table with the ldvc view (see ldvc/tracking.py)."""
    query = f"workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


# ---------------------------------------------------------------------------------------------- experiment


def ensure_experiment(client: MlflowClient, store: Store, name: str) -> str:
    """Id of experiment `name`: created as a model-training experiment with the saved view and an
    artifact location every writer reaches (tracking_store.new_experiment_location); an existing one
    gets the tags it lacks and must keep its artifacts where every machine reaches them."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = new_experiment_location(store, name)
        try:
            return client.create_experiment(
                name, artifact_location=location,
                tags={EXPERIMENT_KIND_TAG: TRAINING_KIND, VIEW_TAG: view_tag_value(DEFAULT_VIEW_METRICS)},
            )
        except MlflowException as err:  # another machine created it between the two calls
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise err from None
    if exp.lifecycle_stage != "active":
        raise StoreError(
            f"MLflow experiment {name!r} (id {exp.experiment_id}) in {redact(store.uri)} is deleted; restore it "
            f"(`mlflow experiments restore --experiment-id {exp.experiment_id}` with MLFLOW_TRACKING_URI set to the "
            f"store) or set project.mlflow_experiment to another name"
        )
    check_artifact_location(store, name, exp.experiment_id, exp.artifact_location)
    if EXPERIMENT_KIND_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    if VIEW_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, VIEW_TAG, view_tag_value(DEFAULT_VIEW_METRICS))
    return exp.experiment_id


def _write_mlmodel(dest: Path, model: Any, run_id: str | None, file_name: str, sha: str) -> None:
    """A minimal MLmodel file (no flavor: this is an ldvc checkpoint, loaded by `ldvc`, not pyfunc) so
    that the logged model is a well-formed MLflow model (registrable, described in the UI)."""
    from mlflow.models import Model

    Model(artifact_path=model.artifact_location, model_uuid=model.model_id, model_id=model.model_id, run_id=run_id,
          metadata={"ldvc_checkpoint": file_name, "sha256": sha,
                    "load_with": f"ldvc predict --checkpoint models:/{model.model_id} ..."}).save(str(dest))


def _dataset_input(spec: Mapping[str, Any]) -> Any:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(name=spec["name"], digest=spec["digest"], source_type="local", source=spec["source"],
                      profile=spec["profile"])
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", spec["context"]),
                                       InputTag("ldvc.split", spec["split"])])


# ---------------------------------------------------------------------------------------------- applier


class Applier:
    """Applies operations to one store; `ids` maps stage-local references to MLflow ids."""

    def __init__(self, store: Store, client: MlflowClient | None = None, ids: dict[str, str] | None = None) -> None:
        if client is None:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(store.uri)
        self.store = store
        self.client = client
        self.ids: dict[str, str] = {} if ids is None else ids
        self._experiments: dict[str, str] = {}
        self.parents: dict[str, str] = {}  # run ref -> the canonical parent last seen

    def run_id(self, ref: str) -> str:
        return self.ids.get(ref, ref)

    def experiment_id(self, name: str) -> str:
        if name not in self._experiments:
            self._experiments[name] = ensure_experiment(self.client, self.store, name)
        return self._experiments[name]

    def apply(self, op: Mapping[str, Any]) -> Any:
        handler = getattr(self, f"_op_{op['op']}", None)
        if handler is None:
            raise ValueError(f"unknown MLflow operation {op['op']!r} (a journal written by a newer ldvc?)")
        return handler(op)

    # -- run lifecycle -------------------------------------------------------------------------

    def _op_open(self, op: Mapping[str, Any]) -> dict[str, str]:
        client, pid = self.client, op["pid"]
        exp_id = self.experiment_id(op["experiment"])
        parent_spec = op["parent"]

        def create() -> str:
            run = client.create_run(exp_id, start_time=op["child"]["start_time"], tags=parent_spec["tags"])
            self._log_params(run.info.run_id, parent_spec["params"])
            if parent_spec.get("params_file") and Path(parent_spec["params_file"]).is_file():
                client.log_artifact(run.info.run_id, parent_spec["params_file"])
            return run.info.run_id

        parent = find_or_create(client, exp_id, pid, create)
        client.update_run(parent, status="RUNNING")
        child = op["child"]
        run_id = self.ids.get(op["ref"])
        if run_id is None:  # (a replay of an `open` that failed after creating the run reuses that run)
            run = client.create_run(exp_id, start_time=child["start_time"],
                                    tags={**child["tags"], PARENT_TAG: parent}, run_name=child["name"])
            run_id = run.info.run_id
            self.ids[op["ref"]] = run_id
        parent = attach(client, exp_id, pid, run_id, parent)  # point 2 of tracking_parent's rule
        self.parents[op["ref"]] = parent
        self._log_params(run_id, child["params"])
        return {"experiment_id": exp_id, "parent_run_id": parent, "run_id": run_id}

    def _op_end(self, op: Mapping[str, Any]) -> str:
        client, run_id = self.client, self.run_id(op["run"])
        exp_id = self.experiment_id(op["experiment"])
        client.set_terminated(run_id, status=op["status"], end_time=op["end_time"])
        current = client.get_run(run_id).data.tags.get(PARENT_TAG)
        parent = attach(client, exp_id, op["pid"], run_id, current, adopt=True)  # point 3
        datasets = [_dataset_input(d) for d in op.get("parent_datasets", [])]
        if datasets:  # stages ending at once log the same dataset to the parent: tolerate the collision
            tolerate_conflict(client.log_inputs, parent, datasets=datasets)
        extend_end_time(client, parent, int(op["end_time"]), op["status"])
        self.parents[op["run"]] = parent
        return parent

    # -- child run -----------------------------------------------------------------------------

    def _log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = sorted(params.items())
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(run_id, params=[Param(k, v) for k, v in items[i:i + _BATCH]])

    def _op_params(self, op: Mapping[str, Any]) -> None:
        self._log_params(self.run_id(op["run"]), op["params"])

    def _op_metrics(self, op: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        step = int(op.get("step") or 0)
        metrics = [Metric(k, float(v), int(op["timestamp"]), step) for k, v in sorted(op["metrics"].items())]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id(op["run"]), metrics=metrics[i:i + 1000])

    def _op_tags(self, op: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        tags = [RunTag(k, str(v)) for k, v in sorted(op["tags"].items())]
        if tags:
            self.client.log_batch(self.run_id(op["run"]), tags=tags)

    def _op_dict(self, op: Mapping[str, Any]) -> None:
        self.client.log_dict(self.run_id(op["run"]), op["data"], op["name"])

    def _op_artifact(self, op: Mapping[str, Any]) -> None:
        path = Path(op["path"])
        if path.is_dir():
            self.client.log_artifacts(self.run_id(op["run"]), str(path), artifact_path=op.get("artifact_path"))
        elif path.is_file():
            self.client.log_artifact(self.run_id(op["run"]), str(path), artifact_path=op.get("artifact_path"))
        else:
            raise FileNotFoundError(f"{path}: the file to log as an artifact is gone")

    def _op_dataset(self, op: Mapping[str, Any]) -> None:
        self.client.log_inputs(self.run_id(op["run"]), datasets=[_dataset_input(op["dataset"])])

    def _op_checkpoint(self, op: Mapping[str, Any]) -> str:
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus

        client, run_id = self.client, self.run_id(op["run"])
        exp_id = self.experiment_id(op["experiment"])
        if op["ref"] in self.ids:  # a replay of an upload that was cut: finish that model, not a second one
            model = client.get_logged_model(self.ids[op["ref"]])
        else:
            model = client.create_logged_model(exp_id, name=op["name"], source_run_id=run_id, tags=op["tags"],
                                               params=op["params"] or None, model_type=CHECKPOINT_MODEL_TYPE)
            self.ids[op["ref"]] = model.model_id
        try:
            client.log_model_artifact(model.model_id, op["path"])
            with tempfile.TemporaryDirectory() as tmp:
                mlmodel = Path(tmp) / "MLmodel"
                _write_mlmodel(mlmodel, model, run_id, op["file_name"], op["sha256"])
                client.log_model_artifact(model.model_id, str(mlmodel))
            client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=int(op["step"]))])
        except BaseException as err:
            if not is_transport_failure(err):  # a cut upload stays PENDING: the replay finishes it
                client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
            raise
        client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        client.set_tag(run_id, MODEL_ID_TAG, model.model_id)
        return model.model_id

    # -- parent --------------------------------------------------------------------------------

    def _op_summary(self, op: Mapping[str, Any]) -> str:
        from mlflow.entities import Metric

        client, run_id = self.client, self.run_id(op["run"])
        exp_id = self.experiment_id(op["experiment"])
        current = client.get_run(run_id).data.tags.get(PARENT_TAG)
        parent = attach(client, exp_id, op["pid"], run_id, current)
        ts = int(op["timestamp"])
        flat = op["metrics"]
        if flat:
            metrics = [Metric(k, float(v), ts, 0) for k, v in sorted(flat.items())]
            for i in range(0, len(metrics), 1000):
                client.log_batch(parent, metrics=metrics[i:i + 1000])
        for p in map(Path, op["artifacts"]):
            if p.is_dir():
                client.log_artifacts(parent, str(p), artifact_path=p.name)
            elif p.is_file():
                client.log_artifact(parent, str(p))
        client.set_tag(parent, "ldvc.summary_run_id", run_id)
        columns = view_columns(flat)
        if columns:
            merge_view_columns(client, exp_id, columns)
        self.parents[op["run"]] = parent
        return parent


def dataset_spec(name: str, digest: str, source: str | Path, split: str, context: str,
                 profile: Mapping[str, Any] | None) -> dict[str, str]:
    """The JSON form of a dataset input (see StageRun.log_dataset)."""
    return {"name": f"{name}/{split}", "digest": str(digest)[:12], "source": json.dumps({"uri": str(source)}),
            "profile": json.dumps({"split": split, "digest": str(digest), **dict(profile or {})}, default=str),
            "context": context, "split": split}


def model_name(name: str) -> str:
    return MODEL_NAME_BAD.sub("_", name).strip("_") or "checkpoint"


__all__ = [
    "Applier", "CHECKPOINT_MODEL_TYPE", "DEFAULT_VIEW_METRICS", "EXPERIMENT_KIND_TAG", "MODEL_ID_TAG", "TRAINING_KIND",
    "VIEW_KEY", "VIEW_NAME", "VIEW_TAG", "dataset_spec", "ensure_experiment", "env_tags", "experiment_ui_url",
    "flat_params", "is_transport_failure", "merge_view_columns", "model_name", "now_ms", "numeric", "param_str",
    "view_columns", "view_metric_columns", "view_tag_value",
]
