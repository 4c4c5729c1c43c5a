"""`metaprune search`, `pareto` and `export` on a real smoke run: files, resume after kill -9, the
lock, Ray actors, the front and exports."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from metaprune.units import format_count
from pruningnet.cost import cost_model

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "search" / "smoke.yaml")


def copy_run(smoke_run: Path, dest: Path) -> Path:
    shutil.copytree(smoke_run, dest, ignore=shutil.ignore_patterns("search", "checkpoints"))
    return dest


@pytest.fixture(scope="module")
def budget(smoke_run):
    from metaprune.store.runs import open_run

    space = open_run(smoke_run).space
    cm = cost_model(space)
    lo, hi = int(cm.macs(space.min_channels())[0]), int(cm.macs(space.max_channels())[0])
    return {"lo": lo, "hi": hi, "macs": lo + (hi - lo) // 10}


@pytest.fixture(scope="module")
def searched(smoke_run, budget, tmp_path_factory):
    """One uninterrupted smoke search; the reference the other searches must reproduce."""
    from metaprune.cli.main import main

    run = copy_run(smoke_run, tmp_path_factory.mktemp("search") / "a")
    assert main(["search", str(run), "--max-macs", str(budget["macs"]), "-c", SMOKE, "--quiet"]) == 0
    return run


def read(run: Path, name: str) -> dict:
    return json.loads((run / "search" / name).read_text())


def test_search_writes_candidates_logbook_and_front(searched, budget):
    cands = read(searched, "candidates.json")["candidates"]
    assert len(cands) == 8 + 2 * 8
    assert len({json.dumps(c["channels"], sort_keys=True) for c in cands}) == len(cands)
    assert all(c["macs"] <= budget["macs"] for c in cands)
    assert all(0.0 <= c["top1"] <= 1.0 for c in cands)
    log = read(searched, "logbook.json")
    assert [r["gen"] for r in log["logbook"]] == [0, 1, 2] and log["finished"] is True
    front = read(searched, "front.json")["front"]
    assert front and set(front[0]) >= {"id", "channels", "macs", "params", "top1"}
    for c in front:  # no candidate beats a front member on both top-1 and MACs
        assert not any(o["top1"] >= c["top1"] and o["macs"] <= c["macs"]
                       and (o["top1"], o["macs"]) != (c["top1"], c["macs"]) for o in cands)
    lock = searched / "search" / "search.lock"  # released: the file stays (flock), empty
    assert lock.read_text() == ""
    import fcntl
    with open(lock) as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_kill_minus_9_then_resume_ends_on_the_same_front(searched, smoke_run, budget, tmp_path, cli):
    run = copy_run(smoke_run, tmp_path / "b")
    cmd = [sys.executable, "-c", "from metaprune.cli.main import run; run()", "search", str(run),
           "--max-macs", str(budget["macs"]), "-c", SMOKE, "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state_file = run / "search" / "state.json"
    try:
        deadline = time.monotonic() + 300
        while not state_file.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the first generation was never written"
            time.sleep(0.1)
        # A second search on the same run while the first runs is refused.
        code, _, err = cli("search", run, "--resume")
        assert code == 2 and "another search" in err and f"pid {proc.pid}" in err
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    state = json.loads(state_file.read_text())
    assert state["evolution"]["finished"] is False
    done = len(state["evolution"]["candidates"])
    assert done < 24
    code, out, err = cli("search", run, "--resume", "--json")
    assert code == 0, err
    assert json.loads(out)["new_evaluations"] == 24 - done
    assert read(run, "front.json")["front"] == read(searched, "front.json")["front"]
    assert read(run, "candidates.json")["candidates"] == read(searched, "candidates.json")["candidates"]


def test_ray_actor_evaluation_matches_local(searched, smoke_run, budget, tmp_path, ray_cluster, cli):
    run = copy_run(smoke_run, tmp_path / "c")
    code, out, err = cli("search", run, "--max-macs", budget["macs"], "-c", SMOKE, "--workers", 2,
                         "--quiet")
    assert code == 0, err
    assert ray_cluster.is_initialized()  # reused, not shut down
    assert read(run, "candidates.json")["candidates"] == read(searched, "candidates.json")["candidates"]


def test_pareto_json_and_png(searched, cli):
    code, out, err = cli("pareto", searched, "--json", "--baselines", 2)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["front"] == read(searched, "front.json")["front"]
    assert len(doc["baselines"]) == 2 and all(0 <= b["top1"] <= 1 for b in doc["baselines"])
    png = Path(doc["plot"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = cli("pareto", searched, "--baselines", 2)
    assert code == 0 and "proxy_top1" in out.splitlines()[0]
    assert len(out.splitlines()) >= len(doc["front"]) + 1


def test_export_json_and_onnx_with_and_without_weights(searched, budget, tmp_path, cli):
    import onnxruntime as ort

    from metaprune.store.specfile import load_spec

    cands = read(searched, "candidates.json")["candidates"]
    cap = sorted(c["macs"] for c in cands)[len(cands) // 2]
    best = max((c for c in cands if c["macs"] <= cap), key=lambda c: (c["top1"], -c["macs"]))
    code, _, err = cli("export", searched, "--flops", cap, "-o", tmp_path / "pick.json")
    assert code == 0, err
    spec = load_spec(tmp_path / "pick.json")
    assert spec.channels == best["channels"]
    assert spec.provenance["proxy_top1"] == best["top1"] and spec.provenance["seed"] == 0
    assert spec.provenance["search"]["strategy"] == "constrained"
    assert spec.metrics["macs"] == best["macs"]

    outs = {}
    for weights in (False, True):
        f = tmp_path / f"m{int(weights)}.onnx"
        args = ["export", searched, "--id", best["id"], "-o", f, "--format", "onnx"]
        code, _, err = cli(*args, *(["--with-weights"] if weights else []))
        assert code == 0, err
        assert load_spec(f.with_name(f.name + ".json")).channels == best["channels"]
        x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
        outs[weights] = ort.InferenceSession(str(f)).run(None, {"input": x})[0]
        assert outs[weights].shape == (2, 10)
    assert not np.allclose(outs[False], outs[True])

    code, _, err = cli("export", searched, "--id", 10_000, "-o", tmp_path / "x.json")
    assert code == 2 and "--id 10000" in err
    code, _, err = cli("export", searched, "--id", 0, "-o", tmp_path / "x.json", "--with-weights")
    assert code == 2 and "--with-weights" in err


def test_bad_budgets_exit_2_with_one_line(smoke_run, budget, tmp_path, cli):
    run = copy_run(smoke_run, tmp_path / "d")
    cases = [(["--max-macs", budget["lo"] - 1], "below the smallest"),
             (["--flops", budget["hi"] + 1], "above the largest"),
             (["--max-macs", "12Q"], "is not a count"),
             (["--max-params", "-5"], "must be positive"),
             (["--max-latency-ms", 3], "metaprune latency build"),
             ([], "needs a budget")]
    for args, needle in cases:
        code, out, err = cli("search", run, *args, "-c", SMOKE)
        assert code == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("metaprune: error:")
        assert needle in err, err
    code, _, err = cli("search", run, "--max-macs", budget["lo"] - 1)
    assert f"{format_count(budget['lo'])} MACs to {format_count(budget['hi'])} MACs" in err
    assert not (run / "search" / "state.json").exists()


def test_existing_search_is_not_replaced_silently(searched, budget, cli):
    code, _, err = cli("search", searched, "--max-macs", budget["macs"], "-c", SMOKE)
    assert code == 2 and "--resume" in err and "--overwrite" in err
    code, _, err = cli("search", searched, "--resume", "--set", "generations=5")
    assert code == 2 and "--resume" in err



def test_ray_requests_the_cluster_cannot_meet_are_refused_not_queued(smoke_run, budget, tmp_path, ray_cluster,
                                                                     cli, tree_hash):
    """Ray queues an actor or trial it can never place without an error; we refuse it in one line."""
    from metaprune.store.runs import open_run
    from metaprune.store.specfile import save_spec
    from pruningnet import make_spec

    run = copy_run(smoke_run, tmp_path / "r")
    before = tree_hash(run)
    code, out, err = cli("search", run, "--max-macs", budget["macs"], "-c", SMOKE, "--quiet", "--workers", 5)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--workers 5 needs 5 CPU(s) (1 per actor: one per torch thread) but the Ray cluster has 2" in err, err
    # issue 17: an actor reserves one CPU per torch thread, so 2 actors x 2 threads cannot share 2 CPUs
    code, out, err = cli("search", run, "--max-macs", budget["macs"], "-c", SMOKE, "--quiet", "--workers", 2,
                         "--set", "eval.threads=2")
    assert code == 2 and "--workers 2 needs 4 CPU(s) (2 per actor: one per torch thread)" in err, err
    assert tree_hash(run) == before and ray_cluster.is_initialized()
    sp = open_run(run).space
    spec = save_spec(make_spec(sp, sp.max_channels()), tmp_path / "s.json")
    code, _, err = cli("train", run, "--spec", spec, "--recipe", "smoke", "--cpus-per-trial", 3)
    assert code == 2 and "--cpus-per-trial 3 / --gpus-per-trial 0 needs 3 CPU(s) (for one trial)" in err, err
    assert not (run / "train" / "plan.json").exists()


def test_every_uniform_baseline_is_weakly_dominated_by_the_front(searched, cli):
    """Searches start from every on-grid uniform vector that fits (seed_uniform), so no uniform
    network the proxy scores higher sits above the front."""
    code, out, err = cli("pareto", searched, "--json", "--baselines", 6)
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["baselines"]) >= 2
    for b in doc["baselines"]:
        assert any(f["macs"] <= b["macs"] and f["top1"] >= b["top1"] for f in doc["front"]), b


def test_seed_vectors_are_the_budgets_uniform_network_and_on_grid_criterion_specs(smoke_run, budget, tmp_path):
    from metaprune.store.runs import open_run
    from metaprune.search.runner import seed_vectors
    from metaprune.store.specfile import save_spec
    from pruningnet.spec import make_spec

    run = open_run(copy_run(smoke_run, tmp_path / "s"))
    space = run.space
    _, ch, _ = cost_model(space).grid_uniform_for_budget(budget["macs"])
    assert seed_vectors(run, {"macs": budget["macs"]}) == [tuple(ch[u] for u in space.unit_names)]
    on_grid = {u.name: u.choices[len(u.choices) // 2] for u in space.units}
    off_grid = {**on_grid, space.units[0].name: space.units[0].choices[0] + 1}
    (run.path / "baselines").mkdir(exist_ok=True)
    save_spec(make_spec(space, on_grid), run.path / "baselines" / "l1-1M.json")
    save_spec(make_spec(space, off_grid), run.path / "baselines" / "bn-1M.json")
    (run.path / "baselines" / "report.json").write_text("{}")  # not a spec: skipped
    assert seed_vectors(run, {}) == [tuple(on_grid[u] for u in space.unit_names)]


def test_a_loss_scored_pareto_search_draws_and_checks_its_front_by_loss(smoke_run, tmp_path, cli):
    """``eval.score: loss``: the front is chosen by minus the loss, the baselines are scored the same
    way, no uniform network has a lower loss at fewer MACs than the front, and the plot is drawn."""
    run = copy_run(smoke_run, tmp_path / "loss")
    code, _, err = cli("search", run, "-c", SMOKE, "--strategy", "pareto", "--set", "eval.score=loss",
                       "--set", "generations=2", "--quiet")
    assert code == 0, err
    code, out, err = cli("pareto", run, "--json", "--baselines", 3)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["score"] == "loss" and all(abs(f["score"] + f["loss"]) < 1e-5 for f in doc["front"])
    assert len(doc["baselines"]) >= 2 and all("loss" in b for b in doc["baselines"])
    for b in doc["baselines"]:
        assert any(f["macs"] <= b["macs"] and f["loss"] <= b["loss"] + 1e-6 for f in doc["front"]), b
    assert Path(doc["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
