"""Model assembly: a validated Config + class names -> the Segmentor (and its frozen CLIP).

`build_model` is what training, evaluation, prediction and the checkpoint importer call: it seeds
torch from project.seed before building, so every process starts from identical decoder/prompt
weights and a CLIP built without a weights file (random init, tests only) is the same random CLIP
everywhere. Importing this module registers every decoder (the decoder modules' imports below).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from ldvc.config import Config
from ldvc.model import lctd, zegclip_decoder  # noqa: F401  (registers the decoders)
from ldvc.model.decoders import DECODERS
from ldvc.model.image_encoder import PromptedImageEncoder
from ldvc.model.segmentor import Segmentor
from ldvc.model.text_encoder import PromptedTextEncoder
from ldvc.seeding import mix_seed

MODEL_SEED_SALT = 0x1D17

__all__ = ["DECODERS", "build_clip", "build_model", "build_segmentor"]


def build_segmentor(
    cfg: Config,
    clip_model: nn.Module,
    class_names: Sequence[str],
    tokenizer: Callable[..., torch.Tensor] | None = None,
) -> Segmentor:
    """The model of `cfg` on `clip_model` (frozen in place) for `class_names` (all classes).

    `tokenizer` defaults to open_clip's tokenizer of cfg.clip.model.
    """
    names = list(class_names)
    if not names or any(not isinstance(n, str) or not n.strip() for n in names):
        raise ValueError("build_segmentor: class_names must be a non-empty list of non-empty strings")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"build_segmentor: duplicate class names {dupes}")
    d, e = cfg.decoder, cfg.encoder
    if d.type not in DECODERS:
        raise ValueError(f"decoder.type {d.type!r} is not registered; choose one of {sorted(DECODERS)}")
    image_encoder = PromptedImageEncoder(
        clip_model.visual, cfg.prompt.visual_tokens, cfg.prompt.visual_depth, prompt_proj=e.prompt_proj,
        prompt_dropout=e.prompt_dropout, prompt_norm=e.prompt_norm, drop_path=e.drop_path, cls_quirk=e.cls_quirk,
    )
    if d.route_attention and d.type == "lctd":
        h, w = image_encoder.grid((cfg.data.image_size, cfg.data.image_size))
        if h % d.route_regions or w % d.route_regions:
            raise ValueError(
                f"decoder.route_regions {d.route_regions} does not divide the {h}x{w} token grid of "
                f"data.image_size {cfg.data.image_size}; pick a divisor of {h}"
            )
    if tokenizer is None:
        from ldvc.model.clip_loader import tokenizer as clip_tokenizer

        tokenizer = clip_tokenizer(cfg.clip.model)
    text_encoder = PromptedTextEncoder(
        clip_model, tokenizer, names, cfg.prompt.templates, cfg.prompt.text_tokens, cfg.prompt.text_depth
    )
    decoder = DECODERS[d.type](image_encoder.embed_dim, d)
    return Segmentor(image_encoder, text_encoder, decoder)


def build_clip(cfg: Config, clip_weights: str | Path | None) -> nn.Module:
    """The frozen CLIP of `cfg` (weights file or random), built with the activation its weights were
    trained with (cfg.clip.activation, or what the weights tell: ldvc/model/clip_activation.py), e.g.
    QuickGELU for OpenAI's, which open_clip's `ViT-B-16` config alone would build as GELU."""
    from ldvc.model.clip_activation import resolve_activation
    from ldvc.model.clip_loader import create_clip

    activation, _ = resolve_activation(cfg.clip.model, cfg.clip.pretrained, cfg.clip.activation, clip_weights)
    return create_clip(cfg.clip.model, clip_weights, activation)


def build_model(cfg: Config, clip_weights: str | Path | None, class_names: Sequence[str]) -> Segmentor:
    """CLIP (`build_clip`) + segmentor, with the torch RNG seeded from project.seed."""
    torch.manual_seed(mix_seed(cfg.project.seed, MODEL_SEED_SALT))  # also a random CLIP is the same everywhere
    return build_segmentor(cfg, build_clip(cfg, clip_weights), list(class_names))
