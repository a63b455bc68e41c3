"""The embedded synthetic world: procedurally drawn segmentation scenes whose classes text can name.

No real dataset or CLIP weights can be downloaded on the project's machines, so the offline
default replaces PASCAL VOC with a small world that still exercises zero-shot transfer for real.
Everything here is our choice (the paper has no synthetic setting):

- A class is an APPEARANCE: one of 6 named colours combined with one of 3 fill patterns
  ("red", "striped red", "dotted red", ...), 18 classes in all. Colour alone is learned almost
  instantly by a small CLIP; the patterns make the world harder while staying learnable in a few
  minutes on a CPU (shape identity was measured to stay near chance, so shape is a nuisance).
- Unseen classes (`DEFAULT_UNSEEN`) are compositions whose colour AND pattern both appear in seen
  classes, so a model can reach them through language only (the role of VOC's 5 unseen classes
  in the ZegCLIP protocol).
- Nuisances: shape (circle, square, triangle, diamond, oval), size, position, rotation, the
  pattern's orientation and phase, small hue/saturation/value jitter of the colour, a
  low-saturation background with a brightness gradient, and pixel noise.
- Label maps are pixel-exact: shapes are drawn without anti-aliasing, so every labelled pixel
  carries its class's colour/pattern (plus the image-wide noise). Background is 255 (ignored),
  like VOC's background in the ZegCLIP protocol.
- Hues are 60 degrees apart and jittered by at most `HUE_JITTER_DEG`, so a photometric
  augmentation that rotates hue by up to `MAX_SAFE_HUE_SHIFT_DEG` keeps every colour nearest to
  its own name. mmseg's PhotoMetricDistortion default (hue_delta=18 on OpenCV's 0-180 scale,
  i.e. +-36 degrees) is NOT safe; brightness/contrast/saturation jitter in mmseg's ranges is.
- Deterministic: every image is drawn from its own generator seeded by (seed, split, index), so
  the output does not depend on order or on how many images are generated.
- Worlds (`data.synthetic.world`): "default" is the world above, the one the model trains in;
  "shifted" is the cross-dataset target of the embedded default: other nuisance statistics
  (darker backgrounds with a low-frequency texture and a steeper gradient, a wider range of object
  sizes, up to twice the pixel noise) and a partly different vocabulary built from the same words:
  12 of the 18 classes (all 4 default unseen ones among them) in another order, so an evaluation
  that reused the source's class indices instead of the target's names would be wrong everywhere.
  "wide" is the open-vocabulary target of the embedded default (params.yaml `open_vocab`): the
  default world's statistics and a LARGER, partly disjoint vocabulary (`WIDE_CLASSES`, 21 classes).
- Open-vocabulary design (measured before it was chosen): the small CLIP's pre-training captions
  (`caption_batch`) use 13 content words: the 6 colours, the 2 pattern words and the 5 shapes.
  Every colour x pattern appearance is already a class of the default world, so the model trained
  on every class (the fully supervised variant) has seen every appearance name; the only words it
  never met in segmentation training are the SHAPE words. A class name "<appearance> <shape>"
  (`world_class`) is drawn only in that shape. The wide world keeps 12 appearances of the default
  world as they are (any shape: classes of the training vocabulary) and turns the other 6 into 9
  classes never in the training vocabulary: 3 appearances drawn in one shape only and named with it
  ("green triangle": a new name for a concept the model knows) and 3 appearances split into two
  shapes ("dotted red triangle" / "dotted red circle": a finer distinction than training made,
  which needs the CLIP's knowledge of shape). Measured with the pipeline's CLIP (200 steps, seed 0):
  zero-shot shape accuracy 26% over the 5 shapes (chance 20%), pairwise triangle vs circle or square
  about 70%, circle vs square 52%; so each split pair contrasts the triangle with a circle or a
  square. The default run's fully supervised model on the wide world (84 val images; `dvc repro
  evaluate_open_vocab` in a clone of the working tree, 2026-12-07): mIoU 61.1 on the 12 training
  classes, 33.9 on the 9 others (renamed 35-78, split pairs 3-47): new names of known concepts
  transfer in part; the finer distinction is bounded by what the small CLIP learned about shape.

Canonical on-disk format written by `generate_synthetic` (shared with the real datasets):
<root>/meta.json, <root>/images/<split>/<id>.png, <root>/labels/<split>/<id>.png,
<root>/lists/<split>.txt.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from ldvc.data import canonical

IGNORE_INDEX = canonical.IGNORE_INDEX

# Colour name -> hue in degrees. 60 degrees apart; every name is a single CLIP BPE token.
COLOURS: dict[str, float] = {
    "red": 0.0,
    "yellow": 60.0,
    "green": 120.0,
    "teal": 180.0,
    "blue": 240.0,
    "purple": 300.0,
}
# Fill patterns; "solid" classes are named by the bare colour ("red"), the others "striped red".
PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "oval")

HUE_JITTER_DEG = 8.0
# Half the hue spacing minus the jitter, with a margin of 2 degrees.
MAX_SAFE_HUE_SHIFT_DEG = 60.0 / 2 - HUE_JITTER_DEG - 2.0
# The pattern's second tone is the object colour darkened to this fraction of its value: the hue
# stays the class's hue (so colour never depends on the pattern) and the tone stays saturated,
# unlike the grey background.
DARK_TONE = 0.4
# Pattern geometry at 64 px; scaled with the image size so a pattern covers the same share of a
# patch at any resolution.
STRIPE_PERIOD_PX = 6.0
DOT_PERIOD_PX = 6.0
DOT_RADIUS_PX = 1.7


def _class_name(colour: str, pattern: str) -> str:
    return colour if pattern == "solid" else f"{pattern} {colour}"


# Train-id order: pattern-major, so ids 0..5 are the solid colours.
CLASSES: list[str] = [_class_name(c, p) for p in PATTERNS for c in COLOURS]
CLASS_COLOUR: list[str] = [c for _ in PATTERNS for c in COLOURS]
CLASS_PATTERN: list[str] = [p for p in PATTERNS for _ in COLOURS]
# Each unseen colour and each unseen pattern also appears in seen classes (checked below), and
# the four cover all three patterns and four different colours.
DEFAULT_UNSEEN: list[str] = ["yellow", "striped green", "dotted blue", "striped purple"]


def _check_split(unseen: Sequence[str]) -> None:
    seen = [i for i, n in enumerate(CLASSES) if n not in unseen]
    for name in unseen:
        i = CLASSES.index(name)
        if not any(CLASS_COLOUR[j] == CLASS_COLOUR[i] for j in seen):
            raise AssertionError(f"unseen class {name!r}: its colour appears in no seen class")
        if not any(CLASS_PATTERN[j] == CLASS_PATTERN[i] for j in seen):
            raise AssertionError(f"unseen class {name!r}: its pattern appears in no seen class")


_check_split(DEFAULT_UNSEEN)


@dataclass(frozen=True)
class World:
    """The nuisance statistics and the vocabulary of one synthetic world."""

    name: str
    # The vocabulary, in train-id order: appearances of CLASSES (drawn in any shape) or
    # "<appearance> <shape>" (drawn only in that shape; `world_class`).
    classes: tuple[str, ...]
    grey: tuple[float, float] = (0.3, 0.8)  # background brightness
    gradient: float = 0.2  # background brightness ramp across the image
    texture: float = 0.0  # amplitude of a low-frequency background texture (0: none)
    radius: tuple[float, float] = (0.1, 0.24)  # object size, share of the image side
    noise: tuple[float, float] = (0.0, 0.04)  # pixel noise std range


def world_class(name: str) -> tuple[int, str | None]:
    """A world's class name -> (appearance id in CLASSES, the one shape it is drawn in, or None for any)."""
    if name in CLASSES:
        return CLASSES.index(name), None
    appearance, _, shape = name.rpartition(" ")
    if appearance in CLASSES and shape in SHAPES:
        return CLASSES.index(appearance), shape
    raise ValueError(f"synthetic class {name!r} is neither an appearance of {CLASSES} nor '<appearance> <shape>' "
                     f"with one of the shapes {SHAPES}")


