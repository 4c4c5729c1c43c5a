"""metaprune: MetaPruning-style channel search under MACs, parameter or latency budgets.

The Python API: spaces (:func:`get_space`, :func:`list_spaces`, :func:`space_from_model` for any
PyTorch CNN), specs (:func:`load_spec`,
:func:`save_spec`, :func:`make_spec`), cost (:func:`count_cost`), static models (:func:`build_model`).
"""
from pruningnet import (CostModel, SubnetSpec, UserError, build_model, count_cost, get_space,
                        list_spaces, make_spec, register_space, space_from_model, spec_from_dict)

from .store.specfile import load_spec, save_spec

__version__ = "0.1.0"

__all__ = ["CostModel", "SubnetSpec", "UserError", "build_model", "count_cost", "get_space",
           "list_spaces", "make_spec", "register_space", "space_from_model", "spec_from_dict", "load_spec", "save_spec",
           "__version__"]
