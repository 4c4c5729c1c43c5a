"""Datasets by name, each with a seeded search split carved out of its training data."""
from .config import DataConfig
from .sources import DATASETS, load_data
from .splits import DataSplits, TensorSplit, stratified_carve

__all__ = ["DATASETS", "DataConfig", "load_data", "DataSplits", "TensorSplit", "stratified_carve"]
