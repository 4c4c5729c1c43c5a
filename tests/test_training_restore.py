"""``metaprune train --resume`` never unpickles anything in the run directory (Ray's ``tuner.pkl``,
trial and searcher state, ``error.pkl``, our checkpoints): every file there may be an attacker's.

One interrupted training (2 trials, 2 epochs each, both failing at the start of their second epoch)
is made once on the session's Ray cluster; each test resumes a copy of it.
"""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from metaprune.store.specfile import save_spec
from pruningnet import get_space, make_spec

SPACE = dict(input_size=32, small_input=True, in_channels=1, num_classes=10, width_mult=0.25)
FAST = ["--recipe", "smoke", "--set", "recipe.max_train_images=256", "--set", "recipe.max_test_images=200",
        "--quiet"]


class _Touch:
    """Unpickling this creates ``path``: the marker that some code in the run directory ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "a"))


def _evil(marker: Path) -> bytes:
    return pickle.dumps(_Touch(marker))


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, ray_cluster):
    """A run whose 2 trials (a searched spec and its uniform baseline) finished epoch 1 of 2, then
    failed (``crash_at_epoch=1``, no retries)."""
    from metaprune.cli.main import main

    base = tmp_path_factory.mktemp("interrupted")
    sp = get_space("mobilenet_v1", **SPACE)
    rng = np.random.default_rng(4)
    ch = {u.name: int(rng.choice(u.choices[len(u.choices) // 2:])) for u in sp.units}
    spec = save_spec(make_spec(sp, ch, metrics={"proxy_top1": 0.5}), base / "d.json")
    run = base / "run"
    code = main(["train", str(run), "--spec", str(spec), "--epochs", "2", "--set", "crash_at_epoch=1",
                 "--set", "max_failures=0", *FAST])
    assert code == 2
    rows = json.loads((run / "train" / "results.json").read_text())["results"]
    assert len(rows) == 2 and all(r["failed"] and r["test_top1"] is None for r in rows)
    return run


def _copy(interrupted: Path, tmp_path: Path) -> tuple[Path, Path, dict]:
    run = tmp_path / "run"
    shutil.copytree(interrupted, run)
    plan = json.loads((run / "train" / "plan.json").read_text())
    return run, run / "train" / "ray" / plan["experiment"], plan


def _stems(plan: dict) -> list[str]:
    return [f"{t['name']}-s{t['seed']}" for t in plan["trials"]]


def _log(exp: Path, stem: str) -> Path:
    return exp / "reports" / f"{stem}.reports.jsonl"


def _plant(exp: Path, stems: list[str], marker: Path) -> list[Path]:
    """Every pickle Ray reads on a restore, and a few it might: each one's unpickling makes ``marker``."""
    bad = _evil(marker)
    fallback = {"_type": "CLOUDPICKLE_FALLBACK", "value": bad.hex()}  # what Ray's state JSON may embed
    planted = [p for p in exp.parent.rglob("*.pkl")]
    for p in planted:
        p.write_bytes(bad)
    for name in ("tuner.pkl", "trainable.pkl", "searcher-state-2099-01-01_00-00-00.pkl"):
        (exp / name).write_bytes(bad)
        planted.append(exp / name)
    for p in list(exp.glob("experiment_state-*.json")) + list(exp.glob("basic-variant-state-*.json")):
        p.write_text(json.dumps({"trial_data": [[fallback, fallback]], "runner_data": fallback}))
        planted.append(p)
    for stem in stems:
        for d in [exp / stem, *sorted((exp / stem).glob("checkpoint_*"))]:
            for name in ("error.pkl", "params.pkl", "_dict_checkpoint.pkl"):
                (d / name).write_bytes(bad)
                planted.append(d / name)
    # a folder named as the first resume would be: it is never used (nor its pickles read)
    squat = exp.parent / f"{exp.name}-resume1"
    (squat / stems[0]).mkdir(parents=True)
    for p in (squat / "tuner.pkl", squat / stems[0] / "error.pkl"):
        p.write_bytes(bad)
        planted.append(p)
    return planted


@pytest.fixture
def resumable(interrupted, tmp_path):
    return _copy(interrupted, tmp_path)


def test_resume_never_unpickles_run_state_and_continues(cli, resumable, tmp_path, ray_cluster):
    """Malicious pickles everywhere Ray keeps experiment state: none runs; the trial whose log
    records its last epoch is not rerun, the other goes on from its epoch-1 checkpoint."""
    run, exp, plan = resumable
    marker = tmp_path / "PWNED"
    stems = _stems(plan)
    assert len(stems) == 2 and (exp / "tuner.pkl").is_file()  # what Tuner.restore would have read
    planted = _plant(exp, stems, marker)
    assert len(planted) >= 12
    done, going = stems
    done_row = {"epoch": 2, "epochs": 2, "test_top1": 0.125, "test_top5": 0.5, "wall_s": 1.5, "restores": 0}
    with open(_log(exp, done), "a") as f:  # as if it had finished before the driver died
        f.write(json.dumps(done_row) + "\n")

    code, _, err = cli("train", run, "--resume", "--quiet")
    assert code == 0, err
    assert not marker.exists()
    assert "resuming 1 of 2 trial(s) (1 finished)" in err and f"{exp.name}-resume2" in err
    rows = {r["name"]: r for r in json.loads((run / "train" / "results.json").read_text())["results"]}
    by_stem = {f"{r['name']}-s0": r for r in rows.values()}
    assert all(r["failed"] == [] for r in rows.values())
    assert by_stem[done]["test_top1"] == 0.125 and by_stem[done]["wall_s"] == 1.5
    assert [json.loads(x)["epoch"] for x in _log(exp, done).read_text().splitlines()] == [1, 2]  # not rerun
    reports = [json.loads(x) for x in _log(exp, going).read_text().splitlines()]
    assert [x["epoch"] for x in reports] == [1, 2] and [x["restores"] for x in reports] == [0, 1]
    assert by_stem[going]["test_top1"] == reports[-1]["test_top1"]
    # the resumed trial ran, and checkpointed, in the fresh experiment only
    assert sorted(p.name for p in (exp.parent / f"{exp.name}-resume2" / going).glob("checkpoint_*"))
    assert not (exp.parent / f"{exp.name}-resume1" / going).exists()


