"""Segmentation training, inductive and transductive (protocol.md, "Splits" and "ZegCLIP settings").

One code path for 1 CPU, N CPUs and N GPUs: the loop creates its own `Accelerator`
(cpu when no CUDA; `python -m ldvc.launch` starts one process per GPU, N-process DDP, over gloo
on a CPU machine). The global batch `train.batch_size` is kept whatever the process count: the
layout (processes x per-device batch x gradient accumulation, ldvc/train/layout.py) is derived
from the machine, printed, and returned in the summary. What happens in a step:

- Inductive: the model sees only the SEEN class embeddings (class_ids = seen); targets are
  remapped into the seen index space and unseen pixels become ignore (255). A split without
  unseen classes (an ablation variant with split.unseen: []) trains on every class: the fully
  supervised upper bound, recorded as setting "fully_supervised" in the checkpoint.
- Transductive: all class names are known (class_ids = None = all); seen pixels keep their
  class, and every pixel of an UNSEEN class gets a pseudo-label = argmax over the unseen classes
  of the model's current (detached) sigmoid scores, from the same forward pass, as ZegCLIP does
  (its `_visiable_mask_st` maps unseen ids to -1 and only those pixels are pseudo-labelled: the
  location of unseen objects is used, never their class). Pixels that are ignore in the data
  itself (VOC's background, boundaries) and crop padding stay ignored.
  `transductive.pseudo_threshold` optionally keeps pixels whose best unseen score is below it
  ignored (default none, as ZegCLIP). It starts from the inductive
  checkpoint at `transductive.init_iter` and runs `transductive.iters` iterations with its own
  fresh optimizer and schedule.

Exact resume: data order and augmentation are a pure function of (seed, sample position)
(dataset.py), and the torch RNG (dropout / drop-path) is re-seeded from (seed, step, rank) at
every step, so a run killed at any point and resumed from its last checkpoint ends with the
same weights as an uninterrupted one (CPU, `train.deterministic`). Checkpoints also store the
RNG states, as the brief asks.

The step (`TrainStep`, also what benchmarks/setups.py times: the real step, host syncs included):
- At most ONE host synchronisation per optimizer step outside logging and checkpoint steps: the
  divergence check (is the loss finite on every process?), read once, after the last micro-step's
  backward and before `optimizer.step()`, so a non-finite loss never updates the weights. Loss
  terms stay on the device and are read at logging steps only; batches are copied with
  `non_blocking=True` (pinned memory on a GPU); the loss's target-value scan is skipped (the
  targets come from `label_lut`, valid by construction); the text encoder checks the class ids
  once per tensor. tests/test_train_syncs.py counts the reads on the CPU.
- DDP's unused-parameter search (`find_unused_parameters`, a pass over the autograd graph every
  step) is on only when some learnable parameter is unused by a step: found once per run by a
  forward + backward on the meta device (`unused_learnable_parameters`, no arithmetic, no memory).
- `train.num_workers: auto` derives the loader workers from the cores per process (`loader_workers`).
- `train.compile`: the model is compiled through a counting backend (ldvc/train/compile_watch.py);
  the summary records graphs, graph breaks, recompile-limit hits and the compiled FlexAttention's
  signatures and fallbacks (ldvc/model/route_attention.py), so a silent slow path shows.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState, PartialState
from accelerate.utils import DistributedDataParallelKwargs
from torch.utils.data import DataLoader
from tqdm import tqdm

from ldvc.config import Config, portable_path
from ldvc.data.dataset import DatasetError, SegmentationFolder, StepBatchSampler, TrainStream
from ldvc.data.normalize import normalize
from ldvc.files import sha256_file
from ldvc.model import losses
from ldvc.model.build import build_model
from ldvc.model.clip_loader import built_activation
from ldvc.model.param_count import count_parameters
from ldvc.model.route_attention import flex_stats, reset_flex_stats
from ldvc.seeding import mix_seed
from ldvc.train import checkpoint as ckpt_io
from ldvc.train.compile_watch import CompileWatch
from ldvc.train.layout import Layout, loader_workers, resolve_layout
from ldvc.train.optim import build_optimizer, build_scheduler

IGNORE_INDEX = 255
SETTINGS = ("inductive", "transductive")
LOG_FIELDS = ["step", "loss", "lr", "images_per_s"]
LogFn = Callable[[dict, int], None]


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN/inf; the message names the step and the last good checkpoint."""


