"""Build CLIP models through open_clip's own model-config mechanism.

The small synthetic CLIP of the embedded default (`ldvc-tiny-vit`, configs/ldvc-tiny-vit.json)
is registered with `open_clip.add_model_config`, so it and ViT-B/16 go through the very same
`open_clip.create_model` path. Weights come from `ldvc.model.clip_weights.resolve_weights`
(open_clip tag, local file, or the CLIP the pipeline's clip stage trained), and the activation
they were trained with from `ldvc.model.clip_activation.resolve_activation` (OpenAI's weights need
QuickGELU, which open_clip's `ViT-B-16` config does not build by itself); `create_clip` checks that
the model it got really has that activation.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import open_clip
import torch

CONFIG_DIR = Path(__file__).parent / "configs"
# The clip stage writes the synthetic CLIP's weights here (relative to the repository root).
PIPELINE_WEIGHTS = Path("models/clip/clip.safetensors")
ACTIVATIONS = ("quick_gelu", "gelu")

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


def create_clip(name: str, weights: str | Path | None = None, activation: str | None = None) -> torch.nn.Module:
    """An open_clip CLIP `name`, with weights from a local .pt/.safetensors file (or random), built
    with `activation` ("quick_gelu" | "gelu"): the one the weights were trained with, which
    `ldvc.model.clip_activation.resolve_activation` decides. None is allowed only without weights
    (random initialisation: the config's own activation)."""
    register_configs()
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(
            f"unknown CLIP model {name!r}: use an open_clip model name (e.g. ViT-B-16) "
            f"or one of ldvc's configs in {CONFIG_DIR}"
        )
    if activation is None:
        if weights:
            raise ValueError(f"create_clip({name!r}, {weights}): say which activation these weights were trained "
                             f"with (ldvc.model.clip_activation.resolve_activation decides it)")
        activation = "quick_gelu" if cfg.get("quick_gelu", False) else "gelu"
    if activation not in ACTIVATIONS:
        raise ValueError(f"CLIP activation {activation!r}: use one of {ACTIVATIONS}")
    config_quick = bool(cfg.get("quick_gelu", False))
    if config_quick and activation != "quick_gelu":
        raise ValueError(f"CLIP model {name!r} is a QuickGELU config; it cannot be built with {activation}")
    # open_clip can only force QuickGELU on; a config without it builds nn.GELU.
    force = activation == "quick_gelu" and not config_quick
    if weights and is_torchscript_archive(Path(weights)):
        # OpenAI's own release format. open_clip's create_model cannot read it with torch >= 2.6
        # (torch.load(weights_only=True) refuses TorchScript); its load_openai_model takes the state dict
        # of torch.jit.load, as here. The keys are open_clip's CLIP keys (same module names).
        model = open_clip.create_model(name, pretrained=None, force_quick_gelu=force)
        load_openai_archive(model, Path(weights))
    else:
        model = open_clip.create_model(name, pretrained=str(weights) if weights else None, force_quick_gelu=force)
    built = built_activation(model)
    if built != activation:  # never trust a library default silently (open_clip's ViT-B-16 is GELU)
        raise RuntimeError(f"open_clip built {name} with {built}, not the requested {activation}")
    model.eval()
    return model


OPENAI_ARCHIVE_EXTRAS = ("input_resolution", "context_length", "vocab_size")  # ints OpenAI stores beside the weights


def is_torchscript_archive(path: Path) -> bool:
    """A TorchScript archive (torch.jit.save, OpenAI's CLIP release format): a zip whose records
    include a code/ folder and constants.pkl; a torch.save zip has data.pkl but no code/."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)


def load_openai_archive(model: torch.nn.Module, path: Path) -> None:
    """Load OpenAI's TorchScript CLIP archive into an open_clip CLIP (strict: every key must match)."""
    state = torch.jit.load(str(path), map_location="cpu").state_dict()
    state = {k: v for k, v in state.items() if k not in OPENAI_ARCHIVE_EXTRAS}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: this TorchScript archive is not a CLIP of this architecture: missing "
                         f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]} (of {len(state)} tensors)")


def built_activation(model: torch.nn.Module) -> str:
    """The MLP activation a built open_clip CLIP actually has ("quick_gelu" | "gelu" | class name)."""
    acts = {type(m).__name__ for name, m in model.named_modules() if name.endswith("mlp.gelu")}
    if acts == {"QuickGELU"}:
        return "quick_gelu"
    if acts == {"GELU"}:
        return "gelu"
    return ",".join(sorted(acts)) or "unknown"


def tokenizer(name: str):
    register_configs()
    return open_clip.get_tokenizer(name)
