"""The synthetic world: determinism, pixel-exact labels, class coverage, a zero-shot-ready split,
captions that fit the tiny CLIP, and colours that survive the trainer's hue jitter."""

from __future__ import annotations

import colorsys
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ldvc.config import DataConfig, SyntheticConfig  # noqa: E402
from ldvc.data import canonical, synthetic  # noqa: E402
from ldvc.data.synthetic import (  # noqa: E402
    CLASS_COLOUR,
    CLASS_PATTERN,
    CLASSES,
    COLOURS,
    DEFAULT_UNSEEN,
    IGNORE_INDEX,
)


def _cfg(n_train: int = 20, n_val: int = 18, seed: int = 0, size: int = 64) -> DataConfig:
    return DataConfig(dataset="synthetic", image_size=size,
                      synthetic=SyntheticConfig(train_images=n_train, val_images=n_val,
                                                min_objects=2, max_objects=4, seed=seed))


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _hue_deg(rgb: np.ndarray) -> float:
    return 360.0 * colorsys.rgb_to_hsv(*(rgb / 255.0))[0]


def _hue_dist(a: float, b: float) -> float:
    d = abs(a - b) % 360
    return min(d, 360 - d)


def test_world_is_a_zero_shot_world() -> None:
    assert len(CLASSES) >= 12 and len(set(CLASSES)) == len(CLASSES)
    assert len(DEFAULT_UNSEEN) >= 3 and set(DEFAULT_UNSEEN) <= set(CLASSES)
    seen = [i for i, c in enumerate(CLASSES) if c not in DEFAULT_UNSEEN]
    for name in DEFAULT_UNSEEN:
        i = CLASSES.index(name)
        # Reachable through language: its colour and its pattern each occur among seen classes.
        assert any(CLASS_COLOUR[j] == CLASS_COLOUR[i] for j in seen), name
        assert any(CLASS_PATTERN[j] == CLASS_PATTERN[i] for j in seen), name


def test_generate_is_deterministic_and_canonical(tmp_path: Path) -> None:
    a = synthetic.generate_synthetic(_cfg(), tmp_path / "a")
    synthetic.generate_synthetic(_cfg(), tmp_path / "b")
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    synthetic.generate_synthetic(_cfg(seed=1), tmp_path / "c")
    assert _tree_digest(tmp_path / "a") != _tree_digest(tmp_path / "c")
    # A dataset of other sizes starts with the very same images (per-image seeds).
    synthetic.generate_synthetic(_cfg(n_train=5, n_val=3), tmp_path / "d")
    da, dd = _tree_digest(tmp_path / "a"), _tree_digest(tmp_path / "d")
    assert da["images/train/000004.png"] == dd["images/train/000004.png"]

    meta = canonical.validate_canonical(tmp_path / "a", check_pixels=True)
    assert meta["dataset"] == "synthetic" and meta["classes"] == CLASSES
    assert meta["ignore_index"] == 255 and meta["splits"] == {"train": 20, "val": 18}
    assert canonical.list_ids(tmp_path / "a", "val") == [f"{i:06d}" for i in range(18)]
    assert a["splits"] == {"train": 20, "val": 18}
    # No temporary directories left next to the output.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c", "d"]


def test_every_class_covered_and_summary_counts_pixels(tmp_path: Path) -> None:
    n = len(CLASSES)
    summary = synthetic.generate_synthetic(_cfg(n_train=n, n_val=n), tmp_path / "ds")
    for split in ("train", "val"):
        assert summary["classes_missing"][split] == []
        counted = np.zeros(n, dtype=np.int64)
        for i in canonical.list_ids(tmp_path / "ds", split):
            lab = canonical.read_label(canonical.label_path(tmp_path / "ds", split, i))
            counted += np.bincount(lab[lab != IGNORE_INDEX], minlength=n)
        assert [summary["class_pixels"][split][c] for c in CLASSES] == counted.tolist()
        assert sum(summary["class_pixel_freq"][split].values()) == pytest.approx(1.0)
        assert 0.05 < summary["labelled_pixel_share"][split] < 0.8


