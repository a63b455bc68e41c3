"""Where every stage reads and writes (one place, so stages, reports and tests agree).

Layout (relative to the repository root):
  data/prepared/            canonical dataset (download stage)
  data/split.json           seen/unseen split (split stage)
  models/clip/clip.json     which CLIP weights to use: model name, file, sha256 (clip stage)
  runs/<variant>/seed<s>/<setting>/
                            training outputs (checkpoints/, model.pt, train_log.csv,
                            train_summary.json) and evaluation outputs (metrics.json,
                            per_class_iou.csv, confusion.png, overlays/); variant "ldvc" holds
                            the main runs, the others are ablation variants
  metrics/*.json            DVC metrics (clip, inductive, transductive, ablation)
  reports/tables, reports/figures
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from ldvc.config import MAIN_VARIANT, Config, load_config, repo_root

SPLIT_FILE = Path("data/split.json")
CLIP_DIR = Path("models/clip")
CLIP_RECORD = CLIP_DIR / "clip.json"
RUNS = Path("runs")
METRICS = Path("metrics")
REPORTS = Path("reports")


def run_dir(variant: str, seed: int, setting: str) -> Path:
    return RUNS / variant / f"seed{seed}" / setting


def load_stage_config(variant: str = MAIN_VARIANT) -> Config:
    """params.yaml of the current directory (DVC runs stages at the repo or experiment root)."""
    cfg = load_config("params.yaml")
    return cfg if variant == MAIN_VARIANT else cfg.variant(variant)


def is_main_process() -> bool:
    # accelerate launch / torchrun set RANK; a plain `python stages/x.py` is the only process.
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


def run_inputs(variant: str, seed: int) -> tuple[Config, dict[str, Any], Path | None]:
    """(config with project.seed = seed, split, CLIP weights file) for one run."""
    from ldvc.data.split import load_split

    cfg = load_stage_config(variant)
    cfg.project.seed = seed
    return cfg, load_split(SPLIT_FILE), clip_weights()[1]


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
    tags = {"ldvc.variant": variant, "ldvc.decoder": cfg.decoder.type}
    if seed is not None:
        tags["ldvc.seed"] = str(seed)
    if setting is not None:
        tags["ldvc.setting"] = setting
    return tags


__all__ = ["repo_root"]


# training summary key -> metrics.json key
TRAIN_FIELDS = {"learnable_params": "learnable_params", "total_params": "total_params",
                "images_per_s": "train_images_per_s", "seconds": "train_seconds"}


def annotate_metrics(out_dir: Path, cfg: Config, variant: str, seed: int, setting: str) -> dict[str, Any]:
    """Add the run's identity and training facts to out_dir/metrics.json, so every record the
    reports read (from disk or MLflow) is self-describing."""
    from ldvc.tracking import write_json_atomic

    metrics = read_json(out_dir / "metrics.json")
    summary_path = out_dir / "train_summary.json"
    if summary_path.exists():
        summary = read_json(summary_path)
        metrics.update({dst: summary[src] for src, dst in TRAIN_FIELDS.items() if src in summary})
    metrics.update(variant=variant, seed=seed, setting=setting, dataset=cfg.data.dataset, decoder=cfg.decoder.type)
    write_json_atomic(out_dir / "metrics.json", metrics)
    return metrics


def numeric(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
