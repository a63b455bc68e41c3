"""Datasets over the canonical format (ldvc/data/canonical.py) for training and evaluation.

Training data order and augmentation are a PURE FUNCTION of (seed, sample position). Optimizer
step s consumes the global batch (`train.batch_size`, ZegCLIP's 16 = 4 GPUs x 4) of positions
s * batch_size + k, k = 0 .. batch_size - 1, whatever the layout (ldvc/train/layout.py): with P
processes, b images per device and A = batch_size / (P * b) accumulation micro-steps, micro-step m
of process r takes
    position = s * batch_size + m * (P * b) + r * b + j,   j = 0 .. b - 1
    image    = permutation(seed, epoch = position // N)[position % N]
    augment  = train_augment(..., generator seeded by (seed, position))
So every layout of the same global batch sees the same images in the same optimizer step, and a
run resumed at step s sees exactly the samples an uninterrupted run sees.

Evaluation: keep-ratio resize to short side image_size; the label stays at the original size
(metrics are computed there, as mmseg does). Each process evaluates a disjoint shard
(indices rank::world) with no padding duplicates.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler

from ldvc.config import AugmentConfig
from ldvc.data import canonical
from ldvc.data.augment import eval_size, resize_pair, train_augment
from ldvc.seeding import mix_seed


class DatasetError(ValueError):
    """The prepared data cannot be used (empty split, unreadable file, size mismatch)."""


def load_image(path: Path) -> torch.Tensor:
    """(3, H, W) float in [0, 1]; an undecodable file raises DatasetError naming it."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DatasetError(
            f"cannot decode image {path} ({type(err).__name__}: {err}); replace the file or "
            f"re-run the data preparation (dvc repro download)"
        ) from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def load_label(path: Path) -> torch.Tensor:
    """(H, W) uint8 train ids (255 ignore)."""
    if not path.exists():
        raise DatasetError(f"label {path} not found; re-run the data preparation (dvc repro download)")
    try:
        return torch.from_numpy(canonical.read_label(path))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DatasetError(f"cannot decode label {path} ({type(err).__name__}: {err})") from None


class SegmentationFolder:
    """One split of a canonical dataset: ids, class names and raw (image, label) reading."""

    def __init__(self, root: str | Path, split: str) -> None:
        self.root, self.split = Path(root), split
        self.meta = canonical.read_meta(self.root)
        self.classes: list[str] = list(self.meta["classes"])
        if split not in canonical.recorded_splits(self.meta, self.root):
            # e.g. training pointed at a validation-only evaluation target (ldvc/data/canonical.py, "Splits")
            raise DatasetError(str(canonical.missing_split_error(self.root, split, self.meta)))
        self.ids = canonical.list_ids(self.root, split)
        if not self.ids:
            raise DatasetError(
                f"split {split!r} of {self.root} is empty ({canonical.list_path(self.root, split)} lists "
                f"no ids); prepare the data again or point data.root to a prepared dataset"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_id = self.ids[index]
        image = load_image(canonical.image_path(self.root, self.split, image_id))
        label = load_label(canonical.label_path(self.root, self.split, image_id))
        if tuple(label.shape) != tuple(image.shape[-2:]):
            raise DatasetError(
                f"{canonical.label_path(self.root, self.split, image_id)}: label size {tuple(label.shape)} "
                f"!= image size {tuple(image.shape[-2:])}; re-run the data preparation"
            )
        return image, label


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(mix_seed(seed, epoch, 0xDA7A))
    return torch.randperm(n, generator=g)


class TrainStream(Dataset):
    """Indexed by global sample position (see module docstring); returns augmented crops."""

    def __init__(self, folder: SegmentationFolder, seed: int, image_size: int, augment: AugmentConfig) -> None:
        self.folder, self.seed, self.image_size, self.augment = folder, seed, image_size, augment
        self._perm: tuple[int, torch.Tensor] | None = None  # cached (epoch, permutation)

    def __len__(self) -> int:  # positions are unbounded; the sampler decides which are drawn
        return 1 << 62

    def image_index(self, position: int) -> int:
        n = len(self.folder)
        epoch = position // n
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, epoch_permutation(self.seed, epoch, n))
        return int(self._perm[1][position % n])

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        index = self.image_index(position)
        image, label = self.folder.load(index)
        g = torch.Generator().manual_seed(mix_seed(self.seed, position, 0xA06))
        s = train_augment(image, label, self.image_size, self.augment, g)
        return {"image": s.image, "label": s.label.long(), "pad": s.pad,
                "index": torch.tensor(index)}


def micro_batch_positions(step: int, micro: int, batch_size: int, per_device: int, rank: int,
                          world: int) -> list[int]:
    """Global sample positions of process `rank`'s share of micro-step `micro` of optimizer step `step`."""
    if per_device < 1 or batch_size % (world * per_device):
        raise DatasetError(
            f"train.batch_size = {batch_size} (the global batch) is not {world} processes x {per_device} "
            f"images per device x an integer accumulation; see ldvc/train/layout.py"
        )
    accum = batch_size // (world * per_device)
    if not 0 <= micro < accum or not 0 <= rank < world:
        raise DatasetError(f"micro-step {micro} / rank {rank} outside {accum} micro-steps x {world} processes")
    start = step * batch_size + micro * world * per_device + rank * per_device
    return list(range(start, start + per_device))


class StepBatchSampler(Sampler[list[int]]):
    """Yields this process's position lists for steps start_step..total_steps-1, one per micro-step."""

    def __init__(self, start_step: int, total_steps: int, batch_size: int, per_device: int, rank: int,
                 world: int) -> None:
        micro_batch_positions(0, 0, batch_size, per_device, rank, world)  # validate early
        self.args = (start_step, total_steps, batch_size, per_device, rank, world)
        self.accum = batch_size // (world * per_device)

    def __len__(self) -> int:
        start, total = self.args[:2]
        return max(0, total - start) * self.accum

    def __iter__(self) -> Iterator[list[int]]:
        start, total, bs, per, rank, world = self.args
        for step in range(start, total):
            for m in range(self.accum):
                yield micro_batch_positions(step, m, bs, per, rank, world)


class EvalSet(Dataset):
    """Validation images resized for the model, labels at the original size."""

    def __init__(self, folder: SegmentationFolder, image_size: int, indices: list[int] | None = None) -> None:
        self.folder, self.image_size = folder, image_size
        self.indices = list(range(len(folder))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        index = self.indices[i]
        image, label = self.folder.load(index)
        h, w = image.shape[-2:]
        resized, _ = resize_pair(image, None, eval_size(h, w, self.image_size))
        return {"image": resized, "label": label.long(), "index": index, "id": self.folder.ids[index]}


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """Disjoint, covering shards (no padding duplicates, unlike DistributedSampler)."""
    return list(range(rank, n, world))


def collate_list(batch: list[dict]) -> list[dict]:
    """Eval images differ in size: keep the batch a list, inference stacks equal sizes."""
    return batch
