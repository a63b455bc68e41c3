"""Download and extraction failures measured on real archives, reproduced on miniature ones:
each produces a message naming the file and leaves the cache and the outputs as promised.

- a changed expected md5 against a cached, verified archive: mismatch reported (recorded vs
  expected, which key), the good file KEPT, nothing downloaded; a fresh download that fails only
  because the expected value was wrong is reused once the value is corrected;
- a truncated archive with md5 checking off: named, its record dropped, moved aside to .corrupt,
  downloaded again by the next run; a user's own truncated archive is named and left alone;
- a corrupt label/image/annotation among many: every converter names the file (also across worker
  processes), and no partial output is left;
- the preflight fails on a 404 of the SECOND source before the first is downloaded, falls back to
  a 1-byte Range GET when HEAD is refused, stops on too little disk, needs no network for cached
  sources, and prints its estimate;
- prepared and extracted folders get a normal mkdir's permissions; no empty lists/<split>/ folders.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from fixtures import serve_directory
from fixtures.mini_datasets import COCO_TRAIN, VOC_TRAIN

from ldvc.config import CocoJsonConfig, DataConfig
from ldvc.data import canonical, preflight
from ldvc.data.archive import CorruptArchiveError, extract_archive
from ldvc.data.canonical import CanonicalFormatError, UnreadableFileError
from ldvc.data.coco_json import CocoJsonError
from ldvc.data.download import ChecksumError, fetch, sidecar_path
from ldvc.data.preflight import PreflightError
from ldvc.data.prepare import prepare_dataset
from ldvc.data.sources import Source


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _no_partial_output(parent: Path, name: str = "prepared") -> None:
    assert not (parent / name).exists()
    assert [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")] == []


def _www(tmp_path: Path, archives: dict[str, tuple[Path, str]]) -> Path:
    """A private served directory with copies of the session's archives (tests may damage them)."""
    www = tmp_path / "www"
    www.mkdir()
    for path, _ in archives.values():
        shutil.copy2(path, www / path.name)
    return www


def _voc_cfg(tmp_path: Path, sources: dict, **kw) -> DataConfig:
    return DataConfig(dataset="voc", root="prepared", cache_dir="cache", sources=sources, num_workers=1, **kw)


# --------------------------------------------------------------------------------------------
# Checksums: a good cached archive is never discarded because the expected value changed
# --------------------------------------------------------------------------------------------


