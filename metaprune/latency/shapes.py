"""What the table times: one entry per distinct layer shape, and a space's terms that sum to a network.

A network's latency is the sum of its *terms*, one per ``timed`` layer of the space's lowering
(:mod:`pruningnet.spaces.lowering`): every conv (conv + BN + activation, unfolded, as
:func:`pruningnet.build_model` runs it in eval mode), every block wrapper (the residual add and block
activation, or just the wrapper call when not residual), every squeeze-excitation (pool, two convs,
gate, product), every ShuffleNetV2 split/concat/shuffle, every max pool, and the head (global pool,
flatten, linears, dropout, plus the top-level calls). Each term is a function of at most two channel
counts. Dense convs are measured on a coarse grid of their (in, out) choices and interpolated
bilinearly; one-channel terms (depthwise convs, blocks, pools, the head) are measured at every choice.
A value off the grid's range is measured exactly (lazily) instead of extrapolated.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from pruningnet.build import ConvBNAct, ResidualBlock, ShuffleUnit, SqueezeExcitation, SubnetModel, activation
from pruningnet.errors import UserError
from pruningnet.spaces.ir import Ref, Scaled, Space, resolve  # noqa: F401  (resolve: for table.py)

KINDS = ("conv", "dwconv", "block", "maxpool", "head", "se", "shuffle")


@dataclass(frozen=True)
class Shape:
    """One timed module at fixed channel counts and input size: the key of a table entry."""

    kind: str  # one of KINDS
    cin: int
    cout: int
    size: int  # input height = width
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    act: str | None = None  # se: "act/gate"
    flag: bool = False  # block: residual add; head: has dropout
    classes: int = 0  # head with a hidden linear (cin -> cout): the final linear's outputs

    def key(self) -> str:
        """The entry's name in the table file, e.g. ``conv|k1s1p0|32|22>132|relu6``."""
        ch = f"{self.cin}>{self.cout}" if self.cin != self.cout or self.kind in ("conv", "se") else f"{self.cin}"
        extra = f"|c{self.classes}" if self.classes else ""
        return (f"{self.kind}|k{self.kernel}s{self.stride}p{self.padding}|{self.size}|{ch}|"
                f"{self.act or 'none'}|{int(self.flag)}{extra}")

    def module(self) -> nn.Module:
        """A randomly initialised module equal to what the built network runs for this term."""
        if self.kind == "conv":
            return ConvBNAct(self.cin, self.cout, self.kernel, self.stride, act=self.act)
        if self.kind == "dwconv":
            return ConvBNAct(self.cin, self.cout, self.kernel, self.stride, groups=self.cout, act=self.act)
        if self.kind == "block":
            return ResidualBlock(nn.Sequential(), self.flag, None, self.act)
        if self.kind == "maxpool":
            return nn.MaxPool2d(self.kernel, self.stride, self.padding)
        if self.kind == "head":
            layers = [nn.Dropout(0.2)] if self.flag else []
            if self.classes:
                layers = [nn.Linear(self.cin, self.cout), activation(self.act), *layers,
                          nn.Linear(self.cout, self.classes)]
            else:
                layers.append(nn.Linear(self.cin, self.cout))
            return SubnetModel(nn.Sequential(), nn.Sequential(*layers))
        if self.kind == "se":
            act, gate = self.act.split("/")
            return SqueezeExcitation(nn.Conv2d(self.cin, self.cout, 1), nn.Conv2d(self.cout, self.cin, 1), act, gate)
        if self.kind == "shuffle":
            return ShuffleUnit(None, nn.Identity())
        raise ValueError(f"unknown shape kind {self.kind!r}")

    def inputs(self, batch_size: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch_size, self.cin, self.size, self.size, device=device),)


@dataclass(frozen=True)
class Term:
    """One summand of a space's latency: a shape whose channel counts come from refs."""

    name: str
    template: Shape  # cin/cout are placeholders (0)
    in_ref: Ref
    out_ref: Ref

    @property
    def tied(self) -> bool:
        """In and out are the same count (depthwise convs, blocks, pools): a 1-D term."""
        return self.in_ref == self.out_ref

    def shape(self, cin: int, cout: int) -> Shape:
        t = self.template
        return Shape(t.kind, cin, cout, t.size, t.kernel, t.stride, t.padding, t.act, t.flag, t.classes)


def space_terms(space: Space) -> list[Term]:
    """The terms of ``space`` in run order: one per timed layer of its lowering."""
    if any(x.kind == "graph" for x in space.layers):
        raise UserError(f"latency tables are not built for traced spaces yet ({space.name}); budget it in "
                        "MACs or parameters (--max-macs, --max-params)")
    terms: list[Term] = []
    for x in space.layers:
        if not x.timed:
            continue
        act = f"{x.act}/{x.gate}" if x.kind == "se" else x.act
        shape = Shape(x.kind, 0, 0, x.in_size, x.kernel, x.stride, x.padding, act, x.flag, x.classes)
        terms.append(Term(x.name, shape, x.in_ch, x.out_ch))
    return terms


def axis(space: Space, ref: Ref, step: int) -> tuple[int, ...]:
    """Grid values of a ref: a fixed int, or every ``step``-th choice of its unit plus the last."""
    if isinstance(ref, int):
        return (ref,)
    if isinstance(ref, Scaled):
        return tuple(ref.factor * v for v in axis(space, ref.unit, step))
    choices = space.unit(ref).choices
    picked = list(choices[::step])
    if picked[-1] != choices[-1]:
        picked.append(choices[-1])
    return tuple(picked)


def bracket(grid: tuple[int, ...], value: int) -> list[tuple[int, float]]:
    """``[(point, weight)]`` that linearly interpolate ``value`` on ``grid``; off-range is exact."""
    if value in grid or value < grid[0] or value > grid[-1]:
        return [(value, 1.0)]
    for lo, hi in zip(grid, grid[1:]):
        if lo < value < hi:
            w = (value - lo) / (hi - lo)
            return [(lo, 1.0 - w), (hi, w)]
    raise AssertionError("unreachable")


def term_axes(space: Space, term: Term, grid_step: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The (in, out) grids of a term: coarse for 2-D dense convs, every choice for 1-D terms."""
    two_d = not term.tied and not isinstance(term.in_ref, int) and not isinstance(term.out_ref, int)
    step = grid_step if two_d else 1
    return axis(space, term.in_ref, step), axis(space, term.out_ref, step)


def term_points(term: Term, axes, cin: int, cout: int) -> list[tuple[Shape, float]]:
    """The shapes and weights whose weighted sum is the term's latency at (cin, cout)."""
    if term.tied:
        return [(term.shape(v, v), w) for v, w in bracket(axes[0], cin)]
    return [(term.shape(a, b), wa * wb)
            for (a, wa), (b, wb) in itertools.product(bracket(axes[0], cin), bracket(axes[1], cout))]


def grid_shapes(space: Space, grid_step: int) -> list[Shape]:
    """Every distinct shape on the grids of ``space``'s terms (what building a table measures)."""
    seen: dict[str, Shape] = {}
    for term in space_terms(space):
        a_in, a_out = term_axes(space, term, grid_step)
        pairs: Iterable = ((v, v) for v in a_in) if term.tied else itertools.product(a_in, a_out)
        for cin, cout in pairs:
            s = term.shape(cin, cout)
            seen.setdefault(s.key(), s)
    return list(seen.values())
