"""One record type for evaluation results, read from the runs/ directory or from an MLflow store.

The pipeline writes every evaluation twice (see the stage contract in dvc.yaml):
- on disk: runs/<variant>/seed<seed>/<setting>/metrics.json (+ train_log.csv, overlays/*.png),
  setting inductive | transductive | fully_supervised, runs/cross/<target>/seed<seed>/
  metrics.json for the cross-dataset evaluations (setting "cross") and
  runs/open_vocab/<target>/seed<seed>/metrics.json for the open-vocabulary ones (setting
  "open_vocab": the every-class variant open_vocab.model on another vocabulary);
- in MLflow: one child run per stage execution (evaluate_inductive, evaluate_transductive,
  evaluate_cross, evaluate_open_vocab, ablation), tagged ldvc.role=stage, ldvc.stage, ldvc.variant,
  ldvc.seed, ldvc.setting, ldvc.dataset, ldvc.decoder, ldvc.protocol, ldvc.protocol_conformant,
  ldvc.protocol_deviations, ldvc.cross_target / ldvc.open_vocab_target, ldvc.target_dataset and, for
  `dvc exp run` / `dvc queue` experiments, dvc.exp_name; metrics in percent; metrics.json and
  per_class_iou.csv as artifacts. A target record (cross, open_vocab) names its target in
  `cross_target`; an open-vocabulary record lists the target classes never in its model's training
  vocabulary (`novel_classes`; per_class_iou.csv marks them "unseen").
Every metrics.json is self-describing (ldvc.pipeline.annotate_metrics): protocol name and
conformance, the deviating keys, the evaluated checkpoint's decoder and whether it was imported,
the vocabulary, calibration, evaluation speed and device. Both loaders return `ReportInputs`
(EvalRecord + TrainCurve lists) so tables and figures are built by one code path whatever the source.

Choices that are ours:
- Several MLflow runs for one (experiment name, variant, seed, setting, dataset) -- a stage re-run
  after a code change -- keep the most recent one; FAILED / KILLED runs are ignored.
- A run without dvc.exp_name inherits it from its parent pipeline run; runs with neither are the
  workspace's own runs (exp_name None) and make the main rows.
- Training curves from MLflow are the metric histories of train/loss, train/lr and
  train/images_per_s (bare names accepted too) of the train_* and ablation runs.
- Per-class IoU: a "per_class" list in metrics.json, else the per_class_iou.csv beside it (or the
  run's artifact), in either the contract's columns (class, iou, seen) or evaluation's (class,
  split, iou; an empty iou = class absent).
- `images_per_s`: in a metrics.json that records the evaluation (`eval_seconds` present) it is the
  EVALUATION speed (-> eval_images_per_s); in an older one it was the training summary's speed and
  fills a missing train_images_per_s. MLflow: `eval/images_per_s` when logged, else the same rule.
- An MLflow record's metrics are the run's logged metrics, completed by its metrics.json artifact;
  its identity (decoder, imported, vocabulary, protocol, dataset, device) is read from that
  artifact when the run logged one, else from tags and params: the
  ldvc.decoder tag is the stage CONFIG's decoder, while an imported ZegCLIP checkpoint evaluated in
  the "ldvc" variant is a zegclip model, which only metrics.json says; the ldvc.dataset tag of a
  cross run is the SOURCE dataset (the target's label is rebuilt from the run's cross_dataset params).
- Protocol status (`protocol_status`): "conformant", "deviating" or "unknown" (a record without
  protocol fields). A fully supervised or open-vocabulary record's `split.unseen` deviation is the
  definition of the setting (every class seen in training), not drift: it is left out; its other
  deviations still count.
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

EVAL_STAGES: tuple[str, ...] = ("evaluate_inductive", "evaluate_transductive", "evaluate_cross",
                                "evaluate_open_vocab", "ablation")
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
    "eval_images_per_s",
    "eval_seconds",
    "num_images",
    "num_classes",  # target evaluations: the target's vocabulary and how much of it the model was trained on
    "num_training_classes",
    "num_novel_classes",
)
PROTOCOL_STATUSES: tuple[str, ...] = ("conformant", "deviating", "unknown")
CROSS_DIR = "cross"  # runs/cross/<target>/seed<s>/: the cross-dataset evaluations
OPEN_VOCAB_DIR = "open_vocab"  # runs/open_vocab/<target>/seed<s>/: the open-vocabulary evaluations
TARGET_DIRS: dict[str, str] = {CROSS_DIR: "cross", OPEN_VOCAB_DIR: "open_vocab"}  # runs/ folder -> setting
TARGET_SETTINGS: tuple[str, ...] = tuple(TARGET_DIRS.values())
TARGET_TAGS: tuple[str, ...] = ("ldvc.cross_target", "ldvc.open_vocab_target")
# A fully supervised run trains on every class by definition, as does the model of an open-vocabulary
# evaluation: this deviation is the setting itself.
SETTING_DEVIATIONS: dict[str, tuple[str, ...]] = {"fully_supervised": ("split.unseen",),
                                                  "open_vocab": ("split.unseen",)}
_DEVIATION_ENTRY = re.compile(r"(?:^|, )([A-Za-z_][\w.*-]*)=")
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
    setting: str  # inductive | transductive | fully_supervised | cross | open_vocab
    dataset: str  # voc | coco_stuff | context59 | synthetic | synthetic_shifted | ... (targets: the target's)
    metrics: dict[str, float]  # percent for IoU/accuracy/shares; counts for params; images/s
    decoder: str = ""  # the evaluated checkpoint's decoder (lctd | zegclip)
    per_class: list[ClassIoU] = field(default_factory=list)
    exp_name: str | None = None  # dvc.exp_name; None = the workspace's own pipeline runs
    origin: str = ""  # file path or "mlflow:<run_id>", for error messages
    overlay_dir: Path | None = None
    start_time: float = 0.0  # ms since epoch (MLflow) or file mtime; the newest of duplicates wins
    params: dict[str, str] = field(default_factory=dict)  # flattened run params (MLflow only)
    protocol: str = ""  # project.protocol (presets/<protocol>.yaml); "" = not recorded
    protocol_conformant: bool | None = None  # None = not recorded
    protocol_deviations: dict[str, Any] = field(default_factory=dict)  # {key: {value, protocol}}
    protocol_deviations_text: str = ""
    imported: bool = False  # the checkpoint was imported from a released model (ldvc import-zegclip)
    vocabulary: str = "all"  # all (generalised zero-shot) | unseen
    calibrated: bool | None = None  # seen-class calibration applied
    device: str = ""  # where the evaluation ran
    cross_target: str | None = None  # the target's key in cross_dataset / open_vocab.targets (target settings)
    source_dataset: str | None = None  # the training dataset of a target evaluation
    novel_classes: list[str] = field(default_factory=list)  # open_vocab: target classes never trained on
    clip_model: str = ""  # target evaluations: the evaluated model's CLIP and input size
    image_size: int | None = None
    checkpoint: str = ""  # the evaluated checkpoint file, as the evaluation named it
    versions: dict[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> tuple[str | None, str]:
        """Rows of the tables are (experiment name, variant) groups; seeds are averaged in a group."""
        return (self.exp_name, self.variant)

    def deviations(self) -> dict[str, str]:
        """{key: "key=value (protocol: expected)"} of the recorded deviations, minus the one that
        defines the record's setting (split.unseen of a fully supervised run)."""
        if self.protocol_deviations:
            items = {k: f"{k}={_short(v.get('value') if isinstance(v, dict) else v)} (protocol: "
                        f"{_short(v.get('protocol') if isinstance(v, dict) else '?')})"
                     for k, v in sorted(self.protocol_deviations.items())}
        else:
            items = parse_deviations_text(self.protocol_deviations_text)
        allowed = SETTING_DEVIATIONS.get(self.setting, ())
        return {k: v for k, v in items.items() if k not in allowed}

    @property
    def exempt_deviations(self) -> list[str]:
        """The recorded deviations that define the setting (listed, not marked)."""
        allowed = SETTING_DEVIATIONS.get(self.setting, ())
        keys = set(self.protocol_deviations) or set(parse_deviations_text(self.protocol_deviations_text))
        return sorted(k for k in keys if k in allowed)

    @property
    def protocol_status(self) -> str:
        """conformant | deviating | unknown (see the module docstring)."""
        if self.deviations():
            return "deviating"
        if self.protocol_conformant is None:
            return "conformant" if self.protocol and self.exempt_deviations else "unknown"
        if self.protocol_conformant:
            return "conformant"
        # Recorded as not conformant: conformant only if every listed deviation is exempt.
        return "conformant" if self.exempt_deviations else "deviating"

    @property
    def deviations_text(self) -> str:
        """The deviations as one line (what a footnote prints)."""
        devs = self.deviations()
        if devs:
            return ", ".join(devs.values())
        return "not listed (the record says it is not conformant)" if self.protocol_status == "deviating" else ""


