"""The report's figures (PNG, matplotlib's Agg canvas; no pyplot, so no global backend change).

- per_class_iou_<dataset>_<setting>.png: per-class IoU bars of our ZegCLIP and LDVC runs, seen and
  unseen classes coloured apart, dashed lines at mIoU(S) and mIoU(U) (the paper's per-class view of
  the seen-class overfitting LDVC addresses);
- fragmentation_<dataset>.png: connected components per image and small-fragment share, prediction
  next to ground truth, per variant (LDVC's second claim: fewer small fragments);
- training_curves.png: loss, learning rate and images/s against the step, from train_log.csv or the
  MLflow metric history;
- qualitative_<dataset>_<setting>.png: a grid of image | ground truth | ZegCLIP | LDVC;
- open_vocab_<dataset>[_<target>].png: per open-vocabulary target, the IoU of the classes never in the
  model's training vocabulary beside the classes it was trained on (bars per class up to
  `MAX_NAMED_BARS` classes; above that, each group's classes sorted by IoU without names), dashed
  lines at each group's mean.

The qualitative grid is assembled from the files evaluation writes to
runs/<variant>/seed<s>/<setting>/overlays/ (the same ids for every variant). When the folders hold
the separate panels <id>_image.png, <id>_gt.png and <id>_pred.png, the grid is the paper's
image | ground truth | ZegCLIP | LDVC; when they hold only <id>.png (evaluation's composite
image | ground truth | prediction figure), the grid shows the ZegCLIP and LDVC composites side by
side. Our choices: rows are the ids of the LDVC folder (sorted, at most `max_rows`), the lowest
seed that has overlays is shown, and a missing file or folder becomes a labelled empty panel plus
a note instead of an error. Values are means over seeds; error bars are sample stds. Panel titles
name the method as the tables do (the evaluated decoder, not the variant name: an imported ZegCLIP
checkpoint evaluated in the "ldvc" variant is titled ZegCLIP).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from ldvc.reports.records import EvalRecord, TrainCurve
from ldvc.reports.reference import DATASET_TITLES
from ldvc.reports.tables import MAIN_VARIANTS, aggregate, method_name, row_key, row_label, variant_label

SEEN_COLOR = "#4C72B0"
UNSEEN_COLOR = "#DD8452"
PRED_COLOR = "#55A868"
GT_COLOR = "#8C8C8C"
_AUX_SUFFIXES = ("_image", "_gt", "_pred")


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Render to a temporary PNG next to `path`, then rename (no half-written figures)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _label(records: Sequence[EvalRecord]) -> str:
    """The table's row label(s) of these records (the method follows the evaluated decoder)."""
    return " / ".join(sorted({row_label(row_key(r)) for r in records}))


def _main_records(records: Sequence[EvalRecord], dataset: str, setting: str,
                  exp_name: str | None) -> dict[str, list[EvalRecord]]:
    """{variant: records} of our ZegCLIP and LDVC rows, in table order."""
    out = {}
    for variant in MAIN_VARIANTS:
        recs = [r for r in records if r.variant == variant and r.dataset == dataset and r.setting == setting
                and r.exp_name == exp_name]
        if recs:
            out[variant] = recs
    return out


# --------------------------------------------------------------------------------------------
# Per-class IoU
# --------------------------------------------------------------------------------------------


def per_class_means(records: Sequence[EvalRecord]) -> list[tuple[str, float, bool]]:
    """(class, mean IoU over seeds, seen) in the class order of the first record."""
    order: dict[str, bool] = {}
    values: dict[str, list[float]] = {}
    for r in records:
        for c in r.per_class:
            order.setdefault(c.name, c.seen)
            values.setdefault(c.name, []).append(c.iou)
    out = []
    for name, seen in order.items():
        stat = aggregate(values[name])
        out.append((name, stat.mean if stat else math.nan, seen))
    return out


