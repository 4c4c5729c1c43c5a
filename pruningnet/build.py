"""Static networks from specs: plain torch layers, readable state_dict names, none of the search code.

The module tree is made from the space's lowered layers alone (:mod:`pruningnet.spaces.lowering`):
their module paths are the names, their structural steps (``block``, ``se``, ``shuffle``,
``maxpool``, ``head``, a traced network's ``graph``) the containers.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Mapping

import torch
import torch.fx
from torch import nn

from .spaces.ir import resolve
from .spaces.lowering import Layer
from .spec import SubnetSpec

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "hardsigmoid": nn.Hardsigmoid}


def activation(name: str | None) -> nn.Module:
    """The activation module of a name (``None``: identity)."""
    return ACTIVATIONS[name](inplace=True) if name else nn.Identity()


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias), BatchNorm2d and an optional activation, named ``conv``, ``bn``, ``act``."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: str | None = "relu", padding: int | None = None, eps: float = 1e-5):
        padding = kernel // 2 if padding is None else padding
        layers = OrderedDict(conv=nn.Conv2d(in_chs, out_chs, kernel, stride, padding,
                                            groups=groups, bias=False),
                             bn=nn.BatchNorm2d(out_chs, eps=eps))
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
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.residual:
            y = y + self.shortcut(x)
        return self.act(y)


class SqueezeExcitation(nn.Module):
    """torchvision's SqueezeExcitation: ``x * gate(fc2(act(fc1(avgpool(x)))))``."""

    def __init__(self, fc1: nn.Module, fc2: nn.Module, act: str, gate: str):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.act, self.fc2, self.gate = fc1, activation(act), fc2, activation(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.avgpool(x)))))


