"""Stages `train_inductive` and `train_transductive` (launched with `accelerate launch`).

Inductive: seen classes only. Transductive: starts from the inductive checkpoint at
`transductive.init_iter` and pseudo-labels the ignored pixels with unseen classes.
"""

from __future__ import annotations

import argparse

from ldvc.config import MAIN_VARIANT
from ldvc.data.split import load_split
from ldvc.pipeline import SPLIT_FILE, clip_weights, is_main_process, load_stage_config, numeric, run_dir, run_tags
from ldvc.tracking import stage_run, write_json_atomic


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
    init = None
    if args.setting == "transductive":
        ckpt_name = f"iter_{cfg.transductive.init_iter:06d}.pt"
        init = run_dir(args.variant, args.seed, "inductive") / "checkpoints" / ckpt_name
        if not init.exists():
            raise FileNotFoundError(f"{init}: the inductive run has no checkpoint at transductive.init_iter "
                                    f"= {cfg.transductive.init_iter}; re-run train_inductive")

    from ldvc.train.loop import train_segmentor

    tags = run_tags(cfg, args.variant, args.seed, args.setting)
    with stage_run(f"train_{args.setting}", cfg, tags=tags, main_process=is_main_process(),
                   record_to=out / "train_run.json") as run:
        summary = train_segmentor(cfg, args.setting, split, cfg.data.root, weights, out,
                                  init_checkpoint=init, log=run.log_metrics)
        if is_main_process():
            write_json_atomic(out / "train_summary.json", summary)
        run.log_metrics(numeric(summary))
        run.log_artifact(out / "train_log.csv")


if __name__ == "__main__":
    main()
