"""The full training step, LDVC vs ZegCLIP: forward + backward + AdamW of the WHOLE segmentor (image
encoder with visual prompts, text encoder with text prompts, decoder, loss), side by side.

    python -m benchmarks.train_step --json                  # paper size (ViT-B/16, 512 px, VOC preset)
    python -m benchmarks.train_step --json --sizes default  # params.yaml (small CLIP, 64 px)

This is the ratio a user pays for LDVC over ZegCLIP; benchmarks/decoder_step.py isolates the decoder.
One JSON object per size. Contenders, in one side-by-side round-robin (benchmarks/common.py):
- step_lctd / step_zegclip: one optimizer step of LDVC and of the preset's ZegCLIP BASELINE
  (ldvc/baseline.py: zegclip decoder, no text prompts, as the tables' `zegclip` ablation) on the
  same random-weight CLIP, through the training loop's own step (ldvc.train.loop.TrainStep via
  benchmarks/setups.py make_train_step: host batch copy, label table, loss, its one host read),
  seen classes only, autocast as train.mixed_precision on CUDA, float32 on the CPU;
- encoder: forward + backward of the prompted image encoder alone (identical in both models):
  `encoder_share_*` = its time / the step time.
Sizes: paper = the dataclass defaults + presets/voc.yaml (`--preset`), batch = the per-device batch
of that preset's layout on one process on CUDA (ldvc/train/layout.py: 16), 1 on the CPU (`--batch`);
default = params.yaml with its train.batch_size.
FLOPs per step come from ldvc.model.flops.segmentor_flops (matrix products, convolutions and
attention, forward + backward, counted on the meta device; element-wise work, the loss terms and
AdamW are not counted), by part. Utilisation = counted FLOPs / step time / the peak of the device
actually present in the step's dtype (benchmarks/devices.py: datasheet peaks of known GPUs; an
unknown device has none and says so) and, in the same run, a measured square matmul of
`--matmul-size` in the step's dtype (on the CPU only the measured matmul).
Peak memory: benchmarks/common.py:peak_memory_mb of one steady-state step (after AdamW's state exists).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from benchmarks.common import (
    add_timing_args,
    emit,
    machine_info,
    peak_memory_mb,
    ratio,
    require_positive,
    resolve_device,
    run_fields,
    setup_threads,
    time_side_by_side,
)
from benchmarks.devices import device_peak
from benchmarks.setups import (
    autocast_dtype,
    build_model,
    default_config,
    dtype_name,
    make_encoder_step,
    make_step_accelerator,
    make_train_step,
    matmul_fn,
    paper_config,
    split_ids,
)
from ldvc.config import Config
from ldvc.model.flops import segmentor_flops
from ldvc.train.layout import resolve_layout

DECODERS = ("lctd", "zegclip")
PARTS = ("image_encoder", "text_encoder", "decoder")


def size_configs(size: str, args: argparse.Namespace) -> dict[str, Config]:
    if size == "paper":
        return {d: paper_config(d, args.preset) for d in DECODERS}
    if size == "default":
        return {d: default_config(d, Path(args.params)) for d in DECODERS}
    raise ValueError(f"unknown size {size!r}: paper or default")


def default_batch(cfg: Config, size: str, device: torch.device) -> int:
    """paper: the preset's per-device batch on one GPU, 1 on the CPU; default: train.batch_size."""
    if size == "paper" and device.type != "cuda":
        return 1
    if size == "paper":
        return resolve_layout(cfg.train.batch_size, cfg.train.per_device_batch, 1).per_device
    return cfg.train.batch_size