def _check_world(classes: Sequence[str]) -> None:
    """Each appearance is one class, or one class per shape (pixel labels must be unambiguous)."""
    specs = [world_class(c) for c in classes]
    if len(set(classes)) != len(classes):
        raise AssertionError(f"a world lists a class twice: {classes}")
    for appearance in {a for a, _ in specs}:
        shapes = [s for a, s in specs if a == appearance]
        if None in shapes and len(shapes) > 1:
            raise AssertionError(f"{CLASSES[appearance]!r} is a class of any shape and also split by shape")


# The open-vocabulary target's vocabulary, shuffled so that no train id lines up with the default
# world's: 12 training classes, 3 renamed appearances, 3 appearances split by shape (module docstring).
WIDE_RENAMED: tuple[str, ...] = ("green triangle", "purple circle", "striped blue square")
WIDE_SPLIT: tuple[str, ...] = ("dotted red triangle", "dotted red circle", "striped yellow triangle",
                               "striped yellow square", "dotted teal triangle", "dotted teal circle")
WIDE_CLASSES: tuple[str, ...] = (
    "striped teal", "dotted red circle", "blue", "green triangle", "dotted yellow", "striped yellow square",
    "red", "dotted teal triangle", "striped purple", "purple circle", "dotted blue", "striped red",
    "dotted red triangle", "yellow", "striped blue square", "dotted green", "teal", "striped yellow triangle",
    "striped green", "dotted teal circle", "dotted purple",
)

