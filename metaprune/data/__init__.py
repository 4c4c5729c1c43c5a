"""Datasets by name, each with a seeded search split carved out of its training data."""
from .sources import DATASETS, load_data
from .splits import DataSplits, TensorSplit, stratified_carve

__all__ = ["DATASETS", "load_data", "DataSplits", "TensorSplit", "stratified_carve"]
