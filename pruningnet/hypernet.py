"""PruningNet: one hypernetwork that emits the weights of any channel vector of a space.

As in MetaPruning, every conv and linear layer has its own generator, FC -> ReLU -> FC, fed that
layer's own channel ratios (``[in/max_in, out/max_out]``). It emits the full max-size weight, which
is cropped to ``[:out, :in]``. BatchNorm has no affine parameters and normalises with batch
statistics during meta-training; for a candidate, statistics are re-estimated on training batches
(:func:`pruningnet.bn.recalibrate_bn`) after :meth:`PruningNet.generate` builds its static network.

The classifier's emitted weight is **centred**: each row has zero mean over the input channels the
vector keeps. Its inputs are pooled ReLU/ReLU6 outputs of a BN layer, so every channel carries the
same positive mean (about 0.39); an uncentred row puts a class offset ``mean * sum(row[:in])`` on the
logits. That direction has a curvature about ``in`` times the others (SGD at lr 0.05 with momentum
0.9 oscillated along it: class-offset logits of 5-12 and loss 8 within 40 steps of the smoke config),
and its value changes with the sampled input width, so it cannot be learned for all vectors at
once. Every conv has a BN after it that removes such a mean; the classifier has none, so its weight
is centred instead (as weight standardisation centres weights) and class offsets live in the
shared bias. The static network simply receives the centred weight: nothing changes at export.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .build import build_model, resolve, static_paths
from .spaces.ir import Block, Classifier, Conv, MaxPool, Ref, Space
from .spec import make_spec


class WeightGenerator(nn.Module):
    """FC(2 -> hidden) -> ReLU -> FC(hidden -> max weight), cropped to the requested shape.

    The second FC is stored as ``(max_out, max_in, k, k, hidden)`` so a crop is a view and only the
    cropped rows take part in the product.
    """

    def __init__(self, max_out: int, max_in: int, kernel: int, hidden: int, std: float):
        super().__init__()
        self.fc1 = nn.Linear(2, hidden)
        self.scale = hidden ** -0.5
        self.weight = nn.Parameter(torch.empty(max_out, max_in, kernel, kernel, hidden))
        self.bias = nn.Parameter(torch.empty(max_out, max_in, kernel, kernel))
        nn.init.normal_(self.bias, 0.0, std)  # at init, every vector gets an ordinary network
        nn.init.normal_(self.weight, 0.0, 0.1 * std)

    def forward(self, ratios: torch.Tensor, out_chs: int, in_chs: int) -> torch.Tensor:
        # 1/sqrt(hidden) keeps the emitted weight's effective learning rate near the optimizer's:
        # an update moves it by lr * g * (1 + |h|^2), and unscaled |h|^2 is several times 1.
        h = F.relu(self.fc1(ratios)) * self.scale
        w = self.weight[:out_chs, :in_chs]
        return torch.matmul(w, h) + self.bias[:out_chs, :in_chs]


def _max(ref: Ref, space: Space) -> int:
    return ref if isinstance(ref, int) else space.unit(ref).max


def _key(path: str) -> str:
    return path.replace(".", "_")


_ACT = {"relu": F.relu, "relu6": F.relu6, None: lambda x: x}


class PruningNet(nn.Module):
    """Generates and runs the sub-network of any channel vector of ``space``.

    ``forward(x, channels)`` takes the vector as an argument; nothing about it is stored on modules.
    ``center_classifier`` (see the module docstring) is a class attribute only so that
    ``benchmarks/bench_meta_training.py`` can measure meta-training without it.
    """

    center_classifier: bool = True

    def __init__(self, space: Space, hidden: int = 32):
        super().__init__()
        self.space = space
        self.hidden = hidden
        self.generators = nn.ModuleDict()
        for path, node in static_paths(space.nodes):
            if isinstance(node, Classifier):
                mx_in = _max(node.in_ch, space)
                self.generators[_key(path)] = WeightGenerator(node.num_classes, mx_in, 1, hidden, 0.01)
                self.fc_bias = nn.Parameter(torch.zeros(node.num_classes))
            else:
                mx_out, mx_in = _max(node.out_ch, space), _max(node.in_ch, space)
                in_per_group = 1 if node.depthwise else mx_in
                fan = node.kernel * node.kernel * (1 if node.depthwise else mx_out)
                std = math.sqrt(2.0 / fan)  # torchvision's kaiming fan_out init of the emitted weight
                self.generators[_key(path)] = WeightGenerator(mx_out, in_per_group, node.kernel, hidden, std)
        # keyed by the node itself (frozen dataclasses, named): survives deepcopy and pickling
        paths = list(static_paths(space.nodes))
        self._paths = {node: _key(path) for path, node in paths}
        assert len(self._paths) == len(paths), "two layers of the space are equal nodes"

    # --- weights -----------------------------------------------------------------------------
    def ratio_table(self, channels: Mapping[str, int]) -> dict:
        """Every layer's generator input at once: built on the host and copied to the device in one
        transfer (per-layer tensors would cost one host-to-device copy and sync per layer on a GPU)."""
        nodes = list(self._paths)
        vals = []
        for node in nodes:
            out_ref = node.num_classes if isinstance(node, Classifier) else node.out_ch
            vals.append([resolve(r, channels) / _max(r, self.space) for r in (node.in_ch, out_ref)])
        table = torch.tensor(vals, dtype=self.fc_bias.dtype)
        device = self.fc_bias.device
        if device.type != "cpu":
            table = table.pin_memory().to(device, non_blocking=True)
        return {node: table[i] for i, node in enumerate(nodes)}

    def layer_weight(self, node: Conv | Classifier, channels: Mapping[str, int], ratios: dict) -> torch.Tensor:
        """The generated weight of one layer, cropped to ``channels`` (``ratios``: :meth:`ratio_table`)."""
        gen = self.generators[self._paths[node]]
        r = ratios[node]
        cin = resolve(node.in_ch, channels)
        if isinstance(node, Classifier):
            w = gen(r, node.num_classes, cin).flatten(1)
            return w - w.mean(dim=1, keepdim=True) if self.center_classifier else w
        cout = resolve(node.out_ch, channels)
        return gen(r, cout, 1 if node.depthwise else cin)

    def generate_weights(self, channels: Mapping[str, int]) -> dict[str, torch.Tensor]:
        """State-dict entries (conv and linear weights, linear bias) of :func:`build_model`'s network."""
        out = {}
        ratios = self.ratio_table(channels)
        for path, node in static_paths(self.space.nodes):
            w = self.layer_weight(node, channels, ratios)
            if isinstance(node, Classifier):
                out[f"{path}.weight"] = w
                out[f"{path}.bias"] = self.fc_bias
            else:
                out[f"{path}.conv.weight"] = w
        return out

    @torch.no_grad()
    def generate(self, channels: Mapping[str, int]) -> nn.Module:
        """A plain network from :func:`build_model` loaded with this vector's generated weights.

        BN affine parameters are 1 and 0 (PruningNet's BN has none); BN statistics are left at
        their defaults: re-estimate them with :func:`pruningnet.bn.recalibrate_bn` before use.
        """
        spec = make_spec(self.space, dict(channels))
        # no kaiming init of the weights loaded below (building on the meta device instead was
        # slower for small networks: 28 vs 8 ms for the quickstart space, AMD EPYC)
        model = build_model(spec, init=False).to(self.fc_bias.device)
        weights = {k: v.detach().clone() for k, v in self.generate_weights(spec.channels).items()}
        missing, unexpected = model.load_state_dict(weights, strict=False)
        assert not unexpected, unexpected
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        return model

    # --- forward -----------------------------------------------------------------------------
    def _conv(self, x: torch.Tensor, c: Conv, channels: Mapping[str, int], ratios: dict) -> torch.Tensor:
        w = self.layer_weight(c, channels, ratios)
        groups = w.shape[0] if c.depthwise else 1
        x = F.conv2d(x, w, None, c.stride, c.padding, 1, groups)
        x = F.batch_norm(x, None, None, training=True)
        return _ACT[c.act](x)

    def forward(self, x: torch.Tensor, channels: Mapping[str, int]) -> torch.Tensor:
        ratios = self.ratio_table(channels)
        for node in self.space.nodes:
            if isinstance(node, Conv):
                x = self._conv(x, node, channels, ratios)
            elif isinstance(node, Block):
                y = x
                for c in node.convs:
                    y = self._conv(y, c, channels, ratios)
                if node.residual:
                    y = y + (self._conv(x, node.shortcut, channels, ratios) if node.shortcut is not None else x)
                x = _ACT[node.act](y)
            elif isinstance(node, MaxPool):
                x = F.max_pool2d(x, node.kernel, node.stride, node.padding)
            elif isinstance(node, Classifier):
                x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
                if node.dropout and self.training:
                    x = F.dropout(x, node.dropout, training=True)
                x = F.linear(x, self.layer_weight(node, channels, ratios), self.fc_bias)
        return x
