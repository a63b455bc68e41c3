"""The paper's tables, rebuilt from evaluation records: main results and the ablation.

- Main table (the layout of ZegCLIP's / LDVC's main table): rows are methods grouped by setting
  (inductive, then transductive), columns are datasets x (pAcc, mIoU(S), mIoU(U), hIoU). Reference
  rows carry the published numbers of reference.py, our rows (variants "zegclip" and "ldvc") the
  reproduced ones; every number is followed by its source marker ([P] paper, [D] derived,
  [M] README, [R] reproduced).
- Ablation table: one row per variant (inductive setting), mIoU(S)/(U)/hIoU, fragmentation
  (connected components per image and share of small fragments, prediction vs ground truth),
  learnable/total parameters and training throughput; the default LDVC row is marked.

Formatting (as the paper): one decimal; with more than one seed a cell shows mean ± std. Our
choices: the std is the sample std (ddof=1), the one a reader would use for a confidence interval;
nan values (a class set absent from a split) are left out of the mean; parameters are shown in
millions with two decimals and without a std (they do not depend on the seed). Experiments made
with `dvc exp run` / `dvc queue` are extra rows labelled "(ours, exp: <dvc.exp_name>)".

Each table is written as .md, .csv (the same cells as the .md, so the two can be compared cell by
cell) and .tex (booktabs), each file written to a temporary name and renamed.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import statistics
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ldvc.reports.records import EvalRecord, ReportError
from ldvc.reports.reference import (
    DATASET_TITLES,
    METRIC_COLUMNS,
    REFERENCE_DATASETS,
    REFERENCE_NOTES,
    SETTINGS,
    SOURCE_LEGEND,
    SOURCE_MARKERS,
    RefValue,
    reference_rows,
)

MISSING = "-"
MAIN_VARIANTS: dict[str, str] = {"zegclip": "ZegCLIP", "ldvc": "LDVC"}  # table order: proposed last
DEFAULT_VARIANT = "ldvc"
DATASET_SHORT: dict[str, str] = {"voc": "VOC", "coco_stuff": "COCO-Stuff", "synthetic": "Synthetic",
                                 "coco_json": "COCO-JSON"}
SYNTHETIC_NOTE = (
    "Synthetic columns are measured on this pipeline's synthetic world with a small CLIP trained by "
    "the pipeline: they are NOT comparable with the published PASCAL VOC / COCO-Stuff numbers."
)


# --------------------------------------------------------------------------------------------
# Aggregation over seeds and cell formatting
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    """Mean over seeds; std is the sample std (None with a single seed)."""

    mean: float
    std: float | None
    n: int


def aggregate(values: Iterable[float]) -> Stat | None:
    """Mean ± sample std of the finite values; None when there is none."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None
    return Stat(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None, len(vals))


def format_stat(stat: Stat | None, marker: str | None = None, *, scale: float = 1.0, decimals: int = 1,
                with_std: bool = True) -> str:
    """'45.3', '45.3 ± 1.2', with ' [R]' appended when a source marker is given; '-' when missing."""
    if stat is None:
        return MISSING
    text = f"{stat.mean / scale:.{decimals}f}"
    if with_std and stat.std is not None:
        text += f" ± {stat.std / scale:.{decimals}f}"
    return f"{text} [{marker}]" if marker else text


def format_ref(value: RefValue | None) -> str:
    if value is None:
        return MISSING
    return f"{value.value:.1f} [{SOURCE_MARKERS[value.source]}]"


def _seeds(records: Iterable[EvalRecord]) -> str:
    return ", ".join(str(s) for s in sorted({r.seed for r in records}))


def _groups(records: Iterable[EvalRecord]) -> list[tuple[str | None, str]]:
    """(exp_name, variant) groups: the workspace's runs first, then experiments by name."""
    return sorted({r.group for r in records}, key=lambda g: (g[0] is not None, g[0] or "", g[1]))


# --------------------------------------------------------------------------------------------
# Table model and writers
# --------------------------------------------------------------------------------------------


@dataclass
class Table:
    """Cells as displayed (md and csv hold exactly these strings); tex adds the grouped header."""

    name: str
    caption: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    # LaTeX: (title, span) groups over the header and the short per-column names under them.
    tex_groups: list[tuple[str, int]] = field(default_factory=list)
    tex_header: list[str] = field(default_factory=list)
    section_col: int | None = None  # a rule is drawn where this column's value changes

    def column(self, name: str) -> list[str]:
        i = self.header.index(name)
        return [row[i] for row in self.rows]


