"""PruningNet: one hypernetwork that emits the weights of any channel vector of a space.

As in MetaPruning, every conv and linear layer has its own generator, FC -> ReLU -> FC. With
``generator_input="layer"`` (the default) it is fed that layer's own channel ratios
(``[in/max_in, out/max_out]``); with ``"block"`` the ratios of every unit its block reads or writes
(a MobileNetV2 block's ``[in, mid, out]``, MetaPruning's own input), so that a layer's weights can
depend on the widths around it. It emits the full max-size weight, which is cropped to
``[:out, :in]``. Biases (squeeze-excitation convs, linears) are shared parameters of
the max width, cropped likewise. The forward runs the *same* module tree as the static network
(:class:`pruningnet.build.Builder`), with generated layers in place of plain ones, so the two cannot
differ in structure. BatchNorm has no affine parameters and normalises with batch
statistics during meta-training; for a candidate, statistics are re-estimated on training batches
(:func:`pruningnet.bn.recalibrate_bn`) after :meth:`PruningNet.generate` builds its static network.

Every emitted linear weight (the classifier's) is **centred**: each row has zero mean over the input channels the
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

import functools
import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .build import Builder, activation, build_model, nhwc, weight_name
from .pointwise import default_max_elements
from .spaces.ir import Ref, Space, ref_terms, ref_units, resolve
from .spaces.lowering import Layer
from .spec import make_spec


class WeightGenerator(nn.Module):
    """FC(inputs -> hidden) -> ReLU -> FC(hidden -> max weight), cropped to the requested shape.

    The second FC is stored as ``(max_out, max_in, k, k, hidden)`` so a crop is a view and only the
    cropped rows take part in the product. ``cropped_backward`` (a class attribute only so that
    ``benchmarks/bench_pruningnet.py`` can time autograd's own backward beside it) selects
    :class:`_CroppedProduct`.
    """

    cropped_backward: bool = True

    def __init__(self, max_out: int, max_in: int, kernel: int, hidden: int, std: float, inputs: int = 2):
        super().__init__()
        self.fc1 = nn.Linear(inputs, hidden)
        self.scale = hidden ** -0.5
        self.weight = nn.Parameter(torch.empty(max_out, max_in, kernel, kernel, hidden))
        self.bias = nn.Parameter(torch.empty(max_out, max_in, kernel, kernel))
        nn.init.normal_(self.bias, 0.0, std)  # at init, every vector gets an ordinary network
        nn.init.normal_(self.weight, 0.0, 0.1 * std)

    def forward(self, ratios: torch.Tensor, out_chs: int, in_chs: int) -> torch.Tensor:
        # 1/sqrt(hidden) keeps the emitted weight's effective learning rate near the optimizer's:
        # an update moves it by lr * g * (1 + |h|^2), and unscaled |h|^2 is several times 1.
        h = F.relu(self.fc1(ratios)) * self.scale
        if self.cropped_backward:
            return _CroppedProduct.apply(self.weight, self.bias, h, out_chs, in_chs)
        return _product(self.weight, self.bias, h, out_chs, in_chs)


def _outside_zeroed(shape: torch.Size, dtype: torch.dtype, device: torch.device, o: int, i: int) -> torch.Tensor:
    """A tensor of ``shape`` that is zero outside ``[:o, :i]`` (the caller writes the crop): each
    element is written once, where zeros-then-crop would write the crop twice."""
    t = torch.empty(shape, dtype=dtype, device=device)
    t[o:].zero_()
    t[:o, i:].zero_()
    return t


class _CroppedProduct(torch.autograd.Function):
    """``weight[:out, :in] @ h + bias[:out, :in]`` with a backward that writes the weight's gradient
    straight into one tensor of the full shape, zero outside the crop.

    Autograd's own backward of the same expression materialises the outer product, then one zero-filled
    tensor per slice (two for a 2-D crop) and copies between them: for MobileNetV2-1.4's ~200M generator
    parameters that was about a quarter of a batch-8 step at 224 on a 2-core CPU (issue 17). Values
    are the same products and sums, so in fp32 gradients equal autograd's bit for bit; under autocast
    the generator input's gradient is summed in fp32 (autograd's bmm would sum in the autocast dtype).
    The weight is saved as it is (no copy of its crop): autograd's version counter refuses a backward
    after it was changed in place.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, bias: torch.Tensor, h: torch.Tensor, out_chs: int, in_chs: int):
        y = _product(weight, bias, h, out_chs, in_chs)
        ctx.save_for_backward(weight, h)  # the parameter itself, no copy of its crop
        ctx.crop, ctx.shapes = (out_chs, in_chs), (bias.shape, bias.dtype)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        weight, h = ctx.saved_tensors
        (o, i), (b_shape, b_dtype) = ctx.crop, ctx.shapes
        gw = gb = gh = None
        if ctx.needs_input_grad[0]:
            gw = _outside_zeroed(weight.shape, weight.dtype, g.device, o, i)
            torch.mul(g.unsqueeze(-1), h, out=gw[:o, :i])
        if ctx.needs_input_grad[1]:
            gb = _outside_zeroed(b_shape, b_dtype, g.device, o, i)
            gb[:o, :i] = g
        if ctx.needs_input_grad[2]:
            crop = _crop3(weight, o, i)
            gh = torch.bmm(g.reshape(o, 1, -1).to(crop.dtype), crop).sum(0).view(-1).to(h.dtype)
        return gw, gb, gh, None, None


