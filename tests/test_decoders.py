"""Every registered decoder inside the full Segmentor (ldvc/model/segmentor.py) on the tiny CLIP with
random weights: shapes, finiteness, gradients only where they belong; parameter counting; the
relationship descriptor's formula; the registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ldvc.model.decoders as decoders
from ldvc.config import Config, config_from_dict, load_config
from ldvc.model.build import build_segmentor
from ldvc.model.clip_loader import create_clip
from ldvc.model.param_count import count_parameters
from ldvc.model.relationship import RelationshipDescriptor

torch.set_num_threads(1)
CLASSES = ["cat", "dog", "potted plant", "sky", "grass"]


def tiny_config(**decoder) -> Config:
    cfg = load_config("params.yaml").to_dict()
    cfg.update(ablation={})
    cfg["decoder"].update(decoder)
    return config_from_dict(cfg)


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return create_clip("ldvc-tiny-vit")


def test_registry_has_both_decoders():
    assert {"lctd", "zegclip"} <= set(decoders.DECODERS)


VARIANTS = [(name, {}) for name in sorted(decoders.DECODERS)] + [
    ("lctd", {"route_attention": False}),
    ("lctd", {"lepe": True, "route_topk": 2}),
]


@pytest.mark.parametrize("name,extra", VARIANTS, ids=[f"{n}-{e}" for n, e in VARIANTS])
def test_every_decoder_forward_backward(clip, name, extra):
    torch.manual_seed(1)
    model = build_segmentor(tiny_config(type=name, **extra), clip, CLASSES)
    model.train()
    images = torch.randn(2, 3, 64, 64)
    seen = torch.tensor([4, 0, 2])
    logits = model(images, seen)
    assert logits.shape == (2, 3, 64, 64)
    assert torch.isfinite(logits).all()
    F.binary_cross_entropy_with_logits(logits, torch.rand_like(logits)).backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{n} got no gradient"
        else:
            assert p.grad is None, f"frozen {n} got a gradient"
    model.eval()
    with torch.no_grad():
        all_logits = model(images)  # evaluation: every class
    assert all_logits.shape == (2, len(CLASSES), 64, 64)
    # Logits for a class do not depend on the class's position in class_ids... only on the set:
    # selecting classes reorders the channels consistently.
    with torch.no_grad():
        again = model(images, torch.tensor([2, 0, 4]))
        sel = model(images, seen)
    assert torch.allclose(again, sel.flip(1), atol=1e-4)


def test_parameter_counts(clip):
    model = build_segmentor(tiny_config(type="lctd"), clip, CLASSES)
    counts = count_parameters(model)
    enc = model.image_encoder  # prompts + ZegCLIP's prompt projection and prompt norm
    visual = sum(p.numel() for n, p in enc.named_parameters() if not n.startswith("visual."))
    prompts = visual + sum(p.numel() for p in model.text_encoder.prompts)
    decoder = sum(p.numel() for p in model.decoder.parameters())
    assert counts["learnable"] == prompts + decoder
    clip_params = sum(p.numel() for p in clip.parameters()) - clip.logit_scale.numel()  # unused
    assert counts["total"] == counts["learnable"] + clip_params
    state = model.trainable_state_dict()
    assert sum(t.numel() for t in state.values()) == counts["learnable"]
    other = build_segmentor(tiny_config(type="lctd"), clip, CLASSES)
    other.load_trainable_state_dict(state)
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        assert torch.allclose(model.eval()(x), other.eval()(x), atol=1e-5)
    with pytest.raises(KeyError, match="does not match"):
        build_segmentor(tiny_config(type="zegclip"), clip, CLASSES).load_trainable_state_dict(state)


def test_relationship_descriptor_formula():
    torch.manual_seed(2)
    rd = RelationshipDescriptor(6, 4)
    t, g = torch.randn(3, 6), torch.randn(2, 6)
    out = rd(t, g)
    tn, gn = F.normalize(t, dim=-1), F.normalize(g, dim=-1)
    for b in range(2):
        for c in range(3):
            expected = rd.proj.weight @ torch.cat([tn[c] * gn[b], tn[c]]) + rd.proj.bias
            assert torch.allclose(out[b, c], expected, atol=1e-5)


def test_build_errors(clip):
    with pytest.raises(ValueError, match="duplicate class names"):
        build_segmentor(tiny_config(), clip, ["cat", "cat"])
    cfg = Config()  # ViT-B-16 defaults: 512 px, regions 8
    cfg.clip.model = "ldvc-tiny-vit"
    cfg.data.image_size = 48  # 6x6 grid: 8 regions do not divide it
    with pytest.raises(ValueError, match="does not divide"):
        build_segmentor(cfg, clip, CLASSES)