def make_accelerator(mixed_precision: str = "no", batch_size: int | None = None,
                     per_device_batch: int | None = None,
                     find_unused_parameters: bool = True) -> tuple[Accelerator, Layout]:
    """A fresh Accelerator (CPU when no CUDA) and the training layout for the global `batch_size`
    (None: evaluation, one image batch per process, no accumulation). The process-wide state is
    reset first so that a second one in the same process (train then evaluate, or tests) does not clash.
    `find_unused_parameters`: DDP's per-step search for parameters without a gradient
    (`unused_learnable_parameters` says whether a model needs it). Compilation is not done here
    (`train_segmentor` compiles through ldvc/train/compile_watch.py, which counts what dynamo does)."""
    cpu = not torch.cuda.is_available()
    if cpu and mixed_precision != "no":
        warnings.warn(f"train.mixed_precision={mixed_precision!r} needs a GPU; training in fp32 on the CPU",
                      stacklevel=2)
        mixed_precision = "no"
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    world = PartialState(cpu=cpu).num_processes
    layout = resolve_layout(batch_size, per_device_batch, world) if batch_size else Layout(world, 1, 1)
    ddp = DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)
    accelerator = Accelerator(cpu=cpu, mixed_precision=mixed_precision,
                              gradient_accumulation_steps=layout.accumulation, kwargs_handlers=[ddp],
                              dynamo_backend="no")
    return accelerator, layout


