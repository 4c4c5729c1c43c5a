"""Space registry: names map to describers; options are validated and resolved here.

A backbone is one module that calls :func:`register_space` with its default options and a function
``describe(options) -> (unit_max, nodes)``. Nothing else needs to change to add one.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import UserError
from .ir import Node, Space, Unit, ref_units, round_channels
from .lowering import lower_nodes

MAX_RATIOS = 1000  # choices per unit; MetaPruning uses 31
MAX_INPUT_SIZE = 8192  # pixels per side; keeps MACs of any space far inside int64

#: MetaPruning's 31 ratios 0.10, 0.13, ..., 1.00 of the max width.
METAPRUNING_RATIOS: tuple[float, ...] = tuple(round(0.10 + 0.03 * i, 2) for i in range(31))

COMMON_DEFAULTS: dict[str, Any] = {
    "input_size": 224,
    "in_channels": 3,
    "num_classes": 1000,
    "width_mult": 1.0,
    "ratios": METAPRUNING_RATIOS,
    "round_to": 1,
    "fixed_units": (),
    "small_input": False,
}

Describer = Callable[[dict], "tuple[dict[str, int], tuple[Node, ...]]"]


@dataclass(frozen=True)
class _Entry:
    name: str
    describe: Describer
    defaults: dict
    summary: str
    resolve: Callable[[dict], dict] | None = None  # a model space's own option resolution


_REGISTRY: dict[str, _Entry] = {}


def register_space(name: str, *, summary: str, defaults: dict | None = None):
    """Decorator registering ``describe`` under ``name``; a duplicate name raises."""

    def deco(fn: Describer) -> Describer:
        if name in _REGISTRY:
            raise ValueError(f"space {name!r} is already registered")
        _REGISTRY[name] = _Entry(name, fn, {**COMMON_DEFAULTS, **(defaults or {})}, summary)
        return fn

    return deco


def list_spaces(pattern: str = "*") -> list[str]:
    """Registered space names, sorted, filtered by a shell-style wildcard."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def space_summary(name: str) -> str:
    return _entry(name).summary


def default_options(name: str) -> dict:
    return dict(_entry(name).defaults)


#: defaults of ``model:MODULE:CALLABLE`` spaces (:mod:`pruningnet.spaces.model`); other options go to the callable
MODEL_DEFAULTS: dict[str, Any] = {"input_size": 224, "in_channels": 3, "num_classes": None,
                                  "ratios": METAPRUNING_RATIOS, "round_to": 1, "fixed_units": (), "leaf_modules": ()}


def _entry(name: str) -> _Entry:
    if name in _REGISTRY:
        return _REGISTRY[name]
    from . import model

    if model.is_model_name(name):
        def resolve(options: dict) -> dict:
            return model.resolve_model_options(name, MODEL_DEFAULTS, options, _check_common)

        return _Entry(name, lambda opts: model.describe(name, opts), dict(MODEL_DEFAULTS),
                      "a PyTorch model traced with torch.fx: every conv/linear output a unit, tied by "
                      "channel coupling", resolve)
    raise UserError(f"unknown space {name!r}; accepted: {', '.join(list_spaces())} or "
                    "model:MODULE:CALLABLE (any PyTorch CNN)")


def parse_ratios(value: Any) -> tuple[float, ...]:
    """A ratio grid from a list or a ``start:stop:step`` string (stop included)."""
    if isinstance(value, str):
        parts = value.split(":")
        try:
            start, stop, step = (float(p) for p in parts)
        except ValueError:
            raise UserError(f"option ratios={value!r} is not a list or start:stop:step; "
                            "accepted e.g. 0.1:1.0:0.03 or [0.5, 0.75, 1.0]") from None
        if not all(math.isfinite(v) for v in (start, stop, step)) or not 0 < start <= stop <= 1:
            raise UserError(f"option ratios={value!r} is not accepted; accepted: start:stop:step with "
                            "0 < start <= stop <= 1 and step > 0, e.g. 0.1:1.0:0.03")
        if step <= 0:
            raise UserError(f"option ratios={value!r}: step must be > 0")
        n = int(round((stop - start) / step)) + 1
        if n > MAX_RATIOS:
            raise UserError(f"option ratios={value!r} gives {n:,} ratios; accepted: at most {MAX_RATIOS}")
        value = [round(start + i * step, 6) for i in range(n)]
    if isinstance(value, (list, tuple)) and len(value) > MAX_RATIOS:
        raise UserError(f"option ratios has {len(value):,} values; accepted: at most {MAX_RATIOS}")
    if not isinstance(value, (list, tuple)) or not value:
        raise UserError(f"option ratios={value!r} must be a non-empty list of numbers in (0, 1]")
    out = []
    for r in value:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1:  # nan fails too
            raise UserError(f"option ratios has {r!r}; accepted: numbers in (0, 1]")
        out.append(float(r))
    return tuple(sorted(set(out)))


