"""Run a stage or module on every local GPU, with the process count taken from the machine.

    python -m ldvc.launch [launcher options] [--] <python arguments...>
    python -m ldvc.launch stages/train.py --setting inductive      # a script
    python -m ldvc.launch -m benchmarks.gpu --json                 # a module

What it runs (no configuration file to edit):
- 0 or 1 usable device (a CPU machine, one GPU): the Python arguments in ONE plain process
  (`os.execv` of this interpreter: same environment, signals and exit status go straight through);
- N > 1 processes: `python -m accelerate.commands.launch --config_file configs/accelerate/multi_gpu.yaml
  --multi_gpu --num_processes N ...`, one process per GPU (DDP). The project's config file is
  always passed, so a user-global accelerate default (~/.cache/huggingface/accelerate) is never
  read silently (toolchain.md, "Accelerate"); the flags given here override its values.

The device count is `torch.cuda.device_count()` (it honours CUDA_VISIBLE_DEVICES: pin a run to
GPUs 2 and 3 with CUDA_VISIBLE_DEVICES=2,3), or `nvidia-smi --list-gpus` filtered by
CUDA_VISIBLE_DEVICES when torch cannot be imported. Environment variables (all optional):

    LDVC_NUM_PROCESSES       processes on THIS machine (default: the visible GPU count, at least 1).
                             On a CPU machine, 2 starts two gloo DDP processes (the training loop
                             creates Accelerator(cpu=True) when there is no CUDA; toolchain.md).
    LDVC_NUM_MACHINES        machines taking part (default 1); every machine runs the same command
    LDVC_MACHINE_RANK        this machine's rank, 0 .. LDVC_NUM_MACHINES - 1 (default 0)
    LDVC_MAIN_PROCESS_IP     address of the rank-0 machine (required with several machines)
    LDVC_MAIN_PROCESS_PORT   its port (default 29500; also used on one machine, e.g. for two
                             launches side by side)

    LDVC_GPUS_PER_RUN        claim this many FREE GPUs of the visible ones for this run and pin
                             it to them (CUDA_VISIBLE_DEVICES), waiting while none is free; for
                             parallel experiments: `LDVC_GPUS_PER_RUN=1 dvc queue start -j 4` runs
                             4 queued experiments at once, one GPU each (below)
    LDVC_GPU_LOCK_DIR        where the claims live (default /tmp/ldvc-gpu-locks; one file per GPU)
    LDVC_GPU_WAIT_S          how long to wait for free GPUs, whole seconds (default 86400)

With several machines they become accelerate's --num_machines / --machine_rank /
--main_process_ip / --main_process_port, and --num_processes is the TOTAL (machines x processes
per machine, every machine must have the same count). Every machine runs the same command in its
own checkout (with the stage's inputs); global rank 0 writes the outputs and logs to MLflow, the
other ranks write nothing. Rehearsed on one host as 2 machines x 1 process over gloo, against 1
machine x 2 processes (tests/test_team_multinode.py); SLURM: docs/team.md.

Parallel experiments: `dvc queue start -j N` starts N worker processes that all inherit the
environment of that one command, so no worker can be given its own CUDA_VISIBLE_DEVICES. With
LDVC_GPUS_PER_RUN each run instead claims free GPUs itself when its stage starts: an exclusive
flock(2) on LDVC_GPU_LOCK_DIR/gpu-<id>.lock per GPU, taken here and kept open (inheritable)
through the exec into the training process and its children, so the claim lasts exactly as long
as the run and is released by the kernel when the run ends, crash included. A run of several
GPUs then gets a free rendezvous port of its own (unless LDVC_MAIN_PROCESS_PORT is set).

Before starting anything, the layout of the global batch (ldvc/train/layout.py) is resolved from
the `train` section of params.yaml (`--params FILE`, `--params none` to skip) and printed; an
impossible one (batch not divisible by the total process count) stops here with the message of
`resolve_layout`, instead of failing in N processes after the model is built.

Launcher options (before the Python arguments): --dry-run prints the command and the layout
without running; --params FILE. `--` ends the launcher options. Our choices: exec instead of a
child process; the default port 29500 is accelerate's.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ldvc.train.layout import Layout, LayoutError, resolve_layout

REPO = Path(__file__).resolve().parent.parent
ACCELERATE_CONFIG = REPO / "configs" / "accelerate" / "multi_gpu.yaml"
DEFAULT_PORT = 29500
ENV_PROCESSES = "LDVC_NUM_PROCESSES"
ENV_MACHINES = "LDVC_NUM_MACHINES"
ENV_RANK = "LDVC_MACHINE_RANK"
ENV_IP = "LDVC_MAIN_PROCESS_IP"
ENV_PORT = "LDVC_MAIN_PROCESS_PORT"
ENV_GPUS_PER_RUN = "LDVC_GPUS_PER_RUN"
ENV_LOCK_DIR = "LDVC_GPU_LOCK_DIR"
ENV_WAIT = "LDVC_GPU_WAIT_S"
DEFAULT_LOCK_DIR = "/tmp/ldvc-gpu-locks"


class LaunchError(ValueError):
    """The launch request is invalid (bad environment variable, nothing to run)."""


@dataclass(frozen=True)
class LaunchPlan:
    """What `python -m ldvc.launch` decided, before it runs anything."""

    command: list[str]
    processes_per_machine: int
    machines: int
    devices: int  # GPUs visible on this machine
    device_source: str  # how `devices` was found (or that LDVC_NUM_PROCESSES overrode it)
    layout: Layout | None  # the params.yaml layout for the total process count (None: not resolved)
    gpu_pool: list[str] | None = None  # LDVC_GPUS_PER_RUN: the visible GPU ids to claim from

    @property
    def total_processes(self) -> int:
        return self.processes_per_machine * self.machines

    def describe(self) -> str:
        line = (f"[ldvc.launch] {self.devices} GPU(s) visible ({self.device_source}); {self.machines} machine(s) x "
                f"{self.processes_per_machine} process(es) = {self.total_processes}")
        if self.gpu_pool is not None:
            line += f"; claims {self.processes_per_machine} free GPU(s) of {','.join(self.gpu_pool)}"
        if self.layout is not None:
            line += f"\n[ldvc.launch] layout: {self.layout.describe()}"
        return line + f"\n[ldvc.launch] exec: {shlex.join(self.command)}"


# --------------------------------------------------------------------------------------------
# Devices and environment
# --------------------------------------------------------------------------------------------


def _visible_filter(count: int, visible: str | None) -> int:
    """How many of `count` physical GPUs CUDA_VISIBLE_DEVICES leaves visible (CUDA stops at the
    first invalid entry, e.g. -1)."""
    if visible is None:
        return count
    n = 0
    for entry in visible.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):
            break
        n += 1
    return min(n, count)


GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd")


def detect_gpus(env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """(visible GPU count, how it was found): torch first, nvidia-smi if torch is missing.

    Fast path (no torch import, ~1.8 s saved per launched stage): a machine without any GPU device
    node (NVIDIA, WSL's dxg, ROCm's kfd) and without nvidia-smi / rocm-smi has no GPU."""
    env = os.environ if env is None else env
    if sys.platform.startswith("linux") and not any(os.path.exists(d) for d in GPU_DEVICE_NODES) \
            and not any(shutil.which(t) for t in ("nvidia-smi", "rocm-smi")):
        return 0, "no GPU device node, no nvidia-smi / rocm-smi"
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        return torch.cuda.device_count(), "torch.cuda.device_count()"
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0, "no torch, no nvidia-smi"
    try:
        out = subprocess.run([smi, "--list-gpus"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0, "nvidia-smi failed"
    physical = sum(1 for line in out.splitlines() if line.startswith("GPU "))
    return _visible_filter(physical, env.get("CUDA_VISIBLE_DEVICES")), "nvidia-smi --list-gpus"


def _env_int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise LaunchError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise LaunchError(f"{name}={value} must be at least {minimum}")
    return value


def _free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _params_layout(params: Path | None, total: int) -> Layout | None:
    """The layout of params.yaml's train section for `total` processes (None without a file)."""
    if params is None or not params.exists():
        return None
    from ldvc.config import load_config  # reads YAML 1.2 (ruamel) only here

    t = load_config(params).train
    return resolve_layout(t.batch_size, t.per_device_batch, total)


