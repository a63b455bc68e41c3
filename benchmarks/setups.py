"""Model setups shared by the full-model benchmarks (throughput, train_step, gpu): the configs, the
class split, the segmentors on random CLIP weights, and the step closures that are timed.

- `paper_config`: the paper setup from the dataclass defaults overlaid with presets/<preset>.yaml
  (CLIP ViT-B/16, 512 px, ZegCLIP's decoder size, the preset's batch and mixed precision); it
  does not read params.yaml, so the result is the same in every checkout.
- `default_config`: params.yaml (the embedded small setup: the pipeline's small CLIP at 64 px).
- `build_model`: open_clip CLIP with RANDOM weights (speed does not depend on their values and no
  hub is reachable here) + `ldvc.model.build.build_segmentor`, seeded, so both decoders get the
  same CLIP.
- `make_train_step`: one optimizer step as ldvc/train/loop.py does it (forward with the seen
  classes under the config's autocast, sigmoid focal + dice loss at the input size, backward,
  AdamW); `make_encoder_step`: forward + backward of the prompted image encoder alone (its share
  of the step); `matmul_fn`: a square matrix product whose rate is the machine's reference.
Our choices: random images (normalised already) and random seen-class targets with 10% ignored
pixels; the loss normaliser is the batch's own (one process).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ldvc.config import Config, config_from_dict, deep_merge, load_config, read_yaml
from ldvc.data.classes import dataset_classes, default_unseen

REPO = Path(__file__).resolve().parent.parent
# bf16 dense matrix-product rate of the GPU machine's H200 (toolchain.md, measured ~790 TFLOP/s).
H200_BF16_TFLOPS = 790.0


def paper_config(decoder: str, preset: str = "voc") -> Config:
    """Dataclass defaults + presets/<preset>.yaml + decoder.type (no params.yaml involved)."""
    path = REPO / "presets" / f"{preset}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; presets are {sorted(p.stem for p in path.parent.glob('*.yaml'))}")
    overlay = read_yaml(path.read_text(), str(path)) or {}
    return config_from_dict(deep_merge(deep_merge(Config().to_dict(), overlay), {"decoder": {"type": decoder}}))


def default_config(decoder: str, params: Path = REPO / "params.yaml") -> Config:
    """params.yaml + decoder.type."""
    cfg = load_config(params)
    return config_from_dict(deep_merge(cfg.to_dict(), {"decoder": {"type": decoder}}))


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
    clip_model = create_clip(cfg.clip.model, None)
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


def make_train_step(model: nn.Module, cfg: Config, seen: list[int], device: torch.device,
                    batch: int) -> Callable[[], float]:
    """One optimizer step on a fixed random batch (see the module docstring); returns the loss."""
    from ldvc.model.losses import segmentation_loss
    from ldvc.train.optim import build_optimizer

    images, target = random_batch(cfg, batch, seen, device)
    class_ids = torch.tensor(seen, device=device)
    optimizer = build_optimizer(model, cfg.train)
    amp = autocast_dtype(cfg, device)

    def step() -> float:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(images, class_ids)  # (B, C_seen, S, S)
        loss, _ = segmentation_loss(logits.float(), target, cfg.loss)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

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

