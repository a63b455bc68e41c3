"""Seen/unseen class split for zero-shot segmentation (protocol.md, "Splits").

`make_split` turns the class list and `split.unseen` ("default" = ZegCLIP's split of the
dataset, or a list of names) into index lists that training (seen only, unseen pixels -> ignore)
and evaluation (mIoU over seen / unseen, hIoU) share. Names are validated: a typo fails with the
closest class names, so a split never silently drops a class.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ldvc.data.classes import default_unseen

SPLIT_KEYS = ("classes", "seen", "unseen", "seen_names", "unseen_names")


class SplitError(ValueError):
    """The requested unseen classes are not a valid split of the dataset's classes."""


def make_split(classes: Sequence[str], unseen: str | Sequence[str], dataset: str) -> dict[str, Any]:
    """{"classes", "seen", "unseen" (sorted train ids), "seen_names", "unseen_names", "dataset"}."""
    classes = list(classes)
    if not classes or len(set(classes)) != len(classes):
        raise SplitError(f"{dataset}: the class list must be non-empty and without duplicates")
    if isinstance(unseen, str):
        if unseen != "default":
            raise SplitError(f"split.unseen = {unseen!r}: use 'default' or a list of class names")
        names = default_unseen(dataset)
    else:
        names = list(unseen)
    if not names:
        raise SplitError("split.unseen is empty: zero-shot evaluation needs at least one unseen class")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SplitError(f"split.unseen lists {dupes} more than once")
    index = {c: i for i, c in enumerate(classes)}
    for n in names:
        if n not in index:
            close = difflib.get_close_matches(str(n), classes, n=5, cutoff=0.5)
            hint = f"close matches: {close}" if close else f"classes are: {classes}"
            raise SplitError(f"split.unseen: {n!r} is not a class of dataset {dataset!r} ({hint})")
    unseen_ids = sorted(index[n] for n in names)
    if len(unseen_ids) == len(classes):
        raise SplitError("split.unseen lists every class: training needs at least one seen class")
    seen_ids = [i for i in range(len(classes)) if i not in set(unseen_ids)]
    return {
        "dataset": dataset,
        "classes": classes,
        "seen": seen_ids,
        "unseen": unseen_ids,
        "seen_names": [classes[i] for i in seen_ids],
        "unseen_names": [classes[i] for i in unseen_ids],
    }


def save_split(split: dict[str, Any], path: str | os.PathLike) -> Path:
    _check(split, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(split, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def load_split(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: split file not found (the download stage writes it)")
    split = json.loads(path.read_text())
    _check(split, str(path))
    return split


def _check(split: dict[str, Any], where: str) -> None:
    missing = [k for k in SPLIT_KEYS if k not in split]
    if missing:
        raise SplitError(f"{where}: split is missing keys {missing}")
    n = len(split["classes"])
    ids = list(split["seen"]) + list(split["unseen"])
    if sorted(ids) != list(range(n)):
        raise SplitError(f"{where}: seen + unseen must partition the {n} class indices")
    for key, names in (("seen", "seen_names"), ("unseen", "unseen_names")):
        if [split["classes"][i] for i in split[key]] != list(split[names]):
            raise SplitError(f"{where}: '{names}' does not match the indices in '{key}'")
