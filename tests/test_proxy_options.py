"""Issue 26 part 4's proxy options: fair sampling, in-place distillation, weight decay 0 on the
generators, and the candidate's loss as the search's score."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evolution import EvolutionSettings, Problem, run_search
from metaprune.config import from_dict
from metaprune.evaluation import accuracy
from metaprune.metatrain.config import MetaTrainConfig, TrainConfig
from metaprune.metatrain.loop import _optimizer, fair_vector, sample_vectors, step_losses
from metaprune.search.config import SearchConfig
from metaprune.search.evaluate import proxy_score
from metaprune.search.store import candidate_record, read_front, read_state, write_generation
from metaprune.data.splits import TensorSplit
from pruningnet.cost import cost_model
from pruningnet.errors import UserError
from pruningnet.hypernet import PruningNet
from pruningnet.spaces import get_space


@pytest.fixture(scope="module")
def space():
    return get_space("mobilenet_v2", input_size=32, small_input=True, num_classes=10, in_channels=1,
                     width_mult=0.25, ratios="0.5:1.0:0.125")


def test_fair_sampling_trains_every_choice_of_every_unit_equally_often(space):
    sizes = [len(u.choices) for u in space.units]
    assert len(set(sizes) - {1}) >= 1 and max(sizes) > 1
    cycle = math.lcm(*sizes)
    vecs = [sample_vectors(space, np.random.default_rng(0), "fair", seed=3, step=s)[0] for s in range(2 * cycle)]
    for u in space.units:
        n = len(u.choices)
        for start in range(0, 2 * cycle, n):  # every block of n steps from step 0: each choice once
            assert sorted(v[u.name] for v in vecs[start:start + n]) == sorted(u.choices), (u.name, start)
        counts = {c: sum(v[u.name] == c for v in vecs[:cycle]) for c in u.choices}
        assert set(counts.values()) == {cycle // n}
    # not a lockstep sweep: units are shuffled independently, and cycles are reshuffled
    assert len({tuple(v.values()) for v in vecs}) > len(vecs) // 2
    multi = [u for u in space.units if len(u.choices) > 1]
    assert any([v[u.name] for v in vecs[:len(u.choices)]] != [v[u.name] for v in vecs[len(u.choices):2 * len(u.choices)]]
               for u in multi)
    # a step's vector depends only on (seed, step): a resumed run draws the same; another seed differs
    assert fair_vector(space, 3, 5) == vecs[5]
    assert [fair_vector(space, 4, s) for s in range(cycle)] != vecs[:cycle]


def _net_with_a_confident_max(space):
    """A PruningNet whose classifier bias makes every vector predict class 0 with high confidence."""
    torch.manual_seed(0)
    net = PruningNet(space, hidden=8)
    with torch.no_grad():
        net.fc_bias.copy_(torch.tensor([6.0] + [0.0] * 9))
    return net


def test_inplace_distillation_trains_the_other_vectors_on_the_max_networks_soft_predictions(space):
    net = _net_with_a_confident_max(space)
    x = torch.randn(8, 1, 32, 32)
    y = torch.full((8,), 3)  # the labels disagree with what the max network predicts (class 0)
    vectors = sample_vectors(space, np.random.default_rng(1), "sandwich")
    tc = TrainConfig(sampling="sandwich", distill="inplace", label_smoothing=0.1)
    got = [(loss, logits) for loss, logits in step_losses(net, x, y, vectors, tc)]
    (l_max, z_max), (l_min, z_min), (l_rand, z_rand) = got
    assert torch.allclose(l_max, F.cross_entropy(z_max, y, label_smoothing=0.1))  # the max: labels
    teacher = z_max.detach().softmax(1)
    for loss, z in ((l_min, z_min), (l_rand, z_rand)):
        soft = -(teacher * z.log_softmax(1)).sum(1).mean()
        assert torch.allclose(loss, soft, atol=1e-5)
        assert F.cross_entropy(z.detach(), y).item() - loss.item() > 3.0  # labels would give a far larger loss
    # the teacher is detached: no gradient of the other vectors' losses reaches the max network's output
    assert torch.autograd.grad(l_min, z_max, allow_unused=True, retain_graph=True) == (None,)
    assert torch.autograd.grad(l_max, z_max, retain_graph=True)[0].abs().sum() > 0
    # without the option every vector learns from the labels
    plain = [loss for loss, _ in step_losses(net, x, y, vectors, TrainConfig(sampling="sandwich"))]
    assert all(loss.item() > 5.0 for loss in plain)


def test_inplace_distillation_without_sandwich_is_refused_in_one_line():
    with pytest.raises(UserError) as e:
        from_dict(MetaTrainConfig, {"train": {"distill": "inplace", "sampling": "fair"}})
    msg = str(e.value)
    assert "train.distill='inplace'" in msg and "sandwich" in msg and "\n" not in msg
    with pytest.raises(UserError, match="generator_weight_decay=-0.1"):
        from_dict(MetaTrainConfig, {"train": {"generator_weight_decay": -0.1}})
    with pytest.raises(UserError, match="'kl'"):
        from_dict(MetaTrainConfig, {"train": {"distill": "kl", "sampling": "sandwich"}})
    with pytest.raises(UserError, match="eval.score='top5'"):
        from_dict(SearchConfig, {"eval": {"score": "top5"}})


def test_generator_weight_decay_zero_leaves_generators_undecayed_and_biases_decayed(space):
    torch.manual_seed(0)
    net = PruningNet(space, hidden=8)
    with torch.no_grad():
        net.fc_bias.fill_(1.0)
    gen_ids = {id(p) for n, p in net.named_parameters() if n.startswith("generators.")}
    assert gen_ids and len(gen_ids) < len(list(net.parameters()))
    tc = TrainConfig(weight_decay=0.01, generator_weight_decay=0.0, lr=0.5)
    opt = _optimizer(net, tc)
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert len(decay) == len(list(net.parameters()))
    assert all(decay[i] == 0.0 for i in gen_ids)
    assert decay[id(net.fc_bias)] == 0.01
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # a zero gradient: only weight decay moves a parameter
    for n, p in net.named_parameters():
        if n.startswith("generators."):
            assert torch.equal(p, before[n]), n
    assert torch.allclose(net.fc_bias, torch.full_like(net.fc_bias, 1 - 0.5 * 0.01))
    # the default: one group, every parameter at train.weight_decay (as before the option)
    (group,) = _optimizer(net, TrainConfig(weight_decay=0.01)).param_groups
    assert group["weight_decay"] == 0.01 and len(group["params"]) == len(decay)


def test_accuracy_reports_the_mean_cross_entropy(space):
    torch.manual_seed(0)
    model = PruningNet(space, hidden=8).generate(space.max_channels()).eval()
    images = torch.randint(0, 256, (50, 1, 32, 32), dtype=torch.uint8)
    split = TensorSplit(images, torch.randint(0, 10, (50,)), (0.5,), (0.25,))
    res = accuracy(model, split, max_images=45, batch_size=20)
    x, y = next(split.batches(50))
    with torch.no_grad():
        want = F.cross_entropy(model(x[:45]), y[:45]).item()
    assert res["images"] == 45 and abs(res["loss"] - want) < 1e-5


def test_loss_score_ranks_the_lower_loss_higher_where_top1_ties(space, tmp_path):
    cm = cost_model(space)
    rng = np.random.default_rng(0)
    pool = [tuple(int(rng.choice(u.choices)) for u in space.units) for _ in range(6)]
    # equal top-1 everywhere; the loss falls with the vector's index in the pool
    results = {ch: {"top1": 0.5, "top5": 0.9, "loss": 2.0 - 0.1 * i} for i, ch in enumerate(pool)}
    assert proxy_score(results[pool[5]], "loss")["score"] > proxy_score(results[pool[0]], "loss")["score"]
    assert proxy_score(results[pool[5]], "top1") == proxy_score(results[pool[0]], "top1") == 0.5
    choices = [sorted({ch[g] for ch in pool}) for g in range(len(space.units))]
    problem = Problem(choices, lambda x: {"macs": cm.macs(x), "params": cm.params(x)},
                      lambda ch: proxy_score(results.get(ch, {"top1": 0.5, "top5": 0.9, "loss": 3.0}), "loss"))
    settings = EvolutionSettings(population=6, parents=2, mutations=0, crossovers=0, generations=1,
                                 seed_uniform=False)
    found = run_search(problem, settings, seed=0, initial=pool)
    assert {tuple(c["channels"]) for c in found.candidates} == set(pool)
    assert tuple(found.best["channels"]) == pool[5]
    assert found.best["top1"] == 0.5 and found.best["loss"] == pytest.approx(1.5)
    rec = candidate_record(found.best, space.unit_names)
    assert rec["top1"] == 0.5 and rec["loss"] == pytest.approx(1.5) and rec["score"] == pytest.approx(-1.5)
    # the state with negative scores is written, read back, and says which score the front holds
    meta = {"run": str(tmp_path), "space": space.name, "strategy": "constrained", "budgets": {}, "seed": 0,
            "config": {}, "proxy": {"bn_batches": 1, "batch_size": 8, "max_images": None, "seed": 0,
                                    "score": "loss"}}
    write_generation(tmp_path, found.state, meta, space.unit_names)
    assert read_state(tmp_path)["evolution"]["candidates"][0]["score"] < 0
    front = read_front(tmp_path)
    assert front["score"] == "loss" and all("loss" in c and 0 <= c["top1"] <= 1 for c in front["front"])


def test_a_diverged_candidate_scores_last_and_its_record_stays_valid_json():
    worst = proxy_score({"top1": 0.01, "loss": float("nan")}, "loss")
    assert worst["score"] == -1e9 and worst["loss"] == 1e9
    assert proxy_score({"top1": 0.01, "loss": float("inf")}, "loss") == worst
    assert proxy_score({"top1": 0.5, "loss": 40.0}, "loss")["score"] > worst["score"]
    json.loads(json.dumps(worst, allow_nan=False))