WORLDS: dict[str, World] = {
    "default": World("default", tuple(CLASSES)),
    "shifted": World(
        "shifted",
        ("dotted teal", "purple", "striped yellow", "blue", "dotted red", "striped green", "teal", "dotted blue",
         "red", "striped purple", "yellow", "dotted green"),
        grey=(0.12, 0.55), gradient=0.45, texture=0.1, radius=(0.07, 0.3), noise=(0.03, 0.08),
    ),
    "wide": World("wide", WIDE_CLASSES),
}
for _world in WORLDS.values():
    _check_world(_world.classes)
assert set(WORLDS["default"].classes) == set(CLASSES) and set(WORLDS["shifted"].classes) <= set(CLASSES)
assert set(WIDE_CLASSES) - set(CLASSES) == set(WIDE_RENAMED + WIDE_SPLIT) and len(WIDE_CLASSES) > len(CLASSES)
assert set(DEFAULT_UNSEEN) <= set(WORLDS["shifted"].classes)


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------


@dataclass
class SceneObject:
    """One drawn object: its class id, shape and the pixels it ended up owning in the label map."""

    class_id: int
    shape: str
    area: int  # pixels of the full shape
    visible: int = 0  # pixels still labelled with this object after later objects are drawn

    @property
    def class_name(self) -> str:
        return CLASSES[self.class_id]

    def describe(self) -> str:
        """'striped red circle': the caption phrase for this object."""
        return f"{self.class_name} {self.shape}"


@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8
    label: np.ndarray  # (H, W) uint8, class ids, 255 background
    objects: list[SceneObject]
    owner: np.ndarray | None = None  # (H, W) int16: the pixel's object (index into `objects`), -1 background