def visible_gpu_ids(devices: int, env: Mapping[str, str]) -> list[str]:
    """The ids CUDA_VISIBLE_DEVICES would hold for the `devices` visible GPUs (0..n-1 if unset)."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [str(i) for i in range(devices)]
    return [e.strip() for e in visible.split(",")][:devices]


def claim_gpus(pool: Sequence[str], count: int, lock_dir: Path, wait_s: float = 0.0,
               poll_s: float = 5.0) -> tuple[list[str], list[int]]:
    """Claim `count` GPUs of `pool` that no other run holds: an exclusive, non-blocking flock on
    lock_dir/gpu-<id>.lock each. Returns (ids, open inheritable fds: keep them open for the run).
    Waits up to `wait_s` seconds for enough free GPUs; raises LaunchError after that."""
    import fcntl
    import re
    import time

    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    announced = False
    while True:
        held: list[tuple[str, int]] = []
        for gpu in pool:
            path = lock_dir / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', gpu)}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            held.append((gpu, fd))
            if len(held) == count:
                for _, f in held:
                    os.set_inheritable(f, True)  # the exec'd training process keeps the claim
                return [g for g, _ in held], [f for _, f in held]
        for _, f in held:  # not enough: give back what was taken, wait, try again
            os.close(f)
        if time.monotonic() >= deadline:
            raise LaunchError(f"{ENV_GPUS_PER_RUN}={count}: fewer than {count} of the GPUs {list(pool)} are free "
                              f"(claims in {lock_dir}); waited {wait_s:.0f} s ({ENV_WAIT})")
        if not announced:
            print(f"[ldvc.launch] waiting for {count} free GPU(s) of {list(pool)} (claims in {lock_dir})",
                  file=sys.stderr, flush=True)
            announced = True
        time.sleep(poll_s)


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------


def build_plan(python_args: Sequence[str], env: Mapping[str, str] | None = None, devices: int | None = None,
               params: Path | None = None, python: str | None = None) -> LaunchPlan:
    """The command that runs `python_args` on this machine's devices (nothing is started).

    `devices` overrides the detection (tests); `params` is the file whose train section gives the
    layout; `python` the interpreter (default: this one).
    """
    env = os.environ if env is None else env
    args = list(python_args)
    if not args:
        raise LaunchError("nothing to run: give a script or -m module, e.g. `python -m ldvc.launch stages/train.py`")
    python = python or sys.executable
    if devices is None:
        devices, source = detect_gpus(env)
    else:
        source = "given"
    per_machine = max(devices, 1)
    pool = None
    if env.get(ENV_GPUS_PER_RUN, "").strip():
        per_machine = _env_int(env, ENV_GPUS_PER_RUN, 1, 1)
        if per_machine > devices:
            raise LaunchError(f"{ENV_GPUS_PER_RUN}={per_machine} but only {devices} GPU(s) are visible ({source})")
        if env.get(ENV_PROCESSES, "").strip():
            raise LaunchError(f"set either {ENV_GPUS_PER_RUN} or {ENV_PROCESSES}, not both")
        pool = visible_gpu_ids(devices, env)
        source += f"; {ENV_GPUS_PER_RUN}={per_machine}"
    elif env.get(ENV_PROCESSES, "").strip():
        per_machine = _env_int(env, ENV_PROCESSES, per_machine, 1)
        source += f"; {ENV_PROCESSES}={per_machine} overrides"
    machines = _env_int(env, ENV_MACHINES, 1, 1)
    if pool is not None and machines > 1:
        raise LaunchError(f"{ENV_GPUS_PER_RUN} claims GPUs of one machine; it cannot be combined with {ENV_MACHINES}")
    rank = _env_int(env, ENV_RANK, 0, 0)
    if rank >= machines:
        raise LaunchError(f"{ENV_RANK}={rank} must be below {ENV_MACHINES}={machines}")
    total = per_machine * machines
    layout = _params_layout(params, total)
    if total == 1:
        return LaunchPlan([python, *args], per_machine, machines, devices, source, layout, pool)
    if not ACCELERATE_CONFIG.exists():
        raise LaunchError(f"{ACCELERATE_CONFIG} is missing: the launcher passes it so no user-global accelerate "
                          f"config is read; restore it from the repository")
    cmd = [python, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIG), "--multi_gpu",
           "--num_processes", str(total)]
    if machines > 1:
        ip = env.get(ENV_IP, "").strip()
        if not ip:
            raise LaunchError(f"{ENV_MACHINES}={machines} needs {ENV_IP}, the address of the rank-0 machine")
        port = _env_int(env, ENV_PORT, DEFAULT_PORT, 1)
        cmd += ["--num_machines", str(machines), "--machine_rank", str(rank), "--main_process_ip", ip,
                "--main_process_port", str(port)]
    elif env.get(ENV_PORT, "").strip():
        # One machine: only a port clash (two launches at once) needs another port.
        cmd += ["--main_process_port", str(_env_int(env, ENV_PORT, DEFAULT_PORT, 1))]
    elif pool is not None:
        # Parallel runs of several GPUs each on one machine: each needs its own rendezvous port.
        cmd += ["--main_process_port", str(_free_port())]
    if args[0] == "-m":
        if len(args) < 2:
            raise LaunchError("-m needs a module name")
        cmd += ["--module", *args[1:]]
    else:
        cmd += args
    return LaunchPlan(cmd, per_machine, machines, devices, source, layout, pool)


def split_argv(argv: Sequence[str]) -> tuple[bool, Path | None, list[str]]:
    """(dry_run, params file, the Python arguments) from the launcher's command line."""
    argv = list(argv)
    dry_run, params = False, Path("params.yaml")
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if a == "--dry-run":
            dry_run = True
        elif a == "--params" or a.startswith("--params="):
            if a == "--params":
                if i + 1 >= len(argv):
                    raise LaunchError("--params needs a file (or 'none')")
                i += 1
                value = argv[i]
            else:
                value = a.split("=", 1)[1]
            params = None if value.lower() == "none" else Path(value)
        elif a in ("-h", "--help"):
            print(__doc__)
            raise SystemExit(0)
        else:
            break
        i += 1
    return dry_run, params, argv[i:]


