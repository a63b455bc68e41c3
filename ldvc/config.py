"""Typed, validated configuration: params.yaml -> nested dataclasses.

One source of defaults (the dataclasses below, ZegCLIP values where the paper is silent), one
file of overrides (params.yaml, which DVC tracks section by section). Loading is strict, in the
spirit of nanoGPT's configurator: an unknown key, a wrong type or an impossible value raises
`ConfigError` naming the dotted key and the fix, before any expensive work starts.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

MAIN_VARIANT = "ldvc"  # the name under which the main (non-ablation) runs are recorded


class ConfigError(ValueError):
    """A parameter is unknown, mistyped or impossible; the message names the key."""


# --------------------------------------------------------------------------------------------
# Sections (one per pipeline stage group). Defaults are the ZegCLIP / paper values; params.yaml
# overrides them with the small embedded default.
# --------------------------------------------------------------------------------------------


@dataclass
class ProjectConfig:
    seed: int = 0
    mlflow_experiment: str = "ldvc"


@dataclass
class SyntheticConfig:
    train_images: int = 1600
    val_images: int = 200
    min_objects: int = 2
    max_objects: int = 4
    seed: int = 0


@dataclass
class CocoJsonConfig:
    train_images: str | None = None
    train_annotations: str | None = None
    val_images: str | None = None
    val_annotations: str | None = None
    classes: list[str] = field(default_factory=list)


@dataclass
class DataConfig:
    dataset: Literal["synthetic", "voc", "coco_stuff", "coco_json"] = "voc"
    root: str = "data/prepared"
    cache_dir: str = ".cache/downloads"
    extracted_dir: str | None = None
    sources: dict[str, dict[str, str]] = field(default_factory=dict)
    num_workers: int = 4
    image_size: int = 512  # model input and training crop (ZegCLIP: 512)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    coco_json: CocoJsonConfig = field(default_factory=CocoJsonConfig)


@dataclass
class SplitConfig:
    # "default" = the ZegCLIP split of the dataset; otherwise the unseen class names.
    unseen: str | list[str] = "default"


@dataclass
class ClipPretrainConfig:
    steps: int = 300
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 30
    eval_images: int = 400


@dataclass
class ClipConfig:
    model: str = "ViT-B-16"
    pretrained: str = "openai"  # "pipeline" | open_clip tag | local .pt/.safetensors path
    pretrain: ClipPretrainConfig = field(default_factory=ClipPretrainConfig)


@dataclass
class PromptConfig:
    visual_tokens: int = 10  # ZegCLIP VOC (COCO: 100)
    visual_depth: int = -1  # -1 = all layers
    text_tokens: int = 4  # LDVC: deep text prompts; the count is our choice
    text_depth: int = -1  # -1 = all layers, 0 = no text prompts
    templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])


@dataclass
class DecoderConfig:
    type: str = "lctd"
    layers: int = 3
    heads: int = 8
    width: int = 512
    ffn: int = 2048
    dropout: float = 0.0
    route_attention: bool = True
    route_regions: int = 8
    route_topk: int = 4
    lepe: bool = False


@dataclass
class LossConfig:
    focal_weight: float = 100.0
    dice_weight: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    ignore_as_negative: bool = True


@dataclass
class AugmentConfig:
    scale_min: float = 0.5
    scale_max: float = 2.0
    flip: bool = True
    photometric: bool = True


@dataclass
class TrainConfig:
    iters: int = 20000
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 2e-5
    lr_mult: float = 10.0
    weight_decay: float = 0.01
    warmup_iters: int = 1500
    poly_power: float = 0.9
    min_lr: float = 1e-6
    grad_clip: float | None = None
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    checkpoint_every: int = 2000
    log_every: int = 50
    resume: Literal["auto", "never"] = "auto"
    num_workers: int = 4
    deterministic: bool = False
    accelerate_config: str = "configs/accelerate/cpu.yaml"
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class TransductiveConfig:
    init_iter: int = 10000
    iters: int = 10000
    pseudo_threshold: float | None = None


@dataclass
class EvalConfig:
    mode: Literal["whole", "slide"] = "slide"
    window: int = 512
    stride: int = 426
    seen_bias: float = 0.1
    small_fragment_px: int = 64
    num_visualize: int = 8
    batch_size: int = 8
    checkpoint: str | None = None


@dataclass
class Config:
    project: ProjectConfig = field(default_factory=ProjectConfig)
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    transductive: TransductiveConfig = field(default_factory=TransductiveConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # variant name -> partial parameter tree merged over the rest (inductive ablation runs)
    ablation: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Dotted-key view for MLflow (its params are flat strings)."""
        return flatten(self.to_dict())

    def variant(self, name: str) -> Config:
        """The validated config of ablation variant `name` (its overlay merged over this one)."""
        if name not in self.ablation:
            raise ConfigError(f"unknown ablation variant {name!r}; params.yaml 'ablation' has {sorted(self.ablation)}")
        data = deep_merge(self.to_dict(), self.ablation[name])
        data["ablation"] = {}
        return config_from_dict(data)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def repo_root() -> Path:
    """The repository the pipeline belongs to: DVC_ROOT when DVC runs us (also for experiments
    run in temporary copies), else the nearest parent holding dvc.yaml, else the cwd."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if (p / "dvc.yaml").exists():
            return p
    return here


def load_config(path: str | os.PathLike = "params.yaml") -> Config:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: parameter file not found (run from the repository root)")
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return config_from_dict(raw)


def config_from_dict(raw: dict[str, Any]) -> Config:
    cfg = _build(Config, raw, "")
    validate(cfg)
    return cfg


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'params'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(
            f"unknown parameter '{key}' (known in '{prefix.rstrip('.') or 'top level'}': "
            f"{', '.join(sorted(names))}); fix the spelling or remove it"
        )
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"'{key}': {value!r} matches none of {_tname(tp)}")
    if origin is Literal:
        # YAML 1.1 reads a bare `no` as false, and tools that rewrite params.yaml (dvc exp run -S)
        # drop our quotes: take false as the literal "no" where "no" is a choice.
        if value is False and "no" in args:
            return "no"
        if value not in args:
            raise ConfigError(f"'{key}': {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"'{key}': expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}': expected a mapping, got {value!r}")
        return {str(k): (copy.deepcopy(v) if args[1] is Any else _coerce(args[1], v, f"{key}.{k}"))
                for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}': expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{key}': expected an integer, got {value!r}")
        return value
    if tp is float:
        # PyYAML (YAML 1.1) reads `2e-05` -- as YAML 1.2 writers such as ruamel and DVC emit it --
        # as a string; accept exactly the strings that are numbers.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{key}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}': expected a string, got {value!r}")
        return value
    raise ConfigError(f"'{key}': unsupported type {tp}")


def _tname(tp: Any) -> str:
    return str(tp).replace("typing.", "")


# --------------------------------------------------------------------------------------------
# Cross-field validation: impossible values fail here, naming the key.
# --------------------------------------------------------------------------------------------


def validate(cfg: Config) -> None:
    d, t, e = cfg.decoder, cfg.train, cfg.eval
    _positive(cfg, ["data.image_size", "decoder.layers", "decoder.heads", "decoder.width",
                    "decoder.ffn", "decoder.route_regions", "decoder.route_topk", "train.iters",
                    "train.batch_size", "train.grad_accum", "train.checkpoint_every",
                    "train.log_every", "eval.window", "eval.stride", "eval.batch_size",
                    "clip.pretrain.steps", "clip.pretrain.batch_size"])
    if d.width % d.heads:
        raise ConfigError(f"'decoder.width' ({d.width}) must be divisible by 'decoder.heads' ({d.heads})")
    if d.route_topk > d.route_regions**2:
        raise ConfigError(
            f"'decoder.route_topk' = {d.route_topk} is larger than the number of regions "
            f"(decoder.route_regions^2 = {d.route_regions**2}); use at most {d.route_regions**2}"
        )
    grid = token_grid(cfg)
    if grid is not None and grid % d.route_regions:
        divisors = [r for r in range(1, grid + 1) if grid % r == 0]
        raise ConfigError(
            f"'decoder.route_regions' = {d.route_regions} does not divide the {grid}x{grid} token grid "
            f"(data.image_size {cfg.data.image_size} / patch size); choose one of {divisors}"
        )
    from ldvc.model.decoders import DECODERS  # registry; imported late to keep config light

    if d.type not in DECODERS:
        raise ConfigError(f"'decoder.type' = {d.type!r} is not a registered decoder: {sorted(DECODERS)}")
    if cfg.transductive.init_iter > t.iters:
        raise ConfigError(
            f"'transductive.init_iter' = {cfg.transductive.init_iter} is past the end of inductive "
            f"training (train.iters = {t.iters})"
        )
    if cfg.transductive.init_iter % t.checkpoint_every and cfg.transductive.init_iter != t.iters:
        raise ConfigError(
            f"'transductive.init_iter' = {cfg.transductive.init_iter} is not a checkpoint iteration "
            f"(train.checkpoint_every = {t.checkpoint_every}); make it a multiple"
        )
    thr = cfg.transductive.pseudo_threshold
    if thr is not None and not 0.0 <= thr < 1.0:
        raise ConfigError(f"'transductive.pseudo_threshold' = {thr} must be in [0, 1) or null")
    if e.stride > e.window:
        raise ConfigError(f"'eval.stride' ({e.stride}) larger than 'eval.window' ({e.window}) leaves gaps")
    if cfg.prompt.visual_tokens < 0 or cfg.prompt.text_tokens < 0:
        raise ConfigError("'prompt.visual_tokens' and 'prompt.text_tokens' must be >= 0")
    if not cfg.prompt.templates or any("{}" not in tpl for tpl in cfg.prompt.templates):
        raise ConfigError("'prompt.templates' must be a non-empty list of strings containing '{}'")
    if cfg.data.synthetic.min_objects > cfg.data.synthetic.max_objects:
        raise ConfigError("'data.synthetic.min_objects' is larger than 'data.synthetic.max_objects'")
    if not cfg.seeds:
        raise ConfigError("'seeds' must list at least one seed")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"'seeds' has duplicates: {cfg.seeds}")
    if isinstance(cfg.split.unseen, str) and cfg.split.unseen != "default":
        raise ConfigError(f"'split.unseen' must be 'default' or a list of class names, got {cfg.split.unseen!r}")
    if isinstance(cfg.split.unseen, list) and cfg.data.dataset != "coco_json":
        # The class lists of the built-in datasets are known before anything is downloaded (a
        # coco_json dataset's come from its annotation file: the split stage checks those).
        from ldvc.data.classes import dataset_classes
        from ldvc.data.split import SplitError, make_split

        try:
            make_split(dataset_classes(cfg.data), cfg.split.unseen, cfg.data.dataset)
        except SplitError as err:
            raise ConfigError(f"'split.unseen': {err}") from None
    for name, overlay in cfg.ablation.items():
        if name == MAIN_VARIANT:
            raise ConfigError(f"'ablation.{name}': the name {MAIN_VARIANT!r} is reserved for the main runs")
        if not isinstance(overlay, dict):
            raise ConfigError(f"'ablation.{name}' must be a partial parameter tree, got {overlay!r}")
        data = deep_merge(cfg.to_dict(), overlay)
        data["ablation"] = {}
        try:
            config_from_dict(data)
        except ConfigError as err:
            raise ConfigError(f"'ablation.{name}' gives an invalid configuration: {err}") from None


def token_grid(cfg: Config) -> int | None:
    """Tokens per side of the image encoder at data.image_size (None if the model is unknown)."""
    from ldvc.model.clip_loader import patch_size

    p = patch_size(cfg.clip.model)
    if p is None:
        return None
    if cfg.data.image_size % p:
        raise ConfigError(
            f"'data.image_size' = {cfg.data.image_size} is not a multiple of the patch size {p} of "
            f"'clip.model' {cfg.clip.model}"
        )
    return cfg.data.image_size // p


def _positive(cfg: Config, keys: list[str]) -> None:
    for key in keys:
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if value <= 0:
            raise ConfigError(f"'{key}' must be positive, got {value}")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in overlay.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and v:
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out
