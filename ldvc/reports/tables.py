"""The paper's tables, rebuilt from evaluation records: main results, cross-dataset, ablation.

- Main table (the layout of ZegCLIP's / LDVC's main table): rows are methods grouped by setting
  (inductive, transductive, then the fully supervised upper bound), columns are datasets x (pAcc,
  mIoU(S), mIoU(U), hIoU): every reference dataset (VOC, COCO-Stuff, PASCAL Context-59) and every
  dataset our records cover. Reference rows carry the published numbers of reference.py; our rows
  are the records of the main variants ("zegclip", "ldvc") and every fully supervised record.
- Cross-dataset table: the main model of each source dataset evaluated on other datasets
  (runs/cross/<target>/), columns per target x (pAcc, mIoU); no reference row (reference.py).
- Ablation table: one row per variant (inductive; the fully supervised variant labelled as the
  upper bound), mIoU(S)/(U)/hIoU, fragmentation, learnable/total parameters, training throughput,
  and the protocol each row follows; the default LDVC row is marked.

Where a number came from is never hidden: every number of the main and cross tables is followed
by its source marker ([P] paper, [D] derived, [M] README, [R] reproduced), and a reproduced cell
whose records deviate from their protocol (ldvc/protocol.py) is marked [R*] instead, with a
footnote per row listing the deviating keys and values ([R?]: conformance not recorded). A
"Protocol" column names each row's protocol (and its deviating keys), so the csv, which holds no
notes, still says it. The legend under a table explains the markers it uses.

Our choices:
- Row labels follow the record's decoder (lctd -> LDVC, zegclip -> ZegCLIP), not the variant name;
  the variant is added when the two disagree, an imported checkpoint is "(released checkpoint, our
  evaluation)", a row evaluated with the unseen vocabulary says "(unseen vocabulary)". Records that
  differ in any of these are separate rows, never averaged together.
- A cell aggregating several records is [R*] if any of them deviates (the mean then deviates too).
- Formatting (as the paper): one decimal; with more than one seed a cell shows mean ± std, the
  sample std (ddof=1), the one a reader would use for a confidence interval; nan values (a class
  set absent from a split) are left out of the mean; parameters are shown in millions with two
  decimals and without a std (they do not depend on the seed). Experiments made with
  `dvc exp run` / `dvc queue` are extra rows labelled "(ours, exp: <dvc.exp_name>)".

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ldvc.reports.records import EvalRecord, ReportError
from ldvc.reports.reference import (
    CROSS_METRIC_COLUMNS,
    CROSS_REFERENCE_NOTE,
    DATASET_TITLES,
    METRIC_COLUMNS,
    REFERENCE_DATASETS,
    REFERENCE_NOTES,
    SETTING_TITLES,
    SETTINGS,
    SOURCE_LEGEND,
    SOURCE_MARKERS,
    ZERO_SHOT_SETTINGS,
    RefValue,
    reference_rows,
)

MISSING = "-"
MAIN_VARIANTS: dict[str, str] = {"zegclip": "ZegCLIP", "ldvc": "LDVC"}  # table order: proposed last
DECODER_METHODS: dict[str, str] = {"zegclip": "ZegCLIP", "lctd": "LDVC"}
DEFAULT_VARIANT = "ldvc"
ABLATION_SETTINGS: tuple[str, ...] = ("inductive", "fully_supervised")
DATASET_SHORT: dict[str, str] = {"voc": "VOC", "coco_stuff": "COCO-Stuff", "context59": "Context-59",
                                 "voc21": "VOC-21", "context60": "Context-60", "context459": "Context-459",
                                 "ade20k_150": "ADE20K-150", "ade20k_847": "ADE20K-847",
                                 "synthetic": "Synthetic", "synthetic_shifted": "Synthetic-shifted",
                                 "synthetic_wide": "Synthetic-wide", "coco_json": "COCO-JSON"}
SYNTHETIC_NOTE = (
    "Synthetic columns are measured on this pipeline's synthetic world with a small CLIP trained by "
    "the pipeline (their own protocol, presets/synthetic.yaml): they are NOT comparable with the published "
    "PASCAL VOC / COCO-Stuff / Context-59 numbers."
)
USER_DATA_NOTE = "COCO-JSON columns are the user's own COCO-format dataset: no published numbers exist for it."
FULLY_SUPERVISED_NOTE = (
    "fully supervised (upper bound, not zero-shot): trained on every class (split.unseen = []) and evaluated "
    "without calibration; mIoU(S) / mIoU(U) / hIoU still use the benchmark's zero-shot partition, so they "
    "compare with the rows above. Its split.unseen = [] is the setting itself, not a protocol deviation."
)
UNSEEN_VOCABULARY_NOTE = (
    "(unseen vocabulary): evaluated with only the unseen class names as candidates and only unseen-class "
    "pixels scored (eval.vocabulary = unseen): the non-generalised zero-shot number, NOT comparable with "
    "the generalised rows; its mIoU(S), pAcc and hIoU are not meaningful."
)
IMPORTED_NOTE = (
    "(released checkpoint, our evaluation): a checkpoint imported from the method's public release "
    "(ldvc import-zegclip), not trained by us, evaluated with this pipeline's evaluation; its protocol "
    "status is judged by the config the import records."
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


def format_ref(value: RefValue | None, decimals: int = 1) -> str:
    if value is None:
        return MISSING
    return f"{value.value:.{decimals}f} [{SOURCE_MARKERS[value.source]}]"


def _seeds(records: Iterable[EvalRecord]) -> str:
    return ", ".join(str(s) for s in sorted({r.seed for r in records}))


def _groups(records: Iterable[EvalRecord]) -> list[tuple[str | None, str]]:
    """(exp_name, variant) groups: the workspace's runs first, then experiments by name."""
    return sorted({r.group for r in records}, key=lambda g: (g[0] is not None, g[0] or "", g[1]))


