"""A channel space from any PyTorch CNN: trace it with torch.fx, group its channels, lower it.

:func:`trace_network` traces a model (``torch.fx.symbolic_trace``, shapes from a meta-device
``ShapeProp``) and follows the *channels* of every tensor through the graph. A tensor's channels are
a list of segments (a ``torch.cat`` makes several); each segment is a *group* of channels whose
count is one variable. Convs and linears start a new group; depthwise convs, BatchNorms,
activations, pools and other per-channel steps keep their input's; a residual add (or any
elementwise op of two tensors with channels, a squeeze-excitation's gate) ties its operands' groups
into one; a concatenation puts segments side by side (a later ``chunk`` or ``split`` takes them
apart at their offsets); a channel shuffle (``view`` to ``(N, g, C/g, H, W)``, ``transpose``,
``view`` back) mixes them, so a later split ties the mixed groups into one count. The model's
input and output channels are fixed; every other conv or linear output is a searchable unit named
by the module path of the layer that first produces it.

What cannot be resized is refused in one line naming the module path, the op and the fix: a
``view``/``reshape`` that bakes in a channel count, a ``permute``, a grouped conv whose input is a
concatenation (its groups would not divide the segments), a module with parameters this file does
not resize (``LayerNorm``, ``GroupNorm``, a custom block), a parameter used directly, control flow
that fx cannot trace. The fixes: ``fixed_units=UNIT`` (the op then sees a constant count) or
``leaf_modules=PATH`` (the module is kept whole, its channels fixed).

Torch-Pruning's ``DependencyGraph`` walks the autograd graph of one forward and treats an operation
it does not know as element-wise; this walk refuses instead, so a space it returns is one whose
every vector builds. Nothing here imports the CLI; :mod:`pruningnet.spaces.model` registers the
``model:MODULE:CALLABLE`` names.
"""
from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass, field, replace

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import UserError
from .ir import Ref, Scaled, Sum, Traced, ref_units
from .lowering import Layer

# call_function / call_method targets that keep every channel where it is (output channels = input's)
_KEEP_FUNCTIONS = {
    F.relu, F.relu6, F.hardswish, F.hardsigmoid, F.silu, F.gelu, F.sigmoid, F.tanh, F.elu, F.leaky_relu,
    F.mish, F.softplus, F.dropout, F.dropout2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
    F.avg_pool2d, F.max_pool2d, F.interpolate, torch.relu, torch.sigmoid, torch.tanh, torch.clamp,
    torch.mean, torch.nn.functional.hardtanh, operator.neg, torch.neg, torch.exp, torch.abs,
}
_KEEP_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clamp_min",
                 "clamp_max", "contiguous", "clone", "detach", "float", "half", "to", "type_as", "mean",
                 "neg", "exp", "abs", "hardtanh", "hardtanh_"}
_BINARY_FUNCTIONS = {operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd,
                     operator.imul, operator.isub, torch.add, torch.sub, torch.mul, torch.div}
_BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
_SIZE_METHODS = {"size", "dim"}
# wrapped functions (fx leaves) known by name: per-sample drop of a whole residual branch
_KEEP_NAMES = {"stochastic_depth", "drop_path"}
# parameterless torch.nn modules that keep channels where they are
_KEEP_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh,
                 nn.ELU, nn.LeakyReLU, nn.Mish, nn.Softplus, nn.Hardtanh, nn.Identity, nn.Dropout,
                 nn.Dropout2d, nn.AlphaDropout, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                 nn.AdaptiveMaxPool2d, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)


class _Opaque(Exception):
    """An op this walk does not resize: its channels must stay fixed (``fix``) or the space is refused."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


@dataclass
class _Seg:
    group: int
    factor: int
    cls: int


@dataclass
class _Chan:
    """The channels of one tensor: segments in order; ``mixed`` after a channel shuffle; ``pending``
    inside a shuffle (``("view", g)`` after the grouping view, ``("t", g)`` after its transpose)."""

    segs: list
    mixed: bool = False
    pending: tuple | None = None


@dataclass
class _Rec:
    path: str
    kind: str
    x: _Chan
    y: _Chan
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    in_size: int = 1
    out_size: int = 1
    bias: bool = False
    bn: bool = False
    groups: int = 1
    eps: float = 1e-5


@dataclass
class TracedNetwork:
    """The result of :func:`trace_network`: a :class:`~pruningnet.spaces.ir.Traced` node, its units'
    max counts (run order) and the model's output width."""

    node: Traced
    unit_max: dict
    num_outputs: int
    notes: list = field(default_factory=list)


