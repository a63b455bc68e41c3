"""Stage `report`: the paper's tables and figures regenerated from the runs, with the published
numbers beside ours, and the DVC metrics files (mean over seeds).

Writes reports/tables/{main,cross,open_vocab,ablation,cost}.{md,csv,tex}, reports/figures/*.png and
metrics/{inductive,transductive,ablation,cross,open_vocab}.json; reads the `count` stage's
reports/counts.json (the cost table's paper-size counts) and, when it exists, the device check's
reports/device_check.jsonl for the cost table's FPS (a missing file leaves FPS '-' with a note).
Reproduced numbers that deviate from their protocol are marked [R*] in every table (ldvc/reports).
"""

from __future__ import annotations

from ldvc.files import write_json_atomic
from ldvc.pipeline import METRICS, REPORTS, RUNS, load_stage_config, numeric
from ldvc.reports import build_reports, records_from_runs
from ldvc.reports.counts import COUNTS_FILE, read_counts
from ldvc.tracking import stage_run


def main() -> None:
    cfg = load_stage_config()
    with stage_run("report", cfg, record_to=REPORTS / "report_run.json") as run:
        records = records_from_runs(RUNS)
        result = build_reports(records, REPORTS, main_variant="ldvc", ablation_overrides=cfg.ablation,
                               cross_targets=list(cfg.cross_dataset), open_vocab_targets=list(cfg.open_vocab.targets),
                               paper_counts=read_counts(REPORTS / COUNTS_FILE),
                               # metrics/*.json summarize the dataset params.yaml trains on; runs of another
                               # preset's dataset may linger in runs/ (the tables show every record)
                               summary_dataset=cfg.data.dataset)
        for setting in ("inductive", "transductive"):
            summary = result["main"].get(setting, {})
            write_json_atomic(METRICS / f"{setting}.json", summary)
            run.log_metrics({f"{setting}.{k}": v for k, v in numeric(summary).items()})
        write_json_atomic(METRICS / "ablation.json", result.get("ablation", {}))
        write_json_atomic(METRICS / "cross.json", result.get("cross", {}))
        write_json_atomic(METRICS / "open_vocab.json", result.get("open_vocab", {}))
        for section in ("cross", "open_vocab"):
            for target, summary in result.get(section, {}).items():
                run.log_metrics({f"{section}.{target}.{k}": v for k, v in numeric(summary).items()})
        run.log_artifact(REPORTS / "tables", "tables")
        run.log_artifact(REPORTS / "figures", "figures")
        # the pipeline's parent run carries the headline numbers, so MLflow's runs table compares them
        run.log_pipeline_summary(
            {"inductive": result["main"].get("inductive", {}), "transductive": result["main"].get("transductive", {}),
             "ablation": result.get("ablation", {}), "cross": result.get("cross", {}),
             "open_vocab": result.get("open_vocab", {})},
            [p for p in (REPORTS / "tables", REPORTS / "figures", METRICS) if p.exists()])


if __name__ == "__main__":
    main()
