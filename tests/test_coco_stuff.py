"""COCO-Stuff 164k (ldvc/data/coco_stuff.py): the 182 -> 171 raw-id mapping of mmsegmentation's
coco_stuff164k converter (a table of known ids incl. the 15 ZegCLIP unseen classes), and the full
download -> extract -> multiprocessing conversion on miniature zips served on 127.0.0.1."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures import serve_directory
from fixtures.mini_datasets import COCO_GRAY, COCO_TRAIN, COCO_VAL, coco_raw_map
from PIL import Image

from ldvc.config import DataConfig
from ldvc.data import canonical
from ldvc.data.classes import COCO_STUFF_CLASSES
from ldvc.data.coco_stuff import RAW_TO_TRAIN
from ldvc.data.prepare import prepare_dataset
from ldvc.data.split import make_split

# raw stuffthingmaps id -> train id, read off mmsegmentation's clsID_to_trID table.
KNOWN = {0: 0, 10: 10, 12: 11, 24: 23, 26: 24, 27: 25, 30: 26, 43: 39, 45: 40, 64: 59, 66: 60, 69: 61,
         71: 62, 81: 72, 83: 73, 89: 79, 91: 80, 92: 81, 181: 170, 255: 255}
# The 15 ZegCLIP unseen classes: raw id -> (train id, name) (protocol.md).
UNSEEN = {20: (19, "cow"), 24: (23, "giraffe"), 32: (28, "suitcase"), 33: (29, "frisbee"),
          40: (36, "skateboard"), 56: (51, "carrot"), 86: (76, "scissors"), 99: (88, "cardboard"),
          105: (94, "clouds"), 123: (112, "grass"), 144: (133, "playingfield"), 147: (136, "river"),
          148: (137, "road"), 168: (157, "tree"), 171: (160, "wall-concrete")}


def test_known_raw_ids_map_like_mmseg():
    for raw, train in KNOWN.items():
        assert RAW_TO_TRAIN[raw] == train, raw


@pytest.mark.parametrize("raw", sorted(UNSEEN))
def test_unseen_classes_train_ids_and_names(raw):
    train, name = UNSEEN[raw]
    assert RAW_TO_TRAIN[raw] == train and COCO_STUFF_CLASSES[train] == name


def test_mapping_is_a_bijection_onto_171_ids():
    used = RAW_TO_TRAIN[:182][RAW_TO_TRAIN[:182] != 255]
    assert sorted(used.tolist()) == list(range(171))
    assert np.all(np.diff(used.astype(int)) == 1)  # order preserving, as in mmseg
    for unused in (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90):
        assert RAW_TO_TRAIN[unused] == 255
    assert np.all(RAW_TO_TRAIN[182:] == 255)


def test_default_split_matches_protocol():
    split = make_split(list(COCO_STUFF_CLASSES), "default", "coco_stuff")
    assert split["unseen"] == sorted(t for t, _ in UNSEEN.values())
    assert len(split["seen"]) == 156


def test_download_and_convert_with_two_workers(mini_coco_stuff_archives, tmp_path):
    www = next(iter(mini_coco_stuff_archives.values()))[0].parent
    with serve_directory(www) as url:
        sources = {n: {"url": url + p.name, "md5": md5} for n, (p, md5) in mini_coco_stuff_archives.items()}
        cfg = DataConfig(dataset="coco_stuff", root=str(tmp_path / "out"), cache_dir="cache",
                         sources=sources, num_workers=2)
        summary = prepare_dataset(cfg, tmp_path / "out", tmp_path, progress=False)
    root = tmp_path / "out"
    assert summary["splits"] == {"train": len(COCO_TRAIN), "val": len(COCO_VAL)}
    assert summary["num_classes"] == 171
    assert set(summary["sources"]) == {"coco_train2017", "coco_val2017", "coco_stuffthingmaps"}
    for split, ids in (("train", COCO_TRAIN), ("val", COCO_VAL)):
        assert canonical.list_ids(root, split) == sorted(ids)
        for i in ids:
            got = np.asarray(Image.open(canonical.label_path(root, split, i)))
            raw = coco_raw_map(i)
            expected = np.vectorize(lambda r: UNSEEN[r][0] if r in UNSEEN else KNOWN.get(r, 255))(raw)
            np.testing.assert_array_equal(got, expected.astype(np.uint8), err_msg=f"{split}/{i}")
            img = canonical.image_path(root, split, i)
            assert img.suffix == (".png" if i == COCO_GRAY else ".jpg")  # grayscale JPEG -> RGB PNG
            assert Image.open(img).mode == "RGB"
    canonical.validate_canonical(root, check_pixels=True)
