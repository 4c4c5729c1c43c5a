"""MobileNetV2 with torchvision's structure.

Units: the stem, one per stage output (tied across the stage by the residual adds), one expansion
unit per inverted-residual block that has one, and the final 1x1 conv. The default space is
MetaPruning's width: 1.4x wide, widths floored (``round_to=1``).

``variant="metapruning"`` is the network the MetaPruning paper searched (its official code,
``mobilenetv2/searching/model_for_FLOPs.py``): its stage widths at 1.4x (44, 22, 33, 44, 88, 132, 224,
448: not all ``floor(1.4 c)``), an expansion 1x1 in the t=1 block too (unit ``stage1.0.expand``, at
most the stem's width), and the final 1x1 fixed at 1280 channels (not searched).
"""
from __future__ import annotations

from ..errors import UserError
from .ir import Block, Classifier, Conv, round_channels
from .registry import register_space

# torchvision's inverted_residual_setting: expansion t, channels c, repeats n, first stride s.
SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
           (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


# the paper's widths at 1.4x: stem, then the 7 stages' outputs
METAPRUNING_WIDTHS = (44, 22, 33, 44, 88, 132, 224, 448)
VARIANTS = ("torchvision", "metapruning")


@register_space("mobilenet_v2", summary="MobileNetV2 (torchvision structure, or variant=metapruning: the "
                "paper's); stem, 7 stage outputs, 16 block expansions, final 1x1",
                defaults={"width_mult": 1.4, "variant": "torchvision"})
def describe(opts: dict):
    w, rt, small, variant = opts["width_mult"], opts["round_to"], opts["small_input"], opts["variant"]
    if variant not in VARIANTS:
        raise UserError(f"option variant={variant!r} is not accepted; accepted: {', '.join(VARIANTS)}")
    paper = variant == "metapruning"
    if paper and (w != 1.4 or rt != 1):
        raise UserError(f"option variant=metapruning is the paper's 1.4x network with floored widths; "
                        f"accepted: width_mult=1.4 and round_to=1 (got width_mult={w:g}, round_to={rt})")
    width = (lambda i, c: METAPRUNING_WIDTHS[i]) if paper else (lambda i, c: round_channels(c * w, rt))
    unit_max = {"stem": width(0, 32)}
    nodes = [Conv("features.0", opts["in_channels"], "stem", 3, 1 if small else 2, act="relu6")]
    prev, idx = "stem", 1
    for stage, (t, c, n, s) in enumerate(SETTING, start=1):
        out = f"stage{stage}"
        unit_max[out] = width(stage, c)
        if small and stage == 2:
            s = 1  # CIFAR-style: keep 32x32 inputs at 32x32 one stage longer
        for b in range(n):
            convs = []
            mid = prev
            if t != 1 or paper:
                mid = f"stage{stage}.{b}.expand"
                unit_max[mid] = int(round(unit_max[prev] * t))
                convs.append(Conv("expand", prev, mid, 1, act="relu6"))
            convs.append(Conv("dw", mid, mid, 3, s if b == 0 else 1, depthwise=True, act="relu6"))
            convs.append(Conv("project", mid, out, 1, act=None))
            nodes.append(Block(f"features.{idx}", tuple(convs), residual=prev == out))
            prev, idx = out, idx + 1
    last: str | int = 1280
    if not paper:
        last = "last"
        unit_max[last] = round_channels(1280 * max(1.0, w), rt)
    nodes.append(Conv(f"features.{idx}", prev, last, 1, act="relu6"))
    nodes.append(Classifier("classifier", last, opts["num_classes"], dropout=0.2))
    return unit_max, tuple(nodes)
