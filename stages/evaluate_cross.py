"""Stage `evaluate_cross@<target>`: the main inductive model of every seed evaluated on one
cross-dataset target (params.yaml `cross_dataset`, prepared by prepare_cross@<target>), with the
TARGET's class names, every target class a candidate and no seen calibration (ZegCLIP's
configs/cross_dataset/coco-to-{voc,context}.py). Outputs: runs/cross/<target>/seed<s>/.
The vocabulary is always `all` here: a target has no unseen classes (launched with
`python -m ldvc.launch`)."""

from __future__ import annotations

from ldvc.config import MAIN_VARIANT
from ldvc.pipeline import (
    RUNS,
    annotate_metrics,
    clip_weights,
    cross_digest_file,
    cross_root,
    cross_target_argument,
    dataset_label,
    is_main_process,
    load_stage_config,
    log_dataset_input,
    numeric,
    protocol_tags,
    run_dir,
    run_tags,
)
from ldvc.tracking import stage_run


def main() -> None:
    name = cross_target_argument(__doc__)
    base = load_stage_config()
    target = base.cross_target(name)
    data_root = cross_root(name)

    from ldvc.data.canonical import read_meta
    from ldvc.eval.evaluate import cross_split, evaluate_checkpoint

    split = cross_split(read_meta(data_root)["classes"])
    weights = clip_weights()[1]
    main_process = is_main_process()
    for seed in base.seeds:
        cfg = load_stage_config()
        cfg.project.seed = seed
        cfg.eval.vocabulary = "all"
        checkpoint = run_dir(MAIN_VARIANT, seed, "inductive") / "model.pt"
        out = RUNS / "cross" / name / f"seed{seed}"
        tags = {**run_tags(cfg, MAIN_VARIANT, seed, "cross"), "ldvc.cross_target": name}
        with stage_run("evaluate_cross", cfg, tags=tags, main_process=main_process,
                       record_to=out / "eval_run.json") as run:
            evaluate_checkpoint(cfg, "cross", split, data_root, checkpoint, weights, out, log=run.log_metrics)
            if main_process:
                metrics = annotate_metrics(out, cfg, MAIN_VARIANT, seed, "cross", checkpoint,
                                           dataset=dataset_label(target),
                                           extra={"cross_target": name,
                                                  "source_dataset": dataset_label(cfg.data)})
                run.set_tags(protocol_tags(metrics))
                log_dataset_input(run, cross_digest_file(name), "val", "evaluation")
                run.log_metrics(numeric(metrics))
                for artifact in ("metrics.json", "per_class_iou.csv", "confusion.png", "overlays"):
                    run.log_artifact(out / artifact)


if __name__ == "__main__":
    main()
