"""Protocol conformance: which results may stand unmarked beside published numbers.

A protocol is named by `project.protocol` and defined by the preset of that name
(presets/<name>.yaml): its values of the PROTOCOL-DEFINING keys below are the protocol. Every
evaluation records the keys whose value differs from the protocol's (`deviations`); tables mark
such rows `[R*]` with a footnote listing them, and MLflow carries them as tags. The most common
complaint in ZegCLIP-lineage issue trackers ("my numbers are below the paper") comes from exactly
such silent differences (ZegCLIP #7: mask weight 20 vs 100; #20: global batch 8 vs 16).

Our choices:
- The defining keys are the benchmark's procedure (data, split, input size, CLIP, schedule, batch,
  optimiser, loss, augmentation, prompts' size, decoder sizes, evaluation mode/stride/calibration/
  vocabulary). Method knobs (decoder type, route attention, text prompts) are NOT protocol keys: the
  `zegclip` baseline and LDVC follow the same protocol. Seeds are not either: rows list their seeds.
- A run's deviations compare the TRAINING keys of the checkpoint it evaluates (its recorded
  config) and the EVALUATION keys of the evaluation's own config, so evaluating an imported or
  foreign checkpoint is judged by how that checkpoint was trained.
- The synthetic default is its own protocol (presets/synthetic.yaml), including the synthetic
  world and the small CLIP's pre-training.
- What a CONFORMANT run still does differently from the upstream code a preset reproduces is listed
  once per preset in docs/deviations.md (section `## <preset>`); `deviations_link` gives the anchor
  the tables' footnotes and the README point to.
This module imports only ldvc.config (no model/data code), so reports can use it anywhere.
"""

from __future__ import annotations

import fnmatch
from functools import lru_cache
from pathlib import Path
from typing import Any

from ldvc.config import ConfigError, flatten, read_yaml

# Dotted keys (fnmatch patterns) that define a protocol; each preset must set every one of them.
TRAINING_KEYS: tuple[str, ...] = (
    "data.dataset", "data.image_size", "split.unseen", "clip.model", "clip.pretrained", "clip.activation",
    "prompt.visual_tokens", "prompt.visual_depth", "prompt.templates",
    "encoder.*",
    "decoder.layers", "decoder.heads", "decoder.width", "decoder.ffn", "decoder.dropout", "decoder.input_proj",
    "decoder.init",
    "loss.*",
    "train.iters", "train.batch_size", "train.lr", "train.lr_mult", "train.weight_decay", "train.warmup_iters",
    "train.poly_power", "train.min_lr", "train.grad_clip", "train.augment.*", "train.mixed_precision",
    "transductive.init_iter", "transductive.iters", "transductive.pseudo_threshold",
)
EVALUATION_KEYS: tuple[str, ...] = ("eval.mode", "eval.window", "eval.stride", "eval.seen_bias", "eval.vocabulary",
                                   "eval.mixed_precision")
# Only the synthetic protocol defines its world and the pre-training of its CLIP.
SYNTHETIC_KEYS: tuple[str, ...] = ("data.synthetic.train_images", "data.synthetic.val_images",
                                   "data.synthetic.min_objects", "data.synthetic.max_objects",
                                   "data.synthetic.seed", "data.synthetic.world", "clip.pretrain.*")


DEVIATIONS_DOC = "docs/deviations.md"


def deviations_link(protocol: str) -> str:
    """Where a preset's remaining differences from its upstream code are listed (one section each)."""
    return f"{DEVIATIONS_DOC}#{protocol}"


def protocol_keys(protocol_values: dict[str, Any]) -> list[str]:
    """The flat keys of a preset that define its protocol."""
    patterns = TRAINING_KEYS + EVALUATION_KEYS
    if protocol_values.get("data.dataset") == "synthetic":
        patterns += SYNTHETIC_KEYS
    return sorted(k for k in protocol_values if any(fnmatch.fnmatchcase(k, p) for p in patterns))


def is_evaluation_key(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in EVALUATION_KEYS)


def known_protocols(preset_dir: Path) -> list[str]:
    return sorted(p.stem for p in Path(preset_dir).glob("*.yaml"))


@lru_cache(maxsize=32)
def _preset_values(path: str, mtime_ns: int) -> dict[str, Any]:
    raw = read_yaml(Path(path).read_text(), path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a preset is a mapping of parameter sections")
    return flatten(raw)


def protocol_values(name: str, preset_dir: Path) -> dict[str, Any]:
    """{dotted key: value} of protocol `name` (presets/<name>.yaml, defining keys only)."""
    path = Path(preset_dir) / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"protocol {name!r}: no preset {path}; choose one of {known_protocols(preset_dir)}")
    values = _preset_values(str(path), path.stat().st_mtime_ns)
    return {k: values[k] for k in protocol_keys(values)}


def deviations(name: str, preset_dir: Path, train_config: dict[str, Any],
               eval_config: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """{key: {"value": run's, "protocol": protocol's}} for every defining key that differs.

    `train_config` is the config the model was trained with (a checkpoint's), `eval_config` the
    evaluation's (defaults to train_config); both are nested dicts as Config.to_dict() gives."""
    expected = protocol_values(name, preset_dir)
    train_flat = flatten(train_config)  # empty lists stay leaves: split.unseen: [] is a value
    eval_flat = flatten(eval_config if eval_config is not None else train_config)
    out: dict[str, dict[str, Any]] = {}
    for key, want in expected.items():
        have = (eval_flat if is_evaluation_key(key) else train_flat).get(key, _MISSING)
        if not _same(have, want):
            out[key] = {"value": None if have is _MISSING else have, "protocol": want}
    return out


def describe(devs: dict[str, dict[str, Any]]) -> str:
    """'train.iters=4 (protocol: 20000), data.image_size=64 (protocol: 512)'."""
    return ", ".join(f"{k}={_short(v['value'])} (protocol: {_short(v['protocol'])})" for k, v in sorted(devs.items()))


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
    return a == b


def _short(v: Any) -> str:
    text = str(v)
    return text if len(text) <= 60 else text[:57] + "..."
