"""Named parameter presets: `ldvc preset voc | coco_stuff | context59 | synthetic` rewrites params.yaml.

A preset (presets/<name>.yaml) is a partial parameter tree that sets every protocol-defining key
(ldvc/protocol.py) of its protocol, so switching between presets is exact and reversible (tests
check this, and that `synthetic` reproduces the committed default). Sections that are mappings of
named entries (`cross_dataset`, `ablation`, `open_vocab`) are replaced wholesale, not merged, so one
preset's variants or targets never linger in another's. params.yaml is edited in place with ruamel's
round-trip loader (YAML 1.2, as DVC), keeping its comments, validated before it is written, and
replaced atomically.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from ldvc.baseline import ZEGCLIP_BASELINE
from ldvc.config import Config, ConfigError, config_from_dict, deep_merge, flatten, read_yaml

PRESET_DIR = Path(__file__).resolve().parents[1] / "presets"  # the presets of this code tree
# Sections of named entries: replaced wholesale by a preset (so one preset's ablation variants or
# targets never linger in another's); every preset sets each of them.
REPLACED_SECTIONS = ("cross_dataset", "ablation", "open_vocab")


def available(preset_dir: Path = PRESET_DIR) -> list[str]:
    return sorted(p.stem for p in preset_dir.glob("*.yaml"))


def load_preset(name: str, preset_dir: Path = PRESET_DIR) -> dict[str, Any]:
    path = preset_dir / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown preset {name!r}: choose one of {available(preset_dir)} (files in {preset_dir}/)")
    return read_yaml(path.read_text(), str(path)) or {}


def apply_preset(name: str, params_path: Path = Path("params.yaml"), preset_dir: Path = PRESET_DIR) -> list[str]:
    """Merge preset `name` into params.yaml; returns the dotted keys whose value changed."""
    overlay = load_preset(name, preset_dir)
    rt = YAML()
    rt.preserve_quotes = True
    doc = rt.load(params_path.read_text())
    current = read_yaml(params_path.read_text(), str(params_path)) or {}
    before = flatten(current)
    merged = deep_merge(current, overlay)
    for section in REPLACED_SECTIONS:
        if section in overlay:
            merged[section] = overlay[section]
    from ldvc.validate import validate_run

    try:
        validate_run(config_from_dict(merged), preset_dir=preset_dir)  # before touching the file
    except ConfigError as err:
        raise ConfigError(f"preset {name!r} would make {params_path} invalid: {err}") from None
    for key, value in overlay.items():
        if key in REPLACED_SECTIONS:
            doc[key] = value
    for key, value in flatten({k: v for k, v in overlay.items() if k not in REPLACED_SECTIONS}).items():
        _assign(doc, key.split("."), value)
    buf = io.StringIO()
    rt.dump(doc, buf)
    fd, tmp = tempfile.mkstemp(dir=params_path.parent, prefix=".params.", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(buf.getvalue())
    os.replace(tmp, params_path)
    return sorted(k for k, v in flatten(overlay).items() if before.get(k) != v)


def _assign(node: Any, parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        if part not in node or node[part] is None:
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def add_preset_arguments(p) -> None:  # argparse.ArgumentParser
    p.add_argument("name", help="preset name: one of the files in presets/ (voc, coco_stuff, synthetic)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file to rewrite")
    p.add_argument("--presets", type=Path, default=PRESET_DIR, help="folder of preset files")


def run_preset(args) -> int:  # argparse.Namespace
    changed = apply_preset(args.name, args.params, args.presets)
    print(f"{args.params}: preset {args.name!r} applied, {len(changed)} value(s) changed"
          + (": " + ", ".join(changed) if changed else ""))
    print("next: dvc repro   (or dvc exp run to keep the workspace's params as the baseline)")
    return 0


def zegclip_preset_config(preset: str, params: Path | None = None, preset_dir: Path = PRESET_DIR,
                          image_size: int | None = None) -> Config:
    """The preset's protocol config (merged over `params` when given) as its ZegCLIP baseline
    (ldvc/baseline.py: the zegclip decoder and no text prompts), as the importer and the parameter
    counts build it."""
    base = read_yaml(params.read_text(), str(params)) if params is not None and params.is_file() else {}
    merged = deep_merge(base or {}, load_preset(preset, preset_dir))
    merged = deep_merge(merged, ZEGCLIP_BASELINE)
    merged["ablation"], merged["cross_dataset"] = {}, {}
    if image_size is not None:
        merged["data"]["image_size"] = image_size
    try:
        return config_from_dict(merged)
    except ConfigError as err:
        raise ConfigError(f"preset {preset!r}: {err}") from None
