"""Stages `train_inductive` and `train_transductive` (launched with `python -m ldvc.launch`).

Inductive: seen classes only. Transductive: starts from the inductive checkpoint at
`transductive.init_iter` and pseudo-labels the pixels of unseen classes.
"""

from __future__ import annotations

from ldvc.data.digest import DIGEST_FILE
from ldvc.files import write_json_atomic
from ldvc.pipeline import (
    is_main_process,
    log_dataset_input,
    numeric,
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
    init = None
    if args.setting == "transductive":
        ckpt_name = f"iter_{cfg.transductive.init_iter:06d}.pt"
        init = run_dir(args.variant, args.seed, "inductive") / "checkpoints" / ckpt_name
        if not init.exists():
            raise FileNotFoundError(f"{init}: the inductive run has no checkpoint at transductive.init_iter "
                                    f"= {cfg.transductive.init_iter}; re-run train_inductive")

    from ldvc.environment import versions
    from ldvc.train.loop import train_segmentor

    main_process = is_main_process()
    tags = run_tags(cfg, args.variant, args.seed, args.setting)
    with stage_run(f"train_{args.setting}", cfg, tags=tags, main_process=main_process,
                   record_to=out / "train_run.json") as run:
        summary = train_segmentor(cfg, args.setting, split, cfg.data.root, weights, out,
                                  init_checkpoint=init, log=run.log_metrics)
        if main_process:
            write_json_atomic(out / "train_summary.json", {**summary, "versions": versions()})
            log_dataset_input(run, DIGEST_FILE, "train", "training")
            run.log_metrics(numeric(summary))
            run.log_artifact(out / "train_log.csv")
            run.log_checkpoint(out / "model.pt")


if __name__ == "__main__":
    main()
