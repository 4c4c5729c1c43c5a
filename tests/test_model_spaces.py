"""``model:MODULE:CALLABLE`` spaces: torchvision models and a user's own CNN traced with torch.fx."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import metaprune
from pruningnet import build_model, cost_model, get_space, make_spec
from pruningnet.hypernet import PruningNet
from pruningnet.spaces.ir import ref_terms

TV = "model:torchvision.models:"


# ---- a user's own CNN -------------------------------------------------------------------------

class SE(nn.Module):
    def __init__(self, ch: int, sq: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(ch, sq, 1), nn.Conv2d(sq, ch, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


def cbr(i: int, o: int, k: int = 3, s: int = 1, g: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(o), nn.ReLU())


class TinyNet(nn.Module):
    """Stem; a residual block with a depthwise conv and an SE; two branches concatenated; a grouped
    conv; a channel shuffle; a pre-activation BN on the concatenation; a linear classifier."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = cbr(3, 16, s=2)
        self.expand = cbr(16, 32, 1)
        self.dw = cbr(32, 32, 3, g=32)
        self.se = SE(32, 8)
        self.project = nn.Sequential(nn.Conv2d(32, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.left = cbr(16, 24, 3, 2)
        self.right = cbr(16, 24, 1, 2)
        self.norm = nn.BatchNorm2d(48)
        self.grouped = cbr(48, 48, 3, g=4)
        self.head = nn.Linear(48, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(self.se(self.dw(self.expand(x))))
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, -1, h, w)  # channel shuffle
        x = self.grouped(F.relu(self.norm(x)))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class BakedView(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = cbr(3, 8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.conv(x), 4).view(-1, 128))


class DataGate(nn.Module):
    def forward(self, x):
        if x.mean() > 0:  # data-dependent: fx cannot trace it
            return -x
        return x


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = cbr(3, 8)
        self.gate = DataGate()
        self.conv2 = cbr(8, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.conv2(self.gate(self.conv(x))).mean((2, 3)))


class GroupedOnCat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = cbr(3, 8), cbr(3, 8)
        self.g = cbr(16, 16, g=4)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.g(torch.cat([self.a(x), self.b(x)], 1)).mean((2, 3)))


def _vectors(space, n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{u.name: int(rng.choice(u.choices)) for u in space.units} for _ in range(n)]


def test_own_cnn_units_follow_channel_coupling():
    sp = metaprune.space_from_model(TinyNet(), torch.randn(1, 3, 32, 32), name="model:test:TinyNet",
                                    ratios=[0.25, 0.5, 0.75, 1.0])
    layers = {x.path: x for x in sp.layers}
    # the residual add ties the stem to the projection; the depthwise conv keeps expand's channels;
    # the SE gate ties fc2 to them too
    assert layers["project.0"].out_ch == layers["stem.0"].out_ch == "stem.0"
    assert layers["dw.0"].in_ch == layers["dw.0"].out_ch == "expand.0" and layers["dw.0"].kind == "dwconv"
    assert layers["se.fc2"].out_ch == "expand.0" and layers["se.fc1"].out_ch == "se.fc1"
    # the shuffle's grouping view needs two equal halves: left and right become one count; the BN on
    # the concatenation reads both
    assert layers["norm"].kind == "bn" and layers["norm"].in_ch == layers["grouped.0"].in_ch
    assert ref_terms(layers["grouped.0"].in_ch) == ((("left.0", 2),), 0)
    # a grouped conv keeps every count a multiple of its 4 groups; the classifier's outputs are fixed
    assert layers["grouped.0"].groups == 4 and all(c % 4 == 0 for c in sp.unit("grouped.0").choices)
    assert all(c % 2 == 0 for c in sp.unit("left.0").choices)  # 2 x left.0 channels in 4 groups
    assert layers["head"].out_ch == 10 and layers["stem.0"].in_ch == 3 and layers["right.0"].out_ch == "left.0"
    assert set(sp.unit_names) == {"stem.0", "expand.0", "se.fc1", "left.0", "grouped.0"}


@pytest.mark.parametrize("generator_input", ["layer", "block"])
def test_own_cnn_pruningnet_equals_static_network_and_cost_equals_flop_counter(generator_input):
    sp = metaprune.space_from_model(TinyNet(), torch.randn(1, 3, 32, 32), name="model:test:TinyNet",
                                    ratios=[0.25, 0.5, 0.75, 1.0])
    # a generator's block is the layer's outermost module of its own (SE's convs: "se")
    assert {x.path: x.block for x in sp.weighted_layers()}["se.fc2"] == "se"
    torch.manual_seed(0)
    net = PruningNet(sp, hidden=8, generator_input=generator_input).eval()
    cm = cost_model(sp)
    x = torch.randn(8, 3, 32, 32)
    for ch in [sp.max_channels(), *_vectors(sp, 4)]:
        model = net.generate(ch).train()  # batch statistics, as the PruningNet's BN
        with torch.no_grad():
            a, b = net(x, ch), model(x)
        assert a.shape == (8, 10) and torch.allclose(a, b, atol=1e-4, rtol=1e-4)
        with FlopCounterMode(display=False) as fc:
            model.eval()(x[:1])
        assert fc.get_total_flops() == 2 * int(cm.macs(ch)[0])
        assert sum(p.numel() for p in model.parameters()) == int(cm.params(ch)[0])


def test_full_width_static_network_is_the_users_model():
    """At full width the built network has the model's parameter names' shapes and computes the
    same function once loaded with the model's weights."""
    torch.manual_seed(0)
    user = TinyNet().eval()
    sp = metaprune.space_from_model(user, torch.randn(1, 3, 32, 32), name="model:test:TinyNet")
    model = build_model(make_spec(sp, sp.max_channels())).eval()
    state = {}
    for k, v in user.state_dict().items():  # conv + BN fused into one ConvBNAct: conv.*, bn.*
        mod, leaf = k.rsplit(".", 1)
        fused = {x.path for x in sp.layers if x.bn}
        if mod in fused:
            k = f"{mod}.conv.{leaf}"
        elif mod.endswith(".1") and mod[:-2] + ".0" in fused:
            k = f"{mod[:-2]}.0.bn.{leaf}"
        state[k] = v
    model.load_state_dict(state)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), user(x), atol=1e-5)


