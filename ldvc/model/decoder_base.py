"""What every mask decoder shares: the preamble (patch tokens and class queries), the
initialisation and the final upsampling of the mask logits.

Both registered decoders (LDVC's LCTD and the ZegCLIP baseline) follow ZegCLIP's ATMSingleHeadSeg
(public code ZiqinZhou66/ZegCLIP, models/decode_heads/decode_seg.py) for these parts:
- patch tokens: (B, D, h, w) -> (B, h*w, D); with `decoder.input_proj` (ZegCLIP's `use_proj`)
  a Linear(D, width) + LayerNorm, else none (ZegCLIP's configs: use_proj=False, D = width = 512);
- class queries: the relationship descriptor q_proj([t * g ; t]) (ldvc/model/relationship.py);
- mask logits (B, C, h, w) upsampled bilinearly (align_corners=False) to the input size, before
  any sigmoid (ZegCLIP interpolates to its fixed img_size, 512, the size of every window it sees).

Initialisation (`decoder.init`), the same scheme for both decoders:
- `torch_default` — what ZegCLIP's TRAINING runs. Its train.py (lines 144-150, commit 9ba4bb5)
  builds the segmentor and then calls only `model.backbone.init_weights()` and
  `model.text_encoder.init_weights()`; the decode head's `init_weights` is never called (mmseg
  0.24.0's train_segmentor, mmseg/apis/train.py, calls no init_weights either, and mmcv's BaseModule
  initialises only when asked). So every head layer keeps torch's constructor defaults (Linear:
  kaiming-uniform(a=sqrt(5)) weights and uniform(+-1/sqrt(fan_in)) biases; LayerNorm 1 / 0), except
  what ATMSingleHeadSeg's CONSTRUCTOR does: trunc_normal_(std=0.02) on the use_proj Linear's weight.
  Its decoder layers are `copy.deepcopy`s of ONE layer (torch's nn.TransformerDecoder, `_get_clones`),
  so they start identical; `stack_layers` reproduces that for both decoders.
- `trunc_normal` — ATMSingleHeadSeg.init_weights as written (every nn.Linear weight truncated
  normal std 0.02, bounds +-2, bias 0; LayerNorm 1 / 0) over independently built layers: the
  reading of ZegCLIP's code that this project used before, kept as an option.
LDVC's paper is silent on its decoder's initialisation; it uses the same scheme as the baseline.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ldvc.config import DecoderConfig
from ldvc.model.relationship import RelationshipDescriptor

INIT_STD = 0.02
INIT_SCHEMES = ("torch_default", "trunc_normal")


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


def stack_layers(make_layer: Callable[[], nn.Module], n: int, scheme: str) -> list[nn.Module]:
    """`n` decoder layers: deep copies of one (torch_default: nn.TransformerDecoder's `_get_clones`, as
    ZegCLIP trains) or `n` independently initialised ones (trunc_normal)."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"decoder.init {scheme!r}: choose one of {INIT_SCHEMES}")
    if scheme == "torch_default":
        template = make_layer()
        return [copy.deepcopy(template) for _ in range(n)]
    return [make_layer() for _ in range(n)]


def finish_init(module: nn.Module, scheme: str) -> None:
    """After construction: ATMSingleHeadSeg.init_weights for trunc_normal; torch_default keeps the
    constructors' initialisation (ZegCLIP's training never calls init_weights)."""
    if scheme == "trunc_normal":
        init_weights(module)


def init_weights(module: nn.Module) -> None:
    """ZegCLIP's ATMSingleHeadSeg.init_weights over every sub-module."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=INIT_STD, a=-2.0, b=2.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class FeedForward(nn.Module):
    """Transformer MLP: Linear(width -> ffn), activation, dropout, Linear(ffn -> width), dropout."""

    def __init__(self, width: int, ffn: int, dropout: float = 0.0, activation: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(width, ffn), activation(), nn.Dropout(dropout), nn.Linear(ffn, width), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MaskDecoder(nn.Module):
    """Base of the registered decoders: forward(patches, global, text, out_size) -> (B, C, H, W) logits.

    Subclasses implement `decode(tokens (B, N, width), queries (B, C, width), grid) -> (B, C, N)`."""

    def __init__(self, embed_dim: int, cfg: DecoderConfig) -> None:
        super().__init__()
        w = cfg.width
        if not cfg.input_proj and embed_dim != w:
            raise ValueError(
                f"decoder.input_proj is false (ZegCLIP's use_proj=False) but the CLIP embedding size {embed_dim} "
                f"differs from decoder.width {w}; set decoder.width: {embed_dim} or decoder.input_proj: true"
            )
        if cfg.input_proj:
            proj = nn.Linear(embed_dim, w)
            nn.init.trunc_normal_(proj.weight, std=INIT_STD, a=-2.0, b=2.0)  # ATMSingleHeadSeg.__init__ (use_proj)
            self.input_proj: nn.Module = nn.Sequential(proj, nn.LayerNorm(w))
        else:
            self.input_proj = nn.Identity()
        self.relationship = RelationshipDescriptor(embed_dim, w)

    def decode(self, tokens: torch.Tensor, queries: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        patches: torch.Tensor,
        global_embedding: torch.Tensor,
        text: torch.Tensor,
        out_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        check_decoder_inputs(patches, global_embedding, text)
        B, _, h, w = patches.shape
        tokens = self.input_proj(patches.flatten(2).transpose(1, 2))  # (B, h*w, width)
        queries = self.relationship(text, global_embedding.to(tokens.dtype))  # (B, C, width)
        logits = self.decode(tokens, queries, (h, w))  # (B, C, h*w)
        return upsample_logits(logits.reshape(B, -1, h, w), out_size)
