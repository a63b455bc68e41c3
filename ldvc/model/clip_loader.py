"""Build CLIP models through open_clip's own model-config mechanism.

The small synthetic CLIP of the embedded default (`ldvc-tiny-vit`, configs/ldvc-tiny-vit.json)
is registered with `open_clip.add_model_config`, so it and ViT-B/16 go through the very same
`open_clip.create_model` path. Weights come from `ldvc.model.clip_weights.resolve_weights`
(open_clip tag, local file, or the CLIP the pipeline's clip stage trained).
"""

from __future__ import annotations

from pathlib import Path

import open_clip
import torch

CONFIG_DIR = Path(__file__).parent / "configs"
# The clip stage writes the synthetic CLIP's weights here (relative to the repository root).
PIPELINE_WEIGHTS = Path("models/clip/clip.safetensors")

_registered = False


def register_configs() -> None:
    """Make ldvc's JSON model configs known to open_clip (idempotent)."""
    global _registered
    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


def model_config(name: str) -> dict | None:
    register_configs()
    return open_clip.get_model_config(name)


def patch_size(name: str) -> int | None:
    cfg = model_config(name)
    if cfg is None:
        return None
    ps = cfg["vision_cfg"].get("patch_size")
    return int(ps) if ps is not None else None


def create_clip(name: str, weights: str | Path | None = None) -> torch.nn.Module:
    """An open_clip CLIP `name`, with weights from a local .pt/.safetensors file (or random)."""
    register_configs()
    if open_clip.get_model_config(name) is None:
        raise ValueError(
            f"unknown CLIP model {name!r}: use an open_clip model name (e.g. ViT-B-16) "
            f"or one of ldvc's configs in {CONFIG_DIR}"
        )
    model = open_clip.create_model(name, pretrained=str(weights) if weights else None)
    model.eval()
    return model


def tokenizer(name: str):
    register_configs()
    return open_clip.get_tokenizer(name)
