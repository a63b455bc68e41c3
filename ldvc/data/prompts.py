"""Text prompts per dataset: the class names put into the templates and the templates, as each
reference implementation builds its text classifier. One place for the pipeline to query:

    dataset_prompts(dataset, reference=None) -> PromptSet   (names, templates, citation)
    dataset_templates(dataset, reference=None) -> list[str]
    dataset_prompt_names(dataset, reference=None) -> list[str]   (one string per class, train-id order)
    prompt_references(dataset) -> list[str]

`reference` None = DEFAULT_REFERENCE[dataset]: ZegCLIP's for the datasets of the ZegCLIP protocol
and its cross-dataset targets (voc, voc21, coco_stuff, context59, context60), SAN's for the
open-vocabulary targets ZegCLIP never evaluated (ade20k_150, ade20k_847, context459). A class text is
`template.format(name)` for every template; the multi-template references average the normalised
embeddings over the templates (ZegCLIP get_embedding.ipynb `multi_templete`; SAN and CAT-Seg do the
same). `names` are exactly the strings a reference formats (after the reference's own clean-up:
SAN strips whitespace; CAT-Seg's forward pass keeps only the first ", "-separated synonym).

References (files and commits read; tests/test_prompts.py pins every list against them):
- "zegclip": ZiqinZhou66/ZegCLIP at 9ba4bb5c9b621c04005fb9cef7254e79bb9c9991,
  configs/_base_/datasets/text_embedding/get_embedding.ipynb: cell 0 (the class lists and the 15
  `templates`), cell 1 (`single_templete`: f"a photo of a {c}", no full stop; `multi_templete`).
  voc: voc12_single.npy (configs/cross_dataset/coco-to-voc.py `load_text_embedding`), coco_stuff:
  coco_multi.npy. context60: coco-to-context.py loads context_multi.npy, which is not in the
  repository: the 15 templates are INFERRED from its name and the notebook's multi_templete; its
  names are ZeroPascalContextDataset60's CLASSES (compiled dataloader in the repository).
  voc21: ZeroPascalVOCDataset21 exists (compiled) but no embedding file: single template INFERRED
  from VOC's. context59: Cascade-CLIP's context-59_multi.npy (presets/context59.yaml), INFERRED to be
  the same 15 templates.
- "san": MendelXu/SAN at e19262d1a23992fc2cef934d6756b89ff50fe5c3: san/config.py
  `CLIP_TEMPLATE_SET = "vild"`, san/model/clip_utils/utils.py lines 90-105 (the 14 ViLD templates,
  identical to bytedance/fc-clip fcclip/fcclip.py VILD_PROMPT lines 26-41) and
  `get_labelset_from_dataset` (lines 109-121: the registered stuff_classes, each `.strip()`ed).
  Names: san/data/datasets/register_voc.py CLASS_NAMES (lines 6-27; "tv"), register_pcontext.py
  PCONTEXT_SEM_SEG_CATEGORIES (lines 6-66; "diningtable") and PCONTEXT_FULL_SEM_SEG_CATEGORIES
  (lines 68-528), register_ade20k_full.py (the 847 synonym lists, whole), and for ADE-150 detectron2's
  builtin registration: facebookresearch/detectron2 detectron2/data/datasets/builtin_meta.py
  ADE20K_SEM_SEG_CATEGORIES (lines 228-230, commit 02b5c4e295e990042a714712c21dc79b731e8833).
- "catseg": KU-CVLAB/CAT-Seg at 6d3a188af95165147fe2f34a8237fa7d2633e784: configs/vitb_384.yaml
  PROMPT_ENSEMBLE_TYPE "single" -> cat_seg/modeling/transformer/cat_seg_predictor.py line 85
  ['A photo of a {} in the scene'] (no full stop); names from datasets/{voc20,pc59,pc459,ade150,
  ade847}.json (eval.sh TEST_CLASS_JSON), of which `get_text_embeds` (lines 193-196) formats only the
  first synonym of a name containing ", ".
FC-CLIP's own prompts (openseg_classes.py with per-class synonym files, averaged) are not included.
"""

from __future__ import annotations

from dataclasses import dataclass

from ldvc.data.classes import (
    ADE20K_150_CLASSES,
    COCO_STUFF_CLASSES,
    CONTEXT59_CLASSES,
    CONTEXT60_CLASSES,
    CONTEXT459_CLASSES,
    VOC21_CLASSES,
    VOC_CLASSES,
    fixed_classes,
)

