"""Check every archive source of a dataset BEFORE anything is downloaded.

Without it, sources were fetched one after the other: a 404 on the second source appeared only
after the first had been downloaded and extracted (2 GB for VOC), and a full disk only half-way
through. `preflight` is called at the start of the archive path of ldvc.data.prepare and:
- first, for a source only the user can supply (no public URL: the full ADE20K release), requires
  an archive to be configured (`sources.require_configured`: where to get it, which key to set);
- classifies each source: a local archive (must exist; no network), cached and verified (its
  `<file>.verified.json` matches: no network), cached but unrecorded (hashed later by the
  download; no network), or to download (a `.part` counts as already fetched);
- asks the server of each source to download whether it answers: HEAD, or a GET of one byte
  (`Range: bytes=0-0`) when HEAD is refused; the size comes from Content-Length (or the
  Content-Range total), a local or cached file's from the file itself;
- estimates the disk space needed per file system and compares it with the free space:
    archives still to download                                   -> data.cache_dir
    extraction ~ EXTRACT_FACTOR x archive size (unless the same
      archive is already extracted there)                        -> data.cache_dir/extracted
    the prepared dataset, written into the DVC cache by dvc
      (PREPARED_FRACTION[dataset] x archive size)                -> the DVC cache (.dvc/cache or
                                                                    `dvc cache dir`), and once more
                                                                    on data.root's file system when
                                                                    it is not the extraction's (the
                                                                    images are then copied, not
                                                                    hard-linked)
  Measured for VOC (3.4 GB of archives): ~3.5 GB extracted, ~1.3 GB in the DVC cache, hence
  EXTRACT_FACTOR 1.05 (3% measured plus a margin) and PREPARED_FRACTION["voc"] 0.4. COCO-Stuff
  and Context-59 use (nearly) every image of their archives: 1.0, as for any other dataset.
- prints what it found and the estimate (stderr, lines prefixed "ldvc preflight:") and raises
  `PreflightError` listing EVERY problem found (unreachable sources with URL, HTTP status and the
  key to fix; a missing local archive; a cached archive whose recorded checksum no longer matches
  the expected one; too little free space, with the numbers) - before any byte is downloaded.
A source without a checksum that is cached is not asked again here: the download revalidates it
with the server and keeps the cached copy when offline.
An evaluation target (`splits` = val only) checks only the archives its validation split needs
(`sources.dataset_sources`: no SBD for VOC-20, no train2017.zip for COCO-Stuff). Its extraction and
prepared-data estimates stay those of the whole archive (an upper bound: the share of an archive's
bytes in its validation folders is not known before the archive is read).
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ldvc.data.archive import MARKER
from ldvc.data.download import LOCAL_DIGESTS, DownloadError, cached_copy, known_digests, local_path, probe
from ldvc.data.sources import (
    SPLITS,
    Source,
    dataset_sources,
    input_path,
    missing_archive_fix,
    require_configured,
    resolve_sources,
    skipped_members,
)

if TYPE_CHECKING:
    from ldvc.config import DataConfig

EXTRACT_FACTOR = 1.05
# voc: measured. voc21: an estimate, not measured - its 2,913 segmentation images are 17% of the
# 17,125 JPEGs in the VOC2012 tar. Every other dataset: 1.0 (all images of its archives are used;
# for ade20k_847 an over-estimate: its images are re-encoded at <= 512 px on the short side).
PREPARED_FRACTION = {"voc": 0.4, "voc21": 0.2}
GB = 1e9


class PreflightError(RuntimeError):
    """One or more sources cannot be fetched, or the disk is too small; `problems` lists them all."""

    def __init__(self, message: str, problems: list[str]):
        super().__init__(message)
        self.problems = problems


@dataclass
class _Need:
    """Bytes needed on one file system, by purpose, and one path on it to report."""

    path: Path
    parts: dict[str, int] = field(default_factory=dict)

    def add(self, what: str, n: int) -> None:
        if n > 0:
            self.parts[what] = self.parts.get(what, 0) + n


def preflight(data_cfg: DataConfig, repo_root: Path, *, splits: tuple[str, ...] = SPLITS,
              out_root: Path | None = None, timeout: float = 30.0, retries: int = 2) -> dict[str, Any]:
    """Check the archive sources of `data_cfg.dataset` that preparing `splits` needs and the free disk
    space; see the module docstring. `out_root`: where the dataset is prepared (default: data.root
    under the repository root).

    Returns {"dataset", "sources": {name: {"state", "bytes", "url"/"file", ...}}, "disk": [{"path",
    "needed": {purpose: bytes}, "free"}], "unknown_size": [names]}. Raises PreflightError."""
    repo_root = Path(repo_root)
    dataset = data_cfg.dataset
    names = dataset_sources(dataset, splits)
    sources: dict[str, Source] = resolve_sources(data_cfg.sources, repo_root)
    cache = input_path(data_cfg.cache_dir, repo_root)
    problems: list[str] = []
    report: dict[str, Any] = {"dataset": dataset, "sources": {}, "disk": [], "unknown_size": []}
    to_download = to_extract = prepared_from = 0
    for name in names:
        src = sources[name]
        require_configured(src, dataset)  # no URL and no archive given: nothing to check, say where to get it
        entry, problem = _check_source(src, cache, timeout, retries)
        report["sources"][name] = entry
        if problem:
            problems.append(problem)
            _say(f"{dataset}: {name}: PROBLEM: {problem}")
            continue
        _say(f"{dataset}: {name}: {entry['summary']}")
        size = entry.get("bytes")
        if size is None:
            report["unknown_size"].append(name)
            continue
        to_download += entry.get("download_bytes", 0)
        prepared_from += size
        if not _already_extracted(cache / "extracted" / name, entry, partial_ok=bool(skipped_members(name, splits))):
            to_extract += int(size * EXTRACT_FACTOR)

    needs = _disk_needs(data_cfg, repo_root, cache, to_download, to_extract,
                        int(prepared_from * PREPARED_FRACTION.get(dataset, 1.0)), out_root)
    for need in needs:
        free = shutil.disk_usage(need.path).free
        total = sum(need.parts.values())
        parts = " + ".join(f"{what} {_gb(n)}" for what, n in need.parts.items())
        report["disk"].append({"path": str(need.path), "needed": dict(need.parts), "free": free})
        amount = f"{parts} = {_gb(total)} needed" if parts else "nothing more needed"
        _say(f"disk: {amount} on the file system of {need.path} (free: {_gb(free)})")
        if total > free:
            problems.append(
                f"{need.path}: not enough free disk space: about {_gb(total)} needed ({parts}), {_gb(free)} free. "
                f"Free some space, or move data.cache_dir (archives and extraction) or the DVC cache "
                f"(`dvc cache dir`) to a larger disk, or set data.extracted_dir to already-extracted data"
            )
    if report["unknown_size"]:
        _say(f"disk: size unknown for {report['unknown_size']} (no Content-Length): not in the estimate")
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise PreflightError(
            f"data.dataset = {dataset}: {len(problems)} problem(s) found before downloading anything:\n{listing}",
            problems,
        )
    return report


def _check_source(src: Source, cache: Path, timeout: float, retries: int) -> tuple[dict[str, Any], str | None]:
    """(report entry, problem or None) for one source; the network is used only for a download."""
    local = local_path(src.url)
    if local is not None:
        if not local.is_file():
            return {"state": "missing", "file": str(local)}, (
                f"{local}: archive for source {src.name!r} not found; {missing_archive_fix(src)}"
            )
        size = local.stat().st_size
        # Its digests, if already known (no hashing here), tell whether it is already extracted.
        known = known_digests(local, cache / LOCAL_DIGESTS) or {}
        return {"state": "local", "file": str(local), "bytes": size, "sha256": known.get("sha256"),
                "summary": f"local archive {local} ({_gb(size)})"}, None
    cached = cached_copy(src, cache)
    if cached.status == "mismatch":
        return {"state": "mismatch", "file": str(cached.path)}, str(cached.error)
    if cached.status in ("verified", "unrecorded"):
        size = cached.path.stat().st_size
        what = "cached and verified" if cached.status == "verified" else "cached (verified when used)"
        entry = {"state": cached.status, "file": str(cached.path), "bytes": size,
                 "sha256": (cached.digests or {}).get("sha256"), "summary": f"{what}: {cached.path} ({_gb(size)})"}
        return entry, None
    try:
        answer = probe(src, timeout=timeout, retries=retries)
    except DownloadError as err:
        return {"state": "unreachable", "url": src.url}, str(err)
    part = cached.path.with_name(cached.path.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    size = answer["size"]
    left = max(size - have, 0) if size is not None else 0
    how = f"{answer['method']} {answer['status']}"
    resume = f", {_gb(have)} already in {part.name}" if have else ""
    entry = {"state": "download", "url": src.url, "bytes": size, "download_bytes": left,
             "summary": f"{src.url} reachable ({how}), {_gb(size) if size is not None else 'size unknown'} to "
                        f"download{resume}"}
    return entry, None


def _already_extracted(dest: Path, entry: dict[str, Any], partial_ok: bool = False) -> bool:
    """Whether `dest` holds an extraction of this very archive (its marker names it and its sha256);
    a partial one (training folders left out) counts only when `partial_ok`."""
    try:
        stamp = json.loads((dest / MARKER).read_text())
    except (OSError, ValueError):
        return False
    sha = entry.get("sha256")
    return bool(sha) and isinstance(stamp, dict) and stamp.get("fingerprint") == sha and \
        stamp.get("archive") == Path(entry.get("file", "")).name and (partial_ok or not stamp.get("exclude"))


def _disk_needs(data_cfg: DataConfig, repo_root: Path, cache: Path, download: int, extract: int,
                prepared: int, out_root: Path | None = None) -> list[_Need]:
    """The bytes needed, grouped by file system (st_dev of the nearest existing ancestor)."""
    by_dev: dict[int, _Need] = {}

    def need(path: Path, what: str, n: int) -> None:
        anchor = _existing_ancestor(path)
        by_dev.setdefault(os.stat(anchor).st_dev, _Need(anchor)).add(what, n)

    need(cache, "archives", download)
    need(cache / "extracted", "extraction", extract)
    out_root = Path(out_root).resolve() if out_root is not None else (repo_root / data_cfg.root).resolve()
    if os.stat(_existing_ancestor(out_root)).st_dev != os.stat(_existing_ancestor(cache)).st_dev:
        need(out_root, "prepared dataset (copied: another file system than the extraction)", prepared)
    dvc_cache = dvc_cache_dir(repo_root)
    if dvc_cache is not None:
        need(dvc_cache, "DVC cache", prepared)
    else:
        _say(f"disk: no DVC repository at {repo_root}: the DVC cache is not in the estimate")
    return list(by_dev.values())


def dvc_cache_dir(repo_root: Path) -> Path | None:
    """The DVC cache directory of the repository at `repo_root` (None when it is no DVC repository).

    `cache.dir` from .dvc/config.local, else .dvc/config (relative paths are relative to .dvc/), else
    .dvc/cache; read directly (both are INI files) so that no dvc import is needed here."""
    dvc_dir = Path(repo_root) / ".dvc"
    if not dvc_dir.is_dir():
        return None
    for name in ("config.local", "config"):
        parser = configparser.ConfigParser()
        try:
            parser.read(dvc_dir / name)
        except configparser.Error:
            continue  # a config DVC itself would reject: DVC will say so; use the default here
        value = parser.get("cache", "dir", fallback=None)
        if value:
            return (dvc_dir / value.strip().strip("'\"")).resolve()
    return dvc_dir / "cache"


def _existing_ancestor(path: Path) -> Path:
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _gb(n: int) -> str:
    return f"{n / GB:.2f} GB" if n >= 0.01 * GB else f"{n / 1e6:.1f} MB"


def _say(message: str) -> None:
    print(f"ldvc preflight: {message}", file=sys.stderr, flush=True)
