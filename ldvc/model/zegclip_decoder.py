"""ZegCLIP's decoder (Zhou et al., CVPR 2023), the baseline, registered as decoder "zegclip".

Matches ATMSingleHeadSeg / TPN_Decoder / TPN_DecoderLayer / Attention of ZegCLIP's public code
(ZiqinZhou66/ZegCLIP, models/decode_heads/decode_seg.py; configs/voc12/*, configs/coco/*:
num_layers 3, num_heads 8, embed_dims 512, use_proj False), point by point:
1. Patch tokens enter unprojected (use_proj=False; the optional projection lives in the base).
2. Class queries q_c = q_proj([t_c * g ; t_c]) (the relationship descriptor, Linear 2D -> width).
3. Each of `layers` TPN layers: NO self-attention among the queries (TPN_DecoderLayer builds the
   torch TransformerDecoderLayer's `self_attn` and `norm1` but its forward skips them), then
   cross-attention from the queries to the patch tokens with separate q, k, v Linear layers with
   bias, scale head_dim^-0.5, attention dropout, output projection; residual with dropout, post-
   norm (norm2); FFN Linear(width, ffn) -> ReLU -> dropout -> Linear(ffn, width); residual with
   dropout; post-norm (norm3). Dropouts: `decoder.dropout` (ZegCLIP: 0.1 everywhere, torch's
   TransformerDecoderLayer default and the Attention's attn_drop).
4. Each layer also returns its PRE-softmax attention logits averaged over the heads,
   (B, C, N) = mean_h((x_q W_q + b_q)(x_kv W_k + b_k)^T * d^-0.5), computed from the queries as they
   ENTER that layer. The mask logits are the LAST layer's; they are reshaped to the token grid and
   upsampled bilinearly to the input size (base class). No deep supervision: ZegCLIP stacks the
   intermediate layers' maps in training but never passes them to the loss.
5. Initialisation (`decoder.init`, base class): as ZegCLIP's training starts (torch_default): torch's
   constructor defaults for every layer — q/k/v/proj of its Attention and linear1/linear2 of the
   TransformerDecoderLayer are plain nn.Linear — and the `layers` TPN layers identical deep copies of
   one (TPN_Decoder is torch's TransformerDecoder, which deep-copies the layer it is given); the
   last, logits-only layer gets the same q/k as the others. `trunc_normal` = ATMSingleHeadSeg.init_weights.

What this module does not build, and why: the last layer's value/output projections, its norms
and its FFN produce queries that nothing reads (the mask logits come from that layer's q and k),
and no layer's `self_attn`/`norm1` is ever called; ZegCLIP's checkpoints carry those tensors, so
`ldvc.zegclip_import` reports them as skipped, by name, and `ldvc.model.param_count` counts
the parameters both ways ("as ZegCLIP counts" and "used by the forward").
"""

from __future__ import annotations

import torch
from torch import nn

from ldvc.config import DecoderConfig
from ldvc.model.decoder_base import MaskDecoder, finish_init, stack_layers
from ldvc.model.decoders import register_decoder


class CrossAttention(nn.Module):
    """ZegCLIP's `Attention`: queries (B, C, width) attend to tokens (B, N, width)."""

    def __init__(self, width: int, heads: int, dropout: float, logits_only: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (width // heads) ** -0.5
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.logits_only = logits_only
        if not logits_only:
            self.v = nn.Linear(width, width)
            self.attn_drop = nn.Dropout(dropout)
            self.proj = nn.Linear(width, width)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, L, W = x.shape
        return x.reshape(B, L, self.heads, W // self.heads).transpose(1, 2)  # (B, heads, L, d)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        q, k = self._split(self.q(queries)), self._split(self.k(tokens))
        attn = q @ k.transpose(-1, -2) * self.scale  # (B, heads, C, N) pre-softmax
        mask_logits = attn.mean(dim=1)  # (B, C, N), ZegCLIP's attn_save.sum(dim=1) / num_heads
        if self.logits_only:
            return None, mask_logits
        v = self._split(self.v(tokens))  # (B, heads, N, d)
        out = self.attn_drop(attn.softmax(dim=-1)) @ v  # (B, heads, C, d)
        out = out.transpose(1, 2).reshape(queries.shape)  # (B, C, width)
        return self.proj(out), mask_logits


class TPNLayer(nn.Module):
    """One TPN_DecoderLayer: cross-attention -> add & norm2 -> ReLU FFN -> add & norm3 (post-norm)."""

    def __init__(self, cfg: DecoderConfig, logits_only: bool = False) -> None:
        super().__init__()
        w, p = cfg.width, cfg.dropout
        self.cross_attn = CrossAttention(w, cfg.heads, p, logits_only)
        self.logits_only = logits_only
        if not logits_only:
            self.drop_attn = nn.Dropout(p)  # torch's dropout2
            self.norm_attn = nn.LayerNorm(w)  # norm2
            self.ffn = nn.Sequential(nn.Linear(w, cfg.ffn), nn.ReLU(), nn.Dropout(p), nn.Linear(cfg.ffn, w))
            self.drop_ffn = nn.Dropout(p)  # torch's dropout3
            self.norm_ffn = nn.LayerNorm(w)  # norm3

    def logits_only_copy(self, cfg: DecoderConfig) -> TPNLayer:
        """A logits-only layer whose q/k are copies of this layer's (the rest is never read)."""
        layer = TPNLayer(cfg, logits_only=True)
        layer.cross_attn.q.load_state_dict(self.cross_attn.q.state_dict())
        layer.cross_attn.k.load_state_dict(self.cross_attn.k.state_dict())
        return layer

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        out, mask_logits = self.cross_attn(queries, tokens)
        if self.logits_only:
            return None, mask_logits
        x = self.norm_attn(queries + self.drop_attn(out))  # (B, C, width)
        x = self.norm_ffn(x + self.drop_ffn(self.ffn(x)))
        return x, mask_logits


@register_decoder("zegclip")
class ZegCLIPDecoder(MaskDecoder):
    """patches (B, D, h, w), global (B, D), text (C, D) -> mask logits (B, C, H, W)."""

    def __init__(self, embed_dim: int, cfg: DecoderConfig) -> None:
        super().__init__(embed_dim, cfg)
        full = stack_layers(lambda: TPNLayer(cfg), cfg.layers, cfg.init)  # all start alike under torch_default
        # the last layer only produces the mask logits: keep its q/k, drop what nothing reads
        self.layers = nn.ModuleList([*full[:-1], full[-1].logits_only_copy(cfg)])
        finish_init(self, cfg.init)

    def decode(self, tokens: torch.Tensor, queries: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        mask_logits = None
        for layer in self.layers:
            queries, mask_logits = layer(queries, tokens)  # the last layer returns no queries
        assert mask_logits is not None
        return mask_logits  # (B, C, N): the last layer's head-averaged attention logits
