"""Spaces, subnet specs, the exact cost model, static builders and the PruningNet hypernetwork.

Knows nothing of the search, the CLI or the run store.
"""
from .build import build_model
from .cost import CostModel, cost_model, count_cost, layer_table
from .errors import UserError
from .spaces import get_space, list_spaces, register_space, space_from_model
from .spec import FORMAT, SubnetSpec, make_spec, spec_from_dict

__all__ = ["build_model", "CostModel", "cost_model", "count_cost", "layer_table", "UserError", "get_space", "list_spaces",
           "register_space", "space_from_model", "FORMAT", "SubnetSpec", "make_spec", "spec_from_dict"]