@pytest.mark.parametrize("model, needle", [
    (BakedView(), "forward (node view): view(-1, 128) bakes in 128 channels cannot be resized; fix: fixed_units=conv.0"),
    (Branchy(), "torch.fx cannot trace it"),
    (GroupedOnCat(), "g.0: grouped Conv2d (groups=4) on a concatenation"),
])
def test_refusals_name_the_module_the_op_and_the_fix(model, needle):
    with pytest.raises(metaprune.UserError) as e:
        metaprune.space_from_model(model, torch.randn(1, 3, 16, 16), name=f"model:test:{type(model).__name__}")
    msg = str(e.value)
    assert needle in msg and "\n" not in msg
    assert "fixed_units=" in msg or "leaf_modules=" in msg


def test_refused_op_is_accepted_once_its_units_are_fixed():
    sp = metaprune.space_from_model(BakedView(), torch.randn(1, 3, 16, 16), name="model:test:BakedView",
                                    fixed_units=["conv.0"])
    assert sp.unit("conv.0").choices == (8,)
    # a leaf module is kept whole: its input channels are fixed, the rest stays searchable
    sp = metaprune.space_from_model(Branchy(), torch.randn(1, 3, 16, 16), name="model:test:Branchy",
                                    leaf_modules=["gate"])
    assert sp.unit_names == ("conv2.0",)
    layers = {x.path: x for x in sp.layers}
    assert layers["conv.0"].out_ch == 8 and layers["conv2.0"].in_ch == 8
    model = build_model(make_spec(sp, {"conv2.0": 4})).eval()
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


# ---- parity with the hand-written spaces ------------------------------------------------------

PAIRS = [  # (hand-written space, its options, torchvision callable)
    ("mobilenet_v2", dict(width_mult=1.0), "mobilenet_v2"),
    ("resnet50", {}, "resnet50"),
    ("mobilenet_v3_small", {}, "mobilenet_v3_small"),
    ("shufflenet_v2", {}, "shufflenet_v2_x1_0"),
]


def _unit_map(hand, traced) -> dict[str, str]:
    """Each traced unit -> the hand-written unit of the same layers (weighted layers aligned in run order)."""
    a, b = hand.weighted_layers(), traced.weighted_layers()
    assert len(a) == len(b)
    out: dict[str, str] = {}
    for x, y in zip(a, b):
        assert (x.kind, x.kernel, x.stride, x.in_size, x.out_size) == (y.kind, y.kernel, y.stride, y.in_size, y.out_size)
        for rx, ry in ((x.in_ch, y.in_ch), (x.out_ch, y.out_ch)):
            (tx, cx), (ty, cy) = ref_terms(rx), ref_terms(ry)
            assert cx == cy and [f for _, f in tx] == [f for _, f in ty]
            for (ux, _), (uy, _) in zip(tx, ty):
                assert out.setdefault(uy, ux) == ux, f"traced unit {uy} maps to {out[uy]} and {ux}"
    return out