def dataset_short(dataset: str) -> str:
    return DATASET_SHORT.get(dataset, dataset)


def is_synthetic(dataset: str) -> bool:
    return dataset == "synthetic" or dataset.startswith("synthetic_")


# --------------------------------------------------------------------------------------------
# Protocol marks
# --------------------------------------------------------------------------------------------


def reproduced_marker(records: Sequence[EvalRecord]) -> str:
    """[R] when every record is conformant to its protocol, [R*] when any deviates, else [R?]."""
    statuses = {r.protocol_status for r in records}
    if "deviating" in statuses:
        return SOURCE_MARKERS["reproduced_deviating"]
    if "unknown" in statuses:
        return SOURCE_MARKERS["reproduced_unknown"]
    return SOURCE_MARKERS["reproduced"]


class DeviationNotes:
    """The numbered footnotes of a table's deviating rows: what differs from which protocol."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, records: Sequence[EvalRecord]) -> int | None:
        """A footnote for the row `where` when any of its records deviates; returns its number."""
        deviating = [r for r in records if r.protocol_status == "deviating"]
        if not deviating:
            return None
        by_text: dict[tuple[str, str, str], list[int]] = {}
        for r in sorted(deviating, key=lambda r: (r.dataset, r.seed)):
            by_text.setdefault((dataset_short(r.dataset), r.protocol or "?", r.deviations_text), []).append(r.seed)
        parts = [f"{d}, seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, sorted(set(seeds))))}, protocol "
                 f"{protocol}: {text}" for (d, protocol, text), seeds in by_text.items()]
        self.items.append(f"({len(self.items) + 1}) {where}: " + "; ".join(parts))
        return len(self.items)

    def notes(self) -> list[str]:
        if not self.items:
            return []
        return ["Protocol deviations of the [R*] rows (key=value (protocol: expected); ldvc/protocol.py): "
                + " ".join(self.items)]


def protocol_cell(records: Sequence[EvalRecord], note: int | None) -> str:
    """'voc', 'voc, deviates in train.iters (note 1)', 'not recorded' ... for the records of a row."""
    parts = []
    for protocol in sorted({r.protocol for r in records}):
        recs = [r for r in records if r.protocol == protocol]
        statuses = {r.protocol_status for r in recs}
        name = protocol or "protocol not recorded"
        if "deviating" in statuses:
            keys = sorted({k for r in recs for k in r.deviations()}) or ["unlisted keys"]
            parts.append(f"{name}, deviates in {', '.join(keys)} (note {note})")
        elif "unknown" in statuses:
            parts.append(f"{name}, conformance not recorded" if protocol else name)
        else:
            exempt = sorted({k for r in recs for k in r.exempt_deviations})
            parts.append(f"{name}, every class seen ({', '.join(exempt)} by definition)" if exempt else name)
    return "; ".join(parts)


def used_markers(rows: Iterable[Sequence[str]]) -> list[str]:
    found = {m.group(1) for row in rows for cell in row if (m := _MARKER.search(cell))}
    return [k for k, v in SOURCE_MARKERS.items() if v in found]


def legend(rows: Iterable[Sequence[str]]) -> list[str]:
    """'Markers: [P] ...; [R] ...' for the markers the rows use (none: no legend)."""
    used = used_markers(rows)
    if not used:
        return []
    return ["Markers: " + "; ".join(f"[{SOURCE_MARKERS[s]}] {SOURCE_LEGEND[s]}" for s in used) + "."]


# --------------------------------------------------------------------------------------------
# Row identity and labels
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowKey:
    """What makes two records one row: experiment, variant, method (decoder), import, vocabulary."""

    exp_name: str | None
    variant: str
    method: str
    imported: bool
    vocabulary: str


def method_name(record: EvalRecord) -> str:
    """The method a record evaluates: its decoder's name, else the variant's."""
    return DECODER_METHODS.get(record.decoder) or MAIN_VARIANTS.get(record.variant, record.variant)


def row_key(record: EvalRecord) -> RowKey:
    return RowKey(record.exp_name, record.variant, method_name(record), record.imported, record.vocabulary)


def row_label(key: RowKey) -> str:
    """'LDVC (ours)', 'ZegCLIP (released checkpoint, our evaluation)', 'LDVC (ours, variant x, exp: y)',
    '... (unseen vocabulary)'."""
    parts = ["released checkpoint, our evaluation" if key.imported else "ours"]
    main_name = MAIN_VARIANTS.get(key.variant)
    if main_name != key.method and not (key.imported and main_name is not None):
        parts.append(f"variant {key.variant}")
    if key.exp_name is not None:
        parts.append(f"exp: {key.exp_name}")
    label = f"{key.method} ({', '.join(parts)})"
    return label + (f" ({key.vocabulary} vocabulary)" if key.vocabulary != "all" else "")


def row_order(key: RowKey) -> tuple[Any, ...]:
    """Workspace rows first, then experiments by name; released checkpoints, ZegCLIP, LDVC, others."""
    methods = list(MAIN_VARIANTS.values())
    rank = methods.index(key.method) if key.method in methods else len(methods)
    return (key.exp_name is not None, key.exp_name or "", not key.imported, rank, key.method, key.variant,
            key.vocabulary != "all", key.vocabulary)


def method_label(variant: str, exp_name: str | None) -> str:
    """A variant's label from its name alone (figures; tables label rows with `row_label`)."""
    name = MAIN_VARIANTS.get(variant, variant)
    return f"{name} (ours)" if exp_name is None else f"{name} (ours, exp: {exp_name})"


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
_MARKER = re.compile(r" \[([A-Z][*?]?)\]$")


def tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in text)


def _tex_cell(text: str) -> str:
    m = _MARKER.search(text)
    body = text[: m.start()] if m else text
    body = tex_escape(body).replace("±", r"$\pm$")
    return body + (rf"\textsuperscript{{{m.group(1)}}}" if m else "")


def to_latex(table: Table) -> str:
    n = len(table.header)
    numeric = [bool(table.rows) and any(ch.isdigit() for r in table.rows for ch in r[i][:1]) for i in range(n)]
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


def main_records(records: Iterable[EvalRecord]) -> list[EvalRecord]:
    """The records the main table shows: the main variants' zero-shot runs, every fully supervised run."""
    return [r for r in records if (r.setting in ZERO_SHOT_SETTINGS and r.variant in MAIN_VARIANTS)
            or r.setting == "fully_supervised"]


def table_datasets(records: Iterable[EvalRecord]) -> list[str]:
    """Column groups: the reference datasets, then every other dataset the records cover."""
    present = {r.dataset for r in records}
    order = list(DATASET_TITLES)
    extra = sorted(present - set(order))
    return [d for d in order if d in REFERENCE_DATASETS or d in present] + extra


def _dataset_notes(records: Sequence[EvalRecord]) -> list[str]:
    notes = []
    if any(is_synthetic(r.dataset) for r in records):
        notes.append(SYNTHETIC_NOTE)
    if any(r.dataset == "coco_json" for r in records):
        notes.append(USER_DATA_NOTE)
    return notes


