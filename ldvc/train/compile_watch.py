"""What torch.compile did while a model trained: graphs compiled, graph breaks, recompile-limit hits.

No silent slow path (issue 18): a compiled model that breaks into several graphs, recompiles for
every new shape, or passes dynamo's recompile limit (after which dynamo runs that code EAGERLY, with
a log warning only) trains slower than the measured step, so a training run records these facts
(`train_segmentor`'s summary, "compile") and the device check fails on them.

How it is counted, with public or stable hooks only:
- graphs: a backend wrapper counts every graph dynamo hands to the real backend (inductor on a GPU;
  any torch backend name works, e.g. "aot_eager" for a CPU check that needs no C++ compiler);
- recompile-limit hits: dynamo logs "hit config.recompile_limit" (older releases:
  "cache_size_limit") on the `torch._dynamo` logger; a handler counts those records;
- graph breaks: the entries of torch._dynamo.utils.counters["graph_break"] (older releases) and
  counters["unimplemented"] (torch 2.14 files graph breaks there) that are not recompile-limit
  events; a torch without `counters` reports None, not 0.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import torch

_LIMIT_RE = re.compile(r"hit config\.(recompile_limit|cache_size_limit|accumulated_\w+_limit)")


class _LimitHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.hits: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record must not break training
            return
        if _LIMIT_RE.search(message):
            self.hits.append(message.splitlines()[0][:300])


def _break_counts() -> dict[str, int] | None:
    """Graph-break reasons -> counts so far; {} when dynamo has recorded none; None when this torch keeps
    no counters at all (its torch._dynamo.utils has no `counters`)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover - depends on the torch version
        return None
    out = {str(k)[:300]: int(v) for k, v in counters.get("graph_break", {}).items()}
    out.update({str(k)[:300]: int(v) for k, v in counters.get("unimplemented", {}).items()
                if "recompile limit" not in str(k).lower() and "cache size limit" not in str(k).lower()})
    return out


class CompileWatch:
    """Counts graphs, graph breaks and recompile-limit hits from creation to `report()`."""

    def __init__(self) -> None:
        self.graphs = 0
        self._handler = _LimitHandler()
        logging.getLogger("torch._dynamo").addHandler(self._handler)
        self._breaks_before = _break_counts() or {}

    def backend(self, inner: str | Callable = "inductor") -> Callable:
        """A dynamo backend that counts the graphs it is given and compiles them with `inner`."""
        from torch._dynamo import lookup_backend

        compile_fn = lookup_backend(inner) if isinstance(inner, str) else inner

        def counting(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable:
            self.graphs += 1
            return compile_fn(gm, example_inputs)

        return counting

    def compile(self, model: torch.nn.Module, backend: str = "inductor") -> torch.nn.Module:
        """torch.compile(model) through the counting backend (shape-static: a new shape is a recompile)."""
        return torch.compile(model, backend=self.backend(backend), dynamic=False)

    def report(self) -> dict[str, Any]:
        now = _break_counts()
        breaks: dict[str, int] | None = None
        if now is not None:
            breaks = {k: v - self._breaks_before.get(k, 0) for k, v in now.items() if v > self._breaks_before.get(k, 0)}
        return {"graphs": self.graphs,
                "graph_breaks": None if breaks is None else sum(breaks.values()),
                "graph_break_reasons": None if breaks is None else [k.splitlines()[0] for k in breaks][:5],
                "recompile_limit_hits": len(self._handler.hits), "recompile_limit_messages": self._handler.hits[:3]}

    def close(self) -> None:
        logging.getLogger("torch._dynamo").removeHandler(self._handler)
