"""The device check: everything "Paper scale on GPUs" needs to know from one GPU, in one call.

    python -m benchmarks.gpu --json            # on the GPU machine (one H200: about 2-4 minutes)
    python -m benchmarks.gpu --tiny --json     # the same logic at tiny sizes on any machine (CPU test)

Writes reports/benchmarks_gpu.md (`--out`) and, with --json, one JSON line per record on stdout
(`python -m benchmarks.report --from` accepts them: the train_step and loader records join the main
report). Parts, each under a time budget (`--budget`, seconds in all; a part that would start past
it is skipped and says so):
1. environment: torch / CUDA / GPU; open_clip is installed from .whl/ (benchmarks/gpu_wheels.sh
   fetches the wheels; `pip install --no-index --no-deps --target .whl/site-<python>`) when it
   cannot be imported - the GPU machine has no package index;
2. training steps at paper size (benchmarks/train_step.py): ViT-B/16, 512 px, the VOC preset's
   per-device batch on one GPU (16), bf16 autocast, LDVC and ZegCLIP side by side: images/s,
   peak memory, FLOPs per step from ldvc/model/flops.py and the utilisation they give against
   the H200's ~790 TFLOP/s bf16 rate (and a measured bf16 matmul);
3. FlexAttention vs the reference block kernel on CUDA (ldvc/model/route_attention.py): forward +
   backward at the LCTD's paper-size shape in float32 and bf16, the fused path checked by its
   memory (dense scores would show), and the time of both;
4. the training function the train stage calls (ldvc.train.loop.train_segmentor): a few
   iterations with params.yaml's synthetic default (small random CLIP), bf16 on CUDA;
5. the training loader (benchmarks/loader.py): images/s per worker count at 512 px crops, beside
   the step images/s, and the smallest worker count that feeds >= 1.5x the faster model;
6. sliding-window inference FPS at 512 px (window 512, stride 426, a 512x683 image: 2 windows,
   ldvc.eval.inference.slide_inference), float32 (ZegCLIP's setting: 9.0 / 6.7 FPS VOC / COCO on
   a 1080 Ti, paper numbers) and bf16 autocast;
7. projected wall time of the protocols on this one GPU: VOC 20k x 16 and COCO-Stuff 80k x 16
   images (inductive), from the measured step images/s (global batch 16 in one step).
CUDA-only parts are skipped on a machine without CUDA, with the reason in their record. The check
needs only torch, open_clip (+ its ftfy/regex/wcwidth) and ldvc (and ruamel.yaml, which reads
params.yaml and the presets); the modules it imports are listed in the environment record, and
mlflow / dvc / pycocotools showing up there fails the run (the GPU machine lacks them).
--tiny: params.yaml's small CLIP at 64 px, batch 2, two loader worker counts, few iterations.
Our choices: random CLIP weights (speed does not depend on them; no hub is reachable); one GPU
takes the whole global batch of 16 in one step (ZegCLIP used 4 GPUs x 4); the projection counts
training steps only (no evaluation, checkpointing or data preparation); a part that fails is
recorded with its error and the others still run (the exit status is then non-zero).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WHEELS = REPO / ".whl"
DEFAULT_OUT = REPO / "reports" / "benchmarks_gpu.md"
FORBIDDEN = ("mlflow", "dvc", "pycocotools")  # absent on the GPU machine: importing them would fail there
WHEEL_PACKAGES = ("open_clip_torch", "ftfy", "wcwidth", "regex", "ruamel.yaml")
LOADER_TARGET = 1.5  # loader images/s >= 1.5 x what the GPU consumes
PROTOCOLS = {"voc": (20000, 16), "coco_stuff": (80000, 16)}  # (inductive iterations, global batch)
ZEGCLIP_FPS = {"voc": 9.0, "coco_stuff": 6.7}  # paper numbers, one 1080 Ti


# --------------------------------------------------------------------------------------------
# 1. Environment
# --------------------------------------------------------------------------------------------


def ensure_importable(modules: tuple[str, ...] = ("open_clip", "ruamel.yaml"), wheels: Path = WHEELS,
                      packages: tuple[str, ...] = WHEEL_PACKAGES) -> str:
    """Import `modules`; if one is missing, install the carried wheels into .whl/site-<python> first
    (pip --no-index --no-deps; if pip itself fails, the matching wheels are unzipped there).

    Returns where they came from: "installed" or the target directory.
    """
    def missing() -> list[str]:
        out = []
        for m in modules:
            try:
                importlib.import_module(m)
            except ImportError:
                out.append(m)
        return out

    if not missing():
        return "installed"
    found = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    if not found:
        raise RuntimeError(f"{missing()} not importable and {wheels} holds no wheels: run benchmarks/gpu_wheels.sh on "
                           f"a machine with a package index first (the working tree carries .whl/)")
    target = wheels / f"site-py{sys.version_info.major}{sys.version_info.minor}"
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet", "--upgrade",
           "--find-links", str(wheels), "--target", str(target), *packages]
    print(f"[gpu] {missing()} missing: {' '.join(cmd)}", file=sys.stderr, flush=True)
    if subprocess.run(cmd).returncode != 0:
        print("[gpu] pip failed; unzipping the matching wheels instead", file=sys.stderr, flush=True)
        _unzip_wheels(found, target, packages)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    still = missing()
    if still:
        raise RuntimeError(f"{still} still not importable after installing {wheels} into {target}")
    return str(target.relative_to(REPO)) if target.is_relative_to(REPO) else str(target)


def _unzip_wheels(found: list[Path], target: Path, packages: tuple[str, ...]) -> None:
    """Extract, per package, the newest wheel whose tags fit this interpreter (pure, abi3 or cpXY)."""
    import zipfile

    py = f"cp{sys.version_info.major}{sys.version_info.minor}"
    arch = platform.machine()
    for pkg in packages:
        stem = pkg.replace("-", "_").replace(".", "_").lower()
        fits = []
        for whl in found:
            name = whl.name.lower()
            if not name.startswith(stem + "-"):
                continue
            tags = name[:-4].split("-")[-3:]  # python tag, abi tag, platform tag
            pure = tags[2] == "any"
            if pure or ((tags[0] == py or tags[1] == "abi3") and arch in tags[2]):
                fits.append(whl)
        if not fits:
            raise RuntimeError(f"no wheel of {pkg} in {found[0].parent} fits {py} on {arch}")
        def version(p: Path) -> tuple:
            return tuple(int(x) if x.isdigit() else 0 for x in p.name.split("-")[1].split("."))

        with zipfile.ZipFile(max(fits, key=version)) as z:
            z.extractall(target)


def environment(device: Any, open_clip_source: str) -> dict[str, Any]:
    import torch

    rec: dict[str, Any] = {
        "benchmark": "gpu_environment",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "gpu_memory_gib": (torch.cuda.get_device_properties(device).total_memory / 2**30
                           if device.type == "cuda" else None),
        "cpu_count": os.cpu_count(),
        "open_clip": open_clip_source,
    }
    return rec


def imported_top_modules() -> list[str]:
    return sorted({m.split(".")[0] for m in sys.modules if not m.startswith("_")})


# --------------------------------------------------------------------------------------------
# The parts
# --------------------------------------------------------------------------------------------


def part_train_steps(args: argparse.Namespace, device: Any) -> list[dict[str, Any]]:
    from benchmarks import train_step

    targs = train_step.parse_args(["--json", "--no-progress", "--repeats", str(args.repeats), "--warmup", "1",
                                   "--time-cap", "60", "--threads", str(args.threads)]
                                  + (["--batch", "2", "--matmul-size", "256"] if args.tiny else []))
    size = "default" if args.tiny else "paper"
    try:
        rec = train_step.bench_size(size, targs, device)
    except Exception as err:
        if device.type != "cuda" or os.environ.get("LDVC_ROUTE_ATTENTION"):
            raise
        # The LCTD runs FlexAttention on CUDA; if that fails, still measure both models with the
        # block kernel, and report the failure (the run then exits non-zero).
        os.environ["LDVC_ROUTE_ATTENTION"] = "blocks"
        try:
            rec = train_step.bench_size(size, targs, device)
        finally:
            del os.environ["LDVC_ROUTE_ATTENTION"]
        rec["route_backend"] = "blocks (flex failed)"
        return [rec, {"benchmark": "gpu_part", "part": "steps-flex",
                      "error": f"LDVC step with FlexAttention: {type(err).__name__}: {err}"[:2000]}]
    rec["route_backend"] = "auto (flex on CUDA)" if device.type == "cuda" else "blocks"
    return [rec]


def part_slide_fps(args: argparse.Namespace, device: Any) -> list[dict[str, Any]]:
    import torch

    from benchmarks.common import time_side_by_side
    from benchmarks.setups import build_model, default_config, paper_config, split_ids
    from ldvc.eval.inference import window_starts

    records = []
    for dec in ("lctd", "zegclip"):
        cfg = default_config(dec) if args.tiny else paper_config(dec)
        names, _ = split_ids(cfg)
        model = build_model(cfg, names, device).eval()
        S, e = cfg.data.image_size, cfg.eval
        h, w = S, round(S * 4 / 3)  # VOC's 375x500 after the keep-ratio resize to short side S
        image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))
        windows = len(window_starts(h, e.window, e.stride)) * len(window_starts(w, e.window, e.stride))
        n = 2 if args.tiny else 8

        fns: dict[str, Callable[[], None]] = {"fp32": _slide_fn(model, image, e, n, False)}
        if device.type == "cuda":
            fns["bf16"] = _slide_fn(model, image, e, n, True)
        t = time_side_by_side(fns, device, warmup=1, repeats=args.repeats)
        records.append({
            "benchmark": "gpu_slide_fps", "decoder": dec, "clip": cfg.clip.model, "image_hw": [h, w],
            "window": e.window, "stride": e.stride, "windows_per_image": windows, "classes": len(names),
            "fps_fp32": n / (t["fp32"].median_ms / 1e3),
            "fps_bf16": n / (t["bf16"].median_ms / 1e3) if "bf16" in t else None,
            "zegclip_paper_fps": ZEGCLIP_FPS.get(cfg.data.dataset), "device": str(device),
            "dataset": cfg.data.dataset, "gpu": _device_name(device),
        })
        del model
    return records


def _device_name(device: Any) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)


def _slide_fn(model: Any, image: Any, e: Any, n: int, amp: bool) -> Callable[[], None]:
    """n sliding-window inferences of `image` (eval config e), bf16 autocast when amp."""
    import torch

    from ldvc.eval.inference import slide_inference

    device = next(model.parameters()).device

    def run() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            for _ in range(n):
                slide_inference(model, image, tuple(image.shape[-2:]), e.window, e.stride, max_batch=e.batch_size)

    return run


def _attention_step(q: Any, k: Any, v: Any, g: Any, grid: int, regions: int, topk: int,
                    backend: str) -> Callable[[], tuple]:
    """Forward + backward of one attention call ('dense': SDPA), returning (out, dq, dk, dv)."""
    import torch
    import torch.nn.functional as F

    from ldvc.model.route_attention import route_attention

    def step() -> tuple:
        if backend == "dense":
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = route_attention(q, k, v, (grid, grid), regions, topk, backend=backend)
        return (out, *torch.autograd.grad(out, (q, k, v), g))

    return step


def part_flex(args: argparse.Namespace, device: Any) -> list[dict[str, Any]]:
    import torch
    import torch.nn.functional as F

    from benchmarks.common import peak_memory_mb, time_side_by_side
    from ldvc.model.route_attention import flex_available, route_attention

    if not flex_available():
        return [{"benchmark": "gpu_flex", "skipped": "this torch has no torch.nn.attention.flex_attention"}]
    # The LCTD's self-attention at paper size: B images x 8 heads x 32x32 tokens x 64, 8x8 regions, top 4.
    B, h, grid, d, regions, topk = (1, 2, 8, 8, 4, 4) if args.tiny else (16, 8, 32, 64, 8, 4)
    N = grid * grid
    gen = torch.Generator().manual_seed(0)
    records = []
    dtypes = [torch.float32, torch.bfloat16] if device.type == "cuda" else [torch.float32]
    for dtype in dtypes:
        q, k, v = (torch.randn(B, h, N, d, generator=gen).to(device, dtype).requires_grad_() for _ in range(3))
        g = torch.randn(B, h, N, d, generator=gen).to(device, dtype)
        rec: dict[str, Any] = {"benchmark": "gpu_flex", "dtype": str(dtype).removeprefix("torch."), "batch": B,
                               "heads": h, "grid": grid, "head_dim": d, "regions": regions, "topk": topk,
                               "device": str(device)}
        if device.type != "cuda":
            with torch.no_grad():  # CPU: forward only (FlexAttention has no backward there)
                ref = route_attention(q, k, v, (grid, grid), regions, topk, backend="blocks")
                flex = route_attention(q, k, v, (grid, grid), regions, topk, backend="flex")
                dense = F.scaled_dot_product_attention(q, k, v)
            rec.update({"max_abs_diff_out": float((flex - ref).abs().max()),
                        "flex_differs_from_dense": bool((flex - dense).abs().max() > 1e-3),
                        "skipped": "backward, timing and the fused-path memory need CUDA"})
            records.append(rec)
            continue

        steps = {b: _attention_step(q, k, v, g, grid, regions, topk, b) for b in ("blocks", "flex", "dense")}
        ref, flex, dense = steps["blocks"](), steps["flex"](), steps["dense"]()  # flex: compiles fwd + bwd
        diffs = [float((a.float() - b.float()).abs().max()) for a, b in zip(flex, ref)]
        # relative to each reference tensor's size (out, dq, dk, dv differ in scale)
        rel = [dv / max(1.0, float(b.float().abs().max())) for dv, b in zip(diffs, ref)]
        t = time_side_by_side(steps, device, warmup=1, repeats=args.repeats)
        rec.update({
            "max_abs_diff_out": diffs[0], "max_abs_diff_grads": max(diffs[1:]), "max_rel_diff": max(rel),
            "flex_differs_from_dense": bool((flex[0].float() - dense[0].float()).abs().max() > 1e-2),
            "ms_blocks": t["blocks"].median_ms, "ms_flex": t["flex"].median_ms, "ms_dense": t["dense"].median_ms,
            "peak_mb_blocks": peak_memory_mb(steps["blocks"], device),
            "peak_mb_flex": peak_memory_mb(steps["flex"], device),
        })
        tol = 1e-4 if dtype == torch.float32 else 3e-2
        rec["exact"] = bool(max(rel) <= tol and rec["flex_differs_from_dense"])
        records.append(rec)
    if device.type == "cuda":
        # The fused path, not the dense fallback: at 64x64 tokens a dense float32 score matrix over 8 heads
        # is 512 MiB; the fused kernel's forward + backward stays far below it.
        q, k, v = (torch.randn(1, 8, 4096, 64, device=device, requires_grad=True) for _ in range(3))
        route_attention(q, k, v, (64, 64), 8, 4, backend="flex").sum().backward()
        peak = peak_memory_mb(lambda: route_attention(q, k, v, (64, 64), 8, 4, backend="flex").sum().backward(),
                              device)
        dense_mb = 8 * 4096 * 4096 * 4 / 2**20
        records.append({"benchmark": "gpu_flex_fused", "grid": 64, "peak_mb_flex": peak, "dense_scores_mb": dense_mb,
                        "fused": bool(peak < dense_mb / 4), "device": str(device)})
    return records


def part_train_loop(args: argparse.Namespace, device: Any) -> list[dict[str, Any]]:
    from benchmarks.setups import default_config, with_overrides
    from ldvc.data.split import make_split
    from ldvc.data.synthetic import generate_synthetic
    from ldvc.train.loop import train_segmentor

    iters = 4 if args.tiny else 12
    base = default_config("lctd")
    cfg = with_overrides(base, {
        "data": {"synthetic": {"train_images": 16 if args.tiny else 64, "val_images": 4}},
        "train": {"iters": iters, "checkpoint_every": iters, "log_every": 2, "resume": "never",
                  "num_workers": 0 if args.tiny else 4, "batch_size": 4 if args.tiny else base.train.batch_size,
                  "mixed_precision": "bf16" if device.type == "cuda" else "no", "warmup_iters": 1},
        "transductive": {"init_iter": iters},
    })
    with tempfile.TemporaryDirectory(prefix="ldvc-gpu-train-") as tmp:
        root = Path(tmp) / "data"
        generate_synthetic(cfg.data, root)
        split = make_split(list(json.loads((root / "meta.json").read_text())["classes"]), cfg.split.unseen,
                           cfg.data.dataset)
        t0 = time.perf_counter()
        summary = train_segmentor(cfg, "inductive", split, root, None, Path(tmp) / "run")
        seconds = time.perf_counter() - t0
    return [{"benchmark": "gpu_train_loop", "iters": iters, "batch_size": cfg.train.batch_size,
             "mixed_precision": cfg.train.mixed_precision, "seconds_total": seconds,
             "summary": {k: v for k, v in summary.items() if isinstance(v, (int, float, str, type(None)))},
             "loss_finite": summary.get("last_loss") is not None, "device": str(device)}]


def part_loader(args: argparse.Namespace, device: Any) -> list[dict[str, Any]]:
    from benchmarks import loader

    cores = os.cpu_count() or 1
    if args.tiny:
        largv = ["--workers", "0", "1", "--images", "8", "--batch", "2", "--batches", "2", "--image-size", "64"]
    else:
        workers = sorted({0, 4, 8, min(12, cores), cores})
        largv = ["--workers", *map(str, workers), "--images", "96", "--batch", "16", "--batches", "5", "--lean"]
    largs = loader.parse_args(largv)  # without --json: gpu.py prints every record itself
    return loader.run(largs, device, echo=False)


def failed_checks(records: list[dict[str, Any]]) -> list[str]:
    """The correctness checks of the run that did not hold (empty: all held or were skipped)."""
    out = []
    for r in records:
        kind = r.get("benchmark")
        if kind == "gpu_flex" and (r.get("exact") is False or r.get("flex_differs_from_dense") is False):
            out.append(f"FlexAttention {r['dtype']} differs from the block kernel (max rel {r.get('max_rel_diff')}) "
                       f"or equals dense attention")
        if kind == "gpu_flex_fused" and not r["fused"]:
            out.append(f"compiled FlexAttention peaked at {r['peak_mb_flex']:.0f} MiB: the dense fallback, not the "
                       f"fused kernel")
        if kind == "gpu_train_loop" and not r["loss_finite"]:
            out.append("train_segmentor ended without a finite loss")
    return out


def projections(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Wall time of the inductive protocols on this one GPU from the measured images/s."""
    out = []
    for r in steps:
        for dec in ("lctd", "zegclip"):
            ips = r.get(f"images_per_s_{dec}")
            if not ips:
                continue
            for name, (iters, batch) in PROTOCOLS.items():
                out.append({"benchmark": "gpu_projection", "protocol": name, "decoder": dec, "iterations": iters,
                            "global_batch": batch, "images_per_s": ips, "measured_size": r["size"],
                            "hours": iters * batch / ips / 3600, "device": r["device"]})
    return out


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) >= 10 ** -digits or v == 0 else f"{v:.2e}"
    return str(v)


