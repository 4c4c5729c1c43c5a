"""Backbones described as data. Importing this package registers the shipped spaces."""
from .ir import Block, Classifier, Conv, MaxPool, Space, Unit, round_channels
from .registry import (METAPRUNING_RATIOS, default_options, get_space, list_spaces, register_space,
                       space_summary)
from .model import space_from_model
from . import mobilenet_v1, mobilenet_v2, mobilenet_v3, resnet50, shufflenet_v2  # noqa: F401  (registration)

__all__ = ["Block", "Classifier", "Conv", "MaxPool", "Space", "Unit", "round_channels",
           "METAPRUNING_RATIOS", "default_options", "get_space", "list_spaces", "register_space",
           "space_summary", "space_from_model"]
