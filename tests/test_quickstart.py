import json
import shutil


def test_quickstart_smoke_runs_the_whole_pipeline(smoke_run, ray_cluster, cli, tmp_path):
    """quickstart --smoke on an already meta-trained run: search, front, export, scratch training
    of the pick and its uniform baseline on Ray, report."""
    run = tmp_path / "qs"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("search", "train", "exports"))
    code, out, err = cli("quickstart", "--smoke", "--run-dir", run)
    assert code == 0, err
    assert "reusing the trained PruningNet" in err
    front = json.loads((run / "search" / "front.json").read_text())["front"]
    assert front and (run / "search" / "pareto.png").is_file()
    best = json.loads((run / "exports" / "best.json").read_text())
    assert best["format"] == "metaprune.subnet/1" and best["space"] == "mobilenet_v2"
    results = json.loads((run / "train" / "results.json").read_text())["results"]
    kinds = sorted(r["kind"] for r in results)
    assert kinds == ["baseline", "searched"]
    base = next(r for r in results if r["kind"] == "baseline")
    searched = next(r for r in results if r["kind"] == "searched")
    assert base["macs"] <= searched["macs"]
    assert f"run directory: {run}" in out and "--smoke checks the install" in out


def test_quickstart_rejects_bad_budget_fraction(cli):
    code, _, err = cli("quickstart", "--budget-fraction", "2")
    assert code == 2 and "--budget-fraction" in err and len(err.strip().splitlines()) == 1
