"""Masked execution of a PruningNet: every layer at its space's max width, constant shapes.

The sliced forward (:meth:`pruningnet.hypernet.PruningNet.forward`) crops every generated weight to
the vector, so each step's convs have new shapes. On a GPU that costs host work per step (backend
plan choice, allocations, one launch per small kernel) rather than arithmetic: MobileNetV2-1.4 at 224
ran a PruningNet step at 5.91x the static max network's step at batch 64 on one H200 (issue 29).
:class:`MaskedPruningNet` runs the *same* generators and module tree at max width instead: each
generated weight is emitted at its full size and multiplied by the channel mask of the vector
(``[:out, :in]`` kept, zero elsewhere), so the shapes of every tensor are the same on every step
and the step can be captured once (:func:`capture`, CUDA only) and replayed.

Kept channels compute what the sliced forward computes: a zero weight row gives a zero output
channel, BatchNorm on batch statistics normalises each channel on its own (a channel of zeros stays
zero: ``0 * rsqrt(0 + eps)``), every activation of the spaces maps 0 to 0, and a squeeze-excitation
gate scales a zero channel. The weight's gradient is the sliced one, zero outside the crop, since the
mask multiplies it. Only the float reduction order differs (sums over zero products), so results
agree to rounding (tests: about 1e-6).

The vector travels as one tensor (:meth:`MaskedPruningNet.pack`: every generator's ratios and every
channel ref's count), built on the host and copied in one transfer; masks are made from it on the
device, so a captured step reads a new vector by copying into that tensor.

Candidate evaluation on constant shapes (:class:`MaskedEvaluator`): weights generated once per
candidate, BN statistics re-estimated on the same batches as :func:`pruningnet.bn.recalibrate_bn` does
(cumulative average, unbiased variance) into max-width running statistics of which only the kept
channels are written (masked channels stay at their reset values 0 and 1), then scored with them.

ShuffleNetV2's split, concatenation and shuffle move channels between positions that depend on the
vector, so its spaces run sliced only (:func:`supports_masked`).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .build import Builder, activation, nhwc
from .hypernet import (CHANNELS_LAST_INPUT_DEVICES, PruningNet, _as_matmul, _is_pointwise, _key, _pointwise)
from .spaces.ir import Ref, Space, resolve
from .spaces.lowering import Layer

EXECUTIONS = ("sliced", "masked", "auto")
CAPTURES = ("auto", "off", "graphs", "compile")


def supports_masked(space: Space) -> bool:
    """Whether masked execution computes the sliced network for this space (not ShuffleNetV2's)."""
    return not any(x.kind == "shuffle" for x in space.layers)


def resolve_execution(execution: str, device: torch.device | str, space: Space | None = None) -> str:
    """``sliced`` or ``masked`` for a setting of :data:`EXECUTIONS`; ``auto``: masked on CUDA (where
    per-shape host work dominates a step), sliced on the CPU (masked costs more there: it computes
    every layer at max width; BENCHMARKS.md, issue 29) and for spaces masked cannot run.
    ``ValueError`` names a bad setting, or ``masked`` for such a space."""
    if execution not in EXECUTIONS:
        raise ValueError(f"execution {execution!r}; accepted: {', '.join(EXECUTIONS)}")
    ok = space is None or supports_masked(space)
    if execution == "auto":
        return "masked" if torch.device(device).type == "cuda" and ok else "sliced"
    if execution == "masked" and not ok:
        raise ValueError(f"execution 'masked' cannot run space {space.name!r} (its channel split and shuffle "
                         "depend on the vector); accepted: sliced or auto")
    return execution


class _Context:
    """What the masked layers read during one forward: the layers' weights and masks, and how BN
    runs (``train``: batch statistics; ``calibrate``: batch statistics, accumulated into ``stats``;
    ``eval``: ``stats``). Set for the duration of a call only."""

    __slots__ = ("weight", "mask", "bn_mode", "stats", "batches")

    def __init__(self):
        self.weight = self.mask = None
        self.bn_mode, self.stats, self.batches = "train", None, 0

    def bn(self, layer: Layer, x: torch.Tensor) -> torch.Tensor:
        if self.bn_mode == "train":
            return F.batch_norm(x, None, None, training=True)
        rm, rv = self.stats[layer.path]
        if self.bn_mode == "eval":
            return F.batch_norm(x, rm, rv, training=False)
        # cumulative average over the batches seen, as nn.BatchNorm2d with momentum=None
        y = F.batch_norm(x, rm, rv, training=True, momentum=1.0 / self.batches)
        keep = self.mask(layer.out_ch)
        if keep is not None:  # a masked channel's statistics stay at their reset values
            rm.mul_(keep)
            rv.mul_(keep).add_(1.0 - keep)
        return y


class _MaskedConvBN(nn.Module):
    """A generated conv at max width, BN (per :class:`_Context`), the activation."""

    def __init__(self, layer: Layer, ctx: _Context):
        super().__init__()
        self.layer, self.ctx, self.act = layer, ctx, activation(layer.act)
        self.pointwise = _is_pointwise(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, _ = self.ctx.weight(self.layer)
        if self.pointwise and _as_matmul(x):
            x = _pointwise(x, w)
        else:
            groups = w.shape[0] if self.layer.depthwise else 1
            x = F.conv2d(x, w, None, self.layer.stride, self.layer.padding, 1, groups)
        return self.act(self.ctx.bn(self.layer, x))


class _MaskedBiased(nn.Module):
    """A generated linear, or biased conv (squeeze-excitation), at max width."""

    def __init__(self, layer: Layer, ctx: _Context):
        super().__init__()
        self.layer, self.ctx = layer, ctx
        self.pointwise = layer.kind != "linear" and _is_pointwise(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.ctx.weight(self.layer)
        if self.layer.kind == "linear":
            return F.linear(x, w, b)
        if self.pointwise and _as_matmul(x):
            return _pointwise(x, w, b)
        return F.conv2d(x, w, b, self.layer.stride, self.layer.padding)


class MaskedPruningNet(nn.Module):
    """Runs ``net`` (a :class:`~pruningnet.hypernet.PruningNet`, whose parameters it shares) at max width
    with channel masks; ``forward(x, channels)`` equals ``net(x, channels)`` on the kept channels.

    ``forward_packed(x, packed)`` takes the vector as :meth:`pack`'s tensor (what a captured step
    copies into). Its state dict is the PruningNet's under ``net.``: save ``net`` itself.
    """

    def __init__(self, net: PruningNet):
        super().__init__()
        space = net.space
        if not supports_masked(space):
            resolve_execution("masked", "cpu", space)  # raises, naming the space
        self.net = net
        self._layers = net._layers
        self._last = self._layers[-1]
        refs: dict[Ref, int] = {}
        for layer in self._layers:
            for r in (layer.in_ch, layer.out_ch):
                if not isinstance(r, int):
                    refs.setdefault(r, net._max(r))
        self._refs = list(refs)
        self._ref_max = [refs[r] for r in self._refs]
        self._ref_offset = {}
        pos, which, off = [], [], 0
        for i, (r, mx) in enumerate(zip(self._refs, self._ref_max)):
            self._ref_offset[r] = off
            pos.extend(range(mx))
            which.extend([i] * mx)
            off += mx
        # every ref's channel positions and the ref they belong to: all masks in one comparison
        dev = net.fc_bias.device
        self.register_buffer("_pos", torch.tensor(pos, dtype=torch.float64, device=dev), persistent=False)
        self.register_buffer("_which", torch.tensor(which, dtype=torch.long, device=dev), persistent=False)
        self._n_ratios = len(self._layers) * net._ratio_width
        self._rows = {layer.path: (i, len(refs)) for i, (layer, refs) in enumerate(zip(self._layers, net._inputs))}
        self._ctx = _Context()
        self.body = Builder(space.layers, self._masked).model()

    def _masked(self, layer: Layer) -> nn.Module:
        return _MaskedConvBN(layer, self._ctx) if layer.bn else _MaskedBiased(layer, self._ctx)

    # --- the vector as one tensor --------------------------------------------------------------
    def pack(self, channels: Mapping[str, int], device: torch.device | None = None) -> torch.Tensor:
        """Every generator's ratios (rows padded, as :meth:`PruningNet.ratio_table`), then every
        channel ref's count: one float tensor, built on the host and copied in one transfer."""
        net = self.net
        width = net._ratio_width
        vals = []
        for refs in net._inputs:
            vals += [resolve(r, channels) / net._max(r) for r in refs] + [0.0] * (width - len(refs))
        vals += [float(resolve(r, channels)) for r in self._refs]
        t = torch.tensor(vals, dtype=torch.float64)  # ratios cast to the parameters' dtype as the sliced table
        device = device or self._pos.device
        if torch.device(device).type != "cpu":
            t = t.pin_memory().to(device, non_blocking=True)
        return t

    def _masks(self, packed: torch.Tensor) -> torch.Tensor:
        counts = packed[self._n_ratios:]
        return (self._pos < counts[self._which]).to(self.net.fc_bias.dtype)

    def _weights(self, packed: torch.Tensor):
        """A function ``layer -> (weight, bias)`` at max width for ``packed``, and ``ref -> mask``."""
        net = self.net
        masks = self._masks(packed)
        ratios = packed[:self._n_ratios].view(len(self._layers), net._ratio_width).to(net.fc_bias.dtype)

        def mask(ref: Ref) -> torch.Tensor | None:
            if isinstance(ref, int):
                return None
            off = self._ref_offset[ref]
            return masks[off:off + net._max(ref)]

        def weight(layer: Layer):
            gen = net.generators[_key(layer.path)]
            row, n = self._rows[layer.path]
            r = ratios[row, :n]
            mo, mi = gen.bias.shape[0], gen.bias.shape[1]
            w = gen(r, mo, mi)
            m_out = mask(layer.out_ch)
            m_in = None if layer.depthwise else mask(layer.in_ch)
            bias = None
            if layer.bias:
                b = net.fc_bias if layer is self._last else net.biases[_key(layer.path)]
                bias = b if m_out is None else b * m_out.to(b.dtype)
            if layer.kind == "linear":
                w = w.flatten(1)
                if net.center_classifier:
                    if m_in is None:
                        w = w - w.mean(dim=1, keepdim=True)
                    else:  # the mean over the kept inputs only, as the sliced crop's
                        mi_ = m_in.to(w.dtype)
                        w = (w - (w * mi_).sum(1, keepdim=True) / mi_.sum()) * mi_
                elif m_in is not None:
                    w = w * m_in.to(w.dtype)
                return (w if m_out is None else w * m_out.to(w.dtype).view(-1, 1)), bias
            m = _outer(m_out, m_in, mo, mi, w.dtype)
            return (w if m is None else w * m), bias

        return weight, mask

    # --- forward -------------------------------------------------------------------------------
    def forward_packed(self, x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        """The masked forward for a vector given as :meth:`pack`'s tensor (batch statistics in BN)."""
        if x.dim() == 4 and x.device.type in CHANNELS_LAST_INPUT_DEVICES and not nhwc(x):
            x = x.contiguous(memory_format=torch.channels_last)
        weight, mask = self._weights(packed)
        ctx = self._ctx
        ctx.weight, ctx.mask, ctx.bn_mode = weight, mask, "train"
        try:
            return self.body(x)
        finally:
            ctx.weight = ctx.mask = None

    def forward(self, x: torch.Tensor, channels: Mapping[str, int]) -> torch.Tensor:
        return self.forward_packed(x, self.pack(channels, x.device))


def _outer(m_out, m_in, mo: int, mi: int, dtype) -> torch.Tensor | None:
    """The ``(out, in, 1, 1)`` mask of a conv weight (None: nothing masked)."""
    if m_out is None and m_in is None:
        return None
    a = m_out.to(dtype).view(mo, 1) if m_out is not None else torch.ones(mo, 1, dtype=dtype, device=m_in.device)
    b = m_in.to(dtype).view(1, mi) if m_in is not None else None
    return (a if b is None else a * b).view(mo, mi if b is not None else 1, 1, 1)


class MaskedEvaluator:
    """Scores channel vectors on constant shapes: generate once, re-estimate BN, evaluate.

    ``prepare(channels)`` generates the vector's masked weights (no gradients) and resets BN
    statistics; ``calibrate(batches)`` re-estimates them as :func:`pruningnet.bn.recalibrate_bn`
    does; ``__call__(x)`` gives logits with them (BN in eval mode). Statistics live here, at max width,
    one pair per BN layer, reused across candidates.
    """

    def __init__(self, net: PruningNet | MaskedPruningNet):
        self.masked = net if isinstance(net, MaskedPruningNet) else MaskedPruningNet(net)
        m = self.masked
        dev, dt = m.net.fc_bias.device, m.net.fc_bias.dtype
        self.stats = {layer.path: (torch.zeros(m.net._max(layer.out_ch), device=dev, dtype=dt),
                                   torch.ones(m.net._max(layer.out_ch), device=dev, dtype=dt))
                      for layer in m._layers if layer.bn}
        self._weights: dict | None = None
        self._mask = None

    @torch.no_grad()
    def prepare(self, channels: Mapping[str, int]) -> None:
        m = self.masked
        weight, mask = m._weights(m.pack(channels))
        self._weights = {layer.path: weight(layer) for layer in m._layers}
        self._mask = mask
        for rm, rv in self.stats.values():
            rm.zero_()
            rv.fill_(1.0)

    def _run(self, x: torch.Tensor, mode: str, batches: int = 0) -> torch.Tensor:
        m = self.masked
        if self._weights is None:
            raise RuntimeError("MaskedEvaluator: call prepare(channels) first")
        if x.dim() == 4 and x.device.type in CHANNELS_LAST_INPUT_DEVICES and not nhwc(x):
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = m._ctx
        ctx.weight, ctx.mask, ctx.bn_mode, ctx.stats, ctx.batches = (
            lambda layer: self._weights[layer.path], self._mask, mode, self.stats, batches)
        was = m.training
        m.train(mode == "calibrate")  # dropout off when scoring
        try:
            return m.body(x)
        finally:
            ctx.weight = ctx.mask = ctx.stats = None
            ctx.bn_mode = "train"
            m.train(was)

    @torch.no_grad()
    def calibrate(self, batches: Iterable[torch.Tensor]) -> None:
        """Re-estimate BN statistics as a plain average over ``batches`` (host or device tensors)."""
        dev = self.masked.net.fc_bias.device
        for i, x in enumerate(batches, start=1):
            self._run(x.to(dev, non_blocking=True), "calibrate", i)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, "eval")


def capture(module: nn.Module, x: torch.Tensor, packed: torch.Tensor, how: str):
    """``fn(x, packed) -> logits`` for a masked module on CUDA: ``graphs`` records its forward and
    backward once as CUDA graphs (:func:`torch.cuda.make_graphed_callables`, static shapes: every
    step must have ``x``'s shape), ``compile`` hands it to ``torch.compile`` (``reduce-overhead``,
    which also replays CUDA graphs), ``off`` runs it eagerly. Refused (``ValueError``) off CUDA."""
    if how not in ("off", "graphs", "compile"):
        raise ValueError(f"capture {how!r}; accepted: off, graphs, compile")
    if how == "off":
        return module.forward_packed
    if x.device.type != "cuda":
        raise ValueError(f"capture {how!r} needs a CUDA device (input on {x.device.type}); accepted: off")
    if how == "compile":
        return torch.compile(module.forward_packed, mode="reduce-overhead", dynamic=False)
    step = _Packed(module)
    return torch.cuda.make_graphed_callables(step, (x, packed), num_warmup_iters=3,
                                             allow_unused_input=True)


class _Packed(nn.Module):
    """``forward(x, packed)`` of a masked module, as the module make_graphed_callables records."""

    def __init__(self, masked: MaskedPruningNet):
        super().__init__()
        self.masked = masked

    def forward(self, x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        return self.masked.forward_packed(x, packed)
