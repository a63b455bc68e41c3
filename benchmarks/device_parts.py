"""The measurements of the device check (benchmarks/device_check.py), one function per part. Each runs
in its own process under a time budget, returns its JSON records, and uses the project's own code
paths: the training loop's step (ldvc.train.loop.TrainStep), the evaluation's inference
(ldvc.eval.inference.infer_labels), the route attention kernels, the training loader, and
`train_segmentor` itself.

Sizes: "paper" = ViT-B/16 at 512 px, the presets' per-device batch on one GPU (16), LDVC and each
preset's ZegCLIP baseline (ldvc/baseline.py); "tiny" = params.yaml's small CLIP at 64 px, batch 2:
the same code at a size any CPU runs in seconds (the CPU rehearsal test). Random CLIP weights
(speed does not depend on them; no model hub is reachable there), so the bf16 / TF32 argmax
agreements measured here are those of an untrained model, whose class scores lie closer together
than a trained one's: a lower bound.
"""

from __future__ import annotations

import os
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from benchmarks.common import peak_memory_mb, time_side_by_side
from benchmarks.devices import device_peak

PAPER_PRESETS = ("voc", "coco_stuff", "context59")
METHODS = ("lctd", "zegclip")
HOST_READS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy"}
Records = list[dict[str, Any]]
# Where a part's records go as they are made: (output directory, part name), set by the part's process
# (benchmarks/device_check.py run_part). A part stopped at its budget keeps what it measured.
SINK: tuple[Any, str] | None = None


class _Flushing(list):
    """A list of records that appends each one to the device check's JSON lines as it is added."""

    def append(self, record: dict[str, Any]) -> None:  # type: ignore[override]
        super().append(record)
        if SINK is not None:
            from benchmarks.device_check import append_records

            out, part = SINK
            append_records(out, [{**record, "part": part}])


def new_records() -> Records:
    return _Flushing()


class Budget:
    """Seconds left to a part; sub-measurements that would not fit are skipped, saying so."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()

    def allows(self, needed: float) -> bool:
        return self.left() >= needed


class HostReads(TorchFunctionMode):
    """Counts Python-level reads of tensor values (on a GPU each one waits for the queued kernels),
    except AdamW's reads of its step counters, which live on the host also on a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in HOST_READS:
            if not any("/torch/optim/" in f.filename for f in traceback.extract_stack(limit=12)):
                self.count += 1
        return func(*args, **(kwargs or {}))


def host_syncs_per_step(step: Callable[[], Any], device: torch.device, n: int = 2) -> tuple[float, str]:
    """(synchronisations per step, how counted): CUDA's sync debug mode on a GPU, HostReads elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                for _ in range(n):
                    step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = sum("synchroniz" in str(w.message).lower() for w in caught)
        return syncs / n, "torch.cuda.set_sync_debug_mode"
    reads = HostReads()
    with reads:
        for _ in range(n):
            step()
    return reads.count / n, "host reads of tensor values (TorchFunctionMode)"


def _dtype_name(dtype: torch.dtype | None) -> str:
    return str(dtype or torch.float32).removeprefix("torch.")


def _presets(size: str) -> tuple[str, ...]:
    return PAPER_PRESETS if size == "paper" else ("synthetic",)


def _config(size: str, preset: str, method: str) -> Any:
    from benchmarks.setups import default_config, paper_config

    return paper_config(method, preset) if size == "paper" else default_config(method)


def _batch(size: str, cfg: Any, device: torch.device) -> int:
    from ldvc.train.layout import resolve_layout

    if size != "paper":
        return 2
    return resolve_layout(cfg.train.batch_size, cfg.train.per_device_batch, 1).per_device


def _precisions(size: str, preset: str, cfg: Any, device: torch.device) -> list[str]:
    """The preset's precision, and bf16 beside it for VOC on a GPU (what bf16 would buy)."""
    out = [cfg.train.mixed_precision if device.type == "cuda" else "no"]
    if device.type == "cuda" and preset in ("voc", "synthetic") and "bf16" not in out:
        out.append("bf16")
    return out


def _matmul_tflops(device: torch.device, dtype: torch.dtype, n: int) -> float:
    from benchmarks.setups import matmul_fn

    mm = matmul_fn(n, device, dtype)
    t = time_side_by_side({"mm": mm}, device, warmup=2, repeats=5)
    return 2 * n**3 / (t["mm"].median_ms / 1e3) / 1e12