def _resolve_classes(classes_allowed: Sequence[int | str] | None) -> np.ndarray:
    if classes_allowed is None:
        return np.arange(len(CLASSES))
    ids = []
    for c in classes_allowed:
        if isinstance(c, str):
            if c not in CLASSES:
                raise ValueError(f"unknown synthetic class {c!r}; the classes are {CLASSES}")
            ids.append(CLASSES.index(c))
        else:
            if not 0 <= int(c) < len(CLASSES):
                raise ValueError(f"class id {c} out of range 0..{len(CLASSES) - 1}")
            ids.append(int(c))
    if not ids:
        raise ValueError("classes_allowed is empty: pass None for all classes or at least one class")
    return np.asarray(sorted(set(ids)))


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    # Pixel centres, (H, W) each.
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return xs, ys


def _shape_mask(shape: str, xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, r: float,
                angle: float, aspect: float) -> np.ndarray:
    """Boolean (H, W) mask of `shape` centred at (cx, cy) with circumradius-like size r."""
    dx, dy = xs - cx, ys - cy
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy  # object-aligned coordinates
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        half = 0.8 * r
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.1 * r
    if shape == "oval":
        return (u / r) ** 2 + (v / (aspect * r)) ** 2 <= 1.0
    if shape == "triangle":
        # Equilateral: inside all three edges, whose normals are 120 degrees apart; inradius r/2.
        mask = np.ones_like(xs, dtype=bool)
        for k in range(3):
            t = angle + np.pi / 2 + k * 2 * np.pi / 3
            mask &= np.cos(t) * dx + np.sin(t) * dy <= 0.5 * r
        return mask
    raise ValueError(f"unknown shape {shape!r}; shapes are {SHAPES}")


def _pattern_mask(pattern: str, xs: np.ndarray, ys: np.ndarray, scale: float, angle: float,
                  phase: tuple[float, float]) -> np.ndarray:
    """Boolean (H, W): True where the pattern shows its second (dark) tone."""
    if pattern == "solid":
        return np.zeros_like(xs, dtype=bool)
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = ca * xs + sa * ys, -sa * xs + ca * ys
    if pattern == "striped":
        period = STRIPE_PERIOD_PX * scale
        return np.mod(u + phase[0] * period, period) < period / 2
    if pattern == "dotted":
        period = DOT_PERIOD_PX * scale
        du = np.mod(u + phase[0] * period, period) - period / 2
        dv = np.mod(v + phase[1] * period, period) - period / 2
        return du * du + dv * dv <= (DOT_RADIUS_PX * scale) ** 2
    raise ValueError(f"unknown pattern {pattern!r}; patterns are {PATTERNS}")


def _object_colour(rng: np.random.Generator, class_id: int) -> np.ndarray:
    hue = (COLOURS[CLASS_COLOUR[class_id]] + rng.uniform(-HUE_JITTER_DEG, HUE_JITTER_DEG)) % 360
    sat = rng.uniform(0.7, 1.0)
    val = rng.uniform(0.7, 1.0)
    return np.asarray(colorsys.hsv_to_rgb(hue / 360.0, sat, val), dtype=np.float32)


def _background(rng: np.random.Generator, size: int, xs: np.ndarray, ys: np.ndarray,
                world: World = WORLDS["default"]) -> np.ndarray:
    """(H, W, 3) float: a low-saturation tint with a linear brightness gradient (and, in a world
    with texture, a sum of three random low-frequency waves)."""
    grey = rng.uniform(*world.grey)
    tint = np.asarray(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 0.12), 1.0), np.float32)
    g = rng.uniform(-world.gradient, world.gradient, size=2) / size
    ramp = (xs - size / 2) * g[0] + (ys - size / 2) * g[1]  # (H, W)
    if world.texture > 0:
        for _ in range(3):
            fx, fy = rng.uniform(0.5, 3.0, size=2) * 2 * np.pi / size
            ramp = ramp + world.texture / 3 * np.sin(fx * xs + fy * ys + rng.uniform(0, 2 * np.pi))
    return np.clip((grey + ramp)[..., None] * tint, 0.0, 1.0)


