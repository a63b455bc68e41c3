"""CPU rehearsal of the device check (issue 18): the README's two device-check commands, run
literally, as the GPU machine would see them, at tiny size:

1. `PREPARE_COMMAND` in a fresh copy of the working tree (what the device tool sends: tracked files
   and untracked files git does not ignore) with the project's environment first on PATH, as the
   README installs it: it downloads the wheels the GPU machine lacks into .whl/ (needs PyPI, like
   the README's install);
2. `RUN_COMMAND` in that copy with `python3` from a virtualenv holding ONLY what the GPU machine has
   preinstalled (benchmarks/device_env.py GPU_MACHINE_PACKAGES; linked from the project's
   environment, so no torch is installed again), pip with no index and no configuration, $OUT set:
   the check must install the carried wheels itself and leave in $OUT exactly the files the GPU
   run would leave, with every part run, nothing the GPU machine lacks imported, and no check failed.
The README holds both commands verbatim, and the `carry` of the wheels folder.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from benchmarks.device_check import ENVIRONMENT, LOG, PART_ORDER, PREPARE_COMMAND, RECORDS, REPORT, RUN_COMMAND
from benchmarks.device_env import FORBIDDEN, GPU_MACHINE_PACKAGES, WHEELS_DIR, lacking, normalize

REPO = Path(__file__).resolve().parents[1]


def _copy_tree(dst: Path) -> Path:
    """What a fresh clone holds / what the device tool sends: tracked + untracked-not-ignored files."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


def _gpu_like_venv(dest: Path) -> Path:
    """A venv exposing only the project environment's distributions that the GPU machine has
    preinstalled (symbolic links: nothing is installed); returns its bin/ folder."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)
    site = dest / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    ours = Path(sysconfig.get_paths()["purelib"])
    linked: set[str] = set()
    for dist in md.distributions(path=[str(ours)]):
        if normalize(dist.metadata["Name"]) not in GPU_MACHINE_PACKAGES:
            continue
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops - linked:
            if (ours / top).exists() and not (site / top).exists():
                (site / top).symlink_to(ours / top)
                linked.add(top)
    assert "torch" in linked and "pip" in linked and "open_clip" not in linked and "ruamel" not in linked
    return dest / "bin"


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("rehearsal")
    tree = _copy_tree(root / "tree")
    assert not (tree / WHEELS_DIR).exists()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))}
    base.update(HF_HUB_OFFLINE="1", TMPDIR=str(root / "tmp"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    (root / "tmp").mkdir()
    # 1. preparation, with the project's environment (as the README installs it) first on PATH
    prep_env = {**base, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"}
    prep = subprocess.run(["bash", "-c", PREPARE_COMMAND], cwd=tree, env=prep_env, capture_output=True, text=True,
                          timeout=300)
    assert prep.returncode == 0, prep.stdout[-3000:] + prep.stderr[-3000:]
    # 2. the GPU machine's command: its python3, no index, no pip configuration
    gpu_bin = _gpu_like_venv(root / "gpu-python")
    out = root / "out"
    run_env = {**base, "PATH": f"{gpu_bin}{os.pathsep}{base.get('PATH', '')}", "OUT": str(out),
               "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull}
    done = subprocess.run(["bash", "-c", RUN_COMMAND], cwd=tree, env=run_env, capture_output=True, text=True,
                          timeout=420)
    return out, done


def test_readme_holds_the_commands_the_rehearsal_runs() -> None:
    """The README's device-check section (in README.md, or docs/gpu.md where the README moved its GPU
    sections) holds both commands verbatim and the `carry` of the wheels folder."""
    docs = [p for p in (REPO / "README.md", REPO / "docs" / "gpu.md") if p.exists()]
    section = next((p.read_text() for p in docs if "**Device check**" in p.read_text()), "")
    assert PREPARE_COMMAND in section and RUN_COMMAND in section, [str(p) for p in docs]
    assert f'carry: ["{WHEELS_DIR}"]' in section and "has NOT run yet" in section


def test_prepared_wheels_are_exactly_what_the_gpu_machine_lacks(rehearsal) -> None:
    out, _ = rehearsal
    wheels = sorted((out.parent / "tree" / WHEELS_DIR).glob("*.whl"))
    assert {normalize(w.name.split("-")[0]) for w in wheels} == {normalize(n) for n in lacking()}
    assert all(w.name.endswith("-py3-none-any.whl") for w in wheels)
    lines = (REPO / "constraints.txt").read_text().splitlines()
    pins = {normalize(k): v for k, v in (line.split("==") for line in lines if "==" in line and line[0] != "#")}
    for w in wheels:  # the project's pinned versions
        assert w.name.split("-")[1] == pins[normalize(w.name.split("-")[0])], w.name


def test_the_gpu_command_runs_every_part_and_leaves_the_files_the_gpu_run_leaves(rehearsal) -> None:
    out, done = rehearsal
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + (
        (out / LOG).read_text()[-6000:] if (out / LOG).exists() else "")
    assert sorted(p.name for p in out.iterdir()) == sorted([RECORDS, REPORT, ENVIRONMENT, LOG])
    records = [json.loads(line) for line in (out / RECORDS).read_text().splitlines()]
    env = json.loads((out / ENVIRONMENT).read_text())
    assert env["size"] == "tiny" and env["wheels_installed_by"] == "pip"  # installed there, with no index
    assert env["executable"].startswith(str(out.parent / "gpu-python"))
    parts = {r["part"]: r for r in records if r["benchmark"] == "device_part"}
    assert list(parts) == list(PART_ORDER) and all(r["status"] == "ok" for r in parts.values()), parts
    for r in records:
        if r["benchmark"] == "part_imports":
            assert not set(FORBIDDEN) & set(r["modules"]), r["part"]
            assert {"torch", "ldvc"} <= set(r["modules"])
    kinds = {r["benchmark"] for r in records}
    assert {"train_step", "compiled_step", "gpu_flex", "gpu_slide_fps", "eval_many_classes", "loader",
            "gpu_train_loop", "projection", "loader_advice", "device_environment"} <= kinds
    steps = [r for r in records if r["benchmark"] == "train_step"]
    assert {r["method"] for r in steps} == {"lctd", "zegclip"}
    assert all(r["host_syncs_per_step"] <= 1 for r in steps)  # the real step, its one read counted
    compiled = [r for r in records if r["benchmark"] == "compiled_step"]
    assert all(r["graphs"] >= 1 and r["recompile_limit_hits"] == 0 for r in compiled)
    md_text = (out / REPORT).read_text()
    for heading in ("## Training step", "## Compiled training step", "## FlexAttention", "## Evaluation",
                    "## Training loader", "## Projected wall time", "## Checks"):
        assert heading in md_text
    assert "NOT paper numbers" in md_text and "All checks held" in md_text
