"""Resolve `clip.pretrained` to one local weight file and record its sha256.

Three kinds of value (protocol.md: "CLIP ViT-B/16 (OpenAI weights)"; toolchain.md: no model hub
is reachable on the development machines):
- "pipeline": the small CLIP trained by the pipeline's clip stage, models/clip/clip.safetensors;
- a local .pt / .pth / .bin / .safetensors path (relative paths are relative to the repository);
- an open_clip pretrained tag (e.g. "openai" for ViT-B-16): looked up in open_clip's registry;
  the HF-hub cache (or open_clip's URL cache, ~/.cache/clip) is checked first; on a miss the
  download goes through `open_clip.download_pretrained`.
Offline behaviour (ours): open_clip + huggingface_hub retry for ~46 s before failing. We fail in
seconds instead: with HF_HUB_OFFLINE=1 (read at call time) a cache miss fails at once, otherwise
a 3 s TCP probe of the download host decides; the error says how to supply a local file.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import open_clip

from ldvc.files import sha256_file
from ldvc.model.clip_loader import PIPELINE_WEIGHTS, register_configs

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
PROBE_TIMEOUT_S = 3.0


class WeightsUnavailableError(RuntimeError):
    """The requested CLIP weights cannot be found or downloaded (the message says how to supply them)."""


def _record(path: Path, source: str) -> dict[str, str]:
    path = path.resolve()
    return {"path": str(path), "sha256": sha256_file(path), "source": source}


def _local_file_hint(model: str) -> str:
    return (f"supply the weights as a local file instead: download {model} weights on a machine with "
            f"internet and set `clip.pretrained: /path/to/{model}.pt` (or .safetensors) in params.yaml")


def looks_like_path(value: str) -> bool:
    return value.lower().endswith(WEIGHT_SUFFIXES) or "/" in value or os.sep in value or value.startswith("~")


def resolve_weights(model: str, pretrained: str, repo_root: Path) -> dict[str, str]:
    """{"path", "sha256", "source"} of the weight file `pretrained` names for CLIP `model`."""
    repo_root = Path(repo_root)
    if pretrained == "pipeline":
        path = repo_root / PIPELINE_WEIGHTS
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: the pipeline's CLIP weights do not exist yet; run the clip stage first "
                f"(`dvc repro clip`), or set clip.pretrained to an open_clip tag or a local weight file"
            )
        return _record(path, "pipeline")
    if looks_like_path(pretrained):
        path = Path(pretrained).expanduser()
        path = path if path.is_absolute() else repo_root / path
        if not path.is_file():
            raise FileNotFoundError(
                f"clip.pretrained: weight file {path} does not exist; fix the path (relative paths are "
                f"relative to {repo_root}) or use an open_clip tag such as 'openai'"
            )
        if path.suffix.lower() not in WEIGHT_SUFFIXES:
            raise ValueError(f"clip.pretrained: {path} is not a {'/'.join(WEIGHT_SUFFIXES)} weight file")
        return _record(path, "local")
    return _resolve_tag(model, pretrained)


def _resolve_tag(model: str, tag: str) -> dict[str, str]:
    register_configs()
    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise ValueError(
            f"clip.pretrained = {tag!r} is neither 'pipeline', a weight file nor an open_clip tag of "
            f"{model!r} (known tags: {tags or 'none'})"
        )
    cached = _cached_file(cfg)
    if cached is not None:
        return _record(cached, f"open_clip:{model}/{tag}")
    hf_repo = cfg.get("hf_hub", "")
    host = _hf_host() if hf_repo else urlparse(cfg.get("url", "")).hostname or ""
    if _env_true("HF_HUB_OFFLINE") and hf_repo:
        raise WeightsUnavailableError(
            f"{model}/{tag}: not in the Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading; "
            + _local_file_hint(model)
        )
    if not _reachable(host):
        raise WeightsUnavailableError(
            f"{model}/{tag}: not cached and the download host {host} is unreachable (no internet?); "
            + _local_file_hint(model)
        )
    try:
        path = open_clip.download_pretrained(cfg)
    except Exception as err:  # open_clip wraps hub errors in several types
        raise WeightsUnavailableError(f"{model}/{tag}: download failed ({err}); " + _local_file_hint(model)) from err
    if not path or not Path(path).is_file():
        raise WeightsUnavailableError(f"{model}/{tag}: open_clip returned no file; " + _local_file_hint(model))
    return _record(Path(path), f"open_clip:{model}/{tag}")


def _cached_file(cfg: dict) -> Path | None:
    """The already-downloaded weight file of an open_clip pretrained cfg, if any (no network)."""
    hf = cfg.get("hf_hub", "")
    if hf:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hf)  # "org/name/" -> ("org/name", ""): open_clip's default names
        candidates = [filename] if filename else [open_clip.pretrained.HF_SAFE_WEIGHTS_NAME,
                                                  open_clip.pretrained.HF_WEIGHTS_NAME]
        for name in candidates:
            # The cache dir is computed now, not at huggingface_hub import, so HF_HOME set later counts.
            hit = try_to_load_from_cache(repo_id, name, cache_dir=_hf_cache_dir())
            if isinstance(hit, str) and Path(hit).is_file():
                return Path(hit)
    url = cfg.get("url", "")
    if url:
        p = Path("~/.cache/clip").expanduser() / os.path.basename(urlparse(url).path)
        if p.is_file():
            return p
    return None


def _hf_cache_dir() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
    return os.path.join(home, "hub")


def _hf_host() -> str:
    return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _reachable(host: str, port: int = 443) -> bool:
    """Can a TCP connection to `host` be opened within PROBE_TIMEOUT_S (DNS included)?"""
    if not host:
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
                result.append(True)
        except OSError:
            result.append(False)

    # getaddrinfo ignores socket timeouts (a dead resolver can block ~20 s): bound it with a thread.
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(PROBE_TIMEOUT_S + 1.0)
    return bool(result and result[0])
