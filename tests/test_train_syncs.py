"""The training step reads the device at most once per optimizer step outside logging steps
(issue 18): on a GPU every such read (`.item()`, `bool(t)`, `float(t)`, `.tolist()`, `.cpu()`,
`.numpy()`) stalls the host until the queued kernels finish. Counted here on the CPU with a
TorchFunctionMode that sees each of those calls; the one allowed read is the divergence check.
Also: DDP's unused-parameter search is on exactly when a learnable parameter is unused, and the
loader's worker count is derived from the cores per process."""

from __future__ import annotations

import traceback

import pytest
import torch
from fixtures.engine import tiny_setup
from torch.overrides import TorchFunctionMode

HOST_READS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy"}


class HostReads(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.where: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            stack = traceback.extract_stack()[:-1]
            # AdamW reads its `step` counters, which live on the HOST also on a GPU (torch keeps them
            # there unless capturable/fused): not a device synchronisation.
            if not any("/torch/optim/" in f.filename for f in stack):
                self.count += 1
                frames = [f for f in stack if "/torch/" not in f.filename]
                self.where.append(f"{name} {frames[-1].filename.rsplit('/', 2)[-1]}:{frames[-1].lineno}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("setting_overrides", [{}, {"train": {"grad_clip": 1.0, "batch_size": 4,
                                                              "per_device_batch": 2}}])
def test_at_most_one_host_read_per_optimizer_step(tmp_path, monkeypatch, setting_overrides):
    from ldvc.train import loop

    overrides = {"train": {"iters": 5, "log_every": 5, "checkpoint_every": 5, "num_workers": 1},
                 "transductive": {"init_iter": 5}}
    cfg, split, root, _, _ = tiny_setup(tmp_path, _merge(overrides, setting_overrides))
    reads = HostReads()
    marks: list[tuple[int, int]] = []
    real_call = loop.TrainStep.__call__

    def marked(self, batches, step):
        marks.append((step, reads.count))
        return real_call(self, batches, step)

    monkeypatch.setattr(loop.TrainStep, "__call__", marked)
    with reads:
        summary = loop.train_segmentor(cfg, "inductive", split, root, None, tmp_path / "run")
    assert summary["step"] == 5 and summary["last_loss"] is not None
    # steps 0..3 are neither logging nor checkpoint steps (both happen after step 4); step 0 also
    # checks the class ids once for the run (their min and max: two reads)
    per_step = [b - a for (_, a), (_, b) in zip(marks, marks[1:])]
    assert per_step == [3, 1, 1, 1], (per_step, reads.where[marks[0][1]:marks[2][1]])
    assert reads.where[marks[1][1]].startswith("__float__ loop.py")  # the divergence check


def _merge(a: dict, b: dict) -> dict:
    from ldvc.config import deep_merge

    return deep_merge(a, b)


def test_ddp_searches_unused_parameters_only_where_some_are_unused(tmp_path):
    from ldvc.model.build import build_model
    from ldvc.train.loop import unused_learnable_parameters

    cfg, split, _, _, _ = tiny_setup(tmp_path)
    model = build_model(cfg, None, split["classes"])
    seen = torch.tensor(split["seen"])
    assert unused_learnable_parameters(model, cfg.data.image_size, seen) == []
    model.decoder.spare = torch.nn.Parameter(torch.zeros(3))  # learnable, never used by the forward
    assert unused_learnable_parameters(model, cfg.data.image_size, seen) == ["decoder.spare"]
    assert model.decoder.spare.device.type == "cpu" and model.training  # the probe left the model as it was


def test_loader_workers_follow_the_cores_per_process():
    from ldvc.train.layout import LayoutError, loader_workers

    assert loader_workers(3, 8) == 3  # set: kept
    assert loader_workers("auto", 1, cores=16) == 15
    assert loader_workers("auto", 8, local_processes=8, cores=64) == 7
    assert loader_workers("auto", 4, local_processes=4, cores=4) == 0  # one core each: no worker
    assert loader_workers("auto", 1, cores=128) == 16  # capped
    with pytest.raises(LayoutError, match="train.num_workers"):
        loader_workers(-1, 1)
