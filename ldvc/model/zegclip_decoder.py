"""ZegCLIP's decoder (Zhou et al., CVPR 2023), the baseline, registered as decoder "zegclip".

Implements the baseline of protocol.md ("ZegCLIP settings"): CLASS queries (from the relationship
descriptor) attend to the patch tokens: each of `cfg.layers` layers is self-attention among the
queries, cross-attention from queries to patch tokens, FFN - the ATM/TPN decoder layer ZegCLIP
inherits from SegViT, which is PyTorch's post-norm TransformerDecoderLayer (ReLU FFN).
Mask logits = the head-averaged pre-softmax attention logits, scaled q.k^T with q from the final
class queries and k from the patch tokens, (B, C, h, w), upsampled bilinearly to the input size.

Choices that are ours: the mask logits come from a separate q/k projection pair applied to the
FINAL queries (ZegCLIP reads them from the last layer's cross-attention, i.e. from that layer's
input queries); no deep supervision of intermediate layers; the input projection D -> width is
followed by a LayerNorm.
"""

from __future__ import annotations

import torch
from torch import nn

from ldvc.config import DecoderConfig
from ldvc.model.decoders import check_decoder_inputs, register_decoder, upsample_logits
from ldvc.model.relationship import RelationshipDescriptor


@register_decoder("zegclip")
class ZegCLIPDecoder(nn.Module):
    """patches (B, D, h, w), global (B, D), text (C, D) -> mask logits (B, C, H, W)."""

    def __init__(self, embed_dim: int, cfg: DecoderConfig) -> None:
        super().__init__()
        w = cfg.width
        self.heads = cfg.heads
        self.input_proj = nn.Linear(embed_dim, w)
        self.input_norm = nn.LayerNorm(w)
        self.relationship = RelationshipDescriptor(embed_dim, w)
        self.layers = nn.ModuleList(
            [
                nn.TransformerDecoderLayer(w, cfg.heads, cfg.ffn, cfg.dropout, batch_first=True)
                for _ in range(cfg.layers)
            ]
        )
        self.mask_q = nn.Linear(w, w)
        self.mask_k = nn.Linear(w, w)

    def forward(
        self,
        patches: torch.Tensor,
        global_embedding: torch.Tensor,
        text: torch.Tensor,
        out_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        check_decoder_inputs(patches, global_embedding, text)
        B, _, h, w = patches.shape
        memory = self.input_norm(self.input_proj(patches.flatten(2).transpose(1, 2)))  # (B, N, width)
        queries = self.relationship(text, global_embedding.to(memory.dtype))  # (B, C, width)
        for layer in self.layers:
            queries = layer(queries, memory)
        C, N, d = queries.shape[1], memory.shape[1], memory.shape[2] // self.heads
        q = self.mask_q(queries).reshape(B, C, self.heads, d).transpose(1, 2)  # (B, heads, C, d)
        k = self.mask_k(memory).reshape(B, N, self.heads, d).transpose(1, 2)  # (B, heads, N, d)
        logits = (q @ k.transpose(-1, -2) * d**-0.5).mean(dim=1)  # (B, C, N) head-averaged
        return upsample_logits(logits.reshape(B, C, h, w), out_size)
