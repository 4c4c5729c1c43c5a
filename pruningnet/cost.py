"""Exact analytic cost: conv + linear MACs (BN folded) and parameters as torchvision counts them.

Every layer's MACs and parameters are a bilinear form in the channel vector, so a space compiles
once into two small matrices and a whole population is costed with two matrix products.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .errors import UserError
from .spaces.ir import Ref, Space, ref_terms
from .spaces.lowering import Layer


def layer_table(space: Space) -> tuple[Layer, ...]:
    """Every conv and linear layer of ``space`` in run order, with its spatial sizes (its lowering's
    weighted layers)."""
    return space.weighted_layers()


CONVENTIONS = ("macs", "metapruning")


class CostModel:
    """MACs and parameters of any channel vector of one space, scalar or batched; and, on request,
    "FLOPs" as MetaPruning's official counter counts them (:meth:`metapruning_flops`).

    The MetaPruning convention (``mobilenetv2/searching/cal_FLOPs.py`` of the official code) adds to
    conv and linear MACs: the linear bias, a conv bias, every BatchNorm's output elements and the
    pooling layers' ``k*k*C*H*W`` (max pool, and the head's average pool over the whole map).
    Activations are not counted: the official MobileNet models apply them functionally, where no hook
    sees them (its ResNet-50 uses ``nn.ReLU`` modules, so this convention undercounts that one).
    """

    def __init__(self, space: Space):
        self.space = space
        self.units = space.unit_names
        self._index = {u: i for i, u in enumerate(self.units)}
        n = len(self.units) + 1  # last column is the constant 1
        self._one = n - 1
        self._q_macs = np.zeros((n, n))
        self._q_params = np.zeros((n, n))
        self._q_paper = np.zeros((n, n))
        for row in space.layers:
            self._add(row)

    def _ref(self, ref: Ref) -> list[tuple[int, int]]:
        """``(column, factor)`` per term of a ref (a fixed count is a factor of the constant column)."""
        terms, const = ref_terms(ref)
        return [(self._index[u], f) for u, f in terms] + ([(self._one, const)] if const else [])

    def _term(self, q: np.ndarray, coef: float, a: Ref, b: Ref | None = None) -> None:
        for ia, ma in self._ref(a):
            for ib, mb in (self._ref(b) if b is not None else [(self._one, 1)]):
                q[min(ia, ib), max(ia, ib)] += coef * ma * mb

    def _add(self, r: Layer) -> None:
        k2, hw = r.kernel * r.kernel, r.out_size * r.out_size
        if r.kind == "bn":  # a BatchNorm of its own: affine weight and bias, its output elements
            self._term(self._q_params, 2, r.in_ch)
            self._term(self._q_paper, hw, r.in_ch)
            return
        if not r.weighted:
            if r.kind == "head":  # the official models' AvgPool2d(kernel = the final map)
                self._term(self._q_paper, r.in_size * r.in_size, r.in_ch)
            elif r.kind == "maxpool":
                self._term(self._q_paper, k2 * hw, r.out_ch)
            return
        self._term(self._q_paper, hw * (r.bias + r.bn), r.out_ch)  # bias adds, BN output elements
        if r.kind == "dwconv":
            self._term(self._q_macs, k2 * hw, r.out_ch)
            self._term(self._q_params, k2, r.out_ch)
        else:  # conv (a grouped one: 1/groups of the products) or linear (kernel 1, size 1)
            self._term(self._q_macs, k2 * hw / r.groups, r.in_ch, r.out_ch)
            self._term(self._q_params, k2 / r.groups, r.in_ch, r.out_ch)
        self._term(self._q_params, 2 * r.bn + r.bias, r.out_ch)  # BN weight and bias; conv/linear bias

    def as_matrix(self, channels: np.ndarray | Mapping[str, int]) -> np.ndarray:
        """A (N, units) float array from an array of vectors or one channels dict."""
        if isinstance(channels, Mapping):
            channels = np.array([[channels[u] for u in self.units]])
        x = np.asarray(channels, dtype=np.float64)
        return x.reshape(1, -1) if x.ndim == 1 else x

    def _eval(self, q: np.ndarray, channels) -> np.ndarray:
        x = self.as_matrix(channels)
        xa = np.hstack([x, np.ones((x.shape[0], 1))])
        return np.rint(np.einsum("ij,ij->i", xa @ q, xa)).astype(np.int64)

    def macs(self, channels) -> np.ndarray:
        """MACs (the papers' "FLOPs") of each row of ``channels``; int64, exact below 2**53."""
        return self._eval(self._q_macs, channels)

    def metapruning_flops(self, channels) -> np.ndarray:
        """"FLOPs" of each row as MetaPruning's official counter counts them (see the class docstring)."""
        return self._eval(self._q_macs + self._q_paper, channels)

    def cost(self, channels, convention: str = "macs") -> np.ndarray:
        """:meth:`macs` or :meth:`metapruning_flops` by convention name."""
        if convention not in CONVENTIONS:
            raise UserError(f"cost convention {convention!r} is unknown; accepted: {', '.join(CONVENTIONS)}")
        return self.macs(channels) if convention == "macs" else self.metapruning_flops(channels)

    def params(self, channels) -> np.ndarray:
        """Parameters of each row of ``channels`` (conv, BN affine, linear weight and bias)."""
        return self._eval(self._q_params, channels)

    def uniform_for_budget(self, max_macs: int) -> tuple[float, dict[str, int], int]:
        """The uniform width ratio whose network has the largest MACs not above ``max_macs``.

        Returns ``(ratio, channels, macs)``. Units held fixed stay at their max.
        """
        lo_ch = self.space.uniform_channels(1e-6)
        lo_macs = int(self.macs(lo_ch)[0])
        if lo_macs > max_macs:
            raise UserError(f"budget {max_macs:,} MACs is below the narrowest uniform network "
                            f"({lo_macs:,} MACs) of space {self.space.name}")
        lo, hi = 1e-6, 1.0
        if self.macs(self.space.uniform_channels(1.0))[0] <= max_macs:
            lo = 1.0
        else:
            for _ in range(60):
                mid = (lo + hi) / 2
                if self.macs(self.space.uniform_channels(mid))[0] <= max_macs:
                    lo = mid
                else:
                    hi = mid
        ch = self.space.uniform_channels(lo)
        return lo, ch, int(self.macs(ch)[0])


    def grid_uniform_for_budget(self, max_macs: int) -> tuple[float, dict[str, int], int]:
        """The on-grid network nearest the uniform one of :meth:`uniform_for_budget`.

        The continuous uniform width is usually between a unit's choices, where a PruningNet never
        trained; this is what the proxy can score fairly. Each unit takes its choice nearest the
        uniform width (ties down), then, while the MACs are over ``max_macs``, the unit furthest
        above its uniform width (by ratio of its max) steps one choice down. Returns ``(ratio,
        channels, macs)`` with ``ratio`` the uniform ratio it approximates.
        """
        ratio, target, _ = self.uniform_for_budget(max_macs)
        units = {u.name: u for u in self.space.units}
        idx = {}
        for name, u in units.items():
            t = target[name]
            idx[name] = min(range(len(u.choices)), key=lambda i: (abs(u.choices[i] - t), u.choices[i]))
        ch = {n: units[n].choices[i] for n, i in idx.items()}
        while int(self.macs(ch)[0]) > max_macs:
            movable = [n for n in units if idx[n] > 0]
            if not movable:
                raise UserError(f"budget {max_macs:,} MACs is below the narrowest network of space "
                                f"{self.space.name}")
            n = max(movable, key=lambda n: ((ch[n] - target[n]) / units[n].max, n))
            idx[n] -= 1
            ch[n] = units[n].choices[idx[n]]
        return ratio, ch, int(self.macs(ch)[0])

    def on_grid(self, channels: Mapping[str, int]) -> bool:
        """Whether every unit of ``channels`` is one of its choices (what meta-training samples)."""
        return all(channels[u.name] in u.choices for u in self.space.units)


_MODELS: dict[tuple, CostModel] = {}


def cost_model(space: Space) -> CostModel:
    """The (cached) cost model of ``space``."""
    key = (space.name, repr(sorted(space.options.items())))
    if key not in _MODELS:
        _MODELS[key] = CostModel(space)
    return _MODELS[key]


def count_cost(spec, convention: str = "macs") -> dict[str, int]:
    """``{"macs": int, "params": int}`` of a :class:`~pruningnet.spec.SubnetSpec`, without building it;
    with ``convention="metapruning"`` also ``"flops_metapruning"`` (MetaPruning's counter)."""
    cm = cost_model(spec.space)
    out = {"macs": int(cm.macs(spec.channels)[0]), "params": int(cm.params(spec.channels)[0])}
    if convention != "macs":
        out["flops_metapruning"] = int(cm.cost(spec.channels, convention)[0])
    return out
