"""ShuffleNetV2 with torchvision's structure (x0.5, x1.0, x1.5 and x2.0 via ``width_mult``).

A stage's units keep every vector valid under its split, concatenation and shuffle:

- ``stage2`` .. ``stage4`` are the stage's *branch* width b. Every unit of the stage concatenates two
  b-wide halves, so the stage's output is 2b channels (a :class:`~pruningnet.spaces.ir.Scaled` ref) and
  a stride-1 unit's split always gives two b-wide halves: the pass-through half and branch2's input.
  One unit per stage ties all its blocks' outputs, as a residual add ties MobileNetV2's stage.
- ``stageS.B.mid`` is the inner width of block B's branch2 (its first 1x1 output and its depthwise
  conv), free per block as ResNet-50's bottleneck mid: torchvision has it equal to b.
- ``stem`` (conv1) and ``last`` (conv5).

The stride-2 unit's branch1 (depthwise conv on the input, then 1x1 to b) has no width of its own.
``small_input`` drops the stem's stride and the max pool (CIFAR-style).
"""
from __future__ import annotations

from ..errors import UserError
from .ir import Classifier, Conv, MaxPool, Scaled, ShuffleBlock, round_channels
from .registry import register_space

REPEATS = (4, 8, 4)
# torchvision's stages_out_channels per width: stem, stage2-4 outputs (2b), conv5
OUT_CHANNELS = {0.5: (24, 48, 96, 192, 1024), 1.0: (24, 116, 232, 464, 1024),
                1.5: (24, 176, 352, 704, 1024), 2.0: (24, 244, 488, 976, 2048)}


@register_space("shufflenet_v2", summary="ShuffleNetV2 (torchvision structure, width_mult 0.5/1.0/1.5/2.0); "
                "stem, 3 stage branch widths, 16 branch mids, conv5")
def describe(opts: dict):
    w = opts["width_mult"]
    if w not in OUT_CHANNELS:
        raise UserError(f"option width_mult={w:g} is not a ShuffleNetV2 width; accepted: "
                        f"{', '.join(f'{k:g}' for k in OUT_CHANNELS)}")
    stem_ch, *stage_out, last_ch = OUT_CHANNELS[w]
    rt, small = opts["round_to"], opts["small_input"]
    unit_max = {"stem": round_channels(stem_ch, rt)}
    nodes = [Conv("conv1", opts["in_channels"], "stem", 3, 1 if small else 2)]
    if not small:
        nodes.append(MaxPool("maxpool", 3, 2, 1))
    prev = "stem"
    for si, (n, out) in enumerate(zip(REPEATS, stage_out), start=2):
        b = f"stage{si}"
        unit_max[b] = round_channels(out // 2, rt)
        for bi in range(n):
            mid = f"{b}.{bi}.mid"
            unit_max[mid] = unit_max[b]
            stride = 2 if bi == 0 else 1
            inp = prev if bi == 0 else b
            branch2 = (Conv("pw1", inp, mid, 1), Conv("dw", mid, mid, 3, stride, depthwise=True, act=None),
                       Conv("pw2", mid, b, 1))
            branch1 = (Conv("dw", prev, prev, 3, 2, depthwise=True, act=None), Conv("pw", prev, b, 1)) \
                if bi == 0 else ()
            nodes.append(ShuffleBlock(f"{b}.{bi}", branch2, branch1))
        prev = Scaled(b, 2)
    unit_max["last"] = round_channels(last_ch, rt)
    nodes.append(Conv("conv5", prev, "last", 1))
    nodes.append(Classifier("fc", "last", opts["num_classes"]))
    return unit_max, tuple(nodes)
