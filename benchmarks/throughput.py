"""Full-model throughput: training images/s, evaluation images/s (whole image and sliding window),
and how close the image encoder's forward gets to the machine's measured matmul throughput.

    python -m benchmarks.throughput --json            # small CLIP on the CPU, ViT-B/16 on a GPU
    python -m benchmarks.throughput --json --quick    # LCTD only, fewer rounds

One JSON object per decoder (lctd, zegclip). Models: `--model small` is the params.yaml setup (the
pipeline's small CLIP, its input size, batch size and eval settings); `--model vitb16` is the
paper setup (benchmarks/setups.py: the dataclass defaults + presets/voc.yaml: CLIP ViT-B/16 at
512 px, ZegCLIP's decoder size and sliding window).
`auto` picks vitb16 on a GPU and small on the CPU. CLIP weights are random: speed does not depend
on their values (and no hub is reachable here).
What is timed, side by side in one round-robin (benchmarks/common.py):
- train:  one optimizer step, the training loop's own (ldvc.train.loop.TrainStep: host batch
          copy, label table, forward with the seen classes, loss, its one host read, backward,
          AdamW) for LDVC and the ZegCLIP baseline (ldvc/baseline.py); images/s = train.batch_size
          / step time;
- whole:  ldvc.eval.inference.whole_inference on `--eval-images` images of a VOC-like 3:4 shape
          with short side data.image_size (ZegCLIP's keep-ratio resize), all classes;
- slide:  ldvc.eval.inference.slide_inference on the same images (eval.window / eval.stride);
- encoder: the prompted image encoder's forward on an eval batch at data.image_size (no grad);
- matmul: a square float32 matrix product (`--matmul-size`), whose 2n^3 / time is the machine's
          matmul GFLOP/s in this run. encoder_matmul_fraction = (encoder FLOPs / encoder time) /
          matmul GFLOP/s, encoder FLOPs counted by ldvc.model.flops.count_flops (matrix products,
          convolutions AND attention, on the meta device; softmax, norms and GELU are not counted).
          Until this count, torch's FlopCounterMode alone missed the CPU's fused attention kernel
          and MultiheadAttention's fast path: the ViT-B/16 encoder at 512 px read 119-178 instead
          of 217 GFLOP, which understated the fraction.
The full training step at paper size, part by part, is benchmarks/train_step.py.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from benchmarks.common import (
    add_timing_args,
    emit,
    machine_info,
    require_positive,
    resolve_device,
    run_fields,
    setup_threads,
    time_side_by_side,
)
from benchmarks.setups import (
    build_model,
    default_config,
    make_step_accelerator,
    make_train_step,
    matmul_fn,
    paper_config,
    split_ids,
)
from ldvc.baseline import method_config
from ldvc.config import Config, config_from_dict, deep_merge
from ldvc.eval.inference import slide_inference, whole_inference, window_starts
from ldvc.model.flops import count_flops

DECODER_TYPES = ("lctd", "zegclip")


def model_config(model: str, params: Path) -> Config:
    """The Config of `model` ('small' = params.yaml, 'vitb16' = the paper setup, see above)."""
    if model == "small":
        return default_config("lctd", params)
    if model == "vitb16":
        return paper_config("lctd")
    raise ValueError(f"--model {model!r}: use small, vitb16 or auto")


def build(cfg: Config, decoder: str, names: list[str], device: torch.device) -> nn.Module:
    """LDVC ("lctd") or the ZegCLIP baseline ("zegclip", ldvc/baseline.py: no text prompts) of `cfg`."""
    return build_model(method_config(cfg, decoder), names, device)


def train_step_fn(model: nn.Module, cfg: Config, names: list[str], seen: list[int], device: torch.device,
                  accelerator: Any) -> Callable[[], Any]:
    """The training loop's own step on train.batch_size images (benchmarks/setups.py: make_train_step)."""
    return make_train_step(model, cfg, names, seen, device, cfg.train.batch_size, accelerator)


def eval_images(cfg: Config, n: int) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
    """n images in [0, 1] of a VOC-like 3:4 shape, short side data.image_size (keep-ratio resized)."""
    S = cfg.data.image_size
    h, w = S, round(S * 4 / 3)
    gen = torch.Generator().manual_seed(2)
    return [torch.rand(3, h, w, generator=gen) for _ in range(n)], [(h, w)] * n


