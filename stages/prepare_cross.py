"""Stages `prepare_cross@<target>` and `prepare_open_vocab@<target>`: prepare an evaluation target
(params.yaml `cross_dataset` or `open_vocab.targets`: a partial `data` section merged over `data`)
into data/cross/<target> or data/open_vocab/<target>, as the download stage prepares the training
data (same sources, cache and checks), its validation split only (ldvc.pipeline.TARGET_SPLITS).
`--section` names the params section (ldvc.pipeline.SECTIONS)."""

from __future__ import annotations

from ldvc.config import repo_root
from ldvc.data.digest import write_dataset_digest
from ldvc.data.prepare import prepare_dataset
from ldvc.pipeline import TARGET_SPLITS, dataset_label, load_stage_config, read_json, target_arguments
from ldvc.tracking import stage_run


def main() -> None:
    section, name = target_arguments(__doc__)
    cfg = load_stage_config(open_vocab=section.key == "open_vocab")
    target = cfg.target(section.key, name)
    out = section.data_root(name)
    inputs = read_json(section.inputs_file).get(name, {})
    with stage_run(section.prepare_stage, cfg, tags={section.tag: name},
                   record_to=out.parent / f"{name}_run.json") as run:
        summary = prepare_dataset(target, out, repo_root(), splits=TARGET_SPLITS)
        digest = write_dataset_digest(out, section.digest_file(name), dataset_label(target))
        run.log_dict(summary, "prepare_summary.json")
        run.log_dict(inputs, "inputs.json")
        run.log_dict(digest, "dataset_digest.json")
        run.log_metrics({f"{k}_images": v for k, v in summary.get("splits", {}).items()})


if __name__ == "__main__":
    main()
