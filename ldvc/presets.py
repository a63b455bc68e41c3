"""Named parameter presets: `ldvc preset voc | coco_stuff | synthetic` rewrites params.yaml.

A preset (presets/<name>.yaml) is a partial parameter tree. Every preset sets the same keys, so
switching between them is exact and reversible (tests check this, and that `synthetic` reproduces
the committed default). params.yaml is edited in place with ruamel's round-trip loader, keeping
its comments, validated before it is written, and replaced atomically.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

from ldvc.config import ConfigError, config_from_dict, deep_merge, flatten

PRESET_DIR = Path("presets")


def available(preset_dir: Path = PRESET_DIR) -> list[str]:
    return sorted(p.stem for p in preset_dir.glob("*.yaml"))


def load_preset(name: str, preset_dir: Path = PRESET_DIR) -> dict[str, Any]:
    path = preset_dir / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown preset {name!r}: choose one of {available(preset_dir)} (files in {preset_dir}/)")
    return yaml.safe_load(path.read_text()) or {}


def apply_preset(name: str, params_path: Path = Path("params.yaml"), preset_dir: Path = PRESET_DIR) -> list[str]:
    """Merge preset `name` into params.yaml; returns the dotted keys whose value changed."""
    overlay = load_preset(name, preset_dir)
    rt = YAML()
    rt.preserve_quotes = True
    doc = rt.load(params_path.read_text())
    before = flatten(yaml.safe_load(params_path.read_text()))
    merged = deep_merge(yaml.safe_load(params_path.read_text()), overlay)
    config_from_dict(merged)  # validate before touching the file
    for key, value in flatten(overlay).items():
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