def _short(v: Any) -> str:
    text = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_deviations_text(text: str) -> dict[str, str]:
    """'a.b=1 (protocol: 2), c=[1, 2] (protocol: [])' -> {"a.b": "a.b=1 (protocol: 2)", "c": ...}
    (ldvc.protocol.describe's format; the MLflow tag carries only this text)."""
    text = (text or "").strip()
    starts = [m for m in _DEVIATION_ENTRY.finditer(text)]
    out: dict[str, str] = {}
    for i, m in enumerate(starts):
        begin = m.start(1)
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        out[m.group(1)] = text[begin:end].strip()
    return out


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
    if "eval_images_per_s" not in metrics:
        if "eval/images_per_s" in data:  # MLflow: the evaluation's own logged speed
            metrics["eval_images_per_s"] = _float(data["eval/images_per_s"], where, "eval/images_per_s")
        elif "images_per_s" in data and "eval_seconds" in data:  # metrics.json of the evaluation
            metrics["eval_images_per_s"] = _float(data["images_per_s"], where, "images_per_s")
    # An older metrics.json: images_per_s was the training summary's throughput.
    if "train_images_per_s" not in metrics and "images_per_s" in data and "eval_seconds" not in data:
        metrics["train_images_per_s"] = _float(data["images_per_s"], where, "images_per_s")
    return metrics