# ZegCLIP get_embedding.ipynb: cell 1's single template and cell 0's 15 templates.
ZEGCLIP_SINGLE: tuple[str, ...] = ("a photo of a {}",)
ZEGCLIP_MULTI: tuple[str, ...] = (
    "a photo of a {}.", "a photo of a small {}.", "a photo of a medium {}.", "a photo of a large {}.",
    "This is a photo of a {}.", "This is a photo of a small {}.", "This is a photo of a medium {}.",
    "This is a photo of a large {}.", "a {} in the scene.", "a photo of a {} in the scene.",
    "There is a {} in the scene.", "There is the {} in the scene.", "This is a {} in the scene.",
    "This is the {} in the scene.", "This is one {} in the scene.",
)
# SAN's "vild" set = FC-CLIP's VILD_PROMPT (14 templates; some without full stop, as written there).
VILD_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.", "This is a photo of a {}", "There is a {} in the scene", "There is the {} in the scene",
    "a photo of a {} in the scene", "a photo of a small {}.", "a photo of a medium {}.", "a photo of a large {}.",
    "This is a photo of a small {}.", "This is a photo of a medium {}.", "This is a photo of a large {}.",
    "There is a small {} in the scene.", "There is a medium {} in the scene.", "There is a large {} in the scene.",
)
CATSEG_SINGLE: tuple[str, ...] = ("A photo of a {} in the scene",)

# detectron2's ADE20K_SEM_SEG_CATEGORIES (what SAN evaluates ADE-150 with), stripped as SAN strips.
DETECTRON2_ADE20K_150: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road, route", "bed", "window", "grass", "cabinet",
    "sidewalk, pavement", "person", "earth, ground", "door", "table", "mountain, mount", "plant", "curtain", "chair",
    "car", "water", "painting, picture", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair",
    "seat", "fence", "desk", "rock, stone", "wardrobe, closet, press", "lamp", "tub", "rail", "cushion",
    "base, pedestal, stand", "box", "column, pillar", "signboard, sign", "chest of drawers, chest, bureau, dresser",
    "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator, icebox", "grandstand, covered stand", "path",
    "stairs", "runway", "case, display case, showcase, vitrine", "pool table, billiard table, snooker table",
    "pillow", "screen door, screen", "stairway, staircase", "river", "bridge, span", "bookcase", "blind, screen",
    "coffee table", "toilet, can, commode, crapper, pot, potty, stool, throne", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm, palm tree", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel, hut, hutch, shack, shanty", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning, sunshade, sunblind", "street lamp", "booth", "tv", "plane", "dirt track", "clothes", "pole",
    "land, ground, soil", "bannister, banister, balustrade, balusters, handrail",
    "escalator, moving staircase, moving stairway", "ottoman, pouf, pouffe, puff, hassock", "bottle",
    "buffet, counter, sideboard", "poster, posting, placard, notice, bill, card", "stage", "van", "ship",
    "fountain", "conveyer belt, conveyor belt, conveyer, conveyor, transporter", "canopy",
    "washer, automatic washer, washing machine", "plaything, toy", "pool", "stool", "barrel, cask",
    "basket, handbasket", "falls", "tent", "bag", "minibike, motorbike", "cradle", "oven", "ball",
    "food, solid food", "step, stair", "tank, storage tank", "trade name", "microwave", "pot", "animal", "bicycle",
    "lake", "dishwasher", "screen", "blanket, cover", "sculpture", "hood, exhaust hood", "sconce", "vase",
    "traffic light", "tray", "trash can", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board",
    "shower", "radiator", "glass, drinking glass", "clock", "flag",
)
assert len(DETECTRON2_ADE20K_150) == 150

REFERENCES: tuple[str, ...] = ("zegclip", "san", "catseg")
DEFAULT_REFERENCE: dict[str, str] = {
    "voc": "zegclip", "voc21": "zegclip", "coco_stuff": "zegclip", "context59": "zegclip", "context60": "zegclip",
    "context459": "san", "ade20k_150": "san", "ade20k_847": "san",
}


@dataclass(frozen=True)
class PromptSet:
    """How one reference turns one dataset's classes into text."""

    dataset: str
    reference: str  # zegclip | san | catseg
    names: tuple[str, ...]  # one per class, train-id order: the string each template formats
    templates: tuple[str, ...]
    source: str  # file(s) it is read from
    inferred: bool = False  # True where the reference's repository lacks the file and we infer it


def _replace(names: tuple[str, ...], old: str, new: str) -> tuple[str, ...]:
    assert names.count(old) == 1
    return tuple(new if n == old else n for n in names)


def _first_synonym(name: str) -> str:
    """CAT-Seg's get_text_embeds: a name containing ", " is reduced to its first synonym."""
    return name.split(", ")[0] if ", " in name else name


