"""Safe, atomic, once-only extraction of the downloaded tar/zip archives.

Downloaded archives are untrusted input (a mirror or a user-supplied file). Before a member is
written we reject, with an error naming the member:
- absolute names (`/etc/x`, `C:\\x`) and names with a `..` component;
- symbolic links whose target is absolute, contains `..` that leaves the archive, or (after
  joining with the link's directory) lands outside the target; hard links likewise;
- device files and FIFOs.
As a second line of defence tar members also go through Python's `filter="data"` (PEP 706), which
re-checks the real paths at write time (catching link chains that only escape once resolved).
Zip symlinks are rejected if they escape and otherwise written as plain files holding the target
(zipfile's own behaviour; none of the dataset archives contain links).

Everything is extracted into a temporary sibling directory that is renamed to the destination
when complete, so a rejected or interrupted extraction leaves nothing behind; a marker file
records the archive's fingerprint so a re-run skips an extraction that already happened.
`exclude` leaves out member folders (a validation-only preparation skips the training folders,
ldvc/data/sources.py TRAIN_ONLY_MEMBERS); such an extraction is recorded as partial, and a complete
extraction of the same archive already in place serves it too (nothing is extracted again), while a
later complete request replaces a partial one. That
directory is made like any mkdir (0o777 & ~umask, `canonical.fresh_dir`), not 0700 as
`tempfile.mkdtemp` would, so other users of a shared server can read the extracted data.

A truncated or damaged archive raises `CorruptArchiveError` naming the archive and the cause
(tarfile's bare "unexpected end of data", gzip's EOFError, zlib errors, a zip's bad CRC or missing
central directory, or a file that is no archive at all, e.g. an HTML error page); the caller decides
what to do with the file (ldvc.data.prepare moves a cached download aside when no checksum vouches
for it). Python's tarfile stops SILENTLY when an uncompressed tar is cut at a member boundary, so
after the last member we also require the end-of-archive marker (a zero block) that every tar
writer puts there.
"""

from __future__ import annotations

import json
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from ldvc.data.canonical import fresh_dir

MARKER = ".ldvc-extracted.json"
TAR_BLOCK = 512
# What the decompressors and archive readers raise for truncated or damaged data. An OSError only
# counts when it carries no errno (gzip.BadGzipFile, bz2's "Invalid data stream"): one with an errno
# (a full disk, a permission) is a problem of the machine, not of the archive, and must not get a
# good archive moved aside.
CORRUPT_ERRORS: tuple[type[BaseException], ...] = (
    tarfile.ReadError, tarfile.CompressionError, tarfile.HeaderError, EOFError, zipfile.BadZipFile,
    zlib.error, lzma.LZMAError, NotImplementedError,
)


