"""Decoder registry: `decoder.type` in params.yaml names an entry here (timm-style, no if-chains)."""

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
