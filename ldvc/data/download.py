"""Fetch one archive into the download cache: resumable, retried, verified, atomic.

Implements the "real path" download of protocol.md with the standard library only (urllib):
- streaming with a tqdm progress bar into `<cache>/<file>.part`;
- an interrupted transfer resumes with an HTTP Range request from the `.part` size (a server
  that ignores Range and answers 200 restarts the file from zero);
- transient failures (connection reset, timeout, 5xx, 408/429) are retried with exponential
  back-off; other HTTP errors (404, 403, ...) fail at once with the URL and the fix;
- md5, sha1 and/or sha256 (whichever the source publishes) are checked BEFORE the file is
  renamed into place; a mismatch raises `ChecksumError` naming the file, the expected and the
  actual digest and the key to fix, and the fresh file is moved aside to `<file>.corrupt` so
  nothing ever extracts it. When the expected value was the wrong one, the next run checks
  `<file>.corrupt` against the corrected value and moves it back into place instead of
  downloading the same bytes again;
- a verified file gets a sidecar `<file>.verified.json` (size, mtime_ns, digests, the expected
  values it was checked against, the server's ETag / Last-Modified) so a re-run is a cache hit
  without re-hashing gigabytes (our choice; any change of size or mtime re-hashes).
- A cached archive whose sidecar still matches it is KNOWN content: if the expected checksum
  changes (a typo in `data.sources`), the mismatch is reported (recorded vs expected, the key to
  fix) and the file is kept - never moved aside and downloaded again. Only a cached file with no
  valid record that fails its check is moved aside (it may be a broken partial copy).
- A cached archive whose source has NO checksum (md5/sha256 disabled, or not published as for
  stuffthingmaps) cannot be checked by content: it is revalidated against the server's ETag /
  Last-Modified / Content-Length recorded at download time (one HEAD request; offline, the cached
  copy is used with a note), and downloaded again when the server's copy changed. The new copy
  replaces the old one only once it is complete.
- `discard_cached` is how a caller that found a cached archive broken (a truncated tar that
  extraction rejects) drops its record and moves it aside, so the next run downloads it again.
A local path or file:// URL is verified and used in place (never copied, nothing written next to
it); its digests are cached in `<cache>/local-digests.json` keyed by path, size, mtime_ns and inode
(`cached_file_digests`, also used for the other user files that `ldvc.data.inputs` fingerprints).
`probe` checks that a URL answers (HEAD, or a 1-byte Range GET when HEAD is refused) and returns
its size and validators, for the preflight and the input fingerprint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from tqdm import tqdm

from ldvc.data.sources import OFFICIAL_SOURCES, Source, missing_archive_fix

CHUNK = 1 << 20
USER_AGENT = "ldvc-downloader/0.1 (+urllib)"
ALGOS = ("md5", "sha1", "sha256")  # computed in one pass; checked when the source gives one
# A record (sidecar, digest index) is usable when it holds these; sha1 was added later, so a record
# without it is still good for every source that publishes no sha1 (no re-hash of old caches).
RECORDED = ("md5", "sha256")
LOCAL_DIGESTS = "local-digests.json"  # in data.cache_dir: digests of user files, keyed by path
# A HEAD refused with these statuses is retried as a 1-byte Range GET (405/501: method not
# supported; 400/403: some object stores sign URLs for GET only).
HEAD_REFUSED = (400, 403, 405, 501)
OFFICIAL_NOTE = ", the official value in ldvc/data/sources.py"
TRANSIENT = (408, 429)
# Failures of the connection itself: retried by probing and downloading alike.
NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)


class DownloadError(RuntimeError):
    """An archive could not be downloaded (the message names the URL and the fix)."""


class ChecksumError(RuntimeError):
    """A file does not match its expected checksum."""

    def __init__(self, path: Path, algo: str, expected: str, actual: str, moved_to: Path | None = None,
                 *, key: str | None = None, recorded_in: Path | None = None, checked: str | None = None):
        self.path, self.algo, self.expected, self.actual = path, algo, expected, actual
        self.moved_to, self.key, self.recorded_in = moved_to, key, recorded_in
        key = key or f"data.sources.<name>.{algo}"
        if recorded_in is not None:
            # A known-good cached file and a changed expectation: keep the file, say which to fix.
            was = f"; it matched the expected {algo} {checked} then" if checked else ""
            if key.endswith(OFFICIAL_NOTE):
                fix = (f"If this archive is a deliberate re-pack, set {key[: -len(OFFICIAL_NOTE)]}: {actual}; if you "
                       f"want the official archive, delete {path} and {recorded_in} and run again.")
            else:
                fix = (f"If {expected} is a typo, correct {key} (or remove it to use the official value); if you "
                       f"want another archive, delete {path} and {recorded_in} and run again.")
            msg = (
                f"{path}: {algo} checksum mismatch: expected {expected} ({key}), actual {actual} as recorded in "
                f"{recorded_in} when this cached archive was downloaded and verified{was}. The cached file is "
                f"KEPT and nothing is downloaded. {fix}"
            )
        elif moved_to is not None:
            msg = (
                f"{path}: {algo} checksum mismatch: expected {expected} ({key}), actual {actual}; the file was "
                f"moved aside to {moved_to}. If the download is corrupt, run again to download it anew. If "
                f"{expected} is the wrong value, correct {key}: the next run checks {moved_to.name} against it "
                f"and uses it without downloading again."
            )
        else:
            msg = (
                f"{path}: {algo} checksum mismatch: expected {expected} ({key}), actual {actual}. The file is "
                f"corrupt or not the expected archive: replace it, or set {key} if you deliberately use a "
                f"different archive."
            )
        super().__init__(msg)


def expected_key(source: Source, algo: str) -> str:
    """The params key that sets the expected `algo` of `source`, noting when it is the official value."""
    key = f"data.sources.{source.name}.{algo}"
    official = OFFICIAL_SOURCES.get(source.name)
    if official is not None and getattr(official, algo) == getattr(source, algo):
        return key + OFFICIAL_NOTE
    return key


def file_digests(path: Path, progress: bool = False) -> dict[str, str]:
    """md5, sha1 and sha256 of a file in one streaming pass."""
    md5, sha1, sha = hashlib.md5(), hashlib.sha1(), hashlib.sha256()
    size = path.stat().st_size
    # delay: a bar only for hashes that take more than a second (big archives), not for small files.
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc=f"verify {path.name}",
                                     disable=not progress, leave=False, delay=1.0) as bar:
        while block := f.read(CHUNK):
            md5.update(block)
            sha1.update(block)
            sha.update(block)
            bar.update(len(block))
    return {"md5": md5.hexdigest(), "sha1": sha1.hexdigest(), "sha256": sha.hexdigest()}


def covers(digests: dict[str, str] | None, source: Source) -> bool:
    """Whether `digests` hold every algorithm `source` expects (an old record may lack sha1)."""
    return digests is not None and all(a in digests for a in ALGOS if getattr(source, a))


def _recorded(rec: dict[str, Any]) -> dict[str, str]:
    return {a: rec[a] for a in ALGOS if isinstance(rec.get(a), str)}


def first_mismatch(digests: dict[str, str], source: Source) -> tuple[str, str] | None:
    """(algo, expected) of the first expected checksum of `source` that `digests` do not match."""
    for algo in ALGOS:
        expected = getattr(source, algo)
        if expected and digests.get(algo) != expected.lower():
            return algo, expected.lower()
    return None


def verify(path: Path, source: Source, progress: bool = True, sidecar: bool = True) -> dict[str, str]:
    """Digests of `path`, raising `ChecksumError` if one differs from the source's expectation.

    With `sidecar`, uses (and refreshes) `<file>.verified.json` when size and mtime match."""
    rec = _sidecar_record(path) if sidecar else None
    if rec is not None and not covers(_recorded(rec), source):
        rec = None  # recorded before sha1 was: hash again
    digests = _recorded(rec) if rec else file_digests(path, progress)
    bad = first_mismatch(digests, source)
    if bad:
        raise ChecksumError(path, bad[0], bad[1], digests[bad[0]], key=expected_key(source, bad[0]))
    if sidecar:
        _write_sidecar(path, digests, source, (rec or {}).get("http"), rec)
    return digests


def local_path(url: str) -> Path | None:
    """The filesystem path of a file:// URL or a plain path; None for a network URL."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme in ("http", "https", "ftp"):
        return None
    return Path(url).expanduser()


