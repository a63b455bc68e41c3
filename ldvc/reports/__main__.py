"""`python -m ldvc.reports`: rebuild the paper's tables and figures.

    python -m ldvc.reports                       # from runs/<variant>/seed<s>/<setting>/metrics.json
    python -m ldvc.reports --from-mlflow         # from every run in the MLflow store (incl. dvc exps)
        [--tracking-uri URI] [--experiment NAME] [--runs-dir runs] [--out reports]
        [--params params.yaml] [--no-figures] [--count | --no-count] [--gpu-benchmark reports/device_check.jsonl]

Defaults are anchored at the repository root (DVC_ROOT when DVC runs us, else the folder holding
dvc.yaml), like the pipeline's own MLflow store: sqlite:///<root>/mlflow.db (or
$MLFLOW_TRACKING_URI), experiment = params.yaml's project.mlflow_experiment. params.yaml is read as
plain YAML (only project.mlflow_experiment, data.dataset and the ablation, cross_dataset and open_vocab
sections are used), so a report can be rebuilt without loading the model registry. Tables: main, cross, open_vocab,
ablation, cost.
The cost table's paper-size counts (ZegCLIP and LDVC at 512 px, on the meta device) are read from
<repo>/reports/counts.json, which the `count` stage writes; without that file, or with --count, they are
counted here (about a minute on a CPU); --no-count leaves every counted cell '-'.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from ldvc.config import repo_root
from ldvc.reports import ReportError, build_reports, load_mlflow, load_runs_dir
from ldvc.reports.counts import COUNTS_FILE, CountsError, read_counts
from ldvc.tracking_store import tracking_uri


def _read_params(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a mapping of sections")
    return data


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ldvc.reports", description=__doc__.split("\n")[0])
    parser.add_argument("--from-mlflow", action="store_true",
                        help="build from every run of the MLflow store instead of the runs/ directory")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///<repo>/mlflow.db)")
    parser.add_argument("--experiment", default=None,
                        help="MLflow experiment (default: params.yaml project.mlflow_experiment, else 'ldvc')")
    parser.add_argument("--runs-dir", type=Path, default=None, help="runs directory (default: <repo>/runs)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <repo>/reports)")
    parser.add_argument("--params", type=Path, default=None, help="params file (default: <repo>/params.yaml)")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    counting = parser.add_mutually_exclusive_group()
    counting.add_argument("--count", action="store_true",
                          help="count the paper-size models here instead of reading <repo>/reports/counts.json")
    counting.add_argument("--no-count", action="store_true",
                          help="do not count parameters/GFLOPs for the cost table (its counted cells stay '-')")
    parser.add_argument("--gpu-benchmark", type=Path, default=None,
                        help="the device check's records for the cost table's FPS (default: <out>/device_check.jsonl)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = repo_root()
    runs_dir = args.runs_dir or root / "runs"
    out = args.out or root / "reports"
    try:
        params = _read_params(args.params or root / "params.yaml")
        ablation = params.get("ablation") or {}
        # Stale runs/cross/<target> folders are left out only when params.yaml names the current targets.
        cross_targets = list(params["cross_dataset"] or {}) if "cross_dataset" in params else None
        open_vocab = params.get("open_vocab") or {}
        open_vocab_targets = list(open_vocab.get("targets") or {}) if "targets" in open_vocab else None
        if args.from_mlflow:
            uri = args.tracking_uri or tracking_uri(root)  # MLFLOW_TRACKING_URI, else <root>/mlflow.db
            experiment = args.experiment or (params.get("project") or {}).get("mlflow_experiment", "ldvc")
            inputs = load_mlflow(uri, experiment, runs_dir=runs_dir)
            source = f"MLflow {uri}, experiment {experiment!r}"
        else:
            inputs = load_runs_dir(runs_dir)
            source = str(runs_dir)
        paper_counts = None
        counted = root / "reports" / COUNTS_FILE  # the count stage's record, whatever --out is
        if not (args.count or args.no_count) and counted.is_file():
            paper_counts = read_counts(counted)
        result = build_reports(inputs.records, out, curves=inputs.curves, figures=not args.no_figures,
                               ablation_overrides=ablation, notes=inputs.notes, cross_targets=cross_targets,
                               open_vocab_targets=open_vocab_targets, count_models=not args.no_count,
                               paper_counts=paper_counts, gpu_benchmark=args.gpu_benchmark,
                               # the summaries (metrics/*.json) are of the dataset params.yaml trains on:
                               # runs of another preset's dataset may linger in runs/ (tables show them all)
                               summary_dataset=(params.get("data") or {}).get("dataset"))
    except (ReportError, CountsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(inputs.records)} evaluation records from {source}")
    for name, path in {**result["tables"], **result["figures"]}.items():
        print(f"  {name}: {path}")
    for note in result["notes"]:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
