"""Checks of a configuration against the code it will run: the decoder registry, the datasets' class
lists, the CLIP architecture and the protocol presets.

This module sits ABOVE `ldvc.data` and `ldvc.model` (it imports them; they never import it), so
`ldvc.config` stays a leaf that every package can import without a cycle. Every stage calls
`validate_run` (through `ldvc.pipeline.load_stage_config`) before any work, as do the presets and
the command line, so a typo in params.yaml fails in about a second, naming the key.

It reads the decoder names and the CLIP architecture WITHOUT importing the model code: importing
torch and open_clip (which pulls in torchvision and torch._dynamo) takes about 4 s, paid by every
stage that never builds a model (download, split, the target preparations) on every run. The two
facts it needs are pinned against the library by tests/test_validate_fast.py: `DECODER_TYPES`
equals the registry `ldvc.model.build.DECODERS`, and `clip_model_config` equals
`open_clip.get_model_config` (after `ldvc.model.clip_loader.register_configs`) for every model
name open_clip knows, ldvc's own configs included.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from ldvc.config import Config, ConfigError, DataConfig, config_from_dict

PRESET_DIR = Path(__file__).resolve().parents[1] / "presets"
# The registry's names (ldvc.model.build.DECODERS; a new decoder is added here too, the test says so).
DECODER_TYPES = ("lctd", "zegclip")
# ldvc's own open_clip model configs (ldvc.model.clip_loader.CONFIG_DIR, registered after open_clip's,
# so a name in both is ldvc's, as open_clip's rescan leaves it).
LDVC_CLIP_CONFIGS = Path(__file__).resolve().parent / "model" / "configs"
_CLIP_CONFIG_KEYS = ("embed_dim", "vision_cfg", "text_cfg")  # what open_clip's rescan requires of a config


def clip_model_config(name: str) -> dict | None:
    """open_clip's model config of `name` as `open_clip.get_model_config` returns it once ldvc's
    configs are registered, read from the same JSON files without importing open_clip: `<name>.json`
    in ldvc's config folder, else in open_clip's `model_configs` folder, holding the keys open_clip
    requires; None when neither has it. Names with a location schema (`hf-hub:`, `local-dir:`) go to
    open_clip itself."""
    if ":" in name or "/" in name:
        from ldvc.model.clip_loader import model_config

        return model_config(name)
    spec = importlib.util.find_spec("open_clip")  # locates the package without running it
    folders = [LDVC_CLIP_CONFIGS]
    if spec is not None and spec.submodule_search_locations:
        folders += [Path(loc) / "model_configs" for loc in spec.submodule_search_locations]
    for folder in folders:
        path = folder / f"{name}.json"
        if path.is_file():
            cfg = json.loads(path.read_text(encoding="utf-8"))
            if all(key in cfg for key in _CLIP_CONFIG_KEYS):
                return cfg
    return None


def validate_run(cfg: Config, *, preset_dir: Path | None = None) -> Config:
    """Raise ConfigError (naming the key) if `cfg`, any ablation variant or cross-dataset target
    cannot run with this code; returns `cfg` for chaining."""
    _check_model(cfg, "")
    _check_split(cfg.data, cfg.split.unseen, "split.unseen")
    _check_local_sources(cfg.data, "data")
    _check_protocol(cfg, preset_dir)
    for name in cfg.ablation:
        variant = cfg.variant(name)
        try:
            _check_model(variant, "")
            _check_split(variant.data, variant.split.unseen, "split.unseen")
        except ConfigError as err:
            raise ConfigError(f"'ablation.{name}' gives an invalid configuration: {err}") from None
    for name in cfg.cross_dataset:
        target = cfg.cross_target(name)
        _check_local_sources(target, f"cross_dataset.{name}")
        if target.dataset == "coco_json" and not target.coco_json.val_annotations:
            raise ConfigError(f"'cross_dataset.{name}.coco_json.val_annotations' is empty: a coco_json target "
                              "needs its validation annotations")
    if hasattr(cfg, "open_vocab"):  # the open-vocabulary targets (issue 20), where the config has them
        for name in cfg.open_vocab.targets:
            _check_local_sources(cfg.target("open_vocab", name), f"open_vocab.targets.{name}")
    return cfg


def load_validated(raw: dict[str, Any], *, variant: bool = False) -> Config:
    """config_from_dict + validate_run, for callers holding a parameter dict."""
    return validate_run(config_from_dict(raw, variant=variant))


def _check_model(cfg: Config, prefix: str) -> None:
    d = cfg.decoder
    if d.type not in DECODER_TYPES:
        raise ConfigError(f"'{prefix}decoder.type' = {d.type!r} is not a registered decoder: {sorted(DECODER_TYPES)}")
    clip = clip_model_config(cfg.clip.model)
    if clip is None:
        # an unknown open_clip name fails when the CLIP is built; nothing more to check here
        return
    patch = int(clip["vision_cfg"]["patch_size"])
    embed_dim = int(clip["embed_dim"])
    size = cfg.data.image_size
    if size % patch:
        raise ConfigError(
            f"'{prefix}data.image_size' = {size} is not a multiple of the patch size {patch} of "
            f"'clip.model' {cfg.clip.model}; use a multiple of {patch}"
        )
    if cfg.eval.mode == "slide" and cfg.eval.window % patch:
        raise ConfigError(f"'{prefix}eval.window' = {cfg.eval.window} is not a multiple of the patch size {patch}")
    grid = size // patch
    if d.type == "lctd" and d.route_attention and grid % d.route_regions:
        divisors = [r for r in range(1, grid + 1) if grid % r == 0]
        raise ConfigError(
            f"'{prefix}decoder.route_regions' = {d.route_regions} does not divide the {grid}x{grid} token grid "
            f"(data.image_size {size} / patch size {patch}); choose one of {divisors}"
        )
    if not d.input_proj and embed_dim != d.width:
        raise ConfigError(
            f"'{prefix}decoder.input_proj' is false (ZegCLIP's use_proj=False), so 'decoder.width' must equal the "
            f"CLIP embedding size {embed_dim} of {cfg.clip.model}, got {d.width}; set decoder.width: {embed_dim} "
            f"or decoder.input_proj: true"
        )
    layers = int(clip["vision_cfg"]["layers"])
    if cfg.prompt.visual_depth > layers:
        raise ConfigError(f"'{prefix}prompt.visual_depth' = {cfg.prompt.visual_depth} exceeds the {layers} layers "
                          f"of {cfg.clip.model}; use -1 for all")
    text_layers = int(clip["text_cfg"]["layers"])
    if cfg.prompt.text_depth > text_layers:
        raise ConfigError(f"'{prefix}prompt.text_depth' = {cfg.prompt.text_depth} exceeds the {text_layers} text "
                          f"layers of {cfg.clip.model}; use -1 for all or 0 for none")


def _check_split(data: DataConfig, unseen: str | list[str], key: str) -> None:
    """Unseen names must be classes of the dataset (known before anything is downloaded; a
    coco_json dataset's classes come from its annotation file: the split stage checks those)."""
    if not isinstance(unseen, list) or not unseen or data.dataset == "coco_json":
        return
    from ldvc.data.classes import dataset_classes
    from ldvc.data.split import SplitError, make_split

    try:
        make_split(dataset_classes(data), unseen, data.dataset)
    except SplitError as err:
        raise ConfigError(f"'{key}': {err}") from None


def _check_local_sources(data: DataConfig, key: str) -> None:
    """A dataset whose archive only the user can supply (ade20k_847: the full ADE20K release needs an
    account) must name it (data.sources.<source>.url) or extracted data (data.extracted_dir): fail here,
    in a second, rather than in the download stage. Other source problems are the download stage's."""
    from ldvc.data.sources import DATASET_SOURCES, SourceNotConfiguredError, require_configured, resolve_sources

    if data.dataset not in DATASET_SOURCES or data.extracted_dir:
        return
    try:
        sources = resolve_sources(data.sources)
    except ValueError:
        return  # a malformed override: reported with its key by the inputs / download stage
    for name in DATASET_SOURCES[data.dataset]:
        try:
            require_configured(sources[name], data.dataset)
        except SourceNotConfiguredError as err:
            raise ConfigError(f"'{key}.dataset' = {data.dataset}: {err}") from None


def _check_protocol(cfg: Config, preset_dir: Path | None) -> None:
    from ldvc.protocol import known_protocols

    known = known_protocols(preset_dir or PRESET_DIR)
    if known and cfg.project.protocol not in known:
        raise ConfigError(
            f"'project.protocol' = {cfg.project.protocol!r} is not a preset in {preset_dir or PRESET_DIR}: "
            f"choose one of {known}"
        )
