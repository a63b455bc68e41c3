"""Parameters: strict typed loading, impossible values named before any work, presets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ldvc.config import ConfigError, config_from_dict, flatten, load_config, read_yaml
from ldvc.presets import apply_preset, available, load_preset
from ldvc.protocol import protocol_keys
from ldvc.validate import load_validated

REPO = Path(__file__).resolve().parents[1]


def _params() -> dict:
    return read_yaml((REPO / "params.yaml").read_text())


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
        load_validated(raw)


# Every numeric parameter has a range: a value outside it fails before any work, naming the key.
OUT_OF_RANGE = [
    ("train", "lr", -1.0), ("train", "lr", 0.0), ("train", "iters", 0), ("train", "weight_decay", -0.1),
    ("train", "lr_mult", 0.0), ("train", "warmup_iters", -1), ("train", "poly_power", 0.0),
    ("train", "min_lr", -1e-6), ("train", "grad_clip", 0.0), ("train", "checkpoint_every", 0),
    ("train", "log_every", 0), ("train", "num_workers", -1), ("train", "batch_size", 0),
    ("train", "per_device_batch", 0), ("decoder", "dropout", 1.0), ("decoder", "layers", 0),
    ("decoder", "heads", 0), ("decoder", "width", 0), ("decoder", "ffn", 0), ("decoder", "route_regions", 0),
    ("decoder", "route_topk", 0), ("loss", "focal_weight", -1.0), ("loss", "dice_weight", -1.0),
    ("loss", "focal_alpha", 1.5), ("loss", "focal_gamma", -1.0), ("eval", "seen_bias", -0.1),
    ("eval", "seen_bias", 2.0), ("eval", "window", 0), ("eval", "stride", 0), ("eval", "batch_size", 0),
    ("eval", "small_fragment_px", -1), ("eval", "num_visualize", -1), ("transductive", "iters", 0),
    ("transductive", "init_iter", 0), ("transductive", "pseudo_threshold", 1.0), ("prompt", "visual_tokens", -1),
    ("prompt", "visual_depth", -2), ("prompt", "text_tokens", -1), ("prompt", "text_depth", -3),
    ("encoder", "prompt_dropout", -0.1), ("encoder", "drop_path", 1.0), ("data", "image_size", 0),
    ("data", "num_workers", -1), ("project", "seed", -1),
]


@pytest.mark.parametrize(("section", "key", "value"), OUT_OF_RANGE, ids=[f"{s}.{k}={v}" for s, k, v in OUT_OF_RANGE])
def test_out_of_range_values_are_named(section, key, value):
    raw = _params()
    raw[section][key] = value
    with pytest.raises(ConfigError, match=rf"'{section}\.{key}' = .* out of range"):
        config_from_dict(raw)


@pytest.mark.parametrize(("tree", "message"), [
    ({"data": {"synthetic": {"train_images": 0}}}, "data.synthetic.train_images"),
    ({"clip": {"pretrain": {"lr": -1.0}}}, "clip.pretrain.lr"),
    ({"clip": {"pretrain": {"batch_size": 1}}}, "clip.pretrain.batch_size"),
    ({"seeds": [0, -1]}, "seeds"),
    ({"train": {"min_lr": 0.5}}, "train.min_lr"),
    ({"train": {"warmup_iters": 100000}}, "train.warmup_iters"),
    ({"train": {"augment": {"scale_min": 3.0}}}, "train.augment.scale_min"),
    ({"loss": {"focal_weight": 0.0, "dice_weight": 0.0}}, "loss.focal_weight"),
    ({"train": {"per_device_batch": 64}}, "train.per_device_batch"),
    ({"split": {"unseen": []}}, "fully supervised"),
    ({"cross_dataset": {"bad name": {}}}, "cross_dataset.bad name"),
    ({"cross_dataset": {"x": {"synthetic": {"world": "moon"}}}}, "cross_dataset.x.synthetic.world"),
    ({"decoder": {"width": 256, "heads": 4, "input_proj": False}}, "decoder.input_proj"),
    ({"project": {"protocol": "vocc"}}, "project.protocol"),
])
def test_relations_and_nested_ranges_are_named(tree, message):
    from ldvc.config import deep_merge

    raw = deep_merge(_params(), tree)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_validated(raw)


def test_yaml_1_2_as_dvc_writes_it(tmp_path):
    """DVC (ruamel, YAML 1.2) writes `no` unquoted and floats like 2e-05: both read as meant."""
    text = (REPO / "params.yaml").read_text().replace('mixed_precision: "no"', "mixed_precision: no")
    text = text.replace("lr: 0.0002", "lr: 2e-04")
    path = tmp_path / "params.yaml"
    path.write_text(text)
    cfg = load_config(path)
    assert cfg.train.mixed_precision == "no" and cfg.train.lr == pytest.approx(2e-4)


def test_unknown_section_and_bad_ablation_variant():
    raw = _params()
    raw["decodr"] = {}
    with pytest.raises(ConfigError, match="unknown parameter 'decodr'"):
        config_from_dict(raw)
    raw = _params()
    raw["ablation"]["broken"] = {"decoder": {"route_topk": 99}}
    with pytest.raises(ConfigError, match="ablation.broken"):
        config_from_dict(raw)


def test_presets_define_their_protocols_and_synthetic_is_the_committed_default():
    names = available(REPO / "presets")
    assert {"voc", "coco_stuff", "context59", "synthetic"} <= set(names)
    keysets = {n: {k for k in flatten(load_preset(n, REPO / "presets")) if not k.startswith("cross_dataset")}
               for n in names}
    real = [n for n in names if n != "synthetic"]
    assert all(keysets[n] == keysets[real[0]] for n in real), keysets  # the paper presets set the same keys
    assert keysets[real[0]] <= keysets["synthetic"]  # synthetic adds its world and its CLIP's pre-training
    for name in names:  # every protocol-defining key is set by every preset, none left to drift
        values = flatten(load_preset(name, REPO / "presets"))
        assert values["project.protocol"] == name
        assert len(protocol_keys(values)) >= 40, name
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
    cfg = load_config(params)
    assert sorted(cfg.cross_dataset) == ["context59", "voc"] and cfg.project.protocol == "coco_stuff"
    apply_preset("synthetic", params, REPO / "presets")
    assert read_yaml(params.read_text()) == read_yaml(original)


def test_unknown_preset_names_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="voc"):
        load_preset("vocc", REPO / "presets")
