"""Scratch training on a real local Ray cluster (2 CPUs) with mnist5k and trials of seconds."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from metaprune.store.specfile import save_spec
from metaprune.training import Recipe, scratch_epochs
from metaprune.training.loop import lr_at
from metaprune.training.plan import from_spec_files, with_baselines
from metaprune.training.report import kendall
from pruningnet import cost_model, get_space, make_spec

SPACE = dict(input_size=32, small_input=True, in_channels=1, num_classes=10, width_mult=0.25)
FAST = ["--recipe", "smoke", "--set", "recipe.max_train_images=256", "--set", "recipe.max_test_images=200",
        "--quiet"]


def _space(**options):
    return get_space("mobilenet_v1", **{**SPACE, **options})


def _spec_file(tmp: Path, name: str, seed: int, proxy_top1: float) -> Path:
    """A non-uniform spec of the smoke space: each unit at a random choice in its upper half."""
    sp = _space()
    rng = np.random.default_rng(seed)
    ch = {u.name: int(rng.choice(u.choices[len(u.choices) // 2:])) for u in sp.units}
    return save_spec(make_spec(sp, ch, metrics={"proxy_top1": proxy_top1}), tmp / f"{name}.json")


def _reports(run: Path, name: str) -> list[dict]:
    """Every report a trial made, in order (the trial's own log, one line per tune.report, kept in
    the plan's first experiment across resumes)."""
    exp = json.loads((run / "train" / "plan.json").read_text())["experiment"]
    lines = (run / "train" / "ray" / exp / "reports" / f"{name}.reports.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# ---- pure parts --------------------------------------------------------------------------------

def test_scratch_b_epochs_scale_with_macs_and_are_capped():
    r = Recipe(epochs=10, scratch_b_cap=2.0)
    assert scratch_epochs(r, "scratch-e", 100, 400) == 10
    assert scratch_epochs(r, "scratch-b", 800, 1000) == 13  # 10 * 1.25, rounded up
    assert scratch_epochs(r, "scratch-b", 100, 1000) == 20  # 10x less compute, capped at 2x
    assert scratch_epochs(Recipe(epochs=10, scratch_b_cap=5.0), "scratch-b", 400, 1000) == 25


def test_lr_warms_up_then_follows_a_cosine_to_min_lr():
    r = Recipe(lr=0.4, warmup_epochs=1.0, min_lr=0.0)
    lrs = [lr_at(r, s, 100, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.04) and lrs[9] == pytest.approx(0.4)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[10 + 45] == pytest.approx(0.2, abs=0.01)  # halfway through the cosine
    assert lrs[-1] < 0.001


def test_each_budget_gets_the_largest_uniform_network_not_above_it(tmp_path):
    files = [_spec_file(tmp_path, "a", 1, 50.0), _spec_file(tmp_path, "b", 2, 60.0)]
    cands = with_baselines(from_spec_files([str(f) for f in files] + [str(files[0])]))
    searched = [c for c in cands if c.kind == "searched"]
    baselines = {c.name: c for c in cands if c.kind == "baseline"}
    assert [c.name for c in searched] == ["searched-a", "searched-b", "searched-a-2"]
    assert len(baselines) == 2  # a and its duplicate share one budget, so one baseline
    cm = cost_model(_space())
    for c in searched:
        b = baselines[c.baseline]
        assert b.macs <= c.macs
        ratio, ch, macs = cm.uniform_for_budget(c.macs)
        assert (b.macs, b.spec.channels) == (macs, ch)
        assert b.name == f"uniform-{ratio:.4f}"


def test_top_k_comes_from_the_search_front_best_proxy_first(smoke_run, tmp_path):
    import shutil

    from metaprune.store.fileio import write_json
    from metaprune.store.runs import open_run
    from metaprune.training.plan import from_front

    run = tmp_path / "run"
    run.mkdir()
    for f in ("config.yaml", "space.json"):
        shutil.copy(smoke_run / f, run / f)
    sp = open_run(run).space
    front = [{"id": i, "generation": 0, "channels": sp.uniform_channels(r), "macs": 1, "params": 1, "top1": t}
             for i, (r, t) in enumerate([(0.4, 0.61), (0.7, 0.83), (1.0, 0.80)])]
    front[0]["latency_ms"] = 1.5
    write_json(run / "search" / "front.json", {"front": front, "strategy": "constrained", "budgets": {"macs": 1e6},
                                               "objectives": ["macs"]})
    cands = from_front(run, 2)
    assert [c.name for c in cands] == ["searched-1", "searched-2"]
    assert [c.proxy_top1 for c in cands] == [0.83, 0.80]
    assert cands[0].spec.channels == sp.uniform_channels(0.7)
    assert from_front(run, 5)[2].latency_ms == 1.5


def test_kendall_tau_of_proxy_against_scratch():
    rows = [{"proxy_top1": p, "test_top1": t} for p, t in [(1, 10), (2, 20), (3, 30), (4, 25)]]
    res = kendall(rows + [{"proxy_top1": None, "test_top1": 5.0}])
    assert res["n"] == 4 and res["tau"] == pytest.approx(4 / 6)


# ---- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["--spec", "missing.json"], "missing.json"),
    (["--top", "3"], "is not a metaprune run"),
    (["--spec", "x.json", "--seeds", "0"], "'--seeds': 0"),
    (["--top", "2", "--spec", "x.json"], "not both"),
    ([], "not both and not neither"),
    (["--resume"], "no training to resume"),
])
def test_bad_input_exits_2_with_one_line(cli, tmp_path, args, needle):
    code, out, err = cli("train", tmp_path / "run", *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("metaprune: error:") and needle in err


def test_a_spec_for_other_data_is_refused(cli, tmp_path):
    sp = get_space("mobilenet_v1", **dict(SPACE, in_channels=3))
    f = save_spec(make_spec(sp, sp.max_channels()), tmp_path / "rgb.json")
    code, _, err = cli("train", tmp_path / "run", "--spec", f, *FAST)
    assert code == 2 and "in_channels=3" in err and "mnist5k" in err


def test_report_without_results_exits_2(cli, tmp_path):
    code, _, err = cli("report", tmp_path)
    assert code == 2 and "no scratch-training results" in err


# ---- on the Ray cluster ------------------------------------------------------------------------

def test_searched_and_baseline_trials_run_survive_a_crash_and_report(cli, tmp_path, ray_cluster):
    """Every trial is made to crash once at its second epoch (``crash_at_epoch``, first attempt
    only): FailureConfig retries it from its epoch-1 checkpoint and it still reports each epoch once."""
    run = tmp_path / "run"
    files = [_spec_file(tmp_path, "a", 1, 0.40), _spec_file(tmp_path, "b", 2, 0.45)]
    code, out, err = cli("train", run, "--spec", files[0], "--spec", files[1], "--epochs", "2",
                         "--set", "crash_at_epoch=1", *FAST)
    assert code == 0, err
    doc = json.loads((run / "train" / "results.json").read_text())
    rows = {r["name"]: r for r in doc["results"]}
    searched = [rows["searched-a"], rows["searched-b"]]
    baselines = [r for r in rows.values() if r["kind"] == "baseline"]
    assert len(rows) == 2 + len(baselines) and 1 <= len(baselines) <= 2
    for r in searched:
        base = rows[r["baseline"]]
        assert base["kind"] == "baseline" and base["macs"] <= r["macs"]
        assert r["delta_top1"] == pytest.approx(r["test_top1"] - base["test_top1"])
    for r in rows.values():
        assert r["epochs"] == 2 and r["seeds"] == [0] and r["failed"] == []
        assert 0 <= r["test_top1"] <= r["test_top5"] <= 1 and r["wall_s"] > 0
        assert r["test_top1_std"] == 0.0 and r["test_top1_per_seed"] == [r["test_top1"]]
        reports = _reports(run, f"{r['name']}-s0")
        assert [x["epoch"] for x in reports] == [1, 2]  # every epoch, each reported once
        assert [x["restores"] for x in reports] == [0, 1]  # epoch 2 ran after a restore
        assert math.isclose(reports[-1]["wall_s"], r["wall_s"])
        assert reports[-1]["test_top1"] == r["test_top1"]  # the last epoch's, not the best
    assert rows["searched-a"]["proxy_top1"] == 0.40

    code, out, err = cli("report", run, "--json")
    assert code == 0, err
    rep = json.loads(out)
    names = {r["name"] for r in rep["results"]}
    assert names == set(rows)
    for r in rep["results"]:
        assert {"name", "kind", "macs", "proxy_top1", "test_top1"} <= set(r)
    assert rep["kendall"]["n"] == 2
    assert (run / "train" / "report.png").stat().st_size > 0
    code, out, _ = cli("report", run)
    assert code == 0 and "searched-a" in out and "Kendall" in out


@pytest.mark.parametrize("name", ["smoke", "cifar10", "imagenet_mobilenet_v1", "imagenet_mobilenet_v2",
                                  "imagenet_resnet50"])
def test_shipped_recipes_load(name):
    from metaprune.training import load_train_config

    cfg = load_train_config(name)
    assert cfg.recipe.epochs >= 1 and cfg.recipe.lr > 0


def test_a_run_keeps_its_data_under_any_recipe(tmp_path):
    """The ImageNet recipes say ``data.root: null``; scratch training of a run meta-trained with
    ``data.root=/data/imagenet`` must still read /data/imagenet (a null keeps the run's value, the
    recipe's other values apply), and a recipe's own root or ``--set data.root=...`` still change it."""
    from metaprune.training import load_train_config

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 3\ndata:\n  name: imagefolder\n  root: /data/imagenet\n"
                                     "  image_size: 160\n  workers: 2\n")
    assert load_train_config("imagenet_mobilenet_v2").data.root is None
    cfg = load_train_config("imagenet_mobilenet_v2", {}, run)
    assert (cfg.data.name, cfg.data.root, cfg.data.image_size) == ("imagefolder", "/data/imagenet", 224)
    assert cfg.recipe.epochs == load_train_config("imagenet_mobilenet_v2").recipe.epochs  # the recipe's own
    assert load_train_config("imagenet_mobilenet_v2", {"data.root": "/elsewhere"}, run).data.root == "/elsewhere"
    moved = tmp_path / "moved.yaml"  # a recipe's own path (data moved since meta-training) still wins
    moved.write_text("data:\n  root: /mnt/imagenet\n  workers: null\nrecipe:\n  epochs: 3\n")
    cfg = load_train_config(str(moved), {}, run)
    assert (cfg.data.root, cfg.data.workers, cfg.recipe.epochs) == ("/mnt/imagenet", 2, 3)
    assert load_train_config("smoke", {}, run).seed == 0  # a recipe's seed still picks the scratch seeds


def test_a_bad_recipe_key_is_named(cli, tmp_path):
    f = _spec_file(tmp_path, "e", 5, 50.0)
    code, _, err = cli("train", tmp_path / "run", "--spec", f, "--set", "recipe.lr=-1")
    assert code == 2 and "recipe.lr=-1" in err


@pytest.mark.parametrize("channels_last", [None, False])
def test_scratch_training_is_channels_last_by_default(channels_last):
    """A trial of the default recipe trains an NHWC model (faster on the CPU too,
    benchmarks/bench_scratch_layout.py); ``recipe.channels_last: false`` keeps NCHW."""
    import torch

    from metaprune.data.splits import TensorSplit
    from metaprune.training.loop import ScratchData, fit

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (64,), generator=g)
    images = (torch.rand(64, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    split = TensorSplit(images, labels, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    data = ScratchData("generated", split, split, 10, 3, 32)
    sp = _space(in_channels=3)
    recipe = Recipe(epochs=1, batch_size=32, eval_batch_size=64)
    if channels_last is not None:
        recipe = Recipe(**{**recipe.__dict__, "channels_last": channels_last})
    trial = {"space": sp.name, "options": dict(sp.options), "channels": sp.min_channels(), "recipe": dict(recipe.__dict__),
             "seed": 0, "epochs": 1, "threads": 1, "gpus": 0}
    states = []
    fit(trial, data, on_epoch=lambda e, m, st: states.append(st))
    stem = next(w for w in states[0]["model"].values() if w.dim() == 4 and w.shape[1] > 1 and w.shape[-1] > 1)
    assert stem.is_contiguous(memory_format=torch.channels_last) == (channels_last is None)
    assert stem.is_contiguous() == (channels_last is False)


@pytest.mark.parametrize("precision, channels_last", [("bf16", True), ("fp16", False)])
def test_mixed_precision_and_channels_last_train_and_resume_with_the_scaler(precision, channels_last):
    """Autocast (bf16, or fp16 with a GradScaler) and channels-last run the same loop; the fp16
    scaler's state travels in the epoch checkpoint and comes back on resume (on CPU here; on a GPU
    in scripts/gpu_check.sh)."""
    import torch

    from metaprune.data.splits import TensorSplit
    from metaprune.training.loop import ScratchData, fit

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (96,), generator=g)
    images = (torch.rand(96, 1, 32, 32, generator=g) * 40 + labels.view(-1, 1, 1, 1) * 20).to(torch.uint8)
    split = TensorSplit(images, labels, (0.5,), (0.25,))
    data = ScratchData("generated", split, split, 10, 1, 32)
    sp = _space()
    recipe = dict(Recipe(epochs=2, batch_size=32, eval_batch_size=96, precision=precision,
                         channels_last=channels_last).__dict__)
    trial = {"space": sp.name, "options": dict(sp.options), "channels": sp.max_channels(), "recipe": recipe,
             "seed": 0, "epochs": 2, "threads": 1, "gpus": 0}
    states = []
    last = fit(trial, data, on_epoch=lambda e, m, st: states.append(st))
    assert 0 <= last["test_top1"] <= 1 and math.isfinite(last["train_loss"])
    if precision == "fp16":
        assert set(states[0]["precision"]["scaler"]) >= {"scale", "_growth_tracker"}
        states[0]["precision"]["scaler"]["scale"] = 1024.0
    else:
        assert states[0]["precision"] == {}
    resumed = []
    fit(trial, data, states[0], on_epoch=lambda e, m, st: resumed.append(st))
    assert [st["epoch"] for st in resumed] == [2] and resumed[0]["restores"] == 1
    if precision == "fp16":  # restored, then updated by one epoch of steps (growth every 2000)
        assert resumed[0]["precision"]["scaler"]["scale"] <= 1024.0
