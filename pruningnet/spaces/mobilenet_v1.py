"""MobileNetV1: a stem and 13 depthwise-separable blocks; units are the stem and the 13 pointwise convs."""
from __future__ import annotations

from .ir import Block, Classifier, Conv, round_channels
from .registry import register_space

# (pointwise output channels, depthwise stride) of the 13 blocks at width 1.0.
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
          (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


@register_space("mobilenet_v1", summary="MobileNetV1 (Howard et al. 2017); 14 units: stem + 13 pointwise convs")
def describe(opts: dict):
    w, rt = opts["width_mult"], opts["round_to"]
    unit_max = {"stem": round_channels(32 * w, rt)}
    nodes = [Conv("features.0", opts["in_channels"], "stem", 3, 1 if opts["small_input"] else 2)]
    prev = "stem"
    for i, (c, s) in enumerate(BLOCKS, start=1):
        unit = f"pw{i}"
        unit_max[unit] = round_channels(c * w, rt)
        nodes.append(Block(f"features.{i}", (
            Conv("dw", prev, prev, 3, s, depthwise=True),
            Conv("pw", prev, unit, 1),
        )))
        prev = unit
    nodes.append(Classifier("classifier", prev, opts["num_classes"]))
    return unit_max, tuple(nodes)
