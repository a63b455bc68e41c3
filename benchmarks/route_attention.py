"""Route attention efficiency (protocol.md, "Route attention"): this project's exact block-wise
route attention vs dense attention vs a straightforward BiFormer-style gather implementation
(and, on CUDA, the FlexAttention backend), forward + backward, time and peak memory.

    python -m benchmarks.route_attention --json            # full sweep (grids 32/64/96, ...)
    python -m benchmarks.route_attention --json --quick    # grids 32/64, regions 8, fewer rounds

One JSON object per (grid, regions, topk). Contenders, all on q/k/v of shape (B, heads, H*W, d):
- route:  `ldvc.model.route_attention.route_attention` with backend "blocks" (the exact block
          kernel; at topk = regions^2 it IS dense SDPA);
- flex:   the same with backend "flex" (compiled FlexAttention with the routing's BlockMask), on
          CUDA only (no flex backward on the CPU); `max_abs_diff_flex_vs_route` /
          `max_abs_grad_diff_flex_vs_route` compare it with route at the measured topk;
- dense:  `F.scaled_dot_product_attention` (measured once per grid: it does not depend on the
          routing, and it runs in the same round-robin as every routed contender of that grid);
- gather: `gather_route_attention` below, written for this benchmark as the baseline: the
          direct reading of BiFormer's method — per query region, torch.gather of k copies of the
          routed K/V regions out of a view expanded over all query regions, then explicit
          softmax attention. Its backward scatters into that expanded view (an S^2-fold buffer).
Exactness: `max_abs_diff_vs_dense_at_full_topk` runs the routed block kernel with every region
routed (bypassing route_attention's dense shortcut) against SDPA, forward, on the first head only
(heads are independent once the routing is fixed; one head keeps the 96x96 check cheap).
`max_abs_diff_route_vs_gather` / `max_abs_grad_diff_route_vs_gather` compare outputs and q/k/v
gradients of route and gather at the measured topk (same routing by construction).
Timing: per grid, every contender of every (regions, topk) runs in ONE round-robin
(benchmarks/common.py); the first call of each is the profiled one (peak memory) and is also its
warm-up; then up to --repeats rounds, no new round after --time-cap seconds per grid (the
per-configuration cap: large grids get fewer rounds, at least one).
FLOPs (forward + backward): ldvc.model.flops.count_flops on meta copies of the inputs (math SDPA
backend, so dense attention is counted; torch's counter alone records 0 for the CPU's fused kernel).
Our choices: batch 1, float32, one intra-op thread on the CPU by default (a shared machine),
and a guard that skips a gather configuration whose estimated memory exceeds --max-gather-mb.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from benchmarks.common import (
    MB,
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
from ldvc.model.flops import count_flops
from ldvc.model.route_attention import flex_available, route_attention, routed_block_attention, to_region_major

FULL_GRIDS = (32, 64, 96)
FULL_REGIONS = (8, 4)
FULL_TOPK = (1, 4, 16)
QUICK_GRIDS = (32, 64)
QUICK_REGIONS = (8,)
QUICK_TOPK = (1, 4, 16)


# --------------------------------------------------------------------------------------------
# The baseline: BiFormer-style routing attention with gathered K/V copies (written here).
# --------------------------------------------------------------------------------------------


def partition_regions(x: torch.Tensor, grid: tuple[int, int], regions: int) -> torch.Tensor:
    """(B, heads, H*W, d) -> (B, S^2, heads, T, d): tokens grouped by S x S region, T = H*W / S^2."""
    B, h, _, d = x.shape
    H, W = grid
    S = regions
    x = x.reshape(B, h, S, H // S, S, W // S, d).permute(0, 2, 4, 1, 3, 5, 6)  # (B, S, S, h, rh, rw, d)
    return x.reshape(B, S * S, h, (H // S) * (W // S), d)


def merge_regions(x: torch.Tensor, grid: tuple[int, int], regions: int) -> torch.Tensor:
    """Inverse of `partition_regions`: (B, S^2, heads, T, d) -> (B, heads, H*W, d)."""
    B, _, h, _, d = x.shape
    H, W = grid
    S = regions
    x = x.reshape(B, S, S, h, H // S, W // S, d).permute(0, 3, 1, 4, 2, 5, 6)  # (B, h, S, rh, S, rw, d)
    return x.reshape(B, h, H * W, d)


def gather_route_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int], regions: int, topk: int
) -> torch.Tensor:
    """Bi-level routing attention the straightforward way; q, k, v (B, heads, H*W, d) -> same."""
    qb, kb, vb = (partition_regions(t, grid, regions) for t in (q, k, v))  # (B, R, h, T, d)
    B, R, h, T, d = qb.shape
    # Region-level routing on mean-pooled queries/keys, heads and channels together; detached.
    with torch.no_grad():
        q_r = qb.mean(dim=3).reshape(B, R, h * d)  # (B, R, h*d)
        k_r = kb.mean(dim=3).reshape(B, R, h * d)
        idx = torch.topk(q_r @ k_r.transpose(1, 2), topk, dim=-1).indices  # (B, R, K)
    # k copies of the routed K/V regions per query region, gathered from an expanded view.
    index = idx.view(B, R, topk, 1, 1, 1).expand(B, R, topk, h, T, d)
    k_sel = torch.gather(kb.unsqueeze(1).expand(B, R, R, h, T, d), 2, index)  # (B, R, K, h, T, d)
    v_sel = torch.gather(vb.unsqueeze(1).expand(B, R, R, h, T, d), 2, index)
    k_sel = k_sel.permute(0, 1, 3, 2, 4, 5).reshape(B, R, h, topk * T, d)  # (B, R, h, K*T, d)
    v_sel = v_sel.permute(0, 1, 3, 2, 4, 5).reshape(B, R, h, topk * T, d)
    attn = (qb * d**-0.5) @ k_sel.transpose(-1, -2)  # (B, R, h, T, K*T)
    out = attn.softmax(dim=-1) @ v_sel  # (B, R, h, T, d)
    return merge_regions(out, grid, regions)


def gather_bytes_estimate(batch: int, heads: int, grid: int, head_dim: int, regions: int, topk: int) -> int:
    """Rough peak of the gather baseline's forward + backward (float32 bytes): the S^2-fold
    gradient buffer of gather-on-expand for K and V, the gathered copies, and the scores."""
    R = regions * regions
    T = grid * grid // R
    expanded = 2 * batch * R * R * heads * T * head_dim
    copies = 4 * batch * R * topk * heads * T * head_dim  # K/V copies and their reshaped versions
    scores = 3 * batch * R * heads * T * topk * T  # scores, probabilities, their gradient
    return 4 * (expanded + copies + scores)


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


@dataclass
class Inputs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    grad_out: torch.Tensor
    grid: tuple[int, int]


def make_inputs(batch: int, heads: int, grid: int, head_dim: int, device: torch.device, seed: int) -> Inputs:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    shape = (batch, heads, grid * grid, head_dim)
    q, k, v, g = (torch.randn(shape, generator=gen).to(device) for _ in range(4))
    return Inputs(q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), g, (grid, grid))


def train_step(attn: Callable[[], torch.Tensor], x: Inputs) -> Callable[[], tuple[torch.Tensor, ...]]:
    """Forward + backward of one attention call with a fixed output gradient; returns (out, dq, dk, dv)."""

    def step() -> tuple[torch.Tensor, ...]:
        for t in (x.q, x.k, x.v):
            t.grad = None
        out = attn()
        out.backward(x.grad_out)
        return out.detach(), x.q.grad, x.k.grad, x.v.grad

    return step


def full_topk_diff(x: Inputs, regions: int) -> float:
    """Max |routed block kernel with every region routed - SDPA|, forward, first head only."""
    q, k, v = (t.detach()[:, :1] for t in (x.q, x.k, x.v))  # (B, 1, N, d)
    R = regions * regions
    with torch.no_grad():
        idx = torch.arange(R, device=q.device).expand(q.shape[0], R, R)  # every region routed
        blocks = routed_block_attention(
            to_region_major(q, x.grid, regions), to_region_major(k, x.grid, regions),
            to_region_major(v, x.grid, regions), idx,
        )  # (B, R, 1, T, d)
        routed = merge_regions(blocks, x.grid, regions)
        dense = F.scaled_dot_product_attention(q, k, v)
    return float((routed - dense).abs().max())


def max_diff(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> tuple[float, float]:
    """(max |out_a - out_b|, max over q/k/v of max |grad_a - grad_b|)."""
    out = float((a[0] - b[0]).abs().max())
    grad = max(float((ga - gb).abs().max()) for ga, gb in zip(a[1:], b[1:]))
    return out, grad


AttnFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def attention_gflop(attn: AttnFn, x: Inputs) -> float:
    """Forward + backward GFLOP of `attn` on meta copies of x's q/k/v (no compute, attention counted)."""
    return count_flops(attn, x.q, x.k, x.v, backward=True) / 1e9


