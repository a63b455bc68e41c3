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
    # Sections of named entries (targets, variants) are each preset's own choice, not shared keys.
    named = ("cross_dataset", "ablation", "open_vocab")
    keysets = {n: {k for k in flatten(load_preset(n, REPO / "presets")) if not k.startswith(named)}
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
    assert sorted(cfg.cross_dataset) == ["context60", "voc"] and cfg.project.protocol == "coco_stuff"
    apply_preset("synthetic", params, REPO / "presets")
    assert read_yaml(params.read_text()) == read_yaml(original)


def test_unknown_preset_names_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="voc"):
        load_preset("vocc", REPO / "presets")


# --------------------------------------------------------------------------------------------
# Open-vocabulary transfer (params.yaml `open_vocab`, issue 20)
# --------------------------------------------------------------------------------------------


def _with_open_vocab(model: str, targets: dict, ablation: dict | None = None) -> dict:
    raw = _params()
    raw["open_vocab"] = {"model": model, "targets": targets}
    if ablation is not None:
        raw["ablation"] = ablation
    return raw


WIDE = {"wide": {"synthetic": {"world": "wide", "val_images": 21}}}


@pytest.mark.parametrize(("model", "targets", "ablation", "message"), [
    ("nope", WIDE, None, "'open_vocab.model' = 'nope' is not an ablation variant"),
    ("no_route", WIDE, None, "'open_vocab.model' = 'no_route' holds classes out of training"),
    ("fully_supervised", WIDE, {"zegclip": {"decoder": {"type": "zegclip"}}}, "open_vocab.model"),
    ("fully_supervised", {"x": {"synthetic": {"world": "moon"}}}, None, "open_vocab.targets.x.synthetic.world"),
    ("fully_supervised", {"x": {"datset": "voc"}}, None, "unknown parameter 'open_vocab.targets.x.datset'"),
    ("fully_supervised", {"bad name": {}}, None, "open_vocab.targets.bad name"),
    ("fully_supervised", {"ldvc": {}}, None, "open_vocab.targets.ldvc"),
    ("fully_supervised", {"x": {"dataset": "coco_json"}}, None, "open_vocab.targets.x.coco_json.val_annotations"),
])
def test_open_vocab_section_is_checked_before_any_work(model, targets, ablation, message):
    """The evaluated model must be an ablation variant trained on EVERY class (checked before any stage's
    work: ldvc.pipeline.validate_stage_config); each target must be a valid partial `data` section with a
    path-safe name (checked on loading); errors name the key."""
    from ldvc.pipeline import validate_stage_config

    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        validate_stage_config(load_validated(_with_open_vocab(model, targets, ablation)), REPO / "presets",
                              open_vocab=True)


def test_an_emptied_ablation_section_still_loads_as_a_library_config():
    """Library callers and tests empty `ablation` to build one model: the config loads and the stages
    that do not touch the open-vocabulary targets run; those that do refuse it before any work."""
    from ldvc.pipeline import validate_stage_config

    raw = _params()
    raw["ablation"] = {}
    cfg = load_validated(raw)
    assert cfg.open_vocab.targets and not cfg.ablation
    validate_stage_config(cfg, REPO / "presets")  # the other stages (a repro of evaluate_inductive) run
    with pytest.raises(ConfigError, match="'open_vocab.model' = 'fully_supervised' is not an ablation variant"):
        validate_stage_config(cfg, REPO / "presets", open_vocab=True)


def test_open_vocab_targets_merge_over_data_and_variants_carry_none():
    cfg = load_validated(_with_open_vocab("fully_supervised", WIDE))
    target = cfg.target("open_vocab", "wide")
    assert (target.dataset, target.synthetic.world, target.synthetic.val_images) == ("synthetic", "wide", 21)
    assert target.root == "data/open_vocab/wide" and target.image_size == cfg.data.image_size
    assert cfg.target("cross_dataset", "shifted").root == "data/cross/shifted"  # the cross section is unchanged
    variant = cfg.variant("fully_supervised")
    assert variant.fully_supervised and variant.open_vocab.targets == {}
    # without targets the model is not checked (a preset without open-vocabulary targets needs no variant)
    from ldvc.pipeline import validate_stage_config

    validate_stage_config(load_validated(_with_open_vocab("anything", {}, ablation={})), REPO / "presets",
                          open_vocab=True)
    with pytest.raises(ConfigError, match="unknown target 'nope'"):
        cfg.target("open_vocab", "nope")


def test_committed_default_evaluates_the_fully_supervised_variant_on_the_wide_world():
    cfg = load_config(REPO / "params.yaml")
    assert cfg.open_vocab.model == "fully_supervised" and cfg.variant("fully_supervised").split.unseen == []
    assert {name: cfg.target("open_vocab", name).synthetic.world for name in cfg.open_vocab.targets} == {"wide": "wide"}


OPEN_VOCAB_TARGETS = {"A-847": "ade20k_847", "PC-459": "context459", "A-150": "ade20k_150", "PC-59": "context59",
                      "PAS-20": "voc", "PAS-21": "voc21"}


def test_open_vocab_preset_is_coco_stuffs_protocol_with_every_target():
    """presets/open_vocab.yaml: COCO-Stuff's training and evaluation keys exactly (its own protocol name), the
    ablation trimmed to the every-class variant, cross_dataset empty, the six targets as the papers name them."""
    preset = load_preset("open_vocab", REPO / "presets")
    coco = flatten(load_preset("coco_stuff", REPO / "presets"))
    values = flatten(preset)
    keys = protocol_keys(coco)
    assert keys == protocol_keys(values) and len(keys) >= 40
    assert {k: values[k] for k in keys} == {k: coco[k] for k in keys}
    assert values["project.protocol"] == "open_vocab" and preset["cross_dataset"] == {}
    assert preset["ablation"] == {"fully_supervised": {"split": {"unseen": []}}}
    assert preset["open_vocab"]["model"] == "fully_supervised"
    assert {k: v["dataset"] for k, v in preset["open_vocab"]["targets"].items()} == OPEN_VOCAB_TARGETS
    cfg = load_validated(_preset_over_params(preset))
    assert cfg.variant("fully_supervised").data.dataset == "coco_stuff"
    assert {n: cfg.target("open_vocab", n).dataset for n in cfg.open_vocab.targets} == OPEN_VOCAB_TARGETS


def _preset_over_params(preset: dict) -> dict:
    """The preset over params.yaml with its named sections replaced wholesale (what applying it must give)."""
    from ldvc.config import deep_merge

    raw = deep_merge(_params(), preset)
    for section in ("cross_dataset", "ablation", "open_vocab"):
        raw[section] = preset[section]
    return raw


def test_applying_the_open_vocab_preset_replaces_its_named_sections(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    apply_preset("open_vocab", params, REPO / "presets")
    cfg = load_config(params)
    assert sorted(cfg.ablation) == ["fully_supervised"]
    assert {n: cfg.target("open_vocab", n).dataset for n in cfg.open_vocab.targets} == OPEN_VOCAB_TARGETS
