"""Install as users install: a wheel built from the repository, used without the checkout."""
import json
import os
import shutil
import subprocess
import sys
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_wheel_ships_configs_and_runs_the_pipeline_outside_the_checkout(smoke_run, tmp_path):
    """Build the wheel, install it with --no-deps into a target directory that shadows the editable
    install, then run from a directory with no checkout: named configs (-c smoke) and
    quickstart --smoke (on a copy of the session's meta-trained run: search, front, export, scratch
    training of the pick and its uniform baseline on Ray, report) must work."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", REPO, "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels)], check=True, capture_output=True)
    (whl,) = wheels.glob("metaprune-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    for cfg in ("smoke.yaml", "quickstart.yaml", "search/smoke.yaml", "train/smoke.yaml"):
        assert f"metaprune/configs/{cfg}" in names, cfg
    for f in ("index.html", "app.js", "style.css", "vendor/plotly-basic.min.js", "vendor/plotly-LICENSE.txt"):
        assert f"metaprune/service/static/{f}" in names, f  # `metaprune serve`'s page, no CDN
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(whl)],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "2"}

    def metaprune(*args):
        return subprocess.run([sys.executable, "-m", "metaprune.cli", *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True)

    where = subprocess.run([sys.executable, "-c", "import metaprune; print(metaprune.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where  # the wheel, not the checkout
    r = metaprune("train-pruningnet", "-c", "smoke", "--run-dir", "mini", "--quiet", "--set", "train.max_steps=2")
    assert r.returncode == 0, r.stderr
    assert (elsewhere / "mini" / "pruningnet.pt").is_file()
    run = elsewhere / "qs"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("search", "train", "exports"))
    r = metaprune("quickstart", "--smoke", "--run-dir", "qs")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "reusing the trained PruningNet" in r.stderr
    front = json.loads((run / "search" / "front.json").read_text())["front"]
    assert front and (run / "search" / "pareto.png").is_file()
    best = json.loads((run / "exports" / "best.json").read_text())
    assert best["format"] == "metaprune.subnet/1" and best["space"] == "mobilenet_v2"
    results = json.loads((run / "train" / "results.json").read_text())["results"]
    assert sorted(x["kind"] for x in results) == ["baseline", "searched"]
    base = next(x for x in results if x["kind"] == "baseline")
    searched = next(x for x in results if x["kind"] == "searched")
    assert base["macs"] <= searched["macs"]
    assert "run directory: qs" in r.stdout and "--smoke checks the install" in r.stdout
