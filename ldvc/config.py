"""Typed configuration: params.yaml -> nested dataclasses, every numeric parameter with its range.

One source of defaults (the dataclasses below: ZegCLIP's values where the LDVC paper is silent),
one file of overrides (params.yaml, which DVC tracks section by section). Loading is strict, in
the spirit of nanoGPT's configurator: an unknown key, a wrong type, a value outside its range or
two keys that contradict each other raise `ConfigError` naming the dotted key, what was expected,
what was found and the fix, before any expensive work starts.

Layering (no import cycles): this module imports nothing from `ldvc`. It checks what the
parameters alone can tell. Checks that need the decoder registry, a dataset's class list or a
CLIP architecture live one level up in `ldvc.validate`, which every stage calls before work.

params.yaml is read with a YAML 1.2 loader (ruamel), as DVC reads and writes it: `no` is the
string "no" and `2e-05` is a float, with no YAML 1.1 quirks to patch.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

MAIN_VARIANT = "ldvc"  # the name under which the main (non-ablation) runs are recorded
RESERVED_NAMES = (MAIN_VARIANT, "cross", "open_vocab")  # folders of runs/ that are not ablation variants
CROSS_ROOT = "data/cross"  # cross-dataset targets are prepared into data/cross/<target>
OPEN_VOCAB_ROOT = "data/open_vocab"  # open-vocabulary targets are prepared into data/open_vocab/<target>
# Sections of named evaluation targets (partial `data` sections): params.yaml key -> where they are prepared.
TARGET_SECTIONS: dict[str, str] = {"cross_dataset": CROSS_ROOT, "open_vocab": OPEN_VOCAB_ROOT}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # ablation variants, cross-dataset targets: path-safe


class ConfigError(ValueError):
    """A parameter is unknown, mistyped, out of range or contradicts another; the message names the key."""


# --------------------------------------------------------------------------------------------
# Ranges: declared next to each field (metadata), checked generically for every numeric value.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    ge: float | None = None  # lower bound, inclusive
    gt: float | None = None  # lower bound, exclusive
    le: float | None = None
    lt: float | None = None
    special: tuple[Any, ...] = ()  # values allowed outside the range (e.g. -1 = all layers)
    meaning: str = ""  # what a special value means, for the message

    def ok(self, v: float) -> bool:
        if v in self.special:
            return True
        if isinstance(v, float) and not math.isfinite(v):
            return False
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))

    def describe(self) -> str:
        parts = []
        if self.ge is not None:
            parts.append(f">= {self.ge:g}")
        if self.gt is not None:
            parts.append(f"> {self.gt:g}")
        if self.le is not None:
            parts.append(f"<= {self.le:g}")
        if self.lt is not None:
            parts.append(f"< {self.lt:g}")
        text = " and ".join(parts) or "a finite number"
        if self.special:
            text += f", or {' / '.join(map(str, self.special))}" + (f" ({self.meaning})" if self.meaning else "")
        return text


def num(default: Any, **bounds: Any) -> Any:
    """A dataclass field with a default and a Range (ge/gt/le/lt/special/meaning)."""
    return field(default=default, metadata={"range": Range(**bounds)})


POSITIVE = {"ge": 1}
NON_NEGATIVE = {"ge": 0}
PROBABILITY = {"ge": 0.0, "lt": 1.0}
ALL_LAYERS = {"ge": 0, "special": (-1,), "meaning": "-1 = all layers"}


# --------------------------------------------------------------------------------------------
# Sections (one per pipeline stage group). Defaults are the ZegCLIP / paper values; params.yaml
# overrides them with the small embedded default.
# --------------------------------------------------------------------------------------------


@dataclass
class ProjectConfig:
    seed: int = num(0, **NON_NEGATIVE)
    mlflow_experiment: str = "ldvc"
    # The protocol results are compared against: the preset (presets/<name>.yaml) whose values of
    # the protocol-defining keys (ldvc/protocol.py) a run must keep to be reported unmarked.
    protocol: str = "voc"


@dataclass
class SyntheticConfig:
    train_images: int = num(1600, **POSITIVE)
    val_images: int = num(200, **POSITIVE)
    min_objects: int = num(2, ge=1, le=16)
    max_objects: int = num(4, ge=1, le=16)
    seed: int = num(0, **NON_NEGATIVE)
    # default: the world the model trains in; shifted: another world (backgrounds, sizes, noise,
    # a partly different vocabulary built from the same words) for cross-dataset evaluation; wide:
    # a larger, partly disjoint vocabulary (shape-named classes) for open-vocabulary evaluation.
    world: Literal["default", "shifted", "wide"] = "default"


@dataclass
class CocoJsonConfig:
    train_images: str | None = None
    train_annotations: str | None = None
    val_images: str | None = None
    val_annotations: str | None = None
    classes: list[str] = field(default_factory=list)


# voc21, context60, context459, ade20k_150, ade20k_847: the open-vocabulary / cross-dataset targets
# (ldvc/data/prepare.py); ade20k_847 needs the user's copy of the full ADE20K release.
DATASETS = ("synthetic", "voc", "coco_stuff", "context59", "coco_json", "voc21", "context60", "context459",
            "ade20k_150", "ade20k_847")


@dataclass
class DataConfig:
    dataset: Literal["synthetic", "voc", "coco_stuff", "context59", "coco_json", "voc21", "context60", "context459",
                     "ade20k_150", "ade20k_847"] = "voc"
    root: str = "data/prepared"
    cache_dir: str = ".cache/downloads"
    extracted_dir: str | None = None
    sources: dict[str, dict[str, str]] = field(default_factory=dict)
    num_workers: int = num(4, **NON_NEGATIVE)
    image_size: int = num(512, ge=8, le=4096)  # model input and training crop (ZegCLIP: 512)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    coco_json: CocoJsonConfig = field(default_factory=CocoJsonConfig)


@dataclass
class SplitConfig:
    # "default" = the ZegCLIP split of the dataset; otherwise the unseen class names. An empty
    # list (only in an ablation variant) trains on every class: the fully supervised upper bound.
    unseen: str | list[str] = "default"


@dataclass
class ClipPretrainConfig:
    steps: int = num(300, **POSITIVE)
    batch_size: int = num(128, ge=2)  # a contrastive batch needs at least one negative
    lr: float = num(1e-3, gt=0.0, le=1.0)
    weight_decay: float = num(0.1, ge=0.0, le=1.0)
    warmup_steps: int = num(30, **NON_NEGATIVE)
    eval_images: int = num(400, **POSITIVE)


@dataclass
class ClipConfig:
    model: str = "ViT-B-16"
    pretrained: str = "openai"  # "pipeline" | open_clip tag | local .pt/.safetensors path
    # The MLP activation the weights were trained with (OpenAI's CLIP: QuickGELU). auto: known from
    # the weights or the model name, an error when it cannot be (ldvc/model/clip_activation.py).
    activation: Literal["auto", "quick_gelu", "gelu"] = "auto"
    pretrain: ClipPretrainConfig = field(default_factory=ClipPretrainConfig)


@dataclass
class PromptConfig:
    visual_tokens: int = num(10, ge=0, le=1000)  # ZegCLIP VOC (COCO: 100)
    visual_depth: int = num(-1, **ALL_LAYERS)
    text_tokens: int = num(4, ge=0, le=64)  # LDVC: deep text prompts; the count is our choice
    text_depth: int = num(-1, **ALL_LAYERS)  # 0 = no text prompts
    # ZegCLIP's VOC embeddings are CLIP's for "a photo of a {c}" (no full stop: its
    # get_embedding.ipynb); COCO-Stuff: the mean of its 15 templates.
    templates: list[str] = field(default_factory=lambda: ["a photo of a {}"])


@dataclass
class EncoderConfig:
    """ZegCLIP's VPT image encoder (models/backbone/img_encoder.py, VPTCLIPVisionTransformer)."""

    prompt_proj: bool = True  # one shared learnable Linear(width, width) on every layer's prompts
    prompt_dropout: float = num(0.1, **PROBABILITY)  # dropout on the projected prompts
    prompt_norm: bool = True  # learnable LayerNorm (eps 1e-6) on the last hidden states before ln_post
    # ZegCLIP's configs set drop_path_rate=0.1, but its ResidualAttentionBlock.forward never applies
    # the DropPath it builds: the faithful value is 0 (see ldvc/model/image_encoder.py).
    drop_path: float = num(0.0, **PROBABILITY)
    cls_quirk: bool = True  # ZegCLIP's CLS token = 2 * class_embedding + pos[0] (class embedding added twice)


