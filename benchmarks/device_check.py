"""The device check: what the paper-scale path costs on one GPU, measured in ONE call, as documented.

Two commands (the README's "Device check" section holds exactly these, and
tests/test_device_check_rehearsal.py runs them literally on the CPU):

    python -m benchmarks.device_check prepare            # here: the wheels the GPU machine lacks -> .whl/
    python3 -m benchmarks.device_check run --out "$OUT"  # there: measures, writes everything into $OUT

`prepare` runs in the project's environment installed as the README says (any Python that has
pip and a package index): it downloads exactly the distributions the check needs that the GPU
machine lacks, at the versions pinned in constraints.txt (benchmarks/device_env.py), into .whl/
(git-ignored: the call that runs the check names it in `carry`).
`run` needs only the GPU machine's preinstalled torch and no package index: it installs the carried
wheels with pip --no-index into a temporary folder, then runs each part in its own process under a
time budget and writes into the output directory, as it goes:
- device_check.jsonl: one JSON record per measurement, appended and flushed as it is measured
  (a part stopped at its budget keeps what it had measured);
- environment.json: GPU name, driver, torch, CUDA, triton, C compiler (found or not), Python, cores;
- device_check.md: the report (tables, projections, the checks), rendered at the end;
- device_check.log: each part's stdout and stderr.
Parts, most important first (`--parts` picks some): steps (the real training step of LDVC and of
each preset's ZegCLIP baseline, eager, VOC / COCO-Stuff / Context-59, images/s, FLOPs and the text
encoder's share, utilisation against the peak of the device present, peak memory, host syncs per
step), flex (FlexAttention against the reference kernel, forward + backward, fp32 and bf16, and
the fused path by its memory), eval (sliding-window 512 / 426 images/s in fp32, TF32 and bf16, the
argmax agreement of each with fp32, an 847-class image chunked and not), loader (steady-state
images/s per worker count), train_loop (`train_segmentor` itself, a few iterations), compiled
(the training step through torch.compile: graphs, graph breaks, recompiles, first-step compile
time and speed). A part that would start with less than its minimum left is skipped, a part that
runs past its budget is stopped, and both say so in the records and the report.
No silent slow path: every part runs with the compiled FlexAttention's fallback policy "error" and
dynamo's fail-on-recompile-limit, so a recompile-limit hit or a fused -> unfused fallback fails
the part, and the run exits non-zero (4) when any check fails.
Sizes: `--size auto` = paper on CUDA, tiny elsewhere (the rehearsal); tiny numbers are NOT paper
numbers and the report says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python3 -m benchmarks.device_check` from the tree's root needs nothing else
    sys.path.insert(0, str(REPO))

from benchmarks.device_env import FORBIDDEN, WHEELS_DIR, install_wheels, lacking, prepare_wheels  # noqa: E402

PREPARE_COMMAND = "python -m benchmarks.device_check prepare"
RUN_COMMAND = 'python3 -m benchmarks.device_check run --out "$OUT"'
RECORDS, REPORT, ENVIRONMENT, LOG = "device_check.jsonl", "device_check.md", "environment.json", "device_check.log"
PART_ORDER = ("steps", "flex", "eval", "loader", "train_loop", "compiled")
# seconds per part (budget, minimum to start), paper size on one H100/H200; the whole run stays under 8 minutes
BUDGETS: dict[str, dict[str, tuple[float, float]]] = {
    "paper": {"steps": (120, 40), "flex": (40, 15), "eval": (70, 25), "loader": (45, 15), "train_loop": (35, 15),
              "compiled": (150, 60)},
    "tiny": {"steps": (40, 5), "flex": (15, 3), "eval": (25, 3), "loader": (25, 3), "train_loop": (40, 5),
             "compiled": (60, 5)},
}
TOTAL_BUDGET = {"paper": 450.0, "tiny": 240.0}
REPORT_RESERVE_S = 10.0
# Evaluation images per validation split (the protocols' val sets): VOC 2012 val, COCO-Stuff val2017,
# PASCAL Context val (VOC2010 val with Context labels, Cascade-CLIP's Context-59 evaluation).
VAL_IMAGES = {"voc": 1449, "coco_stuff": 5000, "context59": 5105}
VOC_AMBITION_MINUTES = 15.0
LOADER_TARGET = 1.5  # loader images/s >= 1.5 x what the step consumes


# --------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------


def append_records(out: Path, records: list[dict[str, Any]]) -> None:
    """Append JSON lines to out/device_check.jsonl and flush them to disk."""
    with open(out / RECORDS, "a") as f:
        for r in records:
            f.write(json.dumps(r, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_records(out: Path) -> list[dict[str, Any]]:
    path = out / RECORDS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().startswith("{")]


# --------------------------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------------------------


def _first_line(cmd: list[str]) -> str | None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0].strip() if done.returncode == 0 and text else None


def environment(size: str, wheels: str, wheel_names: list[str]) -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    cuda = torch.cuda.is_available()
    compiler = None
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            compiler = {"name": cc, "path": shutil.which(cc), "version": _first_line([cc, "--version"])}
            break

    def version(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    return {
        "benchmark": "device_environment", "size": size, "python": platform.python_version(),
        "executable": sys.executable, "torch": torch.__version__, "cuda": torch.version.cuda,
        "triton": version("triton"), "open_clip": version("open_clip_torch"), "accelerate": version("accelerate"),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "driver": _first_line(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
        "c_compiler": compiler, "c_compiler_found": compiler is not None,
        "cpu_cores": os.cpu_count(), "platform": platform.platform(),
        "wheels_installed_by": wheels, "wheels": wheel_names, "wheels_expected": lacking(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


# --------------------------------------------------------------------------------------------
# derived records: projections, loader advice, checks
# --------------------------------------------------------------------------------------------


def _preset_schedule(preset: str) -> tuple[int, int, int]:
    """(inductive iterations, transductive iterations, global batch) of a preset (presets/<name>.yaml)."""
    from ldvc.presets import load_preset

    p = load_preset(preset)
    return int(p["train"]["iters"]), int(p["transductive"]["iters"]), int(p["train"]["batch_size"])


def projections(records: list[dict[str, Any]], size: str) -> list[dict[str, Any]]:
    """Wall time of each protocol on this one GPU: inductive + transductive training from the measured
    step images/s (the preset's precision), plus evaluating the val split after each, from the
    measured sliding-window images/s (fp32 with TF32, what the evaluation runs on a GPU)."""
    steps = [r for r in records if r.get("benchmark") == "train_step" and "ms_step" in r]
    evals = {r["method"]: r for r in records if r.get("benchmark") == "gpu_slide_fps" and "fps_fp32_tf32" in r}
    out = []
    for preset in VAL_IMAGES:
        source = preset if size == "paper" else "synthetic"
        ind, trans, batch = _preset_schedule(preset)
        for method in ("lctd", "zegclip"):
            cands = [r for r in steps if r["preset"] == source and r["method"] == method]
            if not cands:
                continue
            step = cands[0]  # the preset's own precision comes first
            train_s = (ind + trans) * batch / step["images_per_s"]
            fps = evals.get(method, {}).get("fps_fp32_tf32")
            eval_s = 2 * VAL_IMAGES[preset] / fps if fps else None
            total = train_s + (eval_s or 0.0)
            out.append({"benchmark": "projection", "protocol": preset, "method": method, "measured_at": source,
                        "size": size, "precision": step["precision"], "inductive_iters": ind,
                        "transductive_iters": trans, "global_batch": batch, "train_images_per_s": step["images_per_s"],
                        "eval_images_per_s": fps, "val_images": VAL_IMAGES[preset], "train_hours": train_s / 3600,
                        "eval_hours": eval_s / 3600 if eval_s else None, "hours": total / 3600,
                        "minutes": total / 60})
    return out


def loader_advice(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    steps = [r["images_per_s"] for r in records if r.get("benchmark") == "train_step" and "images_per_s" in r]
    loads = [r for r in records if r.get("benchmark") == "loader" and r.get("images_per_s")]
    if not steps or not loads:
        return []
    need = LOADER_TARGET * max(steps)
    ok = [r for r in loads if r["images_per_s"] >= need]
    best = min(ok, key=lambda r: (r["workers"], not r["pin_memory"], not r["persistent_workers"])) if ok else None
    return [{"benchmark": "loader_advice", "needed_images_per_s": need, "workers": best and best["workers"],
             "verdict": ("none of the measured worker counts is fast enough" if best is None else
                         f"{best['workers']} workers ({best['images_per_s']:.0f} images/s)")}]


def failed_checks(records: list[dict[str, Any]]) -> list[str]:
    """The checks of the run that did not hold (empty: all held or were skipped, as recorded)."""
    out = []
    for r in records:
        kind = r.get("benchmark")
        if kind == "device_part" and r.get("status") == "failed":
            out.append(f"part {r['part']} failed (exit {r.get('returncode')}): {str(r.get('error', ''))[:300]}")
        if kind == "gpu_flex" and "exact" in r and (not r["exact"] or not r.get("flex_differs_from_dense", True)):
            out.append(f"FlexAttention {r['dtype']} differs from the block kernel or equals dense attention")
        if kind == "gpu_flex_fused" and not r["fused"]:
            out.append(f"compiled FlexAttention peaked at {r['peak_mb_flex']:.0f} MiB: the unfused fallback")
        if kind in ("train_step", "compiled_step") and (r.get("flex") or {}).get("fallbacks_to_blocks"):
            out.append(f"{kind} {r.get('preset')} {r.get('method')}: compiled FlexAttention fell back "
                       f"{r['flex']['fallbacks_to_blocks']} time(s)")
        if kind == "compiled_step" and r.get("recompile_limit_hits"):
            out.append(f"compiled step {r.get('method')}: dynamo hit its recompile limit: "
                       f"{r.get('recompile_limit_messages')}")
        if kind == "train_step" and r.get("host_syncs_per_step", 0) > 1:
            out.append(f"train step {r['preset']} {r['method']} {r['precision']}: {r['host_syncs_per_step']:g} host "
                       f"syncs per step (at most 1 allowed)")
        if kind == "eval_many_classes" and r.get("same_labels") is False:
            out.append("chunked evaluation gave other labels than the all-classes evaluation")
        if kind == "gpu_train_loop" and not r.get("loss_finite"):
            out.append("train_segmentor ended without a finite loss")
        if kind == "part_imports" and r.get("forbidden"):
            out.append(f"part {r['part']} imported {r['forbidden']}, which the GPU machine lacks")
    return out


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) >= 10 ** -digits or v == 0 else f"{v:.2e}"
    return str(v)


def render(records: list[dict[str, Any]]) -> str:
    by = lambda kind: [r for r in records if r.get("benchmark") == kind]  # noqa: E731
    env = (by("device_environment") or [{}])[0]
    size = env.get("size", "?")
    tiny = size != "paper"
    where = env.get("gpu") or "CPU (no CUDA)"
    lines = ["# Device check", "",
             f"`{RUN_COMMAND}` on **{where}** (driver {_f(env.get('driver'))}, torch {env.get('torch')}, CUDA "
             f"{_f(env.get('cuda'))}, triton {_f(env.get('triton'))}, Python {env.get('python')}, "
             f"{env.get('cpu_cores')} "
             f"CPU cores, C compiler: {(env.get('c_compiler') or {}).get('path') or 'NOT found'}), {env.get('date')}; "
             f"size **{size}**" + (" (tiny sizes: NOT paper numbers; the logic of the check only)" if tiny else "")
             + ". Random CLIP weights. Every number was measured in this run unless marked as a paper's.", "",
             "## Parts", "", "| part | status | seconds | budget s |", "|---|---|---|---|"]
    for r in by("device_part"):
        lines.append(f"| {r['part']} | {r['status']}{': ' + r['reason'] if r.get('reason') else ''} | "
                     f"{_f(r.get('seconds'))} | {_f(r.get('budget_s'), 0)} |")
    lines += ["", "## Training step (the training loop's own step, eager)", "",
              "| preset | model | precision | batch | ms/step | images/s | GFLOP/step | text encoder share "
              "(prefix per class -> shared) | TFLOP/s | utilisation (peak) | of measured matmul | peak MiB | host "
              "syncs/step |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in by("train_step"):
        if "ms_step" not in r:
            lines.append(f"| {r.get('preset')} | - | {r.get('precision')} | skipped: {r.get('skipped')} |")
            continue
        util = (f"{100 * r['utilisation']:.0f}% of {r['peak_device']} {r['peak_dtype']} {r['peak_tflops']:.0f}"
                if r.get("utilisation") is not None else "unknown device: no datasheet peak")
        model = "LDVC" if r["method"] == "lctd" else "ZegCLIP baseline"
        lines.append(f"| {r['preset']} | {model} | {r['precision']} | "
                     f"{r['batch']} | {_f(r['ms_step'])} | {_f(r['images_per_s'])} | {_f(r['gflop_step'])} | "
                     f"{100 * r['text_share_unshared_prefix']:.0f}% -> {100 * r['text_share']:.0f}% | "
                     f"{_f(r['achieved_tflops'], 2)} | {util} | {100 * r['matmul_fraction']:.0f}% of "
                     f"{_f(r['matmul_tflops'])} | {_f(r['peak_mb'], 0)} | {_f(r['host_syncs_per_step'])} |")
    lines += ["", "## Compiled training step (torch.compile)", "",
              "| model | backend | first step s (compile) | ms/step | images/s | graphs | graph breaks | "
              "recompile-limit hits |", "|---|---|---|---|---|---|---|---|"]
    for r in by("compiled_step"):
        if "ms_step" not in r:
            lines.append(f"| {r.get('method')} | skipped: {r.get('skipped')} |")
            continue
        lines.append(f"| {r['method']} | {r['backend']} | {_f(r['first_step_s'])} | {_f(r['ms_step'])} | "
                     f"{_f(r['images_per_s'])} | {r['graphs']} | {_f(r['graph_breaks'])} | "
                     f"{r['recompile_limit_hits']} |")
    lines += ["", "## FlexAttention against the reference kernel", ""]
    for r in by("gpu_flex") + by("gpu_flex_fused") + by("flex_guard"):
        lines.append("- " + ", ".join(f"{k} {_f(v, 3) if isinstance(v, float) else _f(v)}" for k, v in r.items()
                                      if k not in ("benchmark", "signatures")))
    lines += ["", "## Evaluation (sliding window, ldvc.eval.inference.infer_labels)", "",
              "| model | classes | windows/image | images/s fp32 | fp32 + TF32 | bf16 | argmax agreement bf16 / "
              "TF32 vs fp32 | ZegCLIP paper FPS (1080 Ti) |", "|---|---|---|---|---|---|---|---|"]
    for r in by("gpu_slide_fps"):
        if "fps_fp32_tf32" not in r:
            lines.append(f"| {r.get('method')} | skipped: {r.get('skipped')} |")
            continue
        agree = " / ".join(f"{100 * a:.2f}%" if a is not None else "-"
                           for a in (r["argmax_agreement_bf16_vs_fp32"], r["argmax_agreement_tf32_vs_fp32"]))
        lines.append(f"| {r['method']} | {r['classes']} | {r['windows_per_image']} | {_f(r['fps_fp32'])} | "
                     f"{_f(r['fps_fp32_tf32'])} | {_f(r['fps_bf16'])} | {agree} | {_f(r['zegclip_paper_fps'])} |")
    for r in by("eval_many_classes"):
        if "peak_mb_chunked" in r:
            lines += ["", f"{r['classes']} classes, one {r['image_hw'][0]}x{r['image_hw'][1]} image: peak "
                          f"{_f(r['peak_mb_chunked'], 0)} MiB in chunks of {r['class_chunk']} classes vs "
                          f"{_f(r['peak_mb_all_classes'], 0)} MiB all at once; {_f(r['seconds_chunked'], 2)} s vs "
                          f"{_f(r['seconds_all_classes'], 2)} s; same labels: {_f(r['same_labels'])}."]
    lines += ["", "## Training loader (steady state)", "", "| workers | pinned | persistent | warm-up batches | "
              "timed batches | images/s | first batch s |", "|---|---|---|---|---|---|---|"]
    for r in by("loader"):
        if "images_per_s" not in r:
            lines.append(f"| {r.get('workers')} | skipped: {r.get('skipped')} |")
            continue
        lines.append(f"| {r['workers']} | {_f(r['pin_memory'])} | {_f(r['persistent_workers'])} | "
                     f"{r['warmup_batches']} | {r['measured_batches']} | {_f(r['images_per_s'])} | "
                     f"{_f(r['first_batch_s'], 2)} |")
    for r in by("loader_advice"):
        lines += ["", f"The fastest step consumes {_f(r['needed_images_per_s'] / LOADER_TARGET)} images/s; "
                      f"{LOADER_TARGET}x that is {_f(r['needed_images_per_s'])}: {r['verdict']}."]
    for r in by("gpu_train_loop"):
        lines += ["", f"`train_segmentor`: {r['iters']} iterations, batch {r['batch_size']}, {r['mixed_precision']}: "
                      f"{_f(r['seconds_total'])} s, loss finite: {_f(r['loss_finite'])}; summary: {r['summary']}"]
    lines += ["", "## Projected wall time of the protocols on this GPU", "",
              "| protocol | model | precision | train images/s | train h | eval h | total h |",
              "|---|---|---|---|---|---|---|"]
    for r in by("projection"):
        lines.append(f"| {r['protocol']} | {r['method']} | {r['precision']} | {_f(r['train_images_per_s'])} | "
                     f"{_f(r['train_hours'], 2)} | {_f(r['eval_hours'], 2)} | {_f(r['hours'], 2)} |")
    voc = [r for r in by("projection") if r["protocol"] == "voc" and r["method"] == "lctd"]
    if voc:
        lines += ["", f"VOC protocol (LDVC, inductive + transductive + two evaluations): {voc[0]['minutes']:.0f} "
                      f"minutes against the ambition of {VOC_AMBITION_MINUTES:.0f} minutes"
                  + (" (tiny sizes: meaningless)" if tiny else "") + "."]
    failed = failed_checks(records)
    lines += ["", "## Checks", "", "All checks held (or were skipped, as recorded)." if not failed else
              "FAILED:\n" + "\n".join(f"- {f}" for f in failed), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in (RECORDS, REPORT, ENVIRONMENT, LOG):
        (out / name).unlink(missing_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    target = Path(tempfile.gettempdir()) / f"ldvc-device-check-site-py{sys.version_info[0]}{sys.version_info[1]}"
    how = install_wheels(args.wheels, target)
    import torch

    size = args.size if args.size != "auto" else ("paper" if torch.cuda.is_available() else "tiny")
    env = environment(size, how, sorted(p.name for p in args.wheels.glob("*.whl")) if args.wheels.is_dir() else [])
    (out / ENVIRONMENT).write_text(json.dumps(env, indent=2) + "\n")
    append_records(out, [env])
    total = args.budget or TOTAL_BUDGET[size]
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
                 "PYTHONPATH": os.pathsep.join(p for p in (str(target), str(REPO), os.environ.get("PYTHONPATH"))
                                               if p)}
    for part in args.parts:
        budget, minimum = BUDGETS[size][part]
        left = total - (time.perf_counter() - start) - REPORT_RESERVE_S
        seconds = min(budget, left)
        rec: dict[str, Any] = {"benchmark": "device_part", "part": part, "budget_s": seconds}
        if seconds < minimum:
            rec.update(status="skipped", reason=f"{max(left, 0):.0f} s left of the {total:.0f} s run, {minimum:.0f} "
                                                f"s needed to start")
            append_records(out, [rec])
            print(f"[device_check] {part}: skipped ({rec['reason']})", flush=True)
            continue
        print(f"[device_check] {part} (budget {seconds:.0f} s, t = {time.perf_counter() - start:.0f} s)", flush=True)
        cmd = [sys.executable, "-m", "benchmarks.device_check", "part", part, "--out", str(out), "--size", size,
               "--seconds", str(max(1.0, seconds - 5))]
        t0 = time.perf_counter()
        with open(out / LOG, "a") as log:
            log.write(f"\n===== {part} =====\n")
            log.flush()
            proc = subprocess.Popen(cmd, cwd=REPO, env=child_env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                code = proc.wait(timeout=seconds)
                rec.update(status="ok" if code == 0 else "failed", returncode=code)
            except subprocess.TimeoutExpired:
                _kill(proc)
                proc.wait()
                rec.update(status="stopped", reason=f"ran past its {seconds:.0f} s budget: what it measured is kept, "
                                                    f"the rest was skipped")
        rec["seconds"] = time.perf_counter() - t0
        if rec["status"] == "failed":
            errors = [r for r in read_records(out) if r.get("benchmark") == "part_error" and r.get("part") == part]
            rec["error"] = errors[-1]["error"] if errors else "see device_check.log"
        append_records(out, [rec])
        print(f"[device_check] {part}: {rec['status']} in {rec['seconds']:.0f} s", flush=True)
    records = read_records(out)
    derived = projections(records, size) + loader_advice(records)
    append_records(out, derived)
    records += derived
    (out / REPORT).write_text(render(records))
    failed = failed_checks(records)
    print(f"[device_check] wrote {out / RECORDS}, {out / REPORT}, {out / ENVIRONMENT}, {out / LOG} in "
          f"{time.perf_counter() - start:.0f} s" + ("; checks FAILED: " + "; ".join(failed) if failed else ""),
          flush=True)
    return 4 if failed else 0


def run_part(args: argparse.Namespace) -> int:
    import torch

    from benchmarks import device_parts
    from benchmarks.common import resolve_device, setup_threads
    from benchmarks.device_parts import PARTS, Budget

    device = resolve_device("auto")
    setup_threads(1 if device.type == "cpu" else None)
    out = args.out
    device_parts.SINK = (out, args.name)  # records are appended as they are made (device_parts.new_records)
    code = 0
    tail: list[dict[str, Any]] = []
    try:
        made = PARTS[args.name](args.size, device, Budget(args.seconds))
        tail += [r for r in made if not isinstance(made, device_parts._Flushing)]  # a plain list: not yet written
    except Exception as err:  # recorded, and the parent marks the part failed
        import traceback

        traceback.print_exc()
        tail, code = [{"benchmark": "part_error", "error": f"{type(err).__name__}: {err}"[:2000]}], 1
    modules = sorted({m.split(".")[0] for m in sys.modules if not m.startswith("_")})
    tail.append({"benchmark": "part_imports", "modules": modules, "forbidden": [m for m in FORBIDDEN if m in modules]})
    append_records(out, [{**r, "part": args.name} for r in tail])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return code


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="download the wheels the GPU machine lacks (needs a package index)")
    prep.add_argument("--wheels", type=Path, default=REPO / WHEELS_DIR, help=f"folder (default {WHEELS_DIR}/)")
    r = sub.add_parser("run", help="run the check and write everything into --out")
    r.add_argument("--out", type=Path, required=True, help="output directory (created; its check files are replaced)")
    r.add_argument("--wheels", type=Path, default=REPO / WHEELS_DIR, help=f"carried wheels (default {WHEELS_DIR}/)")
    r.add_argument("--size", choices=["auto", "paper", "tiny"], default="auto",
                   help="auto: paper on CUDA, tiny elsewhere")
    r.add_argument("--budget", type=float, help="seconds for the whole run (default 450 paper, 240 tiny)")
    r.add_argument("--parts", nargs="+", choices=PART_ORDER, default=list(PART_ORDER))
    part = sub.add_parser("part", help="(internal) one part, in its own process")
    part.add_argument("name", choices=PART_ORDER)
    part.add_argument("--out", type=Path, required=True)
    part.add_argument("--size", choices=["paper", "tiny"], required=True)
    part.add_argument("--seconds", type=float, required=True)
    args = p.parse_args(argv)
    if args.command == "run" and args.budget is not None and args.budget <= 0:
        p.error("--budget must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "prepare":
        prepare_wheels(args.wheels)
        return 0
    if args.command == "part":
        return run_part(args)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
