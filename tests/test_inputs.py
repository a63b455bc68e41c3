"""The input fingerprint (ldvc/data/inputs.py) that makes the download stage re-run when an
external input changes: an edited COCO-JSON file, an edited file in data.extracted_dir, a replaced
local archive and a changed mirror each change it; an untouched world gives the same record,
and the second call re-hashes nothing. Also: the resolved digests land in prepare_dataset's
summary and meta.json, and a cached archive without checksum is revalidated with the server."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from fixtures import serve_directory

from ldvc.config import CocoJsonConfig, DataConfig
from ldvc.data import canonical, download
from ldvc.data.download import fetch_with_digests
from ldvc.data.inputs import InputError, fingerprint_inputs
from ldvc.data.prepare import prepare_dataset
from ldvc.data.sources import Source, resolve_sources


@pytest.fixture()
def count_hashes(monkeypatch) -> list[Path]:
    """Every full-content hash (download.file_digests) is recorded here."""
    calls: list[Path] = []
    real = download.file_digests

    def counting(path, progress=False):
        calls.append(Path(path))
        return real(path, progress)

    monkeypatch.setattr(download, "file_digests", counting)
    return calls


def _dump(fp: dict) -> str:
    return json.dumps(fp, sort_keys=True)


def _later(path: Path) -> None:
    """Give `path` a clearly newer mtime (an edit within the same clock tick would keep it)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def test_synthetic_has_no_external_input(tmp_path):
    fp = fingerprint_inputs(DataConfig(dataset="synthetic"), tmp_path)
    assert fp == {"dataset": "synthetic", "format": 1, "inputs": {}}


def test_coco_json_annotation_edit_changes_the_fingerprint(mini_coco_json, tmp_path, count_hashes):
    src = tmp_path / "user"
    shutil.copytree(next(iter(mini_coco_json.values())).parent, src)
    cfg = DataConfig(dataset="coco_json", cache_dir="cache", coco_json=CocoJsonConfig(
        train_images=str(src / "train_images"), train_annotations=str(src / "train.json"),
        val_images=str(src / "val_images"), val_annotations=str(src / "val.json")))
    first = fingerprint_inputs(cfg, tmp_path, progress=False)
    assert sorted(first["inputs"]) == ["train_annotations", "train_images", "val_annotations", "val_images"]
    assert first["inputs"]["train_annotations"]["kind"] == "file"
    assert first["inputs"]["train_images"] == {**first["inputs"]["train_images"], "kind": "folder", "files": 2}
    assert len(count_hashes) == 2  # the two annotation files, hashed once

    t0 = time.perf_counter()
    again = fingerprint_inputs(cfg, tmp_path, progress=False)
    assert _dump(again) == _dump(first) and len(count_hashes) == 2  # cache hit: nothing re-hashed
    assert time.perf_counter() - t0 < 1.0

    ann = src / "train.json"
    data = json.loads(ann.read_text())
    data["annotations"][0]["category_id"] = 9  # car -> person: same length, other labels
    ann.write_text(json.dumps(data))
    _later(ann)
    edited = fingerprint_inputs(cfg, tmp_path, progress=False)
    assert edited["inputs"]["train_annotations"]["sha256"] != first["inputs"]["train_annotations"]["sha256"]
    assert edited["inputs"]["val_annotations"] == first["inputs"]["val_annotations"]
    assert len(count_hashes) == 3  # only the edited file was hashed again

    img = src / "val_images" / "val_a.jpg"
    _later(img)  # an image replaced in place (same size here): the folder digest sees its mtime
    touched = fingerprint_inputs(cfg, tmp_path, progress=False)
    assert touched["inputs"]["val_images"]["digest"] != edited["inputs"]["val_images"]["digest"]
    assert touched["inputs"]["train_images"] == edited["inputs"]["train_images"]


