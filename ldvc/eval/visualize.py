"""Figures of the evaluation: the confusion matrix with its seen/unseen blocks marked, and
qualitative overlays (image | ground truth | prediction) with a class legend.

Our choices: classes are ordered seen first, then unseen, so that the four blocks
(seen->seen, seen->unseen, ...) are contiguous; rows are normalised (recall per class) and drawn
on a log-free linear colour scale. The overlay sample is `eval.num_visualize` images drawn with
a fixed seed from the sorted validation ids, so every run shows the same images.
All files are written to a temp name and renamed (no half-written PNG).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on the training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

IGNORE_INDEX = 255
IGNORE_COLOUR = np.array([0, 0, 0], dtype=np.uint8)


def palette(n: int) -> np.ndarray:
    """(n, 3) uint8 distinct colours, deterministic (tab20, then evenly spaced hues)."""
    base = (np.array(plt.get_cmap("tab20").colors) * 255).astype(np.uint8)
    if n <= len(base):
        return base[:n].copy()
    extra = plt.get_cmap("hsv")(np.linspace(0, 1, n - len(base), endpoint=False))[:, :3]
    return np.concatenate([base, (extra * 255).astype(np.uint8)])


def colourize(labels: np.ndarray, colours: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(H, W) class indices (`ignore_index`, 255 or a 16-bit dataset's 65535, drawn black) -> (H, W, 3) uint8."""
    out = np.empty((*labels.shape, 3), dtype=np.uint8)
    out[:] = IGNORE_COLOUR
    valid = labels != ignore_index
    out[valid] = colours[labels[valid]]
    return out


def blend(image: np.ndarray, labels: np.ndarray, colours: np.ndarray, alpha: float = 0.55,
          ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Colour the labelled pixels of an (H, W, 3) uint8 image; ignored pixels stay as they are."""
    col = colourize(labels, colours, ignore_index).astype(np.float32)
    out = image.astype(np.float32)
    valid = labels != ignore_index
    out[valid] = (1 - alpha) * out[valid] + alpha * col[valid]
    return out.clip(0, 255).astype(np.uint8)


def to_uint8_image(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float [0, 1] -> (H, W, 3) uint8."""
    return (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def save_figure_atomic(fig: plt.Figure, path: Path, dpi: int = 100) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()


def overlay_figure(path: Path, image: np.ndarray, panels: Sequence[tuple[str, np.ndarray]],
                   class_names: Sequence[str], title: str = "", unseen: Sequence[int] = (),
                   ignore_index: int = IGNORE_INDEX) -> None:
    """Image plus one blended panel per (title, (H, W) label map), and a legend of the classes
    that occur in any panel (unseen class names marked with '*')."""
    colours = palette(len(class_names))
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.2 * (len(panels) + 1), 3.6))
    axes = np.atleast_1d(axes)
    axes[0].imshow(image)
    axes[0].set_title(title or "image", fontsize=9)
    present: set[int] = set()
    for ax, (name, lab) in zip(axes[1:], panels):
        ax.imshow(blend(image, lab, colours, ignore_index=ignore_index))
        ax.set_title(name, fontsize=9)
        present |= {int(c) for c in np.unique(lab) if c != ignore_index}
    for ax in axes:
        ax.axis("off")
    unseen_set = set(unseen)
    handles = [Patch(color=colours[c] / 255.0, label=class_names[c] + (" *" if c in unseen_set else ""))
               for c in sorted(present)]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=8, frameon=False)
        fig.subplots_adjust(bottom=0.08 + 0.06 * ((len(handles) + 3) // 4))
    save_figure_atomic(fig, path)


def confusion_figure(path: Path, matrix: torch.Tensor, class_names: Sequence[str], seen: Sequence[int],
                     unseen: Sequence[int]) -> None:
    """Row-normalised confusion matrix, seen classes first; lines mark the seen/unseen blocks."""
    order = list(seen) + list(unseen)
    m = matrix.double()[order][:, order].numpy()
    rows = m.sum(1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    n = len(order)
    size = max(5.0, 0.28 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    names = [class_names[i] for i in order]
    show_ticks = n <= 60  # COCO-Stuff's 171 labels would be unreadable
    if show_ticks:
        ax.set_xticks(range(n), names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
        for lbl in (*ax.get_xticklabels(), *ax.get_yticklabels()):
            if names.index(lbl.get_text()) >= len(seen):
                lbl.set_color("tab:red")
    b = len(seen) - 0.5
    ax.axhline(b, color="tab:red", lw=1.2)
    ax.axvline(b, color="tab:red", lw=1.2)
    ax.set_xlabel("predicted (seen | unseen in red)")
    ax.set_ylabel("ground truth")
    ax.set_title("confusion (row-normalised)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    save_figure_atomic(fig, path)


def visual_sample(ids: Sequence[str], k: int, seed: int) -> list[str]:
    """A fixed sample of k ids (same for every run with the same seed and id list)."""
    ids = sorted(ids)
    return sorted(random.Random(seed).sample(ids, min(k, len(ids))))
