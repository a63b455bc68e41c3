"""Class names and templates per dataset and reference (ldvc/data/prompts.py), pinned against the
reference implementations' files. Where a list is long, the digest is the sha256 of its entries
joined by newlines, computed from the cited file at the cited commit."""

from __future__ import annotations

import hashlib

import pytest

from ldvc.data.classes import COCO_STUFF_CLASSES, CONTEXT59_CLASSES, VOC_CLASSES, fixed_classes
from ldvc.data.prompts import (
    DEFAULT_REFERENCE,
    dataset_prompt_names,
    dataset_prompts,
    dataset_templates,
    prompt_references,
)


def _sha(items) -> str:
    return hashlib.sha256("\n".join(items).encode()).hexdigest()


def test_zegclip_templates_and_names():
    """ZegCLIP configs/_base_/datasets/text_embedding/get_embedding.ipynb (commit 9ba4bb5c...): cell 1
    `single_templete` tokenizes f"a photo of a {c}" (no full stop) -> voc12_single.npy, which
    configs/cross_dataset/coco-to-voc.py loads; cell 0's 15 `templates` (digest below) and VOC12_classes /
    COCO_classes (digests below) -> coco_multi.npy; coco-to-context.py loads context_multi.npy (not in
    the repository: the 15 templates are inferred, and marked so)."""
    voc = dataset_prompts("voc", "zegclip")
    assert voc.templates == ("a photo of a {}",) and not voc.inferred
    assert _sha(voc.names) == "7d877f185c807bc51b4cfb4f4202fc0b4e1c6724b782ba245fe36f8d254f0ad7"
    coco = dataset_prompts("coco_stuff", "zegclip")
    assert _sha(coco.templates) == "cbde80760ccc7fcc1a88edb4de0d282c81c2264180d7b5140b84af9b7b6e5394"
    assert len(coco.templates) == 15 and coco.names == COCO_STUFF_CLASSES
    assert _sha(coco.names) == "8ea44449837dceb30923012b201fe0152adc612160d0d040c9cfcd77e95f6801"
    ctx60 = dataset_prompts("context60")
    assert ctx60.reference == "zegclip" and ctx60.templates == coco.templates and ctx60.inferred
    assert ctx60.names[0] == "background" and len(ctx60.names) == 60
    assert dataset_templates("voc21") == ["a photo of a {}"] and dataset_prompt_names("voc21")[0] == "background"


def test_san_templates_and_names():
    """MendelXu/SAN (commit e19262d1a23992fc2cef934d6756b89ff50fe5c3): san/config.py line 44
    CLIP_TEMPLATE_SET "vild" -> san/model/clip_utils/utils.py lines 90-105 (14 templates; the same 14,
    same digest, as bytedance/fc-clip fcclip/fcclip.py VILD_PROMPT lines 26-41 at 2b0bbe21...);
    names: register_voc.py lines 6-27, register_pcontext.py lines 6-66 and 68-528, register_ade20k_full.py;
    ADE-150 through detectron2 detectron2/data/datasets/builtin_meta.py lines 228-230 (commit
    02b5c4e295e990042a714712c21dc79b731e8833), each name `.strip()`ed by SAN's get_labelset_from_dataset
    (utils.py lines 109-121) - the digest is of the stripped list ("window " -> "window")."""
    vild = dataset_templates("ade20k_150", "san")
    assert len(vild) == 14 and _sha(vild) == "20c81c13267c6b932d64146a292f740d2630ab9a403650b066628fa670a7a1b7"
    assert vild[1] == "This is a photo of a {}"  # no full stop, as written there
    assert _sha(dataset_prompt_names("voc", "san")) == (
        "0575f1e3360927e6f90b98704e60ee079272e2c2d17bc985774e60223e997bb6")
    assert dataset_prompt_names("voc", "san")[-1] == "tv"
    assert _sha(dataset_prompt_names("context59", "san")) == (
        "1c0546d54360b6030db946e7e75f14a0778f37edebd0051b8834027f8b5aab89")
    assert _sha(dataset_prompt_names("context459", "san")) == (
        "c9fe8ff7083d2572021691666a700755d8f4e1c634585ba9919a3f3a2c834538")
    assert _sha(dataset_prompt_names("ade20k_150", "san")) == (
        "aaab84ac88c425d4587c5792b4a8b5cda081e81723df78c2e3a2e02c2b6c905d")
    assert dataset_prompt_names("ade20k_847", "san") == list(fixed_classes("ade20k_847"))  # whole synonym lists


