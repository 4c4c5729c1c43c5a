"""Criterion-pruned baselines: channel groups, criteria, global pruning to a MACs budget, the CLI."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from pruningnet import build_model, count_cost, get_space, make_spec
from pruningnet.cost import cost_model
from pruningnet.groups import unit_groups

from metaprune.baselines.criteria import CRITERIA, unit_scores
from metaprune.baselines.prune import prune_to_budget

SPACES = [("mobilenet_v1", {}), ("mobilenet_v2", {"fixed_units": ["stem", "last"]}), ("resnet50", {}),
          ("mobilenet_v3_small", {"width_mult": 0.5}), ("shufflenet_v2", {"width_mult": 0.5})]


def _space(name, **extra):
    return get_space(name, input_size=32, small_input=True, num_classes=10, in_channels=3, **extra) \
        if name != "mobilenet_v1" else get_space(name, input_size=32, num_classes=10, in_channels=3, **extra)


def _full(space, seed=0):
    torch.manual_seed(seed)
    model = build_model(make_spec(space, space.max_channels()))
    for m in model.modules():  # trained networks have BN scales that differ; give them some spread
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.2, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


def _batches(seed, n=2, size=8):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, 32, 32, generator=g), torch.randint(0, 10, (size,), generator=g)) for _ in range(n)]


@pytest.mark.parametrize("name,extra", SPACES)
def test_every_criterion_lands_within_1pct_under_the_budget(name, extra):
    space = _space(name, **extra)
    model = _full(space)
    cm = cost_model(space)
    full = int(cm.macs(space.max_channels())[0])
    low = space.min_channels()
    fixed = {u.name for u in space.units if u.fixed}
    assert fixed >= set(extra.get("fixed_units", []))
    budget = int(0.45 * full)
    for crit in CRITERIA:
        scores = unit_scores(space, model, crit, batches=_batches(0) if crit == "taylor" else None)
        channels, macs = prune_to_budget(space, scores, budget)
        assert 0.99 * budget <= macs <= budget, (crit, macs, budget)
        assert macs == count_cost(make_spec(space, channels))["macs"]  # the project's own cost model
        assert all(channels[u] >= low[u] for u in channels), crit
        assert all(channels[u] == space.unit(u).max for u in fixed), crit
        assert all(channels[u] <= space.unit(u).max for u in channels)


def test_random_importance_gives_roughly_uniform_widths():
    space = _space("mobilenet_v2")
    scores = unit_scores(space, _full(space), "random", seed=3)
    full = int(cost_model(space).macs(space.max_channels())[0])
    channels, _ = prune_to_budget(space, scores, int(0.6 * full))
    frac = np.array([channels[u.name] / u.max for u in space.units if u.max >= 32])
    # measured over seeds 0-9 (random-init networks): largest deviation from the mean kept fraction
    # 0.11-0.14, std 0.04-0.05; l1 on the same networks: 0.27-0.29, std 0.13-0.14
    assert np.abs(frac - frac.mean()).max() < 0.2, frac
    l1, _ = prune_to_budget(space, unit_scores(space, _full(space), "l1"), int(0.6 * full))
    assert frac.std() < np.array([l1[u.name] / u.max for u in space.units if u.max >= 32]).std()


def test_taylor_scores_change_with_the_data_and_leave_the_model_alone():
    space = _space("mobilenet_v2")
    model = _full(space)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = unit_scores(space, model, "taylor", batches=_batches(0))
    b = unit_scores(space, model, "taylor", batches=_batches(1))
    again = unit_scores(space, model, "taylor", batches=_batches(0))
    assert all(torch.equal(a[u], again[u]) for u in a)
    changed = [u for u in a if not torch.allclose(a[u], b[u], rtol=1e-3)]
    assert len(changed) >= len(a) // 2, changed
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_resnet50_mid_unit_ties_two_layers_by_count_not_by_channel():
    groups = unit_groups(_space("resnet50"))
    assert [[p.path for p in c] for c in groups["layer1.0.mid"]] == [["features.1.body.conv1"],
                                                                      ["features.1.body.conv2"]]
    assert [p.path for p in groups["layer1"][0]] == ["features.1.body.conv3", "features.1.shortcut",
                                                      "features.2.body.conv3", "features.3.body.conv3"]


def test_compact_backbones_groups():
    g = unit_groups(_space("mobilenet_v3_small", width_mult=0.5))
    assert not [u for u in g if u.endswith(".se")]  # squeeze widths have no BN to score: left out
    # residual adds tie a stage's projections; a depthwise conv keeps its expansion's channels
    assert [[p.path for p in c] for c in g["stage3"]] == [["features.4.body.project", "features.5.body.project",
                                                          "features.6.body.project"]]
    assert [[p.path for p in c] for c in g["block4.expand"]] == [["features.4.body.expand", "features.4.body.dw"]]
    # ShuffleNetV2: split, concat and shuffle permute channels; each branch output is its own class
    s = unit_groups(_space("shufflenet_v2", width_mult=0.5))
    assert [[p.path for p in c] for c in s["stage2"]][:3] == [["features.1.branch1.pw"], ["features.1.branch2.pw2"],
                                                              ["features.2.branch2.pw2"]]
    assert [[p.path for p in c] for c in s["stage2.0.mid"]] == [["features.1.branch2.pw1", "features.1.branch2.dw"]]


def test_groups_and_l1_ranking_agree_with_torch_pruning():
    """On MobileNetV2: every unit's index-coupled producers are the convs whose output channels
    Torch-Pruning's dependency graph prunes together; where no depthwise conv is among them our L1
    scores equal Torch-Pruning's GroupMagnitudeImportance(p=1, mean, mean) over those convs; and the
    global ranking agrees with its default group importance (which also counts the consumers' input
    weights and BN scales, and skips depthwise filters) to Kendall's tau > 0.85 (0.93 measured)."""
    tp = pytest.importorskip("torch_pruning")
    from scipy.stats import kendalltau

    space = get_space("mobilenet_v2", input_size=32, small_input=True, num_classes=10, in_channels=1)
    model = _full(space).eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 1, 32, 32))
    names = {m: n for n, m in model.named_modules()}
    imp = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean", normalizer="mean")
    ours = unit_scores(space, model, "l1")
    exact, mine_all, theirs_all = 0, [], []
    for unit, classes in unit_groups(space).items():
        assert len(classes) == 1, unit
        conv = model.get_submodule(classes[0][0].path + ".conv")
        group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(conv.out_channels)))
        outs = [it for it in group if isinstance(it.dep.target.module, torch.nn.Conv2d)
                and "out" in it.dep.handler.__name__]
        assert sorted(names[it.dep.target.module][:-len(".conv")] for it in outs) == \
            sorted(p.path for p in classes[0]), unit
        if not any(p.depthwise for p in classes[0]):
            theirs = imp(outs).sort(descending=True).values.double()
            assert torch.allclose(theirs, ours[unit], rtol=1e-5), unit
            exact += 1
        mine_all += ours[unit].tolist()
        theirs_all += imp(group).sort(descending=True).values.tolist()
    assert exact >= 8
    assert kendalltau(mine_all, theirs_all).statistic > 0.85


