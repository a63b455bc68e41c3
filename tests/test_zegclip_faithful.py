"""The `zegclip` baseline and the shared image encoder are ZegCLIP's public code, point by point.

Each test compares our modules with an independent re-statement of ZegCLIP's forward semantics
written here from its code's behaviour (models/backbone/img_encoder.py VPTCLIPVisionTransformer,
models/decode_heads/decode_seg.py TPN_DecoderLayer/Attention/ATMSingleHeadSeg), with the weights
moved over by the checkpoint importer's key mapping, so the mapping is checked at the same time.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ldvc.config import config_from_dict, deep_merge, load_config
from ldvc.model.build import build_segmentor
from ldvc.model.clip_loader import create_clip
from ldvc.model.image_encoder import resize_positional_embedding
from ldvc.model.zegclip_layout import zegclip_layout
from ldvc.zegclip_import import import_state

CLASSES = ["red", "blue", "striped red", "dotted teal", "yellow"]


def _cfg(**overrides):
    raw = load_config("params.yaml").to_dict()
    raw = deep_merge(raw, {"ablation": {}, "cross_dataset": {}, "decoder": {"type": "zegclip", "input_proj": False},
                           "prompt": {"text_depth": 0}})  # ZegCLIP's configs: use_proj False
    raw = deep_merge(raw, overrides)
    return config_from_dict(raw)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    clip = create_clip("ldvc-tiny-vit")
    cfg = _cfg(decoder={"type": "zegclip", "layers": 3, "dropout": 0.1})
    return cfg, clip


def _zegclip_state(cfg, clip, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in ZegCLIP's layout: random learnable/unused tensors, frozen CLIP as ours."""
    g = torch.Generator().manual_seed(seed)
    visual = clip.visual
    grid = cfg.data.image_size // visual.conv1.stride[0]
    frozen = {f"backbone.{k}": v.clone() for k, v in visual.state_dict().items()}
    frozen["backbone.positional_embedding"] = resize_positional_embedding(
        visual.positional_embedding.detach(), tuple(visual.grid_size), (grid, grid))
    frozen.update({f"text_encoder.{k}": v.clone() for k, v in clip.state_dict().items()
                   if not k.startswith("visual.") and k != "logit_scale"})
    state = {}
    for key, (shape, role) in zegclip_layout(cfg, clip).items():
        if role in ("import", "unused"):
            t = torch.randn(shape, generator=g) * 0.05
            if key.endswith("norm.weight") or re.search(r"norm\d\.weight$", key):
                t = 1.0 + t
            state[key] = t
        else:
            state[key] = frozen[key]
    return state