def test_labels_are_pixel_exact() -> None:
    """Every labelled pixel shows its class's colour (hue of the mask's mean) and pattern (share of
    dark-tone pixels); background pixels are grey-ish."""
    rng = np.random.default_rng(3)
    checked = set()
    for _ in range(40):
        image, label = synthetic.render_scene(rng, 64, 3)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert label.shape == (64, 64) and label.dtype == np.uint8
        for cid in np.unique(label):
            mask = label == cid
            if cid == IGNORE_INDEX:
                sat = (image[mask].max(1).astype(float) - image[mask].min(1)) / 255.0
                assert np.median(sat) < 0.25
                continue
            if mask.sum() < 40:
                continue
            px = image[mask].astype(np.float32)  # (n, 3)
            value = px.max(axis=1)
            bright = px[value > 0.7 * np.percentile(value, 90)]
            assert _hue_dist(_hue_deg(bright.mean(0)), COLOURS[CLASS_COLOUR[cid]]) < 15, CLASSES[cid]
            dark_share = float((value < 0.7 * np.percentile(value, 90)).mean())
            expected = {"solid": (0.0, 0.08), "striped": (0.3, 0.7), "dotted": (0.1, 0.45)}
            lo, hi = expected[CLASS_PATTERN[cid]]
            assert lo <= dark_share <= hi, (CLASSES[cid], dark_share)
            checked.add(int(cid))
    assert len(checked) >= len(CLASSES) - 2


def test_classes_allowed_and_bad_input() -> None:
    rng = np.random.default_rng(0)
    allowed = ["red", "dotted blue"]
    for _ in range(10):
        _, label = synthetic.render_scene(rng, 64, 3, classes_allowed=allowed)
        assert set(np.unique(label)) <= {CLASSES.index(c) for c in allowed} | {IGNORE_INDEX}
    with pytest.raises(ValueError, match="unknown synthetic class 'orange'"):
        synthetic.render_scene(rng, 64, 2, classes_allowed=["orange"])
    with pytest.raises(ValueError, match="n_objects"):
        synthetic.render_scene(rng, 64, 0)
    bad = _cfg()
    bad.synthetic.min_objects = 5
    with pytest.raises(ValueError, match="min_objects"):
        synthetic.generate_synthetic(bad, Path("/nonexistent/never-written"))


def test_single_object_set_is_balanced_and_deterministic() -> None:
    images, labels = synthetic.single_object_set(0, 2 * len(CLASSES), 64)
    assert images.shape == (36, 64, 64, 3)
    assert np.bincount(labels).tolist() == [2] * len(CLASSES)
    again, _ = synthetic.single_object_set(0, 2 * len(CLASSES), 64)
    assert np.array_equal(images, again)
    image, label, cid = synthetic.render_single(np.random.default_rng(1), 64, "striped teal")
    assert cid == CLASSES.index("striped teal")
    assert (label == cid).mean() > 0.08  # one large object


def test_captions_name_all_classes_and_fit_the_context() -> None:
    from ldvc.model.clip_loader import model_config, tokenizer

    images, captions = synthetic.caption_batch(np.random.default_rng(0), 200, 64)
    again, captions2 = synthetic.caption_batch(np.random.default_rng(0), 200, 64)
    assert np.array_equal(images, again) and captions == captions2
    named = {c for c in CLASSES for cap in captions if f" {c} " in cap or f" {c}." in cap}
    assert named == set(CLASSES)  # unseen classes are named too
    assert all(cap.startswith("a photo of a ") and cap.endswith(".") for cap in captions)
    # The longest possible caption fits the tiny CLIP's context without truncation.
    ctx = model_config("ldvc-tiny-vit")["text_cfg"]["context_length"]
    longest = max((f"{c} {s}" for c in CLASSES for s in synthetic.SHAPES), key=len)
    text = "a photo of a " + " and a ".join([longest] * synthetic.MAX_CAPTION_OBJECTS) + "."
    tokens = tokenizer("ldvc-tiny-vit")([text])[0]
    assert tokens[-1] in (0, 49407) and (tokens == 49407).sum() == 1, f"{text!r} is truncated at {ctx}"


