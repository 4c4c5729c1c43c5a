"""The network description that spaces produce.

A space turns its options into a tuple of nodes. Channel counts are *refs*: a unit name (searchable),
a fixed int (input channels, classes), a :class:`Scaled` unit (ShuffleNetV2's concatenation of
two branches is twice its branch unit) or a :class:`Sum` (a traced network's concatenation of
several units); :func:`ref_terms` reads them all. A traced network (``model:MODULE:CALLABLE``) is one
:class:`Traced` node. Nothing walks these nodes but
:mod:`pruningnet.spaces.lowering` (one traversal that every consumer, the builder included, reads).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Union



@dataclass(frozen=True)
class Scaled:
    """``factor`` times the unit ``unit`` (a ref, like a unit name)."""

    unit: str
    factor: int

    def __str__(self) -> str:
        return f"{self.factor}*{self.unit}"


@dataclass(frozen=True)
class Sum:
    """A concatenation's channels: ``sum(factor * unit) + const`` (``terms``: ``(unit, factor)`` pairs).
    Traced networks (:mod:`pruningnet.spaces.traced`) produce it where a layer reads a ``torch.cat``."""

    terms: tuple[tuple[str, int], ...]
    const: int = 0

    def __str__(self) -> str:
        parts = [u if f == 1 else f"{f}*{u}" for u, f in self.terms] + ([str(self.const)] if self.const else [])
        return "+".join(parts)


Ref = Union[str, int, Scaled, Sum]


def ref_terms(ref: Ref) -> tuple[tuple[tuple[str, int], ...], int]:
    """A ref as ``((unit, factor), ...), const``: the one reading of every ref type."""
    if isinstance(ref, str):
        return ((ref, 1),), 0
    if isinstance(ref, Scaled):
        return ((ref.unit, ref.factor),), 0
    if isinstance(ref, Sum):
        return ref.terms, ref.const
    return (), int(ref)


def ref_units(ref: Ref) -> tuple[str, ...]:
    """The units a ref counts in (none for a fixed count)."""
    return tuple(u for u, _ in ref_terms(ref)[0])


def ref_unit(ref: Ref) -> str | None:
    """The unit a ref counts in, or None for a fixed count (a :class:`Sum`: its first unit)."""
    units = ref_units(ref)
    return units[0] if units else None


def resolve(ref: Ref, channels) -> int:
    """A ref's channel count under ``channels`` (a mapping of unit names to counts)."""
    if isinstance(ref, str):
        return int(channels[ref])
    terms, const = ref_terms(ref)
    return const + sum(f * int(channels[u]) for u, f in terms)


def round_channels(value: float, round_to: int) -> int:
    """One rounding rule for channel counts.

    ``round_to == 1`` floors, as MetaPruning does; otherwise torchvision's ``_make_divisible``
    (nearest multiple, never below ``round_to`` and never more than 10% below ``value``).
    """
    if round_to == 1:
        return max(1, int(math.floor(value + 1e-9)))
    new = max(round_to, int(value + round_to / 2) // round_to * round_to)
    if new < 0.9 * value:
        new += round_to
    return new


@dataclass(frozen=True)
class Conv:
    """Conv2d (no bias) + BatchNorm2d + optional activation."""

    name: str
    in_ch: Ref
    out_ch: Ref
    kernel: int
    stride: int = 1
    depthwise: bool = False
    act: str | None = "relu"

    @property
    def padding(self) -> int:
        return self.kernel // 2


@dataclass(frozen=True)
class SqueezeExcite:
    """torchvision's SqueezeExcitation: global pool, 1x1 conv (with bias) to ``squeeze``, ``act``,
    1x1 conv (with bias) back to ``channels``, ``gate``; the input is scaled by the result."""

    name: str
    channels: Ref
    squeeze: Ref
    act: str = "relu"
    gate: str = "hardsigmoid"


@dataclass(frozen=True)
class Block:
    """Layers (convs, squeeze-excitations) run in sequence; with ``residual`` their output is added
    to the shortcut (identity when ``shortcut`` is None), then ``act`` is applied."""

    name: str
    convs: tuple[Union[Conv, SqueezeExcite], ...]
    residual: bool = False
    shortcut: Conv | None = None
    act: str | None = None


@dataclass(frozen=True)
class ShuffleBlock:
    """ShuffleNetV2's unit. With ``branch1`` (the stride-2 unit) both branches read the input;
    without it the input's channels are split in halves, the first passes through and the second goes
    through ``branch2``. The two halves are concatenated and shuffled (2 groups)."""

    name: str
    branch2: tuple[Conv, ...]
    branch1: tuple[Conv, ...] = ()


@dataclass(frozen=True)
class MaxPool:
    name: str
    kernel: int = 3
    stride: int = 2
    padding: int = 1


@dataclass(frozen=True)
class Classifier:
    """Global average pool, then (with ``hidden``) Linear(in_ch, hidden) + ``hidden_act``, optional
    dropout, Linear(., num_classes); linears have biases."""

    name: str
    in_ch: Ref
    num_classes: int
    dropout: float = 0.0
    hidden: Ref | None = None
    hidden_act: str | None = None


@dataclass(frozen=True, eq=False)
class Traced:
    """A whole network traced with torch.fx (:mod:`pruningnet.spaces.traced`): its lowered layers
    (module paths of the traced network), the graph the builder rebuilds with resized layers, the
    template modules it copies unchanged (pools, activations, modules held at fixed width) and the
    multiple each grouped conv imposes on its units."""

    name: str
    layers: tuple
    graph: object  # torch.fx.Graph (the builder copies it)
    keep: dict = field(hash=False)  # module path -> template module (parameterless or fixed width)
    multiples: dict = field(hash=False)  # unit -> every count must be a multiple of this


Node = Union[Conv, Block, ShuffleBlock, MaxPool, Classifier, Traced]


def conv_out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


@dataclass(frozen=True)
class Unit:
    """A searchable channel count: its max and the allowed values (ascending)."""

    name: str
    max: int
    choices: tuple[int, ...]

    @property
    def fixed(self) -> bool:
        return len(self.choices) == 1


@dataclass(frozen=True)
class Space:
    """A backbone with resolved options: its units in run order, its network nodes and their
    lowering (:mod:`pruningnet.spaces.lowering`, the flat list of layers every consumer reads)."""

    name: str
    options: dict = field(hash=False, compare=False)
    units: tuple[Unit, ...]
    nodes: tuple[Node, ...]
    layers: tuple = field(default=(), hash=False, compare=False, repr=False)

    def weighted_layers(self):
        """The conv and linear layers of :attr:`layers`, in run order."""
        return tuple(x for x in self.layers if x.weighted)

    @property
    def unit_names(self) -> tuple[str, ...]:
        return tuple(u.name for u in self.units)

    def unit(self, name: str) -> Unit:
        for u in self.units:
            if u.name == name:
                return u
        raise KeyError(name)

    def max_channels(self) -> dict[str, int]:
        return {u.name: u.max for u in self.units}

    def min_channels(self) -> dict[str, int]:
        return {u.name: u.choices[0] for u in self.units}

    def uniform_channels(self, ratio: float) -> dict[str, int]:
        """Every searchable unit at ``ratio`` of its max (rounded as the space rounds)."""
        round_to = self.options.get("round_to", 1)
        multiples: dict = {}
        for node in self.nodes:
            multiples.update(getattr(node, "multiples", {}))
        return {u.name: u.max if u.fixed else
                min(u.max, round_channels(u.max * ratio, math.lcm(round_to, multiples.get(u.name, 1))))
                for u in self.units}