@pytest.mark.parametrize("hand_name, opts, tv", PAIRS)
def test_traced_torchvision_costs_equal_the_hand_written_space(hand_name, opts, tv):
    common = dict(input_size=64, num_classes=10)
    hand = get_space(hand_name, **common, **opts)
    traced = get_space(TV + tv, **common)
    mapping = _unit_map(hand, traced)
    assert set(mapping) == set(traced.unit_names) and set(mapping.values()) == set(hand.unit_names)
    if hand_name == "resnet50":
        # MetaPruning ties a bottleneck's conv1 and conv2 into one mid width; their channels are not
        # index-coupled, so the trace keeps them two units (finer: 16 more units)
        assert len(traced.units) == len(hand.units) + 16
    else:
        assert len(traced.units) == len(hand.units)
    cm_h, cm_t = cost_model(hand), cost_model(traced)
    vecs = [hand.max_channels(), *_vectors(hand, 60)]
    xh = np.array([[v[u] for u in hand.unit_names] for v in vecs])
    xt = np.array([[v[mapping[u]] for u in traced.unit_names] for v in vecs])
    assert np.array_equal(cm_h.macs(xh), cm_t.macs(xt))
    assert np.array_equal(cm_h.params(xh), cm_t.params(xt))


def test_traced_resnet18_cost_equals_flop_counter_on_its_built_network():
    sp = get_space(TV + "resnet18", input_size=32, num_classes=10)
    cm = cost_model(sp)
    for ch in _vectors(sp, 2, seed=3):
        model = build_model(make_spec(sp, ch)).eval()
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model(torch.randn(1, 3, 32, 32))
        assert fc.get_total_flops() == 2 * int(cm.macs(ch)[0])
        assert sum(p.numel() for p in model.parameters()) == int(cm.params(ch)[0])


# ---- every place that takes a space name ------------------------------------------------------

def test_cli_space_show_and_cost_take_a_model_space(cli, tmp_path):
    code, out, err = cli("space", "show", TV + "resnet18", "-o", "num_classes=10", "-o", "input_size=32", "--json")
    assert code == 0, err
    import json
    info = json.loads(out)
    assert info["options"]["num_classes"] == 10 and len(info["units"]) == 12
    sp = get_space(TV + "resnet18", num_classes=10, input_size=32)
    from metaprune.store.specfile import save_spec
    f = save_spec(make_spec(sp, sp.uniform_channels(0.5)), tmp_path / "half.json")
    code, out, err = cli("cost", f, "--json")
    assert code == 0, err
    assert json.loads(out)["macs"] == int(cost_model(sp).macs(sp.uniform_channels(0.5))[0])


@pytest.mark.parametrize("name, opts, needle", [
    (TV + "convnext_tiny", ["-o", "input_size=32"], "features.0.1.weight: a parameter used directly"),
    ("model:no_such_module_xyz:f", [], "module 'no_such_module_xyz' cannot be imported"),
    (TV + "resnet18", ["-o", "num_classes=10", "-o", "bogus=1"], "unexpected keyword argument 'bogus'"),
    ("model:test_model_spaces:BakedView", ["-o", "input_size=16"], "bakes in 128 channels"),
])
def test_cli_refusals_exit_2_in_one_line(cli, name, opts, needle):
    code, out, err = cli("space", "show", name, *opts)
    assert code == 2 and needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# ---- end to end -------------------------------------------------------------------------------

E2E_CONFIG = """
seed: 0
space:
  name: model:torchvision.models:resnet18
  options: {ratios: "0.5:1.0:0.25"}
data: {name: synthetic}
model: {hidden: 2}
train: {epochs: 1, max_steps: 2, batch_size: 16, lr: 0.05, checkpoint_every_steps: 10, log_every_steps: 1}
eval: {bn_batches: 1, batch_size: 50, max_images: 50}
"""


def test_resnet18_goes_through_meta_training_search_export_and_scratch_training(cli, tmp_path, ray_cluster):
    """train-pruningnet + search + export + train on model:torchvision.models:resnet18 (10 classes,
    32x32, the embedded synthetic data; classes and input size come from the data)."""
    import json

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(E2E_CONFIG)
    run = tmp_path / "run"
    code, _, err = cli("train-pruningnet", "-c", cfg, "--run-dir", run, "--quiet")
    assert code == 0, err
    code, _, err = cli("search", run, "--strategy", "pareto", "--set", "generations=1", "--set", "population=4",
                       "--set", "parents=2", "--set", "mutations=2", "--set", "crossovers=2",
                       "--set", "eval.max_images=50", "--set", "eval.bn_batches=1", "--quiet")
    assert code == 0, err
    sp = get_space(TV + "resnet18", num_classes=10, input_size=32, in_channels=3, ratios="0.5:1.0:0.25")
    budget = int(cost_model(sp).macs(sp.uniform_channels(0.8))[0])
    best = tmp_path / "best.json"
    code, _, err = cli("export", run, "--max-macs", budget, "-o", best)
    assert code == 0, err
    spec = json.loads(best.read_text())
    assert spec["space"] == TV + "resnet18" and spec["options"]["num_classes"] == 10
    assert int(cost_model(sp).macs(spec["channels"])[0]) <= budget
    code, _, err = cli("train", run, "--spec", best, "--recipe", "smoke", "--epochs", "1",
                       "--set", "recipe.max_train_images=64", "--set", "recipe.max_test_images=50", "--quiet")
    assert code == 0, err
    rows = json.loads((run / "train" / "results.json").read_text())["results"]
    assert {r["kind"] for r in rows} == {"searched", "baseline"}
    assert all(0 <= r["test_top1"] <= 1 for r in rows)


