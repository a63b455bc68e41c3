"""`ldvc import-zegclip`: ZegCLIP's released checkpoints (mmseg state dicts, VOC preset, ViT-B/16)
become ldvc checkpoints: strict key checks, nothing silently dropped, unused tensors reported by
name, safe loading, the frozen CLIP compared with ours."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from test_zegclip_faithful import _zegclip_state

from ldvc.data.classes import VOC_CLASSES
from ldvc.model.build import build_segmentor
from ldvc.model.clip_loader import create_clip
from ldvc.model.param_count import count_parameters
from ldvc.model.zegclip_layout import zegclip_layout
from ldvc.presets import zegclip_preset_config
from ldvc.train.checkpoint import load_checkpoint
from ldvc.zegclip_import import ZegCLIPImportError, import_state, import_zegclip, load_state_dict

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def voc():
    torch.manual_seed(0)
    clip = create_clip("ViT-B-16")  # random weights: the layout, not the values, is under test
    cfg = zegclip_preset_config("voc", None, REPO / "presets")
    return cfg, clip


def test_layout_counts_reproduce_zegclip_13_8m(voc):
    cfg, clip = voc
    layout = zegclip_layout(cfg, clip)
    learnable = sum(torch.Size(s).numel() for s, role in layout.values() if role in ("import", "unused"))
    assert learnable == 13_821_184  # ZegCLIP reports 13.8M for VOC
    used = sum(torch.Size(s).numel() for s, role in layout.values() if role == "import")
    model = build_segmentor(cfg, clip, list(VOC_CLASSES))
    assert count_parameters(model)["learnable"] == used == 8_039_168


def test_import_is_strict_complete_and_reports_unused_tensors(voc):
    cfg, clip = voc
    model = build_segmentor(cfg, clip, list(VOC_CLASSES)).eval()
    state = _zegclip_state(cfg, clip)
    state["decode_head.loss_decode.criterion.empty_weight"] = torch.ones(16)
    report = import_state(cfg, state, model, clip, check_clip=True)
    assert report["clip_max_diff"] < 1e-6
    skipped = set(report["skipped"])
    assert {"decode_head.decoder_1.layers.0.self_attn.in_proj_weight", "decode_head.decoder_1.layers.1.norm1.weight",
            "decode_head.decoder_1.layers.2.multihead_attn.v.weight", "decode_head.decoder_1.layers.2.linear1.weight",
            "decode_head.decoder_1.layers.2.norm3.bias", "decode_head.loss_decode.criterion.empty_weight"} <= skipped
    assert len(skipped) == 31 and not any("multihead_attn.q" in k or "multihead_attn.k" in k for k in skipped)

    # nothing silently dropped: every imported tensor the forward uses changes the output
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        base = model(images)
        unchanged = []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            saved = p.detach().clone()
            p.add_(0.5 * torch.randn_like(p) + 0.1)
            if torch.allclose(model(images), base, atol=1e-6):
                unchanged.append(name)
            p.copy_(saved)
    # A key bias adds q.b_k to every key of a query: softmax is invariant to it, so in the layers whose
    # output goes through the softmax it provably cannot change anything. In the last layer it shifts
    # the mask logits and does matter (it is not in this list).
    inert = {f"decoder.layers.{i}.cross_attn.k.bias" for i in range(cfg.decoder.layers - 1)}
    assert set(unchanged) == inert, f"imported tensors without effect on the output: {set(unchanged) - inert}"
    for i in range(cfg.decoder.layers - 1):  # ... and they are imported all the same
        torch.testing.assert_close(model.decoder.layers[i].cross_attn.k.bias.detach(),
                                   state[f"decode_head.decoder_1.layers.{i}.multihead_attn.k.bias"])


@pytest.mark.parametrize("change,message", [
    (lambda s: s.update({"decode_head.extra.weight": torch.zeros(2)}), "unknown keys"),
    (lambda s: s.pop("decode_head.decoder_1.layers.1.linear2.bias"), "missing keys"),
    (lambda s: s.update({"backbone.prompt_embeddings": torch.zeros(1, 100, 768)}), "mis-shaped"),
])
def test_bad_keys_fail_naming_them(voc, change, message):
    cfg, clip = voc
    model = build_segmentor(cfg, clip, list(VOC_CLASSES))
    state = _zegclip_state(cfg, clip)
    change(state)
    with pytest.raises(ZegCLIPImportError, match=message):
        import_state(cfg, state, model, clip, check_clip=False)


def test_other_clip_weights_are_refused(voc):
    cfg, clip = voc
    model = build_segmentor(cfg, clip, list(VOC_CLASSES))
    state = _zegclip_state(cfg, clip)
    state["backbone.transformer.resblocks.3.mlp.c_fc.weight"] += 0.01
    with pytest.raises(ZegCLIPImportError, match="frozen CLIP differs"):
        import_state(cfg, state, model, clip, check_clip=True)


class _Evil:
    def __reduce__(self):
        return (print, ("this would run",))


def test_end_to_end_import_writes_an_ldvc_checkpoint_and_loads_safely(voc, tmp_path):
    cfg, clip = voc
    weights = tmp_path / "clip.pt"
    torch.save(clip.state_dict(), weights)
    state = _zegclip_state(cfg, clip)
    ckpt = tmp_path / "zegclip_voc.pth"
    meta = {"iter": 20000, "CLASSES": tuple(VOC_CLASSES), "seed": np.int64(0), "config": "..."}
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "meta": meta}, ckpt)
    out = tmp_path / "model.pt"
    report = import_zegclip(ckpt, out, "voc", "inductive", clip_weights=weights, params=None,
                            preset_dir=REPO / "presets", log=lambda s: None)
    assert report["clip_max_diff"] < 1e-6
    loaded = load_checkpoint(out)
    assert loaded["step"] == 20000 and loaded["config"]["decoder"]["type"] == "zegclip"
    assert loaded["config"]["prompt"]["templates"] == ["a photo of a {}"]
    assert loaded["unseen"] == [15, 16, 17, 18, 19] and loaded["imported_from"]["skipped"]

    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": {}, "meta": {"x": _Evil()}}, f)
    with pytest.raises(ZegCLIPImportError, match="weights_only"):
        load_state_dict(evil)
