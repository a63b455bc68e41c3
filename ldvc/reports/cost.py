"""The cost table (reports/tables/cost.{md,csv,tex}): learnable parameters, GFLOPs and speed, as
ZegCLIP reports its efficiency, in three groups:

(a) published: ZegCLIP's README (13.8M / 110.4 GFLOPs / 9.0 FPS VOC, 14.6M / 123.9 / 6.7 COCO-Stuff,
    one GTX 1080 Ti), reference.py;
(b) counted at the paper size: ZegCLIP and LDVC built from the VOC and COCO-Stuff presets (ViT-B/16,
    512x512 window, 10 / 100 prompt tokens, all 20 / 171 classes) with RANDOM weights on the meta
    device (shapes only: no weights, no memory, a few seconds), FLOPs counted by
    ldvc/model/flops.py (`segmentor_flops`, attention included) and converted to ZegCLIP's
    convention (`paper_gflops`: fvcore counts one multiply-add as one FLOP); learnable parameters
    both "as ZegCLIP counts" (its checkpoint's trainable tensors, incl. those its forward never
    uses) and "used by the forward" (ldvc/model/param_count.py `zegclip_counts`); FPS from the GPU
    benchmark report reports/benchmarks_gpu.json when it exists, else '-';
(c) this pipeline's runs: learnable parameters as training counted them, GFLOPs per evaluation
    window at the run's own size (the model its checkpoint's config describes, counted the same
    way), the evaluation stage's measured images/s and its device.

Our choices:
- The per-image figure is the image encoder + decoder forward of one window, as ZegCLIP's
  get_flops.py measures it: the text encoder is left out because class embeddings do not depend on
  the image (computed once per vocabulary; the notes give that one-off cost).
- LDVC carries no tensor its forward leaves unused, so its two parameter columns are equal.
- Counting never breaks the report: a failure leaves '-' in the cell and says why in the notes.
  Paper-size counts are cached for the process (they depend only on the code), run counts per
  checkpoint file (path, size, mtime).
- GPU benchmark records: JSON (a list, {"records": [...]} or JSON lines): the device check's
  `gpu_slide_fps` records (benchmarks/gpu.py --json; FPS = its float32 sliding-window figure, as
  ZegCLIP measured) or benchmarks/throughput.py records with model "vitb16" (FPS = `fps` when given,
  else `eval_slide_images_per_s`); VOC preset unless a "preset"/"dataset" field says otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from ldvc.reports.records import EvalRecord
from ldvc.reports.reference import COST_REFERENCE_NOTE, COST_REFERENCES, SETTINGS, SOURCE_MARKERS
from ldvc.reports.tables import (
    MISSING,
    DeviationNotes,
    Table,
    aggregate,
    dataset_short,
    format_ref,
    format_stat,
    legend,
    reproduced_marker,
    row_key,
    row_label,
    row_order,
)

PAPER_PRESETS: tuple[str, ...] = ("voc", "coco_stuff")
# (method, decoder.type, prompt.text_depth): ZegCLIP has no text prompts, LDVC prompts every layer.
PAPER_MODELS: tuple[tuple[str, str, int], ...] = (("ZegCLIP", "zegclip", 0), ("LDVC", "lctd", -1))
GPU_BENCHMARK_FILE = "benchmarks_gpu.json"
COUNTED = SOURCE_MARKERS["counted"]
BENCHMARK = SOURCE_MARKERS["benchmark"]
HEADER: tuple[str, ...] = ("Group", "Method", "Dataset", "Input", "Learnable params (M), as ZegCLIP counts",
                           "Learnable params (M), used by the forward", "GFLOPs", "Images/s (FPS)",
                           "Hardware / device")
GROUP_PUBLISHED = "published"
GROUP_COUNTED = "counted, paper size"
GROUP_RUNS = "this pipeline's runs"


@dataclass(frozen=True)
class ModelCount:
    """What counting one model gives: parameters, per-window GFLOPs (ZegCLIP's convention)."""

    learnable: int
    as_zegclip_counts: int | None  # None: not a zegclip model
    gflops: float  # image encoder + decoder, one window, one multiply-add = one FLOP
    text_gflops: float  # the text encoder, once per vocabulary
    window: int
    classes: int


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """open_clip warns that no pretrained weights were loaded: expected here (counting only)."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def count_model(cfg: Any, class_names: Sequence[str], window: int) -> ModelCount:
    """Build `cfg`'s segmentor on a meta-device CLIP (random init, shapes only) and count it."""
    import open_clip
    import torch

    from ldvc.model.build import build_segmentor
    from ldvc.model.clip_loader import register_configs
    from ldvc.model.flops import paper_gflops, segmentor_flops
    from ldvc.model.param_count import count_parameters, zegclip_counts

    register_configs()
    with _quiet(), torch.device("meta"):
        clip_model = open_clip.create_model(cfg.clip.model, pretrained=None, device="meta")
    segmentor = build_segmentor(cfg, clip_model, list(class_names))
    parts = segmentor_flops(segmentor, window)
    zegclip = zegclip_counts(cfg, clip_model)["as_zegclip_counts"] if cfg.decoder.type == "zegclip" else None
    return ModelCount(
        learnable=count_parameters(segmentor)["learnable"],
        as_zegclip_counts=zegclip,
        gflops=paper_gflops(parts["image_encoder"] + parts["decoder"]),
        text_gflops=paper_gflops(parts["text_encoder"]),
        window=window,
        classes=len(class_names),
    )


def paper_config(preset: str, decoder: str, text_depth: int) -> Any:
    """The preset's config (presets/<preset>.yaml over the defaults) with the given decoder and text prompts."""
    from ldvc.config import config_from_dict
    from ldvc.presets import zegclip_preset_config

    raw = zegclip_preset_config(preset).to_dict()
    raw["decoder"]["type"], raw["prompt"]["text_depth"] = decoder, text_depth
    return config_from_dict(raw)


@cache
def count_paper_model(preset: str, decoder: str, text_depth: int) -> ModelCount:
    """ZegCLIP / LDVC at a preset's paper size (512x512 window, every class of the dataset)."""
    from ldvc.data.classes import dataset_classes

    cfg = paper_config(preset, decoder, text_depth)
    return count_model(cfg, dataset_classes(cfg.data), cfg.eval.window)


@lru_cache(maxsize=64)
def _count_checkpoint(path: str, size: int, mtime_ns: int) -> ModelCount:
    from ldvc.config import config_from_dict
    from ldvc.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    cfg = config_from_dict(ckpt["config"], variant=True)
    window = cfg.eval.window if cfg.eval.mode == "slide" else cfg.data.image_size
    return count_model(cfg, list(ckpt["class_names"]), window)


def find_checkpoint(record: EvalRecord) -> Path | None:
    """The record's checkpoint file: as named (absolute or relative to the working directory or to a
    folder above the metrics.json), else the model.pt beside the metrics.json."""
    candidates: list[Path] = []
    local = record.origin and not record.origin.startswith("mlflow:")
    if record.checkpoint:
        named = Path(record.checkpoint)
        candidates.append(named if named.is_absolute() else Path.cwd() / named)
        if local and not named.is_absolute():
            candidates += [folder / named for folder in Path(record.origin).resolve().parents]
    if local:
        candidates.append(Path(record.origin).parent / "model.pt")
    return next((p for p in candidates if p.is_file()), None)


def count_run(record: EvalRecord) -> ModelCount:
    """Count the model a record evaluated, from its checkpoint's config (FileNotFoundError if none)."""
    path = find_checkpoint(record)
    if path is None:
        raise FileNotFoundError(f"no checkpoint found for {record.origin} (checkpoint {record.checkpoint or '-'})")
    stat = path.stat()
    return _count_checkpoint(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


# --------------------------------------------------------------------------------------------
# GPU benchmark
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuSpeed:
    fps: float
    hardware: str
    date: str


def read_gpu_benchmark(path: Path) -> dict[tuple[str, str], GpuSpeed]:
    """{(preset, decoder): speed} from a GPU benchmark report (format: module docstring).
    Raises ValueError naming the problem when the file cannot be read."""
    text = Path(path).read_text()
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as first:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: neither JSON nor JSON lines ({err})") from None
        if not data:
            raise ValueError(f"{path}: neither JSON nor JSON lines ({first})") from None
    if isinstance(data, dict):
        data = data.get("records", [data])
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of benchmark records, got {type(data).__name__}")
    out: dict[tuple[str, str], GpuSpeed] = {}
    for rec in data:
        if not isinstance(rec, dict) or "decoder" not in rec:
            continue
        if rec.get("benchmark") == "gpu_slide_fps":  # benchmarks/gpu.py (the device check): float32, as ZegCLIP
            fps = rec.get("fps_fp32")
        elif rec.get("model") == "vitb16":  # benchmarks/throughput.py --model vitb16
            fps = rec.get("fps", rec.get("eval_slide_images_per_s"))
        else:
            continue
        if not isinstance(fps, (int, float)) or not math.isfinite(fps):
            continue
        preset = str(rec.get("preset") or rec.get("dataset") or "voc")
        hardware = str(rec.get("gpu") or rec.get("device") or "GPU")
        out[(preset, str(rec["decoder"]))] = GpuSpeed(float(fps), hardware, str(rec.get("date", "")))
    return out


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def _m(count: int | None) -> str:
    return MISSING if count is None else f"{count / 1e6:.2f} [{COUNTED}]"


def _failure(what: str, err: BaseException) -> str:
    return f"{what}: could not be counted ({type(err).__name__}: {str(err)[:200]}); its cells are '-'."


def cost_table(records: Sequence[EvalRecord], *, count: bool = True,
               gpu_benchmark: str | Path | None = None) -> Table:
    """Published efficiency, counted paper-size models and this pipeline's runs (module docstring).
    `count=False` leaves the counted cells '-' (and says so); `gpu_benchmark`: the GPU report file."""
    rows: list[list[str]] = []
    notes_tail: list[str] = []
    for ref in COST_REFERENCES:
        rows.append([GROUP_PUBLISHED, ref.method, dataset_short(ref.dataset), "512x512 window",
                     format_ref(ref.learnable_params_m), MISSING, format_ref(ref.gflops), format_ref(ref.fps),
                     ref.hardware])
    # ---- (b) counted at the paper size
    speeds: dict[tuple[str, str], GpuSpeed] = {}
    gpu_path = Path(gpu_benchmark) if gpu_benchmark is not None else None
    if gpu_path is not None and gpu_path.is_file():
        try:
            speeds = read_gpu_benchmark(gpu_path)
        except (OSError, ValueError) as err:
            notes_tail.append(f"GPU benchmark {gpu_path} could not be read ({err}): FPS of the counted rows is '-'.")
    counted: dict[tuple[str, str], ModelCount] = {}
    for preset in PAPER_PRESETS:
        for method, decoder, text_depth in PAPER_MODELS:
            mc: ModelCount | None = None
            if count:
                try:
                    mc = counted[(preset, decoder)] = count_paper_model(preset, decoder, text_depth)
                except Exception as err:  # counting must never break the report: say why instead
                    notes_tail.append(_failure(f"{method} at the {preset} paper size", err))
            speed = speeds.get((preset, decoder))
            as_zegclip = (mc.as_zegclip_counts if mc.as_zegclip_counts is not None else mc.learnable) if mc else None
            rows.append([
                GROUP_COUNTED, f"{method} (counted)", dataset_short(preset), "512x512 window",
                _m(as_zegclip), _m(mc.learnable if mc else None),
                f"{mc.gflops:.1f} [{COUNTED}]" if mc else MISSING,
                f"{speed.fps:.1f} [{BENCHMARK}]" if speed else MISSING,
                f"{speed.hardware} (FPS); meta device (counts)" if speed else "meta device (counts only)",
            ])
    # ---- (c) this pipeline's runs
    deviations = DeviationNotes()
    no_checkpoint: list[str] = []
    runs = [r for r in records if r.setting in SETTINGS]
    keys = sorted({(row_key(r), r.setting, r.dataset) for r in runs},
                  key=lambda k: (row_order(k[0]), SETTINGS.index(k[1]), k[2]))
    for key, setting, dataset in keys:
        recs = sorted([r for r in runs if (row_key(r), r.setting, r.dataset) == (key, setting, dataset)],
                      key=lambda r: r.seed)
        label = row_label(key)
        marker = reproduced_marker(recs)
        mc = None
        setting_name = setting.replace("_", " ")
        where = f"{label}, {setting_name}, {dataset_short(dataset)}"
        if count:
            try:
                mc = count_run(recs[0])
            except FileNotFoundError:  # MLflow records of another machine, or a removed runs/ folder
                no_checkpoint.append(where)
            except Exception as err:  # an unbuildable config: say why instead of failing the report
                notes_tail.append(_failure(where, err))
        learnable = aggregate(r.metrics.get("learnable_params", math.nan) for r in recs)
        if learnable is not None:
            used = format_stat(learnable, marker, scale=1e6, decimals=2, with_std=False)
        else:
            used = _m(mc.learnable if mc else None)
        as_zegclip = _m(mc.as_zegclip_counts) if mc and mc.as_zegclip_counts is not None else (
            used if key.method == "LDVC" else MISSING)
        speed = format_stat(aggregate(r.metrics.get("eval_images_per_s", math.nan) for r in recs), marker)
        devices = ", ".join(sorted({r.device for r in recs if r.device})) or MISSING
        deviations.add(f"{label}, {setting_name}", recs)  # the footnote names the dataset itself
        window = f"{mc.window}x{mc.window} window" if mc else MISSING
        seeds = sorted({r.seed for r in recs})
        rows.append([GROUP_RUNS, f"{label}, seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}",
                     f"{dataset_short(dataset)} ({setting_name})", window, as_zegclip, used,
                     f"{mc.gflops:.2f} [{COUNTED}]" if mc else MISSING, speed, devices])
    notes = legend(rows) + [COST_REFERENCE_NOTE + "."]
    notes.append(
        "Counted rows: ViT-B/16 at the presets' paper size (presets/voc.yaml, presets/coco_stuff.yaml: 512x512 "
        "window, 10 / 100 visual prompt tokens, every class: 20 / 171) with random weights on the meta device. "
        "GFLOPs in ZegCLIP's convention (ldvc.model.flops.paper_gflops: one multiply-add = one FLOP) of one "
        "window's inference forward through the image encoder and the decoder, attention included; element-wise "
        "operations (norms, softmax, upsampling) are not counted (about 0.3% of ZegCLIP's total). The text encoder "
        "is left out as in ZegCLIP: class embeddings do not depend on the image and are computed once per "
        "vocabulary.")
    notes.append(
        "Learnable params 'as ZegCLIP counts' = the checkpoint's trainable tensors including those ZegCLIP's "
        "forward never uses (ldvc/model/param_count.py zegclip_counts, docs/parameters.md); 'used by the "
        "forward' = what our model builds and trains. LDVC carries no unused tensor: both columns are equal.")
    for preset in PAPER_PRESETS:
        z, ref = counted.get((preset, "zegclip")), next(c for c in COST_REFERENCES if c.dataset == preset)
        if z is not None and z.as_zegclip_counts is not None:
            notes.append(f"ZegCLIP counted at the {dataset_short(preset)} paper size: {z.gflops:.1f} GFLOPs vs "
                         f"{ref.gflops.value:.1f} reported ({100 * (z.gflops / ref.gflops.value - 1):+.1f}%), "
                         f"{z.as_zegclip_counts / 1e6:.2f}M learnable as ZegCLIP counts vs "
                         f"{ref.learnable_params_m.value:.1f}M reported.")
        once = {m: counted[(preset, d)].text_gflops for m, d, _ in PAPER_MODELS if (preset, d) in counted}
        if once:
            notes.append(f"Text encoder, once per vocabulary ({dataset_short(preset)}): "
                         + ", ".join(f"{m} {g:.1f} GFLOPs" for m, g in once.items()) + ".")
    if not count:
        notes.append("Model counting was switched off for this build (--no-count): counted cells are '-'.")
    if gpu_path is not None and gpu_path.is_file() and not speeds:
        notes.append(f"No usable GPU measurement: {gpu_path} holds no ViT-B/16 throughput record (benchmarks/"
                     "throughput.py on a GPU, model vitb16); FPS of the counted rows is '-'.")
    elif speeds:
        hw = sorted({s.hardware for s in speeds.values()})
        dates = sorted({s.date for s in speeds.values() if s.date})
        notes.append(f"FPS of the counted rows: images/s of slide inference measured by benchmarks/throughput.py on "
                     f"{', '.join(hw)} ({gpu_path}{', ' + ', '.join(dates) if dates else ''}), random weights; "
                     "not comparable with ZegCLIP's GTX 1080 Ti FPS.")
    else:
        notes.append(f"No GPU measurement exists ({gpu_path if gpu_path else GPU_BENCHMARK_FILE} absent): FPS of "
                     "the counted rows is '-'; run `python -m benchmarks.throughput --json` on a GPU and save the "
                     "records there.")
    notes.append(
        "This pipeline's runs: learnable parameters as training counted them; GFLOPs per evaluation window at the "
        "run's own size (its checkpoint's config: eval.window for slide inference, data.image_size for whole-image "
        "inference; every class a candidate), counted the same way; images/s = the evaluation stage's measured "
        "speed over the whole validation split (data loading and metrics included, the slowest process), on the "
        "device named. Not comparable with the paper-size rows.")
    if no_checkpoint:
        notes.append("GFLOPs (and the input size) of these runs are '-': their checkpoint file is not available here "
                     "(records from MLflow of another machine, or model.pt not checked out / removed): "
                     + "; ".join(no_checkpoint) + ".")
    notes += notes_tail
    notes += deviations.notes()
    return Table(
        name="cost",
        caption="Efficiency: learnable parameters, GFLOPs per 512x512 window (ZegCLIP's convention) and inference "
                "speed; published, counted at the paper size, and this pipeline's runs",
        header=list(HEADER),
        rows=rows,
        notes=[n for n in notes if n],
        section_col=0,
    )
