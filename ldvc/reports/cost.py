"""The cost table (reports/tables/cost.{md,csv,tex}): learnable parameters, GFLOPs and speed, as
ZegCLIP reports its efficiency, in five groups:

(a) published: ZegCLIP's README (13.8M / 110.4 GFLOPs / 9.0 FPS VOC, 14.6M / 123.9 / 6.7 COCO-Stuff,
    one GTX 1080 Ti), reference.py. The README names neither the FLOP counter nor the input size;
    that they are fvcore counts (one multiply-add = one FLOP) of one 512x512 image is OUR INFERENCE
    (ZegCLIP's get_flops.py offers fvcore behind --fvcore and, by default, mmcv's
    get_model_complexity_info at a 1024x1024 input), supported only by our own count landing within
    0.4% of the published figures; the notes say which numbers are published, counted, inferred;
(b) counted at the paper size: ZegCLIP (the preset's ZegCLIP baseline, ldvc/baseline.py: zegclip
    decoder, no text prompts, as the tables' `zegclip` ablation builds it) and LDVC built from the
    VOC and COCO-Stuff presets (ViT-B/16,
    512x512 window, 10 / 100 prompt tokens, all 20 / 171 classes) with RANDOM weights on the meta
    device (shapes only: no weights, no memory, a few seconds), FLOPs counted by
    ldvc/model/flops.py (`segmentor_flops`, attention included) and converted to ZegCLIP's
    convention (`paper_gflops`: fvcore counts one multiply-add as one FLOP); learnable parameters
    both "as ZegCLIP counts" (its checkpoint's trainable tensors, incl. those its forward never
    uses) and "used by the forward" (ldvc/model/param_count.py `zegclip_counts`); counted once per
    code change by the `count` stage (ldvc/reports/counts.py, reports/counts.json), which the report
    reads; FPS from the device check's reports/device_check.jsonl when it exists, else '-';
(c) the text encoder per TRAINING step at each paper preset (VOC, COCO-Stuff, Context-59; global
    batch 16 of 512 px crops, the seen classes x the preset's templates, forward + backward),
    counted: its share of the step with the causal prefix computed per class (before) and once per
    template (after, ldvc/model/text_encoder.py); ZegCLIP's baseline runs none (cached embeddings);
(d) evaluation at hundreds of classes, measured (reports/eval_scaling.jsonl, written by
    `python -m benchmarks.eval_scaling --json`): peak memory and time of one image's sliding-window
    evaluation with 20 / 171 / 459 / 847 classes, in class chunks (eval.class_chunk) and all at once;
(e) this pipeline's runs: learnable parameters as training counted them, GFLOPs per evaluation
    window at the run's own size (the model its checkpoint's config describes, counted the same
    way), the evaluation stage's measured images/s and its device.

Our choices:
- The per-image figure is the image encoder + decoder forward of one window, as ZegCLIP's
  get_flops.py measures it: the text encoder is left out because class embeddings do not depend on
  the image (computed once per vocabulary; the notes give that one-off cost).
- LDVC carries no tensor its forward leaves unused, so its two parameter columns are equal.
- Counting never breaks the report: a failure leaves '-' in the cell and says why in the notes.
  Paper-size counts come from the `count` stage's file (they depend only on the code; counted here
  when no file is given), run counts are cached per checkpoint file (path, size, mtime).
- GPU benchmark records: JSON (a list, {"records": [...]} or JSON lines): the device check's
  `gpu_slide_fps` records (benchmarks/device_check.py, reports/device_check.jsonl; FPS = its float32
  sliding-window figure without TF32, as ZegCLIP measured on a card without TF32; its tiny-size CPU
  rehearsal records are ignored) or benchmarks/throughput.py records with model "vitb16" (FPS =
  `fps` when given, else `eval_slide_images_per_s`); VOC preset unless a "preset"/"dataset" field
  says otherwise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ldvc.reports.counts import (
    PAPER_MODELS,
    PAPER_PRESETS,
    TEXT_SHARE_PRESETS,
    ModelCount,
    PaperCounts,
    count_model,
    count_paper,
)
from ldvc.reports.records import EvalRecord
from ldvc.reports.reference import COST_REFERENCES, SETTINGS, SOURCE_MARKERS
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

GPU_BENCHMARK_FILE = "device_check.jsonl"
EVAL_SCALING_FILE = "eval_scaling.jsonl"
COUNTED = SOURCE_MARKERS["counted"]
BENCHMARK = SOURCE_MARKERS["benchmark"]
HEADER: tuple[str, ...] = ("Group", "Method", "Dataset", "Input", "Learnable params (M), as ZegCLIP counts",
                           "Learnable params (M), used by the forward", "GFLOPs", "Images/s (FPS)",
                           "Hardware / device", "Peak memory (MiB)")
GROUP_PUBLISHED = "published"
GROUP_COUNTED = "counted, paper size"
GROUP_TEXT = "text encoder per training step, counted"
GROUP_EVAL = "evaluation at many classes, measured"
GROUP_RUNS = "this pipeline's runs"


# --------------------------------------------------------------------------------------------
# This pipeline's runs (the paper-size counts: ldvc/reports/counts.py, the `count` stage)
# --------------------------------------------------------------------------------------------


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
        if rec.get("benchmark") == "gpu_slide_fps":  # the device check: float32 without TF32, as ZegCLIP
            if rec.get("size") == "tiny":  # its CPU rehearsal's tiny sizes are not paper numbers
                continue
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


def read_eval_scaling(path: Path) -> list[dict[str, Any]]:
    """The paper-size `eval_scaling` records of benchmarks/eval_scaling.py (JSON lines); ValueError naming
    the problem when the file cannot be read."""
    try:
        recs = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON lines ({err})") from None
    return [r for r in recs if isinstance(r, dict) and r.get("benchmark") == "eval_scaling"
            and r.get("size") == "paper"]


def _text_share_rows(paper: PaperCounts | None) -> list[list[str]]:
    rows = []
    for preset in TEXT_SHARE_PRESETS if paper is not None else ():
        steps = paper.steps.get(preset)
        if steps is None:
            continue
        ld, zc = steps["lctd"], steps["zegclip"]
        where = f"{ld.batch} x 512x512 crops, {ld.classes} seen classes x {ld.templates} template(s)"

        def row(method: str, text: float, total: float, preset: str = preset, where: str = where) -> list[str]:
            return [GROUP_TEXT, method, dataset_short(preset), where, MISSING, MISSING,
                    f"text {text:.0f} of {total:.0f} per step: {100 * text / total:.1f}% [{COUNTED}]", MISSING,
                    "meta device (counts only)", MISSING]

        if ld.text_unshared is not None:
            rows.append(row("LDVC, text prompts, prefix per class (before)", ld.text_unshared,
                            ld.total - ld.text + ld.text_unshared))
            rows.append(row("LDVC, text prompts, prefix once per template (after)", ld.text, ld.total))
        else:
            rows.append(row("LDVC, text prompts (prefix once per template)", ld.text, ld.total))
        rows.append(row("ZegCLIP baseline (no text prompts: embeddings cached)", zc.text, zc.total))
    return rows


def _eval_rows(path: Path | None, notes_tail: list[str]) -> tuple[list[list[str]], list[dict[str, Any]]]:
    if path is None or not path.is_file():
        notes_tail.append(f"No evaluation-scaling measurement ({path or EVAL_SCALING_FILE} absent): run "
                          "`python -m benchmarks.eval_scaling --json > reports/eval_scaling.jsonl`.")
        return [], []
    try:
        recs = read_eval_scaling(path)
    except (OSError, ValueError) as err:
        notes_tail.append(f"Evaluation-scaling records {path} could not be read ({err}).")
        return [], []
    rows = []
    for r in sorted(recs, key=lambda r: (r["classes"], r["class_chunk"] is None)):
        how = f"chunks of {r['class_chunk']} classes" if r["class_chunk"] else "all classes at once"
        rows.append([GROUP_EVAL, f"LDVC evaluation, {r['classes']} classes, {how}", "one VOC-shaped image",
                     f"{r['image_hw'][0]}x{r['image_hw'][1]}, slide {r['window']}/{r['stride']}", MISSING, MISSING,
                     MISSING, f"{r['images_per_s']:.3f} [{BENCHMARK}]", f"{r['device']} ({r.get('cpu', '?')})",
                     f"{r['peak_mb']:.0f} [{BENCHMARK}]"])
    return rows, recs


def _zegclip_flop_notes(preset: str, z: ModelCount, ref: Any) -> list[str]:
    """What the counted 110.2 / 123.5 are and why they land near the published 110.4 / 123.9."""
    from ldvc.model.flops import (
        zegclip_prompt_proj_gmacs,
        zegclip_reference_gmacs,
        zegclip_unbuilt_last_layer_gmacs,
    )

    analytic = zegclip_reference_gmacs(preset)
    prompts, classes = (10, 20) if preset == "voc" else (100, 171)
    proj = zegclip_prompt_proj_gmacs(prompts)
    last = zegclip_unbuilt_last_layer_gmacs(classes)
    executed = analytic["total"] + proj
    return [
        f"ZegCLIP counted at the {dataset_short(preset)} paper size: {z.gflops:.1f} GFLOPs [C] vs "
        f"{ref.gflops.value:.1f} "
        f"published [M] ({100 * (z.gflops / ref.gflops.value - 1):+.1f}%), {z.as_zegclip_counts / 1e6:.2f}M "
        f"learnable as ZegCLIP counts vs {ref.learnable_params_m.value:.1f}M published. The closeness is two "
        f"omissions nearly cancelling, not element-wise operations: what ZegCLIP's forward executes is "
        f"{executed:.2f} GMACs (the analytic count ldvc.model.flops.zegclip_reference_gmacs, {analytic['total']:.2f}, "
        f"which leaves out the shared prompt_proj Linear on the {prompts} prompt tokens of 12 layers, "
        f"{proj:.2f}); the counted model builds only what the mask logits use, so it lacks the last decoder "
        f"layer's value projection, attention-weighted sum, output projection and FFN, which ZegCLIP computes "
        f"and discards ({last:.2f}): {executed:.2f} - {last:.2f} = {executed - last:.2f}, within "
        f"{abs(z.gflops - (executed - last)):.2f} of the count ({z.gflops:.2f})."]


def cost_table(records: Sequence[EvalRecord], *, count: bool = True, paper_counts: PaperCounts | None = None,
               gpu_benchmark: str | Path | None = None, eval_scaling: str | Path | None = None) -> Table:
    """Published efficiency, counted paper-size models and training steps, evaluation at many classes and
    this pipeline's runs (module docstring). `paper_counts`: the `count` stage's record
    (ldvc/reports/counts.py); None with `count` counts them here (about a minute on a CPU).
    `count=False` leaves every counted cell '-' (and says so); `gpu_benchmark`: the device check's
    records; `eval_scaling`: benchmarks/eval_scaling.py's records (default: EVAL_SCALING_FILE beside
    `gpu_benchmark`)."""
    rows: list[list[str]] = []
    notes_tail: list[str] = []
    paper = (paper_counts if paper_counts is not None else count_paper()) if count else None
    for what, why in (paper.failures if paper is not None else {}).items():
        notes_tail.append(f"{what}: could not be counted ({why}); its cells are '-'.")
    for ref in COST_REFERENCES:
        rows.append([GROUP_PUBLISHED, ref.method, dataset_short(ref.dataset), "512x512 window",
                     format_ref(ref.learnable_params_m), MISSING, format_ref(ref.gflops), format_ref(ref.fps),
                     ref.hardware, MISSING])
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
        for method, decoder in PAPER_MODELS:
            mc: ModelCount | None = paper.models.get((preset, decoder)) if paper is not None else None
            if mc is not None:
                counted[(preset, decoder)] = mc
            speed = speeds.get((preset, decoder))
            as_zegclip = (mc.as_zegclip_counts if mc.as_zegclip_counts is not None else mc.learnable) if mc else None
            rows.append([
                GROUP_COUNTED, f"{method} (counted)", dataset_short(preset), "512x512 window",
                _m(as_zegclip), _m(mc.learnable if mc else None),
                f"{mc.gflops:.1f} [{COUNTED}]" if mc else MISSING,
                f"{speed.fps:.1f} [{BENCHMARK}]" if speed else MISSING,
                f"{speed.hardware} (FPS); meta device (counts)" if speed else "meta device (counts only)", MISSING,
            ])
    # ---- (c) the text encoder per training step, (d) evaluation at many classes
    rows += _text_share_rows(paper)
    scaling = Path(eval_scaling) if eval_scaling is not None else (
        gpu_path.parent / EVAL_SCALING_FILE if gpu_path is not None else None)
    eval_rows, eval_recs = _eval_rows(scaling, notes_tail)
    rows += eval_rows
    # ---- (e) this pipeline's runs
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
                     f"{mc.gflops:.2f} [{COUNTED}]" if mc else MISSING, speed, devices, MISSING])
    notes = legend(rows) + [
        "Provenance. Published [M]: ZegCLIP's README (ZiqinZhou66/ZegCLIP README.md, commit 9ba4bb5, lines 56-61): "
        "#Params (learnable), GFLOPs and FPS on one GTX 1080 Ti; the README names neither the FLOP counter nor "
        "the input size. Inferred (ours, not ZegCLIP's statement): that the GFLOPs count one multiply-add as one "
        "FLOP (fvcore's convention) for one 512x512 image through the image encoder and the decode head with "
        "precomputed class embeddings. ZegCLIP's get_flops.py (commit eab9cef) can count either way: fvcore's "
        "FlopCountAnalysis (calc_flops, lines 19-35) behind its --fvcore flag (lines 42-44, 87-88) or, by "
        "default, mmcv's get_model_complexity_info (line 99), at a default --shape of 1024x1024 (lines 45-50); the "
        "inference "
        "rests only on our own count at 512 px in that convention landing within 0.4% of the published figures. "
        "Counted [C]: by this pipeline from the model definition (below). Measured [B]: by this pipeline's "
        "benchmarks."]
    notes.append(
        "Counted rows: ViT-B/16 at the presets' paper size (presets/voc.yaml, presets/coco_stuff.yaml: 512x512 "
        "window, 10 / 100 visual prompt tokens, every class: 20 / 171) with random weights on the meta device. "
        "ZegCLIP = the preset's ZegCLIP baseline as the tables' `zegclip` ablation builds it (ldvc/baseline.py: "
        "zegclip decoder, no text prompts). GFLOPs in the inferred convention (ldvc.model.flops.paper_gflops: "
        "one multiply-add = one FLOP) of one window's inference forward through the image encoder and the "
        "decoder, attention included; element-wise operations (norms, softmax, upsampling) are not counted. The "
        "text encoder is left out as in ZegCLIP: class embeddings do not depend on the image and are computed "
        "once per vocabulary.")
    notes.append(
        "Learnable params 'as ZegCLIP counts' = the checkpoint's trainable tensors including those ZegCLIP's "
        "forward never uses (ldvc/model/param_count.py zegclip_counts, docs/parameters.md); 'used by the "
        "forward' = what our model builds and trains. LDVC carries no unused tensor: both columns are equal.")
    for preset in PAPER_PRESETS:
        z, ref = counted.get((preset, "zegclip")), next(c for c in COST_REFERENCES if c.dataset == preset)
        if z is not None and z.as_zegclip_counts is not None:
            notes += _zegclip_flop_notes(preset, z, ref)
        once = {m: counted[(preset, d)].text_gflops for m, d in PAPER_MODELS if (preset, d) in counted}
        if once:
            notes.append(f"Text encoder, once per vocabulary ({dataset_short(preset)}): "
                         + ", ".join(f"{m} {g:.1f} GFLOPs" for m, g in once.items()) + ".")
    if any(r[0] == GROUP_TEXT for r in rows):
        notes.append(
            "Text encoder per training step: GFLOPs in torch's convention (2 per multiply-add) of one training step "
            "of the global batch (16 crops of 512x512) with the seen classes, forward + backward (frozen CLIP: "
            "gradients reach the learnable prompts and the inputs, not the weights), counted on the meta device. "
            "LDVC's learnable text prompts make the text encoder run every seen class under every template with "
            "gradients each step; the causal prefix before the class name does not depend on the class and is "
            "computed once per template (after), exactly (tests/test_text_prefix.py), instead of once per class "
            "(before). ZegCLIP's baseline has no text prompts: its class embeddings are computed once and cached.")
    if eval_recs:
        big = max(eval_recs, key=lambda r: (r["classes"], r["class_chunk"] is not None))
        pair = {r["class_chunk"] is None: r for r in eval_recs if r["classes"] == big["classes"]}
        notes.append(
            "Evaluation at many classes (benchmarks/eval_scaling.py, reports/eval_scaling.jsonl): the evaluation's "
            "own inference (ldvc.eval.inference.infer_labels) of one 375x500 photo resized to 512x683 (two 512 px "
            "windows, stride 426) by LDVC at the VOC preset's size (random weights) with C class names; peak memory "
            "= extra memory of the call (the profiler's allocation events on the CPU), images/s = 1 / its time. "
            "The decoder runs on every class at once (LDVC's cross-attention takes a softmax over the classes); the "
            "scores are upsampled, averaged, resized and arg-maxed eval.class_chunk classes at a time, exactly "
            "(same labels: " + ("yes" if all(r.get("same_labels") for r in eval_recs) else "NO") + ")"
            + (f". At {big['classes']} classes: {pair[False]['peak_mb']:.0f} MiB in chunks vs "
               f"{pair[True]['peak_mb']:.0f} MiB all at once." if len(pair) == 2 else "."))
    if not count:
        notes.append("Model counting was switched off for this build (--no-count): counted cells are '-'.")
    if gpu_path is not None and gpu_path.is_file() and not speeds:
        notes.append(f"No usable GPU measurement: {gpu_path} holds no paper-size sliding-window record (the device "
                     "check's gpu_slide_fps, or benchmarks/throughput.py on a GPU, model vitb16); FPS of the counted "
                     "rows is '-'.")
    elif speeds:
        hw = sorted({s.hardware for s in speeds.values()})
        dates = sorted({s.date for s in speeds.values() if s.date})
        notes.append(f"FPS of the counted rows: images/s of slide inference measured on {', '.join(hw)} ({gpu_path}"
                     f"{', ' + ', '.join(dates) if dates else ''}), float32, random weights; not comparable with "
                     "ZegCLIP's GTX 1080 Ti FPS.")
    else:
        notes.append(f"No GPU measurement exists ({gpu_path if gpu_path else GPU_BENCHMARK_FILE} absent): FPS of "
                     "the counted rows is '-'; run the device check (docs/gpu.md, 'Device check') and copy its "
                     "device_check.jsonl there.")
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
        caption="Efficiency: learnable parameters, GFLOPs per 512x512 window (ZegCLIP's convention, inferred) and "
                "inference speed; published, counted at the paper size, the text encoder per training step, "
                "evaluation at many classes, and this pipeline's runs",
        header=list(HEADER),
        rows=rows,
        notes=[n for n in notes if n],
        section_col=0,
    )
