import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from metaprune import build_model, count_cost, get_space, make_spec
from pruningnet.cost import cost_model

# (space, options, input sizes, vectors): 60+ per backbone, fewer for the extra variants (300 in all)
SPACES = [
    ("mobilenet_v1", {"num_classes": 10}, (32, 64), 60),
    ("mobilenet_v2", {"num_classes": 10}, (32, 56), 60),
    ("mobilenet_v2", {"num_classes": 10, "small_input": True, "width_mult": 1.0, "round_to": 8}, (32,), 20),
    ("resnet50", {"num_classes": 10, "ratios": "0.1:0.4:0.03"}, (32, 48), 60),
    ("resnet50", {"num_classes": 100, "small_input": True, "ratios": "0.1:0.3:0.05"}, (32,), 20),
    ("mobilenet_v3_large", {"num_classes": 10}, (32, 64), 24),
    ("mobilenet_v3_small", {"num_classes": 10, "small_input": True, "round_to": 1}, (32,), 20),
    ("shufflenet_v2", {"num_classes": 10}, (32, 64), 24),
    ("shufflenet_v2", {"num_classes": 10, "small_input": True, "width_mult": 0.5}, (32,), 12),
]


def random_vectors(space, n, seed):
    rng = np.random.default_rng(seed)
    return [{u.name: int(rng.choice(u.choices)) for u in space.units} for _ in range(n)]


