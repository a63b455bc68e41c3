"""The software a result was produced with: package versions, Python, platform, CUDA/cuDNN.

`versions()` is recorded by every stage run (MLflow tags `env.<name>`) and written beside the
metrics, so a number can be traced to the exact torch / open_clip / mlflow build that made it.

Choices:
- Versions come from installed distribution metadata (importlib.metadata), never from importing
  the packages: importing torch or mlflow costs seconds, can initialise CUDA, and must not be a
  side effect of asking a question. It also works where a package is missing (the GPU machine has
  no mlflow/dvc): the answer is then "absent", not an ImportError.
- CUDA is read from torch's own build record (torch/version.py, a file in the wheel) and cuDNN from
  the version of the NVIDIA cuDNN wheel torch depends on; a CPU-only build reports CUDA "none".
  These are the versions torch was built/installed with, which is what makes a run reproducible
  (the driver version is a property of the machine, not of the environment).
"""

from __future__ import annotations

import functools
import platform
import re
import sys
from importlib import metadata

# key in the result -> distribution name on PyPI (the import name can differ: open_clip)
PACKAGES: dict[str, str] = {
    "torch": "torch",
    "torchvision": "torchvision",
    "open_clip_torch": "open_clip_torch",
    "dvc": "dvc",
    "mlflow": "mlflow",
    "accelerate": "accelerate",
    "numpy": "numpy",
}
ABSENT = "absent"
# cuDNN ships as one wheel per CUDA major version; torch pins exactly one of them.
CUDNN_DISTRIBUTIONS = ("nvidia-cudnn-cu13", "nvidia-cudnn-cu12", "nvidia-cudnn-cu11")


def package_version(distribution: str) -> str:
    """Installed version of a distribution, or "absent"."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ABSENT


def _torch_build_record() -> str | None:
    """Text of torch/version.py (written when the wheel was built), read as a file, not imported."""
    try:
        dist = metadata.distribution("torch")
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.as_posix() == "torch/version.py":
            try:
                return f.read_text()
            except OSError:
                return ""
    return ""


def _record_field(text: str, name: str) -> str | None:
    # e.g. `__version__ = '2.14.1+cu130'`, `cuda: Optional[str] = '13.0'` (`= None` on CPU builds)
    m = re.search(rf"^{name}\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, flags=re.M)
    return m.group(1) if m else None


def torch_version() -> str:
    """torch's full build version ("2.14.1+cu130": the local part names the CUDA build), else the
    distribution version, or "absent"."""
    text = _torch_build_record()
    if text is None:
        return ABSENT
    return _record_field(text, "__version__") or package_version("torch")


def torch_cuda_version() -> str:
    """The CUDA version torch was built for ("none" for a CPU build, "absent" without torch)."""
    text = _torch_build_record()
    if text is None:
        return ABSENT
    if not text:
        return "unknown"
    return _record_field(text, "cuda") or "none"


def cudnn_version() -> str:
    """Version of the NVIDIA cuDNN wheel installed with torch, or "absent"."""
    for dist in CUDNN_DISTRIBUTIONS:
        v = package_version(dist)
        if v != ABSENT:
            return v
    return ABSENT


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    out = {key: package_version(dist) for key, dist in PACKAGES.items()}
    out["torch"] = torch_version()
    out["python"] = platform.python_version()
    out["platform"] = platform.platform()
    out["cuda"] = torch_cuda_version()
    out["cudnn"] = cudnn_version()
    return tuple(out.items())


def versions() -> dict[str, str]:
    """{"torch", "torchvision", "open_clip_torch", "dvc", "mlflow", "accelerate", "numpy", "python",
    "platform", "cuda", "cudnn"} -> version string; "absent" for what is not installed.

    Imports none of these packages (see the module docstring); computed once per process.
    """
    return dict(_versions())


if __name__ == "__main__":  # `python -m ldvc.environment`: the table, for bug reports
    for k, v in versions().items():
        sys.stdout.write(f"{k:16s} {v}\n")
