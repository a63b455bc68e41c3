"""Validation reads the decoder names and CLIP architectures without importing the model code
(ldvc/validate.py): the two facts it re-reads are pinned against what the code and open_clip decide,
and a stage that builds no model starts without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ldvc import validate
from ldvc.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def test_decoder_names_are_the_registry() -> None:
    """A decoder registered in ldvc.model (ldvc/model/decoders.py register_decoder, imported by
    ldvc/model/build.py) must be known to validation, and nothing else."""
    from ldvc.model.build import DECODERS

    assert set(validate.DECODER_TYPES) == set(DECODERS), (
        "ldvc/validate.py DECODER_TYPES must list exactly the registered decoders")


def test_clip_configs_are_what_open_clip_returns_for_every_model() -> None:
    """open_clip 3.3.0 src/open_clip/factory.py: `_MODEL_CONFIG_PATHS` (line 24) is its model_configs
    folder; `_rescan_model_configs` (lines 32-48) keys each JSON holding embed_dim / vision_cfg /
    text_cfg by file stem, later paths overwriting earlier ones; `add_model_config` (line 61) appends
    a path (ldvc.model.clip_loader.register_configs adds ldvc's); `get_model_config` (line 135)
    returns the entry or None. Our reader must agree on every name, ldvc's configs included. In a
    fresh process, as a stage sees open_clip (tests may register configs of their own in this one)."""
    code = """
import json, open_clip
from ldvc.model.clip_loader import register_configs
from ldvc.validate import clip_model_config
register_configs()
names = open_clip.list_models()
names += ["ViT-B-17", "vit-b-16", ""]
print(json.dumps({"names": names, "differ": [n for n in names if clip_model_config(n) != open_clip.get_model_config(n)],
                  "none": [n for n in names if clip_model_config(n) is None]}))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert {"ViT-B-16", "ViT-B-16-quickgelu", "ldvc-tiny-vit"} <= set(out["names"]) and len(out["names"]) > 50
    assert out["differ"] == []
    assert out["none"] == ["ViT-B-17", "vit-b-16", ""]


def test_ldvc_config_shadows_open_clips_of_the_same_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As open_clip's rescan leaves it: a config in ldvc's folder wins over open_clip's own file of the
    same stem; one without the required keys is ignored."""
    own = tmp_path / "configs"
    own.mkdir()
    base = validate.clip_model_config("ViT-B-16")
    assert base is not None
    (own / "ViT-B-16.json").write_text(json.dumps({**base, "embed_dim": 640}))
    (own / "ViT-B-32.json").write_text(json.dumps({"vision_cfg": {}}))  # no embed_dim / text_cfg
    monkeypatch.setattr(validate, "LDVC_CLIP_CONFIGS", own)
    assert validate.clip_model_config("ViT-B-16")["embed_dim"] == 640
    assert validate.clip_model_config("ViT-B-32")["embed_dim"] == 512  # open_clip's file


def test_model_checks_still_fail_naming_the_key() -> None:
    cfg = load_config(REPO / "params.yaml")
    cfg.decoder.type = "segformer"
    with pytest.raises(ConfigError, match=r"'decoder.type' = 'segformer' is not a registered decoder"):
        validate.validate_run(cfg)
    cfg = load_config(REPO / "params.yaml")
    cfg.data.image_size = 65  # ldvc-tiny-vit's patch is 8: read from its JSON config
    with pytest.raises(ConfigError, match=r"'data.image_size' = 65 is not a multiple of the patch size"):
        validate.validate_run(cfg)


@pytest.mark.parametrize("params", ["params.yaml", "presets/voc.yaml", "presets/coco_stuff.yaml",
                                    "presets/open_vocab.yaml"])
def test_a_stage_validates_without_importing_torch(params: str) -> None:
    """What download / split / the target preparations pay before any work: validation of the whole
    configuration (every ablation variant and target) imports neither torch nor open_clip."""
    code = ("import sys; from ldvc.config import load_config; from ldvc.validate import validate_run; "
            f"validate_run(load_config({str(REPO / params)!r})); "
            "print(sorted(m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
