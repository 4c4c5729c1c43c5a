"""Every bad input gets one line naming the bad value, exit 2, no traceback, and changes nothing.

Issue 14: a table of bad inputs across all commands, each run against a real run directory with a
search and an export, whose files are hashed before and after. Placeholders: {run} (that run),
{spec} (a valid spec exported from it), {f} (a folder of bad files made below), {t} (a scratch folder
outside the run). A property-based part (Hypothesis) feeds random JSON to the spec loader and random
strings to the budget and option parsers.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
NO_CUDA = not torch.cuda.is_available()


@pytest.fixture(scope="module")
def world(smoke_run, tmp_path_factory):
    """A searched run with an export, a folder of bad files and a scratch folder."""
    from metaprune.cli.main import main

    base = tmp_path_factory.mktemp("bad")
    run = base / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("search", "train", "exports", "checkpoints"))
    assert main(["search", str(run), "-c", "smoke", "--strategy", "pareto", "--set", "generations=1",
                 "--set", "eval.max_images=64", "--quiet"]) == 0
    spec = base / "spec.json"
    assert main(["export", str(run), "--id", "0", "-o", str(spec)]) == 0
    f = base / "files"
    f.mkdir()
    (f / "latin1.json").write_bytes(b'{"space": "caf\xe9"}')
    (f / "latin1.yaml").write_bytes(b"seed: 0\nname: caf\xe9\n")
    (f / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    (f / "deep.yaml").write_text("a: " + "[" * 20_000 + "]" * 20_000 + "\n")
    (f / "list.json").write_text("[1, 2]")
    (f / "empty.json").write_text("{}")
    (f / "torn.json").write_text('{"format": "metaprune.subnet/1", "space": "mob')
    (f / "list.yaml").write_text("- 1\n- 2\n")
    (f / "syntax.yaml").write_text("seed: 0\ntrain:\n  lr: [0.1\n")
    with open(f / "huge.json", "wb") as h:  # sparse: 300 MB on paper, nothing on disk
        h.truncate(300 * 1024 * 1024)
    doc = json.loads(spec.read_text())
    (f / "badch.json").write_text(json.dumps({**doc, "channels": {k: 7777 for k in doc["channels"]}}))
    (f / "otherspace.json").write_text(json.dumps({**doc, "options": {**doc["options"], "num_classes": 100}}))
    (f / "unknownspace.json").write_text(json.dumps({**doc, "space": "vgg"}))
    (f / "adir").mkdir()
    t = base / "scratch"
    t.mkdir()
    return {"run": run, "spec": spec, "f": f, "t": t}


CASES = [
    # space
    (["space", "show", "vgg"], "'vgg'"),
    (["space", "show", "mobilenet_v2", "-o", "ratios=nan:1:0.1"], "nan:1:0.1"),
    (["space", "show", "mobilenet_v2", "-o", "ratios=0.1:inf:0.1"], "0.1:inf:0.1"),
    (["space", "show", "mobilenet_v2", "-o", "ratios=0.1:1:1e-9"], "0.1:1:1e-9"),
    (["space", "show", "mobilenet_v2", "-o", "ratios=0:1:0.1"], "0:1:0.1"),
    (["space", "show", "mobilenet_v2", "-o", "ratios=1:0.1:0.1"], "1:0.1:0.1"),
    (["space", "show", "mobilenet_v2", "-o", "ratios=[]"], "ratios"),
    (["space", "show", "mobilenet_v2", "-o", "ratios=[1.5]"], "1.5"),
    (["space", "show", "mobilenet_v2", "-o", "ratios=abc"], "abc"),
    (["space", "show", "mobilenet_v2", "-o", "input_size=100000000"], "input_size=100000000"),
    (["space", "show", "mobilenet_v2", "-o", "input_size=4"], "input_size=4"),
    (["space", "show", "mobilenet_v2", "-o", "input_size=-1"], "input_size=-1"),
    (["space", "show", "mobilenet_v2", "-o", "input_size=abc"], "input_size='abc'"),
    (["space", "show", "mobilenet_v2", "-o", "width_mult=0"], "width_mult=0"),
    (["space", "show", "mobilenet_v2", "-o", "width_mult=.nan"], "width_mult=nan"),
    (["space", "show", "mobilenet_v2", "-o", "width_mult=100"], "width_mult=100"),
    (["space", "show", "mobilenet_v2", "-o", "num_classes=0"], "num_classes=0"),
    (["space", "show", "mobilenet_v2", "-o", "in_channels=0"], "in_channels=0"),
    (["space", "show", "mobilenet_v2", "-o", "round_to=0"], "round_to=0"),
    (["space", "show", "mobilenet_v2", "-o", "small_input=maybe"], "small_input='maybe'"),
    (["space", "show", "mobilenet_v2", "-o", "fixed_units=nosuchunit"], "nosuchunit"),
    (["space", "show", "mobilenet_v2", "-o", "depth=3"], "'depth'"),
    (["space", "show", "mobilenet_v2", "-o", "noequals"], "noequals"),
    (["space", "show", "{run}", "-o", "input_size=32"], "-o"),
    (["space", "show", "./no/such/run"], "./no/such/run"),
    # train-pruningnet
    (["train-pruningnet", "-c", "nope"], "'nope'"),
    (["train-pruningnet", "-c", "{f}/latin1.yaml"], "UTF-8"),
    (["train-pruningnet", "-c", "{f}/deep.yaml"], "deep"),
    (["train-pruningnet", "-c", "{f}/list.yaml"], "mapping"),
    (["train-pruningnet", "-c", "{f}/syntax.yaml"], "line"),
    (["train-pruningnet", "-c", "{f}/huge.json"], "bytes"),
    (["train-pruningnet", "-c", "smoke", "--set", "train.lr=.inf", "--run-dir", "{t}/r"], "train.lr=inf"),
    (["train-pruningnet", "-c", "smoke", "--set", "train.lr=.nan", "--run-dir", "{t}/r"], "train.lr=nan"),
    (["train-pruningnet", "-c", "smoke", "--set", "train.lr=-1", "--run-dir", "{t}/r"], "train.lr=-1"),
    (["train-pruningnet", "-c", "smoke", "--set", "train.lr=fast", "--run-dir", "{t}/r"], "train.lr='fast'"),
    (["train-pruningnet", "-c", "smoke", "--set", "train.batch_size=0", "--run-dir", "{t}/r"], "train.batch_size=0"),
    (["train-pruningnet", "-c", "smoke", "--set", "train.batch_size=100000", "--run-dir", "{t}/r"],
     "train.batch_size=100000"),
    (["train-pruningnet", "-c", "smoke", "--set", "train.epochs=0", "--run-dir", "{t}/r"], "train.epochs=0"),
    (["train-pruningnet", "-c", "smoke", "--set", "train.momentum=1.5", "--run-dir", "{t}/r"], "train.momentum=1.5"),
    pytest.param(["train-pruningnet", "-c", "smoke", "--set", "train.device=cuda", "--run-dir", "{t}/r"],
                 "train.device='cuda'", marks=pytest.mark.skipif(not NO_CUDA, reason="a GPU is present")),
    (["train-pruningnet", "-c", "smoke", "--set", "train.device=tpu", "--run-dir", "{t}/r"], "train.device='tpu'"),
    (["train-pruningnet", "-c", "smoke", "--set", "train.threads=0", "--run-dir", "{t}/r"], "train.threads=0"),
    (["train-pruningnet", "-c", "smoke", "--set", "train.optimizer=lbfgs", "--run-dir", "{t}/r"], "'lbfgs'"),
    (["train-pruningnet", "-c", "smoke", "--set", "train.schedule=step", "--run-dir", "{t}/r"], "'step'"),
    (["train-pruningnet", "-c", "smoke", "--set", "train.sampling=random", "--run-dir", "{t}/r"], "'random'"),
    (["train-pruningnet", "-c", "smoke", "--set", "train.distill=inplace", "--run-dir", "{t}/r"], "train.distill='inplace'"),
    (["train-pruningnet", "-c", "smoke", "--set", "train.amp=fp8", "--run-dir", "{t}/r"], "'fp8'"),
    (["train-pruningnet", "-c", "smoke", "--set", "train.bogus=1", "--run-dir", "{t}/r"], "train.bogus"),
    (["train-pruningnet", "-c", "smoke", "--set", "data.name=imagenet22k", "--run-dir", "{t}/r"], "'imagenet22k'"),
    (["train-pruningnet", "-c", "smoke", "--set", "space.name=vgg", "--run-dir", "{t}/r"], "'vgg'"),
    (["train-pruningnet", "-c", "smoke", "--set", "model.hidden=0", "--run-dir", "{t}/r"], "model.hidden=0"),
    (["train-pruningnet", "-c", "smoke", "--set", "train.spike_factor=1", "--run-dir", "{t}/r"], "train.spike_factor=1"),
    (["train-pruningnet", "-c", "smoke", "--set", "train.label_smoothing=1", "--run-dir", "{t}/r"],
     "train.label_smoothing=1"),
    (["train-pruningnet", "-c", "smoke", "--set", "train.weight_decay=-1", "--run-dir", "{t}/r"], "train.weight_decay=-1"),
    (["train-pruningnet", "-c", "smoke", "--set", "train.grad_clip=0", "--run-dir", "{t}/r"], "train.grad_clip=0"),
    (["train-pruningnet", "-c", "smoke", "--set", "train.warmup_steps=-1", "--run-dir", "{t}/r"], "train.warmup_steps=-1"),
    (["train-pruningnet", "-c", "smoke", "--set", "seed=abc", "--run-dir", "{t}/r"], "seed='abc'"),
    (["train-pruningnet", "-c", "smoke", "--set", "noequals", "--run-dir", "{t}/r"], "noequals"),
    (["train-pruningnet", "-c", "smoke", "--set", "space.options.input_size=2", "--run-dir", "{t}/r"], "input_size=2"),
    (["train-pruningnet", "-c", "smoke", "--set", "data.search_per_class=1000", "--run-dir", "{t}/r"],
     "data.search_per_class=1000"),
    (["train-pruningnet", "-c", "smoke", "--set", "data.name=imagefolder", "--set", "data.root={f}/adir",
      "--run-dir", "{t}/r"], "adir"),
    (["train-pruningnet", "--resume", "{t}/none"], "{t}/none"),
    (["train-pruningnet", "--resume", "{run}", "-c", "smoke"], "--resume"),
    (["train-pruningnet", "-c", "smoke", "--run-dir", "{run}"], "already holds a run"),
    # evaluate
    (["evaluate", "{run}", "--uniform", "1.5"], "--uniform 1.5"),
    (["evaluate", "{run}", "--uniform", "0"], "--uniform 0"),
    (["evaluate", "{run}", "--uniform", "nan"], "--uniform nan"),
    (["evaluate", "{run}", "--uniform", "0.5", "--bn-batches", "0"], "--bn-batches"),
    (["evaluate", "{run}", "--uniform", "0.5", "--bn-batches", "-5"], "--bn-batches"),
    (["evaluate", "{run}", "--uniform", "0.5", "--max-images", "0"], "--max-images"),
    (["evaluate", "{run}", "--uniform", "0.5", "--max-images", "-1"], "--max-images"),
    (["evaluate", "{run}"], "SPEC or --uniform"),
    (["evaluate", "{run}", "{spec}", "--uniform", "0.5"], "SPEC or --uniform"),
    (["evaluate", "{t}/none", "--uniform", "0.5"], "{t}/none"),
    (["evaluate", "{run}", "{f}/latin1.json"], "UTF-8"),
    (["evaluate", "{run}", "{f}/deep.json"], "deep"),
    (["evaluate", "{run}", "{f}/adir"], "directory"),
    (["evaluate", "{run}", "{f}/huge.json"], "bytes"),
    (["evaluate", "{run}", "{f}/list.json"], "JSON object"),
    (["evaluate", "{run}", "{f}/otherspace.json"], "num_classes"),
    # search
    (["search", "{run}", "--max-macs", "inf", "--overwrite"], "'inf'"),
    (["search", "{run}", "--max-params", "1e400", "--overwrite"], "'1e400'"),
    (["search", "{run}", "--max-macs", "-5", "--overwrite"], "'-5'"),
    (["search", "{run}", "--max-macs", "abc", "--overwrite"], "'abc'"),
    (["search", "{run}", "--max-macs", "0", "--overwrite"], "'0'"),
    (["search", "{run}", "--max-macs", "10", "--overwrite"], "10"),
    (["search", "{run}", "--max-macs", "5M", "--strategy", "random"], "'random'"),
    (["search", "{run}", "--max-macs", "5M", "-c", "nope"], "'nope'"),
    (["search", "{run}", "--max-macs", "20M", "-c", "configs/smoke.yaml", "--overwrite"], "meta-training config"),
    (["search", "{run}", "--max-macs", "5M", "-c", "smoke", "--set", "generations=0", "--overwrite"], "generations=0"),
    (["search", "{run}", "--max-macs", "5M", "--set", "bogus=1", "--overwrite"], "bogus"),
    (["search", "{run}", "--max-macs", "5M", "--workers", "0", "--overwrite"], "--workers 0"),
    pytest.param(["search", "{run}", "--max-macs", "5M", "--device", "cuda", "--overwrite"], "'cuda'",
                 marks=pytest.mark.skipif(not NO_CUDA, reason="a GPU is present")),
    (["search", "{run}", "--max-macs", "5M", "--device", "tpu"], "'tpu'"),
    (["search", "{run}", "--resume", "--overwrite"], "--overwrite"),
    (["search", "{run}", "--max-macs", "5M", "--objectives", "flops", "--overwrite"], "flops"),
    (["search", "{t}/none", "--max-macs", "5M"], "{t}/none"),
    (["search", "{run}", "--max-latency-ms", "-1"], "-1"),
    (["search", "{run}", "--max-macs", "20M"], "already holds"),
    # pareto / export
    (["pareto", "{run}", "--baselines", "-1"], "--baselines"),
    (["pareto", "{run}", "--baselines", "1000"], "--baselines"),
    (["pareto", "{t}/none"], "{t}/none"),
    (["export", "{run}", "--id", "999999", "-o", "{t}/x.json"], "999999"),
    (["export", "{run}", "--max-macs", "1", "-o", "{t}/x.json"], "1"),
    (["export", "{run}", "--id", "0", "--max-macs", "5M", "-o", "{t}/x.json"], "--id"),
    (["export", "{run}", "--id", "0", "-o", "{spec}/x.json"], "spec.json/x.json"),
    (["export", "{run}", "--id", "0", "-o", "/proc/metaprune-test.json"], "/proc/metaprune-test.json"),
    (["export", "{run}", "--id", "0", "-o", "{t}/x", "--format", "pdf"], "'pdf'"),
    pytest.param(["export", "{run}", "--id", "0", "--with-weights", "--device", "cuda", "--format", "onnx",
                  "-o", "{t}/x.onnx"], "'cuda'", marks=pytest.mark.skipif(not NO_CUDA, reason="a GPU is present")),
    (["export", "{run}", "--id", "0"], "-o"),
    # cost / build
    (["cost", "{t}/none.json"], "{t}/none.json"),
    (["cost", "{f}/latin1.json"], "UTF-8"),
    (["cost", "{f}/deep.json"], "deep"),
    (["cost", "{f}/list.json"], "JSON object"),
    (["cost", "{f}/empty.json"], "spec"),
    (["cost", "{f}/torn.json"], "line 1"),
    (["cost", "{f}/badch.json"], "7777"),
    (["cost", "{f}/unknownspace.json"], "'vgg'"),
    (["cost", "{f}/adir"], "directory"),
    (["cost", "{f}/huge.json"], "bytes"),
    (["build", "{spec}", "-o", "/proc/metaprune-test.pt"], "/proc/metaprune-test.pt"),
    (["build", "{spec}", "-o", "{spec}/x.pt"], "spec.json/x.pt"),
    (["build", "{spec}", "--format", "pdf", "-o", "{t}/x"], "'pdf'"),
    # train
    (["train", "{run}"], "--top"),
    (["train", "{run}", "--spec", "{t}/nope.json"], "nope.json"),
    (["train", "{run}", "--top", "1", "--spec", "{spec}"], "--top"),
    (["train", "{run}", "--spec", "{spec}", "--seeds", "0"], "'--seeds': 0"),
    (["train", "{run}", "--spec", "{spec}", "--seeds", str(2**70)], "'--seeds'"),
    (["train", "{run}", "--spec", "{spec}", "--recipe", "nope"], "'nope'"),
    (["train", "{run}", "--spec", "{spec}", "--set", "recipe.lr=.inf"], "recipe.lr=inf"),
    (["train", "{run}", "--spec", "{spec}", "--budget", "scratch-c"], "'scratch-c'"),
    (["train", "{run}", "--spec", "{spec}", "--cpus-per-trial", "0"], "--cpus-per-trial"),
    (["train", "{run}", "--spec", "{spec}", "--gpus-per-trial", "-1"], "--gpus-per-trial"),
    (["train", "{run}", "--spec", "{spec}", "--gpus-per-trial", "nan"], "'nan' is not accepted"),
    (["train", "{run}", "--spec", "{spec}", "--cpus-per-trial", "nan"], "'nan' is not accepted"),
    (["train", "{run}", "--resume"], "no training to resume"),
    (["train", "{run}", "--spec", "{spec}", "--epochs", "0"], "--epochs"),
    (["train", "{run}", "--spec", "{f}/otherspace.json"], "num_classes"),
    # report, latency, quickstart, the group
    (["report", "{t}/none"], "{t}/none"),
    (["latency", "build", "mobilenet_v2", "--clock", "tsc", "--out", "{t}/x.json"], "'tsc'"),
    (["latency", "check", "{t}/none.json"], "none.json"),
    (["latency", "build", "vgg", "--out", "{t}/x.json"], "'vgg'"),
    (["quickstart", "--budget-fraction", "2"], "--budget-fraction"),
    (["quickstart", "--budget-fraction", "nan"], "--budget-fraction"),
    (["frobnicate"], "frobnicate"),
    (["search"], "RUN"),
]


def _fill(arg: str, world: dict) -> str:
    return arg.format(**{k: str(v) for k, v in world.items()})


def test_the_table_is_large():
    assert len(CASES) >= 100


@pytest.mark.parametrize("args, needle", CASES)
def test_bad_input_one_line_exit_2_nothing_changed(world, cli, tree_hash, args, needle):
    before = tree_hash(world["run"])
    scratch = sorted(p.name for p in world["t"].iterdir())
    code, out, err = cli(*[_fill(a, world) for a in args])
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("metaprune: error:"), err
    assert _fill(needle, world) in lines[0], (needle, lines[0])
    assert "Traceback" not in err and "weights_only=False" not in err
    assert tree_hash(world["run"]) == before, "the run directory changed"
    assert sorted(p.name for p in world["t"].iterdir()) == scratch, "a file was left in the scratch folder"


# --- property-based: random JSON to the spec loader, random text to the parsers ----------------
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                     max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=_json | st.fixed_dictionaries({"format": st.just("metaprune.subnet/1"), "space": st.sampled_from(
    ["mobilenet_v2", "resnet50", "vgg"]), "options": _json, "channels": _json}))
def test_spec_loader_never_raises_anything_but_a_user_error(tmp_path_factory, doc):
    from metaprune import UserError
    from metaprune.store.specfile import load_spec

    p = tmp_path_factory.mktemp("h") / "spec.json"
    p.write_text(json.dumps(doc))
    try:
        load_spec(p)
    except UserError as e:
        assert "\n" not in str(e)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=12))
def test_budget_parser_accepts_or_refuses_in_one_line(text):
    from metaprune import UserError
    from metaprune.units import parse_count

    try:
        v = parse_count(text, "--max-macs")
    except UserError as e:
        assert "\n" not in str(e) and "--max-macs" in str(e)
    else:
        assert isinstance(v, int) and 0 < v <= 10**15


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(["ratios", "input_size", "width_mult", "num_classes", "round_to", "fixed_units",
                            "small_input", "in_channels"]),
       text=st.text(alphabet="0123456789.:-e[],naif ", max_size=14))
def test_space_option_parser_accepts_or_refuses_in_one_line(key, text):
    import yaml

    from metaprune import UserError, get_space

    try:
        value = yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        value = text
    try:
        get_space("mobilenet_v2", **{"small_input": True, "input_size": 32, key: value})
    except UserError as e:
        assert "\n" not in str(e)
