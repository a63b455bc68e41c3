"""Stage `split`: the seen/unseen class split (ZegCLIP's by default, or `split.unseen`)."""

from __future__ import annotations

from pathlib import Path

from ldvc.data.canonical import read_meta
from ldvc.data.split import make_split, save_split
from ldvc.pipeline import SPLIT_FILE, load_stage_config
from ldvc.tracking import stage_run


def main() -> None:
    cfg = load_stage_config()
    meta = read_meta(Path(cfg.data.root))
    # Validate before opening a run: an unknown unseen class name fails here, naming it.
    split = make_split(meta["classes"], cfg.split.unseen, cfg.data.dataset)
    with stage_run("split", cfg, record_to=Path("data/split_run.json")) as run:
        save_split(split, SPLIT_FILE)
        run.log_metrics({"num_classes": len(split["classes"]), "num_seen": len(split["seen"]),
                         "num_unseen": len(split["unseen"])})
        run.log_artifact(SPLIT_FILE)
        print(f"[split] unseen: {', '.join(split['unseen_names'])}")


if __name__ == "__main__":
    main()
