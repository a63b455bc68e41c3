"""Decoder registry: `decoder.type` in params.yaml names an entry here (timm-style, no if-chains).

Contract of a registered decoder class (both LDVC's LCTD and the ZegCLIP baseline follow it):
    cls(embed_dim: int, cfg: DecoderConfig)
    forward(patches (B, D, h, w), global_embedding (B, D), text (C, D), out_size=(H, W) | None)
        -> mask logits (B, C, H, W) (or (B, C, h, w) when out_size is None)
Importing this module registers every decoder (the imports at the bottom), which is what config
validation relies on. Also holds the small pieces both decoders share.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

DECODERS: dict[str, type] = {}


def register_decoder(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if name in DECODERS:
            raise ValueError(f"decoder {name!r} registered twice")
        DECODERS[name] = cls
        return cls

    return deco


class FeedForward(nn.Module):
    """Transformer MLP: Linear(width -> ffn), GELU, dropout, Linear(ffn -> width), dropout."""

    def __init__(self, width: int, ffn: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(width, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, width), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def check_decoder_inputs(patches: torch.Tensor, global_embedding: torch.Tensor, text: torch.Tensor) -> None:
    if patches.dim() != 4 or global_embedding.dim() != 2 or text.dim() != 2:
        raise ValueError(
            f"decoder inputs must be patches (B, D, h, w), global (B, D), text (C, D); got "
            f"{tuple(patches.shape)}, {tuple(global_embedding.shape)}, {tuple(text.shape)}"
        )
    B, D = patches.shape[:2]
    if global_embedding.shape != (B, D) or text.shape[1] != D:
        raise ValueError(
            f"decoder inputs disagree on batch/embedding size: patches {tuple(patches.shape)}, "
            f"global {tuple(global_embedding.shape)}, text {tuple(text.shape)}"
        )


def upsample_logits(logits: torch.Tensor, out_size: tuple[int, int] | None) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, H, W) bilinear (align_corners=False, as mmseg's resize)."""
    if out_size is None or tuple(logits.shape[-2:]) == tuple(out_size):
        return logits
    return F.interpolate(logits, size=tuple(out_size), mode="bilinear", align_corners=False)


# Registration happens on import; these modules import `register_decoder` from here (already defined).
from ldvc.model import lctd, zegclip_decoder  # noqa: E402,F401
