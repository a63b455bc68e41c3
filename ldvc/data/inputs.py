"""A cheap, deterministic fingerprint of every EXTERNAL input the download stage reads.

DVC re-runs a stage when a dependency changes, but the download stage's real inputs live outside
the repository: a user's COCO-JSON files and image folders, `data.extracted_dir`, local archives
named in `data.sources.<name>.url`, the content behind a mirror URL. The `inputs` stage
(always_changed) writes `fingerprint_inputs(...)` to data/inputs.json and the download stage
depends on that file, so the download stage runs exactly when one of them changed. The same
record, with the digests actually used, goes into the download stage's outputs
(`resolved_inputs`: prepare_dataset's summary and meta.json's provenance).

What identifies each input (our choices; the record is JSON with sorted keys, no timestamps of
its own, so an unchanged world gives a byte-identical file):
- synthetic: nothing external (generated from params).
- An annotation file (COCO JSON): its content sha256. Hashed once and cached in
  `<data.cache_dir>/local-digests.json` by (path, size, mtime_ns, inode), the `<file>.verified.json`
  idea for files we must not write next to; a later call with an unchanged file re-hashes nothing.
- A folder (COCO-JSON image folders, `data.extracted_dir`): a sha256 over (relative path, size,
  mtime_ns) of every file below it, symlinks followed (loops skipped), in sorted order. No
  content is read, so a 20 GB tree costs one stat per file (a progress bar appears when it takes
  more than two seconds). Consequences: `touch` counts as a change, and a copy of the tree with
  other mtimes (another machine) counts as changed once.
- A local archive (`data.sources.<name>.url` a path or file:// URL): md5 + sha256 of its content,
  cached like the annotation files (the download stage reuses the same cache: it hashes nothing).
- An official or mirror URL with an expected md5/sha256: those digests identify the content; no
  network is used. (The URL is recorded too: it is a parameter anyway.)
- A URL whose checksums are disabled (or not published: stuffthingmaps, PASCAL-Context): once it
  is cached and verified, the sha256 of the cached copy (what the download stage will use), plus
  the server's new validators only if its ETag / Last-Modified / size differ from those recorded
  at download time (then the download stage runs and fetches the new copy). An unreachable server
  leaves the record as it is: an offline `dvc repro` neither fails nor re-runs the download.
  Before it is cached: the server's ETag, Last-Modified and size from one HEAD request (or a
  1-byte Range GET when HEAD is refused); an unreachable server is then an error naming the URL
  and the fix (pin a checksum, or point the URL at a local copy), and a server that sends none of
  the three is an error too, since its content could change unseen.
Paths are recorded relative to the repository when they are inside it, so clones agree.
Relative input paths resolve against the repository root (ldvc/data/sources.py, "Paths").
`splits` (an evaluation target: val only) limits the record to the inputs that split reads: the
archives `sources.dataset_sources` names, the val files of a COCO-JSON dataset; for everything else
(and for training data) the record is exactly what it was.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from ldvc.data.download import (
    LOCAL_DIGESTS,
    DownloadError,
    cached_copy,
    cached_file_digests,
    has_checksum,
    local_path,
    probe,
    server_differs,
    validators_of,
)
from ldvc.data.sources import (
    DATASET_SOURCES,
    SPLITS,
    Source,
    check_splits,
    dataset_sources,
    input_path,
    require_configured,
    resolve_sources,
)

if TYPE_CHECKING:
    from ldvc.config import CocoJsonConfig, DataConfig

FORMAT = 1  # bumped when the record's layout changes (then every stage depending on it re-runs once)


class InputError(RuntimeError):
    """An external input cannot be fingerprinted; the message names it and the fix."""


def fingerprint_inputs(data_cfg: DataConfig, repo_root: Path, *, progress: bool = True,
                       timeout: float = 30.0, splits: tuple[str, ...] = SPLITS) -> dict[str, Any]:
    """{"format", "dataset", "inputs": {name: record}} for the external inputs of `data_cfg.dataset`
    that preparing `splits` reads (both: training data; val only: an evaluation target).

    JSON-serialisable with sorted keys; changes whenever an input changes; cheap on a re-run (see
    the module docstring for what identifies each kind of input). Raises FileNotFoundError for a
    missing input and InputError for an unreachable URL without checksums, naming the key to fix."""
    repo_root = Path(repo_root)
    splits = check_splits(splits)
    dataset = data_cfg.dataset
    index = input_path(data_cfg.cache_dir, repo_root) / LOCAL_DIGESTS
    if dataset == "synthetic":
        inputs: dict[str, Any] = {}
    elif dataset == "coco_json":
        inputs = _coco_json_inputs(data_cfg.coco_json, repo_root, index, progress, splits)
    elif dataset in DATASET_SOURCES:
        if data_cfg.extracted_dir:
            inputs = {"extracted_dir": folder_input(_extracted_dir(data_cfg, repo_root), repo_root, progress)}
        else:
            sources = resolve_sources(data_cfg.sources, repo_root)
            names = dataset_sources(dataset, splits)
            for name in names:
                require_configured(sources[name], dataset)
            cache = input_path(data_cfg.cache_dir, repo_root)
            inputs = {name: _source_input(sources[name], cache, repo_root, index, progress, timeout) for name in names}
    else:
        raise ValueError(f"data.dataset = {dataset!r}: unknown (synthetic | coco_json | {' | '.join(DATASET_SOURCES)})")
    return _sorted({"format": FORMAT, "dataset": dataset, "inputs": inputs})


def resolved_inputs(data_cfg: DataConfig, repo_root: Path, obtained: dict[str, Any],
                    progress: bool = False, splits: tuple[str, ...] = SPLITS) -> dict[str, Any]:
    """The digests of the inputs the download stage actually used, for its outputs' provenance.

    `obtained` is prepare's record of the archives it fetched ({name: {"file", "bytes", "md5",
    "sha256", ...}}); for the other kinds the fingerprint is already content-resolved (annotation
    sha256, folder digests) and is computed again here from the caches (no re-hash)."""
    if data_cfg.dataset in DATASET_SOURCES and not data_cfg.extracted_dir:
        return _sorted({name: {"kind": "archive", "file": _rel(Path(rec["file"]), Path(repo_root)),
                               "bytes": rec["bytes"], "md5": rec["md5"], "sha256": rec["sha256"]}
                        for name, rec in obtained.items() if isinstance(rec, dict) and "sha256" in rec})
    # No network here: synthetic, coco_json and extracted_dir fingerprints never use it.
    return fingerprint_inputs(data_cfg, repo_root, progress=progress, splits=splits)["inputs"]


# --------------------------------------------------------------------------------------------
# Kinds of input
# --------------------------------------------------------------------------------------------


def file_input(path: Path, repo_root: Path, index: Path, progress: bool, key: str) -> dict[str, Any]:
    """A single file identified by its content sha256 (cached by path, size, mtime_ns, inode)."""
    if not path.is_file():
        raise FileNotFoundError(f"{key}: {path} is not a file; fix {key} in params.yaml")
    digests = cached_file_digests(path, index, progress)
    return {"kind": "file", "path": _rel(path, repo_root), "bytes": path.stat().st_size, "sha256": digests["sha256"]}


def folder_input(base: Path, repo_root: Path, progress: bool = True, key: str = "data.extracted_dir") -> dict[str, Any]:
    """A folder identified by a sha256 over (relative path, size, mtime_ns) of every file below it."""
    if not base.is_dir():
        raise FileNotFoundError(f"{key}: {base} is not a directory; fix {key} in params.yaml")
    digest, files, total = tree_digest(base, progress)
    return {"kind": "folder", "path": _rel(base, repo_root), "files": files, "bytes": total, "digest": digest}


def tree_digest(base: Path, progress: bool = True) -> tuple[str, int, int]:
    """(sha256 hex, number of files, total bytes) over every file below `base`, by metadata only."""
    h = hashlib.sha256()
    files = total = 0
    seen_dirs: set[tuple[int, int]] = set()
    with tqdm(desc=f"fingerprint {base.name}", unit=" files", disable=not progress, delay=2.0, leave=False) as bar:
        stack: list[tuple[Path, str]] = [(base, "")]
        while stack:
            directory, prefix = stack.pop()
            st = directory.stat()
            if (st.st_dev, st.st_ino) in seen_dirs:
                h.update(f"{prefix}\0loop\n".encode())  # a symlink back up the tree: recorded, not followed
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
            subdirs = []
            for entry in entries:
                rel = f"{prefix}{entry.name}"
                try:
                    if entry.is_dir():  # follows symlinks, as the converters' directory walks do
                        subdirs.append((Path(entry.path), rel + "/"))
                        continue
                    est = entry.stat()
                except FileNotFoundError:  # a dangling symlink: its presence is still part of the tree
                    h.update(f"{rel}\0dangling\n".encode())
                    continue
                h.update(f"{rel}\0{est.st_size}\0{est.st_mtime_ns}\n".encode())
                files += 1
                total += est.st_size
                bar.update(1)
            # Depth-first in sorted order: pushed reversed so the smallest name is visited first.
            stack.extend(reversed(subdirs))
    return h.hexdigest(), files, total


def _source_input(src: Source, cache: Path, repo_root: Path, index: Path, progress: bool,
                  timeout: float) -> dict[str, Any]:
    local = local_path(src.url)
    if local is not None:
        if not local.is_file():
            raise FileNotFoundError(
                f"data.sources.{src.name}.url: {local} is not a file; fix the path or remove the override to "
                f"download {src.filename} from the official host"
            )
        algos = ("md5", "sha1", "sha256") if src.sha1 else ("md5", "sha256")  # the same record whatever the cache
        digests = cached_file_digests(local, index, progress, algos)
        return {"kind": "local_archive", "path": _rel(local, repo_root), "bytes": local.stat().st_size,
                **{a: digests[a] for a in algos}}
    if has_checksum(src):
        record = {"kind": "url", "url": src.url, "md5": src.md5, "sha256": src.sha256}
        if src.sha1:  # only where published (ADEChallengeData2016): other records stay as they were
            record["sha1"] = src.sha1
        return record
    cached = cached_copy(src, cache)
    if cached.status == "verified":
        # Identified by the cached content the download stage will use; the server is only asked
        # whether its copy changed since. Offline, the record is the same as online with an
        # unchanged server, so an offline `dvc repro` neither fails nor re-runs the download.
        record = {"kind": "url", "url": src.url, "cached_sha256": cached.digests["sha256"]}
        try:
            now = validators_of(probe(src, timeout=timeout, retries=1))
        except DownloadError:
            return record
        was = (cached.record or {}).get("http") or {}
        if was.get("url") not in (None, src.url):
            was = {}
        if server_differs(was, now, int(cached.record["size"])):
            record["server_changed_to"] = now
        return record
    try:
        answer = validators_of(probe(src, timeout=timeout, retries=1))
    except DownloadError as err:
        cached = cached_copy(src, cache)
        pin = (f"set data.sources.{src.name}.sha256: {cached.digests['sha256']} (the cached copy {cached.path}) "
               if cached.digests else f"set data.sources.{src.name}.sha256 to the archive's digest ")
        raise InputError(
            f"{src.url}: cannot fingerprint source {src.name!r}: no checksum is set for it, so its content is "
            f"identified by the server's ETag/Last-Modified, and the server did not answer ({err}). Fix: {pin}"
            f"to identify it without the network, or set data.sources.{src.name}.url to a local copy"
        ) from None
    if not any(answer.values()):
        raise InputError(
            f"{src.url}: the server sends no ETag, Last-Modified or Content-Length for source {src.name!r}, so a "
            f"change of its content cannot be seen; set data.sources.{src.name}.sha256 (or md5) to pin the archive"
        )
    return {"kind": "url", "url": src.url, **answer}


def _coco_json_inputs(cfg: CocoJsonConfig, repo_root: Path, index: Path, progress: bool,
                      splits: tuple[str, ...] = SPLITS) -> dict[str, Any]:
    out = {}
    for split in splits:
        for what in ("images", "annotations"):
            key = f"{split}_{what}"
            value = getattr(cfg, key)
            if not value:
                raise FileNotFoundError(
                    f"data.coco_json.{key} is not set; data.dataset = coco_json needs the image folders and "
                    f"annotation JSON files of your dataset in params.yaml"
                )
            path = input_path(str(value), repo_root)
            full_key = f"data.coco_json.{key}"
            out[key] = (folder_input(path, repo_root, progress, full_key) if what == "images"
                        else file_input(path, repo_root, index, progress, full_key))
    return out


def _extracted_dir(data_cfg: DataConfig, repo_root: Path) -> Path:
    return input_path(str(data_cfg.extracted_dir), repo_root)


def _rel(path: Path, repo_root: Path) -> str:
    """`path` relative to the repository when inside it (clones agree), else absolute."""
    path = Path(path).resolve()
    try:
        return path.relative_to(Path(repo_root).resolve()).as_posix()
    except ValueError:
        return str(path)


def _sorted(value: Any) -> Any:
    """The same structure with every dict's keys in sorted order (deterministic JSON either way)."""
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value
