"""One record type for evaluation results, read from the runs/ directory or from an MLflow store.

The pipeline writes every evaluation twice (see the stage contract in the lead's dvc.yaml):
- on disk: runs/<variant>/seed<seed>/<setting>/metrics.json (+ train_log.csv, overlays/*.png);
- in MLflow: one child run per stage execution, tagged ldvc.role=stage, ldvc.stage, ldvc.variant,
  ldvc.seed, ldvc.setting, ldvc.dataset, ldvc.decoder and, for `dvc exp run` / `dvc queue`
  experiments, dvc.exp_name; metrics in percent, per_class_iou.csv as an artifact.
Both loaders return `ReportInputs` (EvalRecord + TrainCurve lists) so tables and figures are
built by one code path whatever the source.

Choices that are ours:
- Several MLflow runs for one (experiment name, variant, seed, setting, dataset) -- a stage re-run
  after a code change -- keep the most recent one; FAILED / KILLED runs are ignored.
- A run without dvc.exp_name inherits it from its parent pipeline run; runs with neither are the
  workspace's own runs (exp_name None) and make the main rows.
- Training curves from MLflow are the metric histories of train/loss, train/lr and
  train/images_per_s (bare names accepted too) of the train_* and ablation runs.
- Per-class IoU: a "per_class" list in metrics.json, else the per_class_iou.csv beside it (or the
  run's artifact), in either the contract's columns (class, iou, seen) or evaluation's (class,
  split, iou; an empty iou = class absent). A missing train_images_per_s falls back to the
  training summary's images_per_s.
"""

from __future__ import annotations

import csv
import json
import math
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

EVAL_STAGES: tuple[str, ...] = ("evaluate_inductive", "evaluate_transductive", "ablation")
TRAIN_STAGES: tuple[str, ...] = ("train_inductive", "train_transductive", "ablation")
SUMMARY_METRICS: tuple[str, ...] = ("pAcc", "mIoU", "mIoU_seen", "mIoU_unseen", "hIoU")
RECORD_METRICS: tuple[str, ...] = SUMMARY_METRICS + (
    "frag_components_pred",
    "frag_components_gt",
    "frag_small_share_pred",
    "frag_small_share_gt",
    "learnable_params",
    "total_params",
    "train_images_per_s",
)
CURVE_COLUMNS: tuple[str, ...] = ("loss", "lr", "images_per_s")
_REQUIRED_KEYS: tuple[str, ...] = ("variant", "seed", "setting", "dataset")
_SEED_DIR = re.compile(r"^seed(\d+)$")


class ReportError(ValueError):
    """Input for the reports is missing or malformed; the message names the file/run and the fix."""


@dataclass(frozen=True)
class ClassIoU:
    """Per-class IoU in percent (nan when the class is absent from both prediction and GT)."""

    name: str
    iou: float
    seen: bool


@dataclass
class EvalRecord:
    """One evaluation of one variant, seed and setting (a metrics.json or an MLflow eval run)."""

    variant: str
    seed: int
    setting: str  # inductive | transductive
    dataset: str  # synthetic | voc | coco_stuff | coco_json
    metrics: dict[str, float]  # percent for IoU/accuracy/shares; counts for params; images/s
    decoder: str = ""
    per_class: list[ClassIoU] = field(default_factory=list)
    exp_name: str | None = None  # dvc.exp_name; None = the workspace's own pipeline runs
    origin: str = ""  # file path or "mlflow:<run_id>", for error messages
    overlay_dir: Path | None = None
    start_time: float = 0.0  # ms since epoch (MLflow) or file mtime; the newest of duplicates wins
    params: dict[str, str] = field(default_factory=dict)  # flattened run params (MLflow only)

    @property
    def group(self) -> tuple[str | None, str]:
        """Rows of the tables are (experiment name, variant) groups; seeds are averaged in a group."""
        return (self.exp_name, self.variant)


@dataclass
class TrainCurve:
    """Training log of one variant/seed/setting: rows of {step, loss, lr, images_per_s}."""

    variant: str
    seed: int
    setting: str
    rows: list[dict[str, float]]
    exp_name: str | None = None
    origin: str = ""
    start_time: float = 0.0


@dataclass
class ReportInputs:
    """Everything the tables and figures are built from, plus notes on what was skipped."""

    records: list[EvalRecord]
    curves: list[TrainCurve] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Keeps MLflow artifact downloads (per-class CSVs, overlays) alive while reports are built.
    _tmp: Any = field(default=None, repr=False)