def per_class_figure(records: Sequence[EvalRecord], dataset: str, setting: str, path: str | Path,
                     exp_name: str | None = None) -> Path | None:
    """Bars per class, one panel per variant; None when no record has per-class IoU."""
    by_variant = {v: recs for v, recs in _main_records(records, dataset, setting, exp_name).items()
                  if any(r.per_class for r in recs)}
    if not by_variant:
        return None
    n_classes = max(len(per_class_means(recs)) for recs in by_variant.values())
    width = min(30.0, max(6.0, 0.28 * n_classes + 2.0))
    fig = Figure(figsize=(width, 2.8 * len(by_variant) + 0.6))
    axes = fig.subplots(len(by_variant), 1, squeeze=False)[:, 0]
    for ax, recs in zip(axes, by_variant.values()):
        classes = per_class_means(recs)
        x = np.arange(len(classes))
        ious = np.array([c[1] for c in classes])  # (C,)
        seen = np.array([c[2] for c in classes])  # (C,)
        ax.bar(x, np.nan_to_num(ious), color=[SEEN_COLOR if s else UNSEEN_COLOR for s in seen])
        for mask, color, name in ((seen, SEEN_COLOR, "mIoU(S)"), (~seen, UNSEEN_COLOR, "mIoU(U)")):
            if mask.any() and np.isfinite(ious[mask]).any():
                ax.axhline(np.nanmean(ious[mask]), color=color, ls="--", lw=1,
                           label=f"{name} {np.nanmean(ious[mask]):.1f}")
        ax.set_xticks(x, [c[0] for c in classes], rotation=90, fontsize=7 if len(classes) > 40 else 8)
        ax.set_xlim(-0.6, len(classes) - 0.4)
        ax.set_ylim(0, 100)
        ax.set_ylabel("IoU (%)")
        seeds = sorted({r.seed for r in recs})
        ax.set_title(f"{_label(recs)}, seeds {seeds}", fontsize=9)
        handles, _ = ax.get_legend_handles_labels()
        handles += [Patch(color=SEEN_COLOR, label="seen class"), Patch(color=UNSEEN_COLOR, label="unseen class")]
        ax.legend(handles=handles, fontsize=7, loc="upper right", ncol=4)
    fig.suptitle(f"Per-class IoU, {DATASET_TITLES.get(dataset, dataset)}, {setting}")
    fig.tight_layout()
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# Fragmentation
# --------------------------------------------------------------------------------------------


def fragmentation_figure(records: Sequence[EvalRecord], dataset: str, path: str | Path) -> Path | None:
    """Prediction vs ground truth fragmentation per (experiment, variant), inductive setting."""
    recs = [r for r in records if r.dataset == dataset and r.setting == "inductive"
            and "frag_components_pred" in r.metrics]
    if not recs:
        return None
    groups = sorted({r.group for r in recs}, key=lambda g: (g[0] is not None, g[0] or "", g[1] != "ldvc", g[1]))
    labels = [variant_label(v, e) for e, v in groups]
    fig = Figure(figsize=(max(6.0, 1.1 * len(groups) + 2.0), 6.2))
    axes = fig.subplots(2, 1)
    panels = (("frag_components", "components / class / image"), ("frag_small_share", "small-fragment share (%)"))
    x = np.arange(len(groups))
    for ax, (metric, ylabel) in zip(axes, panels):
        for offset, kind, color in ((-0.2, "pred", PRED_COLOR), (0.2, "gt", GT_COLOR)):
            stats = [aggregate(r.metrics.get(f"{metric}_{kind}", math.nan) for r in recs if r.group == g)
                     for g in groups]
            means = [s.mean if s else 0.0 for s in stats]
            errs = [s.std if s and s.std is not None else 0.0 for s in stats]
            ax.bar(x + offset, means, width=0.4, yerr=errs if any(errs) else None, capsize=3, color=color,
                   label="prediction" if kind == "pred" else "ground truth")
        ax.set_ylabel(ylabel)
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.25)  # headroom for the legend above the bars
        ax.legend(fontsize=8, loc="upper right", ncol=2)
    fig.suptitle(f"Fragmentation, {DATASET_TITLES.get(dataset, dataset)}, inductive")
    fig.tight_layout()
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# Training curves
# --------------------------------------------------------------------------------------------


