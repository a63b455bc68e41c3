"""Where every stage reads and writes, and what every stage checks first (one place, so stages,
reports and tests agree).

Layout (relative to the repository root, or to DVC's copy of it for queued/temp experiments):
  data/inputs.json          digests of every external input of the download stage (inputs stage)
  data/inputs_cross.json    the same for the cross-dataset targets
  data/inputs_open_vocab.json  the same for the open-vocabulary targets (inputs_open_vocab stage)
  data/prepared/            canonical dataset (download stage)
  data/cross/<target>/      canonical datasets of the cross-dataset targets (prepare_cross stage)
  data/open_vocab/<target>/ canonical datasets of the open-vocabulary targets (prepare_open_vocab stage)
  data/split.json           seen/unseen split (split stage)
  models/clip/clip.json     which CLIP weights to use: model name, file, sha256 (clip stage)
  runs/<variant>/seed<s>/<setting>/
                            training outputs (checkpoints/, model.pt, train_log.csv,
                            train_summary.json) and evaluation outputs (metrics.json,
                            per_class_iou.csv, confusion.png, overlays/); variant "ldvc" holds
                            the main runs, the others are ablation variants; setting is
                            inductive | transductive | fully_supervised; cross-dataset
                            evaluations in runs/cross/<target>/seed<s>/, open-vocabulary ones
                            in runs/open_vocab/<target>/seed<s>/
  metrics/*.json            DVC metrics (clip, inductive, transductive, ablation, cross, open_vocab)
  reports/tables, reports/figures

Every stage is run as a module (`python -m stages.<name>`, dvc.yaml) so that it imports the `ldvc`
of the tree DVC runs it in: with `pip install -e .` a plain script would import the workspace's
ldvc even inside a queued experiment's copy, and an experiment that edits code under ldvc/ would
run the workspace's code. `load_stage_config` refuses to run if that happens anyway.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ldvc
from ldvc.config import (
    CROSS_ROOT,
    MAIN_VARIANT,
    TARGET_SECTIONS,
    Config,
    ConfigError,
    check_open_vocab_model,
    load_config,
)

SPLIT_FILE = Path("data/split.json")
INPUTS_FILE = Path("data/inputs.json")
CROSS_INPUTS_FILE = Path("data/inputs_cross.json")
OPEN_VOCAB_INPUTS_FILE = Path("data/inputs_open_vocab.json")
CLIP_DIR = Path("models/clip")
CLIP_RECORD = CLIP_DIR / "clip.json"
RUNS = Path("runs")
METRICS = Path("metrics")
REPORTS = Path("reports")
PRESETS = Path("presets")


class StageError(RuntimeError):
    """A stage cannot run as set up (wrong code tree, missing input); the message says the fix."""


def run_dir(variant: str, seed: int, setting: str) -> Path:
    return RUNS / variant / f"seed{seed}" / setting


def cross_root(target: str) -> Path:
    return Path(CROSS_ROOT) / target


def cross_digest_file(target: str) -> Path:
    """The cross target's data/dataset_digest.json: written by prepare_cross, logged by evaluate_cross."""
    return Path(CROSS_ROOT) / f"{target}_digest.json"


