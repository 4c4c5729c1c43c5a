"""Typed configs from YAML: nested frozen dataclasses, validated before any work starts.

``load_config(Schema, path, overrides)`` reads a YAML file, applies ``--set a.b=value`` overrides
and builds the dataclass; an unknown key, a wrong type or a failed check raises one
:class:`UserError` line naming the key.
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from pruningnet.errors import UserError

from .ranges import FLOAT_RANGE, INT_RANGE, NAMED_RANGES

T = TypeVar("T")


#: The configs shipped inside the package (the repository's configs/ links here).
CONFIG_ROOT = Path(__file__).resolve().parent / "configs"


def shipped_configs(kind: str = "") -> list[str]:
    """Names of the shipped configs of ``kind`` ("" meta-training, "search", "train")."""
    d = CONFIG_ROOT / kind
    return sorted(f.stem for f in d.glob("*.yaml")) if d.is_dir() else []


def config_path(name_or_path: str | Path, kind: str = "", what: str = "config") -> Path:
    """A config by path, or by the name of a shipped one (``-c smoke`` as well as ``-c smoke.yaml``)."""
    p = Path(name_or_path)
    if os.path.lexists(p) and not p.is_dir():  # a FIFO or a link is refused, in one line, when it is read
        return p
    named = CONFIG_ROOT / kind / f"{Path(str(name_or_path)).stem}.yaml"
    if str(name_or_path) and "/" not in str(name_or_path) and named.is_file():
        return named
    if p.is_dir():
        raise UserError(f"{what} {str(p)!r} is a directory; accepted: a YAML file or one of "
                        f"{', '.join(shipped_configs(kind))}")
    raise UserError(f"{what} {str(name_or_path)!r} does not exist; accepted: a YAML file or one of "
                    f"{', '.join(shipped_configs(kind))}")


MAX_YAML_BYTES = 1 << 20  # configs are kilobytes


class YamlSyntaxError(UserError):
    """Text that is not YAML at all (``--set`` then takes it as a plain string)."""


class _AliasRefused(Exception):
    def __init__(self, mark):
        self.mark = mark


class PlainLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses anchors and aliases (``&name``, ``*name``, ``<<: *name``):
    an alias shares a node, and a few hundred bytes of nested aliases ("billion laughs") expand to
    gigabytes once copied. metaprune's configs never need them."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _AliasRefused(event.start_mark)
        return super().compose_node(parent, index)


def load_yaml(text: str, what: str) -> Any:
    """``yaml.safe_load`` without anchors and aliases; every failure is one :class:`UserError` line
    starting with ``what`` (e.g. ``"config file 'x.yaml'"``)."""
    try:
        return yaml.load(text, Loader=PlainLoader)  # noqa: S506 - a SafeLoader
    except _AliasRefused as e:
        where = f" (line {e.mark.line + 1}, column {e.mark.column + 1})" if e.mark is not None else ""
        raise UserError(f"{what} uses a YAML anchor or alias{where}; accepted: plain YAML without "
                        "&anchors and *aliases (write each value out)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise YamlSyntaxError(f"{what} is not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise UserError(f"{what} is nested too deeply") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise UserError(f"{what} holds a value Python refuses ({str(e).split(':')[0]}); accepted: "
                        "numbers of ordinary size") from None


class _PlainDumper(yaml.SafeDumper):
    def ignore_aliases(self, data):  # what we write, PlainLoader reads back
        return True


def dump_yaml(doc: Any) -> str:
    """``yaml.safe_dump`` without anchors or aliases, keys in order."""
    return yaml.dump(doc, Dumper=_PlainDumper, sort_keys=False)


def read_yaml(path: str | Path, what: str = "config file", follow: bool = True) -> dict:
    """A YAML mapping from ``path`` (see :func:`load_yaml`); ``follow=False`` for a run's own file."""
    from .store.fileio import read_text

    p = Path(path)
    doc = load_yaml(read_text(p, what, MAX_YAML_BYTES, follow), f"{what} {str(p)!r}")
    doc = {} if doc is None else doc
    if not isinstance(doc, dict):
        raise UserError(f"{what} {str(p)!r} must hold a mapping of keys, not {type(doc).__name__}")
    return doc


