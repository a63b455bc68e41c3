"""The `zegclip` baseline and the shared image encoder are ZegCLIP's public code, point by point.

The reference forward below is re-stated from ZegCLIP's code (ZiqinZhou66/ZegCLIP, commit 9ba4bb5) and
computed from the STATE TENSORS of a checkpoint in ZegCLIP's key layout only: no open_clip block, no
ldvc helper, no ldvc module is called by it. Its pieces and their sources:
- image side: models/backbone/img_encoder.py VPTCLIPVisionTransformer.forward (lines 223-280) and
  forward_deep_prompt (lines 282-316): conv1, CLS quirk (line 231), positional embedding resized
  bilinearly (lines 232-233; at load time lines 209-215), ln_pre, prompts through the shared
  prompt_proj between CLS and patches, prompt_norm only on the deep path, ln_post, proj, L2 norm;
- every transformer block: models/backbone/utils.py ResidualAttentionBlock (lines 143-170): pre-norm
  multi-head attention (nn.MultiheadAttention's packed in_proj, softmax(q k^T / sqrt(d)) v, out_proj)
  and an MLP with QuickGELU x * sigmoid(1.702 x) (lines 124-126, 151);
- text side: models/backbone/text_encoder.py CLIPTextEncoder.forward (token + positional embedding,
  causal mask, ln_final, the end-of-text token (argmax id) @ text_projection) and
  models/segmentor/zegclip.py text_embedding (lines 162-165: L2 norm) / multi-prompt mean (lines 203-209);
- decoder: models/decode_heads/decode_seg.py TPN_DecoderLayer (lines 62-81), Attention (lines 83-119),
  ATMSingleHeadSeg.get_qs / forward.
The model under test is built on a CLIP with QuickGELU, as ZegCLIP's; the weights move over by the
checkpoint importer's key mapping, so the mapping is checked at the same time.
"""

from __future__ import annotations

import re

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ldvc.config import config_from_dict, deep_merge, load_config
from ldvc.model.build import build_segmentor
from ldvc.model.clip_loader import create_clip
from ldvc.model.zegclip_layout import zegclip_layout
from ldvc.zegclip_import import import_state

CLASSES = ["red", "blue", "striped red", "dotted teal", "yellow"]
LN_EPS = 1e-5  # CLIP's LayerNorm (torch default); prompt_norm uses 1e-6


def _cfg(**overrides):
    raw = load_config("params.yaml").to_dict()
    raw = deep_merge(raw, {"ablation": {}, "cross_dataset": {}, "decoder": {"type": "zegclip", "input_proj": False},
                           "prompt": {"text_depth": 0}})  # ZegCLIP's configs: use_proj False
    raw.pop("open_vocab", None)  # no evaluation targets: the model alone is under test
    raw = deep_merge(raw, overrides)
    return config_from_dict(raw)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    clip = create_clip("ldvc-tiny-vit", activation="quick_gelu")  # ZegCLIP's CLIP is OpenAI's: QuickGELU
    cfg = _cfg(decoder={"type": "zegclip", "layers": 3, "dropout": 0.1})
    return cfg, clip