def _our_rows(block: Sequence[EvalRecord], lead: str, context: str, groups: Sequence[str],
              group_of: Callable[[EvalRecord], str], columns: Sequence[tuple[str, str]],
              deviations: DeviationNotes) -> list[list[str]]:
    """One row per method/variant of `block`: [lead, label, seeds, protocol] + for each group (dataset
    or cross target) the mean ± std of each column over that group's seeds; deviations footnoted under
    "<context>, <label>"."""
    rows = []
    for key in sorted({row_key(r) for r in block}, key=row_order):
        mine = [r for r in block if row_key(r) == key]
        label = row_label(key)
        cells = []
        for group in groups:
            recs = [r for r in mine if group_of(r) == group]
            marker = reproduced_marker(recs)
            cells += [format_stat(aggregate(r.metrics.get(m, math.nan) for r in recs), marker) for m, _ in columns]
        note = deviations.add(f"{context}, {label}", mine)
        rows.append([lead, label, _seeds(mine), protocol_cell(mine, note)] + cells)
    return rows


def main_table(records: Sequence[EvalRecord]) -> Table:
    """Reference rows + our rows per setting block, protocol marks and notes (module docstring)."""
    ours = main_records(records)
    datasets = table_datasets(ours)
    header = ["Setting", "Method", "Seeds", "Protocol"] + [
        f"{dataset_short(d)} {label}" for d in datasets for _, label in METRIC_COLUMNS
    ]
    rows: list[list[str]] = []
    ref_notes: dict[str, list[str]] = {}  # note -> methods, so shared notes are printed once
    deviations = DeviationNotes()
    for setting in SETTINGS:
        title = SETTING_TITLES[setting]
        for ref in reference_rows(setting):
            cells = [format_ref(ref.values.get(d, {}).get(m)) for d in datasets for m, _ in METRIC_COLUMNS]
            rows.append([title, ref.method, "", "published"] + cells)
            if ref.note:
                ref_notes.setdefault(ref.note, []).append(ref.method)
        block = [r for r in ours if r.setting == setting]
        rows += _our_rows(block, title, title, datasets, lambda r: r.dataset, METRIC_COLUMNS, deviations)
    notes = legend(rows)
    notes.append("Rows marked (ours) are reproduced by this pipeline: mean ± sample std over the listed seeds "
                 "when more than one seed ran; one decimal; '-' = not reported / not run. Protocol: the preset "
                 "(presets/<protocol>.yaml) whose protocol-defining keys the row's runs were checked against.")
    notes.append(FULLY_SUPERVISED_NOTE)
    if any(r.vocabulary != "all" for r in ours):
        notes.append(UNSEEN_VOCABULARY_NOTE)
    if any(r.imported for r in ours):
        notes.append(IMPORTED_NOTE)
    notes += _dataset_notes(ours)
    notes += deviations.notes()
    notes += [f"{', '.join(methods)}: {note}." for note, methods in ref_notes.items()] + list(REFERENCE_NOTES)
    return Table(
        name="main",
        caption="Zero-shot semantic segmentation, generalised setting (every class of the dataset is a candidate "
                "at test time, eval.vocabulary = all): pAcc, mIoU of seen (S) and unseen (U) classes and their "
                "harmonic mean hIoU, in %; inductive, transductive and the fully supervised upper bound",
        header=header,
        rows=rows,
        notes=notes,
        tex_groups=[("", 4)] + [(DATASET_TITLES.get(d, d), len(METRIC_COLUMNS)) for d in datasets],
        tex_header=["Setting", "Method", "Seeds", "Protocol"] + [label for _ in datasets
                                                                 for _, label in METRIC_COLUMNS],
        section_col=0,
    )


# --------------------------------------------------------------------------------------------
# Cross-dataset table
# --------------------------------------------------------------------------------------------


