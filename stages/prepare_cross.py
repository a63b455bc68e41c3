"""Stage `prepare_cross@<target>`: prepare a cross-dataset target (params.yaml `cross_dataset`,
a partial `data` section merged over `data`) into data/cross/<target>, as the download stage
prepares the training data (same sources, cache and checks)."""

from __future__ import annotations

from ldvc.config import repo_root
from ldvc.data.digest import write_dataset_digest
from ldvc.data.prepare import prepare_dataset
from ldvc.pipeline import (
    CROSS_INPUTS_FILE,
    cross_digest_file,
    cross_root,
    cross_target_argument,
    dataset_label,
    load_stage_config,
    read_json,
)
from ldvc.tracking import stage_run


def main() -> None:
    name = cross_target_argument(__doc__)
    cfg = load_stage_config()
    target = cfg.cross_target(name)
    out = cross_root(name)
    inputs = read_json(CROSS_INPUTS_FILE).get(name, {})
    with stage_run("prepare_cross", cfg, tags={"ldvc.cross_target": name},
                   record_to=out.parent / f"{name}_run.json") as run:
        summary = prepare_dataset(target, out, repo_root())
        digest = write_dataset_digest(out, cross_digest_file(name), dataset_label(target))
        run.log_dict(summary, "prepare_summary.json")
        run.log_dict(inputs, "inputs.json")
        run.log_dict(digest, "dataset_digest.json")
        run.log_metrics({f"{k}_images": v for k, v in summary.get("splits", {}).items()})


if __name__ == "__main__":
    main()