def bench_grid(
    grid: int, regions_list: list[int], topk_list: list[int], args: argparse.Namespace, device: torch.device
) -> list[dict]:
    """Every (regions, topk) of one grid, all contenders in one side-by-side round-robin."""
    x = make_inputs(args.batch, args.heads, grid, args.head_dim, device, seed=grid)
    configs = [(regions, topk) for regions in regions_list for topk in topk_list]  # validated in parse_args
    with_flex = device.type == "cuda" and flex_available()
    attns: dict[str, AttnFn] = {"dense": F.scaled_dot_product_attention}
    skipped: dict[tuple[int, int], str] = {}
    for regions, topk in configs:
        attns[f"route_{regions}_{topk}"] = (
            lambda q, k, v, r=regions, t=topk: route_attention(q, k, v, x.grid, r, t, backend="blocks"))
        if with_flex and topk < regions * regions:
            attns[f"flex_{regions}_{topk}"] = (
                lambda q, k, v, r=regions, t=topk: route_attention(q, k, v, x.grid, r, t, backend="flex"))
        est = gather_bytes_estimate(args.batch, args.heads, grid, args.head_dim, regions, topk) / MB
        if est > args.max_gather_mb:
            skipped[(regions, topk)] = f"estimated {est:.0f} MiB > --max-gather-mb {args.max_gather_mb:.0f}"
            continue
        attns[f"gather_{regions}_{topk}"] = (
            lambda q, k, v, r=regions, t=topk: gather_route_attention(q, k, v, x.grid, r, t))
    fns = {name: train_step(lambda a=attn: a(x.q, x.k, x.v), x) for name, attn in attns.items()}
    gflop = {name: attention_gflop(attn, x) for name, attn in attns.items()}
    # One profiled call each: peak memory, a first warm-up, and (route vs gather / flex of one
    # config, back to back so only a few results are held) the exactness checks.
    peaks: dict[str, float] = {}
    diffs: dict[str, tuple[float, float]] = {}
    last: dict[str, tuple[torch.Tensor, ...]] = {}
    for name, fn in tqdm(fns.items(), desc=f"grid {grid}: memory", leave=False, disable=args.no_progress):
        holder: list[tuple[torch.Tensor, ...]] = []
        peaks[name] = peak_memory_mb(lambda f=fn, h=holder: h.append(f()), device)
        kind, _, key = name.partition("_")
        if kind == "route":
            last = {key: tuple(t.clone() for t in holder[0])}
        elif kind in ("gather", "flex") and key in last:
            diffs[f"{kind}_{key}"] = max_diff(last[key], holder[0])
        del holder
    timings = time_side_by_side(fns, device, warmup=args.warmup, repeats=args.repeats, time_cap_s=args.time_cap)
    full_diff = {r: full_topk_diff(x, r) for r in {r for r, _ in configs}}
    records = []
    for regions, topk in configs:
        key = f"{regions}_{topk}"
        route_t, dense_t = timings[f"route_{key}"], timings["dense"]
        gather_t, flex_t = timings.get(f"gather_{key}"), timings.get(f"flex_{key}")
        diff_out, diff_grad = diffs.get(f"gather_{key}", (None, None))
        flex_out, flex_grad = diffs.get(f"flex_{key}", (None, None))
        records.append({
            "benchmark": "route_attention",
            "grid": grid,
            "regions": regions,
            "topk": topk,
            "batch": args.batch,
            "heads": args.heads,
            "head_dim": args.head_dim,
            "dtype": "float32",
            "device": str(device),
            "threads": torch.get_num_threads(),
            "route_path": "dense_sdpa" if topk == regions * regions else "routed_blocks",
            "ms_route": route_t.median_ms,
            "ms_dense": dense_t.median_ms,
            "ms_gather": gather_t.median_ms if gather_t else None,
            "ms_flex": flex_t.median_ms if flex_t else None,
            "route_over_dense": ratio(route_t.median_ms, dense_t.median_ms),
            "route_over_gather": ratio(route_t.median_ms, gather_t.median_ms if gather_t else None),
            "flex_over_dense": ratio(flex_t.median_ms if flex_t else None, dense_t.median_ms),
            "gflop_route": gflop[f"route_{key}"],
            "gflop_dense": gflop["dense"],
            "gflop_gather": gflop.get(f"gather_{key}"),
            "peak_mb_route": peaks[f"route_{key}"],
            "peak_mb_dense": peaks["dense"],
            "peak_mb_gather": peaks.get(f"gather_{key}"),
            "peak_mb_flex": peaks.get(f"flex_{key}"),
            "peak_route_over_gather": ratio(peaks[f"route_{key}"], peaks.get(f"gather_{key}")),
            "max_abs_diff_vs_dense_at_full_topk": full_diff[regions],
            "max_abs_diff_route_vs_gather": diff_out,
            "max_abs_grad_diff_route_vs_gather": diff_grad,
            "max_abs_diff_flex_vs_route": flex_out,
            "max_abs_grad_diff_flex_vs_route": flex_grad,
            "rounds": route_t.rounds,
            "gather_skipped": skipped.get((regions, topk)),
        })
    return records


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", action="store_true", help="one JSON object per configuration on stdout")
    p.add_argument("--quick", action="store_true", help="grids 32/64, regions 8, 2 rounds")
    p.add_argument("--grids", type=int, nargs="+", help=f"token grid sides (default {FULL_GRIDS})")
    p.add_argument("--regions", type=int, nargs="+", help=f"regions per side (default {FULL_REGIONS})")
    p.add_argument("--topk", type=int, nargs="+", help=f"routed regions (default {FULL_TOPK})")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    add_timing_args(p, repeats_help="timed rounds (default 5, quick 2)", warmup=0,
                    warmup_help="untimed calls after the first (profiled, also warm-up) call (default 0)",
                    time_cap=20.0, time_cap_help="per grid: no new timed round starts after this many seconds "
                    "(default 20)")
    p.add_argument("--max-gather-mb", type=float, default=4096.0,
                   help="skip gather configurations estimated to need more memory (default 4096)")
    args = p.parse_args(argv)
    args.grids = args.grids or list(QUICK_GRIDS if args.quick else FULL_GRIDS)
    args.regions = args.regions or list(QUICK_REGIONS if args.quick else FULL_REGIONS)
    args.topk = args.topk or list(QUICK_TOPK if args.quick else FULL_TOPK)
    args.repeats = args.repeats if args.repeats is not None else (2 if args.quick else 5)
    for name in ("grids", "regions", "topk"):
        bad = [n for n in getattr(args, name) if n < 1]
        if bad:
            p.error(f"--{name} must be positive integers, got {bad}")
    bad_grid = [(g, r) for g in args.grids for r in args.regions if g % r]
    if bad_grid:
        g, r = bad_grid[0]
        p.error(f"{r} regions per side do not divide the {g}x{g} token grid; pick --regions among the divisors of {g}")
    bad_topk = [(r, k) for r in args.regions for k in args.topk if k > r * r]
    if bad_topk:
        r, k = bad_topk[0]
        p.error(f"--topk {k} exceeds the {r}x{r} = {r * r} regions; lower --topk or raise --regions")
    require_positive(p, args, ("heads", "head_dim", "batch", "repeats"))
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    setup_threads(args.threads if device.type == "cpu" else None)
    if not args.json:
        print(machine_info(device))
    records: list[dict] = []
    for grid in tqdm(args.grids, desc="route attention grids", disable=args.no_progress):
        for measured in bench_grid(grid, args.regions, args.topk, args, device):
            rec = {**measured, **run_fields(device)}
            records.append(rec)
            emit(rec, args.json)
    return records


if __name__ == "__main__":
    main()
