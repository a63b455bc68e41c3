"""Content digests of a prepared (canonical) dataset, per split and overall.

The download stage records them (data/dataset_digest.json) and every training/evaluation run logs
the digest of the split it read as its MLflow dataset input, so a number can be traced to the
exact bytes it came from. Our choice: sha256 over the sorted (relative path, file sha256) pairs;
a split's digest covers its list file, images and labels, plus meta.json (the class list).
Only the splits the dataset has are recorded (meta.json "splits": a validation-only evaluation
target has no "train" entry).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ldvc.data.canonical import META_FILE, read_meta, recorded_splits
from ldvc.files import sha256_file, write_json_atomic

DIGEST_FILE = Path("data/dataset_digest.json")


def _tree_files(root: Path, split: str) -> list[Path]:
    files = [root / META_FILE, root / "lists" / f"{split}.txt"]
    for sub in ("images", "labels"):
        d = root / sub / split
        if d.is_dir():
            files += sorted(p for p in d.iterdir() if p.is_file())
    return [f for f in files if f.is_file()]


def dataset_digest(root: str | os.PathLike, name: str, progress: bool = True) -> dict[str, Any]:
    """{"dataset", "digest", "splits": {split: {"digest", "files", "bytes"}}} of the tree at `root`."""
    root = Path(root)
    splits: dict[str, Any] = {}
    overall = hashlib.sha256()
    for split in recorded_splits(read_meta(root), root):
        files = _tree_files(root, split)
        h = hashlib.sha256()
        size = 0
        for f in tqdm(files, desc=f"digest {split}", unit=" files", disable=not progress or len(files) < 1000):
            rel = f.relative_to(root).as_posix()
            digest = sha256_file(f)
            h.update(f"{rel}\0{digest}\n".encode())
            size += f.stat().st_size
        splits[split] = {"digest": h.hexdigest(), "files": len(files), "bytes": size}
        overall.update(f"{split}\0{splits[split]['digest']}\n".encode())
    return {"dataset": name, "root": root.as_posix(), "digest": overall.hexdigest(), "splits": splits}


def write_dataset_digest(root: str | os.PathLike, out: str | os.PathLike, name: str) -> dict[str, Any]:
    record = dataset_digest(root, name)
    write_json_atomic(Path(out), record)
    return record


def read_dataset_digest(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no dataset digest; re-run the download stage (dvc repro download)")
    return json.loads(path.read_text())
