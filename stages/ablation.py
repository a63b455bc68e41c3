"""Stage `ablation@<variant>`: train and evaluate one ablation variant (inductive) for every seed.

A variant is a partial parameter tree in params.yaml's `ablation` section merged over the main
configuration. One MLflow run per (variant, seed), tagged stage=ablation.
"""

from __future__ import annotations

import argparse

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
from ldvc.tracking import stage_run, write_json_atomic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--variant", required=True)
    args = ap.parse_args()

    base = load_stage_config(args.variant)
    split = load_split(SPLIT_FILE)
    _, weights = clip_weights()

    from ldvc.eval.evaluate import evaluate_checkpoint
    from ldvc.train.loop import train_segmentor

    main = is_main_process()
    for seed in base.seeds:
        cfg = load_stage_config(args.variant)
        cfg.project.seed = seed
        out = run_dir(args.variant, seed, "inductive")
        tags = {**run_tags(cfg, args.variant, seed, "inductive"), "ldvc.ablation": args.variant}
        with stage_run("ablation", cfg, tags=tags, main_process=main, record_to=out / "ablation_run.json") as run:
            summary = train_segmentor(cfg, "inductive", split, cfg.data.root, weights, out, log=run.log_metrics)
            if main:
                write_json_atomic(out / "train_summary.json", summary)
            evaluate_checkpoint(cfg, "inductive", split, cfg.data.root, out / "model.pt", weights, out,
                                log=run.log_metrics)
            if main:
                run.log_metrics(numeric(summary))
                metrics = annotate_metrics(out, cfg, args.variant, seed, "inductive")
                run.log_metrics(numeric(metrics))
                for name in ("metrics.json", "per_class_iou.csv", "train_log.csv"):
                    run.log_artifact(out / name)


if __name__ == "__main__":
    main()
