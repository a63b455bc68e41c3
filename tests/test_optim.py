"""AdamW parameter groups and the poly + warm-up schedule (ZegCLIP's optimiser settings)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ldvc.config import TrainConfig
from ldvc.train.optim import WARMUP_RATIO, build_optimizer, build_scheduler, param_groups, poly_warmup_lr


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(4, 4)  # frozen "CLIP"
        self.backbone.requires_grad_(False)
        self.visual_prompt = nn.Parameter(torch.zeros(3, 4))
        self.decoder = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        self.extra = nn.Linear(4, 2)  # learnable but neither prompt nor decoder


def _groups():
    cfg = TrainConfig(lr=1e-3, lr_mult=10.0, weight_decay=0.01)
    model = _Toy()
    by_param = {}
    for g in param_groups(model, cfg):
        for p in g["params"]:
            by_param[id(p)] = g
    return model, by_param


def test_lr_mult_and_zegclips_effective_decay_rule():
    model, g = _groups()
    assert id(model.backbone.weight) not in g  # frozen parameters are not optimised
    assert g[id(model.visual_prompt)]["lr"] == pytest.approx(1e-2)
    assert g[id(model.visual_prompt)]["weight_decay"] == 0.01
    assert g[id(model.decoder[0].weight)]["lr"] == pytest.approx(1e-2)
    # mmcv applies only the first (longest) matching custom key, 'backbone' / 'head' (lr x10, decay x1):
    # ZegCLIP's 'norm' / 'ln' decay_mult 0 never reaches its learnable norms and biases
    assert g[id(model.decoder[0].bias)]["weight_decay"] == 0.01
    assert g[id(model.decoder[1].weight)]["weight_decay"] == 0.01  # LayerNorm
    assert g[id(model.extra.weight)]["lr"] == pytest.approx(1e-3)
    assert g[id(model.extra.weight)]["weight_decay"] == 0.01


def test_no_learnable_parameters_is_an_error():
    m = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no learnable parameters"):
        param_groups(m, TrainConfig())


def test_poly_schedule_with_warmup():
    assert poly_warmup_lr(1.0, 0, 100, 10, 0.9, 1e-6) == pytest.approx(WARMUP_RATIO)  # mmseg: starts at ratio
    assert poly_warmup_lr(1.0, 10, 100, 10, 0.9, 1e-6) == pytest.approx((1 - 1e-6) * 0.9**0.9 + 1e-6)
    assert poly_warmup_lr(1.0, 100, 100, 10, 0.9, 1e-6) == pytest.approx(1e-6)
    cfg = TrainConfig(lr=1e-3, lr_mult=10.0, warmup_iters=5, poly_power=1.0, min_lr=0.0)
    model = _Toy()
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=20)
    seen = []
    for _ in range(20):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    mults = [g["lr_mult"] for g in opt.param_groups]
    for lrs in seen:  # every group follows the same shape, scaled by its multiplier
        for lr, mult in zip(lrs, mults):
            assert lr == pytest.approx(lrs[0] / mults[0] * mult)
    first = [s[0] for s in seen]
    assert first[1] < first[4] < first[5]  # warm-up rises
    assert first[5] > first[10] > first[19]  # then decays linearly (power 1)
    assert first[10] == pytest.approx(1e-3 * mults[0] * (1 - 10 / 20))
    # the scheduler state round-trips (resume) and holds only plain numbers
    state = sched.state_dict()
    sched2 = build_scheduler(build_optimizer(_Toy(), cfg), cfg, total_steps=20)
    sched2.load_state_dict(state)
    assert sched2.get_last_lr() == sched.get_last_lr()
