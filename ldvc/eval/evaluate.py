"""Evaluate a checkpoint on a validation split (protocol.md, "Metric", "Inference"): dataset-level
IoU, fragmentation, figures, speed. Settings:
- inductive: all classes are candidates, seen-class scores calibrated by eval.seen_bias (ZegCLIP);
- transductive / fully_supervised: all classes, no calibration (ZegCLIP's self-training and fully
  supervised configs); S/U still follow the benchmark split, so the rows compare;
- cross: a model evaluated on ANOTHER dataset's val with that dataset's class names, every target
  class a candidate, no calibration (ZegCLIP configs/cross_dataset/coco-to-*.py); only mIoU/pAcc.
Vocabulary (`eval.vocabulary`): all (generalised zero-shot, the papers' numbers) or unseen: only
the unseen class names reach the model, only pixels of unseen classes are scored (other pixels
are ignored), so mIoU(U) is the non-generalised zero-shot number; recorded in metrics.json.

Writes out_dir/metrics.json, per_class_iou.csv, confusion.png and overlays/<id>.png.
Data-parallel: each process evaluates the disjoint shard rank::world of the validation images
(no DistributedSampler padding, so no image is counted twice); the confusion matrix, the
fragmentation sums and the image count are summed across processes, so N processes give the
same numbers as one. Overlays are drawn by whichever process holds the image.
Our choice: the frozen CLIP given here must be the one the checkpoint was trained with (its
sha256 is compared), since the learnable prompts and decoder are meaningless with another.
On a GPU (ldvc/eval/inference.py): windows batched across images (eval.batch_size per forward, the
last batch padded to that shape), scores averaged, resized and arg-maxed on the device
`eval.class_chunk` classes at a time (bounded memory for hundreds of classes, exact), the eval
loader pinned, TF32 allowed for float32 matrix products (recorded as `tf32` in metrics.json; the
bf16 autocast of eval.mixed_precision: bf16 is recorded as `eval_precision`). The confusion matrix
is accumulated on the device; predictions go to the host once per image for fragmentation and
overlays.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ldvc.config import Config, ConfigError, config_from_dict
from ldvc.data.dataset import DatasetError, EvalSet, SegmentationFolder, collate_list, shard_indices
from ldvc.data.prompts import PromptSet
from ldvc.eval.fragmentation import FragmentationMeter, summarize_fragmentation
from ldvc.eval.inference import infer_labels
from ldvc.eval.metrics import ConfusionMatrix, summarize
from ldvc.eval.visualize import confusion_figure, overlay_figure, to_uint8_image, visual_sample
from ldvc.files import sha256_file
from ldvc.model.build import build_model
from ldvc.model.clip_loader import built_activation
from ldvc.model.prompt_transfer import transfer_prompts
from ldvc.train import checkpoint as ckpt_io
from ldvc.train.layout import loader_workers
from ldvc.train.loop import make_accelerator

SCALAR_KEYS = ("pAcc", "mIoU", "mIoU_seen", "mIoU_unseen", "hIoU")
EVAL_SETTINGS = ("inductive", "transductive", "fully_supervised", "cross")
IGNORE_INDEX = 255


def check_clip(ckpt: dict, clip_model: str, clip_weights: Path | None, source: Path) -> None:
    """The checkpoint's recorded CLIP (name, sha256) must match the one we are about to load."""
    rec = ckpt["clip"]
    if rec.get("model") != clip_model:
        raise ckpt_io.CheckpointError(
            f"checkpoint {source} was trained on CLIP {rec.get('model')!r}, the config says {clip_model!r}; "
            f"set clip.model to {rec.get('model')!r}"
        )
    if rec.get("sha256") and clip_weights is None:
        raise ckpt_io.CheckpointError(
            f"checkpoint {source} was trained with the CLIP weights {rec.get('weights')}; pass that file "
            f"(without it the frozen CLIP would be randomly initialised)"
        )
    if rec.get("sha256") and clip_weights is not None:
        sha = sha256_file(clip_weights)
        if sha != rec["sha256"]:
            raise ckpt_io.CheckpointError(
                f"CLIP weights {clip_weights} (sha256 {sha[:12]}...) are not the ones checkpoint {source} was "
                f"trained with ({rec.get('weights')}, sha256 {rec['sha256'][:12]}...); pass those weights"
            )


def checkpoint_config(ckpt: dict, checkpoint: Path) -> Config:
    """The config a checkpoint was trained with (its architecture), validated."""
    try:
        return config_from_dict(ckpt["config"], variant=True)
    except ConfigError as err:
        raise ckpt_io.CheckpointError(
            f"checkpoint {checkpoint} records a config this version cannot read ({err}); it was made by an older "
            f"ldvc: retrain it (dvc repro) or import it again"
        ) from None


