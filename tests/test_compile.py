"""`train.compile`: the model's training forward traces into ONE graph (no graph breaks), for both
decoders. Measured before this was fixed: 7 breaks from `.item()` checks in the text encoder's
forward. torch._dynamo.explain traces without compiling kernels, so this runs on the CPU."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo as dynamo

from ldvc.config import config_from_dict, load_config, variant_dict
from ldvc.model.build import build_segmentor
from ldvc.model.clip_loader import create_clip


@pytest.mark.parametrize("decoder,extra", [("lctd", {}), ("zegclip", {"prompt": {"text_depth": 0}})])
def test_training_forward_has_no_graph_breaks(decoder, extra):
    cfg = load_config("params.yaml").to_dict()
    cfg = config_from_dict(variant_dict(cfg, {"decoder": {"type": decoder}, **extra}), variant=True)
    torch.manual_seed(0)
    model = build_segmentor(cfg, create_clip("ldvc-tiny-vit"), ["red", "blue", "striped red", "dotted teal"])
    model.train()
    try:
        explained = dynamo.explain(model)(torch.randn(2, 3, 64, 64), torch.tensor([0, 2, 3]))
    finally:
        dynamo.reset()
    reasons = [str(b.reason)[:200] for b in explained.break_reasons]
    assert explained.graph_break_count == 0 and explained.graph_count == 1, reasons


def test_compile_watch_counts_graphs_breaks_and_recompile_limit_hits() -> None:
    """What a training run records about compilation (ldvc/train/compile_watch.py): graphs, graph breaks,
    and the recompile-limit hits after which dynamo silently runs the code eagerly."""
    from ldvc.train.compile_watch import CompileWatch

    def f(x):
        y = x * 2
        if x.sum() > 0:  # data-dependent branch: a graph break
            y = y + 1
        return y.sum()

    dynamo.reset()
    watch = CompileWatch()
    try:
        with dynamo.config.patch(recompile_limit=2):
            compiled = torch.compile(f, backend=watch.backend("eager"), dynamic=False)
            compiled(torch.ones(3))
            first = watch.report()
            assert first["graphs"] >= 2 and first["graph_breaks"] >= 1 and first["recompile_limit_hits"] == 0
            for n in range(4, 8):  # every new shape recompiles (shape-static), past the limit of 2
                compiled(torch.ones(n))
            report = watch.report()
        assert report["recompile_limit_hits"] >= 1 and "recompile_limit" in report["recompile_limit_messages"][0]
    finally:
        watch.close()
        dynamo.reset()


def test_a_training_run_records_compilation(tmp_path, monkeypatch) -> None:
    """train.compile: the run's summary says how many graphs were compiled, breaks, recompile-limit hits
    and the compiled FlexAttention's signatures and fallbacks (CPU: aot_eager instead of inductor)."""
    from fixtures.engine import tiny_setup

    from ldvc.train import compile_watch
    from ldvc.train.loop import train_segmentor

    real = compile_watch.CompileWatch.compile
    monkeypatch.setattr(compile_watch.CompileWatch, "compile",
                        lambda self, model, backend: real(self, model, "aot_eager"))
    cfg, split, root, _, _ = tiny_setup(tmp_path, {"train": {"iters": 2, "checkpoint_every": 2, "compile": True},
                                                   "transductive": {"init_iter": 2, "iters": 2}})
    try:
        summary = train_segmentor(cfg, "inductive", split, root, None, tmp_path / "run")
    finally:
        dynamo.reset()
    rec = summary["compile"]
    assert rec["graphs"] == 1 and rec["graph_breaks"] == 0 and rec["recompile_limit_hits"] == 0, rec
    assert rec["flex_fallbacks_to_blocks"] == 0 and summary["last_loss"] is not None
