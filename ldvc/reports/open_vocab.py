"""The open-vocabulary table: a model trained on EVERY class of its training dataset, evaluated
unchanged on other datasets' full vocabularies (SAN / CAT-Seg / FC-CLIP's protocol), mIoU per target.

Rows: the published rows of reference.OPEN_VOCAB_REFERENCES (only numbers found in a citable source
for a ViT-B/16 CLIP; the others are named in a note), then ours: the records of setting
"open_vocab" (runs/open_vocab/<target>/seed<s>/, stage evaluate_open_vocab), one row per
(experiment, variant, method). Columns: method, training set, CLIP, resolution, whether the CLIP
was fine-tuned, seeds, protocol, then one mIoU column per target: the papers' six (A-847, PC-459,
A-150, PC-59, PAS-20, PAS-21; reference.OPEN_VOCAB_TARGETS) and every other target our records
cover (the synthetic `wide` world). Markers as in every table ([M] README, [R] / [R*] reproduced).

Our choices:
- A target column is the target's DATASET (ldvc.pipeline.dataset_label), so a row reads the same
  whatever the target was called in params.yaml; two targets of one dataset get one column each,
  named by their key.
- Our rows' training-set / CLIP / resolution cells come from the records (metrics.json
  `source_dataset`, `num_training_classes`, `clip_model`, `image_size`); the CLIP is never
  fine-tuned here (frozen weights; deep visual and text prompts and the decoder are trained).
- Per target, the classes never in the model's training vocabulary (ldvc.pipeline.novel_classes)
  are counted in a note with their mIoU beside that of the other classes: the table itself holds
  mIoU over every class, as the papers print it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ldvc.protocol import deviations_link
from ldvc.reports.records import EvalRecord
from ldvc.reports.reference import DATASET_TITLES, OPEN_VOCAB_REFERENCE_NOTE, OPEN_VOCAB_REFERENCES, OPEN_VOCAB_TARGETS
from ldvc.reports.tables import (
    MISSING,
    DeviationNotes,
    Table,
    _dataset_notes,
    _seeds,
    aggregate,
    dataset_short,
    format_ref,
    format_stat,
    legend,
    protocol_cell,
    reproduced_marker,
    row_key,
    row_order,
)

SETTING = "open_vocab"
SUMMARY_KEYS: dict[str, str] = {"mIoU": "mIoU", "pAcc": "pAcc", "mIoU_seen": "mIoU_base", "mIoU_unseen": "mIoU_novel"}
OURS_CLIP_FINETUNED = "no (frozen; prompts and decoder trained)"


def open_vocab_records(records: Sequence[EvalRecord]) -> list[EvalRecord]:
    return [r for r in records if r.setting == SETTING]


def _target(record: EvalRecord) -> str:
    return record.cross_target or record.dataset


def target_columns(records: Sequence[EvalRecord]) -> list[tuple[str, str, str | None]]:
    """(column title, dataset, target key or None) per column: the papers' targets, then ours."""
    ours = open_vocab_records(records)
    columns: list[tuple[str, str, str | None]] = []
    for dataset, title in OPEN_VOCAB_TARGETS.items():
        keys = sorted({_target(r) for r in ours if r.dataset == dataset})
        if len(keys) <= 1:
            columns.append((title, dataset, None))
        else:  # two targets of one dataset: one column each
            columns += [(f"{title} [{k}]", dataset, k) for k in keys]
    order = list(DATASET_TITLES)
    extra = sorted({r.dataset for r in ours} - set(OPEN_VOCAB_TARGETS),
                   key=lambda d: (order.index(d) if d in order else len(order), d))
    for dataset in extra:
        keys = sorted({_target(r) for r in ours if r.dataset == dataset})
        columns += [(dataset_short(dataset) if len(keys) == 1 else f"{dataset_short(dataset)} [{k}]", dataset,
                     None if len(keys) == 1 else k) for k in keys]
    return columns


def _in_column(record: EvalRecord, dataset: str, key: str | None) -> bool:
    return record.dataset == dataset and (key is None or _target(record) == key)


def _training_cell(records: Sequence[EvalRecord]) -> str:
    parts = []
    for source in sorted({r.source_dataset or "" for r in records}):
        counts = sorted({int(r.metrics["num_training_classes"]) for r in records
                         if (r.source_dataset or "") == source and math.isfinite(r.metrics.get("num_training_classes",
                                                                                                math.nan))})
        name = DATASET_TITLES.get(source, source) if source else "not recorded"
        parts.append(name + (f" ({'/'.join(map(str, counts))} classes)" if counts else ""))
    return "; ".join(parts)


def _fact_cell(records: Sequence[EvalRecord], attr: str, fmt: str = "{}") -> str:
    values = sorted({getattr(r, attr) for r in records if getattr(r, attr) not in (None, "")}, key=str)
    return ", ".join(fmt.format(v) for v in values) or MISSING