def render(records: list[dict[str, Any]], args: argparse.Namespace) -> str:
    by = lambda kind: [r for r in records if r.get("benchmark") == kind]  # noqa: E731
    env = by("gpu_environment")[0]
    tiny = " --tiny (tiny sizes: NOT paper numbers)" if args.tiny else ""
    lines = ["# GPU check", "",
             f"Generated by `python -m benchmarks.gpu`{tiny}"
             + f" on {env.get('gpu') or env['device']} (torch {env['torch']}, CUDA {env['cuda']}, Python "
             f"{env['python']}, {env['cpu_count']} CPU cores), {env['date']}. Every number was measured in this run "
             "except those marked as the paper's.", ""]
    for r in by("gpu_part"):
        if r.get("skipped") or r.get("error"):
            lines.append(f"- part {r['part']}: " + (f"skipped ({r['skipped']})" if r.get("skipped") else
                                                    f"FAILED ({r['error']})"))
    lines += ["", "## Training step at paper size (LDVC vs ZegCLIP)", ""]
    for r in by("train_step"):
        lines += [f"{r['clip']}, {r['image_size']} px, batch {r['batch']} per device, {r['dtype']}, {r['device']}.", "",
                  "| model | ms/step | images/s | GFLOP/step | TFLOP/s | utilisation | peak MiB |",
                  "|---|---|---|---|---|---|---|"]
        for dec, label in (("lctd", "LDVC"), ("zegclip", "ZegCLIP")):
            util = r.get(f"utilisation_{dec}")
            util_s = (f"{100 * util:.0f}% of {r['reference_tflops']:.0f}" if util is not None else
                      f"{100 * r[f'matmul_fraction_{dec}']:.0f}% of measured matmul")
            lines.append(f"| {label} | {_f(r[f'ms_step_{dec}'])} | {_f(r[f'images_per_s_{dec}'])} | "
                         f"{_f(r[f'gflop_step_{dec}'])} | {_f(r[f'achieved_tflops_{dec}'], 2)} | {util_s} | "
                         f"{_f(r[f'peak_mb_{dec}'], 0)} |")
        lines += ["", f"LDVC / ZegCLIP step time: **{_f(r['step_lctd_over_zegclip'], 2)}x** (FLOPs "
                      f"{_f(r['gflop_lctd_over_zegclip'], 2)}x); measured {r['matmul_dtype']} matmul "
                      f"{_f(r['matmul_tflops'], 1)} TFLOP/s.", ""]
    lines += ["## Sliding-window inference", ""]
    for r in by("gpu_slide_fps"):
        lines.append(f"- {r['decoder']}: {_f(r['fps_fp32'])} FPS float32, {_f(r['fps_bf16'])} FPS bf16 "
                     f"({r['image_hw'][0]}x{r['image_hw'][1]}, {r['windows_per_image']} windows, {r['classes']} "
                     f"classes); ZegCLIP's paper: {_f(r['zegclip_paper_fps'])} FPS on a 1080 Ti (paper number)")
    lines += ["", "## FlexAttention vs the reference kernel", ""]
    for r in by("gpu_flex") + by("gpu_flex_fused"):
        lines.append("- " + ", ".join(f"{k} {_f(v, 3) if isinstance(v, float) else _f(v)}" for k, v in r.items()
                                      if k != "benchmark"))
    lines += ["", "## The training function (ldvc.train.loop.train_segmentor)", ""]
    for r in by("gpu_train_loop"):
        lines.append(f"- {r['iters']} iterations, batch {r['batch_size']}, {r['mixed_precision']}: "
                     f"{_f(r['seconds_total'])} s in all, loss finite: {_f(r['loss_finite'])}, summary {r['summary']}")
    lines += ["", "## Data loader beside the GPU", ""]
    steps = by("train_step")
    need = max((max(r["images_per_s_lctd"], r["images_per_s_zegclip"]) for r in steps), default=None)
    lines += ["| workers | pinned | persistent | images/s | first batch s |", "|---|---|---|---|---|"]
    for r in by("loader"):
        lines.append(f"| {r['workers']} | {_f(r['pin_memory'])} | {_f(r['persistent_workers'])} | "
                     f"{_f(r['images_per_s'])} | {_f(r['first_batch_s'], 2)} |")
    for r in by("gpu_loader_recommendation"):
        lines += ["", f"GPU consumes up to {_f(need)} images/s; target loader >= {LOADER_TARGET} x that = "
                      f"{_f(r['needed_images_per_s'])} images/s: {r['verdict']}"]
    failed = failed_checks(records)
    lines += ["", "## Checks", "", "All correctness checks held (or were skipped, as recorded)." if not failed else
              "FAILED: " + "; ".join(failed)]
    lines += ["", "## Projected wall time on this GPU (inductive protocols)", "",
              "| protocol | model | iterations x batch | images/s | hours |", "|---|---|---|---|---|"]
    for r in by("gpu_projection"):
        lines.append(f"| {r['protocol']} | {r['decoder']} | {r['iterations']} x {r['global_batch']} | "
                     f"{_f(r['images_per_s'])} | {_f(r['hours'], 2)} |")
    env_mods = env.get("forbidden_imported") or []
    lines += ["", "## Imports", "", f"mlflow / dvc / pycocotools imported: {env_mods or 'none'}; open_clip: "
              f"{env['open_clip']}; ruamel imported: {'ruamel' in env.get('modules', [])}.", "",
              "<details><summary>JSON records</summary>", "", "```json"]
    lines += [json.dumps(r) for r in records if r.get("benchmark") != "gpu_environment"] + ["```", "", "</details>", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="one JSON line per record on stdout")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU test of this script's logic)")
    p.add_argument("--out", type=Path, help=f"report path (default {DEFAULT_OUT.relative_to(REPO)}; --tiny: none)")
    p.add_argument("--budget", type=float, default=270.0, help="seconds: no part starts after this (default 270)")
    p.add_argument("--repeats", type=int, help="timed rounds per measurement (default 5, tiny 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (default 1)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--parts", nargs="+", choices=["steps", "slide", "flex", "train", "loader"],
                   default=["steps", "slide", "flex", "train", "loader"], help="parts to run (default all)")
    args = p.parse_args(argv)
    args.repeats = args.repeats if args.repeats is not None else (1 if args.tiny else 5)
    if args.repeats < 1:  # not common.require_positive: common imports torch, which this module defers
        p.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    source = ensure_importable()
    import torch

    from benchmarks.common import resolve_device, setup_threads
    from benchmarks.loader import recommend

    device = resolve_device(args.device)
    setup_threads(args.threads if device.type == "cpu" else None)
    records: list[dict[str, Any]] = []

    def emit(recs: list[dict[str, Any]]) -> None:
        for r in recs:
            records.append(r)
            if args.json:
                print(json.dumps(r), flush=True)

    # Most important first: a part that would start past --budget is skipped (and says so).
    parts: list[tuple[str, Callable[..., list[dict[str, Any]]]]] = [
        ("steps", part_train_steps), ("flex", part_flex), ("train", part_train_loop), ("loader", part_loader),
        ("slide", part_slide_fps)]
    for name, fn in parts:
        if name not in args.parts:
            continue
        elapsed = time.perf_counter() - start
        if elapsed > args.budget:
            emit([{"benchmark": "gpu_part", "part": name, "skipped": f"time budget {args.budget:.0f} s spent"}])
            continue
        print(f"[gpu] {name} (t = {elapsed:.0f} s)", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON records
                out = fn(args, device)
        except Exception as err:  # one failing part must not hide the others' results
            out = [{"benchmark": "gpu_part", "part": name, "error": f"{type(err).__name__}: {err}"[:2000]}]
        emit(out + [{"benchmark": "gpu_part", "part": name, "seconds": time.perf_counter() - t0}])
        if device.type == "cuda":
            torch.cuda.empty_cache()
    steps = [r for r in records if r.get("benchmark") == "train_step"]
    emit(projections(steps))
    loads = [r for r in records if r.get("benchmark") == "loader"]
    if steps and loads:
        need = LOADER_TARGET * max(max(r["images_per_s_lctd"], r["images_per_s_zegclip"]) for r in steps)
        best = recommend(loads, need)
        verdict = ("none of the measured settings is fast enough" if best is None else
                   f"num_workers {best['workers']}, pin_memory {best['pin_memory']}, persistent_workers "
                   f"{best['persistent_workers']} ({best['images_per_s']:.1f} images/s)")
        emit([{"benchmark": "gpu_loader_recommendation", "needed_images_per_s": need,
               "workers": best and best["workers"], "pin_memory": best and best["pin_memory"],
               "persistent_workers": best and best["persistent_workers"], "verdict": verdict}])
    env = environment(device, source)
    modules = imported_top_modules()
    env.update({"modules": modules, "forbidden_imported": [m for m in FORBIDDEN if m in modules],
                "seconds": time.perf_counter() - start,
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    emit([env])
    records.insert(0, records.pop())  # the environment first in the report
    out = args.out or (None if args.tiny else DEFAULT_OUT)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(records, args))
        print(f"[gpu] wrote {out} in {env['seconds']:.0f} s", file=sys.stderr, flush=True)
    if env["forbidden_imported"]:
        print(f"[gpu] imported {env['forbidden_imported']}: the GPU machine lacks them", file=sys.stderr)
        raise SystemExit(3)
    failed = failed_checks(records)
    if failed:
        print("[gpu] checks failed: " + "; ".join(failed), file=sys.stderr)
        raise SystemExit(4)
    errors = [r for r in records if r.get("error")]
    if errors:
        raise SystemExit(f"[gpu] {len(errors)} part(s) failed: " + "; ".join(f"{r['part']}: {r['error'][:200]}"
                                                                           for r in errors))
    return records


if __name__ == "__main__":
    main()