def _check_int(key: str, value: Any, lo: int, hi: int = 2**20) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise UserError(f"option {key}={value!r} must be an integer in [{lo}, {hi:,}]")
    return value


def resolve_options(name: str, options: dict | None = None) -> dict:
    """Defaults overlaid with ``options``; unknown keys and bad values raise :class:`UserError`."""
    entry = _entry(name)
    if entry.resolve is not None:
        return entry.resolve(options or {})
    opts = dict(entry.defaults)
    for key, value in (options or {}).items():
        if key not in opts:
            raise UserError(f"unknown option {key!r} for space {name}; accepted: "
                            f"{', '.join(sorted(opts))}")
        opts[key] = value
    return _check_common(opts)


def _check_common(opts: dict) -> dict:
    """The checks every space's common options get (those ``opts`` has)."""
    opts = dict(opts)
    opts["input_size"] = _check_int("input_size", opts["input_size"], 8, MAX_INPUT_SIZE)
    opts["in_channels"] = _check_int("in_channels", opts["in_channels"], 1)
    if opts["num_classes"] is not None or "width_mult" in opts:
        opts["num_classes"] = _check_int("num_classes", opts["num_classes"], 1)
    opts["round_to"] = _check_int("round_to", opts["round_to"], 1)
    if "width_mult" in opts:
        wm = opts["width_mult"]
        if isinstance(wm, bool) or not isinstance(wm, (int, float)) or not 0 < wm <= 8:
            raise UserError(f"option width_mult={wm!r} must be a number in (0, 8]")
        opts["width_mult"] = float(wm)
    opts["ratios"] = list(parse_ratios(opts["ratios"]))
    if "small_input" in opts and not isinstance(opts["small_input"], bool):
        raise UserError(f"option small_input={opts['small_input']!r} must be true or false")
    fixed = opts["fixed_units"]
    if isinstance(fixed, str):
        fixed = [f for f in fixed.split(",") if f]
    if not isinstance(fixed, (list, tuple)) or not all(isinstance(f, str) for f in fixed):
        raise UserError(f"option fixed_units={fixed!r} must be a list of unit names")
    opts["fixed_units"] = sorted(set(fixed))
    return opts


def _units_in_run_order(layers) -> list[str]:
    order: list[str] = []
    for layer in layers:
        for ref in (layer.in_ch, layer.out_ch):
            for unit in ref_units(ref):
                if unit not in order:
                    order.append(unit)
    return order


def get_space(name: str, **options: Any) -> Space:
    """The space ``name`` with ``options`` resolved over its defaults."""
    entry = _entry(name)
    opts = resolve_options(name, options)
    unit_max, nodes = entry.describe(opts)
    try:
        layers = lower_nodes(nodes, opts["input_size"], opts["in_channels"])
    except ValueError:
        raise UserError(f"option input_size={opts['input_size']} is too small for space {name}") from None
    order = _units_in_run_order(x for x in layers if x.weighted)
    assert set(order) == set(unit_max), "describer units and nodes disagree"
    unknown = [f for f in opts["fixed_units"] if f not in unit_max]
    if unknown:
        raise UserError(f"option fixed_units names unknown unit {unknown[0]!r}; accepted: "
                        f"{', '.join(order)}")
    multiples = {}  # a traced network's grouped convs: counts stay multiples of their groups
    for node in nodes:
        multiples.update(getattr(node, "multiples", {}))
    units = []
    for u in order:
        mx = unit_max[u]
        step = math.lcm(opts["round_to"], multiples.get(u, 1))
        if u in opts["fixed_units"]:
            choices = (mx,)
        else:
            choices = tuple(sorted({min(mx, round_channels(mx * r, step)) for r in opts["ratios"]}))
        units.append(Unit(u, mx, choices))
    return Space(name, opts, tuple(units), nodes, layers)