def _prepare_flex_guard() -> None:
    """No silent slow path in the check: a recompile-limit hit raises instead of falling back."""
    from ldvc.model.route_attention import set_flex_fallback

    set_flex_fallback("error")
    cfg = torch._dynamo.config
    for name in ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit"):
        if hasattr(cfg, name):
            setattr(cfg, name, True)
            break


# --------------------------------------------------------------------------------------------
# steps: the real training step, eager, every preset, LDVC and the ZegCLIP baseline
# --------------------------------------------------------------------------------------------


def part_steps(size: str, device: torch.device, budget: Budget) -> Records:
    from benchmarks.setups import build_model, make_step_accelerator, make_train_step, split_ids
    from ldvc.model.flops import segmentor_flops
    from ldvc.model.route_attention import flex_stats

    _prepare_flex_guard()
    records = new_records()
    repeats = 5 if size == "paper" else 2
    for preset in _presets(size):
        base = _config(size, preset, "lctd")
        for precision in _precisions(size, preset, base, device):
            if not budget.allows(25 if size == "paper" else 3):
                records.append({"benchmark": "train_step", "preset": preset, "precision": precision,
                                "skipped": f"part budget: {budget.left():.0f} s left"})
                continue
            cfgs = {m: _config(size, preset, m) for m in METHODS}
            names, seen = split_ids(cfgs["lctd"])
            batch = _batch(size, cfgs["lctd"], device)
            accelerator = make_step_accelerator(cfgs["lctd"], batch, precision)
            amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision)
            fns, flops, models = {}, {}, {}
            for m in METHODS:
                models[m] = build_model(cfgs[m], names, device)
                ids = torch.tensor(seen, device=device)
                parts = segmentor_flops(models[m], cfgs[m].data.image_size, batch=batch, class_ids=ids, backward=True)
                text = models[m].text_encoder
                before = parts["text_encoder"]
                if text.shares_prefix:  # the same count with the prefix computed per class (the old way)
                    text.shares_prefix = False
                    before = segmentor_flops(models[m], cfgs[m].data.image_size, batch=batch, class_ids=ids,
                                             backward=True)["text_encoder"]
                    text.shares_prefix = True
                flops[m] = {**{k: v / 1e9 for k, v in parts.items()}, "text_encoder_unshared": before / 1e9}
                fns[m] = make_train_step(models[m], cfgs[m], names, seen, device, batch, accelerator)
            peaks, syncs = {}, {}
            for m in METHODS:
                fns[m]()  # warm-up: AdamW's state, the compiled FlexAttention (CUDA)
                peaks[m] = peak_memory_mb(fns[m], device)
                syncs[m], how = host_syncs_per_step(fns[m], device)
            timing = time_side_by_side(fns, device, warmup=1, repeats=repeats,
                                       time_cap_s=max(5.0, budget.left() / 4))
            mm_dtype = amp or torch.float32
            mm = _matmul_tflops(device, mm_dtype, 8192 if device.type == "cuda" else 512)
            peak = device_peak(device, mm_dtype)
            for m in METHODS:
                ms = timing[m].median_ms
                f = flops[m]
                achieved = f["total"] / ms  # GFLOP / ms = TFLOP/s
                unshared_total = f["total"] - f["text_encoder"] + f["text_encoder_unshared"]
                records.append({
                    "benchmark": "train_step", "size": size, "preset": preset, "method": m,
                    "decoder": cfgs[m].decoder.type, "text_prompts": cfgs[m].prompt.text_depth != 0,
                    "precision": _dtype_name(amp), "batch": batch, "image_size": cfgs[m].data.image_size,
                    "seen_classes": len(seen), "templates": len(cfgs[m].prompt.templates),
                    "ms_step": ms, "images_per_s": batch / (ms / 1e3), "rounds": timing[m].rounds,
                    "gflop_step": f["total"], "gflop_image_encoder": f["image_encoder"],
                    "gflop_text_encoder": f["text_encoder"], "gflop_decoder": f["decoder"],
                    "gflop_text_encoder_unshared_prefix": f["text_encoder_unshared"],
                    "text_share": f["text_encoder"] / f["total"],
                    "text_share_unshared_prefix": f["text_encoder_unshared"] / unshared_total,
                    "achieved_tflops": achieved, "matmul_tflops": mm, "matmul_fraction": achieved / mm,
                    "peak_device": peak.name if peak else None, "peak_tflops": peak.tflops if peak else None,
                    "peak_dtype": peak.dtype if peak else None,
                    "utilisation": achieved / peak.tflops if peak else None,
                    "peak_mb": peaks[m], "host_syncs_per_step": syncs[m], "syncs_counted_by": how,
                    "flex": {k: v for k, v in flex_stats().items() if k != "signatures"}, "device": str(device),
                })
            del fns, models
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return records


