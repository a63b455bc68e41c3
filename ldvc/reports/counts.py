"""Paper-size counts for the cost table, computed once by the `count` stage (reports/counts.json).

What is counted (the cost table's groups (b) and (c), ldvc/reports/cost.py): ZegCLIP (the preset's
ZegCLIP baseline, ldvc/baseline.py) and LDVC built from the VOC and COCO-Stuff presets at the paper
size (ViT-B/16, 512x512 window, every class) with random weights on the meta device: learnable
parameters, GFLOPs per window (ldvc/model/flops.py) and the text encoder's GFLOPs once per
vocabulary; and one training step (forward + backward, the global batch, the seen classes) of the
VOC, COCO-Stuff and Context-59 presets' LDVC and ZegCLIP baseline, with the text encoder's share.

Why a stage of its own: building ViT-B/16 models and tracing their FLOPs takes about a minute on a
CPU and depends only on the code and the presets, never on the runs. As a DVC stage (deps: this
module, ldvc/model, ldvc/baseline.py, ldvc/config.py, the class lists and the presets; no params)
it runs once per code change, and the report stage, which re-runs after every experiment, reads
the file instead. A count that fails is recorded with its reason (`failures`), so the report says
why its cells are '-' instead of failing.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

PAPER_PRESETS: tuple[str, ...] = ("voc", "coco_stuff")
TEXT_SHARE_PRESETS: tuple[str, ...] = ("voc", "coco_stuff", "context59")
TEXT_BEFORE_AFTER: tuple[str, ...] = ("coco_stuff",)  # the text encoder's share also as it was before the shared prefix
# (method label, method: ldvc.baseline.method_config's "lctd" = LDVC, "zegclip" = the ZegCLIP baseline)
PAPER_MODELS: tuple[tuple[str, str], ...] = (("ZegCLIP", "zegclip"), ("LDVC", "lctd"))
COUNTS_FILE = "counts.json"
FORMAT = 1


@dataclass(frozen=True)
class ModelCount:
    """What counting one model gives: parameters, per-window GFLOPs (ZegCLIP's convention)."""

    learnable: int
    as_zegclip_counts: int | None  # None: not a zegclip model
    gflops: float  # image encoder + decoder, one window, one multiply-add = one FLOP
    text_gflops: float  # the text encoder, once per vocabulary
    window: int
    classes: int


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


def paper_config(preset: str, method: str) -> Any:
    """The preset's config (presets/<preset>.yaml over the defaults) as LDVC ("lctd") or as its ZegCLIP
    baseline ("zegclip": ldvc/baseline.py, the definition the tables' `zegclip` ablation uses)."""
    from ldvc.baseline import method_config
    from ldvc.config import Config, config_from_dict, variant_dict
    from ldvc.presets import load_preset

    return method_config(config_from_dict(variant_dict(Config().to_dict(), load_preset(preset)), variant=True),
                         method)


@cache
def count_paper_model(preset: str, method: str) -> ModelCount:
    """ZegCLIP / LDVC at a preset's paper size (512x512 window, every class of the dataset)."""
    from ldvc.data.classes import dataset_classes

    cfg = paper_config(preset, method)
    return count_model(cfg, dataset_classes(cfg.data), cfg.eval.window)


@dataclass(frozen=True)
class StepCount:
    """GFLOPs of one training step at a preset's paper size (global batch, seen classes), by part."""

    total: float
    text: float  # the text encoder, causal prefix once per template (what runs)
    text_unshared: float | None  # the same with the prefix computed per class (before); None: not counted
    batch: int
    classes: int
    templates: int

    @property
    def share(self) -> float:
        return self.text / self.total

    @property
    def share_unshared(self) -> float | None:
        if self.text_unshared is None:
            return None
        return self.text_unshared / (self.total - self.text + self.text_unshared)


def _meta_model(cfg: Any, names: list[str]) -> Any:
    import open_clip
    import torch

    from ldvc.model.build import build_segmentor
    from ldvc.model.clip_loader import register_configs

    register_configs()
    with _quiet(), torch.device("meta"):
        clip_model = open_clip.create_model(cfg.clip.model, pretrained=None, device="meta")
    return build_segmentor(cfg, clip_model, names)


@cache
def count_training_steps(preset: str, before: bool) -> dict[str, StepCount]:
    """One training step (forward + backward, the global batch on one device, the seen classes) of the
    preset's LDVC and ZegCLIP baseline, counted on the meta device; with `before`, LDVC's text encoder
    also with its causal prefix computed per class. The two share the image encoder (counted once)."""
    import torch

    from ldvc.data.classes import dataset_classes, default_unseen
    from ldvc.model.flops import count_flops, segmentor_flops

    cfg = paper_config(preset, "lctd")
    names = dataset_classes(cfg.data)
    unseen = default_unseen(cfg.data.dataset) if cfg.split.unseen == "default" else list(cfg.split.unseen)
    seen = [i for i, n in enumerate(names) if n not in unseen]
    ids = torch.tensor(seen)
    S, B = cfg.data.image_size, cfg.train.batch_size
    model = _meta_model(cfg, names)
    parts = segmentor_flops(model, S, batch=B, class_ids=ids, backward=True)
    unshared = None
    if before and model.text_encoder.shares_prefix:
        model.text_encoder.shares_prefix = False
        unshared = count_flops(model.text_encoder, ids, backward=True) / 1e9
    elif before:
        unshared = parts["text_encoder"] / 1e9
    zcfg = paper_config(preset, "zegclip")
    zparts = segmentor_flops(_meta_model(zcfg, names), S, batch=B, class_ids=ids, backward=True,
                             parts=("text_encoder", "decoder"))
    meta = (B, len(seen), len(cfg.prompt.templates))
    return {"lctd": StepCount(parts["total"] / 1e9, parts["text_encoder"] / 1e9, unshared, *meta),
            "zegclip": StepCount((parts["image_encoder"] + zparts["total"]) / 1e9, zparts["text_encoder"] / 1e9,
                                 None, *meta)}


# --------------------------------------------------------------------------------------------
# The record: reports/counts.json
# --------------------------------------------------------------------------------------------


class CountsError(ValueError):
    """reports/counts.json cannot be read: names the file, what was wrong and the fix."""


@dataclass
class PaperCounts:
    """Every paper-size count the cost table shows, and why any is missing."""

    models: dict[tuple[str, str], ModelCount] = field(default_factory=dict)  # (preset, method) ->
    steps: dict[str, dict[str, StepCount]] = field(default_factory=dict)  # preset -> method ->
    failures: dict[str, str] = field(default_factory=dict)  # what -> "ErrorType: message"

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT,
                "models": {f"{p}/{m}": asdict(c) for (p, m), c in self.models.items()},
                "steps": {p: {m: asdict(s) for m, s in by.items()} for p, by in self.steps.items()},
                "failures": dict(self.failures)}