@dataclass(frozen=True)
class TargetSection:
    """A params.yaml section of named evaluation targets and where its stages read and write.

    cross_dataset: the main INDUCTIVE model of every seed on other datasets (ZegCLIP's
    configs/cross_dataset); open_vocab: the model trained on EVERY class (open_vocab.model, an
    ablation variant) on other datasets' full vocabularies (SAN / CAT-Seg's open-vocabulary protocol).
    Both are prepared from the same sources, cache and checks as the training data, but with their
    validation split only (TARGET_SPLITS: what evaluation reads), and evaluated with every target class
    a candidate and no seen-class calibration; one stage module each (stages/prepare_cross.py,
    stages/evaluate_cross.py) serves both sections."""

    key: str  # params.yaml section: cross_dataset | open_vocab
    setting: str  # the records' setting: cross | open_vocab
    inputs_file: Path  # digests of the targets' external inputs (an always-running stage writes it)
    prepare_stage: str  # MLflow / DVC stage names
    evaluate_stage: str
    tag: str  # MLflow tag naming the target
    title: str  # in messages

    def data_root(self, target: str) -> Path:
        return Path(TARGET_SECTIONS[self.key]) / target

    def digest_file(self, target: str) -> Path:
        """data/<section>/<target>_digest.json: written by the prepare stage, logged by the evaluate stage."""
        return Path(TARGET_SECTIONS[self.key]) / f"{target}_digest.json"

    def run_root(self, target: str) -> Path:
        """runs/cross/<target> | runs/open_vocab/<target>: one seed<s>/ folder per evaluated seed."""
        return RUNS / self.setting / target


# The splits an evaluation target is prepared with (ldvc.data.prepare.prepare_dataset `splits`, and the
# inputs stages' fingerprint_inputs): val only; no archive, extraction or conversion only training needs.
TARGET_SPLITS: tuple[str, ...] = ("val",)

SECTIONS: dict[str, TargetSection] = {
    "cross_dataset": TargetSection("cross_dataset", "cross", CROSS_INPUTS_FILE, "prepare_cross", "evaluate_cross",
                                   "ldvc.cross_target", "cross-dataset"),
    "open_vocab": TargetSection("open_vocab", "open_vocab", OPEN_VOCAB_INPUTS_FILE, "prepare_open_vocab",
                                "evaluate_open_vocab", "ldvc.open_vocab_target", "open-vocabulary"),
}


def check_code_tree(cwd: Path | None = None) -> None:
    """The imported ldvc must be the one of the tree the stage runs in (see the module docstring)."""
    here = (cwd or Path.cwd()).resolve()
    package = Path(ldvc.__file__).resolve().parent
    if here not in package.parents:
        raise StageError(
            f"this stage runs in {here} but imports ldvc from {package}: an experiment would run other code "
            f"than its own. Run stages as modules from the repository root (`python -m stages.<name>`, as "
            f"dvc.yaml does), or set PYTHONPATH to the tree"
        )


def load_stage_config(variant: str = MAIN_VARIANT, *, open_vocab: bool = False) -> Config:
    """params.yaml of the current directory (DVC runs stages at the repo or experiment root),
    validated against the code (ldvc.validate) before any work; `open_vocab`: the stage works on the
    open-vocabulary targets, which also need their every-class model (`validate_stage_config`)."""
    check_code_tree()
    cfg = load_config("params.yaml")
    try:
        validate_stage_config(cfg, open_vocab=open_vocab)
    except ConfigError as err:
        raise ConfigError(f"params.yaml: {err}") from None
    return cfg if variant == MAIN_VARIANT else cfg.variant(variant)


def validate_stage_config(cfg: Config, preset_dir: Path = PRESETS, *, open_vocab: bool = False) -> Config:
    """What a stage checks before work: the config against the code (ldvc.validate) and, for the
    open-vocabulary stages, that open_vocab.model names an every-class ablation variant. The
    always-running inputs_open_vocab stage checks that first thing, so `dvc repro` stops in seconds,
    while a repro of other stages (`dvc repro evaluate_inductive`) never needs the variant."""
    from ldvc.validate import validate_run

    validate_run(cfg, preset_dir=preset_dir)
    if open_vocab:
        check_open_vocab_model(cfg)
    return cfg


def is_main_process() -> bool:
    # accelerate launch / torchrun set RANK; a plain `python -m stages.x` is the only process.
    return int(os.environ.get("RANK", "0")) == 0