def training_curves_figure(curves: Sequence[TrainCurve], path: str | Path) -> Path | None:
    """Loss, learning rate and throughput against the step, one line per variant/setting/seed."""
    curves = [c for c in curves if len(c.rows) > 1]
    if not curves:
        return None
    curves = sorted(curves, key=lambda c: (c.exp_name is not None, c.exp_name or "", c.variant != "ldvc",
                                           c.variant, c.setting, c.seed))
    fig = Figure(figsize=(15, 4.2))
    axes = fig.subplots(1, 3)
    for ax, (col, title) in zip(axes, (("loss", "training loss"), ("lr", "learning rate"),
                                       ("images_per_s", "images / s"))):
        drawn = False
        for c in curves:
            pts = [(r["step"], r[col]) for r in c.rows if col in r and math.isfinite(r[col])]
            if not pts:
                continue
            label = f"{variant_label(c.variant, c.exp_name)} {c.setting} s{c.seed}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2, label=label)
            drawn = True
        if drawn and col == "loss" and all(r.get("loss", 1.0) > 0 for c in curves for r in c.rows):
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("step")
        if not drawn:
            ax.text(0.5, 0.5, f"no '{col}' logged", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("Training curves")
    fig.tight_layout()
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:  # outside the axes, right; bbox_inches="tight" keeps it in the PNG
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# Qualitative grid
# --------------------------------------------------------------------------------------------


def overlay_ids(folder: Path) -> list[str]:
    """Overlay ids of a folder (<id>.png, not the <id>_image / _gt / _pred panels)."""
    return sorted(p.stem for p in folder.glob("*.png") if not p.stem.endswith(_AUX_SUFFIXES))


def _pick_overlays(recs: Sequence[EvalRecord]) -> tuple[Path | None, int | None]:
    for r in sorted(recs, key=lambda r: r.seed):
        if r.overlay_dir is not None and Path(r.overlay_dir).is_dir() and overlay_ids(Path(r.overlay_dir)):
            return Path(r.overlay_dir), r.seed
    return None, None


def _load_rgb(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))  # (H, W, 3) uint8


def _grid_columns(ids: list[str], folders: dict[str, tuple[Path | None, int | None]], where: str,
                  notes: list[str], names: dict[str, str] | None = None) -> list[tuple[str, list[np.ndarray | None]]]:
    """Columns of the grid. Panel mode (the folders hold <id>_image/_gt/_pred.png): image, ground
    truth, then each variant's prediction. Composite mode (only <id>.png, which evaluation draws as
    image | ground truth | prediction): one column per variant holding its whole composite."""
    present = [folders[v][0] for v in reversed(MAIN_VARIANTS) if folders.get(v, (None,))[0] is not None]
    panel_mode = any((d / f"{ids[0]}_image.png").is_file() for d in present)  # type: ignore[operator]
    columns: list[tuple[str, list[np.ndarray | None]]] = []
    if panel_mode:
        for suffix, title in (("_image", "image"), ("_gt", "ground truth")):
            column = [next((img for d in present if (img := _load_rgb(d / f"{i}{suffix}.png")) is not None), None)
                      for i in ids]  # type: ignore[operator]
            if any(c is None for c in column):
                notes.append(f"qualitative grid ({where}): some <id>{suffix}.png files are missing")
            columns.append((title, column))
    else:
        notes.append(f"qualitative grid ({where}): overlays hold no separate <id>_image/_gt/_pred.png panels; "
                     "each variant's composite overlay (image | ground truth | prediction) is shown instead")
    for variant, (folder, seed) in folders.items():  # the variants evaluated in this setting
        name = (names or {}).get(variant, MAIN_VARIANTS.get(variant, variant))
        title = f"{name} (seed {seed})" if folder is not None else f"{name} (no overlays)"
        images = []
        for i in ids:
            img = _load_rgb(folder / f"{i}_pred.png") if folder is not None and panel_mode else None
            images.append(img if img is not None else (_load_rgb(folder / f"{i}.png") if folder else None))
        columns.append((title, images))
    return columns


