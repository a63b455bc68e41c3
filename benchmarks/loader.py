"""Training data loader throughput: images/s of the loader the training loop builds, per worker count,
with and without pinned memory and persistent workers, on real-size JPEGs.

    python -m benchmarks.loader --json                         # workers 0 1 2 4 8 ... up to the cores
    python -m benchmarks.loader --json --workers 0 2 --images 48 --batch 4 --image-size 128  # quick

Why: a GPU step must never wait for data. The target (the "Paper scale on GPUs" issue): loader
images/s >= 1.5 x the images/s the GPU consumes (benchmarks/gpu.py measures both on the GPU
machine and prints the smallest worker count that meets it).

What is measured, per (workers, pin_memory, persistent_workers):
- the data: `--images` JPEGs of `--hw` (default 500x375, VOC's typical size; quality 90) with
  textured content (smooth colour gradients + noise + shapes: JPEG decoding cost depends on it)
  and label PNGs, written once into a temporary canonical dataset (ldvc/data/canonical.py);
- the loader: torch DataLoader over ldvc.data.dataset.TrainStream (decode, the VOC preset's
  augmentation: random scale 0.5-2.0 of (4 x crop, crop), crop `--image-size`, flip, photometric)
  with the training loop's StepBatchSampler, `--batch` images per batch (the per-device batch);
- `first_batch_s`: from creating the iterator to the first batch (worker start-up);
- `images_per_s`: STEADY state. With w workers and prefetch factor p, w x p batches are produced in
  parallel before the first one arrives; timing from the first batch would count that backlog as
  throughput (with 16 workers: 32 batches handed over almost at once), inflating images/s and
  advising too few workers. So the first `warmup_batches` = w x p + 2 batches (2 with no worker)
  are consumed untimed, and then `measured_batches` (`--batches`, default max(16, 4 x w x p))
  are timed: by then every batch handed over was produced after the timing began;
- `epoch2_first_batch_s`: a second iterator over the same DataLoader: persistent workers skip
  the start-up here (the training loop iterates once, so this matters only for loaders that are
  re-iterated, e.g. per evaluation);
- pinned memory: batches are copied to the GPU (non_blocking) in the loop on CUDA, as training
  does; on a machine without CUDA pinning is skipped (torch would warn and do nothing).
Our choices: float32 (3, S, S) images leave the workers (what TrainStream returns today); the
augmentation runs in torch on one thread per worker (torch.set_num_threads(1) in each worker, as
DataLoader does by default).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from benchmarks.common import emit, machine_info, require_positive, resolve_device, run_fields, setup_threads
from ldvc.config import AugmentConfig
from ldvc.data import canonical
from ldvc.data.dataset import SegmentationFolder, StepBatchSampler, TrainStream

CLASSES = [f"class{i}" for i in range(20)]


def write_dataset(root: Path, n: int, hw: tuple[int, int], seed: int = 0) -> Path:
    """A canonical dataset of n textured JPEGs (H, W) = hw with label PNGs (train split only)."""
    rng = np.random.default_rng(seed)
    H, W = hw
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    (root / "images" / "train").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
    ids = [f"{i:06d}" for i in range(n)]
    for image_id in ids:
        # Smooth colour gradients + noise + a few flat shapes: a photo-like JPEG (decoding cost
        # depends on the content; flat images decode much faster than photos).
        fx, fy = rng.uniform(0.005, 0.05, 2)
        phase = rng.uniform(0, 2 * np.pi, 3)
        img = np.stack([127 + 100 * np.sin(fx * xs + fy * ys + p) for p in phase], axis=-1)
        img += rng.normal(0, 18, img.shape)
        label = np.full((H, W), 255, dtype=np.uint8)
        for _ in range(int(rng.integers(2, 5))):
            cy, cx, r = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(20, min(H, W) / 2)
            inside = (ys - cy) ** 2 + (xs - cx) ** 2 < r * r
            img[inside] = rng.uniform(0, 255, 3) + rng.normal(0, 10, (int(inside.sum()), 3))
            label[inside] = rng.integers(0, len(CLASSES))
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / "images" / "train" / f"{image_id}.jpg",
                                                                quality=90)
        canonical.write_label(canonical.label_path(root, "train", image_id), label)
    canonical.write_list(root, "train", ids)
    canonical.write_list(root, "val", [])
    canonical.write_meta(root, "loader_benchmark", CLASSES, {"train": n, "val": 0},
                         {"generator": "benchmarks.loader", "hw": list(hw)})
    return root


def _pin_ok(device: torch.device) -> bool:
    return device.type == "cuda"


def make_loader(folder: SegmentationFolder, args: argparse.Namespace, workers: int, pin: bool, persistent: bool,
                steps: int) -> DataLoader:
    """The training loop's loader for `steps` steps of `args.batch` images on one process."""
    augment = AugmentConfig(scale_min=0.5, scale_max=2.0, flip=True, photometric=True)
    stream = TrainStream(folder, 0, args.image_size, augment)
    sampler = StepBatchSampler(0, steps, args.batch, args.batch, 0, 1)
    return DataLoader(stream, batch_sampler=sampler, num_workers=workers, pin_memory=pin,
                      persistent_workers=persistent and workers > 0,
                      prefetch_factor=args.prefetch if workers > 0 else None)


