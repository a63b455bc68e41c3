"""Training checkpoints: a plain dict (nanoGPT-style) that makes resume exact.

A checkpoint holds only what training changes: the LEARNABLE parameters (prompts, decoder,
adapter), the optimizer and scheduler states, the RNG states, the step, the config dict, the
class names and the setting. The frozen CLIP is not copied: its model name, weights path and
sha256 are recorded so that a checkpoint cannot be silently paired with another CLIP.
Everything is tensors / lists / numbers / strings, so `torch.load(weights_only=True)` reads it.
Writes are atomic (temp file in the same directory, then `os.replace`): a run killed while
saving leaves either the previous file or the new one, never half of one.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

CHECKPOINT_DIR = "checkpoints"
_ITER_RE = re.compile(r"^iter_(\d{6,})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable or does not fit the model / classes it is loaded into."""


def checkpoint_path(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / CHECKPOINT_DIR / f"iter_{step:06d}.pt"


def list_checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of out_dir/checkpoints/iter_XXXXXX.pt, ascending; temp files are ignored."""
    d = Path(out_dir) / CHECKPOINT_DIR
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _ITER_RE.match(p.name))]
    return sorted(found)


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file beside `path`, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def learnable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """name -> tensor of the parameters that require grad (the frozen CLIP is left out)."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_learnable_state(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Copy `state` into the model's learnable parameters; any mismatch is a CheckpointError."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    shapes = [f"{n}: checkpoint {tuple(state[n].shape)} vs model {tuple(params[n].shape)}"
              for n in sorted(set(params) & set(state)) if state[n].shape != params[n].shape]
    if missing or unexpected or shapes:
        detail = "; ".join(filter(None, [
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}" if missing else "",
            f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}" if unexpected else "",
            f"shape mismatch {shapes[:3]}" if shapes else "",
        ]))
        raise CheckpointError(
            f"checkpoint {source} does not fit this model ({detail}); it was made with another "
            f"architecture (decoder/prompt/CLIP settings): use the params it was trained with"
        )
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[n].to(p.device, p.dtype))


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as lists/tensors (no numpy arrays: weights_only-safe)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((state["python_version"], tuple(state["python"]), None))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint (weights_only); a truncated/corrupt file raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path (eval.checkpoint / --checkpoint)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated / foreign files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not an ldvc checkpoint ({type(err).__name__}: {err}); "
            f"delete it to resume from the previous one, or point to another file"
        ) from None
    required = {"model", "step", "config", "class_names", "clip"}
    if not isinstance(ckpt, dict) or not required <= set(ckpt):
        have = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"checkpoint {path} lacks {sorted(required)} (has {have}): not an ldvc checkpoint")
    return ckpt


def check_classes(ckpt: dict[str, Any], class_names: list[str], source: str | Path) -> None:
    """Evaluation needs the classes the checkpoint was trained for (same names, same order)."""
    if list(ckpt["class_names"]) != list(class_names):
        raise CheckpointError(
            f"checkpoint {source} was trained for {len(ckpt['class_names'])} classes "
            f"({ckpt['class_names'][:4]}...), but the data has {len(class_names)} ({list(class_names)[:4]}...); "
            f"evaluate it on the dataset/split it was trained on"
        )
