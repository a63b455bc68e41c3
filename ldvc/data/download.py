"""Fetch one archive into the download cache: resumable, retried, verified, atomic.

Implements the "real path" download of protocol.md with the standard library only (urllib):
- streaming with a tqdm progress bar into `<cache>/<file>.part`;
- an interrupted transfer resumes with an HTTP Range request from the `.part` size (a server
  that ignores Range and answers 200 restarts the file from zero);
- transient failures (connection reset, timeout, 5xx, 408/429) are retried with exponential
  back-off; other HTTP errors (404, 403, ...) fail at once with the URL and the fix;
- md5 and/or sha256 are checked BEFORE the file is renamed into place; a mismatch raises
  `ChecksumError` naming the file, the expected and the actual digest, and the bad file is
  moved aside to `<file>.corrupt` so nothing ever extracts it;
- a verified file gets a sidecar `<file>.verified.json` (size, mtime, digests) so a re-run is a
  cache hit without re-hashing gigabytes (our choice; any change of size or mtime re-hashes).
A local path or file:// URL is verified and used in place (never copied).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

from tqdm import tqdm

from ldvc.data.sources import Source

CHUNK = 1 << 20
USER_AGENT = "ldvc-downloader/0.1 (+urllib)"


class DownloadError(RuntimeError):
    """An archive could not be downloaded (the message names the URL and the fix)."""


class ChecksumError(RuntimeError):
    """A file does not match its expected checksum."""

    def __init__(self, path: Path, algo: str, expected: str, actual: str, moved_to: Path | None = None):
        self.path, self.algo, self.expected, self.actual = path, algo, expected, actual
        where = f"; the file was moved aside to {moved_to}" if moved_to else ""
        super().__init__(
            f"{path}: {algo} checksum mismatch: expected {expected}, actual {actual}{where}. "
            f"The file is corrupt or not the expected archive: delete it and download again, or "
            f"set data.sources.<name>.{algo} if you deliberately use a different archive."
        )


def file_digests(path: Path, progress: bool = False) -> dict[str, str]:
    """md5 and sha256 of a file in one streaming pass."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc=f"verify {path.name}",
                                     disable=not progress, leave=False) as bar:
        while block := f.read(CHUNK):
            md5.update(block)
            sha.update(block)
            bar.update(len(block))
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def verify(path: Path, source: Source, progress: bool = True, sidecar: bool = True) -> dict[str, str]:
    """Digests of `path`, raising `ChecksumError` if one differs from the source's expectation.

    With `sidecar`, uses (and refreshes) `<file>.verified.json` when size and mtime match."""
    digests = (_sidecar_digests(path) if sidecar else None) or file_digests(path, progress)
    for algo in ("md5", "sha256"):
        expected = getattr(source, algo)
        if expected and digests[algo] != expected.lower():
            raise ChecksumError(path, algo, expected.lower(), digests[algo])
    if sidecar:
        _write_sidecar(path, digests)
    return digests


def local_path(url: str) -> Path | None:
    """The filesystem path of a file:// URL or a plain path; None for a network URL."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme in ("http", "https", "ftp"):
        return None
    return Path(url).expanduser()


def fetch(
    source: Source,
    cache_dir: str | os.PathLike,
    *,
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Return a verified local copy of `source` (downloading into `cache_dir` if needed)."""
    return fetch_with_digests(source, cache_dir, retries=retries, backoff=backoff, timeout=timeout,
                              progress=progress)[0]


def fetch_with_digests(
    source: Source,
    cache_dir: str | os.PathLike,
    *,
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> tuple[Path, dict[str, str]]:
    """`fetch`, also returning the file's {"md5", "sha256"} for the provenance record."""
    local = local_path(source.url)
    if local is not None:
        if not local.is_file():
            raise FileNotFoundError(
                f"{local}: archive for source {source.name!r} not found; fix data.sources.{source.name}.url "
                f"or remove the override to download {source.filename} from the official host"
            )
        # A user's own archive is hashed in place; we write nothing next to it.
        return local, verify(local, source, progress, sidecar=False)

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    dest = cache_dir / source.filename
    if dest.exists():
        try:
            return dest, verify(dest, source, progress)  # verified cache hit: never download twice
        except ChecksumError:
            # A stale/corrupt cached copy: keep it aside for inspection and download afresh.
            os.replace(dest, _corrupt_path(dest))
    part = dest.with_name(dest.name + ".part")
    _download(source, part, retries=retries, backoff=backoff, timeout=timeout, progress=progress)
    digests = file_digests(part, progress)
    for algo in ("md5", "sha256"):
        expected = getattr(source, algo)
        if expected and digests[algo] != expected.lower():
            # Never rename a mismatching file into place: nothing downstream may extract it.
            bad = _corrupt_path(dest)
            os.replace(part, bad)
            raise ChecksumError(dest, algo, expected.lower(), digests[algo], moved_to=bad)
    os.replace(part, dest)
    _write_sidecar(dest, digests)
    return dest, digests


# --------------------------------------------------------------------------------------------


def _download(source: Source, part: Path, *, retries: int, backoff: float, timeout: float, progress: bool) -> None:
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            if _download_once(source.url, part, timeout=timeout, progress=progress, desc=source.filename):
                return
            last_error = DownloadError("transfer ended before Content-Length bytes arrived")
        except urllib.error.HTTPError as err:
            if err.code == 416:  # Range past the end: the .part is unusable (or complete) - restart
                part.unlink(missing_ok=True)
                last_error = err
                continue
            if err.code in (408, 429) or err.code >= 500:
                last_error = err
                continue
            raise DownloadError(
                f"{source.url}: HTTP {err.code} {err.reason} for source {source.name!r}; set "
                f"data.sources.{source.name}.url to a working mirror or a local copy of {source.filename}"
            ) from err
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as err:
            last_error = err
    raise DownloadError(
        f"{source.url}: download of {source.filename} failed after {retries + 1} attempts "
        f"(last error: {last_error}); the partial file {part} is kept and the next run resumes it. "
        f"Without internet, put the archive at {part.with_suffix('')} or set data.sources.{source.name}.url "
        f"to a local path"
    )


def _download_once(url: str, part: Path, *, timeout: float, progress: bool, desc: str) -> bool:
    """One HTTP transfer into `part` (resuming from its size); True when it is complete."""
    offset = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        if offset and resp.status != 206:
            offset = 0  # the server ignored Range: start over
        elif offset and not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            part.unlink()  # a 206 for another range than asked: the .part cannot be trusted
            return False
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as f, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, desc=desc, disable=not progress
        ) as bar:
            while True:
                block = resp.read(CHUNK)
                if not block:
                    break
                f.write(block)
                bar.update(len(block))
    size = part.stat().st_size
    return total is None or size >= total


def _corrupt_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".corrupt")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _sidecar_digests(path: Path) -> dict[str, str] | None:
    side = _sidecar(path)
    if not side.exists():
        return None
    try:
        rec = json.loads(side.read_text())
        st = path.stat()
        if rec["size"] == st.st_size and rec["mtime_ns"] == st.st_mtime_ns:
            return {"md5": rec["md5"], "sha256": rec["sha256"]}
    except (OSError, ValueError, KeyError):
        pass
    return None


def _write_sidecar(path: Path, digests: dict[str, str]) -> None:
    st = path.stat()
    rec = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, **digests}
    side = _sidecar(path)
    try:
        tmp = side.with_name(side.name + ".tmp")
        tmp.write_text(json.dumps(rec))
        os.replace(tmp, side)
    except OSError:
        pass  # a read-only location (a user's own archive) just means re-hashing next time
