"""Stages `evaluate_cross@<target>` and `evaluate_open_vocab@<target>`: a trained model of every seed
evaluated on one evaluation target (prepared by the matching prepare stage) with the TARGET's class
names and text (the reference prompts of ldvc/data/prompts.py: its class names and templates; a model's
learned text prompts carry over to templates with the same prefix, ldvc/model/prompt_transfer.py), every
target class a candidate and no seen calibration (`--section`, ldvc.pipeline.SECTIONS):

- cross_dataset: the main inductive model (ZegCLIP's configs/cross_dataset/coco-to-{voc,context}.py);
  outputs runs/cross/<target>/seed<s>/;
- open_vocab: the model trained on EVERY class (open_vocab.model, an ablation variant; SAN / CAT-Seg's
  open-vocabulary protocol: train on all COCO-Stuff classes, evaluate unchanged on other datasets'
  full vocabularies); outputs runs/open_vocab/<target>/seed<s>/. The target classes whose name was
  never in the model's training vocabulary (ldvc.pipeline.novel_classes) are recorded
  (metrics.json `novel_classes`) and scored as the "unseen" part of the split, so mIoU(U) is their
  mean IoU and mIoU(S) that of the classes it was trained on; mIoU and pAcc cover every class.
metrics.json also holds the per-class IoU (`per_class`: class, iou in %, seen = in the training
vocabulary; null = the class is in neither prediction nor ground truth), as per_class_iou.csv does.

The vocabulary is always `all` here. Launched with `python -m ldvc.launch`."""

from __future__ import annotations

import math
from typing import Any

from ldvc.pipeline import (
    StageError,
    annotate_metrics,
    clip_weights,
    dataset_label,
    is_main_process,
    load_stage_config,
    log_dataset_input,
    novel_classes,
    numeric,
    protocol_tags,
    run_dir,
    run_tags,
    target_arguments,
    target_model,
)
from ldvc.tracking import stage_run


def target_split(classes: list[str], checkpoint: Any, open_vocab: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(split for evaluate_checkpoint, metrics.json fields): every target class is a candidate and
    nothing is calibrated; for an open-vocabulary target the classes never in the training vocabulary
    form the split's unseen part (they are scored apart, never treated differently)."""
    from ldvc.eval.evaluate import cross_split
    from ldvc.train.checkpoint import load_checkpoint

    split = cross_split(classes)
    if not open_vocab:
        return split, {}
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("unseen"):
        raise StageError(f"{checkpoint} was trained with {len(ckpt['unseen'])} classes held out: an open-vocabulary "
                         f"target evaluates a model trained on every class (open_vocab.model)")
    trained = [ckpt["class_names"][i] for i in ckpt["seen"]]
    novel = novel_classes(classes, trained)
    split.update(unseen=novel, seen=[i for i in range(len(classes)) if i not in set(novel)],
                 unseen_names=[classes[i] for i in novel])
    split["seen_names"] = [classes[i] for i in split["seen"]]
    return split, {"num_classes": len(classes), "num_training_classes": len(trained),
                   "novel_classes": split["unseen_names"], "num_novel_classes": len(novel)}


def per_class_entries(per_class: dict[str, float], split: dict[str, Any]) -> list[dict[str, Any]]:
    """[{class, iou, seen}] in class order for metrics.json (the format ldvc.reports reads); iou null
    where nan (a class absent from prediction and ground truth)."""
    unseen = set(split["unseen"])
    return [{"class": name, "iou": None if math.isnan(per_class[name]) else round(per_class[name], 4),
             "seen": i not in unseen} for i, name in enumerate(split["classes"])]


def main() -> None:
    section, name = target_arguments(__doc__)
    base = load_stage_config(open_vocab=section.key == "open_vocab")
    target = base.target(section.key, name)
    variant, trained_setting = target_model(base, section)
    data_root = section.data_root(name)

    from ldvc.data.canonical import read_meta
    from ldvc.data.prompts import DEFAULT_REFERENCE, dataset_prompts
    from ldvc.eval.evaluate import evaluate_checkpoint

    classes = read_meta(data_root)["classes"]
    # the target's own text, as its reference implementation builds it (ZegCLIP's configs/cross_dataset
    # evaluate each target with that dataset's embeddings); synthetic worlds: their names, the trained templates
    prompts = dataset_prompts(target.dataset) if target.dataset in DEFAULT_REFERENCE else None
    weights = clip_weights()[1]
    main_process = is_main_process()
    for seed in base.seeds:
        cfg = load_stage_config(variant)
        cfg.project.seed = seed
        cfg.eval.vocabulary = "all"
        checkpoint = run_dir(variant, seed, trained_setting) / "model.pt"
        split, extra = target_split(classes, checkpoint, section.key == "open_vocab")
        out = section.run_root(name) / f"seed{seed}"
        tags = {**run_tags(cfg, variant, seed, section.setting), section.tag: name,
                "ldvc.target_dataset": dataset_label(target)}
        with stage_run(section.evaluate_stage, cfg, tags=tags, main_process=main_process,
                       record_to=out / "eval_run.json") as run:
            # "cross" is the evaluation's setting for any target: target classes, no calibration
            result = evaluate_checkpoint(cfg, "cross", split, data_root, checkpoint, weights, out,
                                         log=run.log_metrics, prompts=prompts)
            if main_process:
                metrics = annotate_metrics(out, cfg, variant, seed, section.setting, checkpoint,
                                           dataset=dataset_label(target),
                                           extra={"cross_target": name, "target_section": section.key,
                                                  "source_dataset": dataset_label(cfg.data),
                                                  "clip_model": cfg.clip.model, "image_size": cfg.data.image_size,
                                                  "per_class": per_class_entries(result["per_class"], split),
                                                  **extra})
                run.set_tags(protocol_tags(metrics))
                log_dataset_input(run, section.digest_file(name), "val", "evaluation")
                run.log_metrics(numeric(metrics))
                for artifact in ("metrics.json", "per_class_iou.csv", "confusion.png", "overlays"):
                    run.log_artifact(out / artifact)


if __name__ == "__main__":
    main()
