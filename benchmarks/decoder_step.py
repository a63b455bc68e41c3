"""Decoder training-step cost: LDVC's LCTD vs the ZegCLIP decoder (protocol.md, "ZegCLIP settings"
and "What LDVC claims"), decoder only, on random patch tokens and text embeddings.

    python -m benchmarks.decoder_step --json            # paper size and the params.yaml size
    python -m benchmarks.decoder_step --json --quick    # fewer rounds

One JSON object per size. A step = forward, the project's loss (sigmoid focal x 100 + dice,
ldvc.model.losses), backward and an AdamW step (ldvc.train.optim.build_optimizer). Contenders,
built through the decoder registry exactly as the segmentor builds them:
- lctd:            LCTD with route attention (decoder.route_attention true);
- lctd_dense_sa:   LCTD with plain dense self-attention (the "no_route" ablation), which separates
                   the route attention's share of the LCTD's cost from the rest of the decoder;
- zegclip:         the ZegCLIP decoder (class queries attend to the patch tokens).
Sizes:
- paper:   32x32 tokens, width 512, 3 layers, 8 heads, FFN 2048, regions 8, topk 4, batch 4,
           20 classes, joint embedding D = 512 (CLIP ViT-B/16's);
- default: the decoder, batch size, input size and CLIP of params.yaml, all its dataset's classes.
Our choices: the loss is taken on the token-grid logits (out_size=None), not on logits upsampled to
the input size: the upsampling and the per-pixel loss are identical for both decoders and would
only dilute the comparison. GFLOP per step (forward + backward) comes from
ldvc.model.flops.count_flops on the meta device (attention included: torch's counter alone records
0 for the CPU's fused attention kernel and for nn.MultiheadAttention's fast path; element-wise
work, the loss terms and AdamW are not counted). The first call is an untimed warm-up that creates
AdamW's state; peak memory (benchmarks/common.py) is taken in the second, a steady-state step.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
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
from ldvc.config import Config, DecoderConfig, LossConfig, TrainConfig, load_config
from ldvc.model.build import DECODERS  # the full registry (ldvc/model/decoders.py)
from ldvc.model.clip_loader import model_config, patch_size
from ldvc.model.flops import count_flops
from ldvc.model.losses import segmentation_loss
from ldvc.train.optim import build_optimizer

CONTENDERS = ("lctd", "lctd_dense_sa", "zegclip")


@dataclass
class DecoderSize:
    """Everything that fixes one decoder benchmark configuration."""

    name: str
    decoder: DecoderConfig
    embed_dim: int
    grid: int
    batch: int
    classes: int


def paper_size() -> DecoderSize:
    dec = DecoderConfig(layers=3, heads=8, width=512, ffn=2048, dropout=0.0, route_regions=8, route_topk=4)
    return DecoderSize("paper", dec, embed_dim=512, grid=32, batch=4, classes=20)


def default_size(cfg: Config) -> DecoderSize:
    """The sizes params.yaml trains with (decoder section, train.batch_size, data.image_size, CLIP)."""
    from ldvc.data.classes import dataset_classes

    clip_cfg = model_config(cfg.clip.model)
    ps = patch_size(cfg.clip.model)
    if clip_cfg is None or ps is None:
        raise ValueError(f"clip.model {cfg.clip.model!r} is not a known open_clip model config")
    if cfg.data.image_size % ps:
        raise ValueError(f"data.image_size {cfg.data.image_size} is not a multiple of the patch size {ps}")
    return DecoderSize(
        "default", cfg.decoder, embed_dim=int(clip_cfg["embed_dim"]), grid=cfg.data.image_size // ps,
        batch=cfg.train.batch_size, classes=len(dataset_classes(cfg.data)),
    )


def contender_config(size: DecoderSize, contender: str) -> DecoderConfig:
    if contender == "lctd":
        return dataclasses.replace(size.decoder, type="lctd", route_attention=True)
    if contender == "lctd_dense_sa":
        return dataclasses.replace(size.decoder, type="lctd", route_attention=False)
    if contender == "zegclip":
        return dataclasses.replace(size.decoder, type="zegclip")
    raise ValueError(f"unknown contender {contender!r}; one of {CONTENDERS}")


def check_size(size: DecoderSize) -> None:
    """Impossible sizes fail here, before any model is built."""
    d = size.decoder
    if d.width % d.heads:
        raise ValueError(f"{size.name}: decoder width {d.width} is not divisible by {d.heads} heads")
    if size.grid % d.route_regions:
        raise ValueError(
            f"{size.name}: {d.route_regions} route regions per side do not divide the {size.grid}x{size.grid} "
            f"token grid; change decoder.route_regions"
        )
    if not 1 <= d.route_topk <= d.route_regions**2:
        raise ValueError(f"{size.name}: route_topk {d.route_topk} is outside 1..{d.route_regions**2}")


def make_step(size: DecoderSize, contender: str, device: torch.device,
              seed: int) -> tuple[Callable[[], Any], Any, int]:
    """A closure running one training step of `contender` on fixed random inputs; the model; and the
    step's FLOPs (forward + backward, counted on meta: the loss's backward costs no matmul)."""
    torch.manual_seed(seed)
    cfg = contender_config(size, contender)
    model = DECODERS[cfg.type](size.embed_dim, cfg).to(device).train()
    optimizer = build_optimizer(model, TrainConfig(lr=2e-4))
    gen = torch.Generator().manual_seed(seed)
    B, D, g, C = size.batch, size.embed_dim, size.grid, size.classes
    patches = torch.randn(B, D, g, g, generator=gen).to(device)  # (B, D, h, w)
    global_emb = torch.randn(B, D, generator=gen).to(device)  # (B, D)
    text = torch.randn(C, D, generator=gen).to(device)  # (C, D)
    target = torch.randint(0, C, (B, g, g), generator=gen).to(device)  # (B, h, w) class ids
    loss_cfg = LossConfig()

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        logits = model(patches, global_emb, text)  # (B, C, h, w)
        loss, _ = segmentation_loss(logits, target, loss_cfg)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    # In the segmentor the decoder's inputs carry gradients (the prompts are trained): count that too.
    inputs = [t.detach().requires_grad_() for t in (patches, global_emb, text)]
    flops = count_flops(model, *inputs, backward=True)
    return step, model, flops


def bench_size(size: DecoderSize, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    check_size(size)
    steps: dict[str, Callable[[], Any]] = {}
    params: dict[str, int] = {}
    gflop: dict[str, float] = {}
    for name in CONTENDERS:
        steps[name], model, flops = make_step(size, name, device, seed=args.seed)
        params[name] = sum(p.numel() for p in model.parameters())
        gflop[name] = flops / 1e9
    peaks: dict[str, float] = {}
    for name, step in tqdm(steps.items(), desc=f"{size.name}: memory", leave=False, disable=args.no_progress):
        step()  # warm-up: creates AdamW's state, so the profiled step is a steady-state one
        peaks[name] = peak_memory_mb(step, device)
    timings = time_side_by_side(steps, device, warmup=args.warmup, repeats=args.repeats, time_cap_s=args.time_cap)
    d = size.decoder
    return {
        "benchmark": "decoder_step",
        "size": size.name,
        "batch": size.batch,
        "grid": size.grid,
        "classes": size.classes,
        "embed_dim": size.embed_dim,
        "width": d.width,
        "layers": d.layers,
        "heads": d.heads,
        "ffn": d.ffn,
        "regions": d.route_regions,
        "topk": d.route_topk,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "ms_lctd": timings["lctd"].median_ms,
        "ms_lctd_dense_sa": timings["lctd_dense_sa"].median_ms,
        "ms_zegclip": timings["zegclip"].median_ms,
        "lctd_over_zegclip": ratio(timings["lctd"].median_ms, timings["zegclip"].median_ms),
        "lctd_over_lctd_dense_sa": ratio(timings["lctd"].median_ms, timings["lctd_dense_sa"].median_ms),
        "gflop_lctd": gflop["lctd"],
        "gflop_lctd_dense_sa": gflop["lctd_dense_sa"],
        "gflop_zegclip": gflop["zegclip"],
        "peak_mb_lctd": peaks["lctd"],
        "peak_mb_lctd_dense_sa": peaks["lctd_dense_sa"],
        "peak_mb_zegclip": peaks["zegclip"],
        "params_lctd": params["lctd"],
        "params_zegclip": params["zegclip"],
        "rounds": timings["lctd"].rounds,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="one JSON object per size on stdout")
    p.add_argument("--quick", action="store_true", help="2 timed rounds")
    p.add_argument("--sizes", nargs="+", default=["paper", "default"], choices=["paper", "default", "tiny"],
                   help="paper | default (params.yaml) | tiny (a smoke-test size)")
    p.add_argument("--params", default="params.yaml", help="parameter file for the default size")
    add_timing_args(p, repeats_help="timed rounds (default 3, quick 2)", warmup=0,
                    warmup_help="untimed rounds after the first (profiled) call", time_cap=30.0,
                    time_cap_help="per size: no new round after this many s")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.repeats = args.repeats if args.repeats is not None else (2 if args.quick else 3)
    require_positive(p, args, ("repeats",))
    return args


def tiny_size() -> DecoderSize:
    """A seconds-fast size for smoke tests (same code paths: routed blocks, one layer)."""
    dec = DecoderConfig(layers=1, heads=2, width=32, ffn=64, route_regions=2, route_topk=2)
    return DecoderSize("tiny", dec, embed_dim=32, grid=8, batch=2, classes=5)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    setup_threads(args.threads if device.type == "cpu" else None)
    sizes = []
    for name in args.sizes:  # build (and validate) every size before measuring any
        if name == "paper":
            sizes.append(paper_size())
        elif name == "tiny":
            sizes.append(tiny_size())
        else:
            sizes.append(default_size(load_config(args.params)))
    for s in sizes:
        check_size(s)
    if not args.json:
        print(machine_info(device))
    records = []
    for size in tqdm(sizes, desc="decoder step sizes", disable=args.no_progress):
        rec = {**bench_size(size, args, device), **run_fields(device)}
        records.append(rec)
        emit(rec, args.json)
    return records


if __name__ == "__main__":
    main()
