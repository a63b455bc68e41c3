"""Prompted CLIP encoders (ldvc/model/image_encoder.py, text_encoder.py) on the tiny CLIP with
random weights: zero prompts reproduce open_clip; text prompts start at the frozen template
embeddings; only prompt parameters learn; CLIP stays frozen and in eval mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ldvc.model.clip_loader import create_clip, tokenizer
from ldvc.model.image_encoder import PromptedImageEncoder, resize_positional_embedding
from ldvc.model.text_encoder import PromptedTextEncoder

torch.set_num_threads(1)
NAMES = ["cat", "potted plant", "tv monitor", "sky"]
TEMPLATES = ["a photo of a {}.", "the embroidered {}.", "{} in the scene."]  # 4, 2 and 0 prefix tokens


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return create_clip("ldvc-tiny-vit")


@pytest.fixture(scope="module")
def tok():
    return tokenizer("ldvc-tiny-vit")


def frozen_template_embeddings(clip, tok, names, templates):
    with torch.no_grad():
        per = [F.normalize(clip.encode_text(tok([t.format(n) for n in names])), dim=-1) for t in templates]
    return F.normalize(torch.stack(per).mean(0), dim=-1)


def test_zero_prompts_native_size_reproduce_open_clip(clip):
    enc = PromptedImageEncoder(clip.visual, prompt_tokens=0, cls_quirk=False)  # without ZegCLIP's CLS quirk
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        patches, global_embedding = enc(x)
        clip.visual.output_tokens = True
        try:
            ref_global, ref_tokens = clip.visual(x)  # tokens: ln_post applied, not projected
        finally:
            clip.visual.output_tokens = False
        inter = clip.visual.forward_intermediates(x, indices=1, normalize_intermediates=True)
    assert patches.shape == (2, 128, 8, 8) and global_embedding.shape == (2, 128)
    # both outputs are L2-normalised, as ZegCLIP's backbone returns them
    assert torch.allclose(global_embedding, F.normalize(ref_global, dim=-1), atol=1e-5)
    assert torch.allclose(global_embedding, F.normalize(clip.encode_image(x), dim=-1), atol=1e-5)
    ours = patches.flatten(2).transpose(1, 2)  # (B, 64, D)
    assert torch.allclose(ours, F.normalize(ref_tokens @ clip.visual.proj, dim=-1), atol=1e-5)
    ref_map = inter["image_intermediates"][-1]  # (B, width, 8, 8) after ln_post, before proj
    expected = F.normalize(torch.einsum("bchw,cd->bdhw", ref_map, clip.visual.proj), dim=1)
    assert torch.allclose(patches, expected, atol=1e-5)


def test_positional_embedding_resize():
    pos = torch.randn(1 + 4 * 4, 8)
    assert torch.equal(resize_positional_embedding(pos, (4, 4), (4, 4)), pos)
    big = resize_positional_embedding(pos, (4, 4), (8, 6))
    assert big.shape == (1 + 48, 8)
    assert torch.equal(big[0], pos[0])  # CLS position untouched
    const = torch.ones(1 + 16, 8)  # a constant field stays constant under bilinear resizing
    assert torch.allclose(resize_positional_embedding(const, (4, 4), (7, 9)), torch.ones(1 + 63, 8))


def test_visual_prompts_larger_input_and_frozen_clip(clip):
    enc = PromptedImageEncoder(clip.visual, prompt_tokens=3, prompt_depth=2)
    assert enc.prompts.shape == (2, 3, 128)
    enc.train()
    assert not enc.visual.training  # CLIP stays in eval mode (no dropout) while prompts train
    x = torch.randn(1, 3, 96, 128)
    patches, global_embedding = enc(x)
    assert patches.shape == (1, 128, 12, 16) and global_embedding.shape == (1, 128)
    (patches.square().mean() + global_embedding.sum()).backward()
    assert enc.prompts.grad is not None and enc.prompts.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in clip.visual.parameters())
    with torch.no_grad():  # prompts matter
        zero = PromptedImageEncoder(clip.visual, prompt_tokens=0)
        assert (zero(x)[1] - enc(x)[1]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="multiple of the CLIP patch size"):
        enc(torch.randn(1, 3, 60, 64))
    with pytest.raises(ValueError, match="depth 7"):
        PromptedImageEncoder(clip.visual, prompt_tokens=2, prompt_depth=7)


@pytest.mark.parametrize("depth", [-1, 2])
def test_text_prompts_start_at_frozen_template_embeddings(clip, tok, depth):
    enc = PromptedTextEncoder(clip, tok, NAMES, TEMPLATES, prompt_tokens=3, prompt_depth=depth)
    # The last min(3, prefix length) context tokens of each template are learnable.
    layers = 4 if depth == -1 else depth
    assert [tuple(p.shape) for p in enc.prompts] == [(layers, 3, 128), (layers, 2, 128), (layers, 0, 128)]
    ref = frozen_template_embeddings(clip, tok, NAMES, TEMPLATES)
    ids = torch.tensor([3, 0, 2])
    emb = enc(ids)
    assert emb.shape == (3, 128) and emb.requires_grad
    assert torch.allclose(emb, ref[ids], atol=1e-5)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_only_text_prompts_receive_gradients(clip, tok):
    enc = PromptedTextEncoder(clip, tok, NAMES, TEMPLATES[:2], prompt_tokens=4)
    enc.train()
    assert not enc.transformer.training
    enc(torch.tensor([0, 1])).square().sum().backward()
    learnable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert learnable == {"prompts.0", "prompts.1"}
    for name, p in enc.named_parameters():
        if name in learnable:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    # After a prompt update the embeddings move away from the frozen ones, also in no-grad mode.
    with torch.no_grad():
        before = enc().clone()
        enc.prompts[0].add_(torch.randn_like(enc.prompts[0]))  # (a constant shift would vanish in LN)
        after = enc()
    assert (before - after).abs().max() > 1e-4  # the no-grad cache was invalidated by the update


def test_text_without_prompts_is_cached_and_frozen(clip, tok):
    enc = PromptedTextEncoder(clip, tok, NAMES, TEMPLATES[:1], prompt_tokens=4, prompt_depth=0)
    assert not enc.has_prompts
    a = enc(torch.tensor([1, 2]))
    assert not a.requires_grad
    assert enc._cache is not None and torch.equal(enc._cache[[1, 2]], a)
    assert torch.allclose(enc(), frozen_template_embeddings(clip, tok, NAMES, TEMPLATES[:1]), atol=1e-5)


def test_text_errors(clip, tok):
    with pytest.raises(ValueError, match="context length 16"):
        PromptedTextEncoder(clip, tok, ["a very very long long long name name name thing"], TEMPLATES[:1])
    enc = PromptedTextEncoder(clip, tok, NAMES, TEMPLATES[:1])
    with pytest.raises(ValueError, match="class_ids"):
        enc(torch.tensor([4]))
    with pytest.raises(ValueError, match="one '\\{\\}'"):
        PromptedTextEncoder(clip, tok, NAMES, ["no slot"])
