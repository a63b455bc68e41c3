"""The protocol facts a paper preset fixes and a run records (issue 17, items 5-6 and the deviation list)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from fixtures.engine import tiny_setup

from ldvc.presets import available, load_preset
from ldvc.protocol import DEVIATIONS_DOC, deviations, deviations_link

REPO = Path(__file__).resolve().parents[1]
PAPER = ("voc", "coco_stuff", "context59")


def test_every_preset_has_its_section_in_the_deviation_list():
    """One place per preset (docs/deviations.md, `## <preset>`), the anchor the tables link to."""
    text = (REPO / DEVIATIONS_DOC).read_text()
    headings = re.findall(r"^## (\S+)$", text, re.M)
    assert set(available(REPO / "presets")) <= set(headings), headings
    assert deviations_link("voc") == "docs/deviations.md#voc"


@pytest.mark.parametrize("preset", PAPER)
def test_paper_presets_fix_zegclips_training_facts(preset):
    """ZegCLIP trains in fp32 with OpenAI's CLIP (QuickGELU) and a head whose init_weights never runs."""
    p = load_preset(preset)
    assert p["train"]["mixed_precision"] == "no"
    assert p["clip"] == {"model": "ViT-B-16", "pretrained": "openai", "activation": "quick_gelu"}
    assert p["decoder"]["init"] == "torch_default"
    assert p["encoder"]["prompt_dropout"] == 0.1 and p["train"]["augment"]["photometric"] is True


def test_bf16_and_other_activations_are_protocol_deviations():
    """A table reader sees a bf16 run or a GELU CLIP as [R*] with the key named."""
    base = {k: v for k, v in load_preset("voc").items()}
    run = {**base, "train": {**base["train"], "mixed_precision": "bf16"},
           "clip": {**base["clip"], "activation": "gelu"}}
    devs = deviations("voc", REPO / "presets", run)
    assert devs["train.mixed_precision"] == {"value": "bf16", "protocol": "no"}
    assert devs["clip.activation"] == {"value": "gelu", "protocol": "quick_gelu"}
    assert not deviations("voc", REPO / "presets", base)


def test_a_checkpoint_records_the_precision_and_activation_that_ran(tmp_path):
    """bf16 asked on a CPU trains in fp32: the checkpoint's config says "no", so the run is judged by what
    ran; the CLIP's built activation is recorded beside its weights."""
    from ldvc.train.checkpoint import load_checkpoint
    from ldvc.train.loop import train_segmentor

    cfg, split, root, _, _ = tiny_setup(tmp_path, {"train": {"iters": 1, "mixed_precision": "bf16"},
                                                   "transductive": {"init_iter": 1, "iters": 1}})
    assert not torch.cuda.is_available()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_segmentor(cfg, "inductive", split, root, None, tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run" / "model.pt")
    assert ckpt["config"]["train"]["mixed_precision"] == "no"
    assert ckpt["clip"]["activation"] == "gelu"  # the tiny CLIP's own config
