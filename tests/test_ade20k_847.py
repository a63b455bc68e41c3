"""Full ADE20K, 847 classes (ldvc/data/ade20k_847.py), from the user's own copy of the release: a
miniature ADE20K_2021_17_01.zip in the real layout given as a local archive (data.sources) or as an
extracted folder (data.extracted_dir); the clear error when neither is configured. The class list,
the _seg.png decoding, the resize and the 65535 ignore value are pinned against the reference
preparation scripts (cited per test); the resampling against OpenCV's output."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fixtures.mini_datasets import (
    ADE_FULL_GRAY,
    ADE_FULL_OTHER,
    ADE_FULL_PAINTED,
    ADE_FULL_TRAIN,
    ADE_FULL_VAL,
    ade_full_class_map,
    build_mini_ade20k_full,
)
from PIL import Image

from ldvc.config import ConfigError, DataConfig, config_from_dict
from ldvc.data import canonical
from ldvc.data.ade20k_847 import (
    ID_TO_TRAIN,
    AdeFullLayoutError,
    class_mask,
    nearest_index,
    resize_linear,
    split_of,
    target_size,
)
from ldvc.data.ade20k_847_classes import ADE20K_847_CATEGORIES, ADE20K_847_CLASSES
from ldvc.data.classes import dataset_classes
from ldvc.data.inputs import fingerprint_inputs
from ldvc.data.prepare import prepare_dataset
from ldvc.data.sources import DATASET_SOURCES, SourceNotConfiguredError

IGNORE = 65535


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return build_mini_ade20k_full(tmp_path_factory.mktemp("ade_full"))["ade20k_full"][0]


def _cfg(tmp: Path, **kw) -> DataConfig:
    return DataConfig(dataset="ade20k_847", root=str(tmp / "prepared"), cache_dir=str(tmp / "cache"),
                      num_workers=kw.pop("num_workers", 1), **kw)


def _expected_label(image_id: str, size: tuple[int, int]) -> np.ndarray:
    """The reference's label of a fixture image: its class map, resized like the image (nearest), with
    the 847-class trainIds written in and 65535 elsewhere (`output = zeros + 65535; output[lab == id] =
    trainId`)."""
    lab = ade_full_class_map(image_id, size)
    new = target_size(*size)
    if new is not None:
        lab = lab[nearest_index(size[0], new[0])][:, nearest_index(size[1], new[1])]
    out = np.full(lab.shape, IGNORE, dtype=np.uint16)
    for ade_id, train_id in ADE_FULL_PAINTED.items():
        out[lab == ade_id] = train_id
    return out


# --------------------------------------------------------------------------------------------
# Pinned against the references
# --------------------------------------------------------------------------------------------


def test_847_classes_are_the_references_list():
    """ADE20K_SEM_SEG_FULL_CATEGORIES (name, id, trainId) of KU-CVLAB/CAT-Seg datasets/prepare_ade20k_full.py
    lines 13-929 (commit 6d3a188af95165147fe2f34a8237fa7d2633e784), bytedance/fc-clip
    datasets/prepare_ade20k_full_sem_seg.py lines 17-933 (commit 2b0bbe213070d44da9182530fa2e826fef03f974)
    and MendelXu/SAN san/data/datasets/register_ade20k_full.py lines 6-954 (commit
    e19262d1a23992fc2cef934d6756b89ff50fe5c3): the three files give the same 847 entries, whose
    "name|id|trainId" lines joined by newlines have the sha256 below (computed from each file)."""
    lines = [f"{name}|{ade_id}|{train_id}" for train_id, (name, ade_id) in enumerate(ADE20K_847_CATEGORIES)]
    assert hashlib.sha256("\n".join(lines).encode()).hexdigest() == (
        "c1036a0940086b6ba54dcde774092c22d367b869724a315acea78067fc7d6b62")
    assert len(ADE20K_847_CLASSES) == 847 and ADE20K_847_CATEGORIES[0] == ("wall", 2978)
    assert ADE20K_847_CATEGORIES[1] == ("building, edifice", 312)
    assert ADE20K_847_CATEGORIES[-1] == ("adding machine, totalizer, totaliser", 3148)
    assert dataset_classes(DataConfig(dataset="ade20k_847")) == list(ADE20K_847_CLASSES)
    # The fixture's independently written (id -> trainId) pairs agree with the table.
    for ade_id, train_id in ADE_FULL_PAINTED.items():
        assert ID_TO_TRAIN[ade_id] == train_id
    assert all(ID_TO_TRAIN[i] == IGNORE for i in ADE_FULL_OTHER)


def test_seg_png_decoding_split_rule_and_resize_size():
    """CAT-Seg datasets/prepare_ade20k_full.py (commit 6d3a188a...): line 939 `ObjectClassMasks =
    (R / 10).astype(np.int32) * 256 + (G.astype(np.int32))`; line 967 `split = "validation" if
    file_name.split("_")[1] == "val" else "training"`; lines 978-985: max_size 512, `if w >= h > max_size:
    h_new, w_new = max_size, round(w / float(h) * max_size)` (and the transpose)."""
    rng = np.random.default_rng(3)
    seg = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    r, g = seg[..., 0], seg[..., 1]
    np.testing.assert_array_equal(class_mask(seg), (r / 10).astype(np.int32) * 256 + g.astype(np.int32))
    assert [split_of(n) for n in ("ADE_val_00000001.jpg", "ADE_train_00000001.jpg", "ADE_frame_00000001.jpg")] == [
        "val", "train", "train"]
    assert target_size(540, 700) == (512, 664) and target_size(700, 530) == (676, 512)
    assert target_size(531, 777) == (512, 749) and target_size(512, 900) is None and target_size(24, 32) is None
    assert target_size(513, 513) == (512, 512)


def test_resampling_matches_opencv():
    """The reference resizes with cv2.resize(img, (w_new, h_new), interpolation=cv2.INTER_LINEAR) and the
    class mask with INTER_NEAREST (CAT-Seg prepare_ade20k_full.py lines 988-989). The digests below are of
    opencv-python-headless 5.1.0's outputs for these inputs (numpy default_rng(20); computed once on the
    development machine: OpenCV is no dependency of this project)."""
    rng = np.random.default_rng(20)
    img = rng.integers(0, 256, size=(531, 777, 3), dtype=np.uint8)
    lab = rng.integers(0, 6656, size=(777, 531)).astype(np.int32)
    out = resize_linear(img, 512, 749)
    assert out.shape == (512, 749, 3) and out[0, :4, 0].tolist() == [122, 225, 182, 207]
    assert hashlib.sha256(out.tobytes()).hexdigest() == (
        "5a0ab3b6e55bfea0bc1a384fbfec91df9b687f93bd892b7bc8805c891ab8b609")
    near = lab[nearest_index(777, 749)][:, nearest_index(531, 512)]
    assert near[5, :6].tolist() == [2239, 6027, 4934, 2582, 1406, 635]
    assert hashlib.sha256(near.astype(np.int32).tobytes()).hexdigest() == (
        "f1dd3a4ffd6680968e428006c9c1bdd9e7cc5558ff6e61b214a226a8861e73b8")


def test_resampling_equals_cv2_resize_on_many_sizes():
    """The same comparison live against the installed OpenCV (a dev dependency, pyproject.toml) for the
    sizes the reference's rule produces, 1 and 3 channels, including the 513 px edge and a 4:1 aspect."""
    import cv2

    rng = np.random.default_rng(7)
    for h, w, c in [(513, 513, 3), (600, 1400, 3), (1300, 777, 1), (2049, 515, 3), (520, 2080, 3)]:
        img = rng.integers(0, 256, size=(h, w, c), dtype=np.uint8)
        lab = rng.integers(0, 6656, size=(h, w)).astype(np.int32)
        nh, nw = target_size(h, w)
        ref = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR).reshape(nh, nw, c)
        np.testing.assert_array_equal(resize_linear(img, nh, nw), ref, err_msg=f"{h}x{w}x{c}")
        ref_lab = cv2.resize(lab, (nw, nh), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(lab[nearest_index(h, nh)][:, nearest_index(w, nw)], ref_lab)


# --------------------------------------------------------------------------------------------
# No local copy configured
# --------------------------------------------------------------------------------------------


def test_missing_local_source_says_where_to_get_it(tmp_path):
    assert DATASET_SOURCES["ade20k_847"] == ("ade20k_full",)
    for call in (lambda: prepare_dataset(_cfg(tmp_path), tmp_path / "prepared", tmp_path, progress=False),
                 lambda: fingerprint_inputs(_cfg(tmp_path), tmp_path, progress=False)):
        with pytest.raises(SourceNotConfiguredError) as err:
            call()
        msg = str(err.value)
        assert "https://ade20k.csail.mit.edu/" in msg and "ADE20K_2021_17_01.zip" in msg
        assert "data.sources.ade20k_full.url" in msg and "data.extracted_dir" in msg
    assert not (tmp_path / "prepared").exists() and not (tmp_path / "cache").exists()
    # The configuration check fails in a second, naming the key, for a cross-dataset target too.
    from ldvc.validate import validate_run

    raw = {"cross_dataset": {"a847": {"dataset": "ade20k_847"}}}
    with pytest.raises(ConfigError, match=r"'cross_dataset\.a847\.dataset' = ade20k_847: .*ade20k\.csail\.mit\.edu"):
        validate_run(config_from_dict(raw))
    ok = {"cross_dataset": {"a847": {"dataset": "ade20k_847", "sources": {"ade20k_full": {"url": "/x/A.zip"}}}}}
    validate_run(config_from_dict(ok))


def test_missing_local_archive_file_is_named(tmp_path):
    cfg = _cfg(tmp_path, sources={"ade20k_full": {"url": str(tmp_path / "nowhere" / "ADE20K_2021_17_01.zip")}})
    from ldvc.data.preflight import PreflightError

    with pytest.raises(PreflightError, match=r"nowhere/ADE20K_2021_17_01\.zip: archive for source") as err:
        prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False)
    assert "https://ade20k.csail.mit.edu/" in str(err.value) and "data.extracted_dir" in str(err.value)


