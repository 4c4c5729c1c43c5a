"""In-memory image splits and the seeded carving of a search split out of the training data."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class TensorSplit:
    """Images as a uint8 (N, C, H, W) tensor and int64 labels; batches come out normalised floats."""

    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool = False  # horizontal flips are fine for photos, not for digits

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "TensorSplit":
        idx = torch.as_tensor(index, dtype=torch.long)
        return TensorSplit(self.images[idx], self.labels[idx], self.mean, self.std, self.flip)

    def batches(self, batch_size: int, *, shuffle: bool = False, augment: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False,
                device: str | torch.device = "cpu", start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised float batches; ``augment`` pads by 1/8 of the size and crops back (and flips).
        ``start``: skip that many batches (their random draws are made, no image is touched), so a
        resumed epoch continues exactly where it stopped."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        stop = n - n % batch_size if drop_last else n
        for b, first in enumerate(range(0, stop, batch_size)):
            idx = order[first:first + batch_size]
            if b < start:
                if augment:
                    _shift_draws(len(idx), self.images.shape[-2], generator, self.flip)
                continue
            x = self.images[idx].float().div_(255)
            if augment:
                x = _random_shift(x, generator, self.flip)
            x = (x - mean) / std
            yield x.to(device, non_blocking=True), self.labels[idx].to(device, non_blocking=True)


def _shift_draws(n: int, h: int, generator: torch.Generator | None, flip: bool):
    """The random numbers of one batch's augmentation: x and y shifts, and the flip draw."""
    pad = max(1, h // 8)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    return pad, dx, dy, (torch.rand(n, generator=generator) < 0.5) if flip else None


def _random_shift(x: torch.Tensor, generator: torch.Generator | None, flip: bool) -> torch.Tensor:
    n, _, h, w = x.shape
    pad, dx, dy, mask = _shift_draws(n, h, generator, flip)
    padded = F.pad(x, (pad, pad, pad, pad))
    # gather one crop per image with unfold-free indexing
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h))
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w))
    out = padded[torch.arange(n).view(n, 1, 1), :, rows.view(n, h, 1), cols.view(n, 1, w)]
    out = out.permute(0, 3, 1, 2)
    if mask is not None:
        out[mask] = out[mask].flip(-1)
    return out.contiguous()


def stratified_carve(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(rest, carved)`` where ``carved`` holds ``per_class`` random images of each class
    (half of a class if it has fewer than twice that). Both come in a random order, so the first
    ``k`` images of a split are a random sample even when the source is sorted by class."""
    carved = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = min(per_class, len(idx) // 2)
        carved.append(rng.choice(idx, size=k, replace=False))
    carved_idx = np.concatenate(carved)
    rest = np.setdiff1d(np.arange(len(labels)), carved_idx)
    return rng.permutation(rest), rng.permutation(carved_idx)


@dataclass
class DataSplits:
    """The three splits of a dataset. ``search`` is carved from the training data; only final
    trained models ever see ``test``."""

    name: str
    train: object
    search: object
    test: object
    num_classes: int
    in_channels: int
    image_size: int
    info: dict = field(default_factory=dict)
    #: what the images were made from, where not the images themselves (``glyphs``: the font
    #: files' digest); part of the fingerprints
    source: str | None = None


def split_fingerprint(split: object) -> str | None:
    """A short digest of which examples a split holds, in order (images and labels of an in-memory
    split, indices of a folder split); None for a split type it does not know."""
    h = hashlib.sha256()
    if isinstance(split, TensorSplit):
        h.update(split.labels.numpy().tobytes())
        h.update(split.images.numpy().tobytes())
    elif hasattr(split, "indices"):
        h.update(np.asarray(split.indices, dtype=np.int64).tobytes())
    else:
        return None
    return h.hexdigest()[:16]


def fingerprints(data: DataSplits) -> dict[str, str | None]:
    """``{"train": ..., "search": ..., "test": ...}`` digests of ``data``'s splits (and ``"source"``,
    the digest of what they were made from, where the dataset has one)."""
    out = {name: split_fingerprint(getattr(data, name)) for name in ("train", "search", "test")}
    if data.source is not None:
        out["source"] = data.source
    return out
