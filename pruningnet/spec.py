"""The subnet spec: the one JSON document every command reads and writes.

``{"format": "metaprune.subnet/1", "space": NAME, "options": {...}, "channels": {UNIT: int}}``
plus optional ``metrics`` and ``provenance``. Any positive count up to the unit's max is accepted.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import UserError
from .spaces import Space, get_space

FORMAT_NAME = "metaprune.subnet"
FORMAT_VERSION = 1
FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"
_KEYS = {"format", "space", "options", "channels", "metrics", "provenance"}


@dataclass
class SubnetSpec:
    """A channel vector of one space, with optional metrics and provenance."""

    space: Space
    channels: dict[str, int]
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def vector(self) -> list[int]:
        return [self.channels[u] for u in self.space.unit_names]

    def to_dict(self) -> dict:
        d = {"format": FORMAT, "space": self.space.name, "options": dict(self.space.options),
             "channels": {u: int(self.channels[u]) for u in self.space.unit_names}}
        if self.metrics:
            d["metrics"] = self.metrics
        if self.provenance:
            d["provenance"] = self.provenance
        return d


def check_channels(space: Space, channels: Mapping[str, Any], where: str = "channels") -> dict[str, int]:
    """Validated channels in unit order; a missing, unknown or out-of-range unit raises."""
    if not isinstance(channels, Mapping):
        raise UserError(f"{where} must be an object mapping unit names to counts")
    for name in channels:
        if name not in space.unit_names:
            raise UserError(f"{where} has unknown unit {name!r} for space {space.name}; accepted: "
                            f"{', '.join(space.unit_names)}")
    out = {}
    for unit in space.units:
        if unit.name not in channels:
            raise UserError(f"{where} is missing unit {unit.name!r} (space {space.name} needs all of "
                            f"{len(space.units)} units)")
        v = channels[unit.name]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserError(f"{where}.{unit.name}={v!r} is not a positive integer")
        if v > unit.max:
            raise UserError(f"{where}.{unit.name}={v} is over the unit's max of {unit.max}")
        out[unit.name] = v
    return out


def make_spec(space: Space, channels: Mapping[str, Any], metrics: dict | None = None,
              provenance: dict | None = None) -> SubnetSpec:
    return SubnetSpec(space, check_channels(space, channels), dict(metrics or {}), dict(provenance or {}))


def spec_from_dict(d: Any) -> SubnetSpec:
    """Parse and validate a spec document; every defect raises one :class:`UserError` line."""
    if not isinstance(d, Mapping):
        raise UserError("a subnet spec must be a JSON object")
    fmt = d.get("format")
    if not isinstance(fmt, str) or not fmt.startswith(FORMAT_NAME + "/"):
        raise UserError(f"format={fmt!r} is not a subnet spec; accepted: {FORMAT!r}")
    try:
        version = int(fmt.rsplit("/", 1)[1])
    except ValueError:
        raise UserError(f"format={fmt!r} has no version number; accepted: {FORMAT!r}") from None
    if version > FORMAT_VERSION:
        raise UserError(f"format={fmt!r} is newer than this metaprune reads ({FORMAT!r}); upgrade metaprune")
    unknown = sorted(set(d) - _KEYS)
    if unknown:
        raise UserError(f"unknown field {unknown[0]!r} in spec; accepted: {', '.join(sorted(_KEYS))}")
    name = d.get("space")
    if not isinstance(name, str):
        raise UserError(f"space={name!r} must be a space name")
    options = d.get("options", {})
    if not isinstance(options, Mapping):
        raise UserError("options must be an object")
    space = get_space(name, **options)
    for key in ("metrics", "provenance"):
        if not isinstance(d.get(key, {}), Mapping):
            raise UserError(f"{key} must be an object")
    return make_spec(space, d.get("channels"), d.get("metrics"), d.get("provenance"))