@dataclass
class DecoderConfig:
    type: str = "lctd"
    layers: int = num(3, ge=1, le=64)
    heads: int = num(8, ge=1, le=128)
    width: int = num(512, ge=1, le=16384)
    ffn: int = num(2048, ge=1, le=65536)
    dropout: float = num(0.1, **PROBABILITY)  # ZegCLIP: TransformerDecoderLayer dropout and attn_drop 0.1
    # ZegCLIP's `use_proj` (False in its configs): Linear(D, width) + LayerNorm on the patch tokens.
    # Without it the CLIP embedding size D must equal decoder.width.
    input_proj: bool = False
    # torch_default: as ZegCLIP's training starts (its head's init_weights is never called; layers are
    # identical deep copies); trunc_normal: ATMSingleHeadSeg.init_weights (ldvc/model/decoder_base.py)
    init: Literal["torch_default", "trunc_normal"] = "torch_default"
    route_attention: bool = True  # false = plain self-attention (ablation)
    route_regions: int = num(8, **POSITIVE)
    route_topk: int = num(4, **POSITIVE)
    lepe: bool = False


@dataclass
class LossConfig:
    focal_weight: float = num(100.0, ge=0.0, le=1e6)
    dice_weight: float = num(1.0, ge=0.0, le=1e6)
    focal_alpha: float = num(0.25, ge=0.0, le=1.0)
    focal_gamma: float = num(2.0, ge=0.0, le=10.0)
    ignore_as_negative: bool = True


