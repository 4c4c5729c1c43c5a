"""ResNet-50 with torchvision's structure (stride on the 3x3 conv, projection on each stage's first block).

Units: the stem, one per stage output (tied across the stage, projection included), and one mid
width per bottleneck shared by its conv1 and conv2.
"""
from __future__ import annotations

from .ir import Block, Classifier, Conv, MaxPool, round_channels
from .registry import register_space

LAYERS = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # planes, blocks, first stride
EXPANSION = 4


@register_space("resnet50", summary="ResNet-50 (torchvision structure); stem, 4 stage outputs, 16 bottleneck mids")
def describe(opts: dict):
    w, rt, small = opts["width_mult"], opts["round_to"], opts["small_input"]
    unit_max = {"stem": round_channels(64 * w, rt)}
    if small:
        nodes = [Conv("stem", opts["in_channels"], "stem", 3, 1)]
    else:
        nodes = [Conv("stem", opts["in_channels"], "stem", 7, 2), MaxPool("maxpool", 3, 2, 1)]
    prev = "stem"
    for li, (planes, n, s) in enumerate(LAYERS, start=1):
        out = f"layer{li}"
        unit_max[out] = round_channels(planes * EXPANSION * w, rt)
        for b in range(n):
            mid = f"layer{li}.{b}.mid"
            unit_max[mid] = round_channels(planes * w, rt)
            stride = s if b == 0 else 1
            shortcut = Conv("downsample", prev, out, 1, stride, act=None) if b == 0 else None
            nodes.append(Block(f"layer{li}.{b}", (
                Conv("conv1", prev, mid, 1),
                Conv("conv2", mid, mid, 3, stride),
                Conv("conv3", mid, out, 1, act=None),
            ), residual=True, shortcut=shortcut, act="relu"))
            prev = out
    nodes.append(Classifier("fc", prev, opts["num_classes"]))
    return unit_max, tuple(nodes)
