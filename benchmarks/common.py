"""Timing and memory helpers shared by the benchmark scripts (protocol.md / toolchain.md: "Benchmarks
compare ratios measured in one run").

Our choices:
- Side-by-side timing: the functions under comparison run round-robin (one call of each per round,
  the order rotated every round), after warm-up, and each one's time is the MEDIAN over rounds.
  On a shared, noisy machine contention then hits every contender alike, so their ratios hold
  better than absolute times. A time cap stops starting new rounds (at least one timed round).
- Peak memory on the CPU: torch's own profiler with profile_memory=True. While it runs, torch's CPU
  allocator reports every allocation and free (pointer, size) to it. Replaying those events in time
  order, the peak is the largest total of blocks allocated during the call and not yet freed: the
  extra memory the call needed above what already existed (its inputs, the model). Frees of blocks
  that existed before the call are not credited. tracemalloc cannot see torch's allocator (and
  the allocator's own running total, `total_allocated`, drifts across profiling sessions). The
  events are read from the profiler's event tree (`kineto_results.experimental_event_tree()`, a
  torch-internal API checked on torch 2.15; a clear error names it if it changes).
  On CUDA: torch.cuda.max_memory_allocated minus the bytes allocated before the call.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import torch

MB = 1024.0 * 1024.0


def add_timing_args(p: argparse.ArgumentParser, *, repeats_help: str, warmup: int, warmup_help: str,
                    time_cap: float, time_cap_help: str) -> None:
    """The options of every side-by-side timing script: rounds, warm-up, time cap, threads, device, bars.
    `--repeats` stays None when not given: each script's default depends on its --quick."""
    p.add_argument("--repeats", type=int, help=repeats_help)
    p.add_argument("--warmup", type=int, default=warmup, help=warmup_help)
    p.add_argument("--time-cap", type=float, default=time_cap, help=time_cap_help)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU (default 1)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm bars")


def require_positive(p: argparse.ArgumentParser, args: argparse.Namespace, names: Iterable[str]) -> None:
    """Exit with the parser's usage error for the first of these options below 1 (None = not given)."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")


@dataclass
class Timing:
    """Median and spread of one function's timed rounds, in milliseconds."""

    median_ms: float
    min_ms: float
    max_ms: float
    rounds: int


def setup_threads(threads: int | None) -> int:
    """Fix torch's intra-op thread count (the shared CPU: keep it small) and return it."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; a named device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return dev


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_side_by_side(
    fns: dict[str, Callable[[], Any]],
    device: torch.device,
    warmup: int = 1,
    repeats: int = 5,
    time_cap_s: float | None = None,
) -> dict[str, Timing]:
    """Median wall time of each function, measured round-robin (see the module docstring).

    Every function runs `warmup` untimed calls, then up to `repeats` timed rounds; once
    `time_cap_s` seconds of timed rounds have passed no new round starts (one round always runs).
    """
    if not fns:
        raise ValueError("time_side_by_side: nothing to time")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    start = time.perf_counter()
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate: no fixed first/last slot
        for name in order:
            synchronize(device)
            t0 = time.perf_counter()
            fns[name]()
            synchronize(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
        if time_cap_s is not None and time.perf_counter() - start > time_cap_s:
            break
    return {
        name: Timing(statistics.median(ts), min(ts), max(ts), len(ts)) for name, ts in times.items()
    }


def _cpu_allocation_peak(prof: torch.profiler.profile) -> int:
    """Peak bytes, over the profiled span, of the allocations made in it that are still live.

    Replays the allocation events in time order. A free counts only when its block was allocated in
    this span: frees of older blocks (the previous step's gradients, say) do not make room on paper.
    """
    try:
        from torch._C._profiler import _EventType

        roots = prof.profiler.kineto_results.experimental_event_tree()
    except (AttributeError, ImportError) as e:  # pragma: no cover - depends on the torch version
        raise RuntimeError(
            f"this torch ({torch.__version__}) no longer exposes the profiler's allocation events "
            f"(kineto_results.experimental_event_tree); update benchmarks/common.py: {e}"
        ) from e
    events: list[tuple[int, int, int]] = []  # (time ns, pointer, bytes; negative = free)
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            f = node.extra_fields
            events.append((int(node.start_time_ns), int(f.ptr), int(f.alloc_size)))
        stack.extend(node.children)
    events.sort()
    live: dict[int, int] = {}
    current = peak = 0
    for _, ptr, size in events:
        if size > 0:
            live[ptr] = size
            current += size
            peak = max(peak, current)
        elif ptr in live:
            current -= live.pop(ptr)
    return peak


def peak_memory_mb(fn: Callable[[], Any], device: torch.device) -> float:
    """Peak extra memory (MiB) that one call of `fn` allocates above what already exists."""
    if device.type == "cuda":
        synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / MB
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        fn()
    return _cpu_allocation_peak(prof) / MB


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else platform's answer)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    """Facts the report prints about where the numbers were taken."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run_fields(device: torch.device) -> dict[str, Any]:
    """The facts every JSON record carries, so a line stays comparable on its own when tracked."""
    fields: dict[str, Any] = {
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if device.type == "cuda":
        fields["gpu"] = torch.cuda.get_device_name(device)
    return fields


def emit(record: dict[str, Any], as_json: bool) -> None:
    """One measured configuration: a JSON line on stdout (--json) or a readable line."""
    if as_json:
        print(json.dumps(record, sort_keys=False), flush=True)
    else:
        print("  ".join(f"{k}={_fmt(v)}" for k, v in record.items()), flush=True)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either side was not measured."""
    if a is None or b is None or b == 0:
        return None
    return a / b
