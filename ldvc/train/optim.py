"""Optimizer and learning-rate schedule of the ZegCLIP protocol (protocol.md, "ZegCLIP settings").

- AdamW. The learnable parameters (prompts, decoder, text adapter) get lr x `train.lr_mult`
  (ZegCLIP: x10 for the backbone's prompts and the head); anything else learnable keeps the base lr.
- Weight decay `train.weight_decay` on EVERY learnable parameter, norms and biases included. That
  is what ZegCLIP's optimizer really does: its paramwise_cfg lists custom_keys 'backbone' (lr x10),
  'text_encoder' (lr x0), 'head' (lr x10), 'norm' and 'ln' (decay x0), but mmcv's
  DefaultOptimizerConstructor applies only the FIRST key found in a parameter's name, longest key
  first, so 'backbone' / 'head' win for every learnable parameter (backbone.prompt_norm.weight,
  decode_head.*.norm2.bias, ...) and the decay_mult 0 of 'norm'/'ln' never applies to them.
- mmcv's poly schedule with linear warm-up, per parameter group:
  lr_g(t) = (base_g - min_lr) * (1 - t/T)^power + min_lr, and during the first W iterations
  lr_g(t) * (1 - (1 - t/W) * (1 - warmup_ratio)) (mmseg's 'linear' warm-up, ratio 1e-6).
  min_lr is absolute and shared by all groups, as in mmcv's PolyLrUpdaterHook.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ldvc.config import TrainConfig

# Substrings of parameter names that mark the parts ZegCLIP trains at lr x lr_mult.
HIGH_LR_KEYS: tuple[str, ...] = ("prompt", "decoder", "adapter", "head")
WARMUP_RATIO = 1e-6


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Up to two AdamW groups, lr x lr_mult (prompts/decoder) and base lr, both decayed; empty ones dropped.

    Each group carries "name" and "lr_mult" for logging and tests.
    """
    buckets: dict[bool, list[torch.nn.Parameter]] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:  # shared parameters are listed once
            continue
        seen.add(id(p))
        buckets.setdefault(any(k in name.lower() for k in HIGH_LR_KEYS), []).append(p)
    if not buckets:
        raise ValueError("the model has no learnable parameters (requires_grad=False everywhere)")
    groups = []
    for high, params in sorted(buckets.items(), reverse=True):
        mult = cfg.lr_mult if high else 1.0
        groups.append({"params": params, "lr": cfg.lr * mult, "weight_decay": cfg.weight_decay,
                       "lr_mult": mult, "name": "mult" if high else "base"})
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)


def poly_warmup_lr(base_lr: float, step: int, total: int, warmup: int, power: float, min_lr: float) -> float:
    """The learning rate at optimizer step `step` (0-based) of a run of `total` steps."""
    progress = min(step, total) / max(total, 1)
    lr = (base_lr - min_lr) * (1.0 - progress) ** power + min_lr
    if warmup > 0 and step < warmup:
        lr *= 1.0 - (1.0 - step / warmup) * (1.0 - WARMUP_RATIO)
    return lr


class PolyWarmupLR(torch.optim.lr_scheduler.LRScheduler):
    """mmcv's poly schedule with linear warm-up; its state is plain numbers (weights_only-safe)."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                 power: float, min_lr: float, last_epoch: int = -1) -> None:
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.power = power
        self.min_lr = min_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [poly_warmup_lr(base, self.last_epoch, self.total_steps, self.warmup_steps, self.power,
                               self.min_lr) for base in self.base_lrs]


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> PolyWarmupLR:
    return PolyWarmupLR(optimizer, total_steps, cfg.warmup_iters, cfg.poly_power, cfg.min_lr)


def learnable_parameters(model: nn.Module) -> Iterable[nn.Parameter]:
    return (p for p in model.parameters() if p.requires_grad)
