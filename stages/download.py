"""Stage `download`: fetch the dataset's archives (or generate the synthetic world) and prepare
the canonical on-disk format in `data.root`; records the prepared data's digest."""

from __future__ import annotations

from pathlib import Path

from ldvc.config import repo_root
from ldvc.data.digest import DIGEST_FILE, write_dataset_digest
from ldvc.data.prepare import prepare_dataset
from ldvc.pipeline import INPUTS_FILE, dataset_label, load_stage_config, read_json
from ldvc.tracking import stage_run


def main() -> None:
    cfg = load_stage_config()
    out = Path(cfg.data.root)
    inputs = read_json(INPUTS_FILE)
    with stage_run("download", cfg, record_to=Path("data/download_run.json")) as run:
        summary = prepare_dataset(cfg.data, out, repo_root())
        digest = write_dataset_digest(out, DIGEST_FILE, dataset_label(cfg.data))
        run.log_dict(summary, "prepare_summary.json")
        run.log_dict(inputs, "inputs.json")
        run.log_dict(digest, "dataset_digest.json")
        run.log_metrics({f"{k}_images": v for k, v in summary.get("splits", {}).items()})
        run.log_artifact(out / "meta.json")


if __name__ == "__main__":
    main()