def _novel_notes(label: str, records: Sequence[EvalRecord], columns: Sequence[tuple[str, str, str | None]]
                 ) -> list[str]:
    """'<label> on <target>: k of n classes never in its training vocabulary: mIoU a on them, b on the others'."""
    out = []
    for title, dataset, key in columns:
        recs = [r for r in records if _in_column(r, dataset, key)]
        if not recs:
            continue
        novel = sorted({c for r in recs for c in r.novel_classes})
        n_classes = aggregate(r.metrics.get("num_classes", math.nan) for r in recs)
        total = f" of {int(n_classes.mean)}" if n_classes else ""
        if not novel:
            out.append(f"{label} on {title}: every class{total} was in its training vocabulary.")
            continue
        novel_stat = aggregate(r.metrics.get("mIoU_unseen", math.nan) for r in recs)
        base_stat = aggregate(r.metrics.get("mIoU_seen", math.nan) for r in recs)
        shown = ", ".join(novel[:12]) + (f", ... ({len(novel) - 12} more)" if len(novel) > 12 else "")
        out.append(f"{label} on {title}: {len(novel)}{total} classes never in its training vocabulary ({shown}): "
                   f"mIoU {format_stat(novel_stat)} on them, {format_stat(base_stat)} on the others "
                   f"(figure open_vocab_{dataset}{'_' + key if key else ''}.png).")
    return out


def open_vocab_table(records: Sequence[EvalRecord]) -> Table:
    """Published rows, then ours; one mIoU column per target (module docstring)."""
    ours = open_vocab_records(records)
    columns = target_columns(records)
    fixed = ["Method", "Training set", "CLIP", "Resolution", "CLIP fine-tuned", "Seeds", "Protocol"]
    header = fixed + [title for title, _, _ in columns]
    rows: list[list[str]] = []
    notes_after: list[str] = []
    for ref in OPEN_VOCAB_REFERENCES:
        cells = [format_ref(ref.values.get(dataset)) if key is None else MISSING for _, dataset, key in columns]
        rows.append([ref.method, ref.training, ref.clip, ref.resolution, ref.clip_finetuned, "", "published"] + cells)
        notes_after.append(f"{ref.method}: {ref.note}.")
    deviations = DeviationNotes()
    novel_notes: list[str] = []
    for key in sorted({row_key(r) for r in ours}, key=row_order):
        mine = [r for r in ours if row_key(r) == key]
        label = _row_label(key, mine)
        cells = []
        for _, dataset, target_key in columns:
            recs = [r for r in mine if _in_column(r, dataset, target_key)]
            cells.append(format_stat(aggregate(r.metrics.get("mIoU", math.nan) for r in recs),
                                     reproduced_marker(recs)))
        note = deviations.add(label, mine)
        rows.append([label, _training_cell(mine), _fact_cell(mine, "clip_model"),
                     _fact_cell(mine, "image_size", "{0}x{0}"), OURS_CLIP_FINETUNED, _seeds(mine),
                     protocol_cell(mine, note)] + cells)
        novel_notes += _novel_notes(label, mine, columns)
    notes = legend(rows)
    notes.append("Open-vocabulary transfer: a model trained on every class of its training set, evaluated unchanged "
                 "on each target's validation set with the target's full vocabulary (every target class a candidate, "
                 "no seen-class calibration); mIoU over every target class in %, one decimal; mean ± sample std over "
                 "the listed seeds. Our rows: the ablation variant named by params.yaml open_vocab.model "
                 "(split.unseen: [], every class trained; that is the setting, not a protocol deviation).")
    if not ours:
        notes.append("No open-vocabulary evaluation in the records: params.yaml open_vocab.targets is empty or the "
                     "evaluate_open_vocab stage has not run.")
    notes += novel_notes
    notes += notes_after
    notes.append(OPEN_VOCAB_REFERENCE_NOTE)
    notes += _dataset_notes(ours)
    notes += deviations.notes()
    protocols = sorted({r.protocol for r in ours if r.protocol})
    if protocols:
        notes.append("What a run conformant to its protocol still departs from upstream: "
                     + ", ".join(deviations_link(p) for p in protocols) + ".")
    return Table(
        name="open_vocab",
        caption="Open-vocabulary semantic segmentation: trained on every class of one dataset, evaluated on other "
                "datasets' full vocabularies; mIoU in %",
        header=header,
        rows=rows,
        notes=notes,
        tex_groups=[("", len(fixed)), ("mIoU", len(columns))] if columns else [],
    )


def _row_label(key: Any, records: Sequence[EvalRecord]) -> str:
    """'LDVC (ours, fully_supervised)', '... (exp: x)': the method and the every-class variant evaluated."""
    parts = ["ours", key.variant]
    if key.imported:
        parts[0] = "released checkpoint, our evaluation"
    if key.exp_name is not None:
        parts.append(f"exp: {key.exp_name}")
    return f"{key.method} ({', '.join(parts)})"


def summarize_open_vocab(records: Sequence[EvalRecord], *, exp_name: str | None = None
                         ) -> dict[str, dict[str, float]]:
    """{target: {mIoU, pAcc, mIoU_base, mIoU_novel[, *_std]}} of the workspace's (or experiment
    `exp_name`'s) open-vocabulary records, mean over seeds (metrics/open_vocab.json; base = the
    classes in the model's training vocabulary, novel = the others)."""
    mine = [r for r in open_vocab_records(records) if r.exp_name == exp_name]
    out: dict[str, dict[str, float]] = {}
    for target in sorted({_target(r) for r in mine}):
        recs = [r for r in mine if _target(r) == target]
        summary: dict[str, float] = {}
        for src, dst in SUMMARY_KEYS.items():
            stat = aggregate(r.metrics.get(src, math.nan) for r in recs)
            if stat is None:
                continue
            summary[dst] = round(stat.mean, 4)
            if stat.std is not None:
                summary[f"{dst}_std"] = round(stat.std, 4)
        out[target] = summary
    return out
