"""PASCAL Context-60 (ldvc/data/context60.py), background a SCORED class, on the Context-59 miniature
archives served on 127.0.0.1: the mapping is pinned against mmsegmentation's Context converter and
the class list against ZegCLIP's Context-60 dataset, which its cross-dataset config evaluates."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
from fixtures import serve_directory
from fixtures.mini_datasets import CTX_TRAIN, CTX_VAL, build_mini_context59, context_label_map

from ldvc.config import DataConfig
from ldvc.data import canonical
from ldvc.data.classes import CONTEXT60_CLASSES, dataset_classes
from ldvc.data.context60 import RAW_TO_TRAIN
from ldvc.data.pascal_context import ContextLayoutError
from ldvc.data.prepare import prepare_dataset
from ldvc.data.sources import DATASET_SOURCES

# open-mmlab/mmsegmentation tools/dataset_converters/pascal_context.py lines 11-17 (commit
# 2b6a1aafbf40c8cf2501743e9d6fd9e611e2889d): `_mapping`, as published (sorted there with np.sort).
MMSEG_MAPPING = [
    0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284,
    158, 159, 416, 33, 162, 420, 454, 295, 296, 427, 44, 45, 46, 308, 59,
    440, 445, 31, 232, 65, 354, 424, 68, 326, 72, 458, 34, 207, 80, 355,
    85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189, 368, 113, 115,
]
# ZiqinZhou66/ZegCLIP configs/_base_/datasets/dataloader/__pycache__/context60.cpython-37.pyc (commit
# 9ba4bb5c9b621c04005fb9cef7254e79bb9c9991), ZeroPascalContextDataset60.CLASSES read from the compiled
# constants (the .py is not in the repository); reduce_zero_label=False.
ZEGCLIP_CONTEXT60 = (
    "background", "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain",
    "dog", "door", "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike",
    "mountain", "mouse", "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves",
    "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall",
    "water", "window", "wood",
)


def _mmseg_context60(raw: np.ndarray) -> np.ndarray:
    """mmseg's `_class_to_index` (same file, lines 23-29): np.digitize over the sorted `_mapping` (0 ->
    0 background, the 59 ids -> 1..59), no reduce_zero_label. The Detail masks it reads hold only those
    60 values (it asserts so): every other 459-class id is background there, i.e. 0."""
    mapping = np.sort(np.array(MMSEG_MAPPING))
    out = np.zeros(raw.shape, dtype=np.uint8)
    inside = np.isin(raw, mapping)
    out[inside] = np.digitize(raw[inside], mapping, right=True)
    return out


def test_mapping_is_mmsegs_without_reduce_zero_label():
    raw = np.arange(0, 460)
    np.testing.assert_array_equal(RAW_TO_TRAIN[raw], _mmseg_context60(raw))
    assert RAW_TO_TRAIN.dtype == np.uint8 and 255 not in RAW_TO_TRAIN  # nothing ignored: background is scored
    assert RAW_TO_TRAIN[0] == 0 and RAW_TO_TRAIN[2] == 1 and RAW_TO_TRAIN[458] == 59 and RAW_TO_TRAIN[1] == 0


def test_classes_are_zegclips_context60():
    assert CONTEXT60_CLASSES == ZEGCLIP_CONTEXT60 and len(CONTEXT60_CLASSES) == 60
    assert dataset_classes(DataConfig(dataset="context60")) == list(ZEGCLIP_CONTEXT60)
    assert DATASET_SOURCES["context60"] == ("voc2010", "pascal_context")


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    return build_mini_context59(tmp_path_factory.mktemp("www_ctx60"))


def _cfg(tmp: Path, sources: dict, **kw) -> DataConfig:
    return DataConfig(dataset="context60", root=str(tmp / "prepared"), cache_dir=str(tmp / "cache"),
                      sources=sources, num_workers=1, **kw)


def test_round_trip_over_http(archives, tmp_path):
    www = next(iter(archives.values()))[0].parent
    with serve_directory(www) as url:
        sources = {n: {"url": url + p.name, "md5": md5} for n, (p, md5) in archives.items()}
        summary = prepare_dataset(_cfg(tmp_path, sources), tmp_path / "prepared", tmp_path, progress=False)
    root = tmp_path / "prepared"
    meta = canonical.validate_canonical(root, check_pixels=True)
    assert meta["dataset"] == "context60" and meta["ignore_index"] == 255 and summary["num_classes"] == 60
    assert meta["source"]["labels_txt_verified"] is True
    assert summary["splits"] == {"train": len(CTX_TRAIN), "val": len(CTX_VAL)}
    for split, ids in (("train", CTX_TRAIN), ("val", CTX_VAL)):
        for i in ids:
            got = canonical.read_label(canonical.label_path(root, split, i))
            np.testing.assert_array_equal(got, _mmseg_context60(context_label_map(i).astype(np.int64)), err_msg=i)
            assert 255 not in got and 0 in got


def test_missing_labels_txt_is_an_error(archives, tmp_path):
    for path, _ in archives.values():
        with tarfile.open(path) as tf:
            tf.extractall(tmp_path / "x", filter="data")
    (tmp_path / "x" / "labels.txt").unlink()
    with pytest.raises(ContextLayoutError, match=r"labels\.txt not found.*Context-60 mapping"):
        prepare_dataset(_cfg(tmp_path, {}, extracted_dir=str(tmp_path / "x")), tmp_path / "prepared", tmp_path,
                        progress=False)
    assert not (tmp_path / "prepared").exists()