def has_checksum(source: Source) -> bool:
    return bool(source.md5 or source.sha1 or source.sha256)


@dataclasses.dataclass
class CachedCopy:
    """What the download cache holds for a source, from its sidecar alone (no hashing, no network).

    status: "absent" (no file), "verified" (file unchanged since recorded, matches every expected
    checksum), "mismatch" (file unchanged since recorded, but an expected checksum differs: `error`
    says which), "unrecorded" (a file without a valid record: it will be hashed)."""

    path: Path
    status: str
    digests: dict[str, str] | None = None
    record: dict[str, Any] | None = None
    error: ChecksumError | None = None


def cached_copy(source: Source, cache_dir: str | os.PathLike) -> CachedCopy:
    """The state of `source`'s file in `cache_dir` (see `CachedCopy`); cheap: reads the sidecar only."""
    dest = Path(cache_dir) / source.filename
    if not dest.is_file():
        return CachedCopy(dest, "absent")
    rec = _sidecar_record(dest)
    if rec is None or not covers(_recorded(rec), source):
        return CachedCopy(dest, "unrecorded")
    digests = _recorded(rec)
    bad = first_mismatch(digests, source)
    if bad:
        checked = (rec.get("checked") or {}).get(bad[0])
        err = ChecksumError(dest, bad[0], bad[1], digests[bad[0]], key=expected_key(source, bad[0]),
                            recorded_in=sidecar_path(dest), checked=checked)
        return CachedCopy(dest, "mismatch", digests, rec, err)
    return CachedCopy(dest, "verified", digests, rec)


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
    cache_dir = Path(cache_dir)
    if local is not None:
        if not local.is_file():
            raise FileNotFoundError(
                f"{local}: archive for source {source.name!r} not found; {missing_archive_fix(source)}"
            )
        # A user's own archive is hashed in place (the digests cached in the cache folder, keyed by
        # path, size, mtime and inode); we write nothing next to it and never move it.
        need = tuple(a for a in ALGOS if a in RECORDED or getattr(source, a))
        digests = cached_file_digests(local, cache_dir / LOCAL_DIGESTS, progress, need)
        bad = first_mismatch(digests, source)
        if bad:
            raise ChecksumError(local, bad[0], bad[1], digests[bad[0]], key=expected_key(source, bad[0]))
        return local, digests

    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = cached_copy(source, cache_dir)
    dest = cached.path
    if cached.status == "mismatch":
        assert cached.error is not None
        raise cached.error  # known content, changed expectation: keep the file, name the key to fix
    if cached.status == "verified":
        assert cached.digests is not None and cached.record is not None
        if has_checksum(source) or not _changed_on_server(source, dest, cached.record, timeout):
            _write_sidecar(dest, cached.digests, source, cached.record.get("http"), cached.record)
            return dest, cached.digests  # verified cache hit: never download twice
    elif cached.status == "unrecorded":
        digests = file_digests(dest, progress)
        bad = first_mismatch(digests, source)
        if bad is None:
            _write_sidecar(dest, digests, source, None)
            return dest, digests
        # No record says this file was ever good: it may be a broken copy. Keep it aside, fetch anew.
        moved = discard_cached(dest)
        _note(f"{dest}: {bad[0]} {digests[bad[0]]} does not match the expected {bad[1]} "
              f"({expected_key(source, bad[0])}) and no record says it was ever verified: moved aside to "
              f"{moved.name}, downloading again")
    else:  # absent: a copy an earlier run set aside may be the right one (an expected value corrected since)
        recovered = _recover_corrupt(source, dest, progress)
        if recovered is not None:
            return dest, recovered
    part = dest.with_name(dest.name + ".part")
    validators = _download(source, part, retries=retries, backoff=backoff, timeout=timeout, progress=progress)
    digests = file_digests(part, progress)
    bad = first_mismatch(digests, source)
    if bad:
        # Never rename a mismatching file into place: nothing downstream may extract it.
        moved = _corrupt_path(dest)
        os.replace(part, moved)
        raise ChecksumError(dest, bad[0], bad[1], digests[bad[0]], moved_to=moved, key=expected_key(source, bad[0]))
    os.replace(part, dest)
    _write_sidecar(dest, digests, source, validators)
    return dest, digests


