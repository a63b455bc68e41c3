"""ldvc/launch.py: the command it builds for 0/1/2/8 GPUs and for several machines (nothing is
started), its environment checks, the layout it prints, and one real 2-process launch on the CPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ldvc.launch import ACCELERATE_CONFIG, LaunchError, build_plan, claim_gpus, split_argv
from ldvc.train.layout import LayoutError

REPO = Path(__file__).resolve().parents[1]
PY = "/usr/bin/python-test"  # the interpreter put in the command (never run here)
ARGS = ["stages/train.py", "--setting", "inductive"]


def _params(tmp_path: Path, batch: int, per_device: int | str = "null") -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(f"train:\n  batch_size: {batch}\n  per_device_batch: {per_device}\n")
    return p


@pytest.mark.parametrize("devices", [0, 1])
def test_zero_or_one_device_runs_one_plain_process(devices: int) -> None:
    plan = build_plan(ARGS, env={}, devices=devices, python=PY)
    assert plan.command == [PY, *ARGS]  # no accelerate at all
    assert plan.total_processes == 1 and plan.layout is None


@pytest.mark.parametrize("devices", [2, 8])
def test_several_devices_use_accelerate_with_the_project_config(devices: int) -> None:
    plan = build_plan(ARGS, env={}, devices=devices, python=PY)
    assert plan.command == [PY, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIG),
                            "--multi_gpu", "--num_processes", str(devices), *ARGS]
    assert ACCELERATE_CONFIG.exists()


def test_module_arguments_become_accelerates_module_flag() -> None:
    plan = build_plan(["-m", "ldvc", "train", "--out", "x"], env={}, devices=2, python=PY)
    assert plan.command[-5:] == ["--module", "ldvc", "train", "--out", "x"]
    assert build_plan(["-m", "ldvc", "train"], env={}, devices=1, python=PY).command == [PY, "-m", "ldvc", "train"]


def test_num_processes_override_on_a_cpu_machine_and_port() -> None:
    plan = build_plan(ARGS, env={"LDVC_NUM_PROCESSES": "2", "LDVC_MAIN_PROCESS_PORT": "29611"}, devices=0, python=PY)
    assert plan.total_processes == 2 and "LDVC_NUM_PROCESSES=2 overrides" in plan.device_source
    cmd = plan.command
    assert cmd[cmd.index("--num_processes") + 1] == "2" and "--multi_gpu" in cmd
    assert cmd[cmd.index("--main_process_port") + 1] == "29611"
    # an override to 1 on an 8-GPU machine: one plain process
    assert build_plan(ARGS, env={"LDVC_NUM_PROCESSES": "1"}, devices=8, python=PY).command == [PY, *ARGS]


def test_multi_node_environment_becomes_accelerates_flags() -> None:
    env = {"LDVC_NUM_MACHINES": "2", "LDVC_MACHINE_RANK": "1", "LDVC_MAIN_PROCESS_IP": "10.0.0.5",
           "LDVC_MAIN_PROCESS_PORT": "29555"}
    plan = build_plan(ARGS, env=env, devices=8, python=PY)
    cmd = plan.command
    assert plan.total_processes == 16  # --num_processes is the total over machines
    assert cmd[cmd.index("--num_processes") + 1] == "16"
    flags = {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--num_machines")
             or cmd[i] in ("--machine_rank", "--main_process_ip", "--main_process_port")}
    assert flags == {"--num_machines": "2", "--machine_rank": "1", "--main_process_ip": "10.0.0.5",
                     "--main_process_port": "29555"}
    assert cmd[-len(ARGS):] == ARGS
    # one GPU per machine on two machines is still a 2-process DDP job
    single = build_plan(ARGS, env={**env, "LDVC_MACHINE_RANK": "0"}, devices=1, python=PY)
    assert single.total_processes == 2 and "--multi_gpu" in single.command
    # default port when none is given
    no_port = {k: v for k, v in env.items() if k != "LDVC_MAIN_PROCESS_PORT"}
    cmd = build_plan(ARGS, env=no_port, devices=8, python=PY).command
    assert cmd[cmd.index("--main_process_port") + 1] == "29500"


@pytest.mark.parametrize("env,message", [
    ({"LDVC_NUM_MACHINES": "2"}, "needs LDVC_MAIN_PROCESS_IP"),
    ({"LDVC_NUM_MACHINES": "2", "LDVC_MACHINE_RANK": "2", "LDVC_MAIN_PROCESS_IP": "h"}, "must be below"),
    ({"LDVC_NUM_PROCESSES": "two"}, "is not an integer"),
    ({"LDVC_NUM_PROCESSES": "0"}, "must be at least 1"),
])
def test_bad_environment_fails_before_launch(env: dict, message: str) -> None:
    with pytest.raises(LaunchError, match=message):
        build_plan(ARGS, env=env, devices=2, python=PY)
    with pytest.raises(LaunchError, match="nothing to run"):
        build_plan([], env={}, devices=2)


def test_layout_comes_from_params_for_the_total_process_count(tmp_path: Path) -> None:
    params = _params(tmp_path, 16, 8)
    one = build_plan(ARGS, env={}, devices=1, params=params, python=PY)
    assert (one.layout.processes, one.layout.per_device, one.layout.accumulation) == (1, 8, 2)
    four = build_plan(ARGS, env={}, devices=4, params=params, python=PY)
    assert (four.layout.processes, four.layout.per_device, four.layout.accumulation) == (4, 4, 1)
    assert "layout: global batch 16 = 4 process(es)" in four.describe()
    with pytest.raises(LayoutError, match="train.batch_size = 16 .* 3 processes"):
        build_plan(ARGS, env={}, devices=3, params=params, python=PY)
    assert build_plan(ARGS, env={}, devices=3, params=None, python=PY).layout is None  # --params none


def test_launcher_options_are_split_from_the_python_arguments() -> None:
    assert split_argv(["--dry-run", "--params", "none", "--", "-m", "x", "--dry-run"]) == (
        True, None, ["-m", "x", "--dry-run"])
    dry, params, rest = split_argv(["stages/train.py", "--params", "p.yaml"])  # after the script: its own
    assert (dry, params, rest) == (False, Path("params.yaml"), ["stages/train.py", "--params", "p.yaml"])
    assert split_argv(["--params=a.yaml", "-m", "m"])[1:] == (Path("a.yaml"), ["-m", "m"])


def test_dry_run_prints_the_plan_and_an_impossible_layout_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "LDVC_NUM_PROCESSES": "2", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "ldvc.launch", "--dry-run", "--params",
                           str(_params(tmp_path, 16)), "-m", "ldvc", "train"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "layout: global batch 16 = 2 process(es) x 8 image(s)" in done.stdout
    assert "--multi_gpu --num_processes 2" in done.stdout and "--module ldvc train" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "ldvc.launch", "--params", str(_params(tmp_path, 15)), "-c", "1"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "train.batch_size = 15" in bad.stderr and "2 processes" in bad.stderr
    typo = tmp_path / "typo.yaml"
    typo.write_text("train:\n  batch_sise: 16\n")
    wrong = subprocess.run([sys.executable, "-m", "ldvc.launch", "--params", str(typo), "-c", "1"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "train.batch_sise" in wrong.stderr and "Traceback" not in wrong.stderr


@pytest.mark.slow
def test_real_two_process_cpu_launch(tmp_path: Path) -> None:
    script = tmp_path / "who.py"
    script.write_text(
        "from accelerate import Accelerator\n"
        "a = Accelerator(cpu=True)\n"
        "print(f'RANK {a.process_index} WORLD {a.num_processes} BACKEND {a.state.backend}', flush=True)\n"
    )
    env = {**os.environ, "LDVC_NUM_PROCESSES": "2", "LDVC_MAIN_PROCESS_PORT": "29547", "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1"}
    env.pop("RANK", None)
    done = subprocess.run([sys.executable, "-m", "ldvc.launch", "--params", "none", str(script)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    # two processes share one stdout: their lines may interleave, so match the records, not lines
    ranks = sorted(re.findall(r"RANK \d WORLD \d BACKEND [a-z]+", done.stdout))
    assert ranks == ["RANK 0 WORLD 2 BACKEND gloo", "RANK 1 WORLD 2 BACKEND gloo"]


# --------------------------------------------------------------------------------------------
# LDVC_GPUS_PER_RUN: parallel experiments, one GPU (or k) each
# --------------------------------------------------------------------------------------------


def test_gpus_per_run_plans_k_processes_over_the_visible_pool() -> None:
    one = build_plan(ARGS, env={"LDVC_GPUS_PER_RUN": "1"}, devices=4, python=PY)
    assert one.command == [PY, *ARGS] and one.gpu_pool == ["0", "1", "2", "3"]
    assert "claims 1 free GPU(s) of 0,1,2,3" in one.describe()
    two = build_plan(ARGS, env={"LDVC_GPUS_PER_RUN": "2", "CUDA_VISIBLE_DEVICES": "5,7,9"}, devices=3, python=PY)
    assert two.total_processes == 2 and two.gpu_pool == ["5", "7", "9"]
    assert two.command[two.command.index("--num_processes") + 1] == "2"
    # two such runs side by side on one machine must not share accelerate's rendezvous port: while the
    # first run's port is taken (its rendezvous listens there), the next plan picks another free one
    import socket

    def port(plan) -> int:
        return int(plan.command[plan.command.index("--main_process_port") + 1])

    first = port(two)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", first))
        busy.listen()
        second = port(build_plan(ARGS, env={"LDVC_GPUS_PER_RUN": "2"}, devices=3, python=PY))
    assert second != first and 29500 not in (first, second)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", second))  # free when planned
    with pytest.raises(LaunchError, match="only 2 GPU"):
        build_plan(ARGS, env={"LDVC_GPUS_PER_RUN": "3"}, devices=2, python=PY)
    with pytest.raises(LaunchError, match="not both"):
        build_plan(ARGS, env={"LDVC_GPUS_PER_RUN": "1", "LDVC_NUM_PROCESSES": "2"}, devices=2, python=PY)
    with pytest.raises(LaunchError, match="cannot be combined"):
        build_plan(ARGS, env={"LDVC_GPUS_PER_RUN": "1", "LDVC_NUM_MACHINES": "2", "LDVC_MAIN_PROCESS_IP": "h"},
                   devices=2, python=PY)


def test_claims_are_exclusive_and_released_on_close(tmp_path: Path) -> None:
    pool = ["0", "1"]
    first, fds1 = claim_gpus(pool, 1, tmp_path)
    second, fds2 = claim_gpus(pool, 1, tmp_path)
    assert (first, second) == (["0"], ["1"])
    with pytest.raises(LaunchError, match="fewer than 1 of the GPUs"):
        claim_gpus(pool, 1, tmp_path)
    for fd in fds1:
        os.close(fd)
    again, fds3 = claim_gpus(pool, 1, tmp_path)
    assert again == ["0"]
    # asking for 2 with one free fails and gives the free one back
    for fd in fds3:
        os.close(fd)
    with pytest.raises(LaunchError):
        claim_gpus(pool, 2, tmp_path)
    last, fds4 = claim_gpus(pool, 1, tmp_path)
    assert last == ["0"]
    assert all(os.get_inheritable(fd) for fd in fds2)  # what keeps the claim alive through exec
    for fd in fds2 + fds4:
        os.close(fd)


def test_a_claim_lasts_as_long_as_the_launched_run(tmp_path: Path) -> None:
    """The launcher claims, execs the run, and the run (not the launcher) holds the GPU until it exits."""
    locks = tmp_path / "locks"
    run = ("import os, sys, time; print('GPU', os.environ['CUDA_VISIBLE_DEVICES'], flush=True); "
           "sys.stdin.readline()")
    boot = ("import ldvc.launch as l; l.detect_gpus = lambda env=None: (2, 'test'); "
            f"l.main(['--params', 'none', '-c', {run!r}])")
    env = {**os.environ, "LDVC_GPUS_PER_RUN": "1", "LDVC_GPU_LOCK_DIR": str(locks), "LDVC_GPU_WAIT_S": "0",
           "OMP_NUM_THREADS": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.Popen([sys.executable, "-c", boot], cwd=REPO, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any(line.startswith("GPU ") for line in lines):
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line)
        assert "GPU 0\n" in lines and any("claimed GPU(s) 0" in line for line in lines)
        # while the run lives, GPU 0 is taken: another claim gets GPU 1, a claim of both fails
        with pytest.raises(LaunchError):
            claim_gpus(["0", "1"], 2, locks)
        other, fds = claim_gpus(["0", "1"], 1, locks)
        assert other == ["1"]
        for fd in fds:
            os.close(fd)
    finally:
        proc.communicate("\n", timeout=60)
    assert proc.returncode == 0
    ids, fds = claim_gpus(["0"], 1, locks)
    assert ids == ["0"]  # released when the run ended
    for fd in fds:
        os.close(fd)