def test_extracted_dir_edit_changes_the_fingerprint(tmp_path, count_hashes):
    tree = tmp_path / "extracted" / "VOCdevkit" / "VOC2012"
    (tree / "SegmentationClass").mkdir(parents=True)
    for i in range(50):
        (tree / "SegmentationClass" / f"{i:04d}.png").write_bytes(b"x" * i)
    (tmp_path / "extracted" / "link").symlink_to(tmp_path / "extracted")  # a loop must not hang the walk
    cfg = DataConfig(dataset="voc", extracted_dir="extracted", cache_dir="cache")
    first = fingerprint_inputs(cfg, tmp_path, progress=False)
    rec = first["inputs"]["extracted_dir"]
    assert rec["kind"] == "folder" and rec["path"] == "extracted" and rec["files"] == 50
    assert _dump(fingerprint_inputs(cfg, tmp_path, progress=False)) == _dump(first)
    assert count_hashes == []  # a folder is fingerprinted by metadata only

    victim = tree / "SegmentationClass" / "0007.png"
    victim.write_bytes(b"y" * 7)  # same size
    _later(victim)
    assert fingerprint_inputs(cfg, tmp_path, progress=False)["inputs"]["extracted_dir"]["digest"] != rec["digest"]
    before = fingerprint_inputs(cfg, tmp_path, progress=False)
    (tree / "SegmentationClass" / "new.png").write_bytes(b"z")
    after = fingerprint_inputs(cfg, tmp_path, progress=False)
    assert after["inputs"]["extracted_dir"]["files"] == 51 and _dump(after) != _dump(before)
    with pytest.raises(FileNotFoundError, match=r"data\.extracted_dir: .*nowhere is not a directory"):
        fingerprint_inputs(DataConfig(dataset="voc", extracted_dir="nowhere"), tmp_path, progress=False)


def test_replaced_local_archive_changes_the_fingerprint(mini_voc_archives, tmp_path, count_hashes):
    voc_tar, md5 = mini_voc_archives["voc2012"]
    local = tmp_path / "mine" / voc_tar.name
    local.parent.mkdir()
    shutil.copy2(voc_tar, local)
    sources = {"voc2012": {"url": str(local), "md5": "none"}, "sbd": {"url": "http://127.0.0.1:9/benchmark.tgz"}}
    cfg = DataConfig(dataset="voc", cache_dir="cache", sources=sources)
    first = fingerprint_inputs(cfg, tmp_path, progress=False)
    assert first["inputs"]["voc2012"]["kind"] == "local_archive" and first["inputs"]["voc2012"]["md5"] == md5
    # An official URL with its md5 is identified by that md5: no network (port 9 would refuse).
    assert first["inputs"]["sbd"] == {"kind": "url", "md5": "82b4d87ceb2ed10f6038a1cba92111cb", "sha256": None,
                                      "url": "http://127.0.0.1:9/benchmark.tgz"}
    n = len(count_hashes)
    assert _dump(fingerprint_inputs(cfg, tmp_path, progress=False)) == _dump(first) and len(count_hashes) == n

    # Replaced by another archive of the same size with the old mtime kept (cp -p): the inode differs.
    other = local.with_name("other.tar")
    data = bytearray(local.read_bytes())
    data[-1] ^= 0xFF
    other.write_bytes(bytes(data))
    st = local.stat()
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, local)
    replaced = fingerprint_inputs(cfg, tmp_path, progress=False)
    assert replaced["inputs"]["voc2012"]["md5"] != md5 and len(count_hashes) == n + 1

    # The download stage reuses the same digest cache: no second hash of the user's archive.
    path, digests = fetch_with_digests(cfg_source(local), tmp_path / "cache", progress=False)
    assert path == local and digests["md5"] == replaced["inputs"]["voc2012"]["md5"] and len(count_hashes) == n + 1


def cfg_source(local: Path) -> Source:
    return Source("voc2012", str(local), local.name)


def test_url_without_checksum_uses_the_servers_validators(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "maps.zip").write_bytes(b"v1" * 1000)
    heads: list = []
    with serve_directory(www, head_log=heads) as url:
        sources = {"coco_stuffthingmaps": {"url": url + "maps.zip", "md5": "none"}}
        cfg = DataConfig(dataset="coco_stuff", cache_dir="cache", sources=sources)
        first = fingerprint_inputs(cfg, tmp_path, progress=False)
        rec = first["inputs"]["coco_stuffthingmaps"]
        assert rec["kind"] == "url" and rec["etag"] and rec["last_modified"] and rec["size"] == 2000
        assert _dump(fingerprint_inputs(cfg, tmp_path, progress=False)) == _dump(first)
        (www / "maps.zip").write_bytes(b"v2" * 1001)  # the mirror's content changed
        assert fingerprint_inputs(cfg, tmp_path, progress=False)["inputs"]["coco_stuffthingmaps"] != rec
    assert len(heads) == 3
    with pytest.raises(InputError) as err:  # the server is gone
        fingerprint_inputs(cfg, tmp_path, progress=False, timeout=2)
    msg = str(err.value)
    assert url + "maps.zip" in msg and "data.sources.coco_stuffthingmaps.sha256" in msg