def nhwc(x: torch.Tensor) -> bool:
    """Whether ``x``'s channels are its innermost dimension (channels-last, or a channel slice of it);
    a ``(N, C, 1, 1)`` tensor counts as NCHW."""
    return x.stride(1) == 1 and x.shape[2] * x.shape[3] > 1


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle, in ``x``'s layout (channels-last stays channels-last)."""
    n, c, h, w = x.shape
    if nhwc(x):  # shuffle the last dimension of the NHWC view
        v = x.permute(0, 2, 3, 1).reshape(n, h, w, groups, c // groups)
        return v.transpose(3, 4).reshape(n, h, w, c).permute(0, 3, 1, 2)
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's unit: ``cat(branch1(x), branch2(x))`` (stride 2) or ``cat(x1, branch2(x2))`` for
    the input's halves ``x1, x2`` (``branch1`` None), then a channel shuffle of 2 groups."""

    def __init__(self, branch1: nn.Module | None, branch2: nn.Module):
        super().__init__()
        self.branch1 = branch1
        self.branch2 = branch2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch1 is None:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class SubnetModel(nn.Module):
    """``features`` (stem and blocks), global average pool, ``classifier`` (dropout, linear)."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential):
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def static_layer(layer: Layer, channels: Mapping[str, int]) -> nn.Module:
    """The plain module of one weighted layer: :class:`ConvBNAct` for convs with BN, else a
    ``Conv2d`` (squeeze-excitation, a traced conv without BN) or ``Linear``; a ``bn`` layer's
    ``BatchNorm2d``."""
    cin, cout = resolve(layer.in_ch, channels), resolve(layer.out_ch, channels)
    if layer.kind == "bn":
        return nn.BatchNorm2d(cin, eps=layer.bn_eps)
    if layer.kind == "linear":
        return nn.Linear(cin, cout, bias=layer.bias)
    groups = cout if layer.depthwise else layer.groups
    if not layer.bn:
        return nn.Conv2d(cin, cout, layer.kernel, layer.stride, layer.padding, groups=groups, bias=layer.bias)
    return ConvBNAct(cin, cout, layer.kernel, layer.stride, groups=groups, act=layer.act, padding=layer.padding,
                     eps=layer.bn_eps)


class Builder:
    """Builds the module tree of a space's lowered layers; ``make(layer)`` supplies each weighted
    layer's module (plain layers here, generated ones in the PruningNet), so both share one structure.

    The layers' module paths are the tree: a path's entries (weighted layers, and the structural steps
    of :mod:`pruningnet.spaces.lowering`) are its children, in run order. A structural step's kind picks
    its rule below, which nests the modules made under its path; a path with no step of its own is an
    ``nn.Sequential`` of its children (``features``, a block's ``body``, a branch)."""

    def __init__(self, layers: tuple[Layer, ...], make):
        self.layers = layers
        self.make = make

    def model(self) -> nn.Module:
        entries = {x.path: self.make(x) if x.weighted or x.kind == "bn" else x for x in self.layers}
        if len(entries) != len(self.layers):
            raise ValueError("two lowered layers share a module path")
        return _assemble(entries, top=True)


def _assemble(entries: dict, top: bool = False) -> nn.Module:
    """The module of one path from its entries (paths relative to it, ``""``: its own)."""
    own = entries.pop("", None)
    if isinstance(own, nn.Module):
        if entries:
            raise ValueError(f"a weighted layer's module holds other layers: {list(entries)}")
        return own
    if own is not None and own.kind == "graph":
        return _graph(own, entries)
    groups: dict[str, dict] = {}
    for path, entry in entries.items():
        head, _, rest = path.partition(".")
        groups.setdefault(head, {})[rest] = entry
    children = OrderedDict((name, _assemble(sub)) for name, sub in groups.items())
    if own is not None:
        return _RULES[own.kind](own, children)
    if top:
        return SubnetModel(children["features"], children["classifier"])
    return nn.Sequential(children)


def _head(x: Layer, c: dict) -> nn.Module:
    layers = OrderedDict()
    if "hidden" in c:
        layers["hidden"] = c["hidden"]
        layers["act"] = activation(x.act)
    if x.dropout:
        layers["dropout"] = nn.Dropout(x.dropout)
    layers["fc"] = c["fc"]
    return nn.Sequential(layers)


def _fresh(module: nn.Module) -> nn.Module:
    """A copy of a template module, on the CPU (templates may live on the meta device)."""
    module = copy.deepcopy(module)
    if any(t.is_meta for t in [*module.parameters(), *module.buffers()]):
        module = module.to_empty(device="cpu")
        for m in module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return module


def _graph(x: Layer, made: dict) -> nn.Module:
    """A traced network: its fx graph with the layers ``made`` (by module path) and every other
    module copied from the template."""
    graph, keep = copy.deepcopy(x.traced.graph), x.traced.keep
    root = {}
    for n in graph.nodes:
        if n.op == "call_module" and n.target not in root:
            if n.target in made and n.target in keep:  # a BN with its own drop and act (timm)
                t = keep[n.target]
                root[n.target] = nn.Sequential(OrderedDict(bn=made[n.target], drop=_fresh(t.drop),
                                                           act=_fresh(t.act)))
            else:
                root[n.target] = made[n.target] if n.target in made else _fresh(keep[n.target])
    return torch.fx.GraphModule(root, graph, class_name="TracedSubnet")


#: structural steps by kind: ``(step, its children by name) -> module``
_RULES = {
    "block": lambda x, c: ResidualBlock(c["body"], x.flag, c.get("shortcut"), x.act),
    "se": lambda x, c: SqueezeExcitation(c["fc1"], c["fc2"], x.act, x.gate),
    "shuffle": lambda x, c: ShuffleUnit(c.get("branch1"), c["branch2"]),
    "maxpool": lambda x, c: nn.MaxPool2d(x.kernel, x.stride, x.padding),
    "head": _head,
}


def _init_weights(model: nn.Module) -> None:
    """torchvision's MobileNet/ResNet/ShuffleNet initialisation."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def build_model(spec: SubnetSpec, init: bool = True) -> SubnetModel:
    """A randomly initialised plain ``nn.Module`` with exactly the spec's channel counts
    (``init=False``: torch's default init only, for callers that load every weight anyway)."""
    channels = spec.channels
    model = Builder(spec.space.layers, lambda layer: static_layer(layer, channels)).model()
    if init:
        _init_weights(model)
    return model


def weight_name(layer: Layer) -> str:
    """The state-dict name of a weighted layer's weight in :func:`build_model`'s network."""
    return f"{layer.path}.conv.weight" if layer.bn else f"{layer.path}.weight"
