"""Which layers produce each unit's channels, and which of them share channel *indices*.

Criterion pruning scores channels on a full-width network and needs, per unit, the layers whose
output channels the unit counts. Some of them are index-coupled (channel i of one is channel i of the
other): a depthwise conv keeps its input's channels, and a residual add ties the block's output to its
shortcut (or to the block's input). Others share only the count: ResNet-50's ``mid`` unit is the
output width of both conv1 and conv2 of a bottleneck, whose channels are unrelated.

:func:`unit_groups` returns, per searchable unit, its coupling classes, each a list of module paths
(in :func:`pruningnet.build.static_paths` naming). One traversal, the builder's own naming.
"""
from __future__ import annotations

from dataclasses import dataclass

from .build import static_paths
from .spaces.ir import Block, Conv, Space


@dataclass(frozen=True)
class Producer:
    """A conv (module path ``path``; ``path.conv`` / ``path.bn``) whose output channels are a unit's."""

    path: str
    unit: str
    depthwise: bool


class _Classes:
    """Union-find over channel-index classes."""

    def __init__(self):
        self.parent: list[int] = []

    def new(self) -> int:
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


def unit_groups(space: Space) -> dict[str, list[list[Producer]]]:
    """Per searchable (non-fixed) unit: its coupling classes of producers, in run order."""
    paths = {id(node): path for path, node in static_paths(space.nodes)}
    classes = _Classes()
    found: list[tuple[Producer, int]] = []
    cur = classes.new()  # the input image's channels

    def conv(c: Conv, x: int) -> int:
        out = x if c.depthwise else classes.new()
        if isinstance(c.out_ch, str):
            found.append((Producer(paths[id(c)], c.out_ch, c.depthwise), out))
        return out

    for node in space.nodes:
        if isinstance(node, Conv):
            cur = conv(node, cur)
        elif isinstance(node, Block):
            y = cur
            for c in node.convs:
                y = conv(c, y)
            if node.residual:
                s = conv(node.shortcut, cur) if node.shortcut is not None else cur
                y = classes.union(y, s)
            cur = y
    out: dict[str, dict[int, list[Producer]]] = {u.name: {} for u in space.units if not u.fixed}
    for prod, cls in found:
        if prod.unit in out:
            out[prod.unit].setdefault(classes.find(cls), []).append(prod)
    return {u: list(by_class.values()) for u, by_class in out.items()}