OWN_CONFIG = """
seed: 0
space:
  name: model:test_model_spaces:TinyNet
  options: {ratios: "0.5:1.0:0.25"}
data: {name: synthetic}
model: {hidden: 4}
train: {epochs: 1, max_steps: 3, batch_size: 16, lr: 0.05, checkpoint_every_steps: 10, log_every_steps: 1}
eval: {bn_batches: 1, batch_size: 50, max_images: 50}
"""


def test_users_own_cnn_goes_through_meta_training_search_and_export(cli, tmp_path):
    """The user's TinyNet (residual add, depthwise, SE, concat, shuffle, grouped conv), named as
    ``model:MODULE:CALLABLE`` in a config: meta-trained, searched under a MACs budget and exported
    with generated weights as TorchScript and ONNX files that load without metaprune."""
    import json

    import onnx
    import onnxruntime

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(OWN_CONFIG)
    run = tmp_path / "run"
    code, _, err = cli("train-pruningnet", "-c", cfg, "--run-dir", run, "--quiet")
    assert code == 0, err
    sp = get_space("model:test_model_spaces:TinyNet", num_classes=10, input_size=32, in_channels=3,
                   ratios="0.5:1.0:0.25")
    budget = int(cost_model(sp).macs(sp.uniform_channels(0.75))[0])
    code, _, err = cli("search", run, "--strategy", "constrained", "--max-macs", budget, "--set", "generations=1",
                       "--set", "population=4", "--set", "parents=2", "--set", "mutations=2",
                       "--set", "crossovers=2", "--quiet")
    assert code == 0, err
    ts, ox = tmp_path / "net.pt", tmp_path / "net.onnx"
    code, _, err = cli("export", run, "--max-macs", budget, "--format", "torchscript", "--with-weights", "-o", ts)
    assert code == 0, err
    spec = json.loads((tmp_path / "net.pt.json").read_text())
    assert spec["space"] == "model:test_model_spaces:TinyNet"
    assert int(cost_model(sp).macs(spec["channels"])[0]) <= budget < cost_model(sp).macs(sp.max_channels())[0]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = torch.jit.load(str(ts)).eval()(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    code, _, err = cli("export", run, "--max-macs", budget, "--format", "onnx", "--with-weights", "-o", ox)
    assert code == 0, err
    onnx.checker.check_model(onnx.load(str(ox)))
    sess = onnxruntime.InferenceSession(str(ox), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, out.numpy(), rtol=1e-4, atol=1e-4 * float(out.abs().max()))


def test_service_answers_torchvision_model_spaces_and_refuses_other_modules(tmp_path):
    """A model space imports MODULE and calls CALLABLE with the client's options: the service takes
    only allowlisted modules (and only space options, so no weights= download)."""
    from fastapi.testclient import TestClient

    from metaprune.service.api import create_app
    from metaprune.service.validation import ApiError, check_overrides

    token = "t" * 32
    auth = {"Authorization": f"Bearer {token}"}
    (tmp_path / "runs").mkdir()
    app = create_app(tmp_path / "runs", token=token, extra_hosts=("testserver",), start_jobs=False)
    with TestClient(app) as client:
        listed = client.get("/api/spaces", headers=auth).json()
        assert listed["models"]["modules"] == ["torchvision.models"]
        r = client.get(f"/api/spaces/{TV}resnet18?input_size=32&num_classes=10", headers=auth)
        assert r.status_code == 200, r.text
        assert len(r.json()["units"]) == 12
        r = client.get("/api/spaces/model:subprocess:getoutput?input_size=32", headers=auth)
        assert r.status_code == 404 and "torchvision.models" in r.json()["error"]
        r = client.get(f"/api/spaces/{TV}resnet18?weights=DEFAULT", headers=auth)
        assert r.status_code == 422 and "weights" in r.text
    with pytest.raises(ApiError):
        check_overrides({"space.name": "model:os:system"})
    assert check_overrides({"space.name": TV + "resnet18"})
