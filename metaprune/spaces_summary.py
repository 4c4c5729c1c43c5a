"""Summaries of search spaces, shared by the CLI (``metaprune space``) and the service (``/api/spaces``).

It imports ``pruningnet`` only: neither the CLI nor the service, so both may import it.
"""
from __future__ import annotations

from pruningnet import get_space
from pruningnet.cost import cost_model
from pruningnet.spaces import space_summary

__all__ = ["space_info", "space_summary"]


def space_info(name: str, options: dict, convention: str = "macs") -> dict:
    """A JSON-ready summary of space ``name`` built with ``options``: its units (name, max, choices)
    and its smallest and largest member's MACs and parameters (and FLOPs by MetaPruning's counter
    when ``convention`` is ``"metapruning"``)."""
    sp = get_space(name, **options)
    cm = cost_model(sp)
    lo, hi = sp.min_channels(), sp.max_channels()
    info = {"space": sp.name, "options": sp.options,
            "units": [{"name": u.name, "max": u.max, "choices": list(u.choices)} for u in sp.units],
            "min_macs": int(cm.macs(lo)[0]), "max_macs": int(cm.macs(hi)[0]),
            "min_params": int(cm.params(lo)[0]), "max_params": int(cm.params(hi)[0])}
    if convention != "macs":
        info.update(min_flops_metapruning=int(cm.cost(lo, convention)[0]),
                    max_flops_metapruning=int(cm.cost(hi, convention)[0]))
    return info
