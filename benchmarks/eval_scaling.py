"""Evaluation memory and time against the number of classes: the bounded-memory evaluation of
vocabularies of hundreds of classes (ADE20K-847, PASCAL Context-459), chunked vs all classes at once.

    python -m benchmarks.eval_scaling --json > reports/eval_scaling.jsonl    # paper size, the cost table reads it
    python -m benchmarks.eval_scaling --json --size tiny                    # seconds, any machine

One record per (classes, chunk): the evaluation's own inference (ldvc.eval.inference.infer_labels) of
one VOC-shaped image (a 375x500 photo resized to short side 512: 512x683, two 512 px windows at
stride 426, labels at 375x500) with LDVC at the VOC preset's size (ViT-B/16, random weights) and C
class names, C in 20 (VOC), 171 (COCO-Stuff), 459 (PC-459), 847 (A-847); chunk = eval.class_chunk
(64) or all classes at once. Peak memory: benchmarks/common.py peak_memory_mb of the call (the
extra memory it allocates above the model; on the CPU from the profiler's allocation events, on
CUDA torch's allocator peak). Time: the median of `--repeats` calls. The class embeddings are
computed once per vocabulary before measuring (as the evaluation's cache does). Whether the chunked
labels equal the all-classes labels is recorded (they must: the chunking is exact).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import torch

from benchmarks.common import emit, peak_memory_mb, resolve_device, run_fields, setup_threads, time_side_by_side

CLASSES = (20, 171, 459, 847)


def measure(size: str, classes: int, chunk: int, device: torch.device, repeats: int) -> list[dict[str, Any]]:
    from benchmarks.setups import build_model, default_config, paper_config
    from ldvc.config import config_from_dict, deep_merge
    from ldvc.data.augment import eval_size
    from ldvc.eval.inference import infer_labels

    base = paper_config("lctd", "voc") if size == "paper" else default_config("lctd")
    cfg = config_from_dict(deep_merge(base.to_dict(), {"split": {"unseen": []}}), variant=True)
    e = cfg.eval if size == "paper" else dataclasses.replace(cfg.eval, mode="slide", window=64, stride=53,
                                                             batch_size=4)
    S = cfg.data.image_size
    h0, w0 = (375, 500) if size == "paper" else (48, 64)
    image = torch.rand(3, *eval_size(h0, w0, S), generator=torch.Generator().manual_seed(0))
    model = build_model(cfg, [f"class {i}" for i in range(classes)], device).eval()
    with torch.no_grad():
        model.text_encoder(None)  # embeddings once per vocabulary, outside the measurement
    labels: dict[str, torch.Tensor] = {}
    out = []
    for key, c in (("chunked", chunk), ("all_classes", None)):
        def fn(c: int | None = c, key: str = key) -> None:
            labels[key] = infer_labels(model, [image], [(h0, w0)], e, S, class_chunk=c)[0]

        fn()  # warm-up
        peak = peak_memory_mb(fn, device)
        t = time_side_by_side({key: fn}, device, warmup=0, repeats=repeats)[key]
        out.append({"benchmark": "eval_scaling", "size": size, "classes": classes,
                    "class_chunk": c, "mode": key, "image_hw": list(image.shape[-2:]), "label_hw": [h0, w0],
                    "window": e.window, "stride": e.stride, "peak_mb": peak, "seconds": t.median_ms / 1e3,
                    "images_per_s": 1e3 / t.median_ms, "device": str(device), "clip": cfg.clip.model})
    same = bool(torch.equal(labels["chunked"], labels["all_classes"]))
    for r in out:
        r["same_labels"] = same
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="one JSON object per record on stdout")
    p.add_argument("--size", choices=["paper", "tiny"], default="paper")
    p.add_argument("--classes", type=int, nargs="+", default=list(CLASSES))
    p.add_argument("--chunk", type=int, default=64, help="eval.class_chunk of the chunked runs (default 64)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    if args.chunk < 1 or args.repeats < 1 or min(args.classes) < 1:
        p.error("--chunk, --repeats and --classes must be at least 1")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    setup_threads(args.threads if device.type == "cpu" else None)
    records = []
    for c in args.classes:
        for rec in measure(args.size, c, args.chunk, device, args.repeats):
            rec.update(run_fields(device))
            records.append(rec)
            emit(rec, args.json)
    return records


if __name__ == "__main__":
    main()