@pytest.mark.parametrize("shift", [-synthetic.MAX_SAFE_HUE_SHIFT_DEG, synthetic.MAX_SAFE_HUE_SHIFT_DEG])
def test_colours_survive_the_safe_hue_shift(shift: float) -> None:
    import torchvision.transforms.functional as TF

    names = list(COLOURS)
    for i in range(3 * len(CLASSES)):
        cid = i % len(CLASSES)
        image, label, _ = synthetic.render_single(np.random.default_rng([9, i]), 64, cid)
        x = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
        shifted = TF.adjust_hue(x, shift / 360.0).permute(1, 2, 0).numpy() * 255.0
        px = shifted[label == cid]
        bright = px[px.max(1) > 0.7 * np.percentile(px.max(1), 90)]
        hue = _hue_deg(bright.mean(0))
        nearest = min(names, key=lambda n: _hue_dist(hue, COLOURS[n]))
        assert nearest == CLASS_COLOUR[cid], (CLASSES[cid], shift, hue)


# --------------------------------------------------------------------------------------------
# Worlds: the default and shifted worlds unchanged; the wide world (open-vocabulary target)
# --------------------------------------------------------------------------------------------

# sha256 over (path, decoded pixels) of every PNG of a 6 train / 5 val dataset, computed with the code
# before the wide world existed (git show 3d70844:ldvc/data/synthetic.py): the default world (the
# committed run's training data) and the shifted world must not change by a single pixel.
WORLD_PIXEL_DIGESTS = {
    "default": "fc4e54f317dbf9d6d53346278a57f71db57ddf67dddeaba85fcd9842b10442e2",
    "shifted": "788796e2647776c148b46c5023426728df1c52fe01a00a0a2a462a537c767500",
}


def _pixel_digest(root: Path) -> str:
    from PIL import Image

    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(str(p.relative_to(root)).encode())
        h.update(np.asarray(Image.open(p)).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("world", sorted(WORLD_PIXEL_DIGESTS))
def test_existing_worlds_are_pixel_identical_to_before_the_wide_world(tmp_path: Path, world: str) -> None:
    cfg = _cfg(n_train=6, n_val=5)
    cfg.synthetic.world = world
    synthetic.generate_synthetic(cfg, tmp_path / world)
    assert _pixel_digest(tmp_path / world) == WORLD_PIXEL_DIGESTS[world]


def test_wide_world_vocabulary_is_larger_and_partly_disjoint() -> None:
    wide = synthetic.WORLDS["wide"].classes
    assert len(wide) == 21 > len(CLASSES) and len(set(wide)) == len(wide)
    trained = [c for c in wide if c in CLASSES]
    novel = [c for c in wide if c not in CLASSES]
    assert len(trained) == 12 and sorted(novel) == sorted(synthetic.WIDE_RENAMED + synthetic.WIDE_SPLIT)
    # Every new name is an appearance the CLIP was pre-trained on plus a shape word its captions use.
    for name in novel:
        appearance, shape = synthetic.world_class(name)
        assert shape in synthetic.SHAPES and CLASSES[appearance] not in wide
        assert name.split()[-1] == shape
    # the split pairs contrast the triangle (the shape the small CLIP tells best) with another shape
    by_appearance: dict[int, list[str]] = {}
    for name in synthetic.WIDE_SPLIT:
        appearance, shape = synthetic.world_class(name)
        by_appearance.setdefault(appearance, []).append(shape)
    assert len(by_appearance) == 3 and all(len(s) == 2 and "triangle" in s for s in by_appearance.values())
    assert wide[:6] != tuple(CLASSES[:6])  # train ids do not line up with the default world's


def test_world_class_parsing_and_ambiguous_worlds_are_refused() -> None:
    assert synthetic.world_class("striped red") == (CLASSES.index("striped red"), None)
    assert synthetic.world_class("dotted teal circle") == (CLASSES.index("dotted teal"), "circle")
    for bad in ("orange", "red hexagon", "striped"):
        with pytest.raises(ValueError, match=bad):
            synthetic.world_class(bad)
    with pytest.raises(AssertionError, match="split by shape"):
        synthetic._check_world(["red", "red circle"])  # a red circle pixel would have two labels


def _fill_ratio(mask: np.ndarray) -> float:
    ys, xs = np.nonzero(mask)
    return mask.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))