def discard_cached(path: Path) -> Path:
    """Drop the verified record of cached archive `path` and move it aside to `<file>.corrupt`
    (replacing an older one), so the next run downloads it again; returns the new path."""
    sidecar_path(path).unlink(missing_ok=True)
    moved = _corrupt_path(path)
    os.replace(path, moved)
    return moved


def is_cached_file(path: Path, cache_dir: str | os.PathLike) -> bool:
    """Whether `path` is a file of the download cache (ours to move aside), not a user's own archive."""
    try:
        return Path(path).resolve().parent == Path(cache_dir).resolve()
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# Probing a URL (preflight, input fingerprint, revalidation)
# --------------------------------------------------------------------------------------------


def probe(source: Source, *, timeout: float = 30.0, retries: int = 2, backoff: float = 1.0) -> dict[str, Any]:
    """Check that `source.url` answers, without downloading it.

    HEAD first; when HEAD is refused (HEAD_REFUSED statuses, or the connection drops) a GET for
    the first byte (`Range: bytes=0-0`). Returns {"url", "method", "status", "size" (int or None),
    "etag", "last_modified"}. Transient failures are retried; anything else raises DownloadError
    naming the URL, the HTTP status and the params key to fix."""
    last: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            try:
                return _probe_once(source.url, "HEAD", timeout)
            except urllib.error.HTTPError as err:
                if err.code not in HEAD_REFUSED:
                    raise
            except (http.client.RemoteDisconnected, http.client.BadStatusLine):
                pass  # a server that drops HEAD requests
            return _probe_once(source.url, "GET", timeout)
        except urllib.error.HTTPError as err:
            permanent = http_failure(source, err)
            if permanent is not None:
                raise permanent from None
            last = err
        except NETWORK_ERRORS as err:
            last = err
    raise DownloadError(
        f"{source.url}: not reachable for source {source.name!r} after {retries + 1} attempts (last error: "
        f"{last}); check the network, or set data.sources.{source.name}.url to a reachable mirror or to a local "
        f"copy of {source.filename}"
    )