class RefCrossAttention(nn.Module):
    """ZegCLIP's Attention semantics: q/k/v/proj with bias, softmax over the keys, head-averaged logits."""

    def __init__(self, state: dict[str, torch.Tensor], prefix: str, heads: int) -> None:
        super().__init__()
        self.s, self.p, self.heads = state, prefix, heads

    def lin(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.s[f"{self.p}{name}.weight"], self.s[f"{self.p}{name}.bias"])

    def forward(self, xq: torch.Tensor, xk: torch.Tensor):  # batch-first (B, L, C)
        B, Nq, C = xq.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(B, -1, h, C // h).permute(0, 2, 1, 3)

        q, k, v = split(self.lin("q", xq)), split(self.lin("k", xk)), split(self.lin("v", xk))
        attn = q @ k.transpose(-2, -1) * (C // h) ** -0.5
        saved = attn.sum(dim=1) / h
        x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(B, Nq, C)
        return self.lin("proj", x), saved


def ref_decoder(state, cfg, patches, global_embedding, text):
    """ATMSingleHeadSeg.forward (use_proj False, one stage), eval mode: the last layer's logits."""
    tokens = patches.flatten(2).transpose(1, 2)  # (B, N, D), already L2-normalised
    t = text.unsqueeze(0).expand(patches.shape[0], -1, -1)
    q = F.linear(torch.cat([global_embedding[:, None] * t, t], -1), state["decode_head.q_proj.weight"],
                 state["decode_head.q_proj.bias"])
    logits = None
    for i in range(cfg.decoder.layers):
        p = f"decode_head.decoder_1.layers.{i}."
        out, logits = RefCrossAttention(state, p + "multihead_attn.", cfg.decoder.heads)(q, tokens)
        x = F.layer_norm(q + out, (q.shape[-1],), state[p + "norm2.weight"], state[p + "norm2.bias"])
        ff = F.linear(F.relu(F.linear(x, state[p + "linear1.weight"], state[p + "linear1.bias"])),
                      state[p + "linear2.weight"], state[p + "linear2.bias"])
        q = F.layer_norm(x + ff, (x.shape[-1],), state[p + "norm3.weight"], state[p + "norm3.bias"])
    B, _, h, w = patches.shape
    return logits.reshape(B, -1, h, w)


def ref_encoder(state, clip, images):
    """VPTCLIPVisionTransformer.forward with total_d_layer = layers - 1, eval mode."""
    v = clip.visual
    x = v.conv1(images)
    B, C, H, W = x.shape
    x = x.reshape(B, C, -1).permute(0, 2, 1)
    x = torch.cat([v.class_embedding + torch.zeros(B, 1, C), x], dim=1)
    pos = resize_positional_embedding(v.positional_embedding, tuple(v.grid_size), (H, W))
    pos = torch.cat([(pos[0] + v.class_embedding)[None], pos[1:]], dim=0)  # the CLS quirk
    x = v.ln_pre(x + pos)

    def proj(p: torch.Tensor) -> torch.Tensor:
        return F.linear(p, state["backbone.prompt_proj.weight"], state["backbone.prompt_proj.bias"])

    n = state["backbone.prompt_embeddings"].shape[1]
    x = torch.cat([x[:, :1], proj(state["backbone.prompt_embeddings"]).expand(B, -1, -1), x[:, 1:]], dim=1)
    for i, blk in enumerate(v.transformer.resblocks):
        if i > 0:
            deep = proj(state["backbone.deep_prompt_embeddings"][i - 1]).expand(B, -1, -1)
            x = torch.cat([x[:, :1], deep, x[:, 1 + n:]], dim=1)
        x = blk(x)
    x = F.layer_norm(x, (C,), state["backbone.prompt_norm.weight"], state["backbone.prompt_norm.bias"], eps=1e-6)
    x = v.ln_post(x) @ v.proj
    g = x[:, 0] / x[:, 0].norm(dim=-1, keepdim=True)
    vis = x[:, -(H * W):].reshape(B, H, W, -1).permute(0, 3, 1, 2)
    return vis / vis.norm(dim=1, keepdim=True), g


def test_encoder_and_decoder_equal_zegclip_semantics(tiny):
    cfg, clip = tiny
    model = build_segmentor(cfg, clip, CLASSES).eval()
    state = _zegclip_state(cfg, clip)
    report = import_state(cfg, state, model, clip, check_clip=True)
    assert report["clip_max_diff"] == 0.0
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        patches, g = model.image_encoder(images)
        ref_patches, ref_g = ref_encoder(state, clip, images)
        torch.testing.assert_close(patches, ref_patches, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(g, ref_g, atol=1e-5, rtol=1e-4)
        text = model.text_encoder(None)
        ours = model.decoder(patches, g, text, out_size=None)
        ref = ref_decoder(state, cfg, ref_patches, ref_g, text)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
        # the segmentor upsamples those logits bilinearly to the input size
        full = model(images)
        torch.testing.assert_close(full, F.interpolate(ref, size=(64, 64), mode="bilinear", align_corners=False),
                                   atol=1e-5, rtol=1e-4)


def test_decoder_has_no_query_self_attention_and_reads_the_last_layer_logits(tiny):
    cfg, clip = tiny
    model = build_segmentor(cfg, clip, CLASSES).eval()
    names = [n for n, _ in model.decoder.named_parameters()]
    assert not any("self_attn" in n or "norm1" in n for n in names)
    last = model.decoder.layers[-1]
    assert last.logits_only and not hasattr(last.cross_attn, "v") and not hasattr(last, "ffn")
    # queries are independent of each other: without self-attention, removing a class leaves the
    # other classes' logits unchanged (ZegCLIP's TPN layers skip self-attention)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        all_logits = model(images, torch.tensor([0, 1, 2]))
        two = model(images, torch.tensor([0, 2]))
    torch.testing.assert_close(all_logits[:, [0, 2]], two, atol=1e-5, rtol=1e-4)


def test_prompt_dropout_and_decoder_dropout_follow_train_mode(tiny):
    cfg, clip = tiny
    cfg = _cfg(decoder={"type": "zegclip", "layers": 3, "dropout": 0.1}, encoder={"prompt_dropout": 0.5})
    model = build_segmentor(cfg, clip, CLASSES)
    images = torch.randn(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        a, b = model(images), model(images)
    torch.testing.assert_close(a, b)
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        c = model(images)
    assert not torch.allclose(a, c), "prompt dropout / decoder dropout inactive in training"
    assert not model.image_encoder.visual.training, "the frozen CLIP must stay in eval mode"


def test_drop_path_changes_training_outputs_only_when_enabled(tiny):
    _, clip = tiny
    images = torch.randn(2, 3, 64, 64)
    outs = {}
    for rate in (0.0, 0.5):
        cfg = _cfg(encoder={"drop_path": rate, "prompt_dropout": 0.0}, decoder={"type": "zegclip", "dropout": 0.0})
        torch.manual_seed(0)  # identical prompts/decoder for both rates
        model = build_segmentor(cfg, clip, CLASSES).train()
        torch.manual_seed(3)
        with torch.no_grad():
            outs[rate] = model(images)
        model.eval()
        with torch.no_grad():
            outs[f"eval{rate}"] = model(images)
    torch.testing.assert_close(outs["eval0.0"], outs[0.0])  # no dropout anywhere: train == eval
    torch.testing.assert_close(outs["eval0.0"], outs["eval0.5"])  # eval ignores drop-path
    assert not torch.allclose(outs[0.5], outs["eval0.5"])


def test_zero_prompt_encoder_without_quirk_is_open_clip(tiny):
    _, clip = tiny
    cfg = _cfg(prompt={"visual_tokens": 0, "text_depth": 0}, encoder={"cls_quirk": False})
    model = build_segmentor(cfg, clip, CLASSES).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _, g = model.image_encoder(images)
        expected = F.normalize(clip.encode_image(images), dim=-1)
    torch.testing.assert_close(g, expected, atol=1e-5, rtol=1e-4)