def unused_learnable_parameters(model: torch.nn.Module, image_size: int,
                                class_ids: torch.Tensor | None) -> list[str]:
    """Names of the learnable parameters that one training forward + backward leaves without a gradient.

    Run on the meta device (ldvc.model.flops.on_meta: shapes only, no arithmetic, no memory), in
    training mode, with the classes a step uses. DDP needs `find_unused_parameters` exactly when
    this is not empty (a prompt depth or an ablation can leave a learnable tensor out of a step)."""
    from ldvc.model.flops import on_meta

    was_training = model.training
    try:
        with on_meta(model):
            model.train()
            images = torch.zeros(1, 3, image_size, image_size, device="meta")
            ids = None if class_ids is None else torch.empty(len(class_ids), dtype=torch.long, device="meta")
            model(images, ids).float().sum().backward()
            return [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    finally:
        model.train(was_training)


def set_deterministic(enabled: bool) -> None:
    """Deterministic kernels for the rest of the process (train.deterministic)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        # warn_only: a few CUDA kernels (bilinear upsampling backward) have no deterministic
        # version; on the CPU every op used here is deterministic.
        torch.use_deterministic_algorithms(True, warn_only=True)


# Transductive targets mark unseen-class pixels apart from truly ignored ones (ZegCLIP maps them
# to -1): only they get pseudo-labels; background/boundary/padding pixels (255) stay ignored.
UNSEEN_PIXEL = -1


def label_lut(split: dict, setting: str) -> torch.Tensor:
    """(256,) long: raw train id -> training target. Inductive: seen ids -> 0..S-1 (the seen index
    space), unseen and 255 -> 255. Transductive: seen ids kept, unseen -> UNSEEN_PIXEL (their class
    is not used: `pseudo_label` fills them), 255 -> 255."""
    lut = torch.full((256,), IGNORE_INDEX, dtype=torch.long)
    for pos, c in enumerate(split["seen"]):
        lut[c] = pos if setting == "inductive" else c
    if setting == "transductive":
        lut[torch.as_tensor(split["unseen"], dtype=torch.long)] = UNSEEN_PIXEL
    return lut


def pseudo_label(logits: torch.Tensor, target: torch.Tensor, pad: torch.Tensor, unseen: torch.Tensor,
                 threshold: float | None) -> torch.Tensor:
    """Give each unseen-class pixel (UNSEEN_PIXEL) the argmax over unseen classes of the sigmoid
    scores (ZegCLIP's self-training); below `threshold`, or in crop padding, it becomes ignore.

    logits (B, C, H, W), target / pad (B, H, W), unseen (U,) class ids; returns a new target."""
    with torch.no_grad():
        scores = logits.detach().float().sigmoid().index_select(1, unseen)  # (B, U, H, W)
        best, arg = scores.max(dim=1)  # (B, H, W)
        fill = (target == UNSEEN_PIXEL) & ~pad
        if threshold is not None:
            fill &= best > threshold
        labelled = torch.where(fill, unseen[arg], target)
        return labelled.masked_fill(labelled == UNSEEN_PIXEL, IGNORE_INDEX)


def _validate_inputs(cfg: Config, setting: str, split: dict, folder: SegmentationFolder) -> None:
    if setting not in SETTINGS:
        raise ValueError(f"setting {setting!r} is not one of {SETTINGS}")
    missing = [k for k in ("classes", "seen", "unseen") if k not in split]
    if missing:
        raise ValueError(f"split dict lacks {missing}; produce it with the split stage (ldvc.data.split)")
    if list(split["classes"]) != folder.classes:
        raise DatasetError(
            f"the split's classes ({len(split['classes'])}) differ from the dataset's ({len(folder.classes)}) "
            f"in {folder.root}/meta.json; re-run the split stage for this dataset"
        )
    if not split["seen"]:
        raise ValueError("the split needs at least one seen class")
    if not split["unseen"] and setting == "transductive":
        raise ValueError("transductive training needs unseen classes; this split has none (fully supervised)")


def _read_log(path: Path, upto: int) -> list[dict[str, str]]:
    """Rows of an existing train_log.csv with step <= upto (a killed run may have logged past its
    last checkpoint, or left a torn last line)."""
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                if int(row["step"]) <= upto and all(row.get(k) not in (None, "") for k in LOG_FIELDS):
                    rows.append(row)
            except (TypeError, ValueError):
                continue
    return rows


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


class TrainStep:
    """One optimizer step of `train_segmentor` (layout.accumulation micro-steps), the function the
    benchmarks time too. Returns the step's mean loss and weighted loss terms as DEVICE tensors
    (read them at logging steps only); raises TrainingDivergedError before `optimizer.step()` when a
    micro-step's loss is not finite on some process: the one host read of a step (module docstring)."""

    def __init__(self, accelerator: Accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 cfg: Config, setting: str, split: dict, accumulation: int,
                 out_dir: Path | None = None) -> None:
        device = accelerator.device
        self.accelerator, self.model, self.optimizer, self.cfg = accelerator, model, optimizer, cfg
        self.setting, self.accum, self.out_dir = setting, accumulation, out_dir
        self.lut = label_lut(split, setting).to(device)
        self.class_ids = (torch.tensor(split["seen"], dtype=torch.long, device=device)
                          if setting == "inductive" else None)
        self.unseen = torch.tensor(split["unseen"], dtype=torch.long, device=device)
        self.num_logits = len(split["seen"]) if setting == "inductive" else len(split["classes"])
        self.world = accelerator.num_processes

    def __call__(self, batches: Iterator[dict[str, torch.Tensor]], step: int) -> tuple[torch.Tensor,
                                                                                       dict[str, torch.Tensor]]:
        acc, model, optimizer, t = self.accelerator, self.model, self.optimizer, self.cfg.train
        device = acc.device
        step_loss = torch.zeros((), device=device)
        parts_sum: dict[str, torch.Tensor] = {}
        bad = torch.zeros((), device=device)  # > 0: a micro-step's loss was not finite
        for micro in range(self.accum):
            batch = next(batches)
            # (b, 3, S, S); crop padding = 0 after normalising, as ZegCLIP's Normalize -> Pad
            images = normalize(batch["image"].to(device, non_blocking=True), batch["pad"].to(device, non_blocking=True))
            target = self.lut[batch["label"].to(device, non_blocking=True)]  # (b, S, S)
            with acc.accumulate(model):
                with acc.autocast():
                    logits = model(images, self.class_ids)  # (b, C_seen | C_all, S, S)
                if self.setting == "transductive":
                    target = pseudo_label(logits, target, batch["pad"].to(device, non_blocking=True), self.unseen,
                                          self.cfg.transductive.pseudo_threshold)
                # ZegCLIP's normaliser: present masks over all processes / processes (losses.py)
                present = losses.present_masks(target, self.num_logits).sum().float()
                num_masks = acc.reduce(present, reduction="sum") / self.world
                loss, parts = losses.segmentation_loss(logits.float(), target, self.cfg.loss, num_masks,
                                                       check_values=False)
                bad = bad + (~torch.isfinite(loss.detach())).float()
                if acc.sync_gradients:
                    # the step's one host read: every process learns whether any loss was not finite
                    if float(acc.reduce(bad, reduction="sum")) > 0:
                        self._diverged(loss, step, micro)
                acc.backward(loss)
                if acc.sync_gradients and t.grad_clip is not None:
                    acc.clip_grad_norm_(model.parameters(), t.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            step_loss += loss.detach() / self.accum
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v / self.accum
        return step_loss, parts_sum

    def _diverged(self, loss: torch.Tensor, step: int, micro: int) -> None:
        last_good = ckpt_io.latest_checkpoint(self.out_dir) if self.out_dir is not None else None
        value = float(loss.detach())
        what = f"{value:.4g}" if not math.isfinite(value) else "non-finite in an earlier micro-batch"
        raise TrainingDivergedError(
            f"the loss became {what} at step {step} (micro-batches 0..{micro}) of the "
            f"{self.setting} run; last good checkpoint: {last_good or 'none yet'}. Lower train.lr, "
            f"set train.grad_clip, or check the data; train.resume: auto restarts from it"
        )


def checkpoint_payload(model: torch.nn.Module, cfg: Config, setting: str, split: dict, step: int,
                       total: int, clip_info: dict, optimizer: torch.optim.Optimizer | None = None,
                       scheduler: Any = None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": ckpt_io.learnable_state(model),
        "step": step,
        "total_steps": total,
        "setting": setting,
        "fully_supervised": not split["unseen"],
        "config": cfg.to_dict(),
        "class_names": list(split["classes"]),
        "seen": list(split["seen"]),
        "unseen": list(split["unseen"]),
        "clip": clip_info,
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
        payload["scheduler"] = scheduler.state_dict()
        payload["rng"] = ckpt_io.rng_state()
    return payload


def train_segmentor(cfg: Config, setting: str, split: dict, data_root: str | Path, clip_weights: Path | None,
                    out_dir: Path, init_checkpoint: Path | None = None, log: LogFn | None = None) -> dict:
    """Train the segmentor; writes out_dir/{checkpoints/iter_XXXXXX.pt, model.pt, train_log.csv}.

    Returns {"step", "seconds", "images_per_s", "learnable_params", "total_params", "last_loss",
    "effective_batch_size", "num_processes", "per_device_batch", "grad_accumulation", "layout"}.
    """
    out_dir = Path(out_dir)
    t = cfg.train
    # ---- cheap checks first: bad input fails before any model is built
    folder = SegmentationFolder(data_root, "train")
    if int(folder.meta.get("ignore_index", IGNORE_INDEX)) != IGNORE_INDEX:
        # 16-bit labels (more than 255 classes: ADE20K-847, PASCAL Context-459) are evaluation targets
        raise DatasetError(f"{folder.root}: its labels are 16-bit (ignore {folder.meta['ignore_index']}, "
                           f"{len(folder.classes)} classes); training reads 8-bit labels (ignore 255): use it as a "
                           f"cross_dataset / open_vocab target, not as data.dataset")
    _validate_inputs(cfg, setting, split, folder)
    total = t.iters if setting == "inductive" else cfg.transductive.iters
    resume_from = ckpt_io.latest_checkpoint(out_dir) if t.resume == "auto" else None
    resume = ckpt_io.load_checkpoint(resume_from) if resume_from else None
    init = None
    if setting == "transductive" and resume is None:
        if init_checkpoint is None:
            raise ValueError("transductive training starts from the inductive checkpoint at "
                             "transductive.init_iter: pass init_checkpoint")
        init = ckpt_io.load_checkpoint(init_checkpoint)
        ckpt_io.check_classes(init, split["classes"], init_checkpoint)
    if resume is not None:
        ckpt_io.check_classes(resume, split["classes"], resume_from)
        if resume.get("setting") != setting or resume.get("total_steps") != total:
            raise ckpt_io.CheckpointError(
                f"{resume_from} belongs to a {resume.get('setting')} run of {resume.get('total_steps')} steps, "
                f"not this {setting} run of {total}; use another out_dir or train.resume: never"
            )

    set_deterministic(t.deterministic)
    seed = cfg.project.seed
    model = build_model(cfg, clip_weights, list(split["classes"]))
    try:
        unused = unused_learnable_parameters(model, cfg.data.image_size,
                                             torch.tensor(split["seen"]) if setting == "inductive" else None)
        unused_note = ", ".join(unused[:5]) + (" ..." if len(unused) > 5 else "") if unused else "none"
    except Exception as err:  # the probe is an optimisation: when it cannot run, DDP searches every step
        unused, unused_note = ["?"], f"unknown ({type(err).__name__}: {str(err)[:200]}); searched every step"
    accelerator, layout = make_accelerator(t.mixed_precision, t.batch_size, t.per_device_batch,
                                           find_unused_parameters=bool(unused))
    if str(accelerator.mixed_precision) != t.mixed_precision:
        # The checkpoint records the precision that RAN (bf16 asked on a CPU trains in fp32): it is a
        # protocol fact (ldvc/protocol.py), so tables mark what was run, not what was asked.
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(t, mixed_precision=str(accelerator.mixed_precision)))
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    workers = loader_workers(t.num_workers, world)
    if main:
        print(f"[train {setting}] layout: {layout.describe()}; loader workers {workers}; unused learnable "
              f"parameters: {unused_note}", flush=True)
    params = count_parameters(model)
    # recorded relative to the tree the run happens in (valid in any clone or experiment copy)
    clip_info = {"model": cfg.clip.model, "weights": portable_path(clip_weights, Path.cwd()) if clip_weights else None,
                 "sha256": sha256_file(clip_weights) if clip_weights else None,
                 "activation": built_activation(model)}  # what the frozen CLIP was built with
    if init is not None:
        ckpt_io.load_learnable_state(model, init["model"], init_checkpoint)
    optimizer = build_optimizer(model, t)
    scheduler = build_scheduler(optimizer, t, total)
    start = 0
    if resume is not None:
        ckpt_io.load_learnable_state(model, resume["model"], resume_from)
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        ckpt_io.set_rng_state(resume["rng"])
        start = int(resume["step"])
    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device
    raw_model = accelerator.unwrap_model(model)
    watch = CompileWatch() if t.compile else None
    reset_flex_stats()
    if watch is not None:
        model = watch.compile(model, "inductor")  # the DDP-wrapped model, as accelerate would compile it
    train_step = TrainStep(accelerator, model, optimizer, cfg, setting, split, layout.accumulation, out_dir)

    stream = TrainStream(folder, seed, cfg.data.image_size, t.augment)
    sampler = StepBatchSampler(start, total, t.batch_size, layout.per_device, rank, world)
    loader = DataLoader(stream, batch_sampler=sampler, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(seed))

    log_path = out_dir / "train_log.csv"
    log_rows: list[dict[str, Any]] = []
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        log_rows = _read_log(log_path, start)
        _write_log(log_path, log_rows)
    effective = t.batch_size
    setting_tag = SETTINGS.index(setting)
    last_loss = float("nan")
    window_images, window_start, t0 = 0, time.perf_counter(), time.perf_counter()
    batches = iter(loader)
    model.train()
    bar = tqdm(total=total, initial=start, desc=f"train {setting}", unit="it", disable=not main)
    for step in range(start, total):
        # dropout / drop-path randomness: a pure function of (seed, step, rank) -> exact resume
        torch.manual_seed(mix_seed(seed, setting_tag, step, rank))
        step_loss, parts_sum = train_step(batches, step)  # device tensors: read at logging steps only
        scheduler.step()
        done = step + 1
        window_images += effective
        bar.update(1)
        if done % t.log_every == 0 or done == total:
            mean_loss = float(accelerator.reduce(step_loss, reduction="mean"))
            elapsed = time.perf_counter() - window_start
            ips = window_images / max(elapsed, 1e-9)
            window_images, window_start = 0, time.perf_counter()
            last_loss = mean_loss
            if main:
                lrs = {f"train/lr_{g['name']}": g["lr"] for g in optimizer.param_groups}
                metrics = {"train/loss": mean_loss, **{f"train/{k}": float(v) for k, v in parts_sum.items()},
                           "train/lr": optimizer.param_groups[0]["lr"], **lrs,
                           "train/images_per_s": ips, "train/effective_batch_size": effective}
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                log_rows.append({"step": done, "loss": mean_loss, "lr": optimizer.param_groups[0]["lr"],
                                 "images_per_s": ips})
                _write_log(log_path, log_rows)
                if log is not None:
                    log(metrics, done)
        if done % t.checkpoint_every == 0 or done == total:
            if main:
                payload = checkpoint_payload(raw_model, cfg, setting, split, done, total, clip_info,
                                             optimizer, scheduler)
                ckpt_io.atomic_save(payload, ckpt_io.checkpoint_path(out_dir, done))
            accelerator.wait_for_everyone()
    bar.close()
    seconds = time.perf_counter() - t0
    if main:
        final = checkpoint_payload(raw_model, cfg, setting, split, total, total, clip_info)
        ckpt_io.atomic_save(final, out_dir / "model.pt")
    accelerator.wait_for_everyone()
    trained = total - start
    return {
        "step": total,
        "seconds": seconds,
        "images_per_s": trained * effective / seconds if trained and seconds > 0 else 0.0,
        "learnable_params": int(params["learnable"]),
        "total_params": int(params["total"]),
        "last_loss": last_loss if not math.isnan(last_loss) else None,
        "effective_batch_size": effective,
        "num_processes": world,
        "per_device_batch": layout.per_device,
        "grad_accumulation": layout.accumulation,
        "layout": layout.describe(),
        "loader_workers": workers,
        "find_unused_parameters": bool(unused),
        "compile": _compile_summary(watch),
    }


def _compile_summary(watch: CompileWatch | None) -> dict[str, Any]:
    """What compilation did in this run (None when train.compile is off) and the compiled FlexAttention's
    signatures and block-kernel fallbacks (ldvc/model/route_attention.py), for the summary."""
    flex = flex_stats()
    out: dict[str, Any] = {"flex_compiled_signatures": flex["compiled_signatures"],
                           "flex_fallbacks_to_blocks": flex["fallbacks_to_blocks"]}
    if watch is not None:
        out.update(watch.report())
        watch.close()
    return out