def _target(record: EvalRecord) -> str:
    return record.cross_target or record.dataset


def cross_table(records: Sequence[EvalRecord]) -> Table:
    """Our models (per source dataset) evaluated on each cross-dataset target: pAcc and mIoU."""
    cross = [r for r in records if r.setting == "cross"]
    dataset_of = {_target(r): r.dataset for r in sorted(cross, key=lambda r: r.start_time)}
    order = list(DATASET_TITLES)
    targets = sorted(dataset_of, key=lambda t: (order.index(dataset_of[t]) if dataset_of[t] in order
                                                else len(order), dataset_of[t], t))
    shorts = [dataset_short(dataset_of[t]) for t in targets]

    def col_name(t: str) -> str:
        short = dataset_short(dataset_of[t])
        return short if shorts.count(short) == 1 else f"{t} ({short})"

    header = ["Source", "Method", "Seeds", "Protocol"] + [f"{col_name(t)} {label}" for t in targets
                                                          for _, label in CROSS_METRIC_COLUMNS]
    rows: list[list[str]] = []
    deviations = DeviationNotes()
    sources = sorted({r.source_dataset or "" for r in cross}, key=lambda d: (order.index(d) if d in order
                                                                           else len(order), d))
    for source in sources:
        block = [r for r in cross if (r.source_dataset or "") == source]
        source_label = dataset_short(source) if source else "not recorded"
        rows += _our_rows(block, source_label, f"trained on {source_label}", targets, _target,
                          CROSS_METRIC_COLUMNS, deviations)
    notes = legend(rows)
    notes.append("Cross-dataset evaluation: the main inductive model of each seed evaluated on another dataset "
                 "with that dataset's class names; every target class is a candidate and counts as seen, no "
                 "seen-class calibration (ZegCLIP's configs/cross_dataset); only pAcc and mIoU are meaningful. "
                 "Mean ± sample std over the listed seeds; one decimal.")
    if not cross:
        notes.append("No cross-dataset evaluation in the records: params.yaml's cross_dataset is empty or the "
                     "evaluate_cross stage has not run.")
    notes.append(CROSS_REFERENCE_NOTE)
    notes += _dataset_notes(cross)
    notes += deviations.notes()
    groups = [(f"{DATASET_TITLES.get(dataset_of[t], dataset_of[t])}"
               + (f" [{t}]" if t != dataset_of[t] else ""), len(CROSS_METRIC_COLUMNS)) for t in targets]
    return Table(
        name="cross",
        caption="Cross-dataset zero-shot transfer: a model trained on the source dataset evaluated on other "
                "datasets' validation sets with their class names; pAcc and mIoU in %",
        header=header,
        rows=rows,
        notes=notes,
        tex_groups=[("", 4)] + groups if targets else [],
        tex_header=["Source", "Method", "Seeds", "Protocol"] + [label for _ in targets
                                                                for _, label in CROSS_METRIC_COLUMNS],
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


def _ablation_label(variant: str, exp_name: str | None, records: Sequence[EvalRecord]) -> str:
    """variant_label plus what the records say the row is (upper bound, released checkpoint, method)."""
    label = variant_label(variant, exp_name)
    if records and all(r.setting == "fully_supervised" for r in records):
        label += " (fully supervised upper bound, not zero-shot)"
    methods = sorted({method_name(r) for r in records})
    if any(r.imported for r in records):
        label += f" (released {'/'.join(methods)} checkpoint, our evaluation)"
    elif variant in MAIN_VARIANTS and methods != [MAIN_VARIANTS[variant]]:
        label += f" (evaluates a {'/'.join(methods)} model)"
    if any(r.vocabulary != "all" for r in records):
        label += " (unseen vocabulary)"
    return label


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
    """One row per (experiment, variant, dataset) of the inductive and fully supervised records;
    default LDVC first."""
    overrides = dict(ablation_overrides or {})
    inductive = [r for r in records if r.setting in ABLATION_SETTINGS]
    known = [DEFAULT_VARIANT] + list(overrides)
    groups = sorted(_groups(inductive), key=lambda g: (
        g[0] is not None, g[0] or "", known.index(g[1]) if g[1] in known else len(known), g[1]))
    header = ["Variant", "Changes", "Protocol", "Dataset", "Seeds"] + [title for _, title, *_ in ABLATION_COLUMNS]
    rows = []
    deviations = DeviationNotes()
    for exp_name, variant in groups:
        mine = [r for r in inductive if r.group == (exp_name, variant)]
        changes = _changes(variant, exp_name, mine, inductive, overrides)
        for dataset in sorted({r.dataset for r in mine}):
            recs = [r for r in mine if r.dataset == dataset]
            label = _ablation_label(variant, exp_name, recs)
            note = deviations.add(label, recs)  # the footnote names the dataset itself
            cells = [
                format_stat(aggregate(r.metrics.get(m, math.nan) for r in recs), scale=scale,
                            decimals=dec, with_std=std)
                for m, _, scale, dec, std in ABLATION_COLUMNS
            ]
            rows.append([label, changes, protocol_cell(recs, note), dataset_short(dataset), _seeds(recs)] + cells)
    notes = [
        f"'{DEFAULT_VARIANT} (default)' is the default LDVC configuration of params.yaml; every other row changes "
        "only the listed keys. Inductive setting (the fully supervised variant: trained on every class, the upper "
        "bound), reproduced by this pipeline.",
        "Mean ± sample std over the listed seeds when more than one seed ran; one decimal; parameters in "
        "millions; '-' = not logged.",
        "Protocol: the preset whose protocol-defining keys each row's runs were checked against (ldvc/protocol.py) "
        "and the keys that deviate; a variant that changes a protocol-defining key deviates by construction.",
        "Components/img: connected components per predicted (GT) class and image; small-fragment %: share "
        "of class pixels in components below eval.small_fragment_px.",
    ]
    notes += _dataset_notes(inductive)
    notes += deviations.notes()
    return Table(
        name="ablation",
        caption="Ablation of LDVC's components (inductive; fully supervised upper bound): segmentation quality, "
                "fragmentation and cost",
        header=header,
        rows=rows,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# Summary metrics for the report stage (metrics/{inductive,transductive,ablation,cross}.json)
# --------------------------------------------------------------------------------------------

SUMMARY_KEYS: tuple[str, ...] = ("pAcc", "mIoU_seen", "mIoU_unseen", "hIoU")
CROSS_SUMMARY_KEYS: tuple[str, ...] = ("pAcc", "mIoU")


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
    """{setting: {pAcc, mIoU_seen, mIoU_unseen, hIoU[, *_std]}}: mean over seeds (percent), zero-shot settings."""
    mine = _one_dataset([r for r in records if r.variant == variant and r.exp_name == exp_name
                         and r.setting in ZERO_SHOT_SETTINGS], dataset, f"records of {variant!r}")
    return {setting: _mean_std(recs, SUMMARY_KEYS) for setting in ZERO_SHOT_SETTINGS
            if (recs := [r for r in mine if r.setting == setting])}


def summarize_ablation(records: Sequence[EvalRecord], *, exp_name: str | None = None,
                       dataset: str | None = None) -> dict[str, dict[str, float]]:
    """{variant: {mIoU_seen, mIoU_unseen, hIoU, fragmentation, params, images/s[, *_std]}} (inductive and
    fully supervised variants), for metrics/ablation.json."""
    mine = _one_dataset([r for r in records if r.setting in ABLATION_SETTINGS and r.exp_name == exp_name],
                        dataset, "ablation records")
    return {variant: _mean_std([r for r in mine if r.variant == variant], ABLATION_SUMMARY_KEYS)
            for variant in sorted({r.variant for r in mine})}


def summarize_cross(records: Sequence[EvalRecord], *, variant: str = DEFAULT_VARIANT,
                    exp_name: str | None = None) -> dict[str, dict[str, float]]:
    """{target: {pAcc, mIoU[, *_std]}}: the main model's cross-dataset results, mean over seeds
    (metrics/cross.json)."""
    mine = [r for r in records if r.setting == "cross" and r.variant == variant and r.exp_name == exp_name]
    return {target: _mean_std([r for r in mine if _target(r) == target], CROSS_SUMMARY_KEYS)
            for target in sorted({_target(r) for r in mine})}