def _probe_once(url: str, method: str, timeout: float) -> dict[str, Any]:
    headers = {"User-Agent": USER_AGENT}
    if method == "GET":
        headers["Range"] = "bytes=0-0"
    req = urllib.request.Request(url, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        size = None
        content_range = resp.headers.get("Content-Range", "")
        if resp.status == 206 and "/" in content_range and not content_range.endswith("/*"):
            size = int(content_range.rsplit("/", 1)[1])
        elif resp.headers.get("Content-Length") is not None and resp.status == 200:
            size = int(resp.headers["Content-Length"])  # HEAD, or a GET that ignored the Range
        # The body of the GET is never read: closing the response drops the connection.
        return {"url": url, "method": method, "status": resp.status, "size": size,
                "etag": resp.headers.get("ETag"), "last_modified": resp.headers.get("Last-Modified")}


def validators_of(probed: dict[str, Any]) -> dict[str, Any]:
    """The part of a `probe` answer that identifies the server's content (ETag, Last-Modified, size)."""
    return {"etag": probed.get("etag"), "last_modified": probed.get("last_modified"), "size": probed.get("size")}


def http_failure(source: Source, err: urllib.error.HTTPError) -> DownloadError | None:
    """The error to raise for an HTTP status that retrying cannot fix (404, 403, ...), naming the
    source and the fix; None for a transient one (408, 429, 5xx: retry)."""
    if err.code in TRANSIENT or err.code >= 500:
        return None
    return DownloadError(
        f"{source.url}: HTTP {err.code} {err.reason} for source {source.name!r} ({source.filename}); set "
        f"data.sources.{source.name}.url to a working mirror or a local copy of {source.filename}"
    )


def server_differs(was: dict[str, Any], now: dict[str, Any], cached_size: int) -> bool:
    """Whether the server's validators `now` describe other content than those recorded at download
    time (`was`): ETag first, then Last-Modified, else the size."""
    for field in ("etag", "last_modified"):
        if was.get(field) and now.get(field):
            return was[field] != now[field]
    return now.get("size") is not None and now["size"] != cached_size


def _changed_on_server(source: Source, dest: Path, record: dict[str, Any], timeout: float) -> bool:
    """For a cached file with no checksum to check: whether the server's copy differs from it."""
    if local_path(source.url) is not None:
        return False
    try:
        now = validators_of(probe(source, timeout=min(timeout, 30.0), retries=1))
    except DownloadError as err:
        _note(f"{dest}: no checksum is set for source {source.name!r} and the server could not be asked whether "
              f"its copy changed ({err}); using the cached copy")
        return False
    was = record.get("http") or {}
    if was.get("url") not in (None, source.url):
        was = {}  # recorded for another URL (the override changed): only the size can be compared
    changed = server_differs(was, now, record["size"])
    if changed:
        _note(f"{dest}: the server's copy at {source.url} changed since it was downloaded (was "
              f"{was or record['size']}, now {now}); downloading it again (the cached copy is replaced once the "
              f"new one is complete; set data.sources.{source.name}.sha256 to pin one version)")
    else:
        record["http"] = {**was, **{k: v for k, v in now.items() if k != "size"}, "url": source.url}
    return changed


# --------------------------------------------------------------------------------------------
# Digests of files we do not own (cached by path, size, mtime_ns, inode)
# --------------------------------------------------------------------------------------------


def cached_file_digests(path: Path, index: Path, progress: bool = False,
                        need: tuple[str, ...] = RECORDED) -> dict[str, str]:
    """{"md5", "sha1", "sha256"} of `path`, re-hashed only when its size, mtime_ns or inode changed
    (or when the record lacks an algorithm of `need`: entries written before sha1 existed).

    The cache is the JSON file `index` (the `<file>.verified.json` idea for files we must not write
    next to: a user's archive or annotation file). The inode catches a file replaced by another with
    the same size and a preserved mtime (`cp -p`, `rsync -a`). An unwritable index only costs a
    re-hash next time."""
    known = known_digests(path, index)
    if known is not None and all(a in known for a in need):
        return known
    st = Path(path).stat()
    digests = file_digests(Path(path), progress)
    entries = _read_json(index)  # re-read: another process may have added entries meanwhile
    # Entries of files that no longer exist are dropped so the index does not grow forever.
    entries = {k: v for k, v in entries.items() if os.path.exists(k)}
    entries[str(Path(path).resolve())] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, **digests}
    _write_json_atomic(index, entries)
    return digests