def compose_scene(rng: np.random.Generator, size: int, n_objects: int,
                  classes_allowed: Sequence[int | str] | None = None,
                  class_ids: Sequence[int] | None = None, single: bool = False,
                  world: World = WORLDS["default"], shapes: Sequence[str | None] | None = None) -> Scene:
    """Draw a scene of `n_objects` objects; the full record (image, label and objects).

    class_ids fixes the objects' classes (in drawing order, the last is on top); otherwise they
    are drawn uniformly from classes_allowed. single=True draws one large, centred object (the
    zero-shot classification images and the single-object caption pairs). shapes fixes the shape of
    object k where shapes[k] is not None (a shape-named class); otherwise the shape is drawn.
    """
    if size < 16:
        raise ValueError(f"image size {size} is too small to draw patterns; use at least 16 px")
    if n_objects < 1:
        raise ValueError(f"n_objects must be at least 1, got {n_objects}")
    if single and n_objects != 1:
        raise ValueError(f"single=True draws exactly one object, got n_objects={n_objects}")
    allowed = _resolve_classes(classes_allowed)
    if class_ids is None:
        class_ids = rng.choice(allowed, size=n_objects).tolist()
    elif len(class_ids) != n_objects:
        raise ValueError(f"class_ids has {len(class_ids)} entries for {n_objects} objects")
    scale = size / 64.0
    xs, ys = _grid(size)
    image = _background(rng, size, xs, ys, world)
    label = np.full((size, size), IGNORE_INDEX, dtype=np.uint8)
    owner = np.full((size, size), -1, dtype=np.int16)  # which object owns each pixel
    objects: list[SceneObject] = []
    placed: list[tuple[float, float, float]] = []
    for k, cid in enumerate(class_ids):
        fixed = shapes[k] if shapes is not None else None
        # A fixed shape takes no draw; with shapes=None the random stream is the one it always was.
        shape = fixed if fixed is not None else SHAPES[rng.integers(len(SHAPES))]
        if single:
            r = rng.uniform(0.22, 0.4) * size
            cx, cy = size / 2 + rng.uniform(-0.12, 0.12, size=2) * size
        else:
            # Rejection sampling keeps objects mostly apart: overlaps stay possible (and pixel-exact)
            # but rarely hide an object.
            for _ in range(20):
                r = rng.uniform(*world.radius) * size
                cx, cy = rng.uniform(r * 0.7, size - r * 0.7, size=2)
                if all((cx - px) ** 2 + (cy - py) ** 2 >= (0.8 * (r + pr)) ** 2 for px, py, pr in placed):
                    break
        placed.append((cx, cy, r))
        # Squares and diamonds turn only a little, so they stay tellable apart.
        turn = 0.25 if shape in ("square", "diamond") else np.pi
        mask = _shape_mask(shape, xs, ys, cx, cy, r, rng.uniform(-turn, turn), rng.uniform(0.5, 0.7))
        pattern = CLASS_PATTERN[cid]
        dark = _pattern_mask(pattern, xs, ys, scale, rng.uniform(0, np.pi), tuple(rng.uniform(0, 1, 2)))
        colour = _object_colour(rng, cid)
        fill = np.where(dark[..., None], colour * DARK_TONE, colour)  # (H, W, 3)
        image[mask] = fill[mask]
        label[mask] = cid
        owner[mask] = k
        objects.append(SceneObject(class_id=int(cid), shape=shape, area=int(mask.sum())))
    counts = np.bincount(owner[owner >= 0].ravel(), minlength=len(objects))
    for k, obj in enumerate(objects):
        obj.visible = int(counts[k])
    noise = rng.uniform(*world.noise)
    image = image + rng.normal(0.0, noise, size=image.shape).astype(np.float32)
    image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return Scene(image=image, label=label, objects=objects, owner=owner)


