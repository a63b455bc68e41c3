"""ADE20K SceneParsing, 150 classes (ldvc/data/ade20k_150.py), on a miniature ADEChallengeData2016.zip
in the real layout served on 127.0.0.1: download -> SHA-1 check -> extract -> `value - 1` labels ->
canonical format. Class list, mapping, ignore index and checksum are pinned against the reference
files they come from (cited per test)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fixtures import serve_directory
from fixtures.mini_datasets import (
    ADE150_GRAY,
    ADE150_TRAIN,
    ADE150_VAL,
    ADE150_VALUES,
    ade150_raw_label,
    build_mini_ade20k_150,
)
from PIL import Image

from ldvc.config import DataConfig
from ldvc.data import canonical
from ldvc.data.ade20k_150 import RAW_TO_TRAIN, AdeLayoutError, convert_label
from ldvc.data.classes import ADE20K_150_CLASSES, dataset_classes
from ldvc.data.download import ChecksumError
from ldvc.data.prepare import prepare_dataset
from ldvc.data.sources import DATASET_SOURCES, OFFICIAL_SOURCES


def _sha(items) -> str:
    return hashlib.sha256("\n".join(items).encode()).hexdigest()


def _cfg(tmp: Path, sources: dict, **kw) -> DataConfig:
    return DataConfig(dataset="ade20k_150", root=str(tmp / "prepared"), cache_dir=str(tmp / "cache"),
                      sources=sources, num_workers=kw.pop("num_workers", 1), **kw)


@pytest.fixture(scope="module")
def ade_zip(tmp_path_factory) -> tuple[Path, str]:
    path, _ = build_mini_ade20k_150(tmp_path_factory.mktemp("www_ade150"))["ade20k_challenge"]
    return path, hashlib.sha1(path.read_bytes()).hexdigest()


def _reference_labels(raw: np.ndarray) -> np.ndarray:
    """The references' conversion re-stated: `img = img - 1` on the uint8 annotation (0 wraps to 255)."""
    return (raw.astype(np.uint8) - np.uint8(1)).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Pinned against the references
# --------------------------------------------------------------------------------------------


def test_mapping_is_the_references_value_minus_one():
    """KU-CVLAB/CAT-Seg datasets/prepare_ade20k_150.py line 15 (commit 6d3a188af95165147fe2f34a8237fa7d2633e784),
    MendelXu/SAN datasets/prepare_ade20k_sem_seg.py line 15 (commit e19262d1a23992fc2cef934d6756b89ff50fe5c3) and
    bytedance/fc-clip datasets/prepare_ade20k_sem_seg.py line 21 (commit 2b0bbe213070d44da9182530fa2e826fef03f974):
    `img = img - 1  # 0 (ignore) becomes 255`; registered with ignore_label=255 (detectron2 builtin.py
    register_all_ade20k); = mmseg ADE20KDataset reduce_zero_label=True (mmseg/datasets/ade.py)."""
    raw = np.arange(0, 151, dtype=np.uint8)
    np.testing.assert_array_equal(RAW_TO_TRAIN[raw], _reference_labels(raw))
    assert RAW_TO_TRAIN[0] == 255 and RAW_TO_TRAIN[1] == 0 and RAW_TO_TRAIN[150] == 149
    with pytest.raises(ValueError, match=r"x\.png: ADE20K annotation values \[151, 200\] are outside 0\.\.150"):
        convert_label(np.array([[0, 151], [200, 3]], dtype=np.uint8), "x.png")


def test_classes_are_mmsegs_and_catsegs_ade150():
    """150 names in annotation order: KU-CVLAB/CAT-Seg datasets/ade150.json (commit 6d3a188a...; the
    sha256 below is of its 150 entries joined by newlines, computed from that file) = mmseg
    ADE20KDataset classes (mmseg/datasets/ade.py, "bed " with mmseg's trailing space) = ZegCLIP's
    compiled ZeroADE20KDataset; we strip the one trailing space ("bed")."""
    assert len(ADE20K_150_CLASSES) == 150
    catseg = [("bed " if c == "bed" else c) for c in ADE20K_150_CLASSES]
    assert _sha(catseg) == "2133f0a0e71146d00a14482f872bc5888f66d706f90f1b1333a7eb5025989af9"
    assert ADE20K_150_CLASSES[:8] == ("wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed")
    assert ADE20K_150_CLASSES[-3:] == ("glass", "clock", "flag")
    assert dataset_classes(DataConfig(dataset="ade20k_150")) == list(ADE20K_150_CLASSES)


def test_official_source_and_its_published_sha1():
    """The SHA-1 the established loaders publish for ADEChallengeData2016.zip: dmlc/gluon-cv
    scripts/datasets/ade20k.py line 22 (commit a1212784aeb69978ea9570a3a8c21a92bca8017d),
    `('http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip',
    '219e1696abb36c8ba3a3afe7fb2f4b4606a897c7')`; no md5 / sha256 is published."""
    src = OFFICIAL_SOURCES["ade20k_challenge"]
    assert src.url == "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"
    assert src.sha1 == "219e1696abb36c8ba3a3afe7fb2f4b4606a897c7" and src.md5 is None and src.sha256 is None
    assert DATASET_SOURCES["ade20k_150"] == ("ade20k_challenge",)


