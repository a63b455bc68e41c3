"""Paper tables and figures, rebuilt from the pipeline's evaluation records.

Library entry point of the `report` stage: `build_reports(records, out_dir)` writes
out_dir/tables/{main,cross,open_vocab,ablation,cost}.{md,csv,tex} and out_dir/figures/*.png and returns
their paths plus the aggregated metrics (for metrics/{inductive,transductive,ablation,cross,open_vocab}.json).
Records come from the runs/ directory (`load_runs_dir`, incl. runs/cross/ and runs/open_vocab/) or from every run of an
MLflow store (`load_mlflow`), so `dvc exp run` / `dvc queue` experiments appear as extra rows.
Every table marks reproduced numbers that deviate from their protocol ([R*], tables.py).
Command line: `python -m ldvc.reports [--from-mlflow] ...` (see __main__.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ldvc.reports.counts import PaperCounts

from ldvc.reports.open_vocab import open_vocab_table, summarize_open_vocab
from ldvc.reports.records import (
    ClassIoU,
    EvalRecord,
    ReportError,
    ReportInputs,
    TrainCurve,
    curves_beside,
    load_mlflow,
    load_runs_dir,
    records_from_runs,
)
from ldvc.reports.tables import (
    ablation_table,
    cross_table,
    main_table,
    summarize,
    summarize_ablation,
    summarize_cross,
    write_table,
)

__all__ = [
    "ClassIoU",
    "EvalRecord",
    "ReportError",
    "ReportInputs",
    "TrainCurve",
    "build_reports",
    "load_mlflow",
    "load_runs_dir",
    "records_from_runs",
]


def build_reports(
    records: Sequence[EvalRecord],
    out_dir: str | Path = "reports",
    *,
    curves: Sequence[TrainCurve] | None = None,
    figures: bool = True,
    ablation_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    main_variant: str = "ldvc",
    summary_exp: str | None = None,
    summary_dataset: str | None = None,
    notes: Iterable[str] = (),
    count_models: bool = True,
    paper_counts: PaperCounts | None = None,
    gpu_benchmark: str | Path | None = None,
    cross_targets: Iterable[str] | None = None,
    open_vocab_targets: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Write the tables (and figures) for `records`; return what was written and the summaries.

    Returns {"tables": {"main_md": Path, "main_csv": ..., "cross_md", "ablation_tex", "cost_csv", ...},
             "figures": {"per_class_iou_<dataset>_<setting>": Path, ...},
             "main": {"inductive": {"pAcc", "mIoU_seen", "mIoU_unseen", "hIoU"[, "<key>_std"]},
                      "transductive": {...}},          # -> metrics/<setting>.json
             "ablation": {variant: {"mIoU_seen", ..., "train_images_per_s"[, "<key>_std"]}},
             "cross": {target: {"pAcc", "mIoU"[, "<key>_std"]}},   # -> metrics/cross.json
             "open_vocab": {target: {"mIoU", "pAcc", "mIoU_base", "mIoU_novel"[, "<key>_std"]}},
                                                                   # -> metrics/open_vocab.json
             "notes": [what was skipped and why]}.
    Summaries are means over seeds of experiment `summary_exp` (None = the workspace's own runs);
    "main" is variant `main_variant`; `summary_dataset` picks a dataset when records cover several.
    `curves`: training logs; None = the train_log.csv beside each on-disk record.
    `ablation_overrides`: params.yaml's `ablation` section (variant -> partial parameter tree or
    {"section.key": value}); it orders the ablation rows and fills their "Changes" column, and the
    workspace's records of variants it no longer names (stale runs/ folders) are left out, with a note.
    `cross_targets`: params.yaml's `cross_dataset` keys; the workspace's cross records of other targets
    (stale runs/cross/ folders) are left out, with a note. `open_vocab_targets`: the same for
    params.yaml's `open_vocab.targets` and runs/open_vocab/.
    `count_models`: count parameters/GFLOPs for the cost table (each run's model from its checkpoint;
    ZegCLIP and LDVC at the paper size from `paper_counts`, the `count` stage's reports/counts.json,
    or, when that is None, counted here on the meta device: about a minute on a CPU).
    `gpu_benchmark`: the device check's records giving FPS (default out_dir/device_check.jsonl; a
    missing file leaves FPS '-' with a note).
    """
    if not records:
        raise ReportError(
            "no evaluation records to report: run the pipeline first (dvc repro) so that "
            "runs/<variant>/seed<seed>/<setting>/metrics.json exist, or build from MLflow (--from-mlflow)"
        )
    all_notes = list(notes)
    if ablation_overrides is not None:
        # runs/ keeps the folders of variants since removed from params.yaml: leave those out.
        current = {main_variant, *ablation_overrides}
        stale = sorted({r.variant for r in records if r.exp_name is None and r.variant not in current})
        if stale:
            all_notes.append(f"left out variants no longer in params.yaml's ablation section: {stale}")
            records = [r for r in records if r.exp_name is not None or r.variant in current]
    for setting, current, section in (("cross", cross_targets, "cross_dataset"),
                                      ("open_vocab", open_vocab_targets, "open_vocab.targets")):
        if current is None:
            continue
        targets = set(current)
        stale = sorted({str(r.cross_target) for r in records
                        if r.setting == setting and r.exp_name is None and r.cross_target not in targets})
        if stale:
            all_notes.append(f"left out {setting} targets no longer in params.yaml's {section}: {stale}")
            records = [r for r in records if r.setting != setting or r.exp_name is not None
                       or r.cross_target in targets]
    # Validate before writing anything: a summary that cannot be computed fails here.
    main = summarize(records, variant=main_variant, exp_name=summary_exp, dataset=summary_dataset)
    ablation = summarize_ablation(records, exp_name=summary_exp, dataset=summary_dataset)
    cross = summarize_cross(records, variant=main_variant, exp_name=summary_exp)
    open_vocab = summarize_open_vocab(records, exp_name=summary_exp)
    out_dir = Path(out_dir)
    from ldvc.reports.cost import GPU_BENCHMARK_FILE, cost_table  # torch only when the tables are built

    cost = cost_table(records, count=count_models, paper_counts=paper_counts,
                      gpu_benchmark=gpu_benchmark if gpu_benchmark is not None else out_dir / GPU_BENCHMARK_FILE)
    tables: dict[str, Path] = {}
    for table in (main_table(records), cross_table(records), open_vocab_table(records),
                  ablation_table(records, ablation_overrides), cost):
        tables.update(write_table(table, out_dir / "tables"))
    figure_paths: dict[str, Path] = {}
    if figures:
        from ldvc.reports.figures import build_figures  # matplotlib only when figures are wanted

        if curves is None:
            curves = curves_beside(records)
        figure_paths, figure_notes = build_figures(records, curves, out_dir / "figures", summary_exp)
        all_notes += figure_notes
    return {"tables": tables, "figures": figure_paths, "main": main, "ablation": ablation, "cross": cross,
            "open_vocab": open_vocab, "notes": all_notes}
