"""The CLIP a preset builds is the CLIP its weights were trained as (issue 17, item 1).

OpenAI's CLIP uses QuickGELU; open_clip's `ViT-B-16` config builds nn.GELU (open_clip 3.3 only
warns for the `openai` tag and says nothing for a file). These tests compare what the project's own
loader builds for the paper presets with what open_clip's OWN OpenAI loaders build from the same
weights — `open_clip.load_openai_model` for OpenAI's TorchScript archive, `create_model(
"ViT-B-16-quickgelu", pretrained=...)` for a state-dict copy — so they do not restate our reading.
No real CLIP weights can be downloaded here: the weights are random ViT-B/16 tensors written in
OpenAI's release format (a TorchScript archive of fp16 tensors under OpenAI's key names, with its
input_resolution / context_length / vocab_size entries) and in the Hugging Face cache layout
open_clip reads for the `openai` tag.
"""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch

from ldvc.config import config_from_dict, deep_merge, load_config
from ldvc.model.build import build_clip
from ldvc.model.clip_activation import ActivationError, openai_releases, resolve_activation
from ldvc.model.clip_loader import built_activation, create_clip
from ldvc.model.clip_weights import resolve_weights
from ldvc.presets import load_preset

PAPER_PRESETS = ("voc", "coco_stuff", "context59")
HF_REPO = "models--timm--vit_base_patch16_clip_224.openai"  # open_clip's hf_hub of ViT-B-16/openai


class _Archive(torch.nn.Module):
    """A TorchScript module holding tensors under OpenAI's CLIP key names (its release layout)."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for key, value in state.items():
            *path, leaf = key.split(".")
            module = self
            for part in path:
                if not hasattr(module, part):
                    setattr(module, part, torch.nn.Module())
                module = getattr(module, part)
            module.register_buffer(leaf, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.fixture(scope="module")
def openai_weights(tmp_path_factory) -> dict[str, Path]:
    """Random ViT-B/16 weights as OpenAI's TorchScript archive and as open_clip's HF-cache copy."""
    root = tmp_path_factory.mktemp("openai")
    torch.manual_seed(0)
    source = open_clip.create_model("ViT-B-16-quickgelu")
    state = {k: v.detach().half() if v.is_floating_point() else v for k, v in source.state_dict().items()}
    extras = {"input_resolution": torch.tensor(224), "context_length": torch.tensor(77),
              "vocab_size": torch.tensor(49408)}
    jit_path = root / "ViT-B-16.pt"
    torch.jit.save(torch.jit.script(_Archive({**state, **extras})), str(jit_path))
    hf_file = root / "hf" / "hub" / HF_REPO / "snapshots" / "abc123" / "open_clip_pytorch_model.bin"
    hf_file.parent.mkdir(parents=True)
    (root / "hf" / "hub" / HF_REPO / "refs").mkdir()
    (root / "hf" / "hub" / HF_REPO / "refs" / "main").write_text("abc123")
    torch.save({k: v.float() for k, v in source.state_dict().items()}, hf_file)
    # what open_clip's own loaders build from these files (computed once: ViT-B/16 builds take seconds)
    archive_ref = open_clip.load_openai_model(str(jit_path), precision="fp32", device="cpu").eval()
    quick_ref = open_clip.create_model("ViT-B-16-quickgelu", pretrained=str(hf_file)).eval()
    gelu = open_clip.create_model("ViT-B-16", pretrained=str(hf_file)).eval()
    return {"jit": jit_path, "hf_home": root / "hf", "hf_file": hf_file,
            "archive_ref": (built_activation(archive_ref), _features(archive_ref)),
            "quick_ref": (built_activation(quick_ref), _features(quick_ref)),
            "gelu": (built_activation(gelu), _features(gelu))}


def _preset_cfg(name: str, **clip):
    raw = deep_merge(load_config("params.yaml").to_dict(), load_preset(name))
    raw["clip"].update(clip)
    return config_from_dict(raw)


@torch.no_grad()
def _features(model) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    image = torch.randn(1, 3, 224, 224, generator=g)
    text = open_clip.get_tokenizer("ViT-B-16")(["a photo of a sheep", "a photo of a tvmonitor"])
    return model.encode_image(image), model.encode_text(text)


def _assert_same(model, reference: tuple[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    activation, (ref_img, ref_txt) = reference
    assert built_activation(model) == activation == "quick_gelu"
    img, txt = _features(model)
    assert torch.equal(img, ref_img) and torch.equal(txt, ref_txt), (
        (img - ref_img).abs().max().item(), (txt - ref_txt).abs().max().item())


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_preset_clip_from_openais_archive_equals_open_clips_openai_loader(preset, openai_weights):
    """OpenAI's own TorchScript `.pt`: the preset's CLIP (through build_clip, what training and evaluation
    call) equals open_clip.load_openai_model (open_clip 3.3.0 src/open_clip/openai.py lines 24-90: it builds
    with build_model_from_openai_state_dict(quick_gelu=True), src/open_clip/model.py line 717-720), both with
    the preset's explicit `clip.activation: quick_gelu` and with `auto` (the archive format decides)."""
    activations = ("quick_gelu", "auto") if preset == "voc" else ("quick_gelu",)  # auto: once is enough
    for activation in activations:
        cfg = _preset_cfg(preset, pretrained=str(openai_weights["jit"]), activation=activation)
        _assert_same(build_clip(cfg, openai_weights["jit"]), openai_weights["archive_ref"])


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_preset_clip_from_the_openai_tag_equals_open_clips_quickgelu_model(preset, openai_weights, monkeypatch):
    """The preset as written (`pretrained: openai`, resolved from the Hugging Face cache as on a machine that
    downloaded it) equals open_clip.create_model("ViT-B-16-quickgelu", pretrained=<the same file>)."""
    monkeypatch.setenv("HF_HOME", str(openai_weights["hf_home"]))
    cfg = _preset_cfg(preset)
    assert (cfg.clip.model, cfg.clip.pretrained) == ("ViT-B-16", "openai")
    rec = resolve_weights(cfg.clip.model, cfg.clip.pretrained, Path.cwd())
    assert Path(rec["path"]) == openai_weights["hf_file"].resolve()
    _assert_same(build_clip(cfg, rec["path"]), openai_weights["quick_ref"])
    # ... which is not what open_clip's plain `ViT-B-16` builds from the same file (the trap of item 1)
    activation, (gelu_img, gelu_txt) = openai_weights["gelu"]
    assert activation == "gelu"
    assert (openai_weights["quick_ref"][1][1] - gelu_txt).abs().max() > 1e-3