# --------------------------------------------------------------------------------------------
# Download -> extract -> convert over HTTP
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(ade_zip, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ade150_run")
    path, sha1 = ade_zip
    log: list = []
    with serve_directory(path.parent, log=log, drop_after={path.name: path.stat().st_size // 2}) as url:
        cfg = _cfg(tmp, {"ade20k_challenge": {"url": url + path.name, "sha1": sha1}})
        summary = prepare_dataset(cfg, tmp / "prepared", tmp, progress=False)
        again = prepare_dataset(cfg, tmp / "prepared", tmp, progress=False)
    return tmp / "prepared", summary, again, log


def test_round_trip_is_canonical_with_exact_labels(prepared):
    root, summary, again, log = prepared
    meta = canonical.validate_canonical(root, check_pixels=True)
    assert meta["dataset"] == "ade20k_150" and meta["ignore_index"] == 255
    assert meta["classes"] == list(ADE20K_150_CLASSES)
    assert summary["num_classes"] == 150 and summary["ignore_index"] == 255
    assert summary["splits"] == {"train": len(ADE150_TRAIN), "val": len(ADE150_VAL)} == again["splits"]
    assert canonical.list_ids(root, "train") == sorted(ADE150_TRAIN) and canonical.list_ids(root, "val") == ADE150_VAL
    seen: set[int] = set()
    for split, ids in (("train", ADE150_TRAIN), ("val", ADE150_VAL)):
        for i in ids:
            got = canonical.read_label(canonical.label_path(root, split, i))
            assert got.dtype == np.uint8
            raw = ade150_raw_label(i)
            np.testing.assert_array_equal(got, _reference_labels(raw), err_msg=i)
            seen |= set(np.unique(raw).tolist())
            with Image.open(canonical.image_path(root, split, i)) as im:
                assert im.mode == "RGB" and im.size == (got.shape[1], got.shape[0])
    assert seen == set(ADE150_VALUES)
    assert canonical.image_path(root, "train", ADE150_GRAY).suffix == ".png"  # grayscale JPEG -> RGB PNG
    # SHA-1 verified and recorded; the cut transfer was resumed; the re-run transferred nothing.
    rec = summary["sources"]["ade20k_challenge"]
    assert rec["sha1"] == rec["expected_sha1"]
    assert [s for _, _, s in log] == [200, 206]


def test_official_sha1_rejects_another_archive(ade_zip, tmp_path):
    """The mini archive is not the official one: with the URL overridden but the published SHA-1 kept,
    the download fails naming the expected and actual SHA-1 and nothing is extracted or prepared."""
    path, sha1 = ade_zip
    with serve_directory(path.parent) as url, pytest.raises(ChecksumError) as err:
        prepare_dataset(_cfg(tmp_path, {"ade20k_challenge": {"url": url + path.name}}), tmp_path / "prepared",
                        tmp_path, progress=False)
    msg = str(err.value)
    assert "sha1 checksum mismatch" in msg and "expected 219e1696abb36c8ba3a3afe7fb2f4b4606a897c7" in msg
    assert f"actual {sha1}" in msg and "data.sources.ade20k_challenge.sha1" in msg
    assert not (tmp_path / "cache" / "extracted").exists() and not (tmp_path / "prepared").exists()


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def _extracted(ade_zip, dest: Path) -> Path:
    with zipfile.ZipFile(ade_zip[0]) as zf:
        zf.extractall(dest)
    return dest


def test_corrupt_annotation_is_named(ade_zip, tmp_path):
    base = _extracted(ade_zip, tmp_path / "x")
    victim = base / "ADEChallengeData2016" / "annotations" / "validation" / f"{ADE150_VAL[0]}.png"
    victim.write_bytes(victim.read_bytes()[:40])
    with pytest.raises(canonical.UnreadableFileError, match=f"{victim}: cannot read this ADE20K annotation"):
        prepare_dataset(_cfg(tmp_path, {}, extracted_dir=str(base), num_workers=2), tmp_path / "prepared", tmp_path,
                        progress=False)
    assert not (tmp_path / "prepared").exists()


def test_out_of_range_value_and_missing_annotation_are_named(ade_zip, tmp_path):
    base = _extracted(ade_zip, tmp_path / "x")
    ann = base / "ADEChallengeData2016" / "annotations" / "training"
    bad = ade150_raw_label(ADE150_TRAIN[0])
    bad[0, 0] = 151
    Image.fromarray(bad, "L").save(ann / f"{ADE150_TRAIN[0]}.png")
    with pytest.raises(ValueError, match=r"ADE_train_00000001\.png: ADE20K annotation values \[151\]"):
        prepare_dataset(_cfg(tmp_path, {}, extracted_dir=str(base)), tmp_path / "prepared", tmp_path, progress=False)
    (ann / f"{ADE150_TRAIN[1]}.png").unlink()
    with pytest.raises(AdeLayoutError, match=r"1 training files have no annotation .*ADE_train_00000002"):
        prepare_dataset(_cfg(tmp_path, {}, extracted_dir=str(base)), tmp_path / "prepared", tmp_path, progress=False)
