"""ImageNet-layout folders (``root/train/CLASS/*.jpg``, ``root/val/CLASS/*.jpg``), streamed from disk."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from pruningnet.errors import UserError

from .splits import DataSplits, stratified_carve

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def default_workers() -> int:
    """DataLoader workers: the CPUs this process may use, at most 8 (``METAPRUNE_MAX_THREADS`` caps it)."""
    from ..process.threads import available_cores, max_threads

    cpus = available_cores()
    return min(8, cpus, max_threads() or cpus)


class _Images(torch.utils.data.Dataset):
    """``samples[indices]`` (path, label) decoded with PIL and transformed: no folder scan.

    An item is ``(position, seed)``: with a seed, the image's random crop and flip depend on that seed
    alone (not on the worker that decodes it or on what that worker decoded before), so a pass that
    skips its first batches, or runs on another number of workers, sees the same images."""

    def __init__(self, samples: list[tuple[str, int]], indices: np.ndarray, transform):
        self.samples, self.indices, self.transform = samples, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: tuple[int, int | None]):
        from torchvision.datasets.folder import default_loader

        pos, seed = item
        path, label = self.samples[int(self.indices[pos])]
        image = default_loader(path)
        if seed is None:
            return self.transform(image), label
        gen = torch.default_generator  # torchvision's transforms draw from it (CPU only: cheap)
        state = gen.get_state()
        gen.manual_seed(seed)
        try:
            return self.transform(image), label
        finally:
            gen.set_state(state)


class _Order(torch.utils.data.Sampler):
    """The ``(position, seed)`` items of one pass, replaced before each pass: one DataLoader (and its
    persistent workers) serves every epoch."""

    def __init__(self):
        self.items: list[tuple[int, int | None]] = []

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class FolderSplit:
    """A subset of an image folder with train-time or eval-time transforms. The folder is scanned once
    (``samples``, shared by every split of it); batches decode only the images they use."""

    root: str
    indices: np.ndarray
    image_size: int
    train_transforms: bool
    samples: list = field(default_factory=list, repr=False)
    workers: int = field(default_factory=default_workers)
    _loaders: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict:  # loaders (and their worker processes) stay in their process
        return {**self.__dict__, "_loaders": {}}

    def __len__(self) -> int:
        return len(self.indices)

    def subset(self, index: np.ndarray) -> "FolderSplit":
        """The images at positions ``index`` of this split (scratch training's image caps)."""
        return replace(self, indices=self.indices[np.asarray(index, dtype=np.int64)])

    def _dataset(self, augment: bool):
        from torchvision import transforms as T

        norm = T.Normalize(*IMAGENET_STATS)
        if augment:
            tf = T.Compose([T.RandomResizedCrop(self.image_size), T.RandomHorizontalFlip(), T.ToTensor(), norm])
        else:
            resize = int(round(self.image_size / 0.875))
            tf = T.Compose([T.Resize(resize), T.CenterCrop(self.image_size), T.ToTensor(), norm])
        return _Images(self.samples, self.indices, tf)

    def batches(self, batch_size: int, *, shuffle: bool = False, augment: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False,
                device: str | torch.device = "cpu", start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches in the order ``generator`` draws (one ``randperm``, then one augmentation base seed);
        ``start`` skips that many batches without decoding them. The DataLoader, its (persistent)
        workers and pinned memory are kept for the next pass with the same batch settings."""
        augment = augment and self.train_transforms
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        base = int(torch.randint(0, 2**31 - 1, (1,), generator=generator)) if augment and generator is not None \
            else None
        pin = str(device).startswith("cuda")
        key = (batch_size, augment, drop_last, pin)
        if key not in self._loaders:
            sampler = _Order()
            loader = DataLoader(self._dataset(augment), batch_size=batch_size, sampler=sampler,
                                drop_last=drop_last, num_workers=self.workers, pin_memory=pin,
                                persistent_workers=self.workers > 0)
            self._loaders[key] = (loader, sampler)
        loader, sampler = self._loaders[key]
        first = start * batch_size
        sampler.items = [(int(p), None if base is None else base * 1_000_003 + k)
                         for k, p in enumerate(order.tolist()) if k >= first]
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def load_imagefolder(root: str | None, rng: np.random.Generator, search_per_class: int,
                     image_size: int, workers: int | None = None) -> DataSplits:
    from torchvision import datasets

    if not root:
        raise UserError("dataset imagefolder needs data.root: a folder with train/ and val/ class folders")
    train_dir, val_dir = Path(root) / "train", Path(root) / "val"
    for d in (train_dir, val_dir):
        if not d.is_dir():
            raise UserError(f"imagefolder root {root!r} has no {d.name}/ folder; expected "
                            "ROOT/train/CLASS/*.jpg and ROOT/val/CLASS/*.jpg")
    try:
        train_all = datasets.ImageFolder(str(train_dir))
        test_all = datasets.ImageFolder(str(val_dir))
    except (FileNotFoundError, RuntimeError) as e:  # no class folders, or classes without images
        raise UserError(f"imagefolder root {root!r}: {str(e).splitlines()[0]}; expected "
                        "ROOT/train/CLASS/*.jpg and ROOT/val/CLASS/*.jpg") from None
    labels = np.array(train_all.targets)
    train_idx, search_idx = stratified_carve(labels, search_per_class, rng)
    if test_all.classes != train_all.classes:
        raise UserError(f"imagefolder {root!r}: val/ classes differ from train/ classes")
    test_idx = np.arange(len(test_all))
    train_samples, test_samples = list(train_all.samples), list(test_all.samples)  # the one scan of each
    w = default_workers() if workers is None else workers
    return DataSplits("imagefolder", FolderSplit(str(train_dir), train_idx, image_size, True, train_samples, w),
                      FolderSplit(str(train_dir), search_idx, image_size, False, train_samples, w),
                      FolderSplit(str(val_dir), test_idx, image_size, False, test_samples, w),
                      len(train_all.classes), 3, image_size,
                      {"train": len(train_idx), "search": len(search_idx), "test": len(test_idx)})