def _what(kind: str, preset: str, method: str | None = None) -> str:
    label = dict((d, m) for m, d in PAPER_MODELS).get(method or "", method)
    return f"{label} at the {preset} paper size" if kind == "model" else f"the {preset} training step"


def count_paper(progress: bool = False) -> PaperCounts:
    """Count every paper-size model and training step; a failing count is recorded, not raised."""
    from tqdm.auto import tqdm

    jobs = [("model", p, m) for p in PAPER_PRESETS for _, m in PAPER_MODELS] + [
        ("step", p, None) for p in TEXT_SHARE_PRESETS]
    out = PaperCounts()
    for kind, preset, method in tqdm(jobs, desc="count", unit="model", disable=not progress):
        try:
            if kind == "model":
                out.models[(preset, method)] = count_paper_model(preset, method)
            else:
                out.steps[preset] = count_training_steps(preset, before=preset in TEXT_BEFORE_AFTER)
        except Exception as err:  # counting must never break the report: record why instead
            out.failures[_what(kind, preset, method)] = f"{type(err).__name__}: {str(err)[:200]}"
    return out


def write_counts(counts: PaperCounts, path: Path) -> None:
    from ldvc.files import write_json_atomic

    write_json_atomic(Path(path), counts.to_json())


def read_counts(path: Path) -> PaperCounts:
    """reports/counts.json as the count stage wrote it; CountsError naming the file and the fix."""
    path = Path(path)
    fix = "re-create it with `dvc repro count` (or `python -m stages.count`)"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CountsError(f"{path}: not found; {fix}") from None
    except (OSError, json.JSONDecodeError) as err:
        raise CountsError(f"{path}: not readable JSON ({err}); {fix}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CountsError(f"{path}: expected a counts record of format {FORMAT}, found {found!r}; {fix}")
    try:
        models = {tuple(k.split("/", 1)): ModelCount(**v) for k, v in data["models"].items()}
        steps = {p: {m: StepCount(**s) for m, s in by.items()} for p, by in data["steps"].items()}
        failures = {str(k): str(v) for k, v in data.get("failures", {}).items()}
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise CountsError(f"{path}: malformed counts record ({type(err).__name__}: {err}); {fix}") from None
    return PaperCounts(models, steps, failures)  # type: ignore[arg-type]
