"""Which MLP activation a CLIP must be built with: the one its weights were trained with.

OpenAI's CLIP uses QuickGELU, x * sigmoid(1.702 x) (openai/CLIP clip/model.py `QuickGELU`; ZegCLIP
re-states it in models/backbone/utils.py and trains on it). open_clip's `ViT-B-16` config has no
`quick_gelu` key, so `open_clip.create_model("ViT-B-16", pretrained=<file>)` builds nn.GELU: with
OpenAI's weights every image and text feature then differs from the paper's by ~3e-2 / ~6e-2 (max
abs, measured). open_clip 3.3 only WARNS for `pretrained="openai"` and says nothing for a file.
The ecosystem's convention is open_clip's `-quickgelu` model names (`ViT-B-16-quickgelu`, whose
tags include `openai`), or `force_quick_gelu=True`.

The rule here (`resolve_activation`), never a silent guess:
1. Facts about the weights decide: the pipeline's own CLIP (trained by the clip stage with the
   model config's activation); an open_clip pretrained tag (its registry entry's `quick_gelu`, e.g.
   ViT-B-16/openai: True, ViT-B-16/laion2b_s34b_b88k: False); a local file that is OpenAI's own
   TorchScript archive (only OpenAI releases CLIP as TorchScript; open_clip's loader treats such an
   archive as OpenAI's) or whose sha256 is that of a file OpenAI released (OpenAI's download URL
   names the file's sha256, which openai/CLIP clip/clip.py `_download` verifies; open_clip's
   registry lists those URLs).
2. Otherwise the model name decides when it declares QuickGELU (`-quickgelu` configs), or when every
   weight release open_clip knows for that architecture uses the config's activation (custom
   configs such as ldvc-tiny-vit have none).
3. Otherwise (e.g. a local `ViT-B-16.safetensors` of unknown origin) `clip.activation: auto` is an
   error that names the two choices.
An explicit `clip.activation` (quick_gelu | gelu) is used as given, unless a fact of step 1 or the
model name contradicts it (an error: e.g. gelu with OpenAI's weights).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import open_clip

from ldvc.files import sha256_file
from ldvc.model.clip_loader import ACTIVATIONS, is_torchscript_archive, register_configs

OPENAI_URL = re.compile(r"^https://openaipublic\.azureedge\.net/clip/models/([0-9a-f]{64})/")


class ActivationError(ValueError):
    """The CLIP activation cannot be known, or the one asked for contradicts the weights."""


def _name(quick_gelu: bool) -> str:
    return "quick_gelu" if quick_gelu else "gelu"


def config_activation(model: str) -> str:
    """The activation open_clip's config of `model` builds (`quick_gelu` key, default GELU)."""
    register_configs()
    cfg = open_clip.get_model_config(model)
    if cfg is None:
        raise ActivationError(f"clip.model {model!r} is not an open_clip model config")
    return _name(bool(cfg.get("quick_gelu", False)))


@lru_cache(maxsize=1)
def openai_releases() -> dict[str, str]:
    """{sha256: "model/tag"} of the CLIP files OpenAI released, from open_clip's pretrained registry."""
    register_configs()
    out: dict[str, str] = {}
    for model, tag in open_clip.list_pretrained():
        match = OPENAI_URL.match(open_clip.get_pretrained_cfg(model, tag).get("url", ""))
        name = f"{model}/{tag}"
        if match and len(name) < len(out.get(match.group(1), name + "-")):  # ViT-B-16, not its -quickgelu alias
            out[match.group(1)] = name
    return out


def _release_activations(model: str) -> set[str]:
    """The activations of every pretrained release open_clip knows for `model`."""
    return {_name(bool(open_clip.get_pretrained_cfg(model, t).get("quick_gelu", False)))
            for t in open_clip.list_pretrained_tags_by_model(model)}


def weights_fact(model: str, pretrained: str, weights: Path | None,
                 sha256: str | None = None) -> tuple[str, str] | None:
    """(activation, reason) known from the weights themselves (rule 1), or None."""
    register_configs()
    if pretrained == "pipeline":
        return None  # the pipeline trains with the resolved activation itself (rule 2 or explicit)
    tag_cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if tag_cfg:
        act = _name(bool(tag_cfg.get("quick_gelu", False)))
        return act, f"open_clip's pretrained tag {model}/{pretrained} was trained with {act}"
    if weights is None:
        return None
    weights = Path(weights)
    if is_torchscript_archive(weights):
        return "quick_gelu", f"{weights.name} is a TorchScript archive: OpenAI's release format (QuickGELU)"
    sha = sha256 or sha256_file(weights)
    release = openai_releases().get(sha)
    if release:
        return "quick_gelu", f"{weights.name} has the sha256 of OpenAI's released {release} (QuickGELU)"
    return None


def resolve_activation(model: str, pretrained: str, activation: str = "auto", weights: Path | str | None = None,
                       sha256: str | None = None) -> tuple[str, str]:
    """(activation, reason) for CLIP `model` with `pretrained` (tag | path | "pipeline") whose weights
    file is `weights` (None: random initialisation); see the module docstring for the rule."""
    if activation not in ("auto", *ACTIVATIONS):
        raise ActivationError(f"clip.activation = {activation!r}; use auto, quick_gelu or gelu")
    declared = config_activation(model)
    fact = weights_fact(model, pretrained, Path(weights) if weights is not None else None, sha256)
    if activation != "auto":
        if fact is not None and fact[0] != activation:
            raise ActivationError(f"clip.activation: {activation} contradicts the weights: {fact[1]}; set "
                                  f"clip.activation: {fact[0]} (or auto)")
        if declared == "quick_gelu" and activation != "quick_gelu":
            raise ActivationError(f"clip.activation: {activation} contradicts clip.model {model!r}, a QuickGELU "
                                  f"config; use the model name without -quickgelu for GELU weights")
        return activation, "clip.activation"
    if fact is not None:
        return fact
    if declared == "quick_gelu":
        return declared, f"the model config {model} declares QuickGELU"
    if pretrained == "pipeline":
        return declared, f"the pipeline's CLIP is trained with {model}'s config ({declared})"
    if weights is None:
        return declared, f"random initialisation with {model}'s config ({declared})"
    releases = _release_activations(model)
    if releases <= {declared}:
        return declared, f"every weight release open_clip knows for {model} uses its config's {declared}"
    quick = f"{model}-quickgelu"
    quick_choice = (f"`clip.model: {quick}` (open_clip's name for weights trained with QuickGELU, e.g. OpenAI's)"
                    if open_clip.get_model_config(quick) is not None else "`clip.activation: quick_gelu`")
    raise ActivationError(
        f"clip.pretrained: the activation {Path(weights).name} was trained with cannot be known (not OpenAI's "
        f"TorchScript archive, not a file OpenAI released, and open_clip has {model} weights trained with both "
        f"GELU and QuickGELU); building the wrong one changes every CLIP feature. Choose one: {quick_choice}, or "
        f"`clip.activation: gelu` (weights trained with GELU, e.g. LAION or DataComp)"
    )
