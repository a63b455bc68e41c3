"""Safe extraction (ldvc/data/archive.py): crafted malicious tar/zip archives are refused with
the member named and nothing extracted; good archives extract atomically and only once; truncated
or damaged archives (also a tar cut at a member boundary, which tarfile accepts silently) raise
CorruptArchiveError naming the archive; the extraction folder gets a normal mkdir's permissions."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
from fixtures.malicious_archives import (
    BAD_MEMBER,
    TAR_KINDS,
    ZIP_KINDS,
    build_malicious_tar,
    build_malicious_zip,
)

from ldvc.data.archive import MARKER, CorruptArchiveError, UnsafeArchiveError, extract_archive


def _assert_nothing_extracted(tmp_path: Path, dest: Path) -> None:
    assert not dest.exists()
    leftovers = [p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}")]
    assert leftovers == []
    assert not (tmp_path / "ldvc_pwned.txt").exists() and not (tmp_path.parent / "ldvc_pwned.txt").exists()
    assert not Path("/tmp/ldvc_pwned.txt").exists()


@pytest.mark.parametrize("kind", TAR_KINDS)
def test_malicious_tar_is_rejected_naming_the_member(tmp_path, kind):
    archive = build_malicious_tar(tmp_path / f"{kind}.tar", kind)
    dest = tmp_path / "out" / "x"
    with pytest.raises(UnsafeArchiveError) as err:
        extract_archive(archive, dest, progress=False)
    assert repr(BAD_MEMBER[kind]) in str(err.value)
    _assert_nothing_extracted(tmp_path, dest)


@pytest.mark.parametrize("kind", ZIP_KINDS)
def test_malicious_zip_is_rejected_naming_the_member(tmp_path, kind):
    archive = build_malicious_zip(tmp_path / f"{kind}.zip", kind)
    dest = tmp_path / "out" / "x"
    with pytest.raises(UnsafeArchiveError) as err:
        extract_archive(archive, dest, progress=False)
    assert repr(BAD_MEMBER[kind]) in str(err.value)
    _assert_nothing_extracted(tmp_path, dest)


def test_symlink_inside_the_tree_is_allowed(tmp_path):
    archive = tmp_path / "ok.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("a/file.txt")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"hello"))
        link = tarfile.TarInfo("a/sub/link")
        link.type, link.linkname = tarfile.SYMTYPE, "../file.txt"
        tf.addfile(link)
    dest = extract_archive(archive, tmp_path / "x", progress=False)
    assert (dest / "a" / "sub" / "link").read_bytes() == b"hello"


def test_zip_extracts_once_with_include_filter(tmp_path):
    archive = tmp_path / "good.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("keep/a.txt", b"a")
        zf.writestr("skip/b.txt", b"b")
    dest = extract_archive(archive, tmp_path / "x", fingerprint="abc", include=["keep"], progress=False)
    assert (dest / "keep" / "a.txt").read_bytes() == b"a" and not (dest / "skip").exists()
    assert (dest / MARKER).exists()
    (dest / "keep" / "a.txt").write_bytes(b"edited")
    extract_archive(archive, dest, fingerprint="abc", include=["keep"], progress=False)
    assert (dest / "keep" / "a.txt").read_bytes() == b"edited"  # marker matched: not re-extracted
    extract_archive(archive, dest, fingerprint="new", include=["keep"], progress=False)
    assert (dest / "keep" / "a.txt").read_bytes() == b"a"  # another archive version: re-extracted


def test_not_an_archive_is_a_clear_error(tmp_path):
    bad = tmp_path / "page.tar"
    bad.write_text("<html>404</html>")
    with pytest.raises(ValueError, match="neither a tar nor a zip"):
        extract_archive(bad, tmp_path / "x", progress=False)


def _tar_of(path: Path, n: int = 3, size: int = 3000) -> Path:
    with tarfile.open(path, "w") as tf:
        for i in range(n):
            info = tarfile.TarInfo(f"d/f{i}.bin")
            info.size = size
            tf.addfile(info, io.BytesIO(bytes([i]) * size))
    return path


@pytest.mark.parametrize("cut", ["member_boundary", "mid_member", "mid_header"])
def test_truncated_tar_is_a_corrupt_archive_error(tmp_path, cut):
    """tarfile stops SILENTLY at a member boundary; the end-of-archive check must catch it."""
    archive = _tar_of(tmp_path / "a.tar")
    data = archive.read_bytes()
    member = 512 + 3072  # header + data padded to the 512-byte block
    keep = {"member_boundary": 2 * member, "mid_member": member + 1000, "mid_header": 2 * member + 100}[cut]
    archive.write_bytes(data[:keep])
    dest = tmp_path / "out" / "x"
    with pytest.raises(CorruptArchiveError, match=str(archive)):
        extract_archive(archive, dest, progress=False)
    _assert_nothing_extracted(tmp_path, dest)


def test_damaged_zip_and_gzip_are_corrupt_archive_errors(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # stored, not deflated: the flipped byte reaches the CRC check
        zf.writestr("d/a.bin", bytes(range(256)) * 20)
    data = bytearray(archive.read_bytes())
    data[100] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(CorruptArchiveError, match=rf"{archive}.*BadZipFile"):
        extract_archive(archive, tmp_path / "x", progress=False)
    tgz = tmp_path / "a.tgz"
    with tarfile.open(tgz, "w:gz") as tf:
        info = tarfile.TarInfo("big.bin")
        info.size = 200_000
        tf.addfile(info, io.BytesIO(os.urandom(200_000)))
    tgz.write_bytes(tgz.read_bytes()[:100_000])
    with pytest.raises(CorruptArchiveError, match=rf"{tgz}.*EOFError"):
        extract_archive(tgz, tmp_path / "y", progress=False)
    _assert_nothing_extracted(tmp_path, tmp_path / "y")


def test_extraction_folder_has_a_normal_mkdirs_permissions(tmp_path):
    archive = _tar_of(tmp_path / "a.tar", n=1)
    old = os.umask(0o002)
    try:
        dest = extract_archive(archive, tmp_path / "x", progress=False)
    finally:
        os.umask(old)
    assert dest.stat().st_mode & 0o777 == 0o775  # tempfile.mkdtemp would give 0o700
