"""Import ZegCLIP's released checkpoints (mmseg state dicts) as ldvc checkpoints.

`ldvc import-zegclip CKPT.pth --preset voc --out zegclip_voc.pt` maps a checkpoint of ZegCLIP's
public code (ZiqinZhou66/ZegCLIP: VPTCLIPVisionTransformer backbone, CLIPTextEncoder,
ATMSingleHeadSeg head) onto this repository's `zegclip` model, so that our evaluation can be
checked against ZegCLIP's published numbers (VOC inductive 91.9 / 77.8 / 84.3): the fastest proof
that both the baseline and the evaluation protocol are right.

The key layout is derived from ZegCLIP's code (ldvc/model/zegclip_layout.py), every key with a role:
- learnable, imported: backbone.prompt_embeddings (1, n, 768) + deep_prompt_embeddings (L-1, n, 768)
  -> image_encoder.prompts; backbone.prompt_proj / prompt_norm; decode_head.q_proj ->
  decoder.relationship.proj; decode_head.decoder_1.layers.<i>.multihead_attn.{q,k,v,proj},
  norm2, linear1, linear2, norm3 -> decoder.layers.<i>.{cross_attn.*, norm_attn, ffn.0, ffn.3, norm_ffn}
  (the last layer: q and k only);
- carried but never used by ZegCLIP's forward, SKIPPED and reported by name: every layer's
  self_attn.* and norm1.* (TPN_DecoderLayer skips self-attention), the last layer's
  multihead_attn.{v,proj}, linear1/2, norm2/3 (its output queries are never read: the masks are its
  q.k logits), and the criterion's `empty_weight` buffer;
- frozen CLIP (backbone.* except prompts, text_encoder.*): not imported (the pipeline's CLIP
  weights are used and recorded by sha256); when the CLIP is given, each tensor is COMPARED with it
  (ZegCLIP's 1025-token positional embedding with our bilinear resize of CLIP's 197), so a
  checkpoint trained on other CLIP weights fails instead of producing meaningless numbers.
Unknown, missing or mis-shaped keys fail naming them. Loading is safe: torch.load(weights_only=True)
with an explicit allow-list of the numpy scalar/dtype types mmcv writes into the checkpoint's `meta`;
any other pickled global is refused, naming it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ldvc.config import Config
from ldvc.files import sha256_file
from ldvc.model.zegclip_layout import OPTIONAL_BUFFERS, our_name, zegclip_layout
from ldvc.presets import zegclip_preset_config

TOLERANCE = 1e-4  # frozen CLIP tensors must match ours to this (fp32 copies of the same weights)


class ZegCLIPImportError(ValueError):
    """The checkpoint is not a ZegCLIP checkpoint of the expected layout (message names the keys)."""


def _safe_globals() -> list[Any]:
    import numpy as np

    allowed: list[Any] = [np.dtype]
    for mod, name in (("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")):
        try:
            allowed.append(getattr(__import__(mod, fromlist=[name]), name))
        except (ImportError, AttributeError):
            continue
    allowed += [type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32", "bool")]
    return allowed


def load_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict with any DDP 'module.' prefix removed, meta) of an mmseg checkpoint, loaded safely."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ZegCLIP checkpoint not found")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError and friends name the refused global
        raise ZegCLIPImportError(
            f"{path}: refused to load with weights_only=True ({type(err).__name__}: {err}). The checkpoint "
            f"pickles a Python object outside the allow-list (numpy scalars/dtypes); loading it would run "
            f"arbitrary code, so ldvc does not. Re-save its state_dict alone with torch.save(ckpt['state_dict'])"
        ) from None
    if not isinstance(raw, dict):
        raise ZegCLIPImportError(f"{path}: expected a dict (mmseg checkpoint), got {type(raw).__name__}")
    state = raw.get("state_dict", raw)
    meta = raw.get("meta", {}) if isinstance(raw.get("meta", {}), dict) else {}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ZegCLIPImportError(f"{path}: no tensor state_dict found (keys: {sorted(raw)[:8]})")
    return {k.removeprefix("module."): v for k, v in state.items()}, meta


def import_state(cfg: Config, state: dict[str, torch.Tensor], model: nn.Module, clip_model: nn.Module,
                 check_clip: bool) -> dict[str, Any]:
    """Copy ZegCLIP's tensors into `model` (a zegclip Segmentor on `clip_model`); returns a report
    {"imported": [...], "skipped": [...], "clip_max_diff": float | None}. Raises naming bad keys."""
    layout = zegclip_layout(cfg, clip_model)
    unknown = sorted(k for k in state if k not in layout and not OPTIONAL_BUFFERS.match(k))
    missing = sorted(k for k, (_, role) in layout.items() if k not in state and role in ("import", "unused"))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs expected {layout[k][0]}"
              for k in sorted(set(state) & set(layout)) if tuple(state[k].shape) != layout[k][0]]
    if unknown or missing or shapes:
        parts = []
        if unknown:
            parts.append(f"unknown keys {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
        if missing:
            parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if shapes:
            parts.append(f"mis-shaped {shapes[:5]}")
        raise ZegCLIPImportError(
            f"not a ZegCLIP checkpoint for this preset ({cfg.data.dataset}, {cfg.prompt.visual_tokens} prompt "
            f"tokens, {cfg.decoder.layers} decoder layers of width {cfg.decoder.width}): {'; '.join(parts)}"
        )
    params = dict(model.named_parameters())
    learnable = {n for n, p in params.items() if p.requires_grad}
    new: dict[str, torch.Tensor] = {}
    deep = [state["backbone.deep_prompt_embeddings"]] if "backbone.deep_prompt_embeddings" in layout else []
    prompts = torch.cat([state["backbone.prompt_embeddings"], *deep], dim=0)
    new["image_encoder.prompts"] = prompts  # (layers, n, width)
    for key, (_, role) in layout.items():
        if role == "import" and "prompt_embeddings" not in key:
            new[our_name(key)] = state[key]
    if set(new) != learnable:
        raise ZegCLIPImportError(f"the mapping does not cover the model: unmapped {sorted(learnable - set(new))}, "
                           f"extra {sorted(set(new) - learnable)}")
    with torch.no_grad():
        for name, tensor in new.items():
            params[name].copy_(tensor.to(params[name].dtype))
    skipped = sorted([k for k, (_, role) in layout.items() if role == "unused"]
                     + [k for k in state if OPTIONAL_BUFFERS.match(k)])
    max_diff = compare_frozen(cfg, state, layout, clip_model) if check_clip else None
    imported = sorted(k for k, (_, role) in layout.items() if role == "import")
    return {"imported": imported, "skipped": skipped, "clip_max_diff": max_diff}


def compare_frozen(cfg: Config, state: dict[str, torch.Tensor], layout: dict, clip_model: nn.Module) -> float:
    """Max |checkpoint - ours| over the frozen CLIP tensors present; raises above TOLERANCE."""
    from ldvc.model.image_encoder import resize_positional_embedding

    ours = {f"backbone.{k}": v for k, v in clip_model.visual.state_dict().items()}
    ours.update({f"text_encoder.{k}": v for k, v in clip_model.state_dict().items() if not k.startswith("visual.")})
    visual = clip_model.visual
    grid = cfg.data.image_size // visual.conv1.stride[0]
    ours["backbone.positional_embedding"] = resize_positional_embedding(
        visual.positional_embedding.detach(), tuple(visual.grid_size), (grid, grid))
    worst, worst_key = 0.0, ""
    for key, (_, role) in layout.items():
        if role in ("backbone", "text") and key in state:
            diff = float((state[key].float() - ours[key].float()).abs().max())
            if diff > worst:
                worst, worst_key = diff, key
    if worst > TOLERANCE:
        raise ZegCLIPImportError(
            f"the checkpoint's frozen CLIP differs from clip.pretrained = {cfg.clip.pretrained!r} "
            f"(max |diff| {worst:.3g} at {worst_key}); ZegCLIP's prompts and head only work with the CLIP "
            f"they were trained on (OpenAI ViT-B/16): point --clip-weights at those weights"
        )
    return worst


def import_zegclip(checkpoint: Path, out: Path, preset: str = "voc", setting: str = "inductive",
                   clip_weights: Path | None = None, params: Path | None = Path("params.yaml"),
                   preset_dir: Path = Path("presets"), class_names: list[str] | None = None,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Convert `checkpoint` into an ldvc checkpoint at `out`; returns the import report."""
    from ldvc.data.classes import dataset_classes
    from ldvc.data.split import make_split
    from ldvc.model.build import build_segmentor
    from ldvc.model.clip_activation import resolve_activation
    from ldvc.model.clip_loader import create_clip
    from ldvc.train import checkpoint as ckpt_io

    if setting not in ("inductive", "transductive"):
        raise ValueError(f"--setting must be inductive or transductive, got {setting!r}")
    cfg = zegclip_preset_config(preset, params, preset_dir)
    state, meta = load_state_dict(Path(checkpoint))  # before the (large) model is built
    names = class_names or dataset_classes(cfg.data)
    split = make_split(names, cfg.split.unseen, cfg.data.dataset)
    # ZegCLIP's CLIP is OpenAI's, with QuickGELU (models/backbone/utils.py); the preset says so.
    pretrained = str(clip_weights) if clip_weights else cfg.clip.pretrained
    activation, _ = resolve_activation(cfg.clip.model, pretrained, cfg.clip.activation, clip_weights)
    clip_model = create_clip(cfg.clip.model, clip_weights, activation)
    model = build_segmentor(cfg, clip_model, names)
    report = import_state(cfg, state, model, clip_model, check_clip=clip_weights is not None)
    step = int(meta.get("iter", cfg.train.iters if setting == "inductive" else cfg.transductive.iters))
    payload = {
        "model": ckpt_io.learnable_state(model),
        "step": step,
        "total_steps": step,
        "setting": setting,
        "fully_supervised": False,
        "config": cfg.to_dict(),
        "class_names": names,
        "seen": split["seen"],
        "unseen": split["unseen"],
        "clip": {"model": cfg.clip.model, "weights": str(clip_weights) if clip_weights else None,
                 "sha256": sha256_file(clip_weights) if clip_weights else None, "activation": activation},
        "imported_from": {"path": str(checkpoint), "sha256": sha256_file(checkpoint), "format": "zegclip-mmseg",
                          "skipped": report["skipped"], "clip_max_diff": report["clip_max_diff"]},
    }
    ckpt_io.atomic_save(payload, Path(out))
    log(f"imported {len(report['imported'])} tensors from {checkpoint} into {out} "
        f"({cfg.data.dataset}, {setting}, step {step})")
    log(f"skipped {len(report['skipped'])} tensors ZegCLIP carries but its forward never uses: "
        + ", ".join(report["skipped"]))
    if report["clip_max_diff"] is None:
        log("frozen CLIP not compared (no --clip-weights given)")
    else:
        log(f"frozen CLIP matches the given weights (max |diff| {report['clip_max_diff']:.2g})")
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="ZegCLIP checkpoint (.pth, mmseg state dict)")
    p.add_argument("--out", type=Path, required=True, help="ldvc checkpoint to write (e.g. zegclip_voc.pt)")
    p.add_argument("--preset", default="voc", help="the protocol it was trained with: voc | coco_stuff (default voc)")
    p.add_argument("--setting", default="inductive", choices=["inductive", "transductive"])
    p.add_argument("--clip-weights", type=Path, default=None,
                   help="the OpenAI ViT-B/16 weights file (recorded by sha256; the checkpoint's frozen CLIP is "
                        "compared with it)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--presets", type=Path, default=Path("presets"))


def run(args: argparse.Namespace) -> int:
    import_zegclip(args.checkpoint, args.out, args.preset, args.setting, args.clip_weights, args.params,
                   args.presets)
    print(f"next: dvc exp run -S eval.checkpoint={args.out}   (with `ldvc preset {args.preset}` applied)")
    return 0
