"""Download path (ldvc/data/download.py, sources.py) against a loopback server: resume with
Range after a dropped connection, retries, checksum failure naming expected/actual, cache hits."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
from fixtures import serve_directory

from ldvc.data.download import ChecksumError, DownloadError, fetch, fetch_with_digests
from ldvc.data.sources import OFFICIAL_SOURCES, Source, resolve_sources


@pytest.fixture()
def blob(tmp_path: Path) -> tuple[Path, str, str]:
    www = tmp_path / "www"
    www.mkdir()
    data = bytes(range(256)) * 4096  # 1 MiB: several chunks
    (www / "blob.tar").write_bytes(data)
    return www, hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()


def _src(url: str, md5: str | None = None, sha256: str | None = None, sha1: str | None = None) -> Source:
    return Source("blob", url, "blob.tar", md5=md5, sha256=sha256, sha1=sha1)


def test_fetch_verifies_and_second_fetch_is_a_cache_hit(blob, tmp_path):
    www, md5, sha = blob
    log: list = []
    with serve_directory(www, log=log) as url:
        path = fetch(_src(url + "blob.tar", md5, sha), tmp_path / "cache", progress=False)
        assert path == tmp_path / "cache" / "blob.tar"
        assert hashlib.md5(path.read_bytes()).hexdigest() == md5
        n = len(log)
        again = fetch(_src(url + "blob.tar", md5, sha), tmp_path / "cache", progress=False)
    assert again == path and len(log) == n == 1  # verified file = hit, no second request
    assert not (tmp_path / "cache" / "blob.tar.part").exists()


def test_dropped_connection_resumes_with_range(blob, tmp_path):
    www, md5, _ = blob
    log: list = []
    with serve_directory(www, drop_after={"blob.tar": 300_000}, log=log) as url:
        path = fetch(_src(url + "blob.tar", md5), tmp_path / "cache", backoff=0.01, progress=False)
    assert hashlib.md5(path.read_bytes()).hexdigest() == md5
    ranges = [r for _, r, status in log if status == 206]
    assert ranges and ranges[0].startswith("bytes=") and int(ranges[0][6:-1]) > 0


def test_server_ignoring_range_restarts_from_zero(blob, tmp_path):
    www, md5, _ = blob
    with serve_directory(www, drop_after={"blob.tar": 100_000}, ignore_range={"blob.tar"}) as url:
        path = fetch(_src(url + "blob.tar", md5), tmp_path / "cache", backoff=0.01, progress=False)
    assert path.stat().st_size == 1 << 20 and hashlib.md5(path.read_bytes()).hexdigest() == md5


def test_transient_503_is_retried_but_404_fails_at_once(blob, tmp_path):
    www, md5, _ = blob
    log: list = []
    with serve_directory(www, fail_first={"blob.tar": 503}, log=log) as url:
        fetch(_src(url + "blob.tar", md5), tmp_path / "c1", backoff=0.01, progress=False)
        assert [s for _, _, s in log] == [503, 200]
        with pytest.raises(DownloadError, match=r"HTTP 404.*data\.sources\.blob\.url"):
            fetch(_src(url + "missing.tar"), tmp_path / "c2", backoff=0.01, progress=False)
    assert len(log) == 3  # the 404 was not retried


def test_corrupted_byte_raises_checksum_error_and_keeps_nothing_usable(blob, tmp_path):
    www, md5, _ = blob
    with serve_directory(www, corrupt={"blob.tar": 12345}) as url:
        with pytest.raises(ChecksumError) as err:
            fetch(_src(url + "blob.tar", md5), tmp_path / "cache", progress=False)
    msg = str(err.value)
    assert "blob.tar" in msg and f"expected {md5}" in msg and "actual " in msg
    assert err.value.actual != md5 and len(err.value.actual) == 32
    assert not (tmp_path / "cache" / "blob.tar").exists()  # never renamed into place
    assert (tmp_path / "cache" / "blob.tar.corrupt").exists()


def test_sha256_is_checked_too(blob, tmp_path):
    www, md5, _ = blob
    with serve_directory(www) as url, pytest.raises(ChecksumError, match="sha256 checksum mismatch"):
        fetch(_src(url + "blob.tar", md5, "0" * 64), tmp_path / "cache", progress=False)


def test_sha1_is_checked_where_it_is_the_published_checksum(blob, tmp_path):
    """ADEChallengeData2016.zip has only a published SHA-1 (ldvc/data/sources.py): a source may carry one."""
    www, _, _ = blob
    sha1 = hashlib.sha1((www / "blob.tar").read_bytes()).hexdigest()
    with serve_directory(www) as url:
        with pytest.raises(ChecksumError, match=r"sha1 checksum mismatch: expected 0{40} .*actual " + sha1):
            fetch(_src(url + "blob.tar", sha1="0" * 40), tmp_path / "c1", progress=False)
        path, digests = fetch_with_digests(_src(url + "blob.tar", sha1=sha1), tmp_path / "c2", progress=False)
    assert digests["sha1"] == sha1
    local = fetch_with_digests(_src(str(www / "blob.tar"), sha1=sha1), tmp_path / "c3", progress=False)
    assert local[0] == www / "blob.tar" and local[1]["sha1"] == sha1
    s = resolve_sources({"ade20k_challenge": {"url": "/data/ADE.zip", "sha1": "AB" * 20}})["ade20k_challenge"]
    assert s.sha1 == "ab" * 20 and s.filename == "ADE.zip"
    with pytest.raises(ValueError, match="40-digit hex sha1"):
        resolve_sources({"ade20k_challenge": {"sha1": "123"}})


def test_records_made_before_sha1_existed_are_reused_or_completed(blob, tmp_path):
    """A cached archive's sidecar written before sha1 was computed (md5 + sha256 only) stays a cache hit
    for a source without a sha1 (no re-hash, no download); for a source WITH a sha1 the file is hashed
    again - not downloaded again - and the record completed."""
    import json

    from ldvc.data.download import sidecar_path

    www, md5, _ = blob
    sha1 = hashlib.sha1((www / "blob.tar").read_bytes()).hexdigest()
    log: list = []
    with serve_directory(www, log=log) as url:
        path = fetch(_src(url + "blob.tar", md5), tmp_path / "cache", progress=False)
        side = sidecar_path(path)
        rec = json.loads(side.read_text())
        del rec["sha1"]
        side.write_text(json.dumps(rec))
        _, digests = fetch_with_digests(_src(url + "blob.tar", md5), tmp_path / "cache", progress=False)
        assert "sha1" not in digests  # served from the old record: nothing re-hashed
        _, digests = fetch_with_digests(_src(url + "blob.tar", md5, sha1=sha1), tmp_path / "cache", progress=False)
    assert digests["sha1"] == sha1 and json.loads(side.read_text())["sha1"] == sha1
    assert len(log) == 1  # one download in all


def test_local_path_and_file_url_are_used_in_place(blob, tmp_path):
    www, md5, _ = blob
    local = www / "blob.tar"
    assert fetch(_src(str(local), md5), tmp_path / "cache", progress=False) == local
    assert fetch(_src(local.as_uri(), md5), tmp_path / "cache", progress=False) == local
    assert not (tmp_path / "cache" / "blob.tar").exists()  # nothing copied (only the digest index is written)
    with pytest.raises(FileNotFoundError, match=r"data\.sources\.blob\.url"):
        fetch(_src(str(www / "nope.tar")), tmp_path / "cache", progress=False)
    with pytest.raises(ChecksumError, match=str(local)):
        fetch(_src(str(local), "f" * 32), tmp_path / "cache", progress=False)


def test_source_overrides():
    official = OFFICIAL_SOURCES["voc2012"]
    assert official.md5 == "6cd6e144f989b92b3379bac3b3de84fd"
    assert OFFICIAL_SOURCES["sbd"].md5 == "82b4d87ceb2ed10f6038a1cba92111cb"
    s = resolve_sources({"voc2012": {"url": "http://mirror.example/VOC.tar"}})["voc2012"]
    assert s.url == "http://mirror.example/VOC.tar" and s.md5 == official.md5 and s.filename == "VOC.tar"
    s = resolve_sources({"sbd": {"url": "/data/benchmark.tgz", "md5": "none", "sha256": "A" * 64}})["sbd"]
    assert s.md5 is None and s.sha256 == "a" * 64
    untouched = resolve_sources({})["coco_val2017"]
    assert dataclasses.asdict(untouched) == dataclasses.asdict(OFFICIAL_SOURCES["coco_val2017"])
    with pytest.raises(ValueError, match="did you mean.*voc2012"):
        resolve_sources({"voc2021": {"url": "x"}})
    with pytest.raises(ValueError, match="unknown keys"):
        resolve_sources({"sbd": {"md6": "x"}})
    with pytest.raises(ValueError, match="32-digit hex md5"):
        resolve_sources({"sbd": {"md5": "1234"}})


def test_unrecorded_cached_file_that_fails_its_check_is_set_aside(blob, tmp_path):
    """A file in the cache that no record vouches for (copied there by hand, cut short) and that
    does not match: moved aside to .corrupt and downloaded again - unlike a recorded one, which is
    kept (tests/test_data_failures.py)."""
    www, md5, _ = blob
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "blob.tar").write_bytes((www / "blob.tar").read_bytes()[:1000])
    with serve_directory(www) as url:
        path = fetch(_src(url + "blob.tar", md5), cache, progress=False)
    assert hashlib.md5(path.read_bytes()).hexdigest() == md5
    assert (cache / "blob.tar.corrupt").stat().st_size == 1000
    assert (cache / "blob.tar.verified.json").exists()