@dataclass
class AugmentConfig:
    scale_min: float = num(0.5, gt=0.0, le=10.0)
    scale_max: float = num(2.0, gt=0.0, le=10.0)
    flip: bool = True
    photometric: bool = True


@dataclass
class TrainConfig:
    iters: int = num(20000, **POSITIVE)
    # The GLOBAL batch of one optimizer step (ZegCLIP: 16 = 4 GPUs x 4). The layout is derived from
    # the machine: processes x per-device batch x gradient accumulation = batch_size (ldvc/train/layout.py).
    batch_size: int = num(16, **POSITIVE)
    per_device_batch: int | None = num(None, **POSITIVE)  # cap per device and micro-step; null = batch / processes
    lr: float = num(2e-5, gt=0.0, le=1.0)
    lr_mult: float = num(10.0, gt=0.0, le=1e4)
    weight_decay: float = num(0.01, ge=0.0, le=1.0)
    warmup_iters: int = num(1500, **NON_NEGATIVE)
    poly_power: float = num(0.9, gt=0.0, le=10.0)
    min_lr: float = num(1e-6, ge=0.0)
    grad_clip: float | None = num(None, gt=0.0)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    compile: bool = False  # torch.compile the model (CUDA; the forward has no graph breaks)
    checkpoint_every: int = num(2000, **POSITIVE)
    log_every: int = num(50, **POSITIVE)
    resume: Literal["auto", "never"] = "auto"
    # DataLoader workers per process (training and evaluation); auto = the cores per process minus one
    # (ldvc/train/layout.py loader_workers)
    num_workers: int | Literal["auto"] = num("auto", ge=0, le=256, special=("auto",), meaning="auto = from the cores")
    deterministic: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class TransductiveConfig:
    init_iter: int = num(10000, **POSITIVE)
    iters: int = num(10000, **POSITIVE)
    pseudo_threshold: float | None = num(None, **PROBABILITY)


@dataclass
class EvalConfig:
    mode: Literal["whole", "slide"] = "slide"
    window: int = num(512, **POSITIVE)
    stride: int = num(426, **POSITIVE)
    seen_bias: float = num(0.1, ge=0.0, le=1.0)  # subtracted from seen-class sigmoid scores
    # all: every class is a candidate (generalised zero-shot, the papers' numbers); unseen: only
    # the unseen classes are candidates and only unseen-class pixels are scored.
    vocabulary: Literal["all", "unseen"] = "all"
    small_fragment_px: int = num(64, **NON_NEGATIVE)
    num_visualize: int = num(8, ge=0, le=1000)
    batch_size: int = num(8, **POSITIVE)  # windows (slide) or images (whole) per forward, across images
    # classes whose scores are averaged, resized and arg-maxed at a time (exact; bounds the memory of
    # vocabularies of hundreds of classes; null = all at once), ldvc/eval/inference.py
    class_chunk: int | None = num(64, **POSITIVE)
    # no: float32 (ZegCLIP's), TF32 matrix products on a GPU; bf16: bf16 autocast on a GPU (ignored on a CPU)
    mixed_precision: Literal["no", "bf16"] = "no"
    checkpoint: str | None = None