def _is_corrupt_data(err: BaseException) -> bool:
    if isinstance(err, UnsafeArchiveError):
        return False
    if isinstance(err, CORRUPT_ERRORS):
        return True
    return isinstance(err, OSError) and err.errno is None


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the extraction directory."""


class CorruptArchiveError(ValueError):
    """An archive is truncated, damaged or not an archive; the message names it and the cause."""


def check_member_name(name: str, archive: Path | str = "") -> str:
    """The member's normalised relative POSIX path; raises for absolute names or `..`."""
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    if ".." in unified.split("/"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has a '..' component; refusing to extract")
    return posixpath.normpath(unified)


def check_link_target(member: str, target: str, archive: Path | str = "", hard: bool = False) -> None:
    """Raise unless the link `member -> target` stays inside the extraction directory.

    Symbolic targets are relative to the link's directory, hard-link targets to the archive root."""
    kind = "hard link" if hard else "symlink"
    unified = target.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise UnsafeArchiveError(
            f"{archive}: {kind} member {member!r} points to absolute path {target!r}; refusing to extract"
        )
    base = "" if hard else posixpath.dirname(member.replace("\\", "/"))
    resolved = posixpath.normpath(posixpath.join(base, unified))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(
            f"{archive}: {kind} member {member!r} -> {target!r} points outside the target directory; "
            f"refusing to extract"
        )


def archive_kind(path: Path) -> str:
    try:
        if zipfile.is_zipfile(path):
            return "zip"
        if tarfile.is_tarfile(path):
            return "tar"
    except BaseException as err:
        if not _is_corrupt_data(err):
            raise
        raise CorruptArchiveError(f"{path}: damaged archive ({type(err).__name__}: {err})") from None
    raise CorruptArchiveError(
        f"{path}: neither a tar nor a zip archive (a truncated download - a zip's directory is at its end - or "
        f"an HTML error page saved in its place?)"
    )


def extract_archive(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    fingerprint: str | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Extract `archive` into `dest` (created atomically); returns `dest`.

    `include`: member-name prefixes to extract (e.g. only VOC's segmentation folders); None = all.
    `exclude`: folders not to extract, each as consecutive path components matched at any depth
    ("images/training" skips `<anything>/images/training/...`); None = none.
    `fingerprint` (e.g. the archive's sha256) identifies the archive in the marker file: when the
    marker matches (or records a complete extraction of it and `exclude` is given), the extraction
    is skipped."""
    archive, dest = Path(archive), Path(dest)
    stamp = {"archive": archive.name, "fingerprint": fingerprint or _weak_fingerprint(archive),
             "include": list(include) if include else None}
    complete = dict(stamp)
    if exclude:  # recorded only when used, so the markers of complete extractions stay as they were
        stamp["exclude"] = list(exclude)
    marker = dest / MARKER
    if marker.exists():
        try:
            found = json.loads(marker.read_text())
            if found == stamp or found == complete:
                return dest
        except ValueError:
            pass
    kind = archive_kind(archive)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = fresh_dir(dest.parent, f".{dest.name}.partial-")
    try:
        try:
            if kind == "zip":
                _extract_zip(archive, tmp, include, exclude, progress)
            else:
                _extract_tar(archive, tmp, include, exclude, progress)
        except BaseException as err:
            if not _is_corrupt_data(err):
                raise
            raise CorruptArchiveError(
                f"{archive}: truncated or damaged archive ({type(err).__name__}: {err or 'no detail'})"
            ) from err
        (tmp / MARKER).write_text(json.dumps(stamp))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dest.exists():
        shutil.rmtree(dest)  # a stale extraction of another archive version
    os.replace(tmp, dest)
    return dest


def _wanted(name: str, include: Sequence[str] | None, exclude: Sequence[str] | None = None) -> bool:
    if include is not None and not any(name == p.rstrip("/") or name.startswith(p.rstrip("/") + "/")
                                       for p in include):
        return False
    return not exclude or not any(_has_folder(name, folder) for folder in exclude)


def _has_folder(name: str, folder: str) -> bool:
    """Whether member `name` is (inside) a folder whose path ends with the components of `folder`."""
    parts, want = name.split("/"), [p for p in folder.split("/") if p]
    return any(parts[i:i + len(want)] == want for i in range(len(parts) - len(want) + 1))


def _extract_tar(archive: Path, out: Path, include: Sequence[str] | None, exclude: Sequence[str] | None,
                 progress: bool) -> None:
    with tarfile.open(archive, "r:*") as tf, tqdm(desc=f"extract {archive.name}", unit=" files",
                                                   disable=not progress) as bar:
        # Iterating reads headers lazily: each member is checked before it is written.
        for m in tf:
            name = check_member_name(m.name, archive)
            if m.issym():
                check_link_target(m.name, m.linkname, archive)
            elif m.islnk():
                check_link_target(m.name, m.linkname, archive, hard=True)
            elif m.isdev():
                raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a device file or FIFO; refusing to extract")
            if not _wanted(name, include, exclude):
                continue
            try:
                tf.extract(m, out, set_attrs=False, filter="data")
            except tarfile.FilterError as err:
                raise UnsafeArchiveError(f"{archive}: member {m.name!r} rejected: {err}") from err
            bar.update(1)
        end = tf.offset  # where the end-of-archive marker must start
    _check_tar_end(archive, end)


def _check_tar_end(archive: Path, end: int) -> None:
    """Raise if an uncompressed tar stops after a member without the end-of-archive zero block.

    tarfile ends its iteration silently there (it reads the missing header as "empty"), so a
    download cut at a member boundary would extract as an incomplete tree. Compressed tars need no
    check: their decompressor raises EOFError when the stream is cut."""
    with open(archive, "rb") as f:
        magic = f.read(6)
        if magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic == b"\xfd7zXZ\x00":
            return
        f.seek(end)
        block = f.read(TAR_BLOCK)
    if len(block) < TAR_BLOCK or block.count(0) != TAR_BLOCK:
        size = archive.stat().st_size
        raise tarfile.ReadError(
            f"no end-of-archive marker after the last member at byte {end} of {size} (the file was cut short)"
        )


def _extract_zip(archive: Path, out: Path, include: Sequence[str] | None, exclude: Sequence[str] | None,
                 progress: bool) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        chosen = []
        for info in infos:  # check every member before writing any
            name = check_member_name(info.filename, archive)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                check_link_target(info.filename, zf.read(info).decode("utf-8", "replace"), archive)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a device file or FIFO")
            if _wanted(name, include, exclude):
                chosen.append(info)
        root = out.resolve()
        for info in tqdm(chosen, desc=f"extract {archive.name}", unit=" files", disable=not progress):
            target = (out / check_member_name(info.filename, archive)).resolve()
            if root not in target.parents and target != root:
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} resolves outside {out}")
            zf.extract(info, out)


def _weak_fingerprint(path: Path) -> str:
    st = path.stat()
    return f"size={st.st_size},mtime_ns={st.st_mtime_ns}"