def qualitative_figure(records: Sequence[EvalRecord], dataset: str, setting: str, path: str | Path,
                       notes: list[str], exp_name: str | None = None, max_rows: int = 6) -> Path | None:
    """image | ground truth | ZegCLIP | LDVC for the same validation ids; None (+ a note) if none."""
    by_variant = _main_records(records, dataset, setting, exp_name)
    folders = {v: _pick_overlays(recs) for v, recs in by_variant.items()}
    where = f"{DATASET_TITLES.get(dataset, dataset)} {setting}"
    ref_variant = next((v for v in reversed(MAIN_VARIANTS) if folders.get(v, (None,))[0] is not None), None)
    if ref_variant is None:
        notes.append(f"qualitative grid ({where}) skipped: no variant has overlays/<id>.png")
        return None
    for variant in folders:
        if folders[variant][0] is None:
            notes.append(f"qualitative grid ({where}): {variant} has no overlays; its column is left empty")
    ids = overlay_ids(folders[ref_variant][0])[:max_rows]  # type: ignore[arg-type]
    names = {v: " / ".join(sorted({method_name(r) for r in recs})) for v, recs in by_variant.items()}
    columns = _grid_columns(ids, folders, where, notes, names)
    # Panel width follows the panels' aspect ratio (composites are about 3x wider than tall).
    shapes = [img.shape for _, col in columns for img in col if img is not None]
    aspect = float(np.median([w / h for h, w, _ in shapes])) if shapes else 1.0
    fig = Figure(figsize=(2.4 * aspect * len(columns), 2.4 * len(ids) + 0.5))
    axes = fig.subplots(len(ids), len(columns), squeeze=False)  # (rows, cols)
    for col, (title, images) in enumerate(columns):
        for row, img in enumerate(images):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if img is not None:
                ax.imshow(img, interpolation="nearest" if max(img.shape[:2]) < 256 else "antialiased")
            else:
                ax.text(0.5, 0.5, "not available", ha="center", va="center", fontsize=8, color="0.4",
                        transform=ax.transAxes)
            if row == 0:
                ax.set_title(title, fontsize=9)
            if col == 0:
                ax.set_ylabel(ids[row], fontsize=8)
    fig.suptitle(f"Qualitative results, {where}")
    fig.tight_layout()
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# Open-vocabulary targets: classes never seen in training beside the seen ones
# --------------------------------------------------------------------------------------------

MAX_NAMED_BARS = 60  # above this many classes (A-847, PC-459) bars carry no names


def open_vocab_figure(records: Sequence[EvalRecord], path: str | Path) -> Path | None:
    """IoU per class of one open-vocabulary target (`records`: its records, one row per method and
    variant), novel classes (never in the training vocabulary) coloured apart; None without per-class IoU."""
    groups: dict[str, list[EvalRecord]] = {}
    for r in records:
        if r.per_class:
            groups.setdefault(f"{method_name(r)} ({r.variant}" + (f", exp: {r.exp_name})" if r.exp_name else ")"),
                              []).append(r)
    if not groups:
        return None
    n_classes = max(len(per_class_means(recs)) for recs in groups.values())
    named = n_classes <= MAX_NAMED_BARS
    width = min(30.0, max(6.0, 0.28 * n_classes + 2.0)) if named else 12.0
    fig = Figure(figsize=(width, 2.8 * len(groups) + 0.6))
    axes = fig.subplots(len(groups), 1, squeeze=False)[:, 0]
    for ax, (label, recs) in zip(axes, sorted(groups.items())):
        classes = per_class_means(recs)  # (name, mean IoU, seen in training)
        if not named:  # each group sorted by IoU, base classes first
            classes = (sorted([c for c in classes if c[2]], key=lambda c: -np.nan_to_num(c[1]))
                       + sorted([c for c in classes if not c[2]], key=lambda c: -np.nan_to_num(c[1])))
        x = np.arange(len(classes))
        ious = np.array([c[1] for c in classes])  # (C,)
        seen = np.array([c[2] for c in classes])  # (C,)
        ax.bar(x, np.nan_to_num(ious), width=0.8 if named else 1.0,
               color=[SEEN_COLOR if s else UNSEEN_COLOR for s in seen])
        for mask, color, name in ((seen, SEEN_COLOR, "in training"), (~seen, UNSEEN_COLOR, "never in training")):
            if mask.any() and np.isfinite(ious[mask]).any():
                ax.axhline(np.nanmean(ious[mask]), color=color, ls="--", lw=1,
                           label=f"mIoU {name} ({int(mask.sum())} classes) {np.nanmean(ious[mask]):.1f}")
        if named:
            ax.set_xticks(x, [c[0] for c in classes], rotation=90, fontsize=7 if len(classes) > 40 else 8)
        else:
            ax.set_xticks([])
            ax.set_xlabel("classes, each group sorted by IoU (names in per_class_iou.csv)")
        ax.set_xlim(-0.6, len(classes) - 0.4)
        ax.set_ylim(0, 100)
        ax.set_ylabel("IoU (%)")
        ax.set_title(f"{label}, seeds {sorted({r.seed for r in recs})}", fontsize=9)
        handles, _ = ax.get_legend_handles_labels()
        handles += [Patch(color=SEEN_COLOR, label="class in the training vocabulary"),
                    Patch(color=UNSEEN_COLOR, label="class never in the training vocabulary")]
        ax.legend(handles=handles, fontsize=7, loc="upper right", ncol=2)
    first = records[0]
    target = first.cross_target or first.dataset
    fig.suptitle(f"Open-vocabulary transfer to {DATASET_TITLES.get(first.dataset, first.dataset)} "
                 f"(target {target}): per-class IoU")
    fig.tight_layout()
    return save_figure(fig, path)


