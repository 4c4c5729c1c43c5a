"""The one traversal of a space's nodes: a flat list of layers that every consumer reads.

:func:`lower` walks the nodes once, in run order, and yields per step a :class:`Layer`: its IR name,
its module path in :func:`pruningnet.build.build_model`'s network, its kind, its channel refs, its
input and output sizes, its parameters (kernel, stride, bias, BN, activation) and the channel-index
class of its output (which layers' channels are the *same* channels, tied by depthwise convs,
residual adds and squeeze-excitation gates). The cost model, the builder (:mod:`pruningnet.build`,
which makes the whole module tree from this list), the PruningNet's generators, the latency terms,
the spatial check and the criterion-pruning groups all read it; nothing else reads the nodes.

Kinds: ``conv``, ``dwconv`` and ``linear`` carry weights (``weighted``); ``block`` (the residual add
and block activation), ``maxpool``, ``se`` (a whole squeeze-excitation), ``shuffle`` (split, concat
and channel shuffle) and ``head`` (global pool, flatten, linears, dropout) are what the latency table
times besides the convs (``timed``); ``bn`` is a BatchNorm that follows no conv of its own (a
traced network's pre-activation BN), counted but not timed; ``graph`` ends a traced network and
carries the fx graph that wires its layers. A structural step's path is its module's path, and the
layers under that path are the module's parts (``se``, ``head``: listed after the step; ``block``,
``shuffle``: before it). Adding a node type means one rule here (``_RULES``) and, when it lowers to
a new structural kind, one rule for that kind in the builder (:data:`pruningnet.build._RULES`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from .ir import (Block, Classifier, Conv, MaxPool, Node, Ref, Scaled, ShuffleBlock, SqueezeExcite, Traced,
                 conv_out_size)

WEIGHTED = ("conv", "dwconv", "linear")


@dataclass(frozen=True)
class Layer:
    """One step of a network: a weighted layer or a structural step the latency table times."""

    name: str  # IR name, e.g. "features.3.expand" (cost rows and latency terms)
    path: str  # module path in the built network ("features.3.body.expand"); weighted layers' is unique
    kind: str
    in_ch: Ref
    out_ch: Ref
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    in_size: int = 1
    out_size: int = 1
    act: str | None = None  # applied by the layer's own module (conv + BN layers only)
    bias: bool = False
    bn: bool = False
    flag: bool = False  # block: residual add; head: dropout
    timed: bool = True  # a latency term of its own (SE convs and linears are inside "se" / "head")
    out_class: int = -1  # channel-index class of the output (weighted layers)
    classes: int = 0  # head with a hidden layer: the final linear's outputs
    gate: str | None = None  # se: the gate's activation
    bn_eps: float = 1e-5  # the BN's eps (a traced network keeps its own, e.g. 1e-3)
    block: str = ""  # the block it belongs to (a generator's ``block`` input): a node's or module's path
    groups: int = 1  # conv: groups of a grouped (not depthwise) conv; ``in`` and ``out`` are multiples of it
    dropout: float = 0.0  # head: the dropout's probability
    traced: Traced | None = field(default=None, compare=False, repr=False)  # graph: the traced network

    @property
    def weighted(self) -> bool:
        return self.kind in WEIGHTED

    @property
    def depthwise(self) -> bool:
        return self.kind == "dwconv"


class _Walk:
    """State of one traversal: spatial size, current channels and channel-index classes."""

    def __init__(self, size: int, channels: Ref):
        self.size = size
        self.channels: Ref = channels
        self.layers: list[Layer] = []
        self.parent: list[int] = []
        self.cls = self.new_class()  # the input image's channels

    def new_class(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        self.parent[max(ra, rb)] = min(ra, rb)
        return min(ra, rb)

    def check(self, name: str) -> None:
        if self.size < 1:
            raise _TooSmall(name)


class _TooSmall(Exception):
    pass


def _conv(w: _Walk, c: Conv, name: str, path: str) -> None:
    out = conv_out_size(w.size, c.kernel, c.stride, c.padding)
    cls = w.cls if c.depthwise else w.new_class()
    w.layers.append(Layer(name, path, "dwconv" if c.depthwise else "conv", c.in_ch, c.out_ch, c.kernel,
                          c.stride, c.padding, w.size, out, c.act, bn=True, out_class=cls))
    w.size, w.channels, w.cls = out, c.out_ch, cls
    w.check(name)


def _se(w: _Walk, se: SqueezeExcite, name: str, path: str) -> None:
    w.layers.append(Layer(name, path, "se", se.channels, se.squeeze, in_size=w.size, out_size=w.size,
                          act=se.act, gate=se.gate))
    w.layers.append(Layer(f"{name}.fc1", f"{path}.fc1", "conv", se.channels, se.squeeze, bias=True,
                          timed=False, out_class=w.new_class()))
    # the gate scales the input channel by channel: fc2's outputs are the input's channels
    w.layers.append(Layer(f"{name}.fc2", f"{path}.fc2", "conv", se.squeeze, se.channels, bias=True,
                          timed=False, out_class=w.cls))


def _body(w: _Walk, layer, name: str, path: str) -> None:
    (_se if isinstance(layer, SqueezeExcite) else _conv)(w, layer, name, path)


def _block(w: _Walk, b: Block, path: str) -> None:
    start_size, start_cls = w.size, w.cls
    for c in b.convs:
        _body(w, c, f"{b.name}.{c.name}", f"{path}.body.{c.name}")
    end_size, end_cls, end_ch = w.size, w.cls, w.channels
    if b.residual:
        w.size, w.cls = start_size, start_cls  # the shortcut reads the block's input
        if b.shortcut is not None:
            _conv(w, b.shortcut, f"{b.name}.{b.shortcut.name}", f"{path}.shortcut")
        end_cls = w.union(end_cls, w.cls)
    w.size, w.cls, w.channels = end_size, end_cls, end_ch
    w.layers.append(Layer(f"{b.name}.block", path, "block", end_ch, end_ch, in_size=end_size,
                          out_size=end_size, act=b.act, flag=b.residual))


def _shuffle(w: _Walk, b: ShuffleBlock, path: str) -> None:
    start_size, start_cls = w.size, w.cls
    for branch, convs in (("branch1", b.branch1), ("branch2", b.branch2)):
        w.size, w.cls = start_size, start_cls
        for c in convs:
            _conv(w, c, f"{b.name}.{branch}.{c.name}", f"{path}.{branch}.{c.name}")
    # split, concat and shuffle permute channels between blocks: the output is a class of its own
    half = b.branch2[-1].out_ch
    out = Scaled(half, 2) if isinstance(half, str) else 2 * half
    w.channels, w.cls = out, w.new_class()
    w.layers.append(Layer(f"{b.name}.shuffle", path, "shuffle", out, out, in_size=w.size, out_size=w.size))


def _maxpool(w: _Walk, m: MaxPool, path: str) -> None:
    out = conv_out_size(w.size, m.kernel, m.stride, m.padding)
    w.layers.append(Layer(m.name, path, "maxpool", w.channels, w.channels, m.kernel, m.stride, m.padding,
                          w.size, out))
    w.size = out
    w.check(m.name)


def _classifier(w: _Walk, c: Classifier, path: str) -> None:
    if c.hidden is None:
        w.layers.append(Layer(c.name, "classifier", "head", c.in_ch, c.num_classes, in_size=w.size,
                              flag=c.dropout > 0, dropout=c.dropout))
    else:
        w.layers.append(Layer(c.name, "classifier", "head", c.in_ch, c.hidden, in_size=w.size,
                              act=c.hidden_act, flag=c.dropout > 0, dropout=c.dropout, classes=c.num_classes))
        w.layers.append(Layer(f"{c.name}.hidden", "classifier.hidden", "linear", c.in_ch, c.hidden,
                              bias=True, timed=False, out_class=w.new_class()))
    w.layers.append(Layer(c.name, "classifier.fc", "linear", c.hidden if c.hidden is not None else c.in_ch,
                          c.num_classes, bias=True, timed=False, out_class=w.new_class()))


def _traced(w: _Walk, t: Traced, path: str) -> None:
    """A traced network's layers, lowered once when it was traced (:mod:`pruningnet.spaces.traced`);
    its channel-index classes become classes of this walk. A last ``graph`` step carries the graph
    that wires them (the whole network: module path ``""``)."""
    classes: dict[int, int] = {}
    for x in t.layers:
        if x.weighted:
            x = replace(x, out_class=classes.setdefault(x.out_class, w.new_class()))
        w.layers.append(x)
    w.layers.append(Layer(t.name, "", "graph", w.channels, w.channels, timed=False, traced=t))


_RULES: dict[type, Callable] = {Conv: lambda w, n, p: _conv(w, n, n.name, p), Block: _block,
                                ShuffleBlock: _shuffle, MaxPool: _maxpool, Classifier: _classifier,
                                Traced: _traced}


def feature_paths(nodes: tuple[Node, ...]):
    """``(module path, node)`` of every top-level node, in :func:`pruningnet.build.build_model`'s names."""
    i = 0
    for node in nodes:
        if isinstance(node, Classifier):
            yield "classifier", node
        else:
            yield f"features.{i}", node
            i += 1


def lower_nodes(nodes: tuple[Node, ...], input_size: int, in_channels: int) -> tuple[Layer, ...]:
    """The layers of ``nodes`` on a square input of ``input_size`` pixels; raises ``ValueError``
    naming the first layer whose output would be smaller than one pixel."""
    w = _Walk(input_size, in_channels)
    try:
        for path, node in feature_paths(nodes):
            start = len(w.layers)
            _RULES[type(node)](w, node, path)
            w.layers[start:] = [x if x.block else replace(x, block=path) for x in w.layers[start:]]
    except _TooSmall as e:
        raise ValueError(f"layer {e.args[0]} has no output pixels at input size {input_size}") from None
    return tuple(replace(x, out_class=w.find(x.out_class)) if x.weighted else x for x in w.layers)