def known_digests(path: Path, index: Path) -> dict[str, str] | None:
    """The digests `index` holds for `path` if it is unchanged since (size, mtime_ns, inode); no hashing."""
    st = Path(path).stat()
    rec = _read_json(index).get(str(Path(path).resolve()))
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}
    if isinstance(rec, dict) and all(rec.get(k) == v for k, v in stamp.items()) and all(
            isinstance(rec.get(a), str) for a in RECORDED):
        return _recorded(rec)
    return None


# --------------------------------------------------------------------------------------------


def _note(message: str) -> None:
    print(f"ldvc download: {message}", file=sys.stderr, flush=True)


def _recover_corrupt(source: Source, dest: Path, progress: bool) -> dict[str, str] | None:
    """If `<file>.corrupt` matches the (corrected) expected checksums, move it back into place."""
    moved = _corrupt_path(dest)
    if not (has_checksum(source) and moved.is_file()):
        return None
    digests = file_digests(moved, progress)
    if first_mismatch(digests, source) is not None:
        return None
    os.replace(moved, dest)
    _write_sidecar(dest, digests, source, None)
    _note(f"{dest}: the copy set aside as {moved.name} matches the expected checksum: used without downloading again")
    return digests


def _download(source: Source, part: Path, *, retries: int, backoff: float, timeout: float,
              progress: bool) -> dict[str, Any]:
    """Download `source` into `part`; returns the server's validators (ETag, Last-Modified, URL)."""
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            done, validators = _download_once(source.url, part, timeout=timeout, progress=progress,
                                              desc=source.filename)
            if done:
                return validators
            last_error = DownloadError("transfer ended before Content-Length bytes arrived")
        except urllib.error.HTTPError as err:
            if err.code == 416:  # Range past the end: the .part is unusable (or complete) - restart
                part.unlink(missing_ok=True)
                last_error = err
                continue
            permanent = http_failure(source, err)
            if permanent is not None:
                raise permanent from err
            last_error = err
        except NETWORK_ERRORS as err:
            last_error = err
    raise DownloadError(
        f"{source.url}: download of {source.filename} failed after {retries + 1} attempts "
        f"(last error: {last_error}); the partial file {part} is kept and the next run resumes it. "
        f"Without internet, put the archive at {part.with_suffix('')} or set data.sources.{source.name}.url "
        f"to a local path"
    )


