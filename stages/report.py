"""Stage `report`: the paper's tables and figures regenerated from the runs, with the published
numbers beside ours, and the DVC metrics files (mean over seeds)."""

from __future__ import annotations

from ldvc.pipeline import METRICS, REPORTS, RUNS, load_stage_config, numeric
from ldvc.reports import build_reports, records_from_runs
from ldvc.tracking import stage_run, write_json_atomic


def main() -> None:
    cfg = load_stage_config()
    with stage_run("report", cfg, record_to=REPORTS / "report_run.json") as run:
        records = records_from_runs(RUNS)
        result = build_reports(records, REPORTS, main_variant="ldvc", ablation_overrides=cfg.ablation)
        for setting in ("inductive", "transductive"):
            summary = result["main"].get(setting, {})
            write_json_atomic(METRICS / f"{setting}.json", summary)
            run.log_metrics({f"{setting}.{k}": v for k, v in numeric(summary).items()})
        write_json_atomic(METRICS / "ablation.json", result.get("ablation", {}))
        run.log_artifact(REPORTS / "tables", "tables")
        run.log_artifact(REPORTS / "figures", "figures")


if __name__ == "__main__":
    main()