def open_vocab_figure_name(dataset: str, target: str | None) -> str:
    """open_vocab_<dataset> (one target of the dataset) or open_vocab_<dataset>_<target>."""
    return f"open_vocab_{dataset}" + (f"_{target}" if target else "")


# --------------------------------------------------------------------------------------------
# All figures
# --------------------------------------------------------------------------------------------


def _open_vocab_targets(records: Sequence[EvalRecord], exp_name: str | None
                        ) -> dict[tuple[str, str | None], list[EvalRecord]]:
    """{(dataset, target key or None): records} of the open-vocabulary records (None: the dataset's only
    target; the key only names the figure when one dataset has several targets)."""
    mine = [r for r in records if r.setting == "open_vocab" and r.exp_name == exp_name]
    out: dict[tuple[str, str | None], list[EvalRecord]] = {}
    for dataset in sorted({r.dataset for r in mine}):
        recs = [r for r in mine if r.dataset == dataset]
        targets = sorted({r.cross_target or dataset for r in recs})
        for target in targets:
            out[(dataset, target if len(targets) > 1 else None)] = [r for r in recs
                                                                    if (r.cross_target or dataset) == target]
    return out


def build_figures(records: Sequence[EvalRecord], curves: Sequence[TrainCurve], out_dir: str | Path,
                  exp_name: str | None = None) -> tuple[dict[str, Path], list[str]]:
    """Every figure the records support, into out_dir; returns ({name: path}, notes on skips)."""
    out_dir = Path(out_dir)
    paths: dict[str, Path] = {}
    notes: list[str] = []
    datasets = sorted({r.dataset for r in records})
    for dataset in datasets:
        for setting in ("inductive", "transductive"):
            name = f"per_class_iou_{dataset}_{setting}"
            if (p := per_class_figure(records, dataset, setting, out_dir / f"{name}.png", exp_name)) is not None:
                paths[name] = p
            name = f"qualitative_{dataset}_{setting}"
            if not _main_records(records, dataset, setting, exp_name):
                continue
            p = qualitative_figure(records, dataset, setting, out_dir / f"{name}.png", notes, exp_name)
            if p is not None:
                paths[name] = p
        name = f"fragmentation_{dataset}"
        if (p := fragmentation_figure(records, dataset, out_dir / f"{name}.png")) is not None:
            paths[name] = p
    for (dataset, target), recs in _open_vocab_targets(records, exp_name).items():
        name = open_vocab_figure_name(dataset, target)
        if (p := open_vocab_figure(recs, out_dir / f"{name}.png")) is not None:
            paths[name] = p
        else:
            notes.append(f"open-vocabulary figure {name} skipped: its records hold no per-class IoU")
    p = training_curves_figure(curves, out_dir / "training_curves.png")
    if p is not None:
        paths["training_curves"] = p
    else:
        notes.append("training curves skipped: no train_log.csv / MLflow loss history with 2+ steps")
    return paths, notes
