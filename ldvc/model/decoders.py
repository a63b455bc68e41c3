"""Decoder registry: `decoder.type` in params.yaml names an entry here (timm-style, no if-chains).

Contract of a registered decoder class (both LDVC's LCTD and the ZegCLIP baseline follow it, and
both derive from `ldvc.model.decoder_base.MaskDecoder`, which holds their shared preamble):
    cls(embed_dim: int, cfg: DecoderConfig)
    forward(patches (B, D, h, w), global_embedding (B, D), text (C, D), out_size=(H, W) | None)
        -> mask logits (B, C, H, W) (or (B, C, h, w) when out_size is None)
Registration happens when a decoder module is imported; `ldvc.model.build` imports every one of
them, so code that needs the full registry imports it from there (`ldvc.model.build.DECODERS`).
This module imports nothing of ldvc, so decoder modules import it without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable

DECODERS: dict[str, type] = {}


def register_decoder(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if name in DECODERS:
            raise ValueError(f"decoder {name!r} registered twice")
        DECODERS[name] = cls
        return cls

    return deco
