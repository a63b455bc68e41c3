"""Parameters: strict typed loading, impossible values named before any work, presets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from ldvc.config import ConfigError, config_from_dict, flatten, load_config
from ldvc.presets import apply_preset, available, load_preset

REPO = Path(__file__).resolve().parents[1]


def _params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_committed_params_load_and_every_ablation_variant_is_valid():
    cfg = load_config(REPO / "params.yaml")
    assert cfg.data.dataset == "synthetic"
    assert cfg.decoder.route_topk <= cfg.decoder.route_regions**2
    for name in cfg.ablation:
        variant = cfg.variant(name)
        assert variant.ablation == {}
    assert cfg.variant("zegclip").decoder.type == "zegclip"


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("decoder", "route_topk", 17, "decoder.route_topk"),
        ("decoder", "route_regions", 3, "decoder.route_regions"),
        ("decoder", "rout_topk", 2, "unknown parameter 'decoder.rout_topk'"),
        ("decoder", "type", "segformer", "decoder.type"),
        ("train", "iters", "many", "train.iters"),
        ("train", "mixed_precision", "fp8", "train.mixed_precision"),
        ("eval", "stride", 1000, "eval.stride"),
        ("transductive", "init_iter", 7, "transductive.init_iter"),
        ("split", "unseen", "some", "split.unseen"),
        ("split", "unseen", ["striped purple", "dotted magenta"], "dotted magenta"),
    ],
)
def test_bad_values_are_named(section, key, value, message):
    raw = _params()
    raw[section][key] = value
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        config_from_dict(raw)


def test_unknown_section_and_bad_ablation_variant():
    raw = _params()
    raw["decodr"] = {}
    with pytest.raises(ConfigError, match="unknown parameter 'decodr'"):
        config_from_dict(raw)
    raw = _params()
    raw["ablation"]["broken"] = {"decoder": {"route_topk": 99}}
    with pytest.raises(ConfigError, match="ablation.broken"):
        config_from_dict(raw)


def test_presets_set_the_same_keys_and_synthetic_is_the_committed_default():
    names = available(REPO / "presets")
    assert {"voc", "coco_stuff", "synthetic"} <= set(names)
    keysets = {n: set(flatten(load_preset(n, REPO / "presets"))) for n in names}
    assert all(k == keysets["synthetic"] for k in keysets.values()), keysets
    params = flatten(_params())
    for key, value in flatten(load_preset("synthetic", REPO / "presets")).items():
        assert params[key] == value, key


def test_switching_presets_is_reversible_and_keeps_comments(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    original = params.read_text()
    changed = apply_preset("voc", params, REPO / "presets")
    cfg = load_config(params)
    assert (cfg.data.dataset, cfg.clip.model, cfg.data.image_size, cfg.decoder.width) == ("voc", "ViT-B-16", 512, 512)
    assert "decoder.width" in changed
    assert "# Every knob of the pipeline" in params.read_text()
    apply_preset("coco_stuff", params, REPO / "presets")
    assert len(load_config(params).prompt.templates) == 15
    apply_preset("synthetic", params, REPO / "presets")
    assert yaml.safe_load(params.read_text()) == yaml.safe_load(original)


def test_unknown_preset_names_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="voc"):
        load_preset("vocc", REPO / "presets")


def test_bare_no_written_back_by_dvc_is_read_as_the_string_no():
    raw = _params()
    raw["train"]["mixed_precision"] = False  # what `mixed_precision: no` parses to
    assert config_from_dict(raw).train.mixed_precision == "no"
