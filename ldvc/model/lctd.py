"""LCTD: LDVC's Local Consensus Transformer Decoder, registered as decoder "lctd".

Implements the decoder of LDVC (protocol.md, "What LDVC claims"): the class (text) embeddings are
the anchors - the VISUAL tokens are the queries and the class embeddings the keys/values of the
cross-attention, so visual tokens move toward class embeddings (ZegCLIP does the opposite). The
self-attention over visual tokens is route attention (BiFormer's bi-level routing, see
route_attention.py), which lets tokens of one object attend to each other ("visual consensus").
Class embeddings come from ZegCLIP's relationship descriptor (the text adapter).

Each of `cfg.layers` layers (pre-norm, residual):
    x = x + RouteAttention(LN(x))                       (plain self-attention if route_attention off)
    x = x + CrossAttention(q=LN(x), k=v=LN_kv(classes)) (softmax over classes)
    x = x + FFN(LN(x))
Mask logits: s * cos(LN(x_n), Linear(class_c)) + b  ->  (B, C, h, w), upsampled to the input size.

Shared with the ZegCLIP baseline (ldvc/model/decoder_base.py, ZegCLIP's code): the patch tokens
enter unprojected unless `decoder.input_proj` (ZegCLIP's use_proj), the class queries come from the
relationship descriptor, the upsampling of the logits, and the initialisation scheme
(`decoder.init`): the paper is silent, so LCTD starts as the baseline starts — torch's constructor
defaults with its layers identical deep copies of one (torch_default, what ZegCLIP's training runs),
or ATMSingleHeadSeg.init_weights over independent layers (trunc_normal).

Choices that are ours (the paper is silent): pre-norm layers; the class embeddings stay fixed
across layers (anchors); cosine similarity with a learnable scale (initialised to 10) and bias
initialised to the focal-loss prior log(0.01 / 0.99) (RetinaNet's initialisation for sigmoid focal
losses, so training starts from low scores instead of 0.5 everywhere); `similarity="dot"` gives
width^-0.5 scaled dot products; the cross-attention is torch's nn.MultiheadAttention (its fused
in_proj weight keeps torch's Xavier initialisation under both schemes, as ZegCLIP's init_weights
leaves non-Linear parameters alone).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ldvc.config import DecoderConfig
from ldvc.model.decoder_base import FeedForward, MaskDecoder, finish_init, stack_layers
from ldvc.model.decoders import register_decoder
from ldvc.model.route_attention import RouteAttention

PRIOR_PROBABILITY = 0.01


class LCTDLayer(nn.Module):
    """One LCTD layer on visual tokens (B, N, width) with class anchors (B, C, width)."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        w = cfg.width
        self.norm_self = nn.LayerNorm(w)
        self.self_attn = RouteAttention(
            w, cfg.heads, cfg.route_regions, cfg.route_topk, lepe=cfg.lepe, route=cfg.route_attention
        )
        self.norm_cross = nn.LayerNorm(w)
        self.norm_classes = nn.LayerNorm(w)
        self.cross_attn = nn.MultiheadAttention(w, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.norm_ffn = nn.LayerNorm(w)
        self.ffn = FeedForward(w, cfg.ffn, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, classes: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop(self.self_attn(self.norm_self(x), grid))  # (B, N, width)
        kv = self.norm_classes(classes)  # (B, C, width)
        x = x + self.drop(self.cross_attn(self.norm_cross(x), kv, kv, need_weights=False)[0])
        return x + self.ffn(self.norm_ffn(x))


@register_decoder("lctd")
class LCTDecoder(MaskDecoder):
    """patches (B, D, h, w), global (B, D), text (C, D) -> mask logits (B, C, H, W)."""

    def __init__(
        self, embed_dim: int, cfg: DecoderConfig, similarity: Literal["cosine", "dot"] = "cosine"
    ) -> None:
        super().__init__(embed_dim, cfg)
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"LCTD similarity must be 'cosine' or 'dot', got {similarity!r}")
        w = cfg.width
        self.similarity = similarity
        self.layers = nn.ModuleList(stack_layers(lambda: LCTDLayer(cfg), cfg.layers, cfg.init))
        self.norm = nn.LayerNorm(w)
        self.class_proj = nn.Linear(w, w)
        finish_init(self, cfg.init)
        # after the shared initialisation: the cosine head's scale and focal-prior bias
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(math.log(PRIOR_PROBABILITY / (1 - PRIOR_PROBABILITY))))

    def decode(self, x: torch.Tensor, classes: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, classes, grid)  # (B, N, width): visual tokens move toward the class anchors
        x = self.norm(x)
        anchors = self.class_proj(classes)  # (B, C, width)
        if self.similarity == "cosine":
            sim = F.normalize(anchors, dim=-1) @ F.normalize(x, dim=-1).transpose(1, 2)  # (B, C, N)
            return sim * self.logit_scale.exp().clamp(max=100.0) + self.logit_bias
        return anchors @ x.transpose(1, 2) * x.shape[-1] ** -0.5  # (B, C, N)