def _table(reference: str) -> dict[str, tuple[tuple[str, ...], tuple[str, ...], str, bool]]:
    """dataset -> (names, templates, source, inferred) of one reference."""
    z = "ZegCLIP get_embedding.ipynb"
    if reference == "zegclip":
        return {
            "voc": (VOC_CLASSES, ZEGCLIP_SINGLE, f"{z} single_templete (voc12_single.npy, coco-to-voc.py)", False),
            "voc21": (VOC21_CLASSES, ZEGCLIP_SINGLE, f"{z} single_templete; dataloader voc12_21 (compiled)", True),
            "coco_stuff": (COCO_STUFF_CLASSES, ZEGCLIP_MULTI, f"{z} multi_templete (coco_multi.npy)", False),
            "context59": (CONTEXT59_CLASSES, ZEGCLIP_MULTI,
                          "Cascade-CLIP context-59_multi.npy (presets/context59.yaml)", True),
            "context60": (CONTEXT60_CLASSES, ZEGCLIP_MULTI,
                          f"{z} multi_templete (context_multi.npy, coco-to-context.py; dataloader context60)", True),
        }
    if reference == "san":
        s = "SAN san/model/clip_utils/utils.py 'vild'"
        return {
            "voc": (_replace(VOC_CLASSES, "tvmonitor", "tv"), VILD_TEMPLATES, f"{s}; register_voc.py CLASS_NAMES",
                    False),
            "context59": (_replace(CONTEXT59_CLASSES, "table", "diningtable"), VILD_TEMPLATES,
                          f"{s}; register_pcontext.py PCONTEXT_SEM_SEG_CATEGORIES", False),
            "context459": (CONTEXT459_CLASSES, VILD_TEMPLATES, f"{s}; register_pcontext.py "
                           f"PCONTEXT_FULL_SEM_SEG_CATEGORIES", False),
            "ade20k_150": (DETECTRON2_ADE20K_150, VILD_TEMPLATES, f"{s}; detectron2 builtin_meta.py "
                           f"ADE20K_SEM_SEG_CATEGORIES", False),
            "ade20k_847": (fixed_classes("ade20k_847"), VILD_TEMPLATES, f"{s}; register_ade20k_full.py", False),
        }
    if reference == "catseg":
        c = "CAT-Seg cat_seg_predictor.py 'single' (vitb_384.yaml)"
        return {
            "voc": (VOC_CLASSES, CATSEG_SINGLE, f"{c}; datasets/voc20.json", False),
            "context59": (_replace(CONTEXT59_CLASSES, "table", "diningtable"), CATSEG_SINGLE,
                          f"{c}; datasets/pc59.json", False),
            "context459": (tuple(n.replace(" ", "") for n in CONTEXT459_CLASSES), CATSEG_SINGLE,
                           f"{c}; datasets/pc459.json", False),
            # ade150.json spells "bed " (mmseg's trailing space): kept, CAT-Seg formats it as it is.
            "ade20k_150": (_replace(ADE20K_150_CLASSES, "bed", "bed "), CATSEG_SINGLE, f"{c}; datasets/ade150.json",
                           False),
            "ade20k_847": (tuple(_first_synonym(n) for n in fixed_classes("ade20k_847")), CATSEG_SINGLE,
                           f"{c}; datasets/ade847.json, first synonym (get_text_embeds)", False),
        }
    raise ValueError(f"prompt reference {reference!r}: unknown ({' | '.join(REFERENCES)})")


def prompt_references(dataset: str) -> list[str]:
    """The references that define prompts for `dataset` (the default first)."""
    out = [ref for ref in REFERENCES if dataset in _table(ref)]
    default = DEFAULT_REFERENCE.get(dataset)
    return sorted(out, key=lambda r: r != default)


def _build(dataset: str, reference: str) -> PromptSet:
    table = _table(reference)
    if dataset not in table:
        raise ValueError(
            f"prompt reference {reference!r} has no prompts for dataset {dataset!r} (it has: {sorted(table)}); "
            f"the references for {dataset!r}: {prompt_references(dataset) or 'none'}"
        )
    names, templates, source, inferred = table[dataset]
    return PromptSet(dataset, reference, tuple(names), tuple(templates), source, inferred)


def dataset_prompts(dataset: str, reference: str | None = None) -> PromptSet:
    """The prompt set of `dataset` as `reference` (default: DEFAULT_REFERENCE[dataset]) builds it."""
    if reference is None:
        if dataset not in DEFAULT_REFERENCE:
            raise ValueError(
                f"dataset {dataset!r} has no reference prompts (known: {sorted(DEFAULT_REFERENCE)}); its text comes "
                f"from prompt.templates and its class names"
            )
        reference = DEFAULT_REFERENCE[dataset]
    prompts = _build(dataset, reference)
    if len(prompts.names) != len(fixed_classes(dataset)):  # pragma: no cover - guarded by the tests
        raise AssertionError(f"{dataset}/{reference}: {len(prompts.names)} names for {len(fixed_classes(dataset))}")
    return prompts


def dataset_templates(dataset: str, reference: str | None = None) -> list[str]:
    """The templates `reference` uses for `dataset` (see `dataset_prompts`)."""
    return list(dataset_prompts(dataset, reference).templates)


def dataset_prompt_names(dataset: str, reference: str | None = None) -> list[str]:
    """The class names `reference` formats into its templates for `dataset`, train-id order."""
    return list(dataset_prompts(dataset, reference).names)
