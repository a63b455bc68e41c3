"""PASCAL Context-59 real path (ldvc/data/context59.py) on miniature archives served on 127.0.0.1:
download -> verify -> extract -> convert the 459-class .mat LabelMaps to the 59 train ids ->
canonical format; the mapping and the zero-shot split are checked against mmsegmentation's
converter and Cascade-CLIP's configs (their published values are written out below)."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import numpy as np
import pytest
from fixtures import serve_directory
from fixtures.mini_datasets import (
    CTX59_LABEL_NAMES,
    CTX_EXTRA_IMAGE,
    CTX_EXTRA_MAT,
    CTX_TRAIN,
    CTX_VAL,
    CTX_VALUES,
    context_label_map,
    context_mat,
)
from PIL import Image

from ldvc.config import DataConfig
from ldvc.data import canonical
from ldvc.data.classes import CONTEXT59_CLASSES, CONTEXT59_UNSEEN, dataset_classes, default_unseen
from ldvc.data.context59 import (
    CONTEXT59_RAW_IDS,
    RAW_TO_TRAIN,
    ContextAnnotationError,
    ContextLayoutError,
    plan_context59,
    read_label_map,
)
from ldvc.data.prepare import prepare_dataset
from ldvc.data.sources import DATASET_SOURCES, OFFICIAL_SOURCES
from ldvc.data.split import make_split

# mmsegmentation tools/dataset_converters/pascal_context.py `_mapping`, as published (unsorted).
MMSEG_MAPPING = [
    0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284,
    158, 159, 416, 33, 162, 420, 454, 295, 296, 427, 44, 45, 46, 308, 59,
    440, 445, 31, 232, 65, 354, 424, 68, 326, 72, 458, 34, 207, 80, 355,
    85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189, 368, 113, 115,
]
# Cascade-CLIP configs/_base_/datasets/dataloader/context59.py CLASSES and
# configs/context_59/vpt_seg_zero_vit-b_512x512_40k_12_10.py base_class / novel_class.
CASCADE_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle", "building", "bus",
    "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog", "door", "fence",
    "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse",
    "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky",
    "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
)
CASCADE_NOVEL = [0, 2, 3, 7, 9, 13, 17, 19, 31, 37]
CASCADE_BASE = [1, 4, 5, 6, 8, 10, 11, 12, 14, 15, 16, 18, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 32, 33, 34,
                35, 36, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58]


def expected_train_ids(raw: np.ndarray) -> np.ndarray:
    """mmseg's converter + reduce_zero_label, recomputed: np.digitize over the sorted `_mapping`
    gives 0 (background) .. 59; reduce_zero_label maps 0 -> 255 and k -> k - 1. mmseg's Detail
    masks hold only the 59 classes; any other 459-class id is background there, i.e. 255."""
    mapping = np.sort(np.array(MMSEG_MAPPING))
    out = np.full(raw.shape, 255, dtype=np.uint8)
    for k, v in enumerate(mapping):
        if k > 0:
            out[raw == v] = k - 1
    return out


def _cfg(tmp: Path, sources: dict, **kw) -> DataConfig:
    return DataConfig(dataset="context59", root=str(tmp / "prepared"), cache_dir=str(tmp / "cache"), sources=sources,
                      num_workers=kw.pop("num_workers", 1), **kw)


def _extract(archives: dict, dest: Path) -> Path:
    """Both mini archives extracted into one directory (the data.extracted_dir layout)."""
    for path, _ in archives.values():
        with tarfile.open(path) as tf:
            tf.extractall(dest, filter="data")
    return dest


# --------------------------------------------------------------------------------------------
# Mapping and classes against the published sources
# --------------------------------------------------------------------------------------------


def test_raw_ids_are_mmsegs_mapping_and_name_the_classes():
    assert list(CONTEXT59_RAW_IDS) == sorted(MMSEG_MAPPING)[1:]
    assert [CTX59_LABEL_NAMES[i] for i in CONTEXT59_RAW_IDS] == list(CONTEXT59_CLASSES)
    raw = np.arange(0, 460)
    np.testing.assert_array_equal(RAW_TO_TRAIN[raw], expected_train_ids(raw))
    assert RAW_TO_TRAIN[360] == CONTEXT59_CLASSES.index("sky") and RAW_TO_TRAIN[300] == 255


def test_classes_and_unseen_split_are_cascade_clips():
    assert CONTEXT59_CLASSES == CASCADE_CLASSES
    assert dataset_classes(DataConfig(dataset="context59")) == list(CASCADE_CLASSES)
    split = make_split(CONTEXT59_CLASSES, "default", "context59")
    assert split["unseen"] == CASCADE_NOVEL and split["seen"] == CASCADE_BASE
    assert split["unseen_names"] == ["aeroplane", "bed", "bedclothes", "boat", "bottle", "car", "cloth", "cow",
                                     "keyboard", "plate"]
    assert default_unseen("context59") == list(CONTEXT59_UNSEEN)


def test_official_sources():
    assert DATASET_SOURCES["context59"] == ("voc2010", "pascal_context")
    voc, ctx = OFFICIAL_SOURCES["voc2010"], OFFICIAL_SOURCES["pascal_context"]
    assert voc.url == "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar"
    assert voc.md5 == "da459979d0c395079b5c75ee67908abb"  # torchvision datasets/voc.py, year 2010
    assert ctx.url == "https://cs.stanford.edu/~roozbeh/pascal-context/trainval.tar.gz"
    assert ctx.md5 is None and ctx.sha256 is None  # none published: recorded at download time


# --------------------------------------------------------------------------------------------
# Download -> extract -> convert over HTTP
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(mini_context59_archives, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("context59_run")
    www = next(iter(mini_context59_archives.values()))[0].parent
    voc_tar, voc_md5 = mini_context59_archives["voc2010"]
    ctx_tgz, _ = mini_context59_archives["pascal_context"]
    log: list = []
    # The VOC tar transfer is cut half-way (the download resumes with Range); the annotation
    # archive keeps the official "no published checksum": only its URL is overridden.
    with serve_directory(www, log=log, drop_after={voc_tar.name: voc_tar.stat().st_size // 2}) as url:
        sources = {"voc2010": {"url": url + voc_tar.name, "md5": voc_md5},
                   "pascal_context": {"url": url + ctx_tgz.name}}
        cfg = _cfg(tmp, sources)
        summary = prepare_dataset(cfg, tmp / "prepared", tmp, progress=False)
        first = list(log)
        again = prepare_dataset(cfg, tmp / "prepared", tmp, progress=False)
        second = log[len(first):]
    return tmp / "prepared", summary, again, first, second


def test_splits_are_the_voc2010_main_lists(prepared):
    root, summary, _, _, _ = prepared
    assert canonical.list_ids(root, "train") == sorted(CTX_TRAIN)
    assert canonical.list_ids(root, "val") == sorted(CTX_VAL)
    assert summary["splits"] == {"train": len(CTX_TRAIN), "val": len(CTX_VAL)}
    assert summary["classes"] == list(CASCADE_CLASSES) and summary["num_classes"] == 59
    for split in ("train", "val"):  # in JPEGImages / trainval but in no list: not converted
        assert CTX_EXTRA_IMAGE not in canonical.list_ids(root, split)
        assert CTX_EXTRA_MAT not in canonical.list_ids(root, split)
    meta = canonical.read_meta(root)
    assert meta["dataset"] == "context59" and meta["source"]["labels_txt_verified"] is True
    assert meta["source"]["labels_txt_entries"] == 459 and meta["source"]["official_counts"] is False


def test_checksums_are_verified_and_recorded(prepared, mini_context59_archives):
    _, summary, again, first, second = prepared
    src = summary["sources"]
    assert set(src) == {"voc2010", "pascal_context"}
    voc_tar, voc_md5 = mini_context59_archives["voc2010"]
    ctx_tgz, ctx_md5 = mini_context59_archives["pascal_context"]
    assert src["voc2010"]["md5"] == voc_md5 == src["voc2010"]["expected_md5"]
    # No published checksum: nothing expected, and what was downloaded is recorded.
    assert src["pascal_context"]["expected_md5"] is None and src["pascal_context"]["expected_sha256"] is None
    assert src["pascal_context"]["sha256"] == hashlib.sha256(ctx_tgz.read_bytes()).hexdigest()
    assert src["pascal_context"]["md5"] == ctx_md5
    # Each archive is transferred once (the VOC tar in two parts: cut, then resumed with Range) ...
    assert [(p, st) for p, _, st in first] == [(f"/{voc_tar.name}", 200), (f"/{voc_tar.name}", 206),
                                              (f"/{ctx_tgz.name}", 200)]
    # ... and a re-run transfers nothing: the checksum-less archive may only be probed (1 byte).
    assert all(p == f"/{ctx_tgz.name}" and r == "bytes=0-0" for p, r, _ in second), second
    assert again["splits"] == summary["splits"]


def test_label_pixels_are_exact(prepared):
    root = prepared[0]
    seen_values: set[int] = set()
    for split, ids in (("train", CTX_TRAIN), ("val", CTX_VAL)):
        for i in ids:
            with Image.open(canonical.label_path(root, split, i)) as im:
                assert im.mode == "L"
                got = np.asarray(im)
            raw = context_label_map(i)
            np.testing.assert_array_equal(got, expected_train_ids(raw.astype(np.int64)), err_msg=f"{split}/{i}")
            seen_values |= set(np.unique(raw).tolist())
            with Image.open(canonical.image_path(root, split, i)) as im:
                assert im.mode == "RGB" and im.size == (got.shape[1], got.shape[0])
    assert seen_values == set(CTX_VALUES)  # every painted value (0, the 59, outside, > 255) was converted
    canonical.validate_canonical(root, check_pixels=True)


def test_corrupt_archive_is_never_extracted(mini_context59_archives, tmp_path):
    from ldvc.data.download import ChecksumError

    www = next(iter(mini_context59_archives.values()))[0].parent
    voc_tar, voc_md5 = mini_context59_archives["voc2010"]
    ctx_tgz, _ = mini_context59_archives["pascal_context"]
    with serve_directory(www, corrupt={voc_tar.name: 3000}) as url:
        sources = {"voc2010": {"url": url + voc_tar.name, "md5": voc_md5},
                   "pascal_context": {"url": url + ctx_tgz.name}}
        with pytest.raises(ChecksumError) as err:
            prepare_dataset(_cfg(tmp_path, sources), tmp_path / "prepared", tmp_path, progress=False)
    assert f"expected {voc_md5}" in str(err.value) and voc_tar.name in str(err.value)
    assert not (tmp_path / "cache" / "extracted").exists() and not (tmp_path / "prepared").exists()
    # A sha256 given for the annotation archive (e.g. the one recorded at a first download) is enforced.
    with serve_directory(www) as url:
        sources = {"voc2010": {"url": url + voc_tar.name, "md5": voc_md5},
                   "pascal_context": {"url": url + ctx_tgz.name, "sha256": "0" * 64}}
        with pytest.raises(ChecksumError, match="sha256 checksum mismatch"):
            prepare_dataset(_cfg(tmp_path, sources), tmp_path / "prepared", tmp_path, progress=False)
    assert not (tmp_path / "prepared").exists()


# --------------------------------------------------------------------------------------------
# Bad annotations and layouts
# --------------------------------------------------------------------------------------------


def test_corrupt_annotation_names_the_file(mini_context59_archives, tmp_path):
    base = _extract(mini_context59_archives, tmp_path / "x")
    victim = base / "trainval" / f"{CTX_VAL[0]}.mat"
    victim.write_bytes(victim.read_bytes()[:60])  # truncated: a broken download or disk
    cfg = _cfg(tmp_path, {}, extracted_dir=str(base), num_workers=2)  # the error crosses the worker pool
    with pytest.raises(ContextAnnotationError, match=f"{victim}: cannot read"):
        prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False)
    assert not (tmp_path / "prepared").exists()
    assert not list(tmp_path.glob(".prepared.partial-*"))  # the staging tree was removed


def test_invalid_label_maps_are_rejected(tmp_path):
    bad = tmp_path / "values.mat"
    lab = context_label_map(CTX_TRAIN[0])
    lab[0, 0] = 460
    bad.write_bytes(context_mat(lab))
    with pytest.raises(ContextAnnotationError, match=r"values\.mat: LabelMap values \[460\] are outside 0\.\.459"):
        read_label_map(bad)
    import scipy.io

    other = tmp_path / "other.mat"
    scipy.io.savemat(other, {"GTcls": np.zeros((2, 2), dtype=np.uint8)})
    with pytest.raises(ContextAnnotationError, match=r"other\.mat: no 'LabelMap' variable"):
        read_label_map(other)
    ok = tmp_path / "ok.mat"
    ok.write_bytes(context_mat(context_label_map(CTX_TRAIN[0])))
    got = read_label_map(ok)
    assert got.max() > 255  # uint16 ids survive the read
    np.testing.assert_array_equal(got, context_label_map(CTX_TRAIN[0]))


def test_wrong_labels_txt_is_rejected(mini_context59_archives, tmp_path):
    base = _extract(mini_context59_archives, tmp_path / "x")
    labels = base / "labels.txt"
    labels.write_text(labels.read_text().replace("2: aeroplane", "2: airplane-ish"))
    with pytest.raises(ContextLayoutError, match="2: 'airplane-ish' \\(expected 'aeroplane'\\)"):
        prepare_dataset(_cfg(tmp_path, {}, extracted_dir=str(base)), tmp_path / "prepared", tmp_path, progress=False)


def test_without_labels_txt_the_conversion_fails_naming_it(mini_context59_archives, tmp_path):
    """Issue 17 item 9: the docstring promises labels.txt is verified on every conversion, so a
    missing one is an error (it used to be skipped silently), naming both places looked at and the
    fix, before any image is converted. labels.txt inside trainval/ is found too."""
    base = _extract(mini_context59_archives, tmp_path / "x")
    (base / "labels.txt").rename(base / "moved.txt")
    cfg = _cfg(tmp_path, {}, extracted_dir=str(base))
    with pytest.raises(ContextLayoutError) as err:
        prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False)
    msg = str(err.value)
    assert f"{base / 'labels.txt'} or {base / 'trainval' / 'labels.txt'}" in msg
    assert "Context-59 mapping" in msg and "trainval.tar.gz" in msg
    assert not (tmp_path / "prepared").exists() and not list(tmp_path.glob(".prepared.partial-*"))
    (base / "moved.txt").rename(base / "trainval" / "labels.txt")
    prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False)
    src = canonical.read_meta(tmp_path / "prepared")["source"]
    assert src["labels_txt"] == str(base / "trainval" / "labels.txt") and src["labels_txt_verified"] is True


def test_missing_annotation_of_a_listed_id(mini_context59_archives, tmp_path):
    base = _extract(mini_context59_archives, tmp_path / "x")
    (base / "trainval" / f"{CTX_TRAIN[1]}.mat").unlink()
    with pytest.raises(ContextLayoutError, match=f"1 train ids .* have no annotation .*{CTX_TRAIN[1]}"):
        prepare_dataset(_cfg(tmp_path, {}, extracted_dir=str(base)), tmp_path / "prepared", tmp_path, progress=False)


def test_official_lists_require_exactly_their_annotations(tmp_path):
    """With lists of the official lengths (4,998 / 5,105) the release must hold those 10,103 .mat
    files; mmseg's Detail-derived 4,996 / 5,104 lists are not official and are used as given."""
    voc, ctx = tmp_path / "VOC2010", tmp_path / "ctx"
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    (ctx / "trainval").mkdir(parents=True)
    ids = [f"2008_{k:06d}" for k in range(4998 + 5105)]
    train, val = ids[:4998], ids[4998:]
    for i in ids:
        (voc / "JPEGImages" / f"{i}.jpg").touch()
        (ctx / "trainval" / f"{i}.mat").touch()  # planning only lists files

    def write_lists(tr, va):
        (voc / "ImageSets" / "Main" / "train.txt").write_text("".join(f"{i}\n" for i in tr))
        (voc / "ImageSets" / "Main" / "val.txt").write_text("".join(f"{i}\n" for i in va))

    write_lists(train, val)
    plan = plan_context59(voc, ctx)
    assert (len(plan["train"]), len(plan["val"])) == (4998, 5105)
    (ctx / "trainval" / "2099_000000.mat").touch()  # one annotation too many
    with pytest.raises(RuntimeError, match="not the official ones"):
        plan_context59(voc, ctx)
    (ctx / "trainval" / "2099_000000.mat").unlink()
    write_lists(train[:4996], val[:5104])  # the Detail / mmseg counts
    plan = plan_context59(voc, ctx)
    assert (len(plan["train"]), len(plan["val"])) == (4996, 5104)
    write_lists(train[:10] + val[:1], val)
    with pytest.raises(ContextLayoutError, match="1 ids are in both"):
        plan_context59(voc, ctx)
