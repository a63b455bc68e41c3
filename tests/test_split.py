"""Seen/unseen splits (ldvc/data/split.py, classes.py): ZegCLIP defaults, user lists validated
with close matches, and a save/load round trip that rejects a tampered file."""

from __future__ import annotations

import json

import pytest

from ldvc.data.classes import COCO_STUFF_CLASSES, VOC_CLASSES
from ldvc.data.split import SplitError, load_split, make_split, save_split


def test_voc_default():
    s = make_split(VOC_CLASSES, "default", "voc")
    assert s["unseen"] == [15, 16, 17, 18, 19] and s["seen"] == list(range(15))
    assert s["seen_names"][:3] == ["aeroplane", "bicycle", "bird"] and s["classes"] == list(VOC_CLASSES)


def test_coco_stuff_default_is_the_protocol_list():
    s = make_split(COCO_STUFF_CLASSES, "default", "coco_stuff")
    assert s["unseen"] == [19, 23, 28, 29, 36, 51, 76, 88, 94, 112, 133, 136, 137, 157, 160]
    assert s["unseen_names"] == ["cow", "giraffe", "suitcase", "frisbee", "skateboard", "carrot", "scissors",
                                 "cardboard", "clouds", "grass", "playingfield", "river", "road", "tree",
                                 "wall-concrete"]
    assert len(s["seen"]) == 156 and not set(s["seen"]) & set(s["unseen"])


def test_user_list_in_any_order():
    s = make_split(VOC_CLASSES, ["sheep", "cat"], "voc")
    assert s["unseen"] == [7, 16] and s["unseen_names"] == ["cat", "sheep"] and len(s["seen"]) == 18


@pytest.mark.parametrize(
    ("unseen", "message"),
    [
        (["sheeps"], r"'sheeps' is not a class.*close matches: \['sheep'\]"),
        (["cat", "cat"], "more than once"),
        ([], "at least one unseen class"),
        (list(VOC_CLASSES), "at least one seen class"),
        ("all", "'default' or a list"),
    ],
)
def test_bad_user_lists(unseen, message):
    with pytest.raises(SplitError, match=message):
        make_split(VOC_CLASSES, unseen, "voc")


def test_save_load_round_trip_and_tamper_detection(tmp_path):
    s = make_split(VOC_CLASSES, "default", "voc")
    path = save_split(s, tmp_path / "split" / "split.json")
    assert load_split(path) == s
    bad = dict(s, unseen=[15, 16])
    path.write_text(json.dumps(bad))
    with pytest.raises(SplitError, match="partition"):
        load_split(path)
    with pytest.raises(FileNotFoundError, match="split file not found"):
        load_split(tmp_path / "missing.json")
