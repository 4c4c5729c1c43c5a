"""The network description that spaces produce and every consumer reads.

A space turns its options into a tuple of nodes. Channel counts are *refs*: a unit name (searchable)
or a fixed int (input channels, classes). The cost model, the static builder and the PruningNet all
interpret the same nodes, so they cannot disagree about the structure.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Union

Ref = Union[str, int]


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
class Block:
    """Convs run in sequence; with ``residual`` their output is added to the shortcut
    (identity when ``shortcut`` is None), then ``act`` is applied."""

    name: str
    convs: tuple[Conv, ...]
    residual: bool = False
    shortcut: Conv | None = None
    act: str | None = None


@dataclass(frozen=True)
class MaxPool:
    name: str
    kernel: int = 3
    stride: int = 2
    padding: int = 1


@dataclass(frozen=True)
class Classifier:
    """Global average pool, optional dropout, Linear(in_ch, num_classes) with bias."""

    name: str
    in_ch: Ref
    num_classes: int
    dropout: float = 0.0


Node = Union[Conv, Block, MaxPool, Classifier]


def conv_out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def iter_convs(nodes: tuple[Node, ...]):
    """Every Conv in run order, with the shortcut conv after its block's body."""
    for node in nodes:
        if isinstance(node, Conv):
            yield node
        elif isinstance(node, Block):
            yield from node.convs
            if node.shortcut is not None:
                yield node.shortcut


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
    """A backbone with resolved options: its units in run order and its network nodes."""

    name: str
    options: dict = field(hash=False, compare=False)
    units: tuple[Unit, ...]
    nodes: tuple[Node, ...]

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
        return {u.name: u.max if u.fixed else min(u.max, round_channels(u.max * ratio, round_to))
                for u in self.units}