# --------------------------------------------------------------------------------------------
# compiled: the same step through torch.compile, graphs / breaks / recompiles counted
# --------------------------------------------------------------------------------------------


def part_compiled(size: str, device: torch.device, budget: Budget) -> Records:
    from benchmarks.setups import build_model, make_step_accelerator, make_train_step, split_ids
    from ldvc.model.route_attention import flex_stats
    from ldvc.train.compile_watch import CompileWatch

    _prepare_flex_guard()
    # Inductor on a GPU (what train.compile runs); a CPU check traces and differentiates the same
    # graphs without generating C++ (aot_eager): graph counts and breaks are the same.
    backend = "inductor" if device.type == "cuda" else "aot_eager"
    preset = _presets(size)[0]
    records = new_records()
    for m in METHODS:
        if not budget.allows(60 if size == "paper" else 5):
            records.append({"benchmark": "compiled_step", "method": m,
                            "skipped": f"part budget: {budget.left():.0f} s"})
            continue
        cfg = _config(size, preset, m)
        names, seen = split_ids(cfg)
        batch = _batch(size, cfg, device)
        accelerator = make_step_accelerator(cfg, batch)
        watch = CompileWatch()
        step = make_train_step(build_model(cfg, names, device), cfg, names, seen, device, batch, accelerator,
                               compile_backend=backend, watch=watch)
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        first = time.perf_counter() - t0
        step()  # a second call: no recompile expected
        timing = time_side_by_side({m: step}, device, warmup=1, repeats=5 if size == "paper" else 2,
                                   time_cap_s=max(5.0, budget.left() / 3))
        report = watch.report()
        watch.close()
        ms = timing[m].median_ms
        records.append({"benchmark": "compiled_step", "size": size, "preset": preset, "method": m, "backend": backend,
                        "precision": accelerator.mixed_precision, "batch": batch, "first_step_s": first,
                        "ms_step": ms, "images_per_s": batch / (ms / 1e3), **report,
                        "flex": {k: v for k, v in flex_stats().items() if k != "signatures"},
                        "device": str(device)})
        torch._dynamo.reset()
    return records


# --------------------------------------------------------------------------------------------
# flex: FlexAttention against the reference block kernel
# --------------------------------------------------------------------------------------------


def _attention_step(q, k, v, g, grid: int, regions: int, topk: int, backend: str) -> Callable[[], tuple]:
    import torch.nn.functional as F

    from ldvc.model.route_attention import route_attention

    def step() -> tuple:
        if backend == "dense":
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = route_attention(q, k, v, (grid, grid), regions, topk, backend=backend)
        return (out, *torch.autograd.grad(out, (q, k, v), g))

    return step