def test_open_clip_registry_facts_the_rule_rests_on():
    """open_clip 3.3.0 src/open_clip/pretrained.py lines 231-236: ViT-B-16/openai has quick_gelu=True and its
    url names the file's sha256 (openai/CLIP clip/clip.py `_download` checks `expected_sha256 =
    url.split("/")[-2]`); lines 238-245: the LAION-400M ViT-B-16 releases have no quick_gelu (GELU);
    src/open_clip/model_configs/ViT-B-16.json has no quick_gelu key, so the plain config builds nn.GELU."""
    assert open_clip.get_pretrained_cfg("ViT-B-16", "openai")["quick_gelu"] is True
    assert not open_clip.get_pretrained_cfg("ViT-B-16", "laion400m_e32").get("quick_gelu", False)
    assert "quick_gelu" not in open_clip.get_model_config("ViT-B-16")
    assert openai_releases()["5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"] == "ViT-B-16/openai"
    assert "openai" in open_clip.list_pretrained_tags_by_model("ViT-B-16-quickgelu")


def test_quick_gelu_is_zegclips_activation():
    """ZegCLIP models/backbone/utils.py lines 124-126 (commit 9ba4bb5): QuickGELU(x) = x * sigmoid(1.702 x),
    used by its ResidualAttentionBlock (line 151). The MLP of the CLIP we build for the presets computes
    exactly that, not nn.GELU (which differs by up to ~2e-2 on [-4, 4])."""
    torch.manual_seed(0)
    model = create_clip("ldvc-tiny-vit", activation="quick_gelu")
    x = torch.linspace(-4, 4, 101)
    act = model.visual.transformer.resblocks[0].mlp.gelu
    assert torch.allclose(act(x), x * torch.sigmoid(1.702 * x), atol=0, rtol=0)
    assert (torch.nn.functional.gelu(x) - x * torch.sigmoid(1.702 * x)).abs().max() > 1e-2


def test_a_local_file_of_unknown_origin_is_an_error_naming_both_choices(tmp_path):
    """A state-dict file (not OpenAI's archive, not a file OpenAI released) for ViT-B-16, whose open_clip
    releases exist with both activations: no silent guess."""
    path = tmp_path / "ViT-B-16.safetensors"
    path.write_bytes(b"not a release")
    with pytest.raises(ActivationError) as err:
        resolve_activation("ViT-B-16", str(path), "auto", path)
    assert "clip.model: ViT-B-16-quickgelu" in str(err.value) and "clip.activation: gelu" in str(err.value)
    # the two choices work
    assert resolve_activation("ViT-B-16-quickgelu", str(path), "auto", path)[0] == "quick_gelu"
    assert resolve_activation("ViT-B-16", str(path), "gelu", path) == ("gelu", "clip.activation")


def test_an_explicit_activation_that_contradicts_the_weights_is_an_error(openai_weights, tmp_path):
    with pytest.raises(ActivationError, match="TorchScript archive"):
        resolve_activation("ViT-B-16", str(openai_weights["jit"]), "gelu", openai_weights["jit"])
    with pytest.raises(ActivationError, match="pretrained tag ViT-B-16/openai"):
        resolve_activation("ViT-B-16", "openai", "gelu", openai_weights["hf_file"])
    with pytest.raises(ActivationError, match="QuickGELU config"):
        resolve_activation("ViT-B-16-quickgelu", "x.safetensors", "gelu", None)
    # a LAION tag is GELU: asking for QuickGELU with it is refused too
    with pytest.raises(ActivationError, match="laion400m_e32 was trained with gelu"):
        resolve_activation("ViT-B-16", "laion400m_e32", "quick_gelu", None)


def test_the_pipelines_small_clip_keeps_its_configs_activation(tmp_path):
    assert resolve_activation("ldvc-tiny-vit", "pipeline", "auto")[0] == "gelu"
    path = tmp_path / "clip.safetensors"
    path.write_bytes(b"x")  # a custom config has no other releases: its own activation is known
    assert resolve_activation("ldvc-tiny-vit", str(path), "auto", path)[0] == "gelu"