def load_model_for_eval(cfg: Config, ckpt: dict, checkpoint: Path, class_names: list[str],
                        clip_weights: Path | None, templates: list[str] | None = None
                        ) -> tuple[torch.nn.Module, list[dict] | None]:
    """The checkpoint's model (built from ITS config: an imported ZegCLIP checkpoint evaluates as
    ZegCLIP whatever params.yaml's decoder is) for `class_names` (the strings its templates format),
    on the given CLIP weights, and the prompt transfer report (None when the templates are the ones
    it was trained with). `templates`: a target dataset's own templates; learned text prompts carry
    over to those with the same prefix (ldvc/model/prompt_transfer.py)."""
    model_cfg = checkpoint_config(ckpt, checkpoint)
    trained_templates = list(model_cfg.prompt.templates)
    if templates is not None:
        model_cfg.prompt.templates = list(templates)
    if model_cfg.clip.model != cfg.clip.model:
        raise ckpt_io.CheckpointError(
            f"checkpoint {checkpoint} was trained on CLIP {model_cfg.clip.model!r}, the config says "
            f"{cfg.clip.model!r}; set clip.model to {model_cfg.clip.model!r}"
        )
    check_clip(ckpt, model_cfg.clip.model, clip_weights, checkpoint)
    model = build_model(model_cfg, clip_weights, class_names)
    recorded, built = ckpt["clip"].get("activation"), built_activation(model)
    if recorded is not None and recorded != built:  # older checkpoints did not record it
        raise ckpt_io.CheckpointError(
            f"checkpoint {checkpoint} was trained on a CLIP built with {recorded}, this evaluation built {built}; "
            f"set clip.activation: {recorded} (the activation its CLIP weights were trained with)"
        )
    state, report = ckpt["model"], None
    if model_cfg.prompt.templates != trained_templates:
        state, report = transfer_prompts(model, state, trained_templates)
    ckpt_io.load_learnable_state(model, state, checkpoint)
    return model.eval(), report


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_per_class(path: Path, metrics: dict, matrix: torch.Tensor, split: dict) -> None:
    unseen = set(split["unseen"])
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class_id", "class", "split", "iou", "gt_pixels", "pred_pixels"])
        for i, name in enumerate(split["classes"]):
            iou = metrics["per_class"][name]
            w.writerow([i, name, "unseen" if i in unseen else "seen", "" if math.isnan(iou) else f"{iou:.4f}",
                        int(matrix[i].sum()), int(matrix[:, i].sum())])
    os.replace(tmp, path)


def cross_split(classes: list[str]) -> dict[str, Any]:
    """A cross-dataset target's "split": every target class is a candidate and none is unseen."""
    return {"classes": list(classes), "seen": list(range(len(classes))), "unseen": [],
            "seen_names": list(classes), "unseen_names": []}