# --------------------------------------------------------------------------------------------
# The user's archive -> canonical, and the extracted folder
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(release, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ade847_run")
    cfg = _cfg(tmp, sources={"ade20k_full": {"url": str(release)}}, num_workers=2)
    summary = prepare_dataset(cfg, tmp / "prepared", tmp, progress=False)
    return tmp / "prepared", summary


def test_round_trip_is_canonical_with_the_references_labels(prepared, release):
    root, summary = prepared
    meta = canonical.validate_canonical(root, check_pixels=True)
    assert meta["dataset"] == "ade20k_847" and meta["ignore_index"] == IGNORE and len(meta["classes"]) == 847
    assert summary["num_classes"] == 847 and summary["ignore_index"] == IGNORE
    assert summary["sources"]["ade20k_full"]["file"] == str(release)  # used in place, never copied
    assert canonical.list_ids(root, "val") == [i for _, i, _ in ADE_FULL_VAL]
    assert canonical.list_ids(root, "train") == sorted(i for _, i, _ in ADE_FULL_TRAIN)
    seen: set[int] = set()
    for split, items in (("train", ADE_FULL_TRAIN), ("val", ADE_FULL_VAL)):
        for _, i, size in items:
            label = canonical.read_label(canonical.label_path(root, split, i))
            assert label.dtype == np.uint16
            np.testing.assert_array_equal(label, _expected_label(i, size), err_msg=i)
            seen |= set(np.unique(label).tolist())
            with Image.open(canonical.image_path(root, split, i)) as im:
                assert im.format == "JPEG" and im.mode == "RGB" and im.size == (label.shape[1], label.shape[0])
    assert seen == set(ADE_FULL_PAINTED.values()) | {IGNORE}
    assert canonical.read_label(canonical.label_path(root, "val", "ADE_val_00000001")).shape == (512, 664)


def test_images_are_reencoded_as_the_reference_saves_them(prepared, release):
    """Step 5 of the reference (CAT-Seg prepare_ade20k_full.py line 1008 `Image.fromarray(img).save(output_img)`
    with a .jpg name): every image saved again at PIL's JPEG defaults - byte for byte here for an image
    that is not resized."""
    root, _ = prepared
    with zipfile.ZipFile(release) as zf:
        name = next(n for n in zf.namelist() if n.endswith("ADE_train_00000001.jpg"))
        original = zf.read(name)
    with Image.open(io.BytesIO(original)) as im:
        arr = np.asarray(im)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    assert canonical.image_path(root, "train", "ADE_train_00000001").read_bytes() == buf.getvalue()
    assert canonical.image_path(root, "val", ADE_FULL_GRAY).suffix == ".jpg"  # grayscale -> RGB JPEG


def test_extracted_folder_gives_the_same_dataset(prepared, release, tmp_path):
    root, _ = prepared
    with zipfile.ZipFile(release) as zf:
        zf.extractall(tmp_path / "mine")
    other = tmp_path / "out"
    prepare_dataset(_cfg(tmp_path, extracted_dir=str(tmp_path / "mine")), other, tmp_path, progress=False)
    for split in ("train", "val"):
        for i in canonical.list_ids(root, split):
            for path in (canonical.label_path, canonical.image_path):
                assert path(other, split, i).read_bytes() == path(root, split, i).read_bytes()


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_broken_release_is_named(release, tmp_path):
    with zipfile.ZipFile(release) as zf:
        zf.extractall(tmp_path / "x")
    base = tmp_path / "x"
    val = base / "ADE20K_2021_17_01" / "images" / "ADE" / "validation"
    seg = next(val.rglob("ADE_val_00000002_seg.png"))
    seg.write_bytes(seg.read_bytes()[:50])
    cfg = _cfg(tmp_path, extracted_dir=str(base), num_workers=2)
    with pytest.raises(canonical.UnreadableFileError, match=f"{seg}: cannot read this ADE20K class encoding"):
        prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False)
    seg.unlink()
    with pytest.raises(AdeFullLayoutError, match=r"ADE_val_00000002_seg\.png: the class encoding of "
                                                 r"ADE_val_00000002\.jpg is missing"):
        prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False)
    assert not (tmp_path / "prepared").exists()


def test_the_150_class_archive_is_not_taken_for_the_release(tmp_path):
    from fixtures.mini_datasets import build_mini_ade20k_150

    zip150 = build_mini_ade20k_150(tmp_path / "www")["ade20k_challenge"][0]
    cfg = _cfg(tmp_path, sources={"ade20k_full": {"url": str(zip150)}})
    with pytest.raises(AdeFullLayoutError, match=r"ADE20K_2021_17_01 .*not ADEChallengeData2016 \(that is ade20k_150"):
        prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False)