def bench_size(size: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    cfgs = size_configs(size, args)
    cfg = cfgs["lctd"]
    batch = args.batch or default_batch(cfg, size, device)
    names, seen = split_ids(cfg)
    amp = autocast_dtype(cfg, device)
    fns: dict[str, Callable[[], Any]] = {}
    models = {}
    gflop: dict[str, dict[str, float]] = {}
    accelerator = make_step_accelerator(cfg, batch)
    for dec in tqdm(DECODERS, desc=f"{size}: build + count", leave=False, disable=args.no_progress):
        models[dec] = build_model(cfgs[dec], names, device, seed=args.seed)
        parts = segmentor_flops(models[dec], cfg.data.image_size, batch=batch,
                                class_ids=torch.tensor(seen, device=device), backward=True)
        gflop[dec] = {k: v / 1e9 for k, v in parts.items()}
        fns[f"step_{dec}"] = make_train_step(models[dec], cfgs[dec], names, seen, device, batch, accelerator)
    fns["encoder"] = make_encoder_step(models["lctd"], cfg, device, batch)
    mm_dtype = amp or torch.float32
    mm_n = args.matmul_size or (8192 if device.type == "cuda" else 1024)
    fns["matmul"] = matmul_fn(mm_n, device, mm_dtype)
    peaks = {}
    for dec in DECODERS:
        fns[f"step_{dec}"]()  # warm-up: creates AdamW's state; the profiled step is a steady one
        peaks[dec] = peak_memory_mb(fns[f"step_{dec}"], device)
    timings = time_side_by_side(fns, device, warmup=args.warmup, repeats=args.repeats, time_cap_s=args.time_cap)
    matmul_tflops = 2 * mm_n**3 / (timings["matmul"].median_ms / 1e3) / 1e12
    peak = device_peak(device, mm_dtype)
    reference = peak.tflops if peak is not None else None
    rec: dict[str, Any] = {
        "benchmark": "train_step",
        "size": size,
        "preset": args.preset if size == "paper" else None,
        "clip": cfg.clip.model,
        "image_size": cfg.data.image_size,
        "batch": batch,
        "seen_classes": len(seen),
        "visual_prompts": cfg.prompt.visual_tokens,
        "decoder_width": cfg.decoder.width,
        "decoder_layers": cfg.decoder.layers,
        "regions": cfg.decoder.route_regions,
        "topk": cfg.decoder.route_topk,
        "device": str(device),
        "dtype": dtype_name(amp),
        "threads": torch.get_num_threads(),
    }
    for dec in DECODERS:
        ms = timings[f"step_{dec}"].median_ms
        achieved = gflop[dec]["total"] / ms  # GFLOP per ms = TFLOP/s
        rec[f"ms_step_{dec}"] = ms
        rec[f"images_per_s_{dec}"] = batch / (ms / 1e3)
        rec[f"gflop_step_{dec}"] = gflop[dec]["total"]
        for part in PARTS:
            rec[f"gflop_{part}_{dec}"] = gflop[dec][part]
        rec[f"achieved_tflops_{dec}"] = achieved
        rec[f"matmul_fraction_{dec}"] = achieved / matmul_tflops
        rec[f"utilisation_{dec}"] = achieved / reference if reference else None
        rec[f"peak_mb_{dec}"] = peaks[dec]
        rec[f"encoder_share_{dec}"] = timings["encoder"].median_ms / ms
    rec.update({
        "step_lctd_over_zegclip": ratio(rec["ms_step_lctd"], rec["ms_step_zegclip"]),
        "gflop_lctd_over_zegclip": ratio(rec["gflop_step_lctd"], rec["gflop_step_zegclip"]),
        "ms_encoder_fwd_bwd": timings["encoder"].median_ms,
        "matmul_size": mm_n,
        "matmul_dtype": dtype_name(mm_dtype),
        "matmul_tflops": matmul_tflops,
        "reference_tflops": reference,
        "reference_device": peak.name if peak is not None else None,
        "rounds": timings["step_lctd"].rounds,
    })
    return rec


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="one JSON object per size on stdout")
    p.add_argument("--quick", action="store_true", help="2 timed rounds")
    p.add_argument("--sizes", nargs="+", default=["paper"], choices=["paper", "default"])
    p.add_argument("--preset", default="voc", help="preset of the paper size (default voc)")
    p.add_argument("--params", default="params.yaml", help="parameter file of the default size")
    p.add_argument("--batch", type=int, help="images per step (default: see the module docstring)")
    p.add_argument("--matmul-size", type=int, help="square matmul side (default 1024 CPU, 8192 GPU)")
    add_timing_args(p, repeats_help="timed rounds (default 3, quick 2)", warmup=1,
                    warmup_help="untimed rounds before timing (default 1)", time_cap=120.0,
                    time_cap_help="per size: no new round after this many s")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.repeats = args.repeats if args.repeats is not None else (2 if args.quick else 3)
    require_positive(p, args, ("repeats", "batch", "matmul_size"))
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    setup_threads(args.threads if device.type == "cpu" else None)
    for size in args.sizes:  # configs fail before any model is built
        size_configs(size, args)
    if not args.json:
        print(machine_info(device))
    records = []
    for size in tqdm(args.sizes, desc="train step sizes", disable=args.no_progress):
        rec = {**bench_size(size, args, device), **run_fields(device)}
        records.append(rec)
        emit(rec, args.json)
    return records


if __name__ == "__main__":
    main()
