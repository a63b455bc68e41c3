"""The text encoder computes the causal prefix before the class name once per template
(ldvc/model/text_encoder.py, `share_prefix`): class embeddings, and the gradients that reach the
learnable text prompts, equal the full computation (every position of every class through every
layer), with prompts on, in training (gradients) and evaluation (cached, no gradients), for one and
for many templates (COCO-Stuff's 15, on ViT-B/16's text tower), and it is cheaper."""

from __future__ import annotations

import copy

import pytest
import torch

from ldvc.model.clip_loader import create_clip, tokenizer
from ldvc.model.flops import count_flops
from ldvc.model.text_encoder import PromptedTextEncoder
from ldvc.presets import load_preset

NAMES = ["red", "blue", "striped red", "dotted teal", "wall-concrete"]
TEMPLATES = ["a photo of a {}.", "a {} in the scene.", "{}", "This is one {}."]


def _pair(clip, tok, names, templates, **kw) -> tuple[PromptedTextEncoder, PromptedTextEncoder]:
    shared = PromptedTextEncoder(clip, tok, names, templates, **kw)
    full = copy.deepcopy(shared)
    full.shares_prefix = False
    assert shared.shares_prefix
    return shared, full


def _perturb_prompts(enc: PromptedTextEncoder, seed: int = 0) -> None:
    """Trained-looking prompts: the initial ones equal the frozen states, which would hide a wrong layer."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in enc.prompts:
            p.add_(torch.randn(p.shape, generator=gen) * 0.5)


@pytest.mark.parametrize("depth", [-1, 1, 0])
def test_shared_prefix_equals_full_computation_in_training_and_evaluation(depth: int) -> None:
    torch.manual_seed(0)
    clip, tok = create_clip("ldvc-tiny-vit"), tokenizer("ldvc-tiny-vit")
    shared, full = _pair(clip, tok, NAMES, TEMPLATES, prompt_tokens=2, prompt_depth=depth)
    _perturb_prompts(shared)
    full.load_state_dict(shared.state_dict())
    ids = torch.tensor([4, 0, 2])  # a subset, out of order (inductive training passes the seen ids)
    # training: gradients flow to the prompts through the shared prefix
    shared.train(), full.train()
    a, b = shared(ids), full(ids)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if depth != 0:
        assert a.requires_grad
        w = torch.randn_like(a)
        learnable = [i for i, p in enumerate(shared.prompts) if p.requires_grad]
        assert len(learnable) == 3  # "{}" has no context before the class: an empty, frozen slot
        ga = torch.autograd.grad((a * w).sum(), [shared.prompts[i] for i in learnable])
        gb = torch.autograd.grad((b * w).sum(), [full.prompts[i] for i in learnable])
        for x, y in zip(ga, gb):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)
            assert x.abs().sum() > 0
    # evaluation: every class, no gradient (cached)
    shared.eval(), full.eval()
    with torch.no_grad():
        torch.testing.assert_close(shared(None), full(None), rtol=1e-5, atol=1e-6)


def test_shared_prefix_at_coco_stuff_preset_size_on_vit_b16_text_tower() -> None:
    """COCO-Stuff's 15 templates (presets/coco_stuff.yaml) on ViT-B/16's text tower (random weights),
    classes whose names are several tokens long: equal embeddings, and fewer FLOPs per step."""
    templates = load_preset("coco_stuff")["prompt"]["templates"]
    assert len(templates) == 15
    torch.manual_seed(0)
    clip, tok = create_clip("ViT-B-16"), tokenizer("ViT-B-16")
    names = ["wall-concrete", "playingfield", "person", "traffic light", "dining table"]
    shared, full = _pair(clip, tok, names, templates, prompt_tokens=4)
    _perturb_prompts(shared, seed=1)
    full.load_state_dict(shared.state_dict())
    shared.train(), full.train()
    ids = torch.arange(len(names))
    torch.testing.assert_close(shared(ids), full(ids), rtol=1e-4, atol=1e-5)
    before = count_flops(full, ids, backward=True)
    after = count_flops(shared, ids, backward=True)
    assert after < 0.75 * before, (after, before)


def test_class_ids_are_checked_once_per_tensor_not_once_per_call() -> None:
    """The range check reads values (a host synchronisation on a GPU): once per ids tensor, again
    after an in-place change; a bad id is still refused with a clear message."""
    torch.manual_seed(0)
    enc = PromptedTextEncoder(create_clip("ldvc-tiny-vit"), tokenizer("ldvc-tiny-vit"), NAMES, TEMPLATES[:1],
                              prompt_tokens=2)
    ids = torch.tensor([0, 1])
    reads = []
    real_min = torch.Tensor.min

    def counting_min(self, *a, **k):
        reads.append(1)
        return real_min(self, *a, **k)

    torch.Tensor.min = counting_min
    try:
        for _ in range(3):
            enc(ids)
        assert len(reads) == 1
        ids[1] = 3  # in place: checked again
        enc(ids)
        assert len(reads) == 2
        ids[1] = 99
        with pytest.raises(ValueError, match="class_ids must be non-empty indices"):
            enc(ids)
    finally:
        torch.Tensor.min = real_min
