"""The ZegCLIP baseline of a preset: ONE definition, used wherever a "ZegCLIP" model is built from an
LDVC configuration (benchmarks/setups.py, the cost table's counted rows, the tables' `zegclip`
ablation variant in params.yaml, the importer and the parameter counts via ldvc/presets.py).

ZegCLIP (ZiqinZhou66/ZegCLIP) is our image encoder (deep VPT, shared with LDVC) + ZegCLIP's decoder
(`decoder.type: zegclip`) + FIXED class text embeddings: its configs load the class embeddings of
CLIP's text encoder from a file (configs/_base_/datasets/text_embedding/*.npy) and train no text
prompt. In this project that is `prompt.text_depth: 0` (no learnable text prompt; the embeddings
are computed once per vocabulary and cached, so no text encoder runs in a training step). A model
with `decoder.type: zegclip` but LDVC's text prompts is NOT the baseline: its training step pays a
text encoder with gradients that ZegCLIP never runs (issue 17, item 10).

This module imports only ldvc.config, so every layer (reports, benchmarks, presets) can use it.
"""

from __future__ import annotations

from typing import Any

from ldvc.config import Config, config_from_dict, deep_merge

# The partial parameter tree that turns a preset (or params.yaml) into its ZegCLIP baseline.
ZEGCLIP_BASELINE: dict[str, dict[str, Any]] = {"decoder": {"type": "zegclip"}, "prompt": {"text_depth": 0}}


def zegclip_baseline_overlay() -> dict[str, dict[str, Any]]:
    """A fresh copy of `ZEGCLIP_BASELINE` (callers may mutate it)."""
    return deep_merge({}, ZEGCLIP_BASELINE)


def is_zegclip_baseline(cfg: Config | dict[str, Any]) -> bool:
    """Whether a config (typed or a raw parameter tree) builds the ZegCLIP baseline exactly."""
    d = cfg.to_dict() if isinstance(cfg, Config) else cfg
    return (d.get("decoder", {}).get("type") == "zegclip"
            and (d.get("prompt", {}).get("text_depth") == 0 or d.get("prompt", {}).get("text_tokens") == 0))


def zegclip_baseline(cfg: Config, variant: bool = True) -> Config:
    """`cfg` as the ZegCLIP baseline: decoder.type zegclip and no text prompts, everything else kept."""
    return config_from_dict(deep_merge(cfg.to_dict(), ZEGCLIP_BASELINE), variant=variant)


def method_config(cfg: Config, method: str) -> Config:
    """`cfg` for method "lctd" (LDVC: as configured, with decoder.type lctd) or "zegclip" (the baseline)."""
    if method == "zegclip":
        return zegclip_baseline(cfg)
    if method == "lctd":
        return config_from_dict(deep_merge(cfg.to_dict(), {"decoder": {"type": "lctd"}}), variant=True)
    raise ValueError(f"method {method!r}: use 'lctd' (LDVC) or 'zegclip' (the ZegCLIP baseline)")