def test_cached_archive_without_checksum_is_revalidated(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "blob.tar").write_bytes(b"a" * 5000)
    log: list = []
    heads: list = []
    with serve_directory(www, log=log, head_log=heads) as url:
        src = Source("blob", url + "blob.tar", "blob.tar")
        path, d1 = fetch_with_digests(src, tmp_path / "cache", progress=False)
        assert fetch_with_digests(src, tmp_path / "cache", progress=False)[1] == d1
        assert len(log) == 1 and len(heads) == 1  # unchanged on the server: one HEAD, no transfer
        (www / "blob.tar").write_bytes(b"b" * 5000)  # same size, new content (new ETag)
        _later(www / "blob.tar")
        _, d2 = fetch_with_digests(src, tmp_path / "cache", progress=False)
        assert d2 != d1 and path.read_bytes() == b"b" * 5000 and len(log) == 2
    # Offline, the cached copy is used (with a note) rather than failing.
    assert fetch_with_digests(src, tmp_path / "cache", progress=False, timeout=2)[1] == d2


def test_prepare_records_the_resolved_inputs(mini_voc_archives, mini_coco_json, tmp_path):
    www = next(iter(mini_voc_archives.values()))[0].parent
    with serve_directory(www) as url:
        sources = {n: {"url": url + p.name, "md5": md5} for n, (p, md5) in mini_voc_archives.items()}
        cfg = DataConfig(dataset="voc", cache_dir="cache", sources=sources, num_workers=1)
        summary = prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False)
    for name, (_, md5) in mini_voc_archives.items():
        assert summary["inputs"][name]["md5"] == md5 and summary["inputs"][name]["kind"] == "archive"
        assert summary["inputs"][name]["file"] == f"cache/{mini_voc_archives[name][0].name}"
    meta = canonical.read_meta(tmp_path / "prepared")
    assert meta["source"]["inputs"] == summary["inputs"]

    cj = CocoJsonConfig(**{k: str(v) for k, v in mini_coco_json.items()})
    cfg = DataConfig(dataset="coco_json", cache_dir="cache", coco_json=cj, num_workers=1)
    summary = prepare_dataset(cfg, tmp_path / "cj", tmp_path, progress=False)
    fp = fingerprint_inputs(cfg, tmp_path, progress=False)
    assert summary["inputs"] == fp["inputs"] == canonical.read_meta(tmp_path / "cj")["source"]["inputs"]


def test_cached_url_without_checksum_fingerprints_offline_and_sees_a_server_change(tmp_path):
    """Once cached and verified, a checksum-less source is identified by its cached content: an
    offline `dvc repro` gets the same record (no failure, no re-run); a changed server copy changes it."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "maps.zip").write_bytes(b"v1" * 1000)
    with serve_directory(www) as url:
        sources = {"coco_stuffthingmaps": {"url": url + "maps.zip", "md5": "none"}}
        cfg = DataConfig(dataset="coco_stuff", cache_dir="cache", sources=sources)
        fetch_with_digests(resolve_sources(sources)["coco_stuffthingmaps"], tmp_path / "cache", progress=False)
        online = fingerprint_inputs(cfg, tmp_path, progress=False)
        assert set(online["inputs"]["coco_stuffthingmaps"]) == {"kind", "url", "cached_sha256"}
        (www / "maps.zip").write_bytes(b"v2" * 1001)  # the mirror's content changed
        _later(www / "maps.zip")
        changed = fingerprint_inputs(cfg, tmp_path, progress=False)
        assert changed["inputs"]["coco_stuffthingmaps"]["server_changed_to"]["size"] == 2002
    offline = fingerprint_inputs(cfg, tmp_path, progress=False, timeout=2)  # the server is gone
    assert _dump(offline) == _dump(online)
