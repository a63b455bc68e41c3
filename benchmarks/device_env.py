"""The GPU machine the device check runs on, as far as the check needs it: what it has preinstalled,
what the check needs, the wheels that make up the difference, and how they are installed there.

Facts (the workplace's device documentation, /work/.library/device/KINDS.md, and toolchain.md):
the GPU machine (one H100 or H200) runs `python3` 3.12 with torch 2.11 and the packages in
`GPU_MACHINE_PACKAGES` preinstalled, and reaches NO package index. Only the working tree travels
there, git-ignored paths only when the call names them (`carry`), so the wheels live in `.whl/`
(git-ignored) and the README's call carries it.

- `prepare_wheels` (the README's preparation command, on a machine with a package index, in the
  project's environment as the README installs it): `pip download --no-deps --only-binary=:all:`
  of exactly `lacking()` = the distributions the check needs (`CHECK_NEEDS`) minus those the GPU
  machine has, each at the version pinned in the project's constraints.txt (the versions the
  committed results came from). Every one of them must be a pure-Python wheel (py3-none-any):
  the GPU machine's Python version and CPU then do not matter; anything else fails, naming it.
- `install_wheels` (first thing the check does there): `pip install --no-index --no-deps --target
  <a folder outside the tree>` of those wheels (unzipped if pip itself fails), put first on the
  path of the check and of every part it starts.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WHEELS_DIR = ".whl"
CONSTRAINTS = REPO / "constraints.txt"

# Preinstalled on the GPU machine's image (KINDS.md, "Python packages already there", read 2026-11-17).
GPU_MACHINE_PACKAGES: frozenset[str] = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())

# Distributions the device check imports (ldvc's model, training loop and evaluation, open_clip and
# what `import open_clip` imports, accelerate, the data pipeline's readers). mlflow, dvc and
# pycocotools are deliberately absent: the check must not import them (FORBIDDEN).
CHECK_NEEDS: tuple[str, ...] = (
    "torch", "torchvision", "numpy", "pillow", "scipy", "tqdm", "accelerate", "psutil", "packaging", "pyyaml",
    "safetensors", "huggingface-hub", "timm", "regex", "open-clip-torch", "ftfy", "wcwidth", "ruamel-yaml",
)
FORBIDDEN = ("mlflow", "dvc", "pycocotools")


def normalize(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lacking() -> list[str]:
    """The distributions the check needs that the GPU machine does not have."""
    return [n for n in CHECK_NEEDS if normalize(n) not in GPU_MACHINE_PACKAGES]


def pinned_versions(path: Path = CONSTRAINTS) -> dict[str, str]:
    """{normalised name: version} of the `name==version` lines of a constraints file."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[normalize(name)] = version.strip()
    return out


def prepare_wheels(dest: Path, python: str = sys.executable) -> list[Path]:
    """Download the wheels of `lacking()` at their pinned versions into `dest` (module docstring)."""
    pins = pinned_versions()
    missing = [n for n in lacking() if normalize(n) not in pins]
    if missing:
        raise SystemExit(f"{CONSTRAINTS} pins no version of {missing}: add them (name==version) first")
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):  # one version of each: two would stop the install there
        old.unlink()
    reqs = [f"{n}=={pins[normalize(n)]}" for n in lacking()]
    cmd = [python, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", str(dest),
           "--python-version", "3.12", "--implementation", "py", "--abi", "none", "--platform", "any", *reqs]
    print("[device_check] " + " ".join(cmd), flush=True)
    done = subprocess.run(cmd)
    if done.returncode != 0:
        raise SystemExit(f"pip download failed ({done.returncode}) for {reqs}: a pure-Python wheel of each is needed")
    wheels = sorted(dest.glob("*.whl"))
    impure = [w.name for w in wheels if not w.name.endswith("-none-any.whl")]
    if impure:
        raise SystemExit(f"{impure} are not pure-Python wheels: the GPU machine's Python and CPU would have to match")
    got = {normalize(w.name.split("-")[0]) for w in wheels}
    if got != {normalize(n) for n in lacking()}:
        raise SystemExit(f"wheels in {dest} are {sorted(got)}, expected {sorted(normalize(n) for n in lacking())}")
    size = sum(w.stat().st_size for w in wheels)
    print(f"[device_check] {len(wheels)} wheels, {size / 2**20:.1f} MiB in {dest}: "
          + ", ".join(w.name for w in wheels), flush=True)
    return wheels


def importable(modules: tuple[str, ...]) -> list[str]:
    """The modules of `modules` that cannot be imported here."""
    out = []
    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError:
            out.append(m)
    return out


def install_wheels(wheels: Path, target: Path) -> str:
    """Install the carried wheels into `target` (pip --no-index --no-deps, else unzip) and put it first
    on sys.path; returns how ("pip" or "unzip"). A no-op returning "present" when nothing is missing."""
    found = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    needed = ("open_clip", "ruamel.yaml", "ftfy")
    if not importable(needed):
        return "present"
    if not found:
        raise SystemExit(f"{importable(needed)} cannot be imported and {wheels} holds no wheels: run the README's "
                         f"preparation command (python -m benchmarks.device_check prepare) and carry {WHEELS_DIR}")
    target.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
           "--disable-pip-version-check", "--upgrade", "--target", str(target), *map(str, found)]
    how = "pip"
    if subprocess.run(cmd).returncode != 0:
        how = "unzip"  # a python without a working pip: wheels are zip files laid out for site-packages
        for whl in found:
            with zipfile.ZipFile(whl) as z:
                z.extractall(target)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    still = importable(needed)
    if still:
        raise SystemExit(f"{still} still cannot be imported after installing {wheels} into {target}")
    return how