def _download_once(url: str, part: Path, *, timeout: float, progress: bool, desc: str) -> tuple[bool, dict[str, Any]]:
    """One HTTP transfer into `part` (resuming from its size); (complete, the server's validators)."""
    offset = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        validators = {"url": url, "etag": resp.headers.get("ETag"), "last_modified": resp.headers.get("Last-Modified")}
        if offset and resp.status != 206:
            offset = 0  # the server ignored Range: start over
        elif offset and not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            part.unlink()  # a 206 for another range than asked: the .part cannot be trusted
            return False, validators
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
    return total is None or size >= total, validators


def _corrupt_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".corrupt")


def sidecar_path(path: Path) -> Path:
    """`<file>.verified.json`: the record of a verified cached archive."""
    return path.with_name(path.name + ".verified.json")


def _sidecar_record(path: Path) -> dict[str, Any] | None:
    """The sidecar record of `path` if it still describes the file (same size and mtime_ns)."""
    rec = _read_json(sidecar_path(path))
    try:
        st = path.stat()
        if rec["size"] == st.st_size and rec["mtime_ns"] == st.st_mtime_ns and all(
                isinstance(rec[a], str) for a in RECORDED):
            return rec
    except (OSError, KeyError, TypeError):
        pass
    return None


def _write_sidecar(path: Path, digests: dict[str, str], source: Source, http_validators: dict[str, Any] | None,
                   previous: dict[str, Any] | None = None) -> None:
    st = path.stat()
    # The expected values this file has been checked against (None = never checked): a later
    # mismatch message can say the file once matched the official checksum. A check passed under
    # an earlier record of the same (unchanged) file stays true, so it is carried over.
    before = (previous or {}).get("checked") or {}
    rec = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, **digests,
           "checked": {a: getattr(source, a) or before.get(a) for a in ALGOS}}
    if http_validators:
        rec["http"] = http_validators
    _write_json_atomic(sidecar_path(path), rec)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: concurrent writers never share it
        tmp.write_text(json.dumps(data, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only location just means re-hashing next time
