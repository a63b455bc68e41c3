"""A user's COCO-format JSON dataset (ldvc/data/coco_json.py): polygons, compressed RLE and an
uncompressed-RLE crowd region rasterised by area (large first), classes from the categories or
from params, val categories matched by name; then a user-given zero-shot split."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ldvc.config import CocoJsonConfig, DataConfig
from ldvc.data import canonical
from ldvc.data.classes import dataset_classes
from ldvc.data.coco_json import CocoJsonError
from ldvc.data.prepare import prepare_dataset
from ldvc.data.split import SplitError, make_split


def _cfg(paths, classes=()) -> DataConfig:
    cj = CocoJsonConfig(**{k: str(v) for k, v in paths.items()}, classes=list(classes))
    return DataConfig(dataset="coco_json", coco_json=cj, num_workers=1)


def _label(root, split, image_id):
    return np.asarray(Image.open(canonical.label_path(root, split, image_id)))


def test_polygons_rle_and_crowd_are_rasterised_by_area(mini_coco_json, tmp_path):
    summary = prepare_dataset(_cfg(mini_coco_json), tmp_path / "out", tmp_path, progress=False)
    root = tmp_path / "out"
    assert summary["classes"] == ["road", "car", "person"]  # categories sorted by id
    assert summary["splits"] == {"train": 2, "val": 2}
    for split in ("train", "val"):  # val numbers its categories differently: matched by name
        a, b = _label(root, split, f"{split}_a"), _label(root, split, f"{split}_b")
        assert a[22, 2] == 0 and a[13, 30] == 0  # road polygon (lower half)
        assert a[17, 14] == 1  # car polygon listed before road but smaller: painted on top
        assert np.all(a[2:8, 24:30] == 2) and (a == 2).sum() == 36  # compressed-RLE person, exact
        assert a[0, 0] == 255 and a[8, 5] == 255  # unannotated -> ignore
        assert np.all(b[0:6, 0:10] == 2) and (b == 2).sum() == 60  # crowd (uncompressed RLE)
        assert np.all(b[6:] == 255)
    meta = canonical.read_meta(root)
    assert meta["source"]["paint_order"] == "area_desc"
    assert meta["source"]["train"]["crowd_annotations"] == 1 and meta["source"]["train"]["rle_annotations"] == 2
    split = make_split(meta["classes"], ["car"], "coco_json")
    assert split["unseen"] == [1] and split["seen_names"] == ["road", "person"]
    assert dataset_classes(_cfg(mini_coco_json)) == ["road", "car", "person"]


def test_classes_from_params_reorder_and_drop(mini_coco_json, tmp_path):
    summary = prepare_dataset(_cfg(mini_coco_json, ["person", "car"]), tmp_path / "out", tmp_path, progress=False)
    a = _label(tmp_path / "out", "train", "train_a")
    assert summary["classes"] == ["person", "car"]
    assert a[22, 2] == 255 and a[17, 14] == 1 and a[4, 26] == 0  # road not listed -> ignore
    meta = canonical.read_meta(tmp_path / "out")
    assert meta["source"]["train"]["ignored_categories"] == ["road"]


def test_bad_inputs_fail_early_with_the_fix(mini_coco_json, tmp_path):
    with pytest.raises(CocoJsonError, match=r"'persn' is not a category.*close matches: \['person'\]"):
        prepare_dataset(_cfg(mini_coco_json, ["persn"]), tmp_path / "out", tmp_path, progress=False)
    paths = dict(mini_coco_json, val_annotations=None)
    with pytest.raises(CocoJsonError, match=r"data\.coco_json\.val_annotations"):
        prepare_dataset(_cfg(paths), tmp_path / "out", tmp_path, progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="no default zero-shot split"):
        make_split(["road", "car"], "default", "coco_json")
    with pytest.raises(SplitError, match="not a class"):
        make_split(["road", "car"], ["bus"], "coco_json")