def to_markdown(table: Table) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = [f"**{table.caption}**", "", line(table.header), "|" + "|".join("---" for _ in table.header) + "|"]
    out += [line(r) for r in table.rows]
    if table.notes:
        out += ["", "Notes:"] + [f"- {n}" for n in table.notes]
    return "\n".join(out) + "\n"


def to_csv(table: Table) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.header)
    writer.writerows(table.rows)
    return buf.getvalue()


_TEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}
_MARKER = re.compile(r" \[([A-Z])\]$")


def tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in text)


def _tex_cell(text: str) -> str:
    m = _MARKER.search(text)
    body = text[: m.start()] if m else text
    body = tex_escape(body).replace("±", r"$\pm$")
    return body + (rf"\textsuperscript{{{m.group(1)}}}" if m else "")


def to_latex(table: Table) -> str:
    n = len(table.header)
    numeric = [any(ch.isdigit() for r in table.rows for ch in r[i][:1]) for i in range(n)]
    spec = "".join("r" if num else "l" for num in numeric)
    lines = [
        "% Generated by ldvc.reports (python -m ldvc.reports); do not edit by hand.",
        "% Needs \\usepackage{booktabs,graphicx}.",
        r"\begin{table*}[t]",
        r"\centering",
        rf"\caption{{{tex_escape(table.caption)}}}",
        rf"\label{{tab:{table.name}}}",
        r"\resizebox{\linewidth}{!}{%",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
    ]
    if table.tex_groups:
        cells, rules, col = [], [], 1
        for title, span in table.tex_groups:
            cells.append(rf"\multicolumn{{{span}}}{{c}}{{{tex_escape(title)}}}")
            if title:
                rules.append(rf"\cmidrule(lr){{{col}-{col + span - 1}}}")
            col += span
        lines += [" & ".join(cells) + r" \\", " ".join(rules)]
    lines.append(" & ".join(tex_escape(h) for h in (table.tex_header or table.header)) + r" \\")
    lines.append(r"\midrule")
    previous = None
    for row in table.rows:
        if table.section_col is not None and previous is not None and row[table.section_col] != previous:
            lines.append(r"\midrule")
        previous = row[table.section_col] if table.section_col is not None else None
        lines.append(" & ".join(_tex_cell(c) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}"]
    if table.notes:
        lines.append(r"\par\smallskip\footnotesize " + " ".join(tex_escape(n).replace("±", r"$\pm$")
                                                                for n in table.notes))
    lines.append(r"\end{table*}")
    return "\n".join(lines) + "\n"


def atomic_write_text(path: Path, text: str) -> Path:
    """Write to a temporary file in the same directory, then rename: no half-written outputs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_table(table: Table, out_dir: str | Path) -> dict[str, Path]:
    """out_dir/<name>.{md,csv,tex}; returns {"<name>_md": path, ...}."""
    out_dir = Path(out_dir)
    writers = {"md": to_markdown, "csv": to_csv, "tex": to_latex}
    return {f"{table.name}_{ext}": atomic_write_text(out_dir / f"{table.name}.{ext}", fn(table))
            for ext, fn in writers.items()}


# --------------------------------------------------------------------------------------------
# Main table
# --------------------------------------------------------------------------------------------


def table_datasets(records: Iterable[EvalRecord]) -> list[str]:
    """Column groups: the reference datasets, then every other dataset our records cover."""
    present = {r.dataset for r in records}
    order = list(DATASET_TITLES)
    extra = sorted(present - set(order))
    return [d for d in order if d in REFERENCE_DATASETS or d in present] + extra


def method_label(variant: str, exp_name: str | None) -> str:
    name = MAIN_VARIANTS.get(variant, variant)
    return f"{name} (ours)" if exp_name is None else f"{name} (ours, exp: {exp_name})"


def main_table(records: Sequence[EvalRecord]) -> Table:
    """Reference rows + our zegclip/ldvc rows, inductive then transductive (see module docstring)."""
    datasets = table_datasets(records)
    header = ["Setting", "Method", "Seeds"] + [
        f"{DATASET_SHORT.get(d, d)} {label}" for d in datasets for _, label in METRIC_COLUMNS
    ]
    ours = [r for r in records if r.variant in MAIN_VARIANTS]
    groups = [g for g in _groups(ours)]
    groups.sort(key=lambda g: (g[0] is not None, g[0] or "", list(MAIN_VARIANTS).index(g[1])))
    rows: list[list[str]] = []
    ref_notes: dict[str, list[str]] = {}  # note -> methods, so shared notes are printed once
    for setting in SETTINGS:
        for ref in reference_rows(setting):
            cells = [format_ref(ref.values.get(d, {}).get(m)) for d in datasets for m, _ in METRIC_COLUMNS]
            rows.append([setting, ref.method, ""] + cells)
            if ref.note:
                ref_notes.setdefault(ref.note, []).append(ref.method)
        for exp_name, variant in groups:
            mine = [r for r in ours if r.group == (exp_name, variant) and r.setting == setting]
            if not mine:
                continue
            cells = [
                format_stat(aggregate(r.metrics.get(m, math.nan) for r in mine if r.dataset == d),
                            SOURCE_MARKERS["reproduced"])
                for d in datasets for m, _ in METRIC_COLUMNS
            ]
            rows.append([setting, method_label(variant, exp_name), _seeds(mine)] + cells)
    notes = ["Markers: " + "; ".join(f"[{SOURCE_MARKERS[s]}] {text}" for s, text in SOURCE_LEGEND.items()) + "."]
    notes.append("Rows marked (ours) are reproduced by this pipeline: mean ± sample std over the listed seeds "
                 "when more than one seed ran; one decimal; '-' = not reported / not run.")
    if any(r.dataset not in REFERENCE_DATASETS for r in ours):
        notes.append(SYNTHETIC_NOTE)
    notes += [f"{', '.join(methods)}: {note}." for note, methods in ref_notes.items()] + list(REFERENCE_NOTES)
    return Table(
        name="main",
        caption="Zero-shot semantic segmentation: pAcc, mIoU of seen (S) and unseen (U) classes and their "
                "harmonic mean hIoU, in %, inductive and transductive settings",
        header=header,
        rows=rows,
        notes=notes,
        tex_groups=[("", 3)] + [(DATASET_TITLES.get(d, d), len(METRIC_COLUMNS)) for d in datasets],
        tex_header=["Setting", "Method", "Seeds"] + [label for _ in datasets for _, label in METRIC_COLUMNS],
        section_col=0,
    )


# --------------------------------------------------------------------------------------------
# Ablation table
# --------------------------------------------------------------------------------------------

# (metric, column title, scale, decimals, with_std)
ABLATION_COLUMNS: tuple[tuple[str, str, float, int, bool], ...] = (
    ("mIoU_seen", "mIoU(S)", 1.0, 1, True),
    ("mIoU_unseen", "mIoU(U)", 1.0, 1, True),
    ("hIoU", "hIoU", 1.0, 1, True),
    ("frag_components_pred", "Components/img (pred)", 1.0, 1, True),
    ("frag_components_gt", "Components/img (GT)", 1.0, 1, True),
    ("frag_small_share_pred", "Small-fragment % (pred)", 1.0, 1, True),
    ("frag_small_share_gt", "Small-fragment % (GT)", 1.0, 1, True),
    ("learnable_params", "Learnable params (M)", 1e6, 2, False),
    ("total_params", "Total params (M)", 1e6, 2, False),
    ("train_images_per_s", "Train images/s", 1.0, 1, True),
)


def describe_overrides(overrides: Mapping[str, Any]) -> str:
    """{"decoder": {"route_topk": 1}} or {"decoder.route_topk": 1} -> 'decoder.route_topk=1'."""
    flat: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, Mapping) and v:
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    walk(overrides, "")
    # YAML spelling (false, not False), as a user would write the override in params.yaml.
    return ", ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in flat.items())


def variant_label(variant: str, exp_name: str | None) -> str:
    if exp_name is not None:
        return f"{variant} (exp: {exp_name})"
    return f"{variant} (default)" if variant == DEFAULT_VARIANT else variant


# Params that differ between runs without changing the method.
_NOT_A_CHANGE = ("seeds", "project.seed", "eval.checkpoint", "ablation.")


def params_diff(params: Mapping[str, str], base: Mapping[str, str]) -> str:
    """'key=value, ...' for the run params that differ from the baseline run's (MLflow records)."""
    keys = sorted(k for k in set(params) | set(base)
                  if params.get(k) != base.get(k) and not k.startswith(_NOT_A_CHANGE))
    return ", ".join(f"{k}={params.get(k, '(unset)')}" for k in keys) or "none"


def _changes(variant: str, exp_name: str | None, mine: Sequence[EvalRecord], records: Sequence[EvalRecord],
             overrides: Mapping[str, Mapping[str, Any]]) -> str:
    if exp_name is None:
        if variant == DEFAULT_VARIANT:
            return "none (params.yaml)"
        return describe_overrides(overrides[variant]) if variant in overrides else ""
    # An experiment: compare its logged params with the workspace run of the same variant (else LDVC's).
    with_params = next((r for r in mine if r.params), None)
    for base_variant in (variant, DEFAULT_VARIANT):
        base = next((r for r in records if r.exp_name is None and r.variant == base_variant and r.params), None)
        if with_params is not None and base is not None:
            return params_diff(with_params.params, base.params)
    return f"dvc experiment {exp_name}"


def ablation_table(records: Sequence[EvalRecord],
                   ablation_overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Table:
    """One row per (experiment, variant, dataset) of the inductive records; default LDVC first."""
    overrides = dict(ablation_overrides or {})
    inductive = [r for r in records if r.setting == "inductive"]
    known = [DEFAULT_VARIANT] + list(overrides)
    groups = sorted(_groups(inductive), key=lambda g: (
        g[0] is not None, g[0] or "", known.index(g[1]) if g[1] in known else len(known), g[1]))
    header = ["Variant", "Changes", "Dataset", "Seeds"] + [title for _, title, *_ in ABLATION_COLUMNS]
    rows = []
    for exp_name, variant in groups:
        mine = [r for r in inductive if r.group == (exp_name, variant)]
        changes = _changes(variant, exp_name, mine, inductive, overrides)
        for dataset in sorted({r.dataset for r in mine}):
            recs = [r for r in mine if r.dataset == dataset]
            cells = [
                format_stat(aggregate(r.metrics.get(m, math.nan) for r in recs), scale=scale,
                            decimals=dec, with_std=std)
                for m, _, scale, dec, std in ABLATION_COLUMNS
            ]
            rows.append([variant_label(variant, exp_name), changes, DATASET_SHORT.get(dataset, dataset),
                         _seeds(recs)] + cells)
    notes = [
        f"'{DEFAULT_VARIANT} (default)' is the default LDVC configuration of params.yaml; every other row changes "
        "only the listed keys. Inductive setting, reproduced by this pipeline.",
        "Mean ± sample std over the listed seeds when more than one seed ran; one decimal; parameters in "
        "millions; '-' = not logged.",
        "Components/img: connected components per predicted (GT) class and image; small-fragment %: share "
        "of class pixels in components below eval.small_fragment_px.",
    ]
    if any(r.dataset not in REFERENCE_DATASETS for r in inductive):
        notes.append(SYNTHETIC_NOTE)
    return Table(
        name="ablation",
        caption="Ablation of LDVC's components (inductive): segmentation quality, fragmentation and cost",
        header=header,
        rows=rows,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# Summary metrics for the report stage (metrics/inductive.json, metrics/transductive.json)
# --------------------------------------------------------------------------------------------

SUMMARY_KEYS: tuple[str, ...] = ("pAcc", "mIoU_seen", "mIoU_unseen", "hIoU")


ABLATION_SUMMARY_KEYS: tuple[str, ...] = ("mIoU_seen", "mIoU_unseen", "hIoU", "frag_components_pred",
                                          "frag_small_share_pred", "learnable_params", "train_images_per_s")


def _mean_std(records: Sequence[EvalRecord], keys: Sequence[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in keys:
        stat = aggregate(r.metrics.get(key, math.nan) for r in records)
        if stat is None:
            continue
        out[key] = round(stat.mean, 4)
        if stat.std is not None:
            out[f"{key}_std"] = round(stat.std, 4)
    return out


def _one_dataset(records: Sequence[EvalRecord], dataset: str | None, what: str) -> list[EvalRecord]:
    datasets = sorted({r.dataset for r in records})
    if dataset is None and len(datasets) > 1:
        raise ReportError(f"{what} cover several datasets {datasets}; pass the one to summarize "
                          "(build_reports(summary_dataset=...))")
    return [r for r in records if dataset is None or r.dataset == dataset]


def summarize(records: Sequence[EvalRecord], *, variant: str = DEFAULT_VARIANT, exp_name: str | None = None,
              dataset: str | None = None) -> dict[str, dict[str, float]]:
    """{setting: {pAcc, mIoU_seen, mIoU_unseen, hIoU[, *_std]}}: mean over seeds (percent)."""
    mine = _one_dataset([r for r in records if r.variant == variant and r.exp_name == exp_name], dataset,
                        f"records of {variant!r}")
    return {setting: _mean_std(recs, SUMMARY_KEYS) for setting in SETTINGS
            if (recs := [r for r in mine if r.setting == setting])}


def summarize_ablation(records: Sequence[EvalRecord], *, exp_name: str | None = None,
                       dataset: str | None = None) -> dict[str, dict[str, float]]:
    """{variant: {mIoU_seen, mIoU_unseen, hIoU, fragmentation, params, images/s[, *_std]}} (inductive),
    for metrics/ablation.json."""
    mine = _one_dataset([r for r in records if r.setting == "inductive" and r.exp_name == exp_name], dataset,
                        "ablation records")
    return {variant: _mean_std([r for r in mine if r.variant == variant], ABLATION_SUMMARY_KEYS)
            for variant in sorted({r.variant for r in mine})}