def apply_overrides(doc: dict, overrides: Mapping[str, Any]) -> dict:
    """``{"train.lr": 0.1}`` sets ``doc["train"]["lr"]``; a copy is returned."""
    import copy

    doc = copy.deepcopy(doc)
    for dotted, value in overrides.items():
        node = doc
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {dotted}: {p!r} is not a section")
        node[leaf] = value
    return doc




def _check_range(key: str, value: int | float, is_int: bool) -> None:
    lo, hi = NAMED_RANGES.get(key.rsplit(".", 1)[-1], INT_RANGE if is_int else FLOAT_RANGE)
    if not lo <= value <= hi:
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:20]}...({len(repr(value))} digits)"
        accepted = f"an integer in [{lo}, {hi}]" if is_int else f"a number in [{lo:g}, {hi:g}]"
        raise UserError(f"config key {key}={shown} is not accepted; accepted: {accepted}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(key: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise UserError(f"config key {key} must be a section (mapping), got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        kinds = [a for a in args if a is not type(None)]
        if len(kinds) == 1:  # "int | None": the int's own message (a range names what is accepted)
            try:
                return _coerce(key, kinds[0], value)
            except UserError as e:
                if "must be" not in str(e):
                    raise
            raise UserError(f"config key {key}={value!r} has the wrong type; accepted: "
                            f"{_type_name(kinds[0])} or null")
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(key, a, value)
            except UserError as e:
                errors.append(e)
        raise UserError(f"config key {key}={value!r} has the wrong type; accepted: "
                        f"{' or '.join(_type_name(a) for a in args)}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool) and ("on" if value else "off") in allowed:
            value = "on" if value else "off"  # YAML 1.1 reads a bare on/off (and yes/no) as a boolean
        if value not in allowed:
            raise UserError(f"config key {key}={value!r} is not accepted; accepted: "
                            f"{', '.join(map(str, allowed))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key {key}={value!r} must be a list")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return tuple(_coerce(f"{key}[{i}]", item, v) for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise UserError(f"config key {key} must be a mapping")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"config key {key}={value!r} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config key {key}={value!r} must be an integer")
        _check_range(key, value, True)
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise UserError(f"config key {key}={value!r} must be a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config key {key}={value!r} must be a number")
        if isinstance(value, int) and abs(value) > 2**53:  # math.isfinite would overflow
            value = math.inf
        if not math.isfinite(value):
            raise UserError(f"config key {key}={value!r} is not accepted; accepted: a finite number")
        _check_range(key, value, False)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"config key {key}={value!r} must be a string")
        return value
    return value


def from_dict(schema: type[T], doc: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``schema`` from ``doc``; unknown keys and bad values raise :class:`UserError`.

    After construction, a ``validate()`` method on any section is called to check ranges.
    """
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    for key in doc:
        if key not in fields:
            raise UserError(f"unknown config key {prefix}{key}; accepted in this section: "
                            f"{', '.join(sorted(fields))}")
    kwargs = {k: _coerce(prefix + k, hints[k], v) for k, v in doc.items()}
    obj = schema(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(prefix)
    return obj


def load_config(schema: type[T], path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                base: Mapping[str, Any] | None = None) -> T:
    """``base`` (a dict), overlaid by the YAML at ``path``, overlaid by ``overrides``, as ``schema``.
    A ``null`` in the YAML keeps a value ``base`` sets (the YAML refines ``base``, never erases it)."""
    doc = dict(base or {})
    if path is not None:
        doc = _deep_merge(doc, read_yaml(path), keep_on_null=True)
    return from_dict(schema, apply_overrides(doc, overrides or {}))


def _deep_merge(a: dict, b: Mapping, keep_on_null: bool = False) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v, keep_on_null)
        elif v is not None or not keep_on_null or k not in out:
            out[k] = v
    return out


def to_dict(obj: Any) -> Any:
    """A JSON/YAML-ready dict of a config dataclass (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def check(cond: bool, key: str, value: Any, accepted: str) -> None:
    """Raise ``UserError("config key KEY=VALUE ...; accepted: ACCEPTED")`` unless ``cond``."""
    if not cond:
        raise UserError(f"config key {key}={value!r} is not accepted; accepted: {accepted}")