def test_a_malicious_checkpoint_is_refused_in_one_line(cli, resumable, tmp_path):
    import torch

    run, exp, plan = resumable
    marker = tmp_path / "PWNED"
    stem = _stems(plan)[0]
    (ckpt,) = sorted((exp / stem).glob("checkpoint_*/state.pt"))
    state = torch.load(ckpt, weights_only=True)
    torch.save(dict(state, extra=_Touch(marker)), ckpt)
    code, _, err = cli("train", run, "--resume", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert str(ckpt) in err and "could run code" in err and "delete its folder" in err
    assert not marker.exists()
    assert not list(exp.parent.glob("*-resume*"))  # refused before any experiment started


@pytest.mark.parametrize("damage, needle", [
    (lambda st: b"PK\x03\x04 cut short", "truncated or not a torch file"),
    (lambda st: dict(st, epoch=2), "epoch=2"),
    (lambda st: dict(st, model=dict(list(st["model"].items())[:3])), "does not fit"),
    (lambda st: [st["model"]], "holds list"),
], ids=["truncated", "finished-epoch", "foreign-model", "not-a-dict"])
def test_a_damaged_checkpoint_is_refused_in_one_line(cli, resumable, damage, needle):
    import torch

    run, exp, plan = resumable
    (ckpt,) = sorted((exp / _stems(plan)[1]).glob("checkpoint_*/state.pt"))
    new = damage(torch.load(ckpt, weights_only=True))
    if isinstance(new, bytes):
        ckpt.write_bytes(new)
    else:
        torch.save(new, ckpt)
    code, _, err = cli("train", run, "--resume", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert needle in err and str(ckpt) in err


@pytest.mark.parametrize("edit, needle", [
    (lambda p: p.update(experiment="../../elsewhere"), "experiment='../../elsewhere'"),
    (lambda p: p.update(cpus_per_trial=float("nan")), "cpus_per_trial=nan"),
    (lambda p: p.update(extra=1), "extra=1 is not accepted"),
    (lambda p: p["trials"][0].update(epochs="2"), "trials[0].epochs='2'"),
    (lambda p: p["trials"][1].update(seed=-1), "trials[1].seed=-1"),
    (lambda p: p["trials"][0]["recipe"].update(lr=float("inf")), "trials[0].recipe.lr"),
    (lambda p: p["trials"][0]["recipe"].update(bogus=1), "unknown config key trials[0].recipe.bogus"),
    (lambda p: p["trials"][0].update(log_dir="/tmp"), "trials[0].log_dir"),
    (lambda p: p["trials"][0].update(name="../x"), "trials[0].name='../x'"),
    (lambda p: p["trials"][0].update(name=["x"]), "trials[0].name=['x']"),
    (lambda p: p["trials"][0].update(kind="l1"), "trials[0].kind='l1'"),
    (lambda p: p["trials"][0]["channels"].update(stem=10**9), "trials[0]: channels.stem"),
    (lambda p: p["candidates"][0].update(name="a/b"), "candidates[0].name='a/b'"),
    (lambda p: p["config"]["recipe"].update(batch_size=0), "config.recipe.batch_size=0"),
    (lambda p: p.pop("trials"), "trials=None"),
], ids=["experiment-path", "nan-cpus", "unknown-key", "epochs-type", "negative-seed", "inf-lr", "unknown-recipe-key",
        "log-dir", "trial-name-path", "trial-name-list", "kind-mismatch", "huge-channels", "candidate-name-path",
        "config-batch-size", "trials-missing"])
def test_a_bad_plan_is_refused_in_one_line_naming_file_and_field(cli, resumable, edit, needle):
    run, exp, plan = resumable
    edit(plan)
    path = run / "train" / "plan.json"
    path.write_text(json.dumps(plan))
    code, _, err = cli("train", run, "--resume", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert needle in err and str(path) in err, err
    assert not list(exp.parent.glob("*-resume*"))


def test_a_bad_report_line_is_refused_and_a_torn_last_line_ignored(cli, resumable):
    run, exp, plan = resumable
    done, other = _stems(plan)
    row = {"epoch": 2, "test_top1": 0.25, "test_top5": 0.75, "wall_s": 2.0}
    with open(_log(exp, done), "a") as f:
        f.write(json.dumps(row) + "\n")
    with open(_log(exp, other), "a") as f:
        f.write(json.dumps(dict(row, test_top1=0.5)) + "\n" + '{"epoch": 2, "test_to')  # cut short by a kill
    code, _, err = cli("train", run, "--resume", "--quiet")
    assert code == 0, err
    assert "nothing to resume" in err  # both finished: Ray is not even started
    rows = json.loads((run / "train" / "results.json").read_text())["results"]
    assert sorted(r["test_top1"] for r in rows) == [0.25, 0.5]

    with open(_log(exp, done), "a") as f:
        f.write(json.dumps(dict(row, test_top1=float("nan"))) + "\n")
    code, _, err = cli("train", run, "--resume", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "test_top1=nan" in err and "line 3" in err
