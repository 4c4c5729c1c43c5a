"""MobileNetV3 Large and Small with torchvision's structure.

Blocks are torchvision's ``bneck`` settings: expansion 1x1 (absent when the expansion equals the
input), 3x3 or 5x5 depthwise, optional squeeze-excitation (hard-sigmoid gate), projection 1x1;
ReLU or hard-swish per block; a residual add where the stride is 1 and the width does not change.

Units: ``stem``; one per *stage output*, a run of blocks tied by their residual adds (a block that
keeps the stem's width, as Large's first, shares ``stem``); one expansion per block that has one;
one squeeze width per squeeze-excitation; ``last`` (the final 1x1 conv, 6x the last stage) and
``hidden`` (the classifier's first linear). The squeeze width is a unit of its own, not tied to the
expansion: torchvision sets it to ``_make_divisible(expanded // 4, 8)``, which is not proportional to
the expansion (72 -> 24, 120 -> 32), so a tied width could not give torchvision's network at full
width, and MACs stay a bilinear form of the vector only if it is a free count. Its searchable range
is the same ratio grid as every unit. Widths are rounded as torchvision does (``round_to=8``).
"""
from __future__ import annotations

from .ir import Block, Classifier, Conv, SqueezeExcite, round_channels
from .registry import register_space

# torchvision's bneck_conf: input, kernel, expanded, output, SE, activation, stride
LARGE = ((16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2), (24, 3, 72, 24, False, "RE", 1),
         (24, 5, 72, 40, True, "RE", 2), (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
         (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
         (80, 3, 184, 80, False, "HS", 1), (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
         (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1), (160, 5, 960, 160, True, "HS", 1))
SMALL = ((16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2), (24, 3, 88, 24, False, "RE", 1),
         (24, 5, 96, 40, True, "HS", 2), (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
         (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1), (48, 5, 288, 96, True, "HS", 2),
         (96, 5, 576, 96, True, "HS", 1), (96, 5, 576, 96, True, "HS", 1))
LAST_CHANNEL = {"large": 1280, "small": 1024}
ACT = {"RE": "relu", "HS": "hardswish"}


def _describe(setting, last_channel: int, opts: dict):
    w, rt, small = opts["width_mult"], opts["round_to"], opts["small_input"]

    def adjust(c: int) -> int:
        return round_channels(c * w, rt)

    unit_max = {"stem": adjust(setting[0][0])}
    nodes = [Conv("features.0", opts["in_channels"], "stem", 3, 1 if small else 2, act="hardswish")]
    first_down = next(i for i, row in enumerate(setting, start=1) if row[6] == 2)
    prev, stage = "stem", 0
    for idx, (cin, k, exp, cout, se, act, s) in enumerate(setting, start=1):
        residual = s == 1 and cin == cout  # torchvision's rule, on its strides: same units either way
        if small and idx == first_down:
            s = 1  # CIFAR-style (as mobilenet_v2): keep 32x32 inputs at 32x32 one stage longer
        if residual:
            out = prev
        else:
            stage += 1
            out = f"stage{stage}"
            unit_max[out] = adjust(cout)
        layers = []
        mid = prev
        if exp != cin:
            mid = f"block{idx}.expand"
            unit_max[mid] = adjust(exp)
            layers.append(Conv("expand", prev, mid, 1, act=ACT[act]))
        layers.append(Conv("dw", mid, mid, k, s, depthwise=True, act=ACT[act]))
        if se:
            sq = f"block{idx}.se"
            unit_max[sq] = round_channels(adjust(exp) // 4, 8)
            layers.append(SqueezeExcite("se", mid, sq))
        layers.append(Conv("project", mid, out, 1, act=None))
        nodes.append(Block(f"features.{idx}", tuple(layers), residual=residual))
        prev = out
    unit_max["last"] = 6 * unit_max[prev]
    nodes.append(Conv(f"features.{len(setting) + 1}", prev, "last", 1, act="hardswish"))
    unit_max["hidden"] = adjust(last_channel)
    nodes.append(Classifier("classifier", "last", opts["num_classes"], dropout=0.2, hidden="hidden",
                            hidden_act="hardswish"))
    return unit_max, tuple(nodes)


@register_space("mobilenet_v3_large", summary="MobileNetV3-Large (torchvision structure); stem, 5 stage "
                "outputs, 14 expansions, 8 squeeze widths, last 1x1, classifier hidden",
                defaults={"round_to": 8})
def describe_large(opts: dict):
    return _describe(LARGE, LAST_CHANNEL["large"], opts)


@register_space("mobilenet_v3_small", summary="MobileNetV3-Small (torchvision structure); stem, 5 stage "
                "outputs, 10 expansions, 9 squeeze widths, last 1x1, classifier hidden",
                defaults={"round_to": 8})
def describe_small(opts: dict):
    return _describe(SMALL, LAST_CHANNEL["small"], opts)