def _bool(value: Any, where: str, key: str) -> bool | None:
    """JSON booleans, or the strings MLflow tags carry ("true"/"false"); None = not recorded."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise ReportError(f"{where}: '{key}' must be true or false, got {value!r}")


def _identity(data: dict[str, Any], where: str) -> dict[str, Any]:
    """The self-describing fields of a metrics.json (ldvc.pipeline.annotate_metrics) as
    EvalRecord keyword arguments; absent fields are left out (the caller's defaults apply)."""
    out: dict[str, Any] = {}
    for key in ("decoder", "protocol", "protocol_deviations_text", "device", "checkpoint", "vocabulary"):
        if data.get(key) not in (None, ""):
            out[key] = str(data[key])
    for key in ("cross_target", "source_dataset", "clip_model"):
        if data.get(key) not in (None, ""):
            out[key] = str(data[key])
    if data.get("image_size") not in (None, ""):
        out["image_size"] = int(_float(data["image_size"], where, "image_size"))
    novel = data.get("novel_classes")
    if novel is not None:
        if not isinstance(novel, list) or not all(isinstance(c, str) for c in novel):
            raise ReportError(f"{where}: 'novel_classes' must be a list of class names, got {novel!r}")
        out["novel_classes"] = list(novel)
    for key in ("protocol_conformant", "imported", "calibrated"):
        if key in data:
            value = _bool(data[key], where, key)
            if value is not None:
                out[key] = value
    devs = data.get("protocol_deviations")
    if devs is not None:
        if not isinstance(devs, dict) or not all(isinstance(v, dict) for v in devs.values()):
            raise ReportError(f"{where}: 'protocol_deviations' must map each key to {{value, protocol}}, got "
                              f"{devs!r}; re-run the evaluation that wrote it")
        out["protocol_deviations"] = dict(devs)
    if isinstance(data.get("versions"), dict):
        out["versions"] = dict(data["versions"])
    if out.get("vocabulary", "all") not in ("all", "unseen"):
        raise ReportError(f"{where}: 'vocabulary' must be all or unseen, got {out['vocabulary']!r}")
    return out


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
    # runs/cross/<target>/seed<s>/ or runs/open_vocab/<target>/seed<s>/
    if len(parts) >= 4 and parts[-4] in TARGET_DIRS and _SEED_DIR.match(parts[-2]):
        data.setdefault("seed", int(_SEED_DIR.match(parts[-2]).group(1)))  # type: ignore[union-attr]
        data.setdefault("setting", TARGET_DIRS[parts[-4]])
        data.setdefault("cross_target", parts[-3])
    elif len(parts) >= 4 and _SEED_DIR.match(parts[-3]):
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
        per_class=per_class,
        origin=where,
        overlay_dir=overlays if overlays.is_dir() else None,
        start_time=Path(path).stat().st_mtime * 1000.0,
        **_identity(data, where),
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
        if m and path.parts[-4] not in TARGET_DIRS:  # runs/cross/, runs/open_vocab/ hold targets, not variants
            yield path, path.parts[-4], int(m.group(1)), path.parts[-2]


def _target_dirs(runs_dir: Path, filename: str) -> Iterator[Path]:
    """runs/cross/<target>/seed<s>/<filename> and runs/open_vocab/<target>/seed<s>/<filename>."""
    for folder in TARGET_DIRS:
        for path in sorted((runs_dir / folder).glob(f"*/seed*/{filename}")):
            if _SEED_DIR.match(path.parts[-2]):
                yield path


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
    """Every metrics.json and train_log.csv under runs/<variant>/seed<seed>/<setting>/, and the
    target metrics.json under runs/cross/<target>/seed<seed>/ and runs/open_vocab/<target>/seed<seed>/."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise ReportError(
            f"{runs_dir}: no runs directory; run the pipeline first (dvc repro) or build from MLflow "
            "with --from-mlflow"
        )
    for folder in TARGET_DIRS:
        clash = sorted((runs_dir / folder).glob("seed*/*/metrics.json"))
        if clash:  # runs/cross/seed<s>/<setting>/: a variant named "cross" would be read as a cross target
            raise ReportError(f"{clash[0]}: an ablation variant named {folder!r} collides with runs/{folder}/ (the "
                              "target evaluations); rename the variant in params.yaml and re-run it")
    records = [read_metrics_json(p) for p, *_ in _run_dirs(runs_dir, "metrics.json")]
    records += [read_metrics_json(p) for p in _target_dirs(runs_dir, "metrics.json")]
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
    tracking_uri: str | None = None,
    experiment: str = "ldvc",
    *,
    runs_dir: str | Path | None = None,
    download_artifacts: bool = True,
    progress: bool = True,
) -> ReportInputs:
    """Every evaluation (and training-curve) run of `experiment` in the MLflow store.

    `runs_dir`: where the workspace's overlays live when a run did not log them as artifacts
    (used for runs without dvc.exp_name only; an experiment's runs/ was in its temp copy).
    `tracking_uri`: None = the store the pipeline logs to (ldvc.tracking_store.tracking_uri:
    MLFLOW_TRACKING_URI, else the repository's mlflow.db).
    """
    from mlflow.tracking import MlflowClient

    from ldvc.tracking_store import StoreError, check_server, configure_http, store_kind
    from ldvc.tracking_store import tracking_uri as pipeline_store

    tracking_uri = tracking_uri or pipeline_store()
    if store_kind(tracking_uri) == "sqlite":
        db = Path(tracking_uri[len("sqlite:///"):])
        if not db.is_file():  # MLflow would silently create an empty store here
            raise ReportError(
                f"no MLflow store at {db}: run the pipeline first (dvc repro) or pass --tracking-uri"
            )
    elif store_kind(tracking_uri) == "server":
        configure_http()
        try:
            check_server(tracking_uri)
        except StoreError as err:
            raise ReportError(str(err)) from None
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
        artifact: dict[str, Any] = {}
        where = f"MLflow run {run_id} (stage {stage})"
        if download_artifacts:
            dst = Path(tmp.name) / run_id
            csv_path = _try_download(client, run_id, "per_class_iou.csv", dst)
            if csv_path is not None:
                per_class = read_per_class_csv(csv_path)
            overlay_dir = _try_download(client, run_id, "overlays", dst)
            json_path = _try_download(client, run_id, "metrics.json", dst)
            if json_path is not None:
                try:
                    artifact = json.loads(json_path.read_text())
                except json.JSONDecodeError as err:
                    notes.append(f"{where}: its metrics.json artifact is not valid JSON ({err}); tags used instead")
                if not isinstance(artifact, dict):
                    artifact = {}
        cross_target = (artifact.get("cross_target") or next((tags[t] for t in TARGET_TAGS if tags.get(t)), None)
                        or None)
        if overlay_dir is None and runs_dir is not None and exp_name is None:
            disk = (Path(runs_dir) / setting / str(cross_target) / f"seed{seed}" / "overlays"
                    if setting in TARGET_SETTINGS else Path(runs_dir) / variant / f"seed{seed}" / setting / "overlays")
            overlay_dir = disk if disk.is_dir() else None
        params = dict(run.data.params)
        for key, value in _record_metrics(artifact, f"{where} metrics.json artifact").items():
            metrics.setdefault(key, value)  # the run's logged metrics first; the file fills what it did not log
        fields = _identity(_mlflow_fields(tags, params, setting, cross_target), where)
        fields.update(_identity(artifact, f"{where} metrics.json artifact"))  # the file wins over tags
        records.append(EvalRecord(
            variant=variant, seed=seed, setting=setting,
            dataset=str(artifact.get("dataset") or _mlflow_dataset(tags, params, setting, cross_target)),
            metrics=metrics, per_class=per_class, exp_name=exp_name, origin=f"mlflow:{run_id}",
            overlay_dir=overlay_dir, start_time=float(run.info.start_time or 0), params=params, **fields,
        ))
    return ReportInputs(_latest(records, notes), _latest_curves(curves), notes, tmp)


def _mlflow_fields(tags: dict[str, str], params: dict[str, str], setting: str,
                   cross_target: str | None) -> dict[str, Any]:
    """A metrics.json-like dict from an MLflow run's tags and params (when it logged no metrics.json)."""
    out: dict[str, Any] = {
        "decoder": tags.get("ldvc.decoder"),
        "protocol": tags.get("ldvc.protocol"),
        "protocol_conformant": tags.get("ldvc.protocol_conformant"),
        "protocol_deviations_text": tags.get("ldvc.protocol_deviations"),
        "imported": tags.get("ldvc.imported"),
        "device": tags.get("ldvc.device"),
        "vocabulary": params.get("eval.vocabulary"),
    }
    if setting in TARGET_SETTINGS:
        out["cross_target"] = cross_target
        out["source_dataset"] = tags.get("ldvc.dataset")
        out["vocabulary"] = "all"  # a target is always evaluated with every target class
    return out


def _mlflow_dataset(tags: dict[str, str], params: dict[str, str], setting: str, cross_target: str | None) -> str:
    """The dataset label of an MLflow run without a metrics.json artifact (ldvc.pipeline.dataset_label):
    the ldvc.dataset tag, or for a target run its ldvc.target_dataset tag, else (older cross runs) its
    target's data overlay (cross_dataset.<target>.*)."""
    if setting in TARGET_SETTINGS and tags.get("ldvc.target_dataset"):
        return tags["ldvc.target_dataset"]
    if setting == "cross" and cross_target:
        prefix = f"cross_dataset.{cross_target}."
        dataset = params.get(prefix + "dataset") or params.get("data.dataset") or tags.get("ldvc.dataset", "unknown")
        world = params.get(prefix + "synthetic.world") or params.get("data.synthetic.world") or "default"
        return f"synthetic_{world}" if dataset == "synthetic" and world != "default" else dataset
    dataset = tags.get("ldvc.dataset", "unknown")
    world = params.get("data.synthetic.world", "default")
    return f"synthetic_{world}" if dataset == "synthetic" and world != "default" else dataset


def _latest(records: list[EvalRecord], notes: list[str]) -> list[EvalRecord]:
    """Keep the newest record per (experiment, variant, seed, setting, dataset, target)."""
    best: dict[tuple[Any, ...], EvalRecord] = {}
    for r in sorted(records, key=lambda r: r.start_time):
        key = (r.exp_name, r.variant, r.seed, r.setting, r.dataset, r.cross_target)
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