def test_wrong_md5_keeps_the_verified_cached_archive(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    data = bytes(range(256)) * 1000
    (www / "blob.tar").write_bytes(data)
    log: list = []
    with serve_directory(www, log=log) as url:
        import hashlib

        md5 = hashlib.md5(data).hexdigest()
        path = fetch(Source("blob", url + "blob.tar", "blob.tar", md5=md5), tmp_path / "cache", progress=False)
        with pytest.raises(ChecksumError) as err:
            fetch(Source("blob", url + "blob.tar", "blob.tar", md5="f" * 32), tmp_path / "cache", progress=False)
    msg = str(err.value)
    assert str(path) in msg and f"expected {'f' * 32}" in msg and f"actual {md5}" in msg
    assert "data.sources.blob.md5" in msg and "KEPT" in msg and str(sidecar_path(path)) in msg
    assert f"matched the expected md5 {md5}" in msg  # it was verified against the right value once
    assert path.read_bytes() == data and sidecar_path(path).exists()  # kept, record intact
    assert not path.with_name("blob.tar.corrupt").exists()
    assert len(log) == 1  # nothing downloaded again


def test_wrong_md5_in_params_against_a_prepared_voc_cache(mini_voc_archives, tmp_path):
    www = _www(tmp_path, mini_voc_archives)
    log: list = []
    with serve_directory(www, log=log) as url:
        sources = {n: {"url": url + p.name, "md5": md5} for n, (p, md5) in mini_voc_archives.items()}
        prepare_dataset(_voc_cfg(tmp_path, sources), tmp_path / "prepared", tmp_path, progress=False)
        meta_before = (tmp_path / "prepared" / "meta.json").read_text()
        n = len(log)
        sources["voc2012"]["md5"] = "0" * 32  # a typo in params.yaml
        with pytest.raises(PreflightError) as err:
            prepare_dataset(_voc_cfg(tmp_path, sources), tmp_path / "prepared", tmp_path, progress=False)
    tar = tmp_path / "cache" / mini_voc_archives["voc2012"][0].name
    msg = str(err.value)
    assert str(tar) in msg and "data.sources.voc2012.md5" in msg and f"actual {mini_voc_archives['voc2012'][1]}" in msg
    assert tar.exists() and sidecar_path(tar).exists() and not tar.with_name(tar.name + ".corrupt").exists()
    assert len(log) == n  # not downloaded again
    assert (tmp_path / "prepared" / "meta.json").read_text() == meta_before  # outputs untouched


def test_fresh_download_with_a_wrong_md5_is_reused_after_the_fix(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "blob.tar").write_bytes(b"payload" * 1000)
    import hashlib

    md5 = hashlib.md5(b"payload" * 1000).hexdigest()
    log: list = []
    with serve_directory(www, log=log) as url:
        with pytest.raises(ChecksumError) as err:
            fetch(Source("blob", url + "blob.tar", "blob.tar", md5="e" * 32), tmp_path / "cache", progress=False)
        moved = tmp_path / "cache" / "blob.tar.corrupt"
        assert moved.exists() and str(moved) in str(err.value) and "correct data.sources.blob.md5" in str(err.value)
        path = fetch(Source("blob", url + "blob.tar", "blob.tar", md5=md5), tmp_path / "cache", progress=False)
    assert path.read_bytes() == b"payload" * 1000 and not moved.exists()
    assert len(log) == 1  # the set-aside copy was checked against the corrected md5 and reused


# --------------------------------------------------------------------------------------------
# Truncated archives
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["voc2012", "sbd"])  # a plain tar (ReadError) and a .tgz (EOFError)
def test_truncated_archive_is_moved_aside_and_downloaded_again(mini_voc_archives, tmp_path, name):
    www = _www(tmp_path, mini_voc_archives)
    served = www / mini_voc_archives[name][0].name
    _truncate(served)
    log: list = []
    with serve_directory(www, log=log) as url:
        sources = {n: {"url": url + p.name, "md5": md5} for n, (p, md5) in mini_voc_archives.items()}
        sources[name]["md5"] = "none"  # checksum checking off: the truncated file is "verified"
        with pytest.raises(CorruptArchiveError) as err:
            prepare_dataset(_voc_cfg(tmp_path, sources), tmp_path / "prepared", tmp_path, progress=False)
        cached = tmp_path / "cache" / served.name
        msg = str(err.value)
        assert str(cached) in msg and "moved aside" in msg and "downloads" in msg and "again" in msg
        assert f"data.sources.{name}.md5" in msg  # how to catch it earlier
        assert not cached.exists() and not sidecar_path(cached).exists()
        assert cached.with_name(cached.name + ".corrupt").exists()
        assert not (tmp_path / "cache" / "extracted" / name).exists()
        _no_partial_output(tmp_path)
        _no_partial_output(tmp_path / "cache" / "extracted", name)

        shutil.copy2(mini_voc_archives[name][0], served)  # the server now has the full file
        gets = sum(1 for p, _, _ in log if p.endswith(served.name))
        summary = prepare_dataset(_voc_cfg(tmp_path, sources), tmp_path / "prepared", tmp_path, progress=False)
    assert sum(1 for p, _, _ in log if p.endswith(served.name)) == gets + 1  # downloaded again
    assert summary["inputs"][name]["md5"] == mini_voc_archives[name][1]