@pytest.mark.parametrize("name, opts, sizes, count", SPACES)
def test_cost_is_exact_against_flop_counter_and_numel(name, opts, sizes, count):
    """Random vectors: analytic MACs (scalar and batch) == FlopCounterMode / 2, params == numel."""
    n_total = 0
    for size in sizes:
        sp = get_space(name, input_size=size, **opts)
        vectors = random_vectors(sp, count // len(sizes), seed=size)
        cm = cost_model(sp)
        batch = cm.macs(np.array([[v[u] for u in sp.unit_names] for v in vectors]))
        for v, macs_batch in zip(vectors, batch):
            spec = make_spec(sp, v)
            model = build_model(spec).eval()
            with FlopCounterMode(display=False) as fc, torch.no_grad():
                model(torch.zeros(1, sp.options["in_channels"], size, size))
            c = count_cost(spec)
            assert c["macs"] == fc.get_total_flops() // 2 == macs_batch
            assert c["params"] == sum(p.numel() for p in model.parameters())
            n_total += 1
    assert n_total >= count


def test_torchvision_parity():
    import torchvision

    mv2 = make_spec(sp := get_space("mobilenet_v2", width_mult=1.0, round_to=8), sp.max_channels())
    assert count_cost(mv2) == {"macs": 300_774_272, "params": 3_504_872}
    assert sum(p.numel() for p in torchvision.models.mobilenet_v2().parameters()) == 3_504_872
    r50 = make_spec(sp := get_space("resnet50"), sp.max_channels())
    assert count_cost(r50) == {"macs": 4_089_184_256, "params": 25_557_032}
    v1 = make_spec(sp := get_space("mobilenet_v1"), sp.max_channels())
    assert round(count_cost(v1)["macs"] / 1e6, 1) == 568.7
    mv2_14 = make_spec(sp := get_space("mobilenet_v2", width_mult=1.4, round_to=8), sp.max_channels())
    assert round(count_cost(mv2_14)["macs"] / 1e6, 1) == 582.2


@pytest.mark.parametrize("name, opts, tv_name, macs, params", [
    ("mobilenet_v3_large", {}, "mobilenet_v3_large", 216_589_760, 5_483_032),
    ("mobilenet_v3_small", {}, "mobilenet_v3_small", 56_510_400, 2_542_856),
    ("shufflenet_v2", {}, "shufflenet_v2_x1_0", 144_907_992, 2_278_604),
    ("shufflenet_v2", {"width_mult": 0.5}, "shufflenet_v2_x0_5", 40_476_448, 1_366_792),
])
def test_compact_backbones_match_torchvision(name, opts, tv_name, macs, params):
    """Full width at 224: our analytic MACs and params equal torchvision's model counted by
    FlopCounterMode / 2 and sum(numel)."""
    import torchvision

    sp = get_space(name, **opts)
    assert count_cost(make_spec(sp, sp.max_channels())) == {"macs": macs, "params": params}
    tv = getattr(torchvision.models, tv_name)().eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        tv(torch.zeros(1, 3, 224, 224))
    assert fc.get_total_flops() // 2 == macs
    assert sum(p.numel() for p in tv.parameters()) == params


def test_torchvision_macs_match_flop_counter():
    import torchvision

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        torchvision.models.resnet50().eval()(torch.zeros(1, 3, 224, 224))
    assert fc.get_total_flops() // 2 == 4_089_184_256


def test_uniform_baseline_is_largest_under_budget():
    sp = get_space("mobilenet_v2", input_size=32, small_input=True, num_classes=10)
    cm = cost_model(sp)
    full = int(cm.macs(sp.max_channels())[0])
    for frac in (0.3, 0.6):
        budget = int(full * frac)
        ratio, ch, macs = cm.uniform_for_budget(budget)
        assert macs <= budget
        # a slightly wider uniform network is over budget
        assert cm.macs(sp.uniform_channels(ratio + 1e-3))[0] > budget or ratio == 1.0
        assert macs == cm.macs(ch)[0]
    assert cm.uniform_for_budget(full * 2)[0] == 1.0


def test_uniform_baseline_below_smallest_is_a_user_error():
    from metaprune import UserError

    sp = get_space("mobilenet_v1", input_size=32, num_classes=10)
    with pytest.raises(UserError, match="below the narrowest"):
        cost_model(sp).uniform_for_budget(10)


@pytest.mark.parametrize("ratios", ["0.5:1.0:0.125", "0.1:1.0:0.03"])
def test_grid_uniform_baseline_is_on_grid_near_uniform_and_under_budget(ratios):
    """The proxy scores uniform baselines on the meta-training grid (issue 11): every unit is one of
    its choices, the MACs stay under the budget and each unit stays next to the uniform width."""
    sp = get_space("mobilenet_v2", input_size=32, small_input=True, num_classes=10, width_mult=0.5,
                   ratios=ratios)
    cm = cost_model(sp)
    full = int(cm.macs(sp.max_channels())[0])
    off_grid = 0
    for frac in (0.3, 0.45, 0.6, 0.8, 1.0):
        budget = int(full * frac)
        ratio, cont, cont_macs = cm.uniform_for_budget(budget)
        r, ch, macs = cm.grid_uniform_for_budget(budget)
        assert r == ratio and cm.on_grid(ch) and macs == cm.macs(ch)[0] <= budget
        off_grid += not cm.on_grid(cont)
        for u in sp.units:
            i = u.choices.index(ch[u.name])
            below = max([c for c in u.choices if c <= cont[u.name]], default=u.choices[0])
            above = min([c for c in u.choices if c >= cont[u.name]], default=u.choices[-1])
            # at most one choice under the choice just below the uniform width, never over the one above
            assert u.choices.index(below) - 1 <= i <= u.choices.index(above), (u.name, ch[u.name], cont[u.name])
        assert macs >= 0.75 * cont_macs
    assert off_grid >= 3  # the continuous uniform networks really are off the grid


def _hook_count(model, x) -> int:
    """MetaPruning's counter (its cal_FLOPs.py hooks), re-implemented on our built network: conv
    k*k*in/groups*out*H*W (+ bias), linear weight + bias, BN output elements, pooling k*k*C*H*W."""
    total = []

    def hook(m, inp, out):
        if isinstance(m, torch.nn.Conv2d):
            total.append(out[0].numel() * (m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
                                           + (m.bias is not None)))
        elif isinstance(m, torch.nn.Linear):
            total.append(m.weight.numel() + m.bias.numel())
        elif isinstance(m, torch.nn.BatchNorm2d):
            total.append(inp[0].numel())
        elif isinstance(m, torch.nn.MaxPool2d):
            total.append(m.kernel_size * m.kernel_size * out[0].numel())
        elif isinstance(m, torch.nn.AdaptiveAvgPool2d) and out.shape[-1] == 1:  # AvgPool2d(final map size)
            total.append(inp[0].shape[-1] * inp[0].shape[-2] * out[0].numel())

    for m in model.modules():
        if not list(m.children()):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model.eval()(x)
    return sum(total)


def test_metapruning_variant_and_counter_convention():
    """The paper's MobileNetV2 (variant=metapruning) and its "FLOPs": at uniform 0.4 the official
    counter on the official model gives 110,778,899 (benchmarks/check_metapruning_counter.py: equal on
    14 vectors) where conv + linear MACs are 106,844,375."""
    sp = get_space("mobilenet_v2", variant="metapruning")
    assert len(sp.units) == 25 and "last" not in sp.unit_names and sp.unit("stage1.0.expand").max == 44
    assert [sp.unit(u).max for u in ["stem"] + [f"stage{i}" for i in range(1, 8)]] == [44, 22, 33, 44, 88, 132, 224, 448]
    c = count_cost(make_spec(sp, sp.uniform_channels(0.4)), "metapruning")
    assert (c["macs"], c["flops_metapruning"]) == (106_844_375, 110_778_899)
    # the convention equals the same hooks run on our own networks, for random vectors of two spaces
    for name, opts in (("mobilenet_v2", {"variant": "metapruning", "input_size": 64}),
                       ("resnet50", {"input_size": 64, "ratios": "0.1:0.4:0.1"})):
        sp = get_space(name, **opts)
        cm = cost_model(sp)
        for v in random_vectors(sp, 3, seed=1):
            want = _hook_count(build_model(make_spec(sp, v)), torch.zeros(1, 3, 64, 64))
            assert cm.metapruning_flops(v)[0] == want == cm.cost(v, "metapruning")[0]
    with pytest.raises(Exception, match="variant=metapruning is the paper's 1.4x network"):
        get_space("mobilenet_v2", variant="metapruning", width_mult=1.0)


def test_search_budget_in_the_metapruning_convention():
    from evolution import Problem
    from metaprune.search.evaluate import make_cost_fn

    sp = get_space("mobilenet_v2", variant="metapruning")
    cost = make_cost_fn(sp, None, metapruning_flops=True)
    x = np.array([[u.choices[-1] for u in sp.units]])
    assert cost(x)["flops_metapruning"][0] > cost(x)["macs"][0] and "flops_metapruning" not in make_cost_fn(sp)(x)
    prob = Problem([u.choices for u in sp.units], cost, lambda xs: [0.0] * len(xs), {"flops_metapruning": 150e6})
    low, high = prob.check_budgets()["flops_metapruning"]
    assert low < 150e6 < high
