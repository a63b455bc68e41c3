"""The training layout: how the global batch is split over processes, devices and micro-steps.

`train.batch_size` is the GLOBAL batch of one optimizer step (ZegCLIP's 16 = 4 GPUs x 4 images),
kept whatever the machine: with P processes (one per GPU, `python -m ldvc.launch`), b images per
device and A accumulation micro-steps,

    P x b x A = train.batch_size      (exactly; the learning-rate schedule and the data order of
                                       ldvc/data/dataset.py depend on the global batch only)

- `train.per_device_batch: null` -> b = batch_size / P, A = 1 (ZegCLIP on 4 GPUs: 4 x 4 x 1);
- `train.per_device_batch: c`    -> b = the largest divisor of batch_size / P that is <= c, and
  A = (batch_size / P) / b (a memory cap: 16 on one GPU with c = 8 -> 1 x 8 x 2).

A global batch that the process count does not divide has no exact layout: `resolve_layout`
raises `LayoutError` before any work, naming train.batch_size, train.per_device_batch, the
process count and the values that would work. A cap that forces a smaller per-device batch than
asked (a prime share, say 7 images per process with c = 4 -> b = 1, A = 7) is exact but slow;
`describe()` says so, so the line the training prints makes it visible.

The loader workers of each process (`loader_workers`): `train.num_workers` when it is a number,
else ("auto") the cores per process minus one, so 8 processes on a 64-core machine get 7 workers
each instead of a fixed count that oversubscribes (or starves) the machine.

Our choices (ZegCLIP has a fixed 4 x 4 layout): dividing exactly instead of rounding the global
batch, and shrinking b to a divisor instead of padding the last micro-step (padding would change
the loss normalisation of that micro-step).
"""

from __future__ import annotations

from dataclasses import dataclass


class LayoutError(ValueError):
    """The global batch cannot be split exactly over the processes; the message names the keys."""


@dataclass(frozen=True)
class Layout:
    """processes x per_device x accumulation = the global batch of one optimizer step."""

    processes: int
    per_device: int
    accumulation: int
    per_device_cap: int | None = None  # train.per_device_batch as configured (None: no cap)

    def __post_init__(self) -> None:
        for name in ("processes", "per_device", "accumulation"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LayoutError(f"Layout.{name} must be a positive integer, got {value!r}")

    @property
    def global_batch(self) -> int:
        return self.processes * self.per_device * self.accumulation

    @property
    def micro_batch(self) -> int:
        """Images of one micro-step over all processes."""
        return self.processes * self.per_device

    def describe(self) -> str:
        """One line for the training log: the split and how it was reached."""
        line = (
            f"global batch {self.global_batch} = {self.processes} process(es) x {self.per_device} image(s) per "
            f"device x {self.accumulation} accumulation step(s)"
        )
        if self.per_device_cap is None:
            return line + " (train.per_device_batch: null)"
        line += f" (train.per_device_batch cap {self.per_device_cap}"
        if self.per_device < self.per_device_cap and self.accumulation > 1:
            # The cap was not reachable with an integer accumulation: say it, it costs speed.
            line += f"; {self.per_device} is the largest divisor of {self.global_batch // self.processes} below it"
        return line + ")"

    def as_dict(self) -> dict[str, int | None]:
        """Flat fields for logging (MLflow params, the training summary)."""
        return {
            "processes": self.processes,
            "per_device_batch": self.per_device,
            "grad_accumulation": self.accumulation,
            "global_batch": self.global_batch,
            "per_device_cap": self.per_device_cap,
        }


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def resolve_layout(batch_size: int, per_device_batch: int | None, num_processes: int) -> Layout:
    """The exact layout of `batch_size` images per optimizer step on `num_processes` processes.

    per_device_batch None: every process takes batch_size / num_processes images at once;
    an integer caps the images per device and micro-step (see the module docstring).
    """
    for name, value in (("train.batch_size", batch_size), ("the process count", num_processes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LayoutError(f"{name} must be a positive integer, got {value!r}")
    if per_device_batch is not None and (
        isinstance(per_device_batch, bool) or not isinstance(per_device_batch, int) or per_device_batch < 1
    ):
        raise LayoutError(f"train.per_device_batch must be null or a positive integer, got {per_device_batch!r}")
    if batch_size % num_processes:
        batches = [m for m in range(num_processes, 4 * num_processes + 1, num_processes)]
        procs = _divisors(batch_size)
        raise LayoutError(
            f"train.batch_size = {batch_size} (the global batch per optimizer step) cannot be split over "
            f"{num_processes} processes (train.per_device_batch = {per_device_batch}): every process must take "
            f"the same number of images. Use a train.batch_size that is a multiple of {num_processes} "
            f"(e.g. {', '.join(map(str, batches))}), or run {', '.join(map(str, procs))} processes "
            f"(LDVC_NUM_PROCESSES or CUDA_VISIBLE_DEVICES for ldvc.launch)"
        )
    share = batch_size // num_processes  # images per process per optimizer step
    if per_device_batch is None:
        return Layout(num_processes, share, 1, None)
    per_device = max(d for d in _divisors(share) if d <= per_device_batch)
    return Layout(num_processes, per_device, share // per_device, per_device_batch)


# DataLoader workers per process when train.num_workers is "auto": one core per process stays with
# the process that feeds the device; more than this rarely helps and each worker holds prefetched
# batches in memory (benchmarks/loader.py measures images/s per worker count).
MAX_AUTO_WORKERS = 16


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def loader_workers(setting: int | str, processes: int, local_processes: int | None = None,
                   cores: int | None = None) -> int:
    """DataLoader workers of one training process: an integer `train.num_workers` as it is; "auto" =
    the cores per process on this machine minus one (the feeding process), at most MAX_AUTO_WORKERS,
    0 with a single core per process. `local_processes`: processes on this machine (LOCAL_WORLD_SIZE
    from the launcher, else all `processes`)."""
    import os

    if setting != "auto":
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
            raise LayoutError(f"train.num_workers must be 'auto' or an integer >= 0, got {setting!r}")
        return setting
    if local_processes is None:
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", processes) or processes)
    per_process = (cores if cores is not None else usable_cores()) // max(1, local_processes)
    return max(0, min(MAX_AUTO_WORKERS, per_process - 1))