def test_archive_matching_its_checksum_is_kept_even_if_it_cannot_be_extracted(mini_voc_archives, tmp_path):
    """The expected checksum vouches for the file: a new download would give the same bytes."""
    import hashlib

    www = _www(tmp_path, mini_voc_archives)
    served = www / mini_voc_archives["voc2012"][0].name
    _truncate(served)
    with serve_directory(www) as url:
        sources = {n: {"url": url + p.name, "md5": md5} for n, (p, md5) in mini_voc_archives.items()}
        sources["voc2012"]["md5"] = hashlib.md5(served.read_bytes()).hexdigest()  # the checksum of a cut file
        with pytest.raises(CorruptArchiveError, match="matches its expected checksum") as err:
            prepare_dataset(_voc_cfg(tmp_path, sources), tmp_path / "prepared", tmp_path, progress=False)
    cached = tmp_path / "cache" / served.name
    assert str(cached) in str(err.value) and cached.exists() and sidecar_path(cached).exists()
    _no_partial_output(tmp_path)


def test_truncated_local_archive_is_named_and_left_in_place(mini_voc_archives, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    local = {n: mine / p.name for n, (p, _) in mini_voc_archives.items()}
    for n, (p, _) in mini_voc_archives.items():
        shutil.copy2(p, local[n])
    _truncate(local["voc2012"], 0.3)
    sources = {n: {"url": str(p), "md5": "none"} for n, p in local.items()}
    with pytest.raises(CorruptArchiveError) as err:
        prepare_dataset(_voc_cfg(tmp_path, sources), tmp_path / "prepared", tmp_path, progress=False)
    msg = str(err.value)
    assert str(local["voc2012"]) in msg and "replace it" in msg and "data.sources.voc2012.url" in msg
    assert local["voc2012"].exists()  # a user's file is never moved
    _no_partial_output(tmp_path)


# --------------------------------------------------------------------------------------------
# Corrupt files among many: every converter names the file
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def voc_extracted(mini_voc_archives, tmp_path) -> Path:
    base = tmp_path / "extracted"
    for name, (path, _) in mini_voc_archives.items():
        extract_archive(path, base / name, progress=False)
    return base


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_voc_label_png_is_named(voc_extracted, tmp_path, workers):
    victim = voc_extracted / "voc2012" / "VOCdevkit" / "VOC2012" / "SegmentationClass" / f"{VOC_TRAIN[1]}.png"
    _truncate(victim)
    cfg = DataConfig(dataset="voc", extracted_dir=str(voc_extracted), num_workers=workers)
    with pytest.raises(UnreadableFileError, match="truncated or corrupt") as err:
        prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False)
    assert str(victim) in str(err.value) and "VOC label" in str(err.value)
    _no_partial_output(tmp_path)


def test_corrupt_sbd_mat_and_voc_image_are_named(mini_voc_archives, voc_extracted, tmp_path):
    sbd_only = "2008_000100"  # in SBD train only: its label comes from cls/*.mat
    mat = voc_extracted / "sbd" / "benchmark_RELEASE" / "dataset" / "cls" / f"{sbd_only}.mat"
    _truncate(mat)
    cfg = DataConfig(dataset="voc", extracted_dir=str(voc_extracted), num_workers=1)
    with pytest.raises(UnreadableFileError) as err:
        prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False)
    assert str(mat) in str(err.value)
    shutil.rmtree(voc_extracted / "sbd")
    extract_archive(mini_voc_archives["sbd"][0], voc_extracted / "sbd", progress=False)  # intact again
    jpg = voc_extracted / "voc2012" / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{VOC_TRAIN[0]}.jpg"
    _truncate(jpg, 0.6)  # a truncated JPEG would be hard-linked unnoticed without the end-marker check
    with pytest.raises(UnreadableFileError) as err:
        prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False)
    assert str(jpg) in str(err.value) and "image" in str(err.value)
    _no_partial_output(tmp_path)


def test_corrupt_coco_stuff_map_is_named(mini_coco_stuff_archives, tmp_path):
    base = tmp_path / "extracted"
    for name, (path, _) in mini_coco_stuff_archives.items():
        extract_archive(path, base / name, progress=False)
    victim = base / "coco_stuffthingmaps" / "train2017" / f"{COCO_TRAIN[2]}.png"
    _truncate(victim)
    cfg = DataConfig(dataset="coco_stuff", extracted_dir=str(base), num_workers=2)
    with pytest.raises(UnreadableFileError) as err:
        prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False)
    assert str(victim) in str(err.value) and "stuff map" in str(err.value)
    _no_partial_output(tmp_path)


