"""Model setups shared by the full-model benchmarks (throughput, train_step, gpu): the configs, the
class split, the segmentors on random CLIP weights, and the step closures that are timed.

- `paper_config`: the paper setup from the dataclass defaults overlaid with presets/<preset>.yaml
  (CLIP ViT-B/16, 512 px, ZegCLIP's decoder size, the preset's batch and mixed precision); it
  does not read params.yaml, so the result is the same in every checkout. "zegclip" is the
  ZegCLIP BASELINE of the preset as the tables' `zegclip` ablation builds it (ldvc/baseline.py:
  decoder.type zegclip AND no text prompts, so its step runs no text encoder), not LDVC with
  ZegCLIP's decoder.
- `default_config`: params.yaml (the embedded small setup: the pipeline's small CLIP at 64 px).
- `build_model`: open_clip CLIP with RANDOM weights (speed does not depend on their values and no
  hub is reachable here) + `ldvc.model.build.build_segmentor`, seeded, so both decoders get the
  same CLIP.
- `make_train_step`: THE training step, ldvc.train.loop.TrainStep (what train_segmentor runs, its
  host read included: batches copied from pinned host memory, ImageNet normalisation, label
  table, forward with the seen classes under the accelerator's autocast, ZegCLIP's loss, the
  divergence check, backward, AdamW) on one Accelerator (`make_step_accelerator`);
  `make_encoder_step`: forward + backward of the prompted image encoder alone (its share of the
  step); `matmul_fn`: a square matrix product whose rate is the machine's reference.
Our choices: random images in [0, 1] and random seen-class labels (dataset ids) with 10% ignored
pixels, the same batch every step; one process.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ldvc.baseline import method_config
from ldvc.config import Config, config_from_dict, deep_merge, load_config, read_yaml, variant_dict
from ldvc.data.classes import dataset_classes, default_unseen

REPO = Path(__file__).resolve().parent.parent


def paper_config(decoder: str, preset: str = "voc") -> Config:
    """Dataclass defaults + presets/<preset>.yaml as LDVC ("lctd") or its ZegCLIP baseline ("zegclip"),
    no params.yaml involved."""
    path = REPO / "presets" / f"{preset}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; presets are {sorted(p.stem for p in path.parent.glob('*.yaml'))}")
    overlay = read_yaml(path.read_text(), str(path)) or {}
    merged = variant_dict(Config().to_dict(), overlay)  # one model: no ablation / cross-dataset / target sections
    return method_config(config_from_dict(merged, variant=True), decoder)


def default_config(decoder: str, params: Path = REPO / "params.yaml") -> Config:
    """params.yaml as LDVC ("lctd") or its ZegCLIP baseline ("zegclip")."""
    return method_config(load_config(params), decoder)


def with_overrides(cfg: Config, overrides: dict) -> Config:
    return config_from_dict(deep_merge(cfg.to_dict(), overrides))


def split_ids(cfg: Config) -> tuple[list[str], list[int]]:
    """All class names of the dataset and the seen class ids (the training classes)."""
    names = dataset_classes(cfg.data)
    unseen = default_unseen(cfg.data.dataset) if cfg.split.unseen == "default" else list(cfg.split.unseen)
    missing = [u for u in unseen if u not in names]
    if missing:
        raise ValueError(f"split.unseen names {missing} are not classes of {cfg.data.dataset}")
    return names, [i for i, n in enumerate(names) if n not in unseen]


def build_model(cfg: Config, names: list[str], device: torch.device, seed: int = 0) -> nn.Module:
    """A segmentor of `cfg` on a random-weight CLIP (same seed -> same CLIP for both decoders)."""
    from ldvc.model.build import build_segmentor
    from ldvc.model.clip_loader import create_clip

    torch.manual_seed(seed)
    chosen = getattr(cfg.clip, "activation", "auto")  # the preset's (OpenAI's CLIP: QuickGELU)
    activation = None if chosen == "auto" else chosen
    clip_model = create_clip(cfg.clip.model, None, activation)
    torch.manual_seed(seed + 1)
    return build_segmentor(cfg, clip_model, names).to(device)


def autocast_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """The autocast dtype training uses (train.mixed_precision), None for float32 or on the CPU."""
    if device.type != "cuda":
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.mixed_precision)


def random_batch(cfg: Config, batch: int, seen: list[int], device: torch.device,
                 seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """images (B, 3, S, S) and targets (B, S, S) in the seen index space, 10% ignored (255)."""
    S = cfg.data.image_size
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, S, S, generator=gen)
    target = torch.randint(0, len(seen), (batch, S, S), generator=gen)
    target[torch.rand(batch, S, S, generator=gen) < 0.1] = 255
    return images.to(device), target.to(device)


def make_step_accelerator(cfg: Config, batch: int, mixed_precision: str | None = None):  # -> Accelerator
    """One process's Accelerator for steps of `batch` images (the config's mixed precision unless given)."""
    from ldvc.train.loop import make_accelerator

    accelerator, _ = make_accelerator(mixed_precision or cfg.train.mixed_precision, batch, batch,
                                      find_unused_parameters=False)
    return accelerator


def host_batch(cfg: Config, batch: int, seen: list[int], device: torch.device, seed: int = 1) -> dict:
    """A loader-like batch on the host (pinned on CUDA): images (B, 3, S, S) in [0, 1], labels (B, S, S)
    of seen DATASET ids with 10% ignored (255), no padding."""
    S = cfg.data.image_size
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, S, S, generator=gen)
    label = torch.tensor(seen)[torch.randint(0, len(seen), (batch, S, S), generator=gen)]
    label[torch.rand(batch, S, S, generator=gen) < 0.1] = 255
    out = {"image": images, "label": label, "pad": torch.zeros(batch, S, S, dtype=torch.bool)}
    if device.type == "cuda":
        out = {k: v.pin_memory() for k, v in out.items()}
    return out


def make_train_step(model: nn.Module, cfg: Config, names: list[str], seen: list[int], device: torch.device,
                    batch: int, accelerator=None, compile_backend: str | None = None,
                    watch=None) -> Callable[[], torch.Tensor]:
    """The real training step (ldvc.train.loop.TrainStep) on a fixed batch; returns the loss (a device
    tensor: reading it would add a host synchronisation the training loop does not have).
    `compile_backend`: compile the prepared model first (through `watch`, a CompileWatch, when given)."""
    import itertools

    from ldvc.train.loop import TrainStep
    from ldvc.train.optim import build_optimizer

    accelerator = accelerator or make_step_accelerator(cfg, batch)
    optimizer = build_optimizer(model, cfg.train)
    prepared, optimizer = accelerator.prepare(model, optimizer)
    if compile_backend is not None:
        prepared = (watch.compile(prepared, compile_backend) if watch is not None
                    else torch.compile(prepared, backend=compile_backend, dynamic=False))
    split = {"classes": list(names), "seen": list(seen), "unseen": [i for i in range(len(names)) if i not in seen]}
    run = TrainStep(accelerator, prepared, optimizer, cfg, "inductive", split, accumulation=1)
    batches = itertools.repeat(host_batch(cfg, batch, seen, device))
    counter = itertools.count()

    def step() -> torch.Tensor:
        prepared.train()
        loss, _ = run(batches, next(counter))
        return loss

    return step


def make_encoder_step(model: nn.Module, cfg: Config, device: torch.device, batch: int) -> Callable[[], None]:
    """Forward + backward of the prompted image encoder alone (gradients reach the prompts)."""
    encoder = model.image_encoder
    images, _ = random_batch(cfg, batch, [0], device, seed=2)
    amp = autocast_dtype(cfg, device)
    params = [p for p in encoder.parameters() if p.requires_grad]

    def step() -> None:
        for p in params:
            p.grad = None
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            patches, global_embedding = encoder(images)
        total = patches.float().sum() + global_embedding.float().sum()
        if total.requires_grad:  # no visual prompts: nothing to differentiate
            total.backward()

    return step


def matmul_fn(n: int, device: torch.device, dtype: torch.dtype = torch.float32) -> Callable[[], None]:
    """A square n x n matrix product into a preallocated output: 2 n^3 FLOPs per call."""
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)

    def mm() -> None:
        torch.mm(a, b, out=out)

    return mm


def dtype_name(dtype: torch.dtype | None) -> str:
    return str(dtype or torch.float32).removeprefix("torch.")

