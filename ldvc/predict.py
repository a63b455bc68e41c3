"""`ldvc predict`: segment any image with any class names using a trained checkpoint.

The learnable parts of the model (prompts, decoder, text adapter) do not depend on the class
list, so a checkpoint trained on one vocabulary segments another: the class names given here
are encoded by the (prompted) text encoder and become the decoder's anchors (LDVC's point).
Per image it writes <stem>_labels.png (palette PNG whose pixel values are indices into the
given class list) and <stem>_overlay.png (image | coloured prediction, with a legend).
Our choices: plain argmax of the sigmoid scores (no seen-class bias: the seen/unseen split of
training means nothing for a user's vocabulary); the inference mode (`whole`/`slide`) and input
size come from the checkpoint's config unless overridden.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ldvc.checkpoint_uri import resolve_checkpoint, resolve_clip_weights
from ldvc.config import ConfigError, config_from_dict
from ldvc.data.augment import eval_size, resize_pair
from ldvc.data.dataset import load_image
from ldvc.eval.evaluate import check_clip
from ldvc.eval.inference import calibrated_labels, infer_scores
from ldvc.eval.visualize import overlay_figure, palette, to_uint8_image
from ldvc.model.build import build_model
from ldvc.train import checkpoint as ckpt_io

MAX_CLASSES = 255  # label PNGs are uint8; 255 is reserved for "ignore"


def parse_classes(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise ValueError('--classes is empty: give comma-separated class names, e.g. --classes "cat,dog,grass"')
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"--classes lists {dupes} more than once")
    if len(names) > MAX_CLASSES:
        raise ValueError(f"--classes has {len(names)} names; at most {MAX_CLASSES} fit a uint8 label map")
    return names


def _atomic_png(image: Image.Image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_predictor(checkpoint: str | Path, class_names: Sequence[str], clip_weights: Path | None = None,
                   mode: str | None = None, device: str | None = None):
    """(model, cfg) ready for inference on `class_names`.

    `checkpoint`: a file or an MLflow run id / runs:/ / models:/ URI (ldvc.checkpoint_uri), looked up
    in the store the pipeline logs to (MLFLOW_TRACKING_URI, e.g. the team's server; else the
    repository's mlflow.db); clip_weights default to the path the checkpoint recorded (cwd, then the
    repository root).
    """
    checkpoint = resolve_checkpoint(checkpoint)
    ckpt = ckpt_io.load_checkpoint(checkpoint)
    try:
        cfg = config_from_dict(ckpt["config"])
    except ConfigError as err:
        raise ckpt_io.CheckpointError(f"checkpoint {checkpoint} holds an invalid config: {err}") from None
    if mode is not None:
        cfg.eval.mode = mode
    clip_weights = resolve_clip_weights(ckpt["clip"].get("weights"), checkpoint, clip_weights)
    check_clip(ckpt, cfg.clip.model, clip_weights, checkpoint)
    model = build_model(cfg, clip_weights, list(class_names))
    ckpt_io.load_learnable_state(model, ckpt["model"], checkpoint)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return model.eval().to(dev), cfg


def predict(images: Sequence[str | Path], class_names: Sequence[str], checkpoint: str | Path,
            out_dir: str | Path = "predictions", clip_weights: str | Path | None = None,
            mode: str | None = None) -> list[dict]:
    """Segment each image; returns [{"image", "labels", "overlay", "classes_found"}] per image."""
    class_names = list(class_names)
    if not class_names or len(class_names) > MAX_CLASSES:
        raise ValueError(f"give between 1 and {MAX_CLASSES} class names, got {len(class_names)}")
    paths = [Path(p) for p in images]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"image(s) not found: {missing}")
    decoded = [load_image(p) for p in paths]  # undecodable files fail here, before the model loads
    model, cfg = load_predictor(checkpoint, class_names, Path(clip_weights) if clip_weights else None, mode)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    colours = palette(len(class_names))
    flat_palette = np.zeros((256, 3), dtype=np.uint8)
    flat_palette[: len(class_names)] = colours
    results = []
    for path, image in zip(paths, decoded):
        h, w = image.shape[-2:]
        resized, _ = resize_pair(image, None, eval_size(h, w, cfg.data.image_size))
        scores = infer_scores(model, [resized], [(h, w)], cfg.eval, cfg.data.image_size)[0]  # (C, H, W)
        labels = calibrated_labels(scores, [], 0.0, inductive=False).numpy().astype(np.uint8)  # (H, W)
        label_img = Image.fromarray(labels, mode="P")
        label_img.putpalette(flat_palette.flatten().tolist())
        lab_path, ov_path = out / f"{path.stem}_labels.png", out / f"{path.stem}_overlay.png"
        _atomic_png(label_img, lab_path)
        overlay_figure(ov_path, to_uint8_image(image), [("prediction", labels)], class_names, title=path.name)
        found = [class_names[c] for c in np.unique(labels)]
        results.append({"image": str(path), "labels": str(lab_path), "overlay": str(ov_path),
                        "classes_found": found})
    return results