@dataclass
class OpenVocabConfig:
    """Open-vocabulary transfer (SAN / CAT-Seg's protocol): a model trained on EVERY class of the
    training dataset, evaluated unchanged on other datasets' full vocabularies (every target class a
    candidate, no seen-class calibration)."""

    # The ablation variant evaluated: it must train on every class (split.unseen: []).
    model: str = "fully_supervised"
    # target name -> partial `data` section merged over `data` (as cross_dataset's targets)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Config:
    project: ProjectConfig = field(default_factory=ProjectConfig)
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    transductive: TransductiveConfig = field(default_factory=TransductiveConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # variant name -> partial parameter tree merged over the rest (inductive ablation runs)
    ablation: dict[str, dict[str, Any]] = field(default_factory=dict)
    # target name -> partial `data` section: the main inductive model evaluated on that dataset
    cross_dataset: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the model trained on every class (an ablation variant) evaluated on other datasets' vocabularies
    open_vocab: OpenVocabConfig = field(default_factory=OpenVocabConfig)
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"range": Range(ge=0)})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Dotted-key view for MLflow (its params are flat strings)."""
        return flatten(self.to_dict())

    def variant(self, name: str) -> Config:
        """The config of ablation variant `name` (its overlay merged over this one), checked."""
        if name not in self.ablation:
            raise ConfigError(f"unknown ablation variant {name!r}; params.yaml 'ablation' has {sorted(self.ablation)}")
        return config_from_dict(variant_dict(self.to_dict(), self.ablation[name]), variant=True)

    def cross_target(self, name: str) -> DataConfig:
        """The `data` section of cross-dataset target `name` (its overlay merged over `data`)."""
        return self.target("cross_dataset", name)

    def targets(self, section: str) -> dict[str, dict[str, Any]]:
        """The named targets of a target section (TARGET_SECTIONS): name -> partial `data` section."""
        if section not in TARGET_SECTIONS:
            raise ConfigError(f"unknown target section {section!r}; use one of {sorted(TARGET_SECTIONS)}")
        return self.cross_dataset if section == "cross_dataset" else self.open_vocab.targets

    def target(self, section: str, name: str) -> DataConfig:
        """The `data` section of target `name` of `section` (cross_dataset | open_vocab): its overlay
        merged over `data`, prepared into <TARGET_SECTIONS[section]>/<name>."""
        entries = self.targets(section)
        key = _target_key(section)
        if name not in entries:
            raise ConfigError(f"unknown target {name!r}; params.yaml '{key}' has {sorted(entries)}")
        merged = deep_merge(dataclasses.asdict(self.data), entries[name])
        merged["root"] = f"{TARGET_SECTIONS[section]}/{name}"  # each target is prepared into its own folder
        return _build(DataConfig, merged, f"{key}.{name}.")

    @property
    def fully_supervised(self) -> bool:
        """Every class is labelled in training (split.unseen: [], an ablation variant only)."""
        return isinstance(self.split.unseen, list) and not self.split.unseen


def variant_dict(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    data = deep_merge(base, overlay)
    data["ablation"] = {}
    data["cross_dataset"] = {}
    data["open_vocab"] = {"targets": {}}  # a variant evaluates no targets itself (its `model` is moot)
    return data


def _target_key(section: str) -> str:
    """The dotted params.yaml key holding a target section's entries."""
    return "open_vocab.targets" if section == "open_vocab" else section


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


def portable_path(path: str | Path, root: Path | None = None) -> str:
    """`path` relative to the repository root when it lies inside it (what a checkpoint should record:
    valid in any clone), else absolute."""
    p = Path(path).resolve()
    base = (root or repo_root()).resolve()
    try:
        return p.relative_to(base).as_posix()
    except ValueError:
        return str(p)