def test_coco_json_failures_name_the_file(mini_coco_json, tmp_path):
    src = tmp_path / "user"
    shutil.copytree(next(iter(mini_coco_json.values())).parent, src)
    cj = CocoJsonConfig(train_images=str(src / "train_images"), train_annotations=str(src / "train.json"),
                        val_images=str(src / "val_images"), val_annotations=str(src / "val.json"))
    cfg = DataConfig(dataset="coco_json", coco_json=cj, num_workers=1)
    good = (src / "train.json").read_text()

    (src / "train.json").write_text(good[: len(good) // 2])  # a truncated JSON file
    with pytest.raises(CocoJsonError, match="cannot read the COCO annotation file") as err:
        prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False)
    assert str(src / "train.json") in str(err.value)

    data = json.loads(good)
    data["annotations"][1]["segmentation"] = [[1, 2, "x"]]  # a malformed polygon
    (src / "train.json").write_text(json.dumps(data))
    with pytest.raises(CocoJsonError) as err:
        prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False)
    msg = str(err.value)
    assert str(src / "train.json") in msg and "annotation id 2" in msg and "train_a.jpg" in msg

    del data["images"][0]["height"]  # a missing field
    (src / "train.json").write_text(json.dumps(data))
    with pytest.raises(CocoJsonError, match="'train_a.jpg'") as err:
        prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False)
    assert str(src / "train.json") in str(err.value)

    (src / "train.json").write_text(good)
    _truncate(src / "val_images" / "val_b.jpg", 0.5)
    with pytest.raises(UnreadableFileError) as err:
        prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False)
    assert str(src / "val_images" / "val_b.jpg") in str(err.value)
    _no_partial_output(tmp_path)


def test_canonical_helpers_name_the_file(tmp_path):
    import numpy as np

    lab = tmp_path / "l.png"
    canonical.write_label(lab, np.zeros((8, 8), dtype=np.uint8))
    _truncate(lab)
    with pytest.raises(UnreadableFileError, match=str(lab)):
        canonical.read_label(lab)
    with pytest.raises(UnreadableFileError, match="does not exist"):
        canonical.read_label(tmp_path / "missing.png")
    (tmp_path / "meta.json").write_text('{"dataset": ')
    with pytest.raises(CanonicalFormatError, match=str(tmp_path / "meta.json")):
        canonical.read_meta(tmp_path)
    (tmp_path / "page.jpg").write_text("<html>not an image</html>")
    with pytest.raises(UnreadableFileError, match=str(tmp_path / "page.jpg")):
        canonical.write_image(tmp_path / "page.jpg", tmp_path, "x")


# --------------------------------------------------------------------------------------------
# Preflight
# --------------------------------------------------------------------------------------------


def test_preflight_fails_on_the_second_source_before_the_first_is_downloaded(mini_voc_archives, tmp_path):
    www = _www(tmp_path, mini_voc_archives)
    log: list = []
    heads: list = []
    with serve_directory(www, log=log, head_log=heads) as url:
        sources = {n: {"url": url + p.name, "md5": md5} for n, (p, md5) in mini_voc_archives.items()}
        sources["sbd"]["url"] = url + "moved/benchmark.tgz"
        with pytest.raises(PreflightError) as err:
            prepare_dataset(_voc_cfg(tmp_path, sources), tmp_path / "prepared", tmp_path, progress=False)
    msg = str(err.value)
    assert url + "moved/benchmark.tgz" in msg and "HTTP 404" in msg and "data.sources.sbd.url" in msg
    assert "before downloading anything" in msg and len(err.value.problems) == 1
    assert log == []  # not one GET: the first source was not downloaded
    assert [status for _, status in heads] == [200, 404]
    assert not (tmp_path / "cache" / mini_voc_archives["voc2012"][0].name).exists()
    _no_partial_output(tmp_path)


