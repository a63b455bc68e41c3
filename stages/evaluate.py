"""Stages `evaluate_inductive` and `evaluate_transductive`: all classes at test time, dataset-level
IoU, fragmentation, per-class table, confusion matrix and overlays, protocol conformance
(launched with `python -m ldvc.launch`)."""

from __future__ import annotations

from pathlib import Path

from ldvc.data.digest import DIGEST_FILE
from ldvc.pipeline import (
    annotate_metrics,
    is_main_process,
    log_dataset_input,
    numeric,
    protocol_tags,
    run_arguments,
    run_dir,
    run_inputs,
    run_tags,
)
from ldvc.tracking import stage_run


def main() -> None:
    args = run_arguments(__doc__)
    cfg, split, weights = run_inputs(args.variant, args.seed)
    out = run_dir(args.variant, args.seed, args.setting)
    checkpoint = Path(cfg.eval.checkpoint) if cfg.eval.checkpoint else out / "model.pt"

    from ldvc.eval.evaluate import evaluate_checkpoint

    main_process = is_main_process()
    tags = run_tags(cfg, args.variant, args.seed, args.setting)
    with stage_run(f"evaluate_{args.setting}", cfg, tags=tags, main_process=main_process,
                   record_to=out / "eval_run.json") as run:
        evaluate_checkpoint(cfg, args.setting, split, cfg.data.root, checkpoint, weights, out, log=run.log_metrics)
        if main_process:
            metrics = annotate_metrics(out, cfg, args.variant, args.seed, args.setting, checkpoint)
            run.set_tags(protocol_tags(metrics))
            log_dataset_input(run, DIGEST_FILE, "val", "evaluation")
            run.log_metrics(numeric(metrics))
            for name in ("metrics.json", "per_class_iou.csv", "confusion.png", "overlays"):
                run.log_artifact(out / name)


if __name__ == "__main__":
    main()