def main(argv: Sequence[str] | None = None) -> Layout | None:
    """Print the plan and exec it (or only print it with --dry-run); returns the layout."""
    from ldvc.config import ConfigError

    try:
        dry_run, params, python_args = split_argv(sys.argv[1:] if argv is None else argv)
        plan = build_plan(python_args, params=params)
    except (LaunchError, LayoutError, ConfigError) as err:
        print(f"ldvc.launch: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(plan.describe(), flush=True)
    if dry_run:
        return plan.layout
    env = dict(os.environ)
    if plan.gpu_pool is not None:
        try:
            wait = _env_int(env, ENV_WAIT, 86400, 0)
            ids, _fds = claim_gpus(plan.gpu_pool, plan.processes_per_machine,
                                   Path(env.get(ENV_LOCK_DIR) or DEFAULT_LOCK_DIR), wait)
        except LaunchError as err:
            print(f"ldvc.launch: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        env["CUDA_VISIBLE_DEVICES"] = ",".join(ids)  # the fds stay open (inheritable) through the exec
        print(f"[ldvc.launch] claimed GPU(s) {','.join(ids)}: CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}",
              flush=True)
    sys.stderr.flush()
    os.execve(plan.command[0], plan.command, env)
    return plan.layout  # not reached: execve replaces this process


if __name__ == "__main__":
    main()