def part_flex(size: str, device: torch.device, budget: Budget) -> Records:
    import torch.nn.functional as F

    from ldvc.model.route_attention import flex_available, flex_stats, route_attention

    _prepare_flex_guard()
    if not flex_available():
        return [{"benchmark": "gpu_flex", "skipped": "this torch has no torch.nn.attention.flex_attention"}]
    # The LCTD's self-attention at paper size: 16 images x 8 heads x 32x32 tokens x 64, 8x8 regions, top 4.
    B, h, grid, d, regions, topk = (16, 8, 32, 64, 8, 4) if size == "paper" else (1, 2, 8, 8, 4, 4)
    N = grid * grid
    gen = torch.Generator().manual_seed(0)
    records = new_records()
    for dtype in ([torch.float32, torch.bfloat16] if device.type == "cuda" else [torch.float32]):
        q, k, v = (torch.randn(B, h, N, d, generator=gen).to(device, dtype).requires_grad_() for _ in range(3))
        g = torch.randn(B, h, N, d, generator=gen).to(device, dtype)
        rec: dict[str, Any] = {"benchmark": "gpu_flex", "dtype": _dtype_name(dtype), "batch": B, "heads": h,
                               "grid": grid, "head_dim": d, "regions": regions, "topk": topk, "device": str(device)}
        if device.type != "cuda":
            with torch.no_grad():  # CPU: forward only (FlexAttention has no backward there)
                ref = route_attention(q, k, v, (grid, grid), regions, topk, backend="blocks")
                flex = route_attention(q, k, v, (grid, grid), regions, topk, backend="flex")
                dense = F.scaled_dot_product_attention(q, k, v)
            rec.update({"max_abs_diff_out": float((flex - ref).abs().max()),
                        "flex_differs_from_dense": bool((flex - dense).abs().max() > 1e-3),
                        "exact": bool((flex - ref).abs().max() < 1e-5),
                        "skipped": "backward, timing and the fused-path memory need CUDA"})
            records.append(rec)
            continue
        steps = {b: _attention_step(q, k, v, g, grid, regions, topk, b) for b in ("blocks", "flex", "dense")}
        ref, flex, dense = steps["blocks"](), steps["flex"](), steps["dense"]()  # flex: compiles fwd + bwd
        diffs = [float((a.float() - b.float()).abs().max()) for a, b in zip(flex, ref)]
        rel = [dv / max(1.0, float(b.float().abs().max())) for dv, b in zip(diffs, ref)]
        t = time_side_by_side(steps, device, warmup=1, repeats=5)
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
    if device.type == "cuda" and budget.allows(10):
        # The fused path, not the unfused fallback: at 64x64 tokens a dense float32 score matrix over 8
        # heads is 512 MiB; the fused kernel's forward + backward stays far below it.
        q, k, v = (torch.randn(1, 8, 4096, 64, device=device, requires_grad=True) for _ in range(3))
        route_attention(q, k, v, (64, 64), 8, 4, backend="flex").sum().backward()
        peak = peak_memory_mb(lambda: route_attention(q, k, v, (64, 64), 8, 4, backend="flex").sum().backward(),
                              device)
        dense_mb = 8 * 4096 * 4096 * 4 / 2**20
        records.append({"benchmark": "gpu_flex_fused", "grid": 64, "peak_mb_flex": peak, "dense_scores_mb": dense_mb,
                        "fused": bool(peak < dense_mb / 4), "device": str(device)})
    records.append({"benchmark": "flex_guard", **flex_stats()})
    return records


# --------------------------------------------------------------------------------------------
# eval: sliding-window evaluation images/s, bf16 / TF32 agreement, 847 classes
# --------------------------------------------------------------------------------------------


def _eval_images(size: str, n: int) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
    """n VOC-shaped images (375 x 500 photos) resized as the evaluation does (short side 512)."""
    from ldvc.data.augment import eval_size

    S = 512 if size == "paper" else 64
    h0, w0 = (375, 500) if size == "paper" else (48, 64)
    h, w = eval_size(h0, w0, S)
    gen = torch.Generator().manual_seed(0)
    return [torch.rand(3, h, w, generator=gen) for _ in range(n)], [(h0, w0)] * n


def _eval_cfg(size: str, cfg: Any) -> Any:
    """The preset's evaluation (slide 512 / 426, 8 windows per forward); tiny: slide 64 / 53, 4 windows."""
    import dataclasses

    return cfg.eval if size == "paper" else dataclasses.replace(cfg.eval, mode="slide", window=64, stride=53,
                                                                batch_size=4)


def _eval_fn(model: Any, images: list[torch.Tensor], sizes: list[tuple[int, int]], e: Any, S: int, seen: list[int],
             amp: bool, tf32: bool, out: dict, key: str) -> Callable[[], None]:
    """The evaluation of `images` as ldvc.eval.evaluate runs it (loader batches of eval.batch_size)."""
    from ldvc.eval.inference import infer_labels

    def fn() -> None:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        labels: list[torch.Tensor] = []
        for i in range(0, len(images), e.batch_size):
            labels += infer_labels(model, images[i:i + e.batch_size], sizes[i:i + e.batch_size], e, S, seen=seen,
                                   seen_bias=e.seen_bias, inductive=True, class_chunk=e.class_chunk, amp=amp)
        out[key] = labels

    return fn


def _agreement(got: dict[str, list[torch.Tensor]], a: str, b: str) -> float | None:
    """Share of pixels whose label is the same in runs a and b (None when one did not run)."""
    if a not in got or b not in got:
        return None
    same = sum(int((x == y).sum()) for x, y in zip(got[a], got[b]))
    return same / sum(x.numel() for x in got[a])


