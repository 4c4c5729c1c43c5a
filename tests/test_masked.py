"""Masked execution (issue 29): the PruningNet at max width with channel masks computes the sliced
network on the kept channels, forward, gradients and BN statistics alike; candidates score the same."""
import numpy as np
import pytest
import torch

from metaprune import get_space
from pruningnet.bn import recalibrate_bn
from pruningnet.hypernet import PruningNet
from pruningnet.masked import MaskedEvaluator, MaskedPruningNet, capture, resolve_execution, supports_masked

SPACES = [
    ("mobilenet_v1", {"width_mult": 0.25}),
    ("mobilenet_v2", {"width_mult": 0.35, "small_input": True}),
    ("resnet50", {"width_mult": 0.125, "small_input": True}),
    ("mobilenet_v3_small", {"width_mult": 0.5, "small_input": True}),
]


def _nets(name, opts, generator_input="layer", dtype=torch.float64):
    sp = get_space(name, input_size=32, in_channels=3, num_classes=10, **opts)
    torch.manual_seed(0)
    net = PruningNet(sp, hidden=8, generator_input=generator_input).to(dtype)
    masked = MaskedPruningNet(net)
    for m in list(net.modules()) + list(masked.modules()):
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0  # dropout draws differ with the tensor's width
    return sp, net, masked


def _vectors(sp, n, seed=0):
    rng = np.random.default_rng(seed)
    return [{u.name: int(rng.choice(u.choices)) for u in sp.units} for _ in range(n)]


@pytest.mark.parametrize("name, opts, generator_input", [(*s, g) for s, g in zip(SPACES, ("layer", "block") * 2)])
def test_masked_forward_and_gradients_equal_the_sliced_ones(name, opts, generator_input):
    """In float64 the two agree to rounding (1e-10): same logits, same gradient of every generator
    parameter (zero outside each vector's crop in both), masked channels exactly zero."""
    sp, net, masked = _nets(name, opts, generator_input)
    x = torch.randn(6, 3, 32, 32, dtype=torch.float64)
    params = list(net.parameters())
    for ch in _vectors(sp, 1) + [sp.min_channels()]:
        a = net(x, ch)
        ga = torch.autograd.grad(a.square().sum(), params, allow_unused=True)
        b = masked(x, ch)
        gb = torch.autograd.grad(b.square().sum(), params, allow_unused=True)
        assert a.shape == b.shape == (6, 10)
        assert torch.allclose(a, b, rtol=0, atol=1e-10 * float(a.abs().max()))
        scale = max(float(g.abs().max()) for g in ga if g is not None)
        for p, q in zip(ga, gb):
            assert (p is None) == (q is None)
            if p is not None:
                assert torch.allclose(p, q, rtol=0, atol=1e-10 * scale)
        assert any(g is not None and bool((g == 0).any()) for g in gb)  # crops: untouched rows get zeros


def test_masked_forward_in_float32_is_close_and_keeps_constant_shapes():
    """float32 (what training runs): within 1e-5 of the largest logit; every conv sees the same input
    shapes whatever the vector (the point of masked execution)."""
    sp, net, masked = _nets("mobilenet_v2", {"width_mult": 0.35, "small_input": True}, dtype=torch.float32)
    x = torch.randn(8, 3, 32, 32)
    shapes = []
    hooks = [m.register_forward_hook(lambda mod, i, o: shapes[-1].append(tuple(o.shape)))
             for m in masked.body.modules() if type(m).__name__ == "_MaskedConvBN"]
    with torch.no_grad():
        for ch in _vectors(sp, 3):
            shapes.append([])
            a, b = net(x, ch), masked(x, ch)
            assert torch.allclose(a, b, rtol=0, atol=1e-5 * float(a.abs().max()))
    for h in hooks:
        h.remove()
    assert shapes[0] == shapes[1] == shapes[2] and len(shapes[0]) > 10


