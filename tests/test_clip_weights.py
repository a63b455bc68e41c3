"""CLIP weight resolution (ldvc/model/clip_weights.py): local files with sha256, clear errors
for missing files, HF-cache hits, and an open_clip tag that fails within seconds offline."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from ldvc.model.clip_weights import WeightsUnavailableError, resolve_weights


def _write(path: Path, data: bytes = b"weights") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_local_file_absolute_and_relative(tmp_path):
    sha = _write(tmp_path / "w" / "ViT-B-16.safetensors")
    rec = resolve_weights("ViT-B-16", str(tmp_path / "w" / "ViT-B-16.safetensors"), tmp_path)
    assert rec == {"path": str((tmp_path / "w" / "ViT-B-16.safetensors").resolve()), "sha256": sha, "source": "local"}
    assert resolve_weights("ViT-B-16", "w/ViT-B-16.safetensors", tmp_path)["sha256"] == sha


def test_missing_local_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"weight file .*nope\.pt does not exist"):
        resolve_weights("ViT-B-16", "nope.pt", tmp_path)


def test_pipeline_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the clip stage first"):
        resolve_weights("ldvc-tiny-vit", "pipeline", tmp_path)
    sha = _write(tmp_path / "models" / "clip" / "clip.safetensors")
    rec = resolve_weights("ldvc-tiny-vit", "pipeline", tmp_path)
    assert rec["sha256"] == sha and rec["source"] == "pipeline"


@pytest.mark.parametrize("offline", ["1", "0"])
def test_tag_without_internet_fails_fast_with_the_fix(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: a guaranteed miss
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    # With offline=0 the reachability probe decides; point the hub at a closed loopback port.
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")
    t0 = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match=r"clip\.pretrained: /path/to/ViT-B-16\.pt"):
        resolve_weights("ViT-B-16", "openai", tmp_path)
    assert time.monotonic() - t0 < 10


def test_tag_found_in_the_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    repo = tmp_path / "hf" / "hub" / "models--timm--vit_base_patch16_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    sha = _write(repo / "snapshots" / "abc123" / "open_clip_model.safetensors")
    rec = resolve_weights("ViT-B-16", "openai", tmp_path)
    assert rec["sha256"] == sha and rec["source"] == "open_clip:ViT-B-16/openai"


def test_unknown_tag_lists_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"known tags: .*openai"):
        resolve_weights("ViT-B-16", "opneai", tmp_path)