def run_arguments(doc: str | None, with_setting: bool = True) -> argparse.Namespace:
    """Arguments of the run stages: `--setting --seed [--variant]` (train, evaluate) or
    `--variant` (ablation, which loops over the seeds itself)."""
    ap = argparse.ArgumentParser(description=doc)
    if with_setting:
        ap.add_argument("--setting", choices=["inductive", "transductive"], required=True)
        ap.add_argument("--seed", type=int, required=True)
        ap.add_argument("--variant", default=MAIN_VARIANT)
    else:
        ap.add_argument("--variant", required=True)
    return ap.parse_args()


def cross_target_argument(doc: str | None) -> str:
    """`--target`: the cross_dataset key of the prepare_cross / evaluate_cross stages."""
    return target_arguments(doc)[1]


def target_arguments(doc: str | None) -> tuple[TargetSection, str]:
    """`[--section cross_dataset|open_vocab] --target NAME` of the target stages (prepare_cross and
    evaluate_cross serve both sections; dvc.yaml names the section)."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--section", choices=sorted(SECTIONS), default="cross_dataset")
    ap.add_argument("--target", required=True)
    args = ap.parse_args()
    return SECTIONS[args.section], args.target


def target_model(cfg: Config, section: TargetSection) -> tuple[str, str]:
    """(variant, setting) of the checkpoint a target section evaluates: the main inductive model
    (cross_dataset) or the every-class variant open_vocab.model, trained by its ablation stage."""
    if section.key == "open_vocab":
        return cfg.open_vocab.model, "fully_supervised"
    return MAIN_VARIANT, "inductive"


# Names compared in lower case with spaces, '-' and '_' removed; COCO-Stuff's stuff suffixes dropped.
_NAME_SUFFIXES = re.compile(r"[-_ ](other|stuff|merged)$")


def _name_forms(name: str) -> set[str]:
    """A class name's comparable forms: each synonym of a comma- or slash-separated name, normalised."""
    forms = set()
    for part in re.split(r"[,/]", name.lower()):
        part = _NAME_SUFFIXES.sub("", part.strip())
        if part:
            forms.add(re.sub(r"[\s_-]+", "", part))
    return forms


def novel_classes(target_classes: list[str], training_classes: list[str]) -> list[int]:
    """Indices of the target classes whose name was never in the training vocabulary.

    Our rule (the open-vocabulary papers name no rule; they report mIoU over all target classes):
    a target class counts as seen in training when any synonym of its name (',' or '/' separated,
    ADE20K style) equals a training class's synonym after lower-casing, dropping spaces, '-' and '_',
    and dropping COCO-Stuff's '-other' / '-stuff' / '-merged' suffixes. So "diningtable" matches
    COCO-Stuff's "dining table" and "wall" its "wall-other"; "tv" and "tvmonitor" stay different:
    a name the text encoder never met is novel even if a synonym was seen."""
    known = set().union(*(_name_forms(c) for c in training_classes)) if training_classes else set()
    return [i for i, name in enumerate(target_classes) if not _name_forms(name) & known]


def run_inputs(variant: str, seed: int) -> tuple[Config, dict[str, Any], Path | None]:
    """(config with project.seed = seed, split, CLIP weights file) for one run."""
    from ldvc.data.split import load_split

    cfg = load_stage_config(variant)
    cfg.project.seed = seed
    return cfg, load_split(SPLIT_FILE), clip_weights()[1]


def training_split(cfg: Config, split: dict[str, Any]) -> dict[str, Any]:
    """The split a run trains on: the benchmark split, or every class for a fully supervised variant."""
    if not cfg.fully_supervised:
        return split
    classes = list(split["classes"])
    return {**split, "seen": list(range(len(classes))), "unseen": [], "seen_names": classes, "unseen_names": []}


