"""``model:MODULE:CALLABLE`` spaces: any PyTorch CNN, traced (:mod:`pruningnet.spaces.traced`).

The registry resolves such a name here (:func:`model_entry`): ``MODULE`` is imported, ``CALLABLE``
(a function or class) is called with the space's *model options* as keyword arguments, and the
model is traced on a ``(1, in_channels, input_size, input_size)`` input. Space options are those of
every space that apply (``input_size``, ``in_channels``, ``num_classes``, ``ratios``, ``round_to``,
``fixed_units``) plus ``leaf_modules``; any other option is passed to the callable
(``-o width_mult=0.5``). ``num_classes`` is passed too when the callable takes it; otherwise it is
the width the model outputs. :func:`space_from_model` makes a space of a model object.
"""
from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import sys
from typing import Any, Callable

import torch
from torch import nn

from ..errors import UserError
from .traced import trace_network

PREFIX = "model:"
_NAME = re.compile(r"^model:([A-Za-z_][\w.]*):([A-Za-z_][\w.]*)$")
SPACE_KEYS = ("input_size", "in_channels", "num_classes", "ratios", "round_to", "fixed_units", "leaf_modules")
_INSTANCES: dict[str, tuple[nn.Module, tuple]] = {}  # space_from_model's models, by space name
_CACHE: dict[str, Any] = {}
_CACHE_SIZE = 16


def is_model_name(name: str) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def _callable(name: str) -> Callable:
    m = _NAME.match(name)
    if not m:
        raise UserError(f"space {name!r} is not model:MODULE:CALLABLE (e.g. model:torchvision.models:resnet18)")
    module_name, attr = m.groups()
    try:
        obj: Any = _import(module_name)
    except ImportError as e:
        raise UserError(f"space {name}: module {module_name!r} cannot be imported ({e}); accepted: an installed "
                        "module, one on PYTHONPATH or in the current directory") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"space {name}: {module_name} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"space {name}: {module_name}.{attr} is not callable")
    return obj


def _import(module_name: str):
    """``module_name``, also from the current directory (the console script does not put it on
    ``sys.path``; ``python -m`` does)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name.split(".")[0] or os.getcwd() in sys.path:
            raise
    sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    finally:
        sys.path.remove(os.getcwd())


def _takes(fn: Callable, key: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == key or p.kind is p.VAR_KEYWORD for p in params)


def _json_ready(key: str, value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise UserError(f"option {key}={value!r} must be a number, string, boolean or list of them") from None
    return value


def model_kwargs(opts: dict) -> dict:
    """The options passed to the model's callable."""
    return {k: v for k, v in opts.items() if k not in SPACE_KEYS}


def traced(name: str, opts: dict):
    """The :class:`~pruningnet.spaces.traced.TracedNetwork` of a model space's resolved options (cached)."""
    key = name + json.dumps({k: opts[k] for k in sorted(opts) if k != "ratios"},
                            sort_keys=True, default=str)
    if key in _CACHE:
        return _CACHE[key]
    if name in _INSTANCES:
        model, _ = _INSTANCES[name]
    else:
        fn = _callable(name)
        kwargs = model_kwargs(opts)
        if opts.get("num_classes") is not None and _takes(fn, "num_classes"):
            kwargs["num_classes"] = opts["num_classes"]
        model = _build(fn, kwargs, name)
    x = torch.empty(1, opts["in_channels"], opts["input_size"], opts["input_size"], device="meta")
    result = trace_network(model, x, name, opts["leaf_modules"], opts["fixed_units"])
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = result
    return result


def _build(fn: Callable, kwargs: dict, name: str) -> nn.Module:
    """The model, on the meta device where its constructor allows (no weights are needed)."""
    try:
        try:
            with torch.device("meta"):
                model = fn(**kwargs)
        except (NotImplementedError, RuntimeError):  # a constructor that reads tensor values
            model = fn(**kwargs)
    except TypeError as e:
        raise UserError(f"space {name}: calling it with {kwargs} failed: {e}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"space {name}: the callable returned {type(model).__name__}, not a torch.nn.Module")
    return model


def resolve_model_options(name: str, defaults: dict, options: dict, check) -> dict:
    """Space options checked as every space's (``check``: the registry's checks), model options
    passed through; ``num_classes`` resolved to the traced model's output width."""
    opts = dict(defaults)
    for key, value in (options or {}).items():
        opts[key] = _json_ready(key, value)
    opts = check(opts)
    leaves = opts["leaf_modules"]
    if isinstance(leaves, str):
        leaves = [x for x in leaves.split(",") if x]
    if not isinstance(leaves, (list, tuple)) or not all(isinstance(x, str) for x in leaves):
        raise UserError(f"option leaf_modules={leaves!r} must be a list of module paths")
    opts["leaf_modules"] = sorted(set(leaves))
    want = opts["num_classes"]
    net = traced(name, opts)
    if want is not None and net.num_outputs != want:
        raise UserError(f"space {name}: the model outputs {net.num_outputs} values but num_classes={want}"
                        + ("" if _takes_name(name, "num_classes") else " (its callable takes no num_classes)"))
    opts["num_classes"] = net.num_outputs
    return opts


def _takes_name(name: str, key: str) -> bool:
    return name in _INSTANCES or _takes(_callable(name), key)


def describe(name: str, opts: dict):
    """A registry describer: the traced network's unit maxes and its one node."""
    net = traced(name, opts)
    return dict(net.unit_max), (net.node,)


def space_from_model(model: nn.Module, example_input: torch.Tensor, name: str | None = None, **options):
    """The space of a model object, traced on ``example_input``'s shape (a square ``(N, C, S, S)``).

    The space is named ``name`` (default ``model:MODULE:CLASS`` of the model's class) and, within this
    process, ``get_space(name, ...)`` returns it again. Options are the space options of a
    ``model:`` space (``ratios``, ``round_to``, ``fixed_units``, ``leaf_modules``, ...).
    """
    from .registry import get_space

    if not isinstance(model, nn.Module):
        raise UserError(f"space_from_model needs a torch.nn.Module, not {type(model).__name__}")
    shape = tuple(example_input.shape)
    if len(shape) != 4 or shape[2] != shape[3]:
        raise UserError(f"example_input has shape {list(shape)}; accepted: (N, C, S, S), a square image batch")
    name = name or f"{PREFIX}{type(model).__module__}:{type(model).__qualname__}"
    if not is_model_name(name):
        name = PREFIX + name
    _INSTANCES[name] = (model, shape)
    for k in [k for k in _CACHE if k.startswith(name + "{")]:
        del _CACHE[k]
    return get_space(name, input_size=shape[2], in_channels=shape[1], **options)