def test_wide_world_draws_each_shape_named_class_in_its_shape_and_colour(tmp_path: Path) -> None:
    """Labels follow the world's ids per object: every class appears; a shape-named class's pixels have
    its appearance's hue; triangles fill about half of their bounding box, circles and squares far more."""
    from PIL import Image
    from scipy import ndimage

    cfg = _cfg(n_train=2, n_val=84)
    cfg.synthetic.world = "wide"
    summary = synthetic.generate_synthetic(cfg, tmp_path / "wide")
    wide = list(synthetic.WORLDS["wide"].classes)
    assert canonical.read_meta(tmp_path / "wide")["classes"] == wide
    assert summary["classes_missing"]["val"] == []
    fills: dict[str, list[float]] = {}
    hues: dict[str, list[float]] = {}
    for lab_path in sorted((tmp_path / "wide" / "labels" / "val").glob("*.png")):
        label = canonical.read_label(lab_path)  # (H, W) world ids, 255 background
        image = np.asarray(Image.open(tmp_path / "wide" / "images" / "val" / lab_path.name)).astype(np.float32)
        assert set(np.unique(label)) <= set(range(len(wide))) | {IGNORE_INDEX}
        for cid in np.unique(label[label != IGNORE_INDEX]):
            name = wide[cid]
            regions, n = ndimage.label(label == cid)
            for k in range(1, n + 1):
                region = regions == k
                if region.sum() >= 60:  # whole, unoccluded objects are large; slivers say nothing of shape
                    fills.setdefault(name, []).append(_fill_ratio(region))
            bright = image[label == cid]
            bright = bright[bright.sum(axis=1) >= np.quantile(bright.sum(axis=1), 0.75)]  # the light tone
            hues.setdefault(name, []).append(_hue_deg(bright.mean(axis=0)))
    for name in wide:
        appearance, shape = synthetic.world_class(name)
        colour_hue = COLOURS[CLASS_COLOUR[appearance]]
        assert np.median([_hue_dist(h, colour_hue) for h in hues[name]]) < 15, name
        if shape == "triangle":
            assert np.median(fills[name]) < 0.62, (name, fills[name])
        elif shape in ("circle", "square"):
            assert np.median(fills[name]) > 0.7, (name, fills[name])


def test_compose_scene_fixed_shapes_take_no_draw() -> None:
    """shapes=None keeps the random stream (the default world's); a fixed shape is drawn as given."""
    a = synthetic.compose_scene(np.random.default_rng(3), 64, 3, class_ids=[0, 7, 15])
    b = synthetic.compose_scene(np.random.default_rng(3), 64, 3, class_ids=[0, 7, 15], shapes=[None, None, None])
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    c = synthetic.compose_scene(np.random.default_rng(3), 64, 3, class_ids=[0, 7, 15],
                                shapes=["triangle", None, "circle"])
    assert c.objects[0].shape == "triangle" and c.objects[2].shape == "circle"
    assert c.owner is not None and set(np.unique(c.owner)) <= {-1, 0, 1, 2}