def read_json(path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the stage that produces it first (`dvc repro`)")
    with open(path) as f:
        return json.load(f)


def clip_weights() -> tuple[str, Path | None]:
    """(open_clip model name, weights file) recorded by the clip stage."""
    rec = read_json(CLIP_RECORD)
    path = Path(rec["path"]) if rec.get("path") else None
    if path is not None and not path.is_absolute():
        path = Path.cwd() / path
    return rec["model"], path


def run_tags(cfg: Config, variant: str, seed: int | None = None, setting: str | None = None) -> dict[str, str]:
    tags = {"ldvc.variant": variant, "ldvc.decoder": cfg.decoder.type, "ldvc.protocol": cfg.project.protocol}
    if seed is not None:
        tags["ldvc.seed"] = str(seed)
    if setting is not None:
        tags["ldvc.setting"] = setting
    return tags


def dataset_label(cfg_data: Any) -> str:
    """The dataset a record is about: data.dataset, with the synthetic world when not the default."""
    if cfg_data.dataset == "synthetic" and cfg_data.synthetic.world != "default":
        return f"synthetic_{cfg_data.synthetic.world}"
    return cfg_data.dataset


# Settings whose model trained on every class (split.unseen: []) by definition.
EVERY_CLASS_SETTINGS: tuple[str, ...] = ("fully_supervised", "open_vocab")

# training summary key -> metrics.json key
TRAIN_FIELDS = {"learnable_params": "learnable_params", "total_params": "total_params",
                "images_per_s": "train_images_per_s", "seconds": "train_seconds"}


def annotate_metrics(out_dir: Path, cfg: Config, variant: str, seed: int, setting: str,
                     checkpoint: Path, dataset: str | None = None, extra: dict[str, Any] | None = None
                     ) -> dict[str, Any]:
    """Add the run's identity, training facts, protocol conformance and software versions to
    out_dir/metrics.json, so every record the reports read (from disk or MLflow) is self-describing.

    Protocol deviations compare the TRAINING keys of the evaluated checkpoint's recorded config and
    the EVALUATION keys of `cfg` with presets/<project.protocol>.yaml (ldvc/protocol.py)."""
    from ldvc.environment import versions
    from ldvc.files import write_json_atomic
    from ldvc.protocol import describe, deviations
    from ldvc.train.checkpoint import load_checkpoint

    metrics = read_json(out_dir / "metrics.json")
    summary_path = out_dir / "train_summary.json"
    if summary_path.exists():
        summary = read_json(summary_path)
        metrics.update({dst: summary[src] for src, dst in TRAIN_FIELDS.items() if src in summary})
    ckpt = load_checkpoint(checkpoint)
    devs = deviations(cfg.project.protocol, PRESETS, ckpt["config"], cfg.to_dict())
    if setting in EVERY_CLASS_SETTINGS:
        devs.pop("split.unseen", None)  # every class seen is the definition of the setting, not drift
    trained = ckpt["config"]
    metrics.update(
        variant=variant, seed=seed, setting=setting, dataset=dataset or dataset_label(cfg.data),
        decoder=trained["decoder"]["type"], protocol=cfg.project.protocol, protocol_conformant=not devs,
        protocol_deviations=devs, protocol_deviations_text=describe(devs),
        imported=bool(ckpt.get("imported_from")), checkpoint=str(checkpoint), versions=versions(),
        **(extra or {}),
    )
    write_json_atomic(out_dir / "metrics.json", metrics)
    return metrics


def protocol_tags(metrics: dict[str, Any]) -> dict[str, str]:
    """MLflow tags of a record's protocol conformance."""
    return {"ldvc.protocol": str(metrics.get("protocol", "")),
            "ldvc.protocol_conformant": str(bool(metrics.get("protocol_conformant"))).lower(),
            "ldvc.protocol_deviations": str(metrics.get("protocol_deviations_text", ""))[:5000]}


def numeric(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def log_dataset_input(run: Any, digest_file: Path, split: str, context: str) -> None:
    """Log the prepared dataset split a run read (name, digest from the download stage) to MLflow."""
    from ldvc.data.digest import read_dataset_digest

    rec = read_dataset_digest(digest_file)
    run.log_dataset(name=rec["dataset"], digest=rec["splits"][split]["digest"], source=rec["root"], split=split,
                    context=context)