def render_scene(rng: np.random.Generator, size: int, n_objects: int,
                 classes_allowed: Sequence[int | str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A segmentation scene: image (H, W, 3) uint8 and label (H, W) uint8 (255 = background)."""
    scene = compose_scene(rng, size, n_objects, classes_allowed)
    return scene.image, scene.label


def render_single(rng: np.random.Generator, size: int, class_id: int | str | None = None,
                  classes_allowed: Sequence[int | str] | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """One large centred object: image (H, W, 3) uint8, label (H, W) uint8 and its class id
    (class_id, an id or a name, fixes the class; otherwise it is drawn from classes_allowed)."""
    ids = None if class_id is None else [int(_resolve_classes([class_id])[0])]
    scene = compose_scene(rng, size, 1, classes_allowed, class_ids=ids, single=True)
    return scene.image, scene.label, scene.objects[0].class_id


# --------------------------------------------------------------------------------------------
# Image-caption pairs for the CLIP's contrastive pre-training
# --------------------------------------------------------------------------------------------

# Captions name at most 2 objects: "a photo of a striped purple triangle and a dotted green
# diamond." is 15 tokens with start/end, which fits the tiny CLIP's context of 16.
MAX_CAPTION_OBJECTS = 2
# An object is named in a caption only if this share of it stays visible (objects rarely overlap).
MIN_VISIBLE_SHARE = 0.5


def caption(objects: Sequence[SceneObject], with_shape: bool = True) -> str:
    """'a photo of a striped red circle and a blue square.' for the visible objects."""
    named = [o for o in objects if o.visible >= MIN_VISIBLE_SHARE * max(o.area, 1)]
    if not named:
        named = [max(objects, key=lambda o: o.visible)]
    phrases = [o.describe() if with_shape else o.class_name for o in named]
    return "a photo of a " + " and a ".join(phrases) + "."


def caption_batch(rng: np.random.Generator, batch_size: int, size: int,
                  single_share: float = 0.5) -> tuple[np.ndarray, list[str]]:
    """A batch of image-caption pairs over ALL classes (the unseen ones too: a real CLIP saw every
    concept in pre-training). images (B, H, W, 3) uint8, captions list of B strings.

    A `single_share` of the pairs shows one object; half of those are captioned without the
    shape ("a photo of a dotted blue."), the zero-shot template's form. The rest are 2-object
    scenes captioned with every object ("a photo of a dotted blue oval and a red square.").
    """
    images = np.empty((batch_size, size, size, 3), dtype=np.uint8)
    captions: list[str] = []
    for i in range(batch_size):
        if rng.random() < single_share:
            scene = compose_scene(rng, size, 1, single=True)
            text = caption(scene.objects, with_shape=rng.random() < 0.5)
        else:
            scene = compose_scene(rng, size, MAX_CAPTION_OBJECTS)
            text = caption(scene.objects)
        images[i] = scene.image
        captions.append(text)
    return images, captions


def single_object_set(seed: int, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A class-balanced held-out set of single-object images for zero-shot classification:
    images (N, H, W, 3) uint8 and labels (N,) int64 (image i shows class i mod C)."""
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % len(CLASSES)
    for i in range(n):
        rng = np.random.default_rng([seed, 7, i])  # stream 7: never used for training pairs
        images[i], _, _ = render_single(rng, size, int(labels[i]))
    return images, labels


# --------------------------------------------------------------------------------------------
# The dataset on disk (canonical format)
# --------------------------------------------------------------------------------------------

_SPLIT_STREAM = {"train": 1, "val": 2}


def generate_synthetic(data_cfg: Any, out_root: Path, splits: Sequence[str] = canonical.SPLITS) -> dict[str, Any]:
    """Write the synthetic dataset in the canonical format; returns a summary.

    data_cfg: ldvc.config.DataConfig (image_size and the `synthetic` section are used).
    splits: both, or val only for an evaluation target (no train image is drawn; each image's
    generator depends only on (seed, split, index), so the val images are the same either way).
    Train and val images hold min_objects..max_objects objects of ALL classes of the world (the
    split stage later turns unseen pixels into 255 for inductive training). Image i's top object
    has class i mod C, so every class appears in a split of at least C images. Labels are the
    world's train ids (its `classes` order), taken per object (`Scene.owner`), so two classes of one
    appearance (a shape-split pair) get their own ids. Written into a temporary sibling directory and renamed
    onto out_root (ldvc.data.canonical.staging).
    """
    syn = data_cfg.synthetic
    size = int(data_cfg.image_size)
    if size < 16:
        raise ValueError(f"data.image_size = {size} is too small for the synthetic world; use >= 16")
    if syn.min_objects < 1 or syn.min_objects > syn.max_objects:
        raise ValueError(
            f"data.synthetic.min_objects ({syn.min_objects}) must be >= 1 and <= max_objects "
            f"({syn.max_objects})"
        )
    counts = {s: int(getattr(syn, f"{s}_images")) for s in splits}
    for split, n in counts.items():
        if n < 1:
            raise ValueError(f"data.synthetic.{split}_images must be positive, got {n}")
    world = WORLDS[syn.world]
    vocabulary = list(world.classes)
    n_classes = len(vocabulary)
    specs = [world_class(c) for c in vocabulary]  # world id -> (appearance id, fixed shape or None)
    to_global = np.asarray([appearance for appearance, _ in specs])  # world id -> drawing class
    fixed_shapes = [shape for _, shape in specs]
    pixels = {split: np.zeros(n_classes, dtype=np.int64) for split in counts}
    with canonical.staging(out_root, splits) as tmp:
        for split, n in counts.items():
            width = max(6, len(str(n - 1)))
            ids = [f"{i:0{width}d}" for i in range(n)]
            for i, img_id in enumerate(tqdm(ids, desc=f"synthetic {split}", unit="img")):
                rng = np.random.default_rng([syn.seed, _SPLIT_STREAM[split], i])
                k = int(rng.integers(syn.min_objects, syn.max_objects + 1))
                classes = rng.integers(n_classes, size=k)
                classes[-1] = i % n_classes  # drawn last: on top, never hidden
                shapes = [fixed_shapes[c] for c in classes] if any(fixed_shapes) else None
                scene = compose_scene(rng, size, k, class_ids=to_global[classes].tolist(), world=world, shapes=shapes)
                owner = scene.owner  # (H, W) object index, -1 background
                label = np.where(owner >= 0, classes[np.maximum(owner, 0)], IGNORE_INDEX).astype(np.uint8)
                Image.fromarray(scene.image).save(tmp / "images" / split / f"{img_id}.png")
                canonical.write_label(canonical.label_path(tmp, split, img_id), label)
                pixels[split] += np.bincount(label[label != IGNORE_INDEX], minlength=n_classes)
            canonical.write_list(tmp, split, ids)
        source = {
            "generator": "ldvc.data.synthetic",
            "seed": syn.seed,
            "image_size": size,
            "min_objects": syn.min_objects,
            "max_objects": syn.max_objects,
            "world": world.name,
            "default_unseen": list(DEFAULT_UNSEEN),
        }
        canonical.write_meta(tmp, "synthetic", vocabulary, counts, source)
    total = {s: int(p.sum()) for s, p in pixels.items()}
    return {
        "dataset": "synthetic",
        "num_classes": n_classes,
        "splits": counts,
        "class_pixels": {s: {c: int(v) for c, v in zip(vocabulary, p)} for s, p in pixels.items()},
        "class_pixel_freq": {
            s: {c: float(v) / max(total[s], 1) for c, v in zip(vocabulary, p)} for s, p in pixels.items()
        },
        "labelled_pixel_share": {s: total[s] / (counts[s] * size * size) for s in counts},
        "classes_missing": {s: [c for c, v in zip(vocabulary, p) if v == 0] for s, p in pixels.items()},
    }