class _Walk:
    def __init__(self, gm: fx.GraphModule, leaves: set[str], name: str = "model"):
        self.gm, self.name = gm, name
        self.leaves = leaves
        self.parent: list[int] = []
        self.gmax: list[int] = []
        self.multiple: list[int] = []
        self.cparent: list[int] = []
        self.fixed: set[int] = set()
        self.constraints: list[tuple[str, str, list[int]]] = []  # (path, op, groups that must be fixed)
        self.chan: dict[fx.Node, object] = {}
        self.recs: list[_Rec] = []
        self.by_node: dict[fx.Node, _Rec] = {}
        self.fused: set[fx.Node] = set()

    # --- union-find over groups (counts) and classes (channel indices) ---------------------------
    def new_group(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.gmax.append(size)
        self.multiple.append(1)
        return len(self.parent) - 1

    def new_class(self) -> int:
        self.cparent.append(len(self.cparent))
        return len(self.cparent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def cfind(self, c: int) -> int:
        while self.cparent[c] != c:
            self.cparent[c] = self.cparent[self.cparent[c]]
            c = self.cparent[c]
        return c

    def union(self, a: int, b: int, where: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.gmax[ra] != self.gmax[rb]:
            raise _Opaque(f"{where} ties channel groups of {self.gmax[ra]} and {self.gmax[rb]} channels")
        lo, hi = min(ra, rb), max(ra, rb)
        self.parent[hi] = lo
        self.multiple[lo] = math.lcm(self.multiple[lo], self.multiple[hi])
        if hi in self.fixed:
            self.fixed.add(lo)

    def cunion(self, a: int, b: int) -> None:
        ra, rb = self.cfind(a), self.cfind(b)
        self.cparent[max(ra, rb)] = min(ra, rb)

    def fresh(self, size: int) -> _Chan:
        return _Chan([_Seg(self.new_group(size), 1, self.new_class())])

    def width(self, c: _Chan) -> int:
        return sum(s.factor * self.gmax[self.find(s.group)] for s in c.segs)

    # --- the walk --------------------------------------------------------------------------------
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            try:
                self.chan[node] = self.step(node)
            except _Opaque as e:
                self.opaque(node, e.what)

    def opaque(self, node: fx.Node, what: str) -> None:
        """The channels ``node`` reads must stay fixed; its output is a fixed count of its own."""
        path = self.where(node)
        groups = [s.group for a in self.tensor_args(node) for s in a.segs]
        if node.op == "call_module" and node.target in self.leaves:
            self.fixed.update(self.find(g) for g in groups)
        elif groups:
            self.constraints.append((path, what, groups))
        out = self.shape(node)
        self.chan[node] = None
        if out is not None and len(out) >= 2:
            c = self.fresh(out[1])
            self.fixed.add(c.segs[0].group)
            self.chan[node] = c

    def where(self, node: fx.Node) -> str:
        if node.op == "call_module":
            return str(node.target)
        stack = node.meta.get("nn_module_stack")
        owner = list(stack.values())[-1][0] if stack else ""
        return owner or f"forward (node {node.name})"

    def shape(self, node) -> tuple | None:
        meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    def tensor_args(self, node: fx.Node) -> list[_Chan]:
        out = []
        for a in node.all_input_nodes:
            c = self.chan.get(a)
            if isinstance(c, _Chan):
                out.append(c)
            elif isinstance(c, list):
                out.extend(x for x in c if isinstance(x, _Chan))
        return out

    def arg(self, node: fx.Node, i: int = 0) -> _Chan:
        a = node.args[i] if len(node.args) > i else None
        c = self.chan.get(a) if isinstance(a, fx.Node) else None
        if not isinstance(c, _Chan):
            raise _Opaque(f"{self.op_name(node)} on an input whose channels are not known")
        if c.pending is not None and node.target not in ("transpose", "view", "reshape", "contiguous",
                                                         torch.transpose, torch.reshape):
            raise _Opaque(f"{self.op_name(node)} inside a channel shuffle")
        return c

    def op_name(self, node: fx.Node) -> str:
        if node.op == "call_module":
            return type(self.gm.get_submodule(node.target)).__name__
        t = node.target
        return t if isinstance(t, str) else getattr(t, "__name__", str(t))

    def step(self, node: fx.Node):
        if node.op == "placeholder":
            shape = self.shape(node)
            if shape is None:
                return None
            c = self.fresh(shape[1])
            self.fixed.add(c.segs[0].group)
            return c
        if node.op == "output":
            for c in self.tensor_args(node):
                self.fixed.update(self.find(s.group) for s in c.segs)
            return None
        if node.op == "get_attr":
            owner = str(node.target).rsplit(".", 1)[0] if "." in str(node.target) else str(node.target)
            raise UserError(f"{self.name}: {node.target}: a parameter used directly (get_attr) "
                            f"cannot be resized; fix: leaf_modules={owner} (kept whole, its channels fixed)")
        if node.op == "call_module":
            return self.module(node)
        if node.op == "call_method" and node.target in _SIZE_METHODS:
            return None
        if node.op == "call_function" and node.target is getattr:
            return None
        if self.shape(node) is None and not isinstance(node.meta.get("tensor_meta"), (tuple, list)):
            if not self.tensor_args(node):
                return None  # arithmetic on sizes
        return self.function(node)

    # --- modules ---------------------------------------------------------------------------------
    def module(self, node: fx.Node):
        m = self.gm.get_submodule(node.target)
        path = str(node.target)
        if path in self.leaves:
            raise _Opaque("a leaf module")
        if isinstance(m, nn.Conv2d):
            return self.conv(node, m, path)
        if isinstance(m, nn.BatchNorm2d):
            return self.batchnorm(node, m, path)
        if isinstance(m, nn.Linear):
            x = self.arg(node)
            if len(self.shape(node.args[0])) != 2:
                raise _Opaque(f"Linear on a {len(self.shape(node.args[0]))}-D tensor (channels are not dim 1)")
            self.check_width(x, m.in_features, path)
            y = self.fresh(m.out_features)
            self.record(node, _Rec(path, "linear", x, y, bias=m.bias is not None))
            return y
        if isinstance(m, nn.Flatten):
            return self.flatten(node, m.start_dim, m.end_dim)
        if isinstance(m, nn.ChannelShuffle):
            return self.mix(self.arg(node))
        if isinstance(m, _KEEP_MODULES):
            return self.keep(node)
        raise _Opaque(f"{type(m).__name__} (a module whose channels this walk does not resize)")

    def record(self, node: fx.Node, rec: _Rec) -> None:
        shape_in, shape_out = self.shape(node.args[0]), self.shape(node)
        if len(shape_in) == 4:
            rec.in_size, rec.out_size = shape_in[2], shape_out[2]
        self.recs.append(rec)
        self.by_node[node] = rec

    def check_width(self, x: _Chan, want: int, path: str) -> None:
        if self.width(x) != want:
            raise UserError(f"{path}: its input has {self.width(x)} channels in the trace but the layer "
                            f"takes {want}: the model is not traceable as written")

    def conv(self, node: fx.Node, m: nn.Conv2d, path: str) -> _Chan:
        x = self.arg(node)
        k, s, p, d = m.kernel_size, m.stride, m.padding, m.dilation
        if isinstance(p, str) or len(set(k)) != 1 or len(set(s)) != 1 or len(set(p)) != 1 or set(d) != {1} \
                or m.padding_mode != "zeros":
            raise _Opaque(f"Conv2d(kernel={k}, stride={s}, padding={p}, dilation={d}) (only square kernels, "
                          "strides and paddings, dilation 1, zero padding are resized)")
        shape_in = self.shape(node.args[0])
        if shape_in[2] != shape_in[3]:
            raise _Opaque(f"Conv2d on a {shape_in[2]}x{shape_in[3]} map (only square maps are lowered)")
        self.check_width(x, m.in_channels, path)
        g, kind, groups = m.groups, "conv", 1
        if g == 1:
            y = self.fresh(m.out_channels)
        elif g == m.in_channels == m.out_channels:
            y, kind = _Chan([replace(seg) for seg in x.segs], x.mixed), "dwconv"
        elif g == m.in_channels:
            raise _Opaque(f"depthwise Conv2d with a channel multiplier ({m.in_channels} -> {m.out_channels})")
        else:
            roots = {self.find(seg.group) for seg in x.segs}
            if len(roots) != 1:
                raise _Opaque(f"grouped Conv2d (groups={g}) on a concatenation: its groups would not "
                              "divide the concatenated segments")
            y = self.fresh(m.out_channels)
            factor = sum(seg.factor for seg in x.segs)  # input: factor x one count
            for r, need in ((roots.pop(), g // math.gcd(g, factor)), (self.find(y.segs[0].group), g)):
                self.multiple[r] = math.lcm(self.multiple[r], need)
            groups = g
        self.record(node, _Rec(path, kind, x, y, k[0], s[0], p[0], bias=m.bias is not None, groups=groups))
        return y

    def batchnorm(self, node: fx.Node, m: nn.BatchNorm2d, path: str) -> _Chan:
        x = self.arg(node)
        self.check_width(x, m.num_features, path)
        src = node.args[0]
        rec = self.by_node.get(src)
        standard = m.affine and m.track_running_stats
        if rec is not None and not _bn_act(m) and rec.kind in ("conv", "dwconv") and not rec.bn and not rec.bias \
                and len(src.users) == 1 and standard:
            rec.bn, rec.eps = True, m.eps  # conv + BN: one layer, as the hand-written spaces lower them
            self.fused.add(node)
            return x
        if not standard:
            raise _Opaque("BatchNorm2d without affine parameters or running statistics")
        self.record(node, _Rec(path, "bn", x, x, eps=m.eps))
        return x

    def keep(self, node: fx.Node) -> _Chan:
        x = self.arg(node)
        si, so = self.shape(node.args[0]), self.shape(node)
        if so is None or len(so) < 2 or so[1] != si[1]:
            raise _Opaque(f"{self.op_name(node)} that changes the channel dimension")
        return x

    # --- functions and methods -------------------------------------------------------------------
    def function(self, node: fx.Node):
        t, is_method = node.target, node.op == "call_method"
        if (not is_method and t in _BINARY_FUNCTIONS) or (is_method and t in _BINARY_METHODS):
            return self.binary(node)
        if t is torch.cat or t is torch.concat:
            return self.cat(node)
        if t in (torch.chunk, torch.split) or (is_method and t in ("chunk", "split")):
            return self.split(node)
        if t is operator.getitem:
            return self.getitem(node)
        if t is torch.flatten or (is_method and t == "flatten"):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            return self.flatten(node, start, end)
        if is_method and t in ("view", "reshape") or t is torch.reshape:
            return self.reshape(node)
        if (is_method and t == "transpose") or t is torch.transpose:
            return self.transpose(node)
        if is_method and t == "contiguous":
            return self.arg(node)
        if (not is_method and (t in _KEEP_FUNCTIONS or getattr(t, "__name__", "") in _KEEP_NAMES)) \
                or (is_method and t in _KEEP_METHODS):
            return self.keep(node)
        raise _Opaque(self.op_name(node))

    def binary(self, node: fx.Node) -> _Chan:
        ops = [a for a in node.args[:2] if isinstance(a, fx.Node)]
        chans = [(a, self.chan.get(a)) for a in ops]
        if any(c is None and self.shape(a) is not None for a, c in chans):
            raise _Opaque(f"{self.op_name(node)} with an operand whose channels are not known")
        chans = [(a, c) for a, c in chans if isinstance(c, _Chan)]
        if any(c.pending is not None for _, c in chans):
            raise _Opaque(f"{self.op_name(node)} inside a channel shuffle")
        wide = [(a, c) for a, c in chans if self.shape(a)[1] > 1 or len(self.shape(a)) < 2]
        if not wide:
            return chans[0][1] if chans else None
        if len(self.shape(node)) != len(self.shape(wide[0][0])):
            raise _Opaque(f"{self.op_name(node)} that broadcasts channels into another dimension")
        first = wide[0][1]
        for _, other in wide[1:]:
            self.tie(first, other, node)
        return first

    def tie(self, a: _Chan, b: _Chan, node: fx.Node, indices: bool = True) -> None:
        """Elementwise op of two tensors: channel i of one is channel i of the other (``indices``
        False: only their counts are equal)."""
        if len(a.segs) != len(b.segs) or any(x.factor != y.factor for x, y in zip(a.segs, b.segs)):
            raise _Opaque(f"{self.op_name(node)} of channels concatenated differently")
        for x, y in zip(a.segs, b.segs):
            self.union(x.group, y.group, self.where(node))
            if indices:
                self.cunion(x.cls, y.cls)

    def cat(self, node: fx.Node) -> _Chan:
        parts = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        ndim = len(self.shape(node))
        if dim % ndim != 1:
            raise _Opaque(f"cat along dim {dim} (only the channel dimension 1 is resized)")
        segs, mixed = [], False
        for p in parts:
            c = self.chan.get(p)
            if not isinstance(c, _Chan) or c.pending is not None:
                raise _Opaque("cat of an input whose channels are not known")
            segs.extend(c.segs)
            mixed = mixed or c.mixed
        return _Chan(list(segs), mixed)

    def split(self, node: fx.Node) -> list:
        x = self.arg(node)
        metas = node.meta.get("tensor_meta")
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        ndim = len(self.shape(node.args[0]))
        if dim % ndim != 1:
            raise _Opaque(f"{self.op_name(node)} along dim {dim} (only the channel dimension 1 is resized)")
        sizes = [m.shape[1] for m in metas]
        is_chunk = node.target in (torch.chunk, "chunk")
        if not is_chunk:
            split_size = node.args[1] if len(node.args) > 1 else node.kwargs.get("split_size_or_sections")
            if split_size is not None and not isinstance(split_size, fx.Node):
                raise _Opaque(f"{self.op_name(node)}({split_size}) bakes in channel counts")
        return self.equal(self.cut(x, sizes, node), node)

    def equal(self, pieces: list, node: fx.Node) -> list:
        """``chunk`` and a shuffle's grouping view cut by count: every piece has piece 0's count."""
        for p in pieces[1:]:
            self.tie(pieces[0], p, node, indices=False)
        return pieces

    def cut(self, x: _Chan, sizes: list[int], node: fx.Node) -> list:
        """``x`` cut into pieces of ``sizes`` channels (max counts): at segment boundaries, or, where the
        segments are mixed (shuffled) or a piece would cut one, by tying them into one count."""
        if not x.mixed:
            pieces, i = [], 0
            for size in sizes:
                piece, got = [], 0
                while got < size and i < len(x.segs):
                    seg = x.segs[i]
                    got += seg.factor * self.gmax[self.find(seg.group)]
                    piece.append(seg)
                    i += 1
                if got != size:
                    break
                pieces.append(_Chan(piece))
            else:
                return pieces
        # mixed channels (or cuts inside a segment): every segment one count, then equal pieces
        first = x.segs[0]
        for seg in x.segs[1:]:
            if seg.factor != first.factor:
                raise _Opaque(f"{self.op_name(node)} of mixed channels of different sizes")
            self.union(first.group, seg.group, self.where(node))
        unit = first.factor * self.gmax[self.find(first.group)]
        if any(s % unit for s in sizes):
            raise _Opaque(f"{self.op_name(node)} into {sizes} channels cuts a group of {unit}")
        return [_Chan([_Seg(first.group, first.factor, self.new_class()) for _ in range(s // unit)], x.mixed)
                for s in sizes]

    def getitem(self, node: fx.Node):
        src = self.chan.get(node.args[0])
        if isinstance(src, list):
            return src[node.args[1]]
        if isinstance(src, _Chan):
            return self.keep(node)  # an index or slice that keeps dim 1 (else refused there)
        return None

    def flatten(self, node: fx.Node, start: int, end: int) -> _Chan:
        x = self.arg(node)
        shape = self.shape(node.args[0])
        start, end = start % len(shape), end % len(shape)
        if start >= 2 or end < 1:
            return x
        if start != 1 or end != len(shape) - 1:
            raise _Opaque(f"flatten(start_dim={start}, end_dim={end})")
        spatial = math.prod(shape[2:])
        return _Chan([_Seg(s.group, s.factor * spatial, s.cls) for s in x.segs], x.mixed)

    def reshape(self, node: fx.Node) -> _Chan:
        x = self.arg(node)
        si, so = self.shape(node.args[0]), self.shape(node)
        args = node.args[1:] if node.op == "call_method" else node.args[1:]
        if len(args) == 1 and isinstance(args[0], (tuple, list)):
            args = tuple(args[0])

        def baked(i: int) -> bool:  # a channel dimension given as a literal count
            return i < len(args) and isinstance(args[i], int) and args[i] != -1

        if x.pending is not None:
            if x.pending[0] == "t" and len(so) == 4 and so[1] == si[1] * si[2] and not baked(1):
                return self.mix(_Chan(x.segs, x.mixed))
            raise _Opaque(f"{self.op_name(node)} inside a channel shuffle")
        if so == si:
            return x
        if len(si) >= 2 and len(so) == 2 and so[0] == si[0] and so[1] == math.prod(si[1:]):
            if baked(1):
                raise _Opaque(f"{self.op_name(node)}{tuple(args)} bakes in {so[1]} channels")
            return self.flatten(node, 1, -1)
        if len(si) == 4 and len(so) == 5 and so[0] == si[0] and so[1] * so[2] == si[1] and so[3:] == si[2:]:
            if baked(2):
                raise _Opaque(f"{self.op_name(node)}{tuple(args)} bakes in {so[2]} channels per group")
            self.equal(self.cut(x, [so[2]] * so[1], node), node)  # the view needs g equal groups
            return _Chan(x.segs, x.mixed, ("view", so[1]))
        raise _Opaque(f"{self.op_name(node)} from {list(si)} to {list(so)}")

    def transpose(self, node: fx.Node) -> _Chan:
        x = self.arg(node)
        dims = {d % 5 for d in node.args[1:3]} if x.pending else set()
        if x.pending is not None and x.pending[0] == "view" and dims == {1, 2}:
            return _Chan(x.segs, x.mixed, ("t", x.pending[1]))
        raise _Opaque(f"{self.op_name(node)} of the channel dimension")

    def mix(self, x: _Chan) -> _Chan:
        """A channel shuffle: the counts stay, channel indices of all segments are mixed."""
        return _Chan([_Seg(s.group, s.factor, self.new_class()) for s in x.segs], True)


def _ref(walk: _Walk, c: _Chan, names: dict[int, str]) -> Ref:
    terms: dict[str, int] = {}
    const = 0
    for s in c.segs:
        r = walk.find(s.group)
        if r in names:
            terms[names[r]] = terms.get(names[r], 0) + s.factor
        else:
            const += s.factor * walk.gmax[r]
    if not terms:
        return const
    if const == 0 and len(terms) == 1:
        (u, f), = terms.items()
        return u if f == 1 else Scaled(u, f)
    return Sum(tuple(terms.items()), const)


class _Tracer(fx.Tracer):
    def __init__(self, leaves: set[str]):
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        # a Linear subclass (timm's) is a linear: traced into, its forward reads its weight directly
        return qualname in self.leaves or _bn_act(m) or isinstance(m, nn.Linear) \
            or super().is_leaf_module(m, qualname)


def _bn_act(m: nn.Module) -> bool:
    """A BatchNorm2d subclass followed by its own ``drop`` and ``act`` modules (timm's BatchNormAct2d):
    lowered as a ``bn`` layer, its drop and act kept."""
    return isinstance(m, nn.BatchNorm2d) and isinstance(getattr(m, "act", None), nn.Module) \
        and isinstance(getattr(m, "drop", None), nn.Module)


def trace_network(model: nn.Module, example_input: torch.Tensor, name: str = "model",
                  leaf_modules=(), fixed_units=()) -> TracedNetwork:
    """Trace ``model`` on ``example_input`` (its shape; values are not read) and derive its units.

    ``leaf_modules``: module paths fx treats as opaque, their channels fixed (for control flow fx
    cannot trace, or modules this walk cannot resize). ``fixed_units``: unit names whose count is
    fixed; an op that cannot be resized is accepted when every unit it reads is fixed. Raises
    :class:`UserError` naming the module path, the op and the fix.
    """
    leaves = set(leaf_modules)
    known = {n for n, _ in model.named_modules()}
    for leaf in leaves:
        if leaf not in known:
            raise UserError(f"option leaf_modules names {leaf!r}, not a module path of {name}")
    model = model.eval()
    tracer = _Tracer(leaves)
    try:
        graph = tracer.trace(model)
    except Exception as e:  # noqa: BLE001  (fx raises many types; the user needs the one line)
        where = _user_frame(e)
        raise UserError(f"{name}: torch.fx cannot trace it{where}: {type(e).__name__}: {_first_line(e)}; "
                        "fix: name the module with that control flow in option leaf_modules=PATH "
                        "(it is kept whole, its channels fixed)") from None
    gm = fx.GraphModule(tracer.root, graph, "Traced")
    x = torch.empty(tuple(example_input.shape), device="meta", dtype=example_input.dtype)
    meta_gm = gm if _on_meta(gm) else copy.deepcopy(gm).to("meta")
    try:
        ShapeProp(meta_gm).propagate(x)
    except Exception:  # noqa: BLE001  (a leaf module that reads values: run it for real, on zeros)
        meta_gm = copy.deepcopy(gm).to_empty(device="cpu")
        for t in [*meta_gm.parameters(), *meta_gm.buffers()]:
            t.data.zero_()
        try:
            with torch.no_grad():
                ShapeProp(meta_gm).propagate(torch.zeros(x.shape, dtype=x.dtype))
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{name}: shapes cannot be propagated at input {list(x.shape)}: "
                            f"{type(e).__name__}: {_first_line(e)}") from None
    for n_meta, n in zip(meta_gm.graph.nodes, gm.graph.nodes):
        n.meta = n_meta.meta
    walk = _Walk(gm, leaves, name)
    walk.run()
    return _finish(walk, gm, name, set(fixed_units), model)


def _on_meta(gm: nn.Module) -> bool:
    tensors = [*gm.parameters(), *gm.buffers()]
    return bool(tensors) and all(t.is_meta for t in tensors)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""


def _user_frame(e: Exception) -> str:
    import traceback
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if "/torch/" not in f.filename and "/pruningnet/" not in f.filename]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _block(model: nn.Module, path: str) -> str:
    """A layer's block: its outermost ancestor that is a module of its own (not a plain container)."""
    parts = path.split(".")
    for i in range(1, len(parts)):
        prefix = ".".join(parts[:i])
        if type(model.get_submodule(prefix)) not in _CONTAINERS:
            return prefix
    return parts[0]


def _finish(walk: _Walk, gm: fx.GraphModule, name: str, fixed_units: set[str], model: nn.Module) -> TracedNetwork:
    # units: every non-fixed group a conv or linear produces, named by its first producer's path
    names: dict[int, str] = {}
    for rec in walk.recs:
        if rec.kind in ("conv", "linear"):
            r = walk.find(rec.y.segs[0].group)
            if r not in walk.fixed and r not in names:
                names[r] = rec.path
    for path, what, groups in walk.constraints:
        loose = sorted({names[walk.find(g)] for g in groups
                        if walk.find(g) in names and names[walk.find(g)] not in fixed_units})
        if loose:
            leaf = "" if path.startswith("forward (") else f" or leaf_modules={path}"
            raise UserError(f"{name}: {path}: {what} cannot be resized; fix: fixed_units={','.join(loose)}{leaf}")
    # fixed by a constraint: the op only ever sees the max count, so the unit stays a unit with one
    # choice (fixed_units); groups no layer produces (input, outputs) are constants
    layers, graph = [], gm.graph
    for rec in walk.recs:
        cls = walk.cfind(rec.y.segs[0].cls)
        size = dict(in_size=rec.in_size, out_size=rec.out_size, block=_block(model, rec.path))
        xin, yout = _ref(walk, rec.x, names), _ref(walk, rec.y, names)
        if rec.kind == "bn":
            layers.append(Layer(rec.path, rec.path, "bn", xin, xin, timed=False, bn_eps=rec.eps, **size))
        else:
            layers.append(Layer(rec.path, rec.path, rec.kind, xin, yout, rec.kernel, rec.stride, rec.padding,
                                act=None, bias=rec.bias, bn=rec.bn, out_class=cls, groups=rec.groups,
                                bn_eps=rec.eps, **size))
    for node in list(walk.fused):
        node.replace_all_uses_with(node.args[0])
        graph.erase_node(node)
    graph.lint()
    weighted = {x.path for x in layers}
    keep = {}
    for node in graph.nodes:
        if node.op == "call_module" and (node.target not in weighted or _bn_act(gm.get_submodule(node.target))):
            keep[str(node.target)] = gm.get_submodule(node.target)
    by_name = {v: k for k, v in names.items()}
    unit_max = {u: walk.gmax[by_name[u]] for x in layers for ref in (x.in_ch, x.out_ch) for u in ref_units(ref)}
    multiples = {u: walk.multiple[by_name[u]] for u in unit_max if walk.multiple[by_name[u]] > 1}
    out_node = next(n for n in graph.nodes if n.op == "output")
    outs = [walk.chan.get(a) for a in out_node.all_input_nodes]
    num_outputs = sum(walk.width(c) for c in outs if isinstance(c, _Chan))
    node = Traced(name, tuple(layers), graph, keep, multiples)
    return TracedNetwork(node, unit_max, num_outputs)