def test_slimming_shrinks_bn_scales():
    from metaprune.training.loop import ScratchData, build_optimizer, train_epoch
    from metaprune.training.recipe import Recipe

    space = _space("mobilenet_v2")

    class Split:
        def __init__(self, n):
            g = torch.Generator().manual_seed(0)
            self.x, self.y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)

        def __len__(self):
            return len(self.y)

        def batches(self, bs, **kw):
            for i in range(0, len(self.y) - bs + 1, bs):
                yield self.x[i:i + bs], self.y[i:i + bs]

    data = ScratchData("gen", Split(64), Split(16), 10, 3, 32)
    recipe = Recipe(epochs=1, batch_size=16, lr=0.05, warmup_epochs=0.0)
    sums = {}
    for lam in (0.0, 0.05):
        torch.manual_seed(0)
        model = build_model(make_spec(space, space.min_channels()))
        train_epoch(model, build_optimizer(model, recipe), data, recipe, 0, 1, 0, torch.device("cpu"), slimming=lam)
        sums[lam] = sum(float(m.weight.detach().abs().sum()) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert sums[0.05] < sums[0.0] - 1.0, sums


@pytest.fixture(scope="module")
def base_run(smoke_run, tmp_path_factory):
    d = tmp_path_factory.mktemp("baselines") / "run"
    shutil.copytree(smoke_run, d, ignore=shutil.ignore_patterns("search", "train", "exports", "baselines"))
    return d


FAST = ("--set", "recipe.epochs=1", "--set", "recipe.max_train_images=256")


def test_baseline_cli_writes_specs_usable_everywhere(cli, base_run, tmp_path):
    full = count_cost(make_spec(_run_space(base_run), _run_space(base_run).max_channels()))["macs"]
    budget = int(0.4 * full)
    code, out, err = cli("baseline", base_run, "--criteria", "l1,random,taylor", "--max-macs", budget, *FAST, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert [b["criterion"] for b in doc["baselines"]] == ["l1", "random", "taylor"]
    for b in doc["baselines"]:
        spec = json.loads(open(b["file"]).read())
        assert spec["provenance"]["criterion"] == b["criterion"] and spec["provenance"]["normalizer"] == "mean"
        assert spec["provenance"]["checkpoint"].endswith(".pt")
        code, out, err = cli("cost", b["file"], "--json")
        assert code == 0 and json.loads(out)["macs"] == b["macs"] and 0.99 * budget <= b["macs"] <= budget
        code, _, err = cli("build", b["file"], "--format", "onnx", "-o", tmp_path / f"{b['criterion']}.onnx")
        assert code == 0, err
    # the full network is cached: a second call reuses it, and its weights serve as --full-checkpoint
    ckpt = doc["baselines"][0]["file"]
    ckpt = json.loads(open(ckpt).read())["provenance"]["checkpoint"]
    code, out, err = cli("baseline", base_run, "--criteria", "bn", "--max-macs", budget, *FAST)
    assert code == 0 and "reusing the trained full-width network" in err, err
    code, out, err = cli("baseline", base_run, "--criteria", "fpgm,l2", "--max-macs", budget,
                         "--full-checkpoint", ckpt, "--json")
    assert code == 0, err
    assert all(json.loads(open(b["file"]).read())["provenance"]["checkpoint"] == ckpt
               for b in json.loads(out)["baselines"])


def _run_space(run):
    from metaprune.store.runs import open_run

    return open_run(run).space


@pytest.fixture(scope="module")
def wrong_checkpoint(tmp_path_factory):
    """A ResNet-50 state_dict: not a checkpoint of a MobileNetV2 run."""
    f = tmp_path_factory.mktemp("ckpt") / "wrong.pt"
    torch.save(build_model(make_spec(_space("resnet50"), _space("resnet50").min_channels())).state_dict(), f)
    return f


@pytest.mark.parametrize("args,needle", [
    (("--criteria", "l1,magic", "--max-macs", "5M"), "'magic'"),
    (("--criteria", "", "--max-macs", "5M"), "--criteria"),
    (("--criteria", "l1", "--max-macs", "1K"), "--max-macs"),
    (("--criteria", "l1", "--max-macs", "10G"), "--max-macs"),
    (("--criteria", "l1"), "--max-macs"),
    (("--criteria", "l1", "--max-macs", "10M", "--slimming", "-1"), "--slimming"),
    (("--criteria", "l1", "--max-macs", "10M", "--slimming", "nan"), "--slimming"),
    (("--criteria", "l1", "--max-macs", "10M", "--seeds", "0"), "--seeds"),
    (("--criteria", "l1", "--max-macs", "10M", "--full-checkpoint", "WRONG"), "does not fit"),
    (("--criteria", "l1", "--max-macs", "10M", "--full-checkpoint", "MISSING"), "MISSING"),
])
def test_baseline_bad_inputs_one_line_exit_2_nothing_written(cli, base_run, wrong_checkpoint, tmp_path, tree_hash,
                                                             args, needle):
    wrong = wrong_checkpoint
    args = tuple(str(wrong) if a == "WRONG" else str(tmp_path / "MISSING.pt") if a == "MISSING" else a for a in args)
    before = tree_hash(base_run)
    code, out, err = cli("baseline", base_run, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err
    assert tree_hash(base_run) == before
