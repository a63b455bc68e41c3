"""Shared pytest fixtures. Tests run offline: HF_HUB_OFFLINE=1 (toolchain.md: otherwise each
pretrained-weight request spends ~46 s in retries) and only 127.0.0.1 is contacted."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))  # makes `import fixtures` work whatever the import mode

from fixtures import build_mini_coco_json, build_mini_coco_stuff, build_mini_voc  # noqa: E402
from fixtures.mini_datasets import build_mini_context59  # noqa: E402


@pytest.fixture(scope="session")
def mini_voc_archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """{"voc2012": (tar, md5), "sbd": (tgz, md5)} in one served directory (built once per session)."""
    return build_mini_voc(tmp_path_factory.mktemp("www_voc"))


@pytest.fixture(scope="session")
def mini_coco_stuff_archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    return build_mini_coco_stuff(tmp_path_factory.mktemp("www_coco"))


@pytest.fixture(scope="session")
def mini_context59_archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """{"voc2010": (tar, md5), "pascal_context": (tar.gz, md5)} in one served directory."""
    return build_mini_context59(tmp_path_factory.mktemp("www_context59"))


@pytest.fixture(scope="session")
def mini_coco_json(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_mini_coco_json(tmp_path_factory.mktemp("coco_json"))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run on 2-core CI machines next to subprocesses: one intra-op thread each keeps them
    from oversubscribing the cores (and makes CPU float sums reproducible)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
