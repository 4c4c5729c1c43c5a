"""Static networks from specs: plain torch layers, readable state_dict names, none of the search code."""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import torch
from torch import nn

from .spaces.ir import Block, Classifier, Conv, MaxPool, Node, Ref
from .spec import SubnetSpec

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6}


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias), BatchNorm2d and an optional activation, named ``conv``, ``bn``, ``act``."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: str | None = "relu"):
        layers = OrderedDict(conv=nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2,
                                            groups=groups, bias=False),
                             bn=nn.BatchNorm2d(out_chs))
        if act is not None:
            layers["act"] = ACTIVATIONS[act](inplace=True)
        super().__init__(layers)


class ResidualBlock(nn.Module):
    """``body(x)``, plus ``shortcut(x)`` when residual, then the block activation."""

    def __init__(self, body: nn.Sequential, residual: bool, shortcut: nn.Module | None, act: str | None):
        super().__init__()
        self.body = body
        self.residual = residual
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.act = ACTIVATIONS[act](inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.residual:
            y = y + self.shortcut(x)
        return self.act(y)


class SubnetModel(nn.Module):
    """``features`` (stem and blocks), global average pool, ``classifier`` (dropout, linear)."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential):
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _conv(c: Conv, ch: Mapping[str, int]) -> ConvBNAct:
    cin, cout = resolve(c.in_ch, ch), resolve(c.out_ch, ch)
    return ConvBNAct(cin, cout, c.kernel, c.stride, groups=cout if c.depthwise else 1, act=c.act)


def resolve(ref: Ref, channels: Mapping[str, int]) -> int:
    """A ref's channel count under ``channels``."""
    return ref if isinstance(ref, int) else int(channels[ref])


def build_from_nodes(nodes: tuple[Node, ...], channels: Mapping[str, int], init: bool = True) -> SubnetModel:
    features: list[nn.Module] = []
    classifier = None
    for node in nodes:
        if isinstance(node, Conv):
            features.append(_conv(node, channels))
        elif isinstance(node, Block):
            body = nn.Sequential(OrderedDict((c.name, _conv(c, channels)) for c in node.convs))
            short = _conv(node.shortcut, channels) if node.shortcut is not None else None
            features.append(ResidualBlock(body, node.residual, short, node.act))
        elif isinstance(node, MaxPool):
            features.append(nn.MaxPool2d(node.kernel, node.stride, node.padding))
        elif isinstance(node, Classifier):
            layers = OrderedDict()
            if node.dropout:
                layers["dropout"] = nn.Dropout(node.dropout)
            layers["fc"] = nn.Linear(resolve(node.in_ch, channels), node.num_classes)
            classifier = nn.Sequential(layers)
    model = SubnetModel(nn.Sequential(*features), classifier)
    if init:
        _init_weights(model)
    return model


def _init_weights(model: nn.Module) -> None:
    """torchvision's MobileNetV2/ResNet initialisation."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def build_model(spec: SubnetSpec, init: bool = True) -> SubnetModel:
    """A randomly initialised plain ``nn.Module`` with exactly the spec's channel counts
    (``init=False``: torch's default init only, for callers that load every weight anyway)."""
    return build_from_nodes(spec.space.nodes, spec.channels, init)


def static_paths(nodes: tuple[Node, ...]):
    """``(module_path, node)`` for every Conv and the Classifier, in the names :func:`build_model` uses.

    Conv paths name a :class:`ConvBNAct` (append ``.conv`` / ``.bn``); the classifier path names
    its ``Linear``.
    """
    i = 0
    for node in nodes:
        if isinstance(node, Conv):
            yield f"features.{i}", node
        elif isinstance(node, Block):
            for c in node.convs:
                yield f"features.{i}.body.{c.name}", c
            if node.shortcut is not None:
                yield f"features.{i}.shortcut", node.shortcut
        elif isinstance(node, Classifier):
            yield "classifier.fc", node
            continue
        i += 1