def eval_fns(model: nn.Module, cfg: Config, n: int) -> dict[str, Callable[[], None]]:
    images, sizes = eval_images(cfg, n)
    S, e = cfg.data.image_size, cfg.eval

    def whole() -> None:
        model.eval()
        for i in range(0, n, e.batch_size):
            whole_inference(model, images[i:i + e.batch_size], sizes[i:i + e.batch_size], S)

    def slide() -> None:
        model.eval()
        for im, sz in zip(images, sizes):
            slide_inference(model, im, sz, e.window, e.stride, max_batch=e.batch_size)

    return {"whole": whole, "slide": slide}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="one JSON object per decoder on stdout")
    p.add_argument("--quick", action="store_true", help="lctd only, 2 rounds")
    p.add_argument("--model", default="auto", choices=["auto", "small", "vitb16"])
    p.add_argument("--decoders", nargs="+", choices=DECODER_TYPES, help="default: lctd zegclip (quick: lctd)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--batch-size", type=int, help="training batch (default: train.batch_size)")
    p.add_argument("--eval-images", type=int, help="images per evaluation call (default 16, vitb16 8)")
    p.add_argument("--matmul-size", type=int, help="square matmul side (default 1024 CPU, 8192 GPU)")
    add_timing_args(p, repeats_help="timed rounds (default 5, quick 2)", warmup=1,
                    warmup_help="untimed rounds before timing", time_cap=40.0,
                    time_cap_help="no new round after this many seconds")
    args = p.parse_args(argv)
    args.decoders = args.decoders or (["lctd"] if args.quick else list(DECODER_TYPES))
    args.repeats = args.repeats if args.repeats is not None else (2 if args.quick else 5)
    require_positive(p, args, ("repeats", "batch_size", "eval_images", "matmul_size"))
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    setup_threads(args.threads if device.type == "cpu" else None)
    model_name = args.model if args.model != "auto" else ("vitb16" if device.type == "cuda" else "small")
    cfg = model_config(model_name, Path(args.params))
    if args.batch_size:
        cfg = config_from_dict(deep_merge(cfg.to_dict(), {"train": {"batch_size": args.batch_size}}))
    n_eval = args.eval_images or (8 if model_name == "vitb16" else 16)
    mm_n = args.matmul_size or (8192 if device.type == "cuda" else 1024)
    names, seen = split_ids(cfg)
    if not args.json:
        print(machine_info(device))

    fns: dict[str, Callable[[], None]] = {}
    models: dict[str, nn.Module] = {}
    accelerator = make_step_accelerator(cfg, cfg.train.batch_size)
    for dec in tqdm(args.decoders, desc="build models", leave=False, disable=args.no_progress):
        models[dec] = build(cfg, dec, names, device)
        fns[f"train_{dec}"] = train_step_fn(models[dec], method_config(cfg, dec), names, seen, device, accelerator)
        for kind, fn in eval_fns(models[dec], cfg, n_eval).items():
            fns[f"{kind}_{dec}"] = fn
    encoder = models[args.decoders[0]].image_encoder
    S = cfg.data.image_size
    enc_batch = min(cfg.eval.batch_size, n_eval) if model_name == "vitb16" else n_eval
    enc_in = torch.randn(enc_batch, 3, S, S, generator=torch.Generator().manual_seed(4)).to(device)

    def encoder_forward() -> None:
        with torch.no_grad():
            encoder(enc_in)

    encoder_gflop = count_flops(encoder, enc_in) / 1e9  # per batch of enc_batch images, attention included
    fns["encoder"] = encoder_forward
    fns["matmul"] = matmul_fn(mm_n, device)
    timings = time_side_by_side(fns, device, warmup=args.warmup, repeats=args.repeats, time_cap_s=args.time_cap)

    matmul_gflops = 2 * mm_n**3 / (timings["matmul"].median_ms / 1e3) / 1e9
    encoder_gflops = encoder_gflop / (timings["encoder"].median_ms / 1e3)
    h, w = eval_images(cfg, 1)[1][0]
    windows = len(window_starts(h, cfg.eval.window, cfg.eval.stride)) * len(window_starts(w, cfg.eval.window,
                                                                                         cfg.eval.stride))
    records = []
    for dec in args.decoders:
        rec = {
            "benchmark": "throughput",
            "model": model_name,
            "clip": cfg.clip.model,
            "decoder": dec,
            "image_size": S,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "train_batch": cfg.train.batch_size,
            "train_classes": len(seen),
            "eval_classes": len(names),
            "eval_images": n_eval,
            "eval_image_hw": [h, w],
            "slide_window": cfg.eval.window,
            "slide_stride": cfg.eval.stride,
            "slide_windows_per_image": windows,
            "train_images_per_s": cfg.train.batch_size / (timings[f"train_{dec}"].median_ms / 1e3),
            "eval_whole_images_per_s": n_eval / (timings[f"whole_{dec}"].median_ms / 1e3),
            "eval_slide_images_per_s": n_eval / (timings[f"slide_{dec}"].median_ms / 1e3),
            "ms_train_step": timings[f"train_{dec}"].median_ms,
            "encoder_batch": enc_batch,
            "encoder_gflop_per_image": encoder_gflop / enc_batch,
            "encoder_ms_per_batch": timings["encoder"].median_ms,
            "encoder_achieved_gflops": encoder_gflops,
            "matmul_size": mm_n,
            "matmul_gflops": matmul_gflops,
            "encoder_matmul_fraction": encoder_gflops / matmul_gflops,
            "rounds": timings[f"train_{dec}"].rounds,
            **run_fields(device),
        }
        records.append(rec)
        emit(rec, args.json)
    return records


if __name__ == "__main__":
    main()
