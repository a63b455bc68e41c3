"""ZegCLIP's checkpoint layout, derived from its public code, and the map onto our `zegclip` model.

ZiqinZhou66/ZegCLIP builds VPTCLIPVisionTransformer (backbone.*), CLIPTextEncoder (text_encoder.*) and
ATMSingleHeadSeg (decode_head.*). `zegclip_layout` lists every key of such a state dict with its shape
and role; `our_name` maps an imported key to the parameter of our `zegclip` Segmentor. Roles:
- "import": learnable and used by ZegCLIP's forward: backbone.prompt_embeddings (1, n, 768) +
  deep_prompt_embeddings (L-1, n, 768) -> image_encoder.prompts; backbone.prompt_proj / prompt_norm;
  decode_head.q_proj -> decoder.relationship.proj; decode_head.decoder_1.layers.<i>.multihead_attn.{q,k,v,proj},
  norm2, linear1, linear2, norm3 -> decoder.layers.<i>.{cross_attn.*, norm_attn, ffn.0, ffn.3, norm_ffn}
  (the last layer: q and k only);
- "unused": carried by the checkpoint (and counted by ZegCLIP's 13.8M / 14.6M) but never used by its
  forward: every layer's self_attn.* and norm1.* (TPN_DecoderLayer skips self-attention), the last
  layer's multihead_attn.{v,proj}, linear1/2, norm2/3 (its output queries are never read);
- "backbone" / "text": the frozen CLIP.
Used by the importer (ldvc/zegclip_import.py) and the parameter counts (param_count.py).
"""

from __future__ import annotations

import re

from torch import nn

from ldvc.config import Config


def zegclip_layout(cfg: Config, clip_model: nn.Module) -> dict[str, tuple[tuple[int, ...], str]]:
    """{ZegCLIP state-dict key: (shape, role)} for the model `cfg` describes on `clip_model`.

    Roles: "import" (learnable, mapped), "unused" (learnable in ZegCLIP, never used by its forward),
    "backbone" / "text" (frozen CLIP), "buffer" (non-parameter state)."""
    visual = clip_model.visual
    width = visual.class_embedding.shape[-1]
    layers = len(visual.transformer.resblocks)
    n = cfg.prompt.visual_tokens
    grid = cfg.data.image_size // visual.conv1.stride[0]
    w, f = cfg.decoder.width, cfg.decoder.ffn
    embed = visual.proj.shape[1]
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for k, t in visual.state_dict().items():
        shape = (1 + grid * grid, width) if k == "positional_embedding" else tuple(t.shape)
        out[f"backbone.{k}"] = (shape, "backbone")
    for k, t in clip_model.state_dict().items():
        if not k.startswith("visual.") and k != "logit_scale" and k != "attn_mask":
            out[f"text_encoder.{k}"] = (tuple(t.shape), "text")
    depth = layers if cfg.prompt.visual_depth == -1 else cfg.prompt.visual_depth
    total_d_layer = depth - 1  # ZegCLIP's name: prompted layers after the first
    out["backbone.prompt_embeddings"] = ((1, n, width), "import")
    if total_d_layer > 0:  # img_encoder.py lines 177-180: built only for deep VPT
        out["backbone.deep_prompt_embeddings"] = ((total_d_layer, n, width), "import")
    out["backbone.prompt_proj.weight"] = ((width, width), "import")
    out["backbone.prompt_proj.bias"] = ((width,), "import")
    # built for every VPT (line 184) but applied only on the deep path (line 312): unused when shallow
    norm_role = "import" if total_d_layer > 0 else "unused"
    out["backbone.prompt_norm.weight"] = ((width,), norm_role)
    out["backbone.prompt_norm.bias"] = ((width,), norm_role)
    out["decode_head.q_proj.weight"] = ((w, 2 * embed), "import")
    out["decode_head.q_proj.bias"] = ((w,), "import")
    last = cfg.decoder.layers - 1
    for i in range(cfg.decoder.layers):
        p = f"decode_head.decoder_1.layers.{i}."
        role = "unused" if i == last else "import"
        out[p + "self_attn.in_proj_weight"] = ((3 * w, w), "unused")
        out[p + "self_attn.in_proj_bias"] = ((3 * w,), "unused")
        out[p + "self_attn.out_proj.weight"] = ((w, w), "unused")
        out[p + "self_attn.out_proj.bias"] = ((w,), "unused")
        for name in ("q", "k"):
            out[p + f"multihead_attn.{name}.weight"] = ((w, w), "import")
            out[p + f"multihead_attn.{name}.bias"] = ((w,), "import")
        for name in ("v", "proj"):
            out[p + f"multihead_attn.{name}.weight"] = ((w, w), role)
            out[p + f"multihead_attn.{name}.bias"] = ((w,), role)
        out[p + "linear1.weight"] = ((f, w), role)
        out[p + "linear1.bias"] = ((f,), role)
        out[p + "linear2.weight"] = ((w, f), role)
        out[p + "linear2.bias"] = ((w,), role)
        for norm in ("norm2", "norm3"):
            out[p + f"{norm}.weight"] = ((w,), role)
            out[p + f"{norm}.bias"] = ((w,), role)
        out[p + "norm1.weight"] = ((w,), "unused")
        out[p + "norm1.bias"] = ((w,), "unused")
    return out


OPTIONAL_BUFFERS = re.compile(r"^decode_head\.loss_decode\.criterion\.empty_weight$")


def our_name(key: str) -> str | None:
    """ldvc parameter name of an imported ZegCLIP key (prompt embeddings are handled apart)."""
    simple = {
        "backbone.prompt_proj.weight": "image_encoder.prompt_proj.weight",
        "backbone.prompt_proj.bias": "image_encoder.prompt_proj.bias",
        "backbone.prompt_norm.weight": "image_encoder.prompt_norm.weight",
        "backbone.prompt_norm.bias": "image_encoder.prompt_norm.bias",
        "decode_head.q_proj.weight": "decoder.relationship.proj.weight",
        "decode_head.q_proj.bias": "decoder.relationship.proj.bias",
    }
    if key in simple:
        return simple[key]
    m = re.match(r"^decode_head\.decoder_1\.layers\.(\d+)\.(.+)$", key)
    if not m:
        return None
    i, rest = m.group(1), m.group(2)
    rest = re.sub(r"^multihead_attn\.", "cross_attn.", rest)
    rest = {"norm2.weight": "norm_attn.weight", "norm2.bias": "norm_attn.bias",
            "norm3.weight": "norm_ffn.weight", "norm3.bias": "norm_ffn.bias",
            "linear1.weight": "ffn.0.weight", "linear1.bias": "ffn.0.bias",
            "linear2.weight": "ffn.3.weight", "linear2.bias": "ffn.3.bias"}.get(rest, rest)
    return f"decoder.layers.{i}.{rest}"