def evaluate_checkpoint(cfg: Config, setting: str, split: dict, data_root: str | Path, checkpoint: Path,
                        clip_weights: Path | None, out_dir: Path,
                        log: Callable[[dict, int], None] | None = None,
                        prompts: PromptSet | None = None) -> dict[str, Any]:
    """Evaluate `checkpoint`; returns the metrics dict (also written to out_dir/metrics.json).

    `prompts`: the text of another dataset's classes (a cross-dataset or open-vocabulary target:
    its reference's class names and templates, ldvc.data.prompts); default: the split's class names
    with the templates the checkpoint was trained with."""
    if setting not in EVAL_SETTINGS:
        raise ValueError(f"setting {setting!r} is not one of {EVAL_SETTINGS}")
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    e = cfg.eval
    # ---- cheap checks before any model is built
    folder = SegmentationFolder(data_root, "val")
    classes = list(split["classes"])
    if classes != folder.classes:
        raise DatasetError(f"the split's classes differ from those of {folder.root}/meta.json; "
                           f"re-run the split stage for this dataset")
    ckpt = ckpt_io.load_checkpoint(checkpoint)
    if setting != "cross":  # a cross-dataset evaluation uses the target's vocabulary by design
        ckpt_io.check_classes(ckpt, classes, checkpoint)
    if e.vocabulary == "unseen" and not split["unseen"]:
        raise ValueError(f"eval.vocabulary: unseen needs unseen classes; the {setting} evaluation of "
                         f"{folder.root} has none (use eval.vocabulary: all)")

    accelerator, _ = make_accelerator("no")
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    if prompts is not None and len(prompts.names) != len(classes):
        raise ValueError(f"{prompts.reference}'s prompt names for {prompts.dataset} are {len(prompts.names)}, the "
                         f"dataset at {folder.root} has {len(classes)} classes")
    text_names = list(prompts.names) if prompts is not None else classes
    templates = list(prompts.templates) if prompts is not None else None
    model, transfer = load_model_for_eval(cfg, ckpt, checkpoint, text_names, clip_weights, templates)
    model = model.to(accelerator.device)
    unseen_only = e.vocabulary == "unseen"
    candidates = torch.tensor(split["unseen"], dtype=torch.long) if unseen_only else None
    scored = list(split["unseen"]) if unseen_only else list(range(len(classes)))
    device = accelerator.device
    # The dataset's ignore value: 255, or 65535 in the 16-bit labels of datasets with more than 255
    # classes (ADE20K-847, PASCAL Context-459), where 255 is a class.
    ignore = int(folder.meta.get("ignore_index", IGNORE_INDEX))
    label_map = torch.full((ignore + 1,), ignore, dtype=torch.long)  # unseen vocabulary: others not scored
    label_map[scored] = torch.tensor(scored, dtype=torch.long)
    label_map = label_map.to(device)
    candidates_dev = candidates.to(device) if candidates is not None else None
    calibrate = setting == "inductive" and not unseen_only
    shard = shard_indices(len(folder), rank, world)
    loader = DataLoader(EvalSet(folder, cfg.data.image_size, shard), batch_size=e.batch_size,
                        collate_fn=collate_list, num_workers=loader_workers(cfg.train.num_workers, world),
                        pin_memory=device.type == "cuda")
    to_draw = set(visual_sample(folder.ids, e.num_visualize, cfg.project.seed))
    overlay_dir = out_dir / "overlays"
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(overlay_dir, ignore_errors=True)  # stale images of an earlier sample
        overlay_dir.mkdir()
    accelerator.wait_for_everyone()

    confusion = ConfusionMatrix(len(classes), ignore_index=ignore, device=device)
    amp = e.mixed_precision == "bf16" and device.type == "cuda"
    tf32 = device.type == "cuda"
    tf32_before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32 or tf32_before
    frag = FragmentationMeter(e.small_fragment_px, ignore)
    n_images = 0
    t_start = time.perf_counter()
    for batch in tqdm(loader, desc=f"eval {setting}", unit="batch", disable=not main):
        sizes = [tuple(b["label"].shape) for b in batch]
        preds = infer_labels(model, [b["image"] for b in batch], sizes, e, cfg.data.image_size, candidates,
                             seen=split["seen"], seen_bias=e.seen_bias, inductive=calibrate,
                             class_chunk=e.class_chunk, amp=amp)  # (H, W) candidate index, on the device
        for b, pred in zip(batch, preds):
            if candidates_dev is not None:
                pred = candidates_dev[pred]  # back to dataset class ids
            label = label_map[b["label"].to(device, non_blocking=True).long()]
            confusion.update(pred, label, check=False)  # both valid by construction: no value read
            pred, label = pred.cpu(), label.cpu()
            frag.update(pred, label)
            n_images += 1
            if b["id"] in to_draw:
                image = to_uint8_image(folder.load(b["index"])[0])
                overlay_figure(overlay_dir / f"{b['id']}.png", image,
                               [("ground truth", label.numpy()), (f"prediction ({setting})", pred.numpy())],
                               classes, title=b["id"], unseen=split["unseen"], ignore_index=ignore)
    seconds = time.perf_counter() - t_start
    torch.backends.cuda.matmul.allow_tf32 = tf32_before
    matrix = accelerator.reduce(confusion.matrix.to(device), reduction="sum").cpu()
    frag_sums = accelerator.reduce(frag.totals().to(device), reduction="sum").cpu()
    n_total = int(accelerator.reduce(torch.tensor(n_images, device=device), reduction="sum"))
    slowest = float(accelerator.gather(torch.tensor([seconds], device=device)).max())  # the slowest shard
    if n_total != len(folder):  # the shards must cover the split exactly once
        raise RuntimeError(f"evaluated {n_total} images, the val split has {len(folder)}: sharding bug")
    summary = summarize(matrix, classes, split["seen"], split["unseen"])
    metrics: dict[str, Any] = {k: summary[k] for k in SCALAR_KEYS}
    metrics.update(summarize_fragmentation(frag_sums))
    metrics.update({"num_images": n_total, "num_pixels": int(matrix.sum()), "setting": setting,
                    "checkpoint_step": int(ckpt["step"]), "eval_mode": e.mode, "num_processes": world,
                    "vocabulary": e.vocabulary, "calibrated": calibrate, "eval_seconds": slowest,
                    "images_per_s": n_total / slowest if slowest > 0 else float("nan"),
                    "device": str(device), "eval_precision": "bf16" if amp else "fp32", "tf32": tf32,
                    "class_chunk": e.class_chunk})
    if prompts is not None:  # which text the target was scored with, and how much of the learned side it used
        metrics["text_prompts"] = {"reference": prompts.reference, "source": prompts.source,
                                   "inferred": prompts.inferred, "templates": list(prompts.templates),
                                   "prompts_from": transfer}
    if main:
        _atomic_text(out_dir / "metrics.json", json.dumps(metrics, indent=2, allow_nan=True) + "\n")
        _write_per_class(out_dir / "per_class_iou.csv", summary, matrix, split)
        confusion_figure(out_dir / "confusion.png", matrix, classes, split["seen"], split["unseen"])
        if log is not None:
            log({f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}, int(ckpt["step"]))
    accelerator.wait_for_everyone()
    return {**metrics, "per_class": summary["per_class"]}