# --------------------------------------------------------------------------------------------
# runs/ directory
# --------------------------------------------------------------------------------------------


def _float(value: Any, where: str, key: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ReportError(f"{where}: '{key}' must be a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ReportError(f"{where}: '{key}' must be a number, got {value!r}") from None


def _per_class_from_rows(rows: Iterable[dict[str, Any]], where: str) -> list[ClassIoU]:
    """Entries {class, iou, seen: bool} or, as evaluation's CSV writes them, {class, iou, split:
    seen|unseen}; an empty iou cell is nan (class absent from prediction and ground truth)."""
    out = []
    for i, row in enumerate(rows):
        missing = [k for k in ("class", "iou") if k not in row]
        if missing or ("seen" not in row and "split" not in row):
            raise ReportError(f"{where}: per-class entry {i} lacks {missing or ['seen']} "
                              "(need class, iou and seen (true/false) or split (seen/unseen))")
        if "seen" in row:
            seen = row["seen"]
            if isinstance(seen, str):  # CSV cells
                if seen.strip().lower() not in ("true", "false", "1", "0"):
                    raise ReportError(f"{where}: per-class entry {i}: 'seen' must be true/false, got {seen!r}")
                seen = seen.strip().lower() in ("true", "1")
        else:
            if row["split"] not in ("seen", "unseen"):
                raise ReportError(f"{where}: per-class entry {i}: 'split' must be seen/unseen, got {row['split']!r}")
            seen = row["split"] == "seen"
        iou = math.nan if row["iou"] in ("", None) else _float(row["iou"], where, f"per_class[{i}].iou")
        out.append(ClassIoU(str(row["class"]), iou, bool(seen)))
    return out


def read_per_class_csv(path: Path) -> list[ClassIoU]:
    """per_class_iou.csv (columns class, iou, seen) -> ClassIoU list."""
    with open(path, newline="") as f:
        return _per_class_from_rows(csv.DictReader(f), str(path))


def _record_metrics(data: dict[str, Any], where: str) -> dict[str, float]:
    metrics = {k: _float(data[k], where, k) for k in RECORD_METRICS if k in data}
    # The training summary calls the throughput images_per_s; the contract name is train_images_per_s.
    if "train_images_per_s" not in metrics and "images_per_s" in data:
        metrics["train_images_per_s"] = _float(data["images_per_s"], where, "images_per_s")
    return metrics


def read_metrics_json(path: Path) -> EvalRecord:
    """runs/<variant>/seed<seed>/<setting>/metrics.json -> EvalRecord (clear error if malformed)."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: not valid JSON ({err}); re-run the evaluation that wrote it") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object of metrics, got {type(data).__name__}")
    # The directory layout names variant/seed/setting too: use it when the JSON lacks them.
    parts = Path(path).parts
    if len(parts) >= 4 and _SEED_DIR.match(parts[-3]):
        data.setdefault("variant", parts[-4])
        data.setdefault("seed", int(_SEED_DIR.match(parts[-3]).group(1)))  # type: ignore[union-attr]
        data.setdefault("setting", parts[-2])
    missing = [k for k in _REQUIRED_KEYS if k not in data]
    if missing:
        raise ReportError(f"{path}: missing {missing}; metrics.json must name {list(_REQUIRED_KEYS)}")
    where = str(path)
    metrics = _record_metrics(data, where)
    if not any(k in metrics for k in SUMMARY_METRICS):
        raise ReportError(f"{path}: none of the metrics {list(SUMMARY_METRICS)} is present")
    overlays = Path(path).parent / "overlays"
    if data.get("per_class"):
        per_class = _per_class_from_rows(data["per_class"], where)
    elif (Path(path).parent / "per_class_iou.csv").is_file():  # evaluation writes it beside metrics.json
        per_class = read_per_class_csv(Path(path).parent / "per_class_iou.csv")
    else:
        per_class = []
    return EvalRecord(
        variant=str(data["variant"]),
        seed=int(data["seed"]),
        setting=str(data["setting"]),
        dataset=str(data["dataset"]),
        metrics=metrics,
        decoder=str(data.get("decoder", "")),
        per_class=per_class,
        origin=where,
        overlay_dir=overlays if overlays.is_dir() else None,
        start_time=Path(path).stat().st_mtime * 1000.0,
    )


def read_train_log(path: Path) -> list[dict[str, float]]:
    """train_log.csv (step, loss, lr, images_per_s) -> rows sorted by step."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "step" not in reader.fieldnames:
            raise ReportError(f"{path}: a train log needs a 'step' column (got {reader.fieldnames})")
        rows = []
        for row in reader:
            out = {"step": _float(row["step"], str(path), "step")}
            for col in CURVE_COLUMNS:
                if row.get(col) not in (None, ""):
                    out[col] = _float(row[col], str(path), col)
            rows.append(out)
    return sorted(rows, key=lambda r: r["step"])


def _run_dirs(runs_dir: Path, filename: str) -> Iterator[tuple[Path, str, int, str]]:
    for path in sorted(runs_dir.glob(f"*/seed*/*/{filename}")):
        m = _SEED_DIR.match(path.parts[-3])
        if m:
            yield path, path.parts[-4], int(m.group(1)), path.parts[-2]


def curves_beside(records: Iterable[EvalRecord]) -> list[TrainCurve]:
    """The train_log.csv next to each on-disk record's metrics.json (runs/ layout)."""
    curves = []
    for r in records:
        log = Path(r.origin).parent / "train_log.csv" if r.origin and not r.origin.startswith("mlflow:") else None
        if log is not None and log.is_file():
            curves.append(TrainCurve(r.variant, r.seed, r.setting, read_train_log(log), r.exp_name, str(log),
                                     log.stat().st_mtime * 1000.0))
    return curves


def records_from_runs(runs_dir: str | Path = "runs") -> list[EvalRecord]:
    """The evaluation records of runs/ (build_reports finds their train_log.csv itself)."""
    return load_runs_dir(runs_dir).records


def load_runs_dir(runs_dir: str | Path = "runs") -> ReportInputs:
    """Every metrics.json and train_log.csv under runs/<variant>/seed<seed>/<setting>/."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise ReportError(
            f"{runs_dir}: no runs directory; run the pipeline first (dvc repro) or build from MLflow "
            "with --from-mlflow"
        )
    records = [read_metrics_json(p) for p, *_ in _run_dirs(runs_dir, "metrics.json")]
    curves = [
        TrainCurve(variant, seed, setting, read_train_log(p), origin=str(p),
                   start_time=p.stat().st_mtime * 1000.0)
        for p, variant, seed, setting in _run_dirs(runs_dir, "train_log.csv")
    ]
    return ReportInputs(records, curves)


# --------------------------------------------------------------------------------------------
# MLflow store
# --------------------------------------------------------------------------------------------


def _search_all(client: Any, experiment_id: str, filter_string: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _try_download(client: Any, run_id: str, artifact: str, dst: Path) -> Path | None:
    """Download one artifact file or directory of a run; None when the run has no such artifact."""
    parent = str(Path(artifact).parent) if "/" in artifact else None
    names = {a.path for a in client.list_artifacts(run_id, parent)}
    if artifact not in names:
        return None
    dst.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, artifact, str(dst)))


def _curve_from_history(client: Any, run: Any) -> list[dict[str, float]]:
    by_step: dict[int, dict[str, float]] = {}
    for col in CURVE_COLUMNS:
        # The train/ history first: a run may also log a one-off summary under the bare name.
        key = next((k for k in (f"train/{col}", col) if k in run.data.metrics), None)
        if key is None:
            continue
        for m in client.get_metric_history(run.info.run_id, key):
            by_step.setdefault(int(m.step), {"step": float(m.step)})[col] = float(m.value)
    # A summary metric logged once is not a curve.
    if len(by_step) < 2:
        return []
    return [by_step[s] for s in sorted(by_step)]


def load_mlflow(
    tracking_uri: str,
    experiment: str = "ldvc",
    *,
    runs_dir: str | Path | None = None,
    download_artifacts: bool = True,
    progress: bool = True,
) -> ReportInputs:
    """Every evaluation (and training-curve) run of `experiment` in the MLflow store.

    `runs_dir`: where the workspace's overlays live when a run did not log them as artifacts
    (used for runs without dvc.exp_name only; an experiment's runs/ was in its temp copy).
    """
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        if not db.is_file():  # MLflow would silently create an empty store here
            raise ReportError(
                f"no MLflow store at {db}: run the pipeline first (dvc repro) or pass --tracking-uri"
            )
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        known = sorted(e.name for e in client.search_experiments())
        raise ReportError(
            f"MLflow experiment {experiment!r} not found in {tracking_uri} (experiments there: {known}); "
            "pass --experiment or --tracking-uri"
        )
    notes: list[str] = []
    all_runs = [r for r in _search_all(client, exp.experiment_id, "")
                if r.info.status not in ("FAILED", "KILLED")]
    parent_exp = {r.info.run_id: r.data.tags.get("dvc.exp_name") for r in all_runs}
    tmp = tempfile.TemporaryDirectory(prefix="ldvc-reports-")
    records: list[EvalRecord] = []
    curves: list[TrainCurve] = []
    for run in tqdm(all_runs, desc="MLflow runs", unit="run", disable=not progress or len(all_runs) < 20):
        tags = run.data.tags
        if tags.get("ldvc.role") != "stage":
            continue
        stage = tags.get("ldvc.stage", "")
        run_id = run.info.run_id
        if stage not in EVAL_STAGES + TRAIN_STAGES:
            continue
        exp_name = tags.get("dvc.exp_name") or parent_exp.get(tags.get("mlflow.parentRunId", "")) or None
        missing = [t for t in ("ldvc.variant", "ldvc.seed", "ldvc.setting") if t not in tags]
        if missing:
            notes.append(f"MLflow run {run_id} (stage {stage}) skipped: tags {missing} missing")
            continue
        variant, setting = tags["ldvc.variant"], tags["ldvc.setting"]
        try:
            seed = int(tags["ldvc.seed"])
        except ValueError:
            notes.append(f"MLflow run {run_id} skipped: ldvc.seed {tags['ldvc.seed']!r} is not an integer")
            continue
        if stage in TRAIN_STAGES and download_artifacts:
            rows = _curve_from_history(client, run)
            if rows:
                curves.append(TrainCurve(variant, seed, setting, rows, exp_name, f"mlflow:{run_id}",
                                         float(run.info.start_time or 0)))
        if stage not in EVAL_STAGES:
            continue
        metrics = _record_metrics(run.data.metrics, f"MLflow run {run_id}")
        if not any(k in metrics for k in SUMMARY_METRICS):
            notes.append(f"MLflow run {run_id} (stage {stage}, {variant}) skipped: no evaluation metrics")
            continue
        per_class: list[ClassIoU] = []
        overlay_dir: Path | None = None
        if download_artifacts:
            dst = Path(tmp.name) / run_id
            csv_path = _try_download(client, run_id, "per_class_iou.csv", dst)
            if csv_path is not None:
                per_class = read_per_class_csv(csv_path)
            overlay_dir = _try_download(client, run_id, "overlays", dst)
        if overlay_dir is None and runs_dir is not None and exp_name is None:
            disk = Path(runs_dir) / variant / f"seed{seed}" / setting / "overlays"
            overlay_dir = disk if disk.is_dir() else None
        records.append(EvalRecord(
            variant=variant, seed=seed, setting=setting, dataset=tags.get("ldvc.dataset", "unknown"),
            metrics=metrics, decoder=tags.get("ldvc.decoder", ""), per_class=per_class,
            exp_name=exp_name, origin=f"mlflow:{run_id}", overlay_dir=overlay_dir,
            start_time=float(run.info.start_time or 0), params=dict(run.data.params),
        ))
    return ReportInputs(_latest(records, notes), _latest_curves(curves), notes, tmp)


def _latest(records: list[EvalRecord], notes: list[str]) -> list[EvalRecord]:
    """Keep the newest record per (experiment, variant, seed, setting, dataset)."""
    best: dict[tuple[Any, ...], EvalRecord] = {}
    for r in sorted(records, key=lambda r: r.start_time):
        key = (r.exp_name, r.variant, r.seed, r.setting, r.dataset)
        if key in best:
            notes.append(f"{best[key].origin} superseded by the newer {r.origin} ({r.variant}, seed {r.seed}, "
                         f"{r.setting})")
        best[key] = r
    return list(best.values())


def _latest_curves(curves: list[TrainCurve]) -> list[TrainCurve]:
    best: dict[tuple[Any, ...], TrainCurve] = {}
    for c in sorted(curves, key=lambda c: c.start_time):
        best[(c.exp_name, c.variant, c.seed, c.setting)] = c
    return list(best.values())
