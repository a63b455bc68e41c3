"""VOC 2012 + SBD real path end to end on miniature archives served on 127.0.0.1:
download -> verify -> extract -> convert (palette PNG indices, SBD GTcls .mat) -> canonical
format with the right pixel values -> ZegCLIP split. Also the canonical-format validator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures import serve_directory
from fixtures.mini_datasets import SBD_TRAIN, SBD_VAL, TRAIN_AUG, VOC_TRAIN, VOC_VAL, sbd_raw_label, voc_raw_label
from PIL import Image

from ldvc.config import DataConfig
from ldvc.data import canonical
from ldvc.data.classes import VOC_CLASSES, dataset_classes
from ldvc.data.prepare import prepare_dataset
from ldvc.data.split import make_split
from ldvc.data.voc import read_voc_png, to_train_ids, train_aug_ids


def _expected(raw: np.ndarray) -> np.ndarray:
    out = np.full(raw.shape, 255, dtype=np.uint8)
    fg = (raw >= 1) & (raw <= 20)
    out[fg] = raw[fg] - 1
    return out


def _cfg(tmp_path: Path, sources: dict, **kw) -> DataConfig:
    return DataConfig(dataset="voc", root=str(tmp_path / "prepared"), cache_dir=str(tmp_path / "cache"),
                      sources=sources, num_workers=1, **kw)


@pytest.fixture(scope="module")
def prepared_voc(mini_voc_archives, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("voc_run")
    www = next(iter(mini_voc_archives.values()))[0].parent
    log: list = []
    voc_tar = mini_voc_archives["voc2012"][0]
    # The first transfer of the VOC tar is cut half-way: the download must resume with Range.
    with serve_directory(www, log=log, drop_after={voc_tar.name: voc_tar.stat().st_size // 2}) as url:
        sources = {n: {"url": url + p.name, "md5": md5} for n, (p, md5) in mini_voc_archives.items()}
        cfg = _cfg(tmp, sources)
        summary = prepare_dataset(cfg, tmp / "prepared", tmp, progress=False)
        n_first = len(log)
        again = prepare_dataset(cfg, tmp / "prepared", tmp, progress=False)
        n_second = len(log) - n_first
    return tmp / "prepared", summary, again, n_first, n_second


def test_train_aug_and_val_ids(prepared_voc):
    root, summary, _, _, _ = prepared_voc
    assert canonical.list_ids(root, "train") == TRAIN_AUG
    assert canonical.list_ids(root, "val") == sorted(VOC_VAL)
    assert "2007_000042" not in TRAIN_AUG  # in SBD train but VOC val: excluded from training
    assert summary["splits"] == {"train": len(TRAIN_AUG), "val": len(VOC_VAL)}
    assert summary["classes"] == list(VOC_CLASSES) and summary["num_classes"] == 20
    assert set(summary["sources"]) == {"voc2012", "sbd"}
    assert all(len(s["sha256"]) == 64 for s in summary["sources"].values())


def test_label_pixels_are_train_ids_from_the_right_source(prepared_voc):
    root = prepared_voc[0]
    voc_ids = set(VOC_TRAIN) | set(VOC_VAL)
    for split in ("train", "val"):
        for i in canonical.list_ids(root, split):
            with Image.open(canonical.label_path(root, split, i)) as im:
                assert im.mode == "L"
                got = np.asarray(im)
            raw = voc_raw_label(i) if i in voc_ids else sbd_raw_label(i)  # VOC PNG preferred over SBD
            np.testing.assert_array_equal(got, _expected(raw), err_msg=f"{split}/{i}")
            assert 255 in got and set(np.unique(got)) <= set(range(20)) | {255}
    sbd_only = sorted((set(SBD_TRAIN) | set(SBD_VAL)) - voc_ids)
    assert sbd_only and all(i in TRAIN_AUG for i in sbd_only)


def test_images_are_rgb_and_match_labels(prepared_voc):
    root = prepared_voc[0]
    for i in canonical.list_ids(root, "train"):
        with Image.open(canonical.image_path(root, "train", i)) as im:
            assert im.mode == "RGB" and im.size == (32, 24)


def test_rerun_downloads_nothing(prepared_voc):
    _, summary, again, n_first, n_second = prepared_voc
    assert n_first == 3 and n_second == 0  # voc tar (dropped) + its Range resume + sbd; then none
    assert again["splits"] == summary["splits"]


def test_split_is_the_zegclip_split(prepared_voc):
    meta = canonical.read_meta(prepared_voc[0])
    split = make_split(meta["classes"], "default", "voc")
    assert split["unseen"] == [15, 16, 17, 18, 19]
    assert split["unseen_names"] == ["pottedplant", "sheep", "sofa", "train", "tvmonitor"]
    assert dataset_classes(DataConfig(dataset="voc")) == meta["classes"]


def test_extracted_dir_is_used_in_place_of_downloading(prepared_voc, tmp_path):
    cache = prepared_voc[0].parent / "cache" / "extracted"
    cfg = _cfg(tmp_path, {"voc2012": {"url": "http://127.0.0.1:9/unreachable.tar"}}, extracted_dir=str(cache))
    summary = prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False)
    assert summary["splits"] == {"train": len(TRAIN_AUG), "val": len(VOC_VAL)}
    assert summary["sources"] == {"extracted_dir": str(cache.resolve())}


def test_voc_palette_png_is_read_as_indices(mini_voc_archives, tmp_path):
    raw = voc_raw_label(VOC_TRAIN[0])
    p = tmp_path / "l.png"
    im = Image.fromarray(raw, mode="P")
    im.putpalette([v for i in range(256) for v in (i, 255 - i, 7)])
    im.save(p)
    np.testing.assert_array_equal(read_voc_png(p), raw)
    im.convert("RGB").save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="palette"):
        read_voc_png(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match=r"unexpected VOC label values \[21\]"):
        to_train_ids(np.array([[21, 0]], dtype=np.uint8), "x.png")


def test_train_aug_set_arithmetic():
    assert train_aug_ids(["a", "b"], ["c"], ["b", "c", "d"], ["e"]) == ["a", "b", "d", "e"]


def test_validate_canonical_names_the_problem(prepared_voc, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(prepared_voc[0], root)
    assert canonical.validate_canonical(root, check_pixels=True)["dataset"] == "voc"
    victim = canonical.list_ids(root, "val")[0]
    canonical.label_path(root, "val", victim).unlink()
    with pytest.raises(canonical.CanonicalFormatError, match="have no label"):
        canonical.validate_canonical(root)
    (root / "lists" / "val.txt").write_text("")
    with pytest.raises(canonical.CanonicalFormatError, match="'val' is empty"):
        canonical.validate_canonical(root)
    (root / "lists" / "val.txt").unlink()
    with pytest.raises(canonical.CanonicalFormatError, match="split 'val' is missing"):
        canonical.validate_canonical(root)
    with pytest.raises(canonical.CanonicalFormatError, match="not a prepared dataset"):
        canonical.read_meta(tmp_path / "nothing")


def test_corrupt_archive_is_never_extracted(mini_voc_archives, tmp_path):
    from ldvc.data.download import ChecksumError

    www = next(iter(mini_voc_archives.values()))[0].parent
    voc_tar, md5 = mini_voc_archives["voc2012"]
    with serve_directory(www, corrupt={voc_tar.name: 5000}) as url:
        sources = {n: {"url": url + p.name, "md5": m} for n, (p, m) in mini_voc_archives.items()}
        with pytest.raises(ChecksumError) as err:
            prepare_dataset(_cfg(tmp_path, sources), tmp_path / "prepared", tmp_path, progress=False)
    assert f"expected {md5}" in str(err.value) and voc_tar.name in str(err.value)
    assert not (tmp_path / "cache" / "extracted").exists() and not (tmp_path / "prepared").exists()
