"""Which layers produce each unit's channels, and which of them share channel *indices*.

Criterion pruning scores channels on a full-width network and needs, per unit, the layers whose
output channels the unit counts. Some of them are index-coupled (channel i of one is channel i of the
other): a depthwise conv keeps its input's channels, and a residual add ties the block's output to its
shortcut (or to the block's input). Others share only the count: ResNet-50's ``mid`` unit is the
output width of both conv1 and conv2 of a bottleneck, whose channels are unrelated; ShuffleNetV2's
split, concatenation and shuffle permute a stage's channels between blocks, so each branch output of
a stage is a class of its own (the count is shared, the indices are not modelled).

:func:`unit_groups` returns, per searchable unit, its coupling classes, each a list of module paths
(in :func:`pruningnet.build.build_model`'s naming). It reads the space's lowering, whose
``out_class`` is that coupling. Only conv + BN layers are producers (every criterion needs a BN or a
conv weight of the unit's width): a unit with none (MobileNetV3's squeeze-excitation widths) is left
out and keeps its full width in criterion baselines.
"""
from __future__ import annotations

from dataclasses import dataclass

from .spaces.ir import Space


@dataclass(frozen=True)
class Producer:
    """A conv (module path ``path``; ``path.conv`` / ``path.bn``) whose output channels are a unit's."""

    path: str
    unit: str
    depthwise: bool


def unit_groups(space: Space) -> dict[str, list[list[Producer]]]:
    """Per searchable (non-fixed) unit that has producers: its coupling classes, in run order."""
    out: dict[str, dict[int, list[Producer]]] = {u.name: {} for u in space.units if not u.fixed}
    for layer in space.weighted_layers():
        if layer.bn and isinstance(layer.out_ch, str) and layer.out_ch in out:
            prod = Producer(layer.path, layer.out_ch, layer.depthwise)
            out[layer.out_ch].setdefault(layer.out_class, []).append(prod)
    return {u: list(by_class.values()) for u, by_class in out.items() if by_class}