def test_catseg_templates_and_names():
    """KU-CVLAB/CAT-Seg (commit 6d3a188af95165147fe2f34a8237fa7d2633e784): configs/vitb_384.yaml line 31
    PROMPT_ENSEMBLE_TYPE "single" -> cat_seg/modeling/transformer/cat_seg_predictor.py line 85
    ['A photo of a {} in the scene',]; eval.sh's TEST_CLASS_JSON files datasets/{voc20,pc59,pc459,ade150,
    ade847}.json (digests of their entries below); get_text_embeds (lines 193-196) formats only the first
    synonym of a name containing ', '."""
    assert dataset_templates("voc", "catseg") == ["A photo of a {} in the scene"]
    assert _sha(dataset_prompt_names("voc", "catseg")) == (
        "7d877f185c807bc51b4cfb4f4202fc0b4e1c6724b782ba245fe36f8d254f0ad7")
    assert _sha(dataset_prompt_names("context59", "catseg")) == (
        "1c0546d54360b6030db946e7e75f14a0778f37edebd0051b8834027f8b5aab89")
    assert _sha(dataset_prompt_names("context459", "catseg")) == (
        "f22a02ac1b8419bc30f91a47c3668be6880fd52106cfc7881500f5d9219f0269")
    assert _sha(dataset_prompt_names("ade20k_150", "catseg")) == (
        "2133f0a0e71146d00a14482f872bc5888f66d706f90f1b1333a7eb5025989af9")
    # ade847.json = the 847 full names; CAT-Seg's forward pass keeps the first synonym of each.
    assert _sha(fixed_classes("ade20k_847")) == "ee311c5f3b780a16a58f40726927f6c41149860a5fca6c1116ea1dca129efd8b"
    names = dataset_prompt_names("ade20k_847", "catseg")
    assert names[1] == "building" and names[4] == "road" and names[-1] == "adding machine"
    assert all(", " not in n for n in names)


def test_every_dataset_has_a_default_and_counts_match():
    counts = {"voc": 20, "voc21": 21, "coco_stuff": 171, "context59": 59, "context60": 60, "context459": 459,
              "ade20k_150": 150, "ade20k_847": 847}
    assert set(DEFAULT_REFERENCE) == set(counts)
    for dataset, n in counts.items():
        refs = prompt_references(dataset)
        assert refs[0] == DEFAULT_REFERENCE[dataset]
        for ref in refs:
            p = dataset_prompts(dataset, ref)
            assert len(p.names) == n == len(fixed_classes(dataset)) and p.templates
            assert all("{}" in t for t in p.templates)
    assert dataset_prompt_names("context59") == list(CONTEXT59_CLASSES)
    assert dataset_prompt_names("voc") == list(VOC_CLASSES)


def test_unknown_requests_are_clear():
    with pytest.raises(ValueError, match=r"'san' has no prompts for dataset 'voc21'.*for 'voc21': \['zegclip'\]"):
        dataset_prompts("voc21", "san")
    with pytest.raises(ValueError, match=r"prompt reference 'clip': unknown \(zegclip \| san \| catseg\)"):
        dataset_prompts("voc", "clip")
    with pytest.raises(ValueError, match=r"dataset 'synthetic' has no reference prompts"):
        dataset_templates("synthetic")