def _consume(batches: Iterator[dict[str, Any]], device: torch.device, n: int) -> float:
    """Seconds to take n batches and move them to `device` (as the training loop does)."""
    t0 = time.perf_counter()
    for _ in range(n):
        batch = next(batches)
        image = batch["image"].to(device, non_blocking=True)
        batch["label"].to(device, non_blocking=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        del image
    return time.perf_counter() - t0


def warmup_batches(workers: int, prefetch: int) -> int:
    """Batches consumed before timing: the backlog the workers fill before the first one arrives, + 2."""
    return workers * prefetch + 2


def measured_batches(args: argparse.Namespace, workers: int) -> int:
    return args.batches if args.batches is not None else max(16, 4 * workers * args.prefetch)


def measure(folder: SegmentationFolder, args: argparse.Namespace, workers: int, pin: bool, persistent: bool,
            device: torch.device) -> dict[str, Any]:
    warm = warmup_batches(workers, args.prefetch if workers > 0 else 0)
    n = measured_batches(args, workers)
    loader = make_loader(folder, args, workers, pin, persistent, steps=warm + n + 2)
    it = iter(loader)
    first_s = _consume(it, device, 1)
    _consume(it, device, warm - 1)  # the backlog: produced before (or while) the first batch arrived
    rest_s = _consume(it, device, n)
    # epoch 2: a new iterator (persistent workers are reused, others restart); the sampler is long
    # enough, so the first iterator is simply dropped
    del it
    it2 = iter(loader)
    epoch2_first = _consume(it2, device, 1)
    del it2, loader
    return {
        "benchmark": "loader",
        "workers": workers,
        "pin_memory": pin,
        "persistent_workers": persistent and workers > 0,
        "batch": args.batch,
        "image_size": args.image_size,
        "source_hw": list(args.hw),
        "warmup_batches": warm,
        "measured_batches": n,
        "prefetch_factor": args.prefetch if workers > 0 else None,
        "first_batch_s": first_s,
        "epoch2_first_batch_s": epoch2_first,
        "images_per_s": n * args.batch / rest_s if rest_s > 0 else None,
        "device": str(device),
        "cpu_count": os.cpu_count(),
        **run_fields(device),
    }


def default_workers() -> list[int]:
    cores = os.cpu_count() or 1
    out = [0, 1, 2]
    w = 4
    while w <= cores:
        out.append(w)
        w *= 2
    return out


def settings(args: argparse.Namespace, device: torch.device) -> list[tuple[int, bool, bool]]:
    """(workers, pin_memory, persistent_workers) to measure. --lean: pinning is judged with
    non-persistent workers and persistence with pinning (the combination training would use)."""
    pins = [False, True] if _pin_ok(device) else [False]
    out = []
    for w in args.workers:
        for pin in pins:
            for persistent in ([False, True] if w > 0 else [False]):
                if args.lean and persistent and pin != pins[-1]:
                    continue
                out.append((w, pin, persistent))
    return out


def run(args: argparse.Namespace, device: torch.device, echo: bool = True) -> list[dict[str, Any]]:
    """Every configuration of `args` on a freshly written dataset (removed afterwards); `echo`
    prints each record as it is measured (a JSON line with --json)."""
    tmp = Path(tempfile.mkdtemp(prefix="ldvc-loader-"))
    try:
        folder = SegmentationFolder(write_dataset(tmp / "data", args.images, tuple(args.hw)), "train")
        records = []
        for workers, pin, persistent in settings(args, device):
            rec = measure(folder, args, workers, pin, persistent, device)
            records.append(rec)
            if echo:
                emit(rec, args.json)
        return records
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def recommend(records: list[dict[str, Any]], needed_images_per_s: float) -> dict[str, Any] | None:
    """The cheapest configuration (fewest workers) whose images/s reaches `needed_images_per_s`,
    pinned memory and persistent workers preferred at equal workers; None if none does."""
    ok = [r for r in records if r["images_per_s"] and r["images_per_s"] >= needed_images_per_s]
    if not ok:
        return None
    return min(ok, key=lambda r: (r["workers"], not r["pin_memory"], not r["persistent_workers"]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="one JSON object per configuration on stdout")
    p.add_argument("--workers", type=int, nargs="+", help="worker counts (default 0 1 2 4 8 ... up to the cores)")
    p.add_argument("--images", type=int, default=96, help="JPEGs written (default 96)")
    p.add_argument("--hw", type=int, nargs=2, default=[375, 500], metavar=("H", "W"),
                   help="source image size (default 375 500, VOC's typical)")
    p.add_argument("--image-size", type=int, default=512, help="training crop (default 512)")
    p.add_argument("--batch", type=int, default=16, help="images per batch (the per-device batch, default 16)")
    p.add_argument("--batches", type=int,
                   help="timed batches after the warm-up (default max(16, 4 x workers x prefetch))")
    p.add_argument("--prefetch", type=int, default=2, help="DataLoader prefetch_factor (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the main process (default 1)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (where batches are copied)")
    p.add_argument("--lean", action="store_true",
                   help="fewer settings: persistent workers only with pinned memory (where pinning applies)")
    p.add_argument("--no-progress", action="store_true", help="accepted for symmetry with the other scripts")
    args = p.parse_args(argv)
    args.workers = args.workers if args.workers is not None else default_workers()
    require_positive(p, args, ("images", "image_size", "batch", "batches", "prefetch"))
    if any(w < 0 for w in args.workers):
        p.error("--workers must be >= 0")
    if min(args.hw) < 16:
        p.error("--hw must be at least 16 x 16")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    setup_threads(args.threads)
    if not args.json:
        print(machine_info(device))
    return run(args, device)


if __name__ == "__main__":
    main()
