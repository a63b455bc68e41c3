"""PASCAL Context-459 (ldvc/data/context459.py) on the Context-59 miniature archives served on
127.0.0.1: all 459 classes, 0 (unlabelled) ignored, 16-bit labels with ignore 65535. The mapping is
pinned against the open-vocabulary papers' preparation scripts and the class list against SAN's."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import numpy as np
import pytest
from fixtures import serve_directory
from fixtures.mini_datasets import (
    CTX_LABEL_NAMES,
    CTX_TRAIN,
    CTX_VAL,
    CTX_VALUES,
    PASCAL_CONTEXT_LABELS,
    build_mini_context59,
    context_label_map,
)

from ldvc.config import DataConfig
from ldvc.data import canonical
from ldvc.data.classes import CONTEXT459_CLASSES, dataset_classes
from ldvc.data.context459 import RAW_TO_TRAIN
from ldvc.data.pascal_context import ContextLayoutError
from ldvc.data.prepare import prepare_dataset

IGNORE = 65535


def _fcclip(label_map: np.ndarray) -> np.ndarray:
    """bytedance/fc-clip datasets/prepare_pascal_ctx_full_sem_seg.py lines 21-24 (commit
    2b0bbe213070d44da9182530fa2e826fef03f974), on the uint16 LabelMap: `label_map[label_map == 0] = 65535;
    label_map = label_map - 1; label_map[label_map == 65534] = 65535`."""
    lm = label_map.astype(np.uint16).copy()
    lm[lm == 0] = 65535
    lm = lm - np.uint16(1)
    lm[lm == 65534] = 65535
    return lm


def test_mapping_is_the_references():
    """FC-CLIP (above); MendelXu/SAN datasets/prepare_pcontext_sem_seg_459cls.py line 43 `mask = mask - 1`
    on the uint16 map (0 wraps to 65535; commit e19262d1a23992fc2cef934d6756b89ff50fe5c3) and KU-CVLAB/CAT-Seg
    datasets/prepare_pascal_context_459.py line 16 (same operation); FC-CLIP and SAN register it with
    ignore_label=65535 (register_pascal_ctx_459_sem_seg.py line 73; register_pcontext.py line 569)."""
    raw = np.arange(0, 460, dtype=np.uint16)
    np.testing.assert_array_equal(RAW_TO_TRAIN[raw], _fcclip(raw))
    np.testing.assert_array_equal(RAW_TO_TRAIN[raw], raw - np.uint16(1))  # SAN / CAT-Seg's `mask - 1`
    assert RAW_TO_TRAIN.dtype == np.uint16 and RAW_TO_TRAIN[0] == IGNORE and RAW_TO_TRAIN[459] == 458


def test_classes_are_labels_txt_order_as_san_spells_them():
    """MendelXu/SAN san/data/datasets/register_pcontext.py PCONTEXT_FULL_SEM_SEG_CATEGORIES, lines 68-528
    (commit e19262d1...): the sha256 of its 459 names joined by newlines, computed from that file (FC-CLIP's
    PASCAL_CTX_459_CATEGORIES names give the same digest; CAT-Seg's datasets/pc459.json is the same list
    without spaces)."""
    assert len(CONTEXT459_CLASSES) == 459
    assert hashlib.sha256("\n".join(CONTEXT459_CLASSES).encode()).hexdigest() == (
        "c9fe8ff7083d2572021691666a700755d8f4e1c634585ba9919a3f3a2c834538")
    assert all(CONTEXT459_CLASSES[i - 1] == name for i, name in CTX_LABEL_NAMES.items())
    assert CONTEXT459_CLASSES == PASCAL_CONTEXT_LABELS
    assert dataset_classes(DataConfig(dataset="context459")) == list(CONTEXT459_CLASSES)


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    return build_mini_context59(tmp_path_factory.mktemp("www_ctx459"))


def _cfg(tmp: Path, sources: dict, **kw) -> DataConfig:
    return DataConfig(dataset="context459", root=str(tmp / "prepared"), cache_dir=str(tmp / "cache"),
                      sources=sources, num_workers=kw.pop("num_workers", 1), **kw)


def _extract(archives: dict, dest: Path) -> Path:
    for path, _ in archives.values():
        with tarfile.open(path) as tf:
            tf.extractall(dest, filter="data")
    return dest


def test_round_trip_over_http(archives, tmp_path):
    www = next(iter(archives.values()))[0].parent
    with serve_directory(www) as url:
        sources = {n: {"url": url + p.name, "md5": md5} for n, (p, md5) in archives.items()}
        summary = prepare_dataset(_cfg(tmp_path, sources, num_workers=2), tmp_path / "prepared", tmp_path,
                                  progress=False)
    root = tmp_path / "prepared"
    meta = canonical.validate_canonical(root, check_pixels=True)
    assert meta["dataset"] == "context459" and meta["ignore_index"] == IGNORE and meta["classes"] == list(
        CONTEXT459_CLASSES)
    assert summary["num_classes"] == 459 and summary["ignore_index"] == IGNORE
    assert meta["source"]["labels_txt_verified"] is True and meta["source"]["labels_txt_entries"] == 459
    seen: set[int] = set()
    for split, ids in (("train", CTX_TRAIN), ("val", CTX_VAL)):
        for i in ids:
            got = canonical.read_label(canonical.label_path(root, split, i))
            assert got.dtype == np.uint16
            raw = context_label_map(i)
            np.testing.assert_array_equal(got, _fcclip(raw), err_msg=i)
            seen |= set(np.unique(raw).tolist())
    assert seen == set(CTX_VALUES)  # 0 (-> 65535), ids above 255, 459 (-> 458) all went through


def test_every_labels_txt_name_is_verified(archives, tmp_path):
    """Context-459's mapping IS labels.txt's order: a wrong name outside the 59 classes (which the
    Context-59 check would not see) is an error, and so is a missing labels.txt."""
    base = _extract(archives, tmp_path / "x")
    labels = base / "labels.txt"
    labels.write_text(labels.read_text().replace("1: accordion\n", "1: banjo\n"))
    cfg = _cfg(tmp_path, {}, extracted_dir=str(base))
    with pytest.raises(ContextLayoutError, match=r"1: 'banjo' \(expected 'accordion'\).*Context-459 mapping"):
        prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False)
    labels.unlink()
    with pytest.raises(ContextLayoutError, match=r"labels\.txt not found"):
        prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False)
    assert not (tmp_path / "prepared").exists()
