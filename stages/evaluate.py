"""Stages `evaluate_inductive` and `evaluate_transductive`: all classes at test time, dataset-level
IoU, fragmentation, per-class table, confusion matrix and overlays (`accelerate launch`-able)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ldvc.config import MAIN_VARIANT
from ldvc.data.split import load_split
from ldvc.pipeline import (
    SPLIT_FILE,
    annotate_metrics,
    clip_weights,
    is_main_process,
    load_stage_config,
    numeric,
    run_dir,
    run_tags,
)
from ldvc.tracking import stage_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--setting", choices=["inductive", "transductive"], required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--variant", default=MAIN_VARIANT)
    args = ap.parse_args()

    cfg = load_stage_config(args.variant)
    cfg.project.seed = args.seed
    split = load_split(SPLIT_FILE)
    _, weights = clip_weights()
    out = run_dir(args.variant, args.seed, args.setting)
    checkpoint = Path(cfg.eval.checkpoint) if cfg.eval.checkpoint else out / "model.pt"

    from ldvc.eval.evaluate import evaluate_checkpoint

    tags = run_tags(cfg, args.variant, args.seed, args.setting)
    main = is_main_process()
    with stage_run(f"evaluate_{args.setting}", cfg, tags=tags, main_process=main,
                   record_to=out / "eval_run.json") as run:
        evaluate_checkpoint(cfg, args.setting, split, cfg.data.root, checkpoint, weights, out, log=run.log_metrics)
        if main:
            metrics = annotate_metrics(out, cfg, args.variant, args.seed, args.setting)
            run.log_metrics(numeric(metrics))
            for name in ("metrics.json", "per_class_iou.csv", "confusion.png", "overlays"):
                run.log_artifact(out / name)


if __name__ == "__main__":
    main()