def read_yaml(text: str, where: str = "params.yaml") -> Any:
    """YAML 1.2 (ruamel, the loader DVC uses) -> plain Python objects."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        return YAML(typ="safe", pure=True).load(io.StringIO(text))
    except YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML ({err}); fix the syntax") from None


def load_config(path: str | os.PathLike = "params.yaml") -> Config:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: parameter file not found (run from the repository root)")
    raw = read_yaml(path.read_text(), str(path)) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return config_from_dict(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def config_from_dict(raw: dict[str, Any], variant: bool = False) -> Config:
    """Typed, range-checked config; `variant` allows what only ablation variants may set."""
    cfg = _build(Config, raw, "")
    check(cfg, variant=variant)
    return cfg


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"'{prefix.rstrip('.') or 'params'}': expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(
            f"unknown parameter '{key}' (known in '{prefix.rstrip('.') or 'top level'}': "
            f"{', '.join(sorted(fields))}); fix the spelling or remove it"
        )
    kwargs = {}
    for name, value in raw.items():
        key = f"{prefix}{name}"
        kwargs[name] = _coerce(hints[name], value, key)
        rng = fields[name].metadata.get("range")
        if rng is not None:
            _check_range(rng, kwargs[name], key)
    return cls(**kwargs)


def _check_range(rng: Range, value: Any, key: str) -> None:
    values = value if isinstance(value, list) else [value]
    for v in values:
        if v is None:
            continue
        if not rng.ok(v):
            raise ConfigError(f"'{key}' = {v!r} is out of range: expected {rng.describe()}")


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
# Relations between keys: contradictions fail here, naming the keys.
# --------------------------------------------------------------------------------------------


def check(cfg: Config, variant: bool = False) -> None:
    """Cross-key checks that need nothing but the config (ranges are checked while building)."""
    d, t, e, tr = cfg.decoder, cfg.train, cfg.eval, cfg.transductive
    if d.width % d.heads:
        raise ConfigError(f"'decoder.width' ({d.width}) must be divisible by 'decoder.heads' ({d.heads})")
    if d.route_topk > d.route_regions**2:
        raise ConfigError(
            f"'decoder.route_topk' = {d.route_topk} is larger than the number of regions "
            f"(decoder.route_regions^2 = {d.route_regions**2}); use at most {d.route_regions**2}"
        )
    if tr.init_iter > t.iters:
        raise ConfigError(
            f"'transductive.init_iter' = {tr.init_iter} is past the end of inductive training "
            f"(train.iters = {t.iters}); make it at most {t.iters}"
        )
    if tr.init_iter % t.checkpoint_every and tr.init_iter != t.iters:
        raise ConfigError(
            f"'transductive.init_iter' = {tr.init_iter} is not a checkpoint iteration "
            f"(train.checkpoint_every = {t.checkpoint_every}); make it a multiple"
        )
    if t.warmup_iters > t.iters:
        raise ConfigError(f"'train.warmup_iters' = {t.warmup_iters} exceeds 'train.iters' = {t.iters}")
    if t.min_lr > t.lr:
        raise ConfigError(f"'train.min_lr' = {t.min_lr:g} is above 'train.lr' = {t.lr:g}; lower it")
    if t.per_device_batch is not None and t.per_device_batch > t.batch_size:
        raise ConfigError(
            f"'train.per_device_batch' = {t.per_device_batch} exceeds the global 'train.batch_size' = {t.batch_size}"
        )
    if t.augment.scale_min > t.augment.scale_max:
        raise ConfigError(
            f"'train.augment.scale_min' = {t.augment.scale_min:g} is above 'train.augment.scale_max' = "
            f"{t.augment.scale_max:g}"
        )
    if cfg.loss.focal_weight == 0 and cfg.loss.dice_weight == 0:
        raise ConfigError("'loss.focal_weight' and 'loss.dice_weight' are both 0: nothing would be learned")
    pre = cfg.clip.pretrain
    if pre.warmup_steps > pre.steps:
        raise ConfigError(
            f"'clip.pretrain.warmup_steps' = {pre.warmup_steps} exceeds 'clip.pretrain.steps' = {pre.steps}"
        )
    if e.stride > e.window:
        raise ConfigError(f"'eval.stride' ({e.stride}) larger than 'eval.window' ({e.window}) leaves gaps")
    if not cfg.prompt.templates or any(tpl.count("{}") != 1 for tpl in cfg.prompt.templates):
        raise ConfigError("'prompt.templates' must be a non-empty list of strings with exactly one '{}'")
    if cfg.data.synthetic.min_objects > cfg.data.synthetic.max_objects:
        raise ConfigError("'data.synthetic.min_objects' is larger than 'data.synthetic.max_objects'")
    if not cfg.seeds:
        raise ConfigError("'seeds' must list at least one seed")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"'seeds' has duplicates: {cfg.seeds}")
    if not cfg.project.protocol.strip():
        raise ConfigError("'project.protocol' is empty: name the preset whose protocol the results follow")
    unseen = cfg.split.unseen
    if isinstance(unseen, str) and unseen != "default":
        raise ConfigError(f"'split.unseen' must be 'default' or a list of class names, got {unseen!r}")
    if isinstance(unseen, list) and not unseen and not variant:
        raise ConfigError(
            "'split.unseen' is empty: the main runs are zero-shot (inductive/transductive). For the fully "
            "supervised upper bound add an ablation variant, e.g. ablation: {fully_supervised: {split: {unseen: []}}}"
        )
    for section, entries in (("ablation", cfg.ablation), ("cross_dataset", cfg.cross_dataset),
                             ("open_vocab.targets", cfg.open_vocab.targets)):
        for name, overlay in entries.items():
            if not NAME_RE.match(name) or name in RESERVED_NAMES:
                raise ConfigError(
                    f"'{section}.{name}': names must be letters, digits, '_' or '-' (they become DVC stage and "
                    f"folder names) and not one of {RESERVED_NAMES} (runs/{MAIN_VARIANT} holds the main runs, "
                    f"runs/cross the cross-dataset evaluations)"
                )
            if not isinstance(overlay, dict):
                raise ConfigError(f"'{section}.{name}' must be a partial parameter tree, got {overlay!r}")
    for name, overlay in cfg.ablation.items():
        try:
            config_from_dict(variant_dict(cfg.to_dict(), overlay), variant=True)
        except ConfigError as err:
            raise ConfigError(f"'ablation.{name}' gives an invalid configuration: {err}") from None
    for name in cfg.cross_dataset:
        cfg.cross_target(name)  # raises naming cross_dataset.<name>.<key>
    for name in cfg.open_vocab.targets:
        target = cfg.target("open_vocab", name)  # raises naming open_vocab.targets.<name>.<key>
        if target.dataset == "coco_json" and not target.coco_json.val_annotations:
            raise ConfigError(f"'open_vocab.targets.{name}.coco_json.val_annotations' is empty: a coco_json target "
                              "needs its validation annotations")


def check_open_vocab_model(cfg: Config) -> None:
    """With open-vocabulary targets, open_vocab.model must name an ablation variant trained on every class.

    A pipeline check, not part of `check`: the open-vocabulary stages run it before any work (the
    always-running inputs_open_vocab first; ldvc.pipeline.validate_stage_config), while a config whose
    ablation section was emptied (a library caller's, a test's, a repro of other stages) stays loadable."""
    ov = cfg.open_vocab
    if not ov.targets:
        return
    if ov.model not in cfg.ablation:
        raise ConfigError(
            f"'open_vocab.model' = {ov.model!r} is not an ablation variant (params.yaml 'ablation' has "
            f"{sorted(cfg.ablation)}): open-vocabulary targets evaluate a model trained on every class; name one, "
            "e.g. add ablation: {fully_supervised: {split: {unseen: []}}} and set open_vocab.model: fully_supervised"
        )
    unseen = cfg.variant(ov.model).split.unseen
    if unseen != []:
        raise ConfigError(
            f"'open_vocab.model' = {ov.model!r} holds classes out of training (its split.unseen is {unseen!r}): "
            f"open-vocabulary transfer evaluates a model trained on EVERY class; name a variant with "
            f"split: {{unseen: []}} (ablation.{ov.model}.split.unseen: [] or another variant)"
        )


# --------------------------------------------------------------------------------------------
# Dict helpers
# --------------------------------------------------------------------------------------------


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