def _crop3(weight: torch.Tensor, out_chs: int, in_chs: int) -> torch.Tensor:
    """``weight[:out, :in]`` (``(max_out, max_in, k, k, hidden)``) as ``out`` matrices of
    ``(in * k * k, hidden)``: each output row's crop is contiguous, so this is a view (a strided batch)
    where flattening the crop to one matrix would copy it."""
    o_max, i_max, k1, k2, hid = weight.shape
    return weight.view(o_max, i_max * k1 * k2, hid)[:out_chs, :in_chs * k1 * k2]


def _product(weight: torch.Tensor, bias: torch.Tensor, h: torch.Tensor, out_chs: int, in_chs: int) -> torch.Tensor:
    """``weight[:out, :in] @ h + bias[:out, :in]``, the emitted ``(out, in, k, k)`` weight."""
    y = _emit(_crop3(weight, out_chs, in_chs), h)
    return y.view(out_chs, in_chs, *weight.shape[2:4]) + bias[:out_chs, :in_chs]


def _emit(crop: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The crop's rows times ``h``, as ``(out, 1, in * k * k)``: one batched product over the strided
    view, ``h`` as the row vector (2.4x faster on the CPU than ``crop @ h`` as a column: 2.6 vs 6.2 ms
    for 60% of MobileNetV2-1.4's classifier, AMD EPYC, 2 threads); under autocast, in its dtype, as
    autograd's matmul would."""
    return torch.bmm(h.view(1, 1, -1).expand(crop.shape[0], 1, -1), crop.transpose(1, 2))


def _key(path: str) -> str:
    return path.replace(".", "_")


GENERATOR_INPUTS = ("layer", "block")


def generator_refs(layers: list[Layer], mode: str) -> list[tuple[Ref, ...]]:
    """Each weighted layer's generator input as channel refs, one per ratio.

    ``layer``: ``(in, out)`` (a fixed count, like the image's 3 channels, gives a constant 1).
    ``block``: every unit the layers of its block (the lowering's ``block``: ``features.N`` or
    ``classifier``, a traced network's block module) read or write, in first-use order, once per unit
    (``2 x unit`` is the unit's ratio again)."""
    if mode == "layer":
        return [(layer.in_ch, layer.out_ch) for layer in layers]
    if mode != "block":
        raise ValueError(f"generator input {mode!r}; accepted: {', '.join(GENERATOR_INPUTS)}")
    keys = [layer.block for layer in layers]
    blocks: dict[str, dict[str, Ref]] = {}
    for key, layer in zip(keys, layers):
        refs = blocks.setdefault(key, {})
        for r in (layer.in_ch, layer.out_ch):
            for unit in ref_units(r):
                refs.setdefault(unit, unit)
    return [tuple(blocks[key].values()) or (layer.in_ch,) for key, layer in zip(keys, layers)]


class _Source:
    """Where generated layers get their weights during one :meth:`PruningNet.forward` (set for the
    call's duration only; nothing about a vector outlives the call)."""

    __slots__ = ("fn",)

    def __init__(self):
        self.fn = None

    def __call__(self, layer: Layer):
        if self.fn is None:
            raise RuntimeError("generated layers run only inside PruningNet.forward(x, channels)")
        return self.fn(layer)


# Device types on which a generated 1x1 conv (stride 1, not depthwise) runs as a matrix product.
# On the CPU a conv goes through oneDNN, which builds (JIT-compiles) a primitive per new shape: a
# static network pays that once, meta-training on every step, since each sampled vector brings new
# channel counts (oneDNN's cache keeps 1024 primitives by default). A matrix product has no per-shape
# setup. A PruningNet step at 224, batch 8, random vectors, AMD EPYC, 2 threads: 0.399-0.452 s as
# convs on NCHW input, 0.339-0.380 s as products on channels-last input (``bench_pruningnet.py --part
# fused224``); with shapes cached (one vector repeated) the conv is faster (a /tmp script, BENCHMARKS.md),
# so static networks keep it. Large inputs may keep it too: where the conv's speed outweighs its
# per-shape setup depends on the CPU, so only inputs of at most POINTWISE_MATMUL_MAX_ELEMENTS take the
# product, and when that is None (the default) the limit is :func:`pruningnet.pointwise.default_max_elements`'s,
# measured per CPU vendor (2^20 on AMD EPYC, no limit on Intel Xeon with AVX-512; issues 17 and 31).
# Not on CUDA until measured there (``benchmarks/gpu_check.py``).
POINTWISE_MATMUL_DEVICES: tuple[str, ...] = ("cpu",)
POINTWISE_MATMUL_MAX_ELEMENTS: float | None = None
# Device types on which the PruningNet converts NCHW input to channels-last once, at its forward's
# start: its products and convs run faster so (Intel Xeon, batch 8 at 224: a step 1.04 s on NCHW
# input, 0.82 s on channels-last; BENCHMARKS.md issue 31), and a user's script passes NCHW.
CHANNELS_LAST_INPUT_DEVICES: tuple[str, ...] = ("cpu",)


@functools.cache
def _rule_limit() -> float:
    return default_max_elements()


def pointwise_max_elements() -> float:
    """The input size up to which a generated 1x1 conv runs as a product (the override or the rule)."""
    return _rule_limit() if POINTWISE_MATMUL_MAX_ELEMENTS is None else POINTWISE_MATMUL_MAX_ELEMENTS


def _pointwise(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """A 1x1 conv of stride 1 (``w``: ``(out, in, 1, 1)``) as one matrix product, in ``x``'s layout:
    channels-last input (channels of stride 1, also a channel slice of it) as ``(N*H*W, in)`` rows,
    a ``(N, C, 1, 1)`` input (squeeze-excitation) as ``(N, in)``, NCHW input as ``N`` matrices
    ``(in, H*W)``. Under autocast, in its dtype, as ``F.conv2d`` (the bias too)."""
    w2 = w.view(w.shape[0], w.shape[1])
    n, c, h, wd = x.shape
    if h * wd == 1:
        return F.linear(x.reshape(n, c), w2, b).view(n, -1, 1, 1)
    if nhwc(x):
        return F.linear(x.permute(0, 2, 3, 1), w2, b).permute(0, 3, 1, 2)
    y = torch.matmul(w2, x.reshape(n, c, h * wd))
    if b is not None:
        y = y + b.to(y.dtype).view(-1, 1)
    return y.view(n, -1, h, wd)


def _is_pointwise(layer: Layer) -> bool:
    return layer.kernel == 1 and layer.stride == 1 and layer.padding == 0 and not layer.depthwise \
        and layer.groups == 1


def _as_matmul(x: torch.Tensor) -> bool:
    """Whether a pointwise layer's input ``x`` takes the product (device and size, per call)."""
    return x.device.type in POINTWISE_MATMUL_DEVICES and x.numel() <= pointwise_max_elements()


class _GenConvBN(nn.Module):
    """A generated conv, BN on batch statistics without affine parameters, the activation."""

    def __init__(self, layer: Layer, source: _Source):
        super().__init__()
        self.layer, self.source, self.act = layer, source, activation(layer.act)
        self.pointwise = _is_pointwise(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, _ = self.source(self.layer)
        if self.pointwise and _as_matmul(x):
            x = _pointwise(x, w)
        else:
            groups = w.shape[0] if self.layer.depthwise else self.layer.groups
            x = F.conv2d(x, w, None, self.layer.stride, self.layer.padding, 1, groups)
        return self.act(F.batch_norm(x, None, None, training=True, eps=self.layer.bn_eps))


class _GenBiased(nn.Module):
    """A generated linear, or conv with a bias and no BN (squeeze-excitation)."""

    def __init__(self, layer: Layer, source: _Source):
        super().__init__()
        self.layer, self.source = layer, source
        self.pointwise = layer.kind != "linear" and _is_pointwise(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.source(self.layer)
        if self.layer.kind == "linear":
            return F.linear(x, w, b)
        if self.pointwise and _as_matmul(x):
            return _pointwise(x, w, b)
        groups = w.shape[0] if self.layer.depthwise else self.layer.groups
        return F.conv2d(x, w, b, self.layer.stride, self.layer.padding, 1, groups)


class _BatchStatBN(nn.Module):
    """A BatchNorm of its own (a traced network's ``bn`` layer): batch statistics, no affine, as
    every PruningNet BN."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, None, None, training=True, eps=self.eps)


def _generated(layer: Layer, source: _Source) -> nn.Module:
    if layer.kind == "bn":
        return _BatchStatBN(layer.bn_eps)
    return _GenConvBN(layer, source) if layer.bn else _GenBiased(layer, source)


class PruningNet(nn.Module):
    """Generates and runs the sub-network of any channel vector of ``space``.

    ``forward(x, channels)`` takes the vector as an argument; nothing about it is kept on modules
    after the call. ``center_classifier`` (see the module docstring) is a class attribute only so
    that ``benchmarks/bench_meta_training.py`` can measure meta-training without it.
    """

    center_classifier: bool = True

    def __init__(self, space: Space, hidden: int = 32, generator_input: str = "layer"):
        super().__init__()
        self.space = space
        self.hidden = hidden
        self.generator_input = generator_input
        self.generators = nn.ModuleDict()
        self.biases = nn.ParameterDict()
        self._layers = space.weighted_layers()
        self._inputs = generator_refs(self._layers, generator_input)
        self._ratio_width = max(map(len, self._inputs))  # ratio_table's rows, padded to one length
        last = self._layers[-1]
        for layer, refs in zip(self._layers, self._inputs):
            mx_out, mx_in = self._max(layer.out_ch), self._max(layer.in_ch)
            if layer.kind == "linear":
                std = 0.01  # torchvision's init of a Linear
            else:
                fan = layer.kernel * layer.kernel * (1 if layer.depthwise else mx_out)
                std = math.sqrt(2.0 / fan)  # torchvision's kaiming fan_out init of the emitted weight
            in_per_group = 1 if layer.depthwise else mx_in // layer.groups
            self.generators[_key(layer.path)] = WeightGenerator(mx_out, in_per_group, layer.kernel, hidden, std,
                                                                len(refs))
            if layer.bias and layer is not last:
                self.biases[_key(layer.path)] = nn.Parameter(torch.zeros(mx_out))
        self.fc_bias = nn.Parameter(torch.zeros(self._max(last.out_ch)))  # the classifier's
        self._source = _Source()
        self.body = Builder(space.layers, lambda layer: _generated(layer, self._source)).model()

    def _max(self, ref: Ref) -> int:
        terms, const = ref_terms(ref)
        return const + sum(f * self.space.unit(u).max for u, f in terms)

    # --- weights -----------------------------------------------------------------------------
    def ratio_table(self, channels: Mapping[str, int]) -> dict:
        """Every layer's generator input at once: built on the host and copied to the device in one
        transfer (per-layer tensors would cost one host-to-device copy and sync per layer on a GPU)."""
        width = self._ratio_width  # one rectangular table: rows padded, each read to its length
        vals = [[resolve(r, channels) / self._max(r) for r in refs] + [0.0] * (width - len(refs))
                for refs in self._inputs]
        table = torch.tensor(vals, dtype=self.fc_bias.dtype)
        device = self.fc_bias.device
        if device.type != "cpu":
            table = table.pin_memory().to(device, non_blocking=True)
        return {layer.path: table[i, :len(refs)] for i, (layer, refs) in enumerate(zip(self._layers, self._inputs))}

    def layer_weight(self, layer: Layer, channels: Mapping[str, int], ratios: dict
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The generated weight of one layer cropped to ``channels``, and its bias (or None)
        (``ratios``: :meth:`ratio_table`)."""
        gen = self.generators[_key(layer.path)]
        r = ratios[layer.path]
        cin, cout = resolve(layer.in_ch, channels), resolve(layer.out_ch, channels)
        bias = None
        if layer.bias:
            b = self.fc_bias if layer is self._layers[-1] else self.biases[_key(layer.path)]
            bias = b[:cout]
        if layer.kind == "linear":
            w = gen(r, cout, cin).flatten(1)
            return (w - w.mean(dim=1, keepdim=True) if self.center_classifier else w), bias
        return gen(r, cout, 1 if layer.depthwise else cin // layer.groups), bias

    def generate_weights(self, channels: Mapping[str, int]) -> dict[str, torch.Tensor]:
        """State-dict entries (conv and linear weights, biases) of :func:`build_model`'s network."""
        out = {}
        ratios = self.ratio_table(channels)
        for layer in self._layers:
            w, b = self.layer_weight(layer, channels, ratios)
            out[weight_name(layer)] = w
            if b is not None:
                out[f"{layer.path}.bias"] = b
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
    def forward(self, x: torch.Tensor, channels: Mapping[str, int]) -> torch.Tensor:
        if x.dim() == 4 and x.device.type in CHANNELS_LAST_INPUT_DEVICES and not nhwc(x):
            x = x.contiguous(memory_format=torch.channels_last)
        ratios = self.ratio_table(channels)
        self._source.fn = lambda layer: self.layer_weight(layer, channels, ratios)
        try:
            return self.body(x)
        finally:
            self._source.fn = None