def part_eval(size: str, device: torch.device, budget: Budget) -> Records:
    from benchmarks.setups import build_model, split_ids

    _prepare_flex_guard()
    records = new_records()
    preset = _presets(size)[0]
    n = 16 if size == "paper" else 4
    images, sizes = _eval_images(size, n)
    tf32_before = torch.backends.cuda.matmul.allow_tf32
    for m in METHODS:
        if not budget.allows(15 if size == "paper" else 2):
            records.append({"benchmark": "gpu_slide_fps", "method": m,
                            "skipped": f"part budget: {budget.left():.0f} s"})
            continue
        cfg = _config(size, preset, m)
        e = _eval_cfg(size, cfg)
        names, seen = split_ids(cfg)
        model = build_model(cfg, names, device).eval()
        S = cfg.data.image_size

        got: dict[str, list[torch.Tensor]] = {}
        fns = {"fp32_tf32": _eval_fn(model, images, sizes, e, S, seen, False, device.type == "cuda", got, "fp32_tf32")}
        if device.type == "cuda":
            fns["bf16"] = _eval_fn(model, images, sizes, e, S, seen, True, True, got, "bf16")
            fns["fp32"] = _eval_fn(model, images, sizes, e, S, seen, False, False, got, "fp32")
        t = time_side_by_side(fns, device, warmup=1, repeats=3 if size == "paper" else 1,
                              time_cap_s=max(5.0, budget.left() / 4))
        torch.backends.cuda.matmul.allow_tf32 = tf32_before

        from ldvc.eval.inference import window_starts

        h, w = images[0].shape[-2:]
        windows = len(window_starts(h, e.window, e.stride)) * len(window_starts(w, e.window, e.stride))
        records.append({
            "benchmark": "gpu_slide_fps", "size": size, "preset": preset, "dataset": cfg.data.dataset, "method": m,
            "decoder": cfg.decoder.type, "classes": len(names), "image_hw": [h, w], "window": e.window,
            "stride": e.stride, "windows_per_image": windows, "eval_batch_windows": e.batch_size,
            "fps_fp32": n / (t["fp32"].median_ms / 1e3) if "fp32" in t else None,
            "fps_fp32_tf32": n / (t["fp32_tf32"].median_ms / 1e3),
            "fps_bf16": n / (t["bf16"].median_ms / 1e3) if "bf16" in t else None,
            "argmax_agreement_bf16_vs_fp32": _agreement(got, "bf16", "fp32"),
            "argmax_agreement_tf32_vs_fp32": _agreement(got, "fp32_tf32", "fp32"),
            "zegclip_paper_fps": {"voc": 9.0, "coco_stuff": 6.7}.get(cfg.data.dataset), "device": str(device),
            **({"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else {}),
        })
        del model
    if budget.allows(20 if size == "paper" else 3):
        records.append(_eval_many_classes(size, device, 847))
    else:
        records.append({"benchmark": "eval_many_classes", "skipped": f"part budget: {budget.left():.0f} s left"})
    return records


def _eval_many_classes(size: str, device: torch.device, classes: int) -> dict[str, Any]:
    """Peak memory and time of one image's evaluation with `classes` classes, chunked (eval.class_chunk)
    and all at once: the bounded-memory evaluation of ADE20K-847's vocabulary."""
    from benchmarks.setups import build_model
    from ldvc.config import config_from_dict, deep_merge
    from ldvc.eval.inference import infer_labels

    base = _config(size, "voc", "lctd")
    cfg = config_from_dict(deep_merge(base.to_dict(), {"split": {"unseen": []}}), variant=True)
    names = [f"class {i}" for i in range(classes)]
    model = build_model(cfg, names, device).eval()
    with torch.no_grad():
        model.text_encoder(None)  # the class embeddings, once per vocabulary, outside the measurement
    images, sizes = _eval_images(size, 1)
    e = _eval_cfg(size, cfg)
    out: dict[str, Any] = {"benchmark": "eval_many_classes", "size": size, "classes": classes,
                           "image_hw": list(images[0].shape[-2:]), "label_hw": list(sizes[0]),
                           "class_chunk": cfg.eval.class_chunk, "device": str(device)}
    labels = {}
    for key, chunk in (("chunked", cfg.eval.class_chunk), ("all_classes", None)):
        def fn(chunk=chunk, key=key) -> None:
            labels[key] = infer_labels(model, images, sizes, e, cfg.data.image_size, class_chunk=chunk)[0]
        fn()
        out[f"peak_mb_{key}"] = peak_memory_mb(fn, device)
        out[f"seconds_{key}"] = time_side_by_side({key: fn}, device, warmup=0, repeats=1)[key].median_ms / 1e3
    out["same_labels"] = bool(torch.equal(labels["chunked"], labels["all_classes"]))
    return out


# --------------------------------------------------------------------------------------------
# loader: steady-state images/s per worker count
# --------------------------------------------------------------------------------------------


def part_loader(size: str, device: torch.device, budget: Budget) -> Records:
    from benchmarks import loader

    cores = os.cpu_count() or 1
    if size == "paper":
        workers = sorted({2, 4, 8, min(12, cores - 1), cores - 1} - {0})
        argv = ["--images", "64", "--batch", "16", "--lean", "--workers", *map(str, workers)]
    else:
        workers = [0, 1]
        argv = ["--images", "6", "--batch", "2", "--batches", "3", "--image-size", "64", "--workers", "0", "1"]
    args = loader.parse_args(argv)
    records = new_records()
    import shutil
    import tempfile
    from pathlib import Path

    from ldvc.data.dataset import SegmentationFolder

    tmp = Path(tempfile.mkdtemp(prefix="ldvc-loader-"))
    try:
        folder = SegmentationFolder(loader.write_dataset(tmp / "data", args.images, tuple(args.hw)), "train")
        # On a GPU the training loop's own setting (pinned, persistent workers) per worker count, the
        # setting that matters, before any other: the budget may not cover more.
        settings = ([(w, True, True) for w in workers] if device.type == "cuda" else loader.settings(args, device))
        for w, pin, persistent in settings:
            if not budget.allows(8 if size == "paper" else 1):
                records.append({"benchmark": "loader", "workers": w, "skipped": f"part budget: {budget.left():.0f} s"})
                continue
            records.append(loader.measure(folder, args, w, pin, persistent, device))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return records


# --------------------------------------------------------------------------------------------
# train_loop: the training function itself, a few iterations (its summary records compile facts)
# --------------------------------------------------------------------------------------------


def part_train_loop(size: str, device: torch.device, budget: Budget) -> Records:
    import json
    import tempfile
    from pathlib import Path

    from benchmarks.setups import default_config, with_overrides
    from ldvc.data.split import make_split
    from ldvc.data.synthetic import generate_synthetic
    from ldvc.train.loop import train_segmentor

    _prepare_flex_guard()
    iters = 4 if size == "tiny" else 12
    base = default_config("lctd")
    cfg = with_overrides(base, {
        "data": {"synthetic": {"train_images": 16 if size == "tiny" else 64, "val_images": 4}},
        "train": {"iters": iters, "checkpoint_every": iters, "log_every": 2, "resume": "never",
                  "num_workers": 0 if size == "tiny" else "auto", "batch_size": 4 if size == "tiny" else 16,
                  "mixed_precision": "bf16" if device.type == "cuda" else "no", "warmup_iters": 1},
        "transductive": {"init_iter": iters},
    })
    with tempfile.TemporaryDirectory(prefix="ldvc-device-train-") as tmp:
        root = Path(tmp) / "data"
        generate_synthetic(cfg.data, root)
        split = make_split(list(json.loads((root / "meta.json").read_text())["classes"]), cfg.split.unseen,
                           cfg.data.dataset)
        t0 = time.perf_counter()
        summary = train_segmentor(cfg, "inductive", split, root, None, Path(tmp) / "run")
        seconds = time.perf_counter() - t0
    return [{"benchmark": "gpu_train_loop", "iters": iters, "batch_size": cfg.train.batch_size,
             "mixed_precision": cfg.train.mixed_precision, "seconds_total": seconds,
             "summary": {k: v for k, v in summary.items() if isinstance(v, (int, float, str, dict, type(None)))},
             "loss_finite": summary.get("last_loss") is not None, "device": str(device)}]


PARTS: dict[str, Callable[[str, torch.device, Budget], Records]] = {
    "steps": part_steps, "flex": part_flex, "eval": part_eval, "loader": part_loader,
    "train_loop": part_train_loop, "compiled": part_compiled,
}
