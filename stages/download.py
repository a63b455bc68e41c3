"""Stage `download`: fetch the dataset's archives (or generate the synthetic world) and prepare
the canonical on-disk format in `data.root`."""

from __future__ import annotations

from pathlib import Path

from ldvc.data.prepare import prepare_dataset
from ldvc.pipeline import load_stage_config, repo_root
from ldvc.tracking import stage_run


def main() -> None:
    cfg = load_stage_config()
    out = Path(cfg.data.root)
    with stage_run("download", cfg, record_to=Path("data/download_run.json")) as run:
        summary = prepare_dataset(cfg.data, out, repo_root())
        run.log_dict(summary, "prepare_summary.json")
        run.log_metrics({f"{k}_images": v for k, v in summary.get("splits", {}).items()})
        run.log_artifact(out / "meta.json")


if __name__ == "__main__":
    main()
