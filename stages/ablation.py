"""Stage `ablation@<variant>`: train and evaluate one ablation variant (inductive) for every seed.

A variant is a partial parameter tree in params.yaml's `ablation` section merged over the main
configuration. A variant with `split: {unseen: []}` trains on every class (the fully supervised
upper bound) and is evaluated without calibration against the benchmark split, so its mIoU(S) /
mIoU(U) compare with the zero-shot rows. One MLflow run per (variant, seed), tagged stage=ablation.
"""

from __future__ import annotations

from ldvc.data.digest import DIGEST_FILE
from ldvc.files import write_json_atomic
from ldvc.pipeline import (
    annotate_metrics,
    is_main_process,
    load_stage_config,
    log_dataset_input,
    numeric,
    protocol_tags,
    run_arguments,
    run_dir,
    run_inputs,
    run_tags,
    training_split,
)
from ldvc.tracking import stage_run


def main() -> None:
    args = run_arguments(__doc__, with_setting=False)
    seeds = load_stage_config(args.variant).seeds  # validates the variant before any work

    from ldvc.environment import versions
    from ldvc.eval.evaluate import evaluate_checkpoint
    from ldvc.train.loop import train_segmentor

    main_process = is_main_process()
    for seed in seeds:
        cfg, split, weights = run_inputs(args.variant, seed)
        setting = "fully_supervised" if cfg.fully_supervised else "inductive"
        out = run_dir(args.variant, seed, setting)
        tags = {**run_tags(cfg, args.variant, seed, setting), "ldvc.ablation": args.variant}
        with stage_run("ablation", cfg, tags=tags, main_process=main_process,
                       record_to=out / "ablation_run.json") as run:
            summary = train_segmentor(cfg, "inductive", training_split(cfg, split), cfg.data.root, weights, out,
                                      log=run.log_metrics)
            if main_process:
                write_json_atomic(out / "train_summary.json", {**summary, "versions": versions()})
            evaluate_checkpoint(cfg, setting, split, cfg.data.root, out / "model.pt", weights, out,
                                log=run.log_metrics)
            if main_process:
                run.log_metrics(numeric(summary))
                metrics = annotate_metrics(out, cfg, args.variant, seed, setting, out / "model.pt")
                run.set_tags(protocol_tags(metrics))
                log_dataset_input(run, DIGEST_FILE, "train", "training")
                log_dataset_input(run, DIGEST_FILE, "val", "evaluation")
                run.log_metrics(numeric(metrics))
                run.log_checkpoint(out / "model.pt")
                for name in ("metrics.json", "per_class_iou.csv", "train_log.csv", "overlays"):
                    run.log_artifact(out / name)


if __name__ == "__main__":
    main()