def ref_resize_pos(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """img_encoder.py lines 209-215 / 231-233: CLS position kept, the rest bilinear (align_corners unset)."""
    native = int(round((pos.shape[0] - 1) ** 0.5))
    C = pos.shape[1]
    if native == grid:
        return pos
    spatial = F.interpolate(pos[1:].reshape(1, native, native, C).permute(0, 3, 1, 2), size=(grid, grid),
                            mode="bilinear")
    return torch.cat([pos[:1], spatial.reshape(C, grid * grid).permute(1, 0)], dim=0)


def _zegclip_state(cfg, clip, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in ZegCLIP's layout: random learnable/unused tensors, the frozen CLIP's tensors as
    ZegCLIP's init_weights stores them (positional embedding resized to the training grid)."""
    g = torch.Generator().manual_seed(seed)
    visual = clip.visual
    grid = cfg.data.image_size // visual.conv1.stride[0]
    frozen = {f"backbone.{k}": v.detach().clone() for k, v in visual.state_dict().items()}
    frozen["backbone.positional_embedding"] = ref_resize_pos(visual.positional_embedding.detach(), grid)
    frozen.update({f"text_encoder.{k}": v.detach().clone() for k, v in clip.state_dict().items()
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


def _ln(state, prefix: str, x: torch.Tensor, eps: float = LN_EPS) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), state[prefix + ".weight"], state[prefix + ".bias"], eps)


def ref_block(state, p: str, x: torch.Tensor, heads: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """ResidualAttentionBlock on (L, B, C), sequence-first as ZegCLIP runs it (utils.py lines 143-170)."""
    L, B, C = x.shape
    d = C // heads
    h = _ln(state, p + "ln_1", x)
    q, k, v = F.linear(h, state[p + "attn.in_proj_weight"], state[p + "attn.in_proj_bias"]).chunk(3, dim=-1)

    def split(t: torch.Tensor) -> torch.Tensor:  # (L, B, C) -> (B * heads, L, d), nn.MultiheadAttention's order
        return t.reshape(L, B * heads, d).transpose(0, 1)

    attn = (split(q) * d ** -0.5) @ split(k).transpose(1, 2)  # (B * heads, L, L)
    if mask is not None:
        attn = attn + mask
    out = (attn.softmax(dim=-1) @ split(v)).transpose(0, 1).reshape(L, B, C)
    x = x + F.linear(out, state[p + "attn.out_proj.weight"], state[p + "attn.out_proj.bias"])
    h = F.linear(_ln(state, p + "ln_2", x), state[p + "mlp.c_fc.weight"], state[p + "mlp.c_fc.bias"])
    h = h * torch.sigmoid(1.702 * h)  # QuickGELU (utils.py lines 124-126)
    return x + F.linear(h, state[p + "mlp.c_proj.weight"], state[p + "mlp.c_proj.bias"])


def ref_encoder(state, images: torch.Tensor, heads: int, deep: bool = True):
    """VPTCLIPVisionTransformer.forward, eval mode: total_d_layer = layers - 1 (deep) or 0 (shallow)."""
    x = F.conv2d(images, state["backbone.conv1.weight"], stride=state["backbone.conv1.weight"].shape[-1])
    B, C, H, W = x.shape
    x = x.reshape(B, C, -1).permute(0, 2, 1)
    cls = state["backbone.class_embedding"]
    x = torch.cat([cls + torch.zeros(B, 1, C), x], dim=1)
    pos = ref_resize_pos(state["backbone.positional_embedding"], H)
    pos = torch.cat([(pos[0] + cls)[None], pos[1:]], dim=0)  # line 231: the CLS quirk
    x = _ln(state, "backbone.ln_pre", x + pos)

    def proj(p: torch.Tensor) -> torch.Tensor:
        return F.linear(p, state["backbone.prompt_proj.weight"], state["backbone.prompt_proj.bias"])

    n = state["backbone.prompt_embeddings"].shape[1]
    x = torch.cat([x[:, :1], proj(state["backbone.prompt_embeddings"]).expand(B, -1, -1), x[:, 1:]], dim=1)
    x = x.permute(1, 0, 2)  # (L, B, C)
    layers = sum(1 for k in state if re.match(r"backbone\.transformer\.resblocks\.\d+\.ln_1\.weight$", k))
    for i in range(layers):
        if deep and i > 0:
            prompts = proj(state["backbone.deep_prompt_embeddings"][i - 1]).expand(B, -1, -1).permute(1, 0, 2)
            x = torch.cat([x[:1], prompts, x[1 + n:]], dim=0)
        x = ref_block(state, f"backbone.transformer.resblocks.{i}.", x, heads)
    x = x.permute(1, 0, 2)
    if deep:  # forward_deep_prompt line 312; the shallow path (lines 250-256) has no prompt_norm
        x = _ln(state, "backbone.prompt_norm", x, eps=1e-6)
    x = _ln(state, "backbone.ln_post", x) @ state["backbone.proj"]
    g = x[:, 0] / x[:, 0].norm(dim=-1, keepdim=True)
    vis = x[:, -(H * W):].reshape(B, H, W, -1).permute(0, 3, 1, 2)
    return vis / vis.norm(dim=1, keepdim=True), g


def ref_text(state, tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """CLIPTextEncoder.forward then zegclip.py text_embedding: (N, L) token ids -> (N, D) L2-normalised."""
    L = tokens.shape[1]
    x = state["text_encoder.token_embedding.weight"][tokens] + state["text_encoder.positional_embedding"][:L]
    mask = torch.full((L, L), float("-inf")).triu_(1)  # causal (CLIP's build_attention_mask)
    x = x.permute(1, 0, 2)
    layers = sum(1 for k in state if re.match(r"text_encoder\.transformer\.resblocks\.\d+\.ln_1\.weight$", k))
    for i in range(layers):
        x = ref_block(state, f"text_encoder.transformer.resblocks.{i}.", x, heads, mask)
    x = _ln(state, "text_encoder.ln_final", x.permute(1, 0, 2))
    x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ state["text_encoder.text_projection"]
    return x / x.norm(dim=-1, keepdim=True)


def ref_class_embeddings(state, names: list[str], templates: list[str], heads: int, context: int) -> torch.Tensor:
    """One template: its embeddings; several: the mean of the normalised ones, renormalised (lines 203-209)."""
    tokenize = open_clip.get_tokenizer("ldvc-tiny-vit")
    per = torch.stack([ref_text(state, tokenize([t.format(c) for c in names], context_length=context), heads)
                       for t in templates], dim=1)  # (C, T, D)
    mean = per.mean(dim=1)
    return mean / mean.norm(dim=-1, keepdim=True)


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


def _heads(clip) -> tuple[int, int]:
    return clip.visual.transformer.resblocks[0].attn.num_heads, clip.transformer.resblocks[0].attn.num_heads


@pytest.mark.parametrize("size", [64, 96])  # 96 px: a 12x12 grid, the positional embedding is resized
def test_encoder_and_decoder_equal_zegclip_semantics(tiny, size):
    cfg, clip = tiny
    cfg = _cfg(decoder={"type": "zegclip", "layers": 3, "dropout": 0.1},
               prompt={"text_depth": 0, "templates": ["a photo of a {}.", "a {} in the scene."]})
    model = build_segmentor(cfg, clip, CLASSES).eval()
    state = _zegclip_state(cfg, clip)
    report = import_state(cfg, state, model, clip, check_clip=True)
    assert report["clip_max_diff"] == 0.0
    vheads, theads = _heads(clip)
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        patches, g = model.image_encoder(images)
        ref_patches, ref_g = ref_encoder(state, images, vheads)
        torch.testing.assert_close(patches, ref_patches, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(g, ref_g, atol=1e-5, rtol=1e-4)
        text = model.text_encoder(None)
        ref_txt = ref_class_embeddings(state, CLASSES, cfg.prompt.templates, theads,
                                       state["text_encoder.positional_embedding"].shape[0])
        torch.testing.assert_close(text, ref_txt, atol=1e-5, rtol=1e-4)
        ours = model.decoder(patches, g, text, out_size=None)
        ref = ref_decoder(state, cfg, ref_patches, ref_g, ref_txt)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
        # the segmentor upsamples those logits bilinearly to the input size
        full = model(images)
        torch.testing.assert_close(full, F.interpolate(ref, size=(size, size), mode="bilinear", align_corners=False),
                                   atol=1e-5, rtol=1e-4)


def test_shallow_prompts_skip_prompt_norm_as_zegclip(tiny):
    """total_d_layer = 0 (visual_depth 1): the prompts travel through every layer and no prompt_norm is
    applied (img_encoder.py lines 250-256); ZegCLIP's checkpoint still carries prompt_norm (unused)."""
    _, clip = tiny
    cfg = _cfg(prompt={"visual_depth": 1, "text_depth": 0})
    model = build_segmentor(cfg, clip, CLASSES).eval()
    assert not any("prompt_norm" in n for n, _ in model.named_parameters())
    state = _zegclip_state(cfg, clip)
    assert "backbone.deep_prompt_embeddings" not in state
    report = import_state(cfg, state, model, clip, check_clip=True)
    assert "backbone.prompt_norm.weight" in report["skipped"]
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        patches, g = model.image_encoder(images)
        ref_patches, ref_g = ref_encoder(state, images, _heads(clip)[0], deep=False)
    torch.testing.assert_close(patches, ref_patches, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(g, ref_g, atol=1e-5, rtol=1e-4)


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


def test_prompt_dropout_draws_a_mask_per_sample_in_training_only(tiny):
    """ZegCLIP applies the prompt dropout AFTER expanding the prompts to the batch
    (img_encoder.py line 242: prompt_dropout(prompt_proj(p).expand(B, -1, -1)); line 289 for deep
    prompts), so two identical images of one batch see different prompts in training. Decoder dropout
    is off here: only the prompt dropout can make them differ."""
    _, clip = tiny
    cfg = _cfg(decoder={"type": "zegclip", "layers": 3, "dropout": 0.0}, encoder={"prompt_dropout": 0.5})
    model = build_segmentor(cfg, clip, CLASSES)
    images = torch.randn(1, 3, 64, 64).expand(2, -1, -1, -1)  # the same image twice in one batch
    model.eval()
    with torch.no_grad():
        a, b = model(images), model(images)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[0], a[1])
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        patches, _ = model.image_encoder(images)
    assert not torch.allclose(patches[0], patches[1]), "prompt dropout drew one mask for the whole batch"
    assert not model.image_encoder.visual.training, "the frozen CLIP must stay in eval mode"


def test_decoder_dropout_follows_train_mode(tiny):
    _, clip = tiny
    cfg = _cfg(decoder={"type": "zegclip", "layers": 3, "dropout": 0.5}, encoder={"prompt_dropout": 0.0})
    model = build_segmentor(cfg, clip, CLASSES)
    images = torch.randn(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        a = model(images)
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        c = model(images)
    assert not torch.allclose(a, c), "decoder dropout inactive in training"


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
