"""PASCAL VOC-21 (ldvc/data/voc21.py): background a scored class, first; the VOC 2012 tar alone (no
SBD), on the miniature VOC archives served on 127.0.0.1. Class list and mapping pinned against
ZegCLIP's VOC-21 dataset and FC-CLIP's preparation script."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
from fixtures import build_mini_voc, serve_directory
from fixtures.mini_datasets import VOC_TRAIN, VOC_VAL, voc_raw_label
from PIL import Image

from ldvc.config import DataConfig
from ldvc.data import canonical
from ldvc.data.classes import VOC21_CLASSES, dataset_classes
from ldvc.data.prepare import prepare_dataset
from ldvc.data.sources import DATASET_SOURCES
from ldvc.data.voc21 import to_train_ids

# ZiqinZhou66/ZegCLIP configs/_base_/datasets/dataloader/__pycache__/voc12_21.cpython-37.pyc (commit
# 9ba4bb5c9b621c04005fb9cef7254e79bb9c9991): ZeroPascalVOCDataset21.CLASSES, reduce_zero_label=False;
# the same names and order as bytedance/fc-clip fcclip/data/datasets/openseg_classes.py
# PASCAL_VOC_21_CATEGORIES (line 1292, id 0 "background" ... id 20 "tvmonitor").
ZEGCLIP_VOC21 = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def test_classes_and_sources():
    assert VOC21_CLASSES == ZEGCLIP_VOC21
    assert dataset_classes(DataConfig(dataset="voc21")) == list(ZEGCLIP_VOC21)
    assert DATASET_SOURCES["voc21"] == ("voc2012",)  # the val split needs no SBD


def test_mapping_keeps_the_raw_values():
    """fc-clip datasets/prepare_pascal_voc_sem_seg.py lines 17-21 (commit 2b0bbe21...), `convert_pas21`:
    the SegmentationClass PNG saved unchanged ("do nothing"): 0 background = class 0, 1..20, 255 ignore."""
    raw = np.array([[0, 1, 20, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(to_train_ids(raw), raw)
    with pytest.raises(ValueError, match=r"x\.png: unexpected VOC label values \[21\]"):
        to_train_ids(np.array([[21, 0]], dtype=np.uint8), "x.png")


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    return build_mini_voc(tmp_path_factory.mktemp("www_voc21"))


def _cfg(tmp: Path, sources: dict, **kw) -> DataConfig:
    return DataConfig(dataset="voc21", root=str(tmp / "prepared"), cache_dir=str(tmp / "cache"), sources=sources,
                      num_workers=1, **kw)


def test_round_trip_fetches_only_the_voc_tar(archives, tmp_path):
    www = archives["voc2012"][0].parent
    log: list = []
    with serve_directory(www, log=log) as url:
        # An SBD override is given on purpose: VOC-21 must not fetch it.
        sources = {n: {"url": url + p.name, "md5": md5} for n, (p, md5) in archives.items()}
        summary = prepare_dataset(_cfg(tmp_path, sources), tmp_path / "prepared", tmp_path, progress=False)
    assert [p for p, _, _ in log] == [f"/{archives['voc2012'][0].name}"]
    root = tmp_path / "prepared"
    meta = canonical.validate_canonical(root, check_pixels=True)
    assert meta["dataset"] == "voc21" and meta["ignore_index"] == 255 and summary["num_classes"] == 21
    assert canonical.list_ids(root, "train") == sorted(VOC_TRAIN) and canonical.list_ids(root, "val") == VOC_VAL
    for split, ids in (("train", VOC_TRAIN), ("val", VOC_VAL)):
        for i in ids:
            got = canonical.read_label(canonical.label_path(root, split, i))
            np.testing.assert_array_equal(got, voc_raw_label(i), err_msg=i)
            assert 0 in got and 255 in got  # background scored, boundary ignored


def test_bad_label_is_named(archives, tmp_path):
    with tarfile.open(archives["voc2012"][0]) as tf:
        tf.extractall(tmp_path / "x", filter="data")
    victim = tmp_path / "x" / "VOCdevkit" / "VOC2012" / "SegmentationClass" / f"{VOC_VAL[0]}.png"
    lab = voc_raw_label(VOC_VAL[0])
    lab[0, 0] = 42
    Image.fromarray(lab, "L").save(victim)
    with pytest.raises(ValueError, match=rf"{VOC_VAL[0]}\.png: unexpected VOC label values \[42\]"):
        prepare_dataset(_cfg(tmp_path, {}, extracted_dir=str(tmp_path / "x")), tmp_path / "prepared", tmp_path,
                        progress=False)
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{VOC_VAL[0]}\.png: label of VOC val id {VOC_VAL[0]} not found"):
        prepare_dataset(_cfg(tmp_path, {}, extracted_dir=str(tmp_path / "x")), tmp_path / "prepared", tmp_path,
                        progress=False)