def test_masked_bn_statistics_are_the_kept_channels_own():
    """BN re-estimation on constant shapes: kept channels' running statistics equal those of the
    sliced network's BatchNorm2d after recalibrate_bn; masked channels keep their reset values 0 and 1;
    a wider vector evaluated before leaves nothing behind."""
    sp, net, masked = _nets("mobilenet_v2", {"width_mult": 0.35, "small_input": True})
    batches = [torch.randn(6, 3, 32, 32, dtype=torch.float64) for _ in range(3)]
    ev = MaskedEvaluator(masked)
    ev.prepare(sp.max_channels())
    ev.calibrate(batches)  # pollutes every channel's statistics, if anything could
    ch = _vectors(sp, 1, seed=3)[0]
    ev.prepare(ch)
    ev.calibrate(batches)
    torch.set_default_dtype(torch.float64)  # the static network's own parameters in float64 too
    try:
        model = recalibrate_bn(net.generate(ch), batches)
    finally:
        torch.set_default_dtype(torch.float32)
    bns = dict(model.named_modules())
    layers = [x for x in sp.weighted_layers() if x.bn]
    for layer in layers:
        rm, rv = ev.stats[layer.path]
        bn = bns[f"{layer.path}.bn"]
        c = bn.num_features
        assert torch.allclose(rm[:c], bn.running_mean, atol=1e-10)
        assert torch.allclose(rv[:c], bn.running_var, rtol=1e-9, atol=1e-10), (rv[:c] - bn.running_var).abs().max()
        assert bool((rm[c:] == 0).all()) and bool((rv[c:] == 1).all())
    assert any(ev.stats[x.path][0].numel() > bns[f"{x.path}.bn"].num_features for x in layers)
    x = torch.randn(5, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        want = model(x)
    assert torch.allclose(ev(x), want, rtol=0, atol=1e-9 * float(want.abs().max()))


def test_masked_and_sliced_candidates_score_the_same(smoke_run):
    """The search's proxy (BN re-estimation, then top-1 on the search split) scores a vector the same
    to 1e-4 in both modes, for the smoke run's trained PruningNet."""
    from metaprune.evaluation import bn_batches, evaluate
    from metaprune.store.runs import open_run

    run = open_run(smoke_run)
    net, data = run.load_pruningnet(), run.load_data()
    batches = bn_batches(data, 2, 64, 0, "cpu")
    for ch in _vectors(run.space, 1, seed=5) + [run.space.max_channels()]:
        a = evaluate(net, ch, data, max_images=128, batch_size=64, batches=batches, execution="sliced")
        b = evaluate(net, ch, data, max_images=128, batch_size=64, batches=batches, execution="masked")
        assert abs(a["top1"] - b["top1"]) <= 1e-4 and abs(a["top5"] - b["top5"]) <= 1e-4
        assert a["top1"] > 0.15  # a trained net: the comparison is between real scores


def test_execution_setting_resolves_per_device_and_space():
    mb = get_space("mobilenet_v2", input_size=32, small_input=True, num_classes=10, width_mult=0.35)
    sh = get_space("shufflenet_v2", input_size=32, small_input=True, num_classes=10, width_mult=0.5)
    assert resolve_execution("auto", "cpu", mb) == "sliced"
    assert resolve_execution("auto", "cuda", mb) == "masked"
    assert resolve_execution("auto", "cuda", sh) == "sliced" and not supports_masked(sh)
    assert resolve_execution("masked", "cpu", mb) == "masked"
    with pytest.raises(ValueError, match="shufflenet_v2.*accepted: sliced or auto"):
        resolve_execution("masked", "cuda", sh)
    with pytest.raises(ValueError, match="'fast'; accepted: sliced, masked, auto"):
        resolve_execution("fast", "cpu", mb)
    net = PruningNet(mb, hidden=4)
    m = MaskedPruningNet(net)
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        capture(m, x, m.pack(mb.max_channels()), "graphs")
    assert capture(m, x, m.pack(mb.max_channels()), "off") == m.forward_packed


TINY = ["--set", "data.name=synthetic", "--set", "space.options.width_mult=0.25",
        "--set", "space.options.ratios=[0.5,0.75,1.0]", "--set", "model.hidden=4",
        "--set", "train.batch_size=32", "--set", "train.log_every_steps=1", "--set", "train.max_steps=2"]


def _train(cli, run_dir, *extra):
    import os

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return cli("train-pruningnet", "-c", os.path.join(repo, "configs", "smoke.yaml"), "--run-dir", str(run_dir),
               "--quiet", *TINY, *extra)


def test_masked_meta_training_runs_the_masked_forward_and_saves_the_pruningnet(tmp_path, cli, monkeypatch):
    """``train.execution=masked`` trains through MaskedPruningNet (on the CPU auto resolves to sliced:
    test_execution_setting_resolves_per_device_and_space) and writes the plain PruningNet's weights."""
    calls = []
    fwd = MaskedPruningNet.forward_packed

    def recording(self, x, packed):
        calls.append(tuple(x.shape))
        return fwd(self, x, packed)

    monkeypatch.setattr(MaskedPruningNet, "forward_packed", recording)
    code, _, err = _train(cli, tmp_path / "masked", "--set", "train.execution=masked")
    assert code == 0, err
    assert len(calls) == 2
    from metaprune.store.runs import open_run

    net = open_run(tmp_path / "masked").load_pruningnet()
    assert isinstance(net, PruningNet)


@pytest.mark.parametrize("args, needle", [
    (["--set", "train.execution=fast"], "train.execution='fast' is not accepted; accepted: auto, sliced, masked"),
    (["--set", "train.capture=graphs"], "train.capture='graphs' needs train.execution masked on one CUDA device"),
    (["--set", "train.capture=compile", "--set", "train.execution=masked"], "accepted here: off or auto"),
    (["--set", "space.name=shufflenet_v2", "--set", "space.options.width_mult=0.5", "--set", "train.execution=masked"],
     "train.execution 'masked' cannot run space 'shufflenet_v2'"),
])
def test_bad_execution_settings_fail_in_one_line_before_a_run_is_written(tmp_path, cli, args, needle):
    code, _, err = _train(cli, tmp_path / "bad", *args)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "bad" / "config.yaml").exists()


def test_latency_timing_replays_cuda_graphs_on_cuda_only_and_old_tables_keep_their_timing(tmp_path):
    """CUDA entries are timed as graph replays (the default), CPU timing is unchanged; a table written
    before issue 29 (no ``cuda_graphs``) reads as eager and still merges with a CPU table saved now."""
    import json

    from metaprune.latency import LatencyTable, TimingConfig, current_key, load_table
    from metaprune.latency.timing import uses_graphs

    assert uses_graphs(TimingConfig(), "cuda") and not uses_graphs(TimingConfig(cuda_graphs=False), "cuda")
    assert not uses_graphs(TimingConfig(), "cpu")
    key = current_key("cpu", 1, 1)
    path = tmp_path / "table.json"
    LatencyTable(key, TimingConfig(), entries={"a": 1.0}).save(path)
    doc = json.loads(path.read_text())
    assert doc["timing"]["cuda_graphs"] is True
    del doc["timing"]["cuda_graphs"]
    path.write_text(json.dumps(doc))
    old = load_table(path)
    assert old.timing.cuda_graphs is False and old.model_timing().cuda_graphs is False
    LatencyTable(key, TimingConfig(), entries={"b": 2.0}).save(path)  # CPU: the same timing, merged
    assert load_table(path).entries == {"a": 1.0, "b": 2.0}