def test_preflight_falls_back_to_a_range_get_and_prints_the_estimate(mini_voc_archives, tmp_path, capfd):
    www = _www(tmp_path, mini_voc_archives)
    log: list = []
    with serve_directory(www, log=log, refuse_head=True) as url:
        sources = {n: {"url": url + p.name, "md5": md5} for n, (p, md5) in mini_voc_archives.items()}
        report = preflight.preflight(_voc_cfg(tmp_path, sources), tmp_path)
    assert [(r, s) for _, r, s in log] == [("bytes=0-0", 206)] * 2
    for name, (path, _) in mini_voc_archives.items():
        assert report["sources"][name]["bytes"] == path.stat().st_size
    err = capfd.readouterr().err
    assert "ldvc preflight: voc: voc2012:" in err and "GET 206" in err
    assert "ldvc preflight: disk: archives" in err and "extraction" in err and "free:" in err
    total = sum(p.stat().st_size for p, _ in mini_voc_archives.values())
    (disk,) = report["disk"]
    assert disk["needed"]["archives"] == total and disk["needed"]["extraction"] >= total


def test_preflight_stops_on_too_little_disk(mini_voc_archives, tmp_path, monkeypatch):
    www = _www(tmp_path, mini_voc_archives)
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    remote = x\n[cache]\n    dir = ../dvc-cache\n")
    real = shutil.disk_usage
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    log: list = []
    with serve_directory(www, log=log) as url:
        sources = {n: {"url": url + p.name, "md5": md5} for n, (p, md5) in mini_voc_archives.items()}
        with pytest.raises(PreflightError) as err:
            prepare_dataset(_voc_cfg(tmp_path, sources), tmp_path / "prepared", tmp_path, progress=False)
    msg = str(err.value)
    assert "not enough free disk space" in msg and "archives" in msg and "DVC cache" in msg and "1000" not in msg
    assert "data.cache_dir" in msg and log == []
    assert preflight.dvc_cache_dir(tmp_path) == (tmp_path / "dvc-cache").resolve()


def test_cached_sources_need_no_network(mini_voc_archives, tmp_path, capfd):
    www = _www(tmp_path, mini_voc_archives)
    with serve_directory(www) as url:
        sources = {n: {"url": url + p.name, "md5": md5} for n, (p, md5) in mini_voc_archives.items()}
        prepare_dataset(_voc_cfg(tmp_path, sources), tmp_path / "prepared", tmp_path, progress=False)
    capfd.readouterr()
    # The server is gone; everything is cached and verified: preflight and preparation still work.
    report = preflight.preflight(_voc_cfg(tmp_path, sources), tmp_path, timeout=2)
    assert {s["state"] for s in report["sources"].values()} == {"verified"}
    assert report["disk"][0]["needed"] == {}  # already downloaded and extracted
    assert "cached and verified" in capfd.readouterr().err
    prepare_dataset(_voc_cfg(tmp_path, sources), tmp_path / "prepared", tmp_path, progress=False)


# --------------------------------------------------------------------------------------------
# Permissions and leftovers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_created_folders_get_a_normal_mkdirs_permissions(mini_voc_archives, tmp_path, umask):
    www = _www(tmp_path, mini_voc_archives)
    old = os.umask(umask)
    try:
        reference = tmp_path / "plain"
        reference.mkdir()
        with serve_directory(www) as url:
            sources = {n: {"url": url + p.name, "md5": md5} for n, (p, md5) in mini_voc_archives.items()}
            prepare_dataset(_voc_cfg(tmp_path, sources), tmp_path / "prepared", tmp_path, progress=False)
    finally:
        os.umask(old)
    expected = reference.stat().st_mode & 0o777
    assert expected == 0o777 & ~umask
    for folder in (tmp_path / "prepared", tmp_path / "cache" / "extracted" / "voc2012",
                   tmp_path / "cache" / "extracted" / "sbd"):
        assert folder.stat().st_mode & 0o777 == expected, folder
    assert sorted(p.name for p in (tmp_path / "prepared" / "lists").iterdir()) == ["train.txt", "val.txt"]
    empty = [d for d in (tmp_path / "prepared").rglob("*") if d.is_dir() and not any(d.iterdir())]
    assert empty == []
