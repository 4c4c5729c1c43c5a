"""CLI integrity (issue 27): every file in a run directory is treated as written by an attacker.

A table of refusals, each run in-process against its own copy of one searched run (made once per
module; weights are hard links, every other file a copy), damaged as the case says: the command
exits 2 with exactly one error line naming the file or value (the only other line allowed is
``train-pruningnet``'s ``run: ...`` banner), no traceback, and the run is byte-identical after.
Classes: reads that would block (FIFO, socket, symbolic link, non-UTF-8), YAML anchors and aliases,
one writer per run (the run lock), numbers out of range, damaged run files (one schema per kind).
Then faults that need a filesystem: a full disk during meta-training, search and export (a small
tmpfs; needs root, skipped elsewhere with the reason).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def clone(src: Path, dst: Path) -> Path:
    """A copy of a run whose weights are hard links (never written in place: see :func:`put`)."""
    def copy(s, d):
        return os.link(s, d) if s.endswith(".pt") else shutil.copy2(s, d)
    shutil.copytree(src, dst, copy_function=copy)
    return dst


def put(path: Path, data: bytes | str) -> None:
    """Replace ``path`` with new contents (a new inode: a hard-linked original stays as it was)."""
    if os.path.lexists(path):
        os.unlink(path)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def edit_json(rel: str, fn):
    def damage(run: Path, w: dict) -> None:
        doc = json.loads((run / rel).read_text())
        fn(doc)
        put(run / rel, json.dumps(doc))
    return damage


def edit_pt(rel: str, fn):
    def damage(run: Path, w: dict) -> None:
        sd = torch.load(run / rel, weights_only=True)
        fn(sd)
        os.unlink(run / rel)
        torch.save(sd, run / rel)
    return damage


def fifo(rel: str):
    def damage(run: Path, w: dict) -> None:
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(run / rel):
            os.unlink(run / rel)
        os.mkfifo(run / rel)
    return damage


def sock(rel: str):
    def damage(run: Path, w: dict) -> None:
        os.unlink(run / rel)
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(run / rel))
        w.setdefault("keep", []).append(s)
    return damage


def link(rel: str, target: str):
    def damage(run: Path, w: dict) -> None:
        os.unlink(run / rel)
        os.symlink(target, run / rel)
    return damage


def text(rel: str, data: bytes | str):
    def damage(run: Path, w: dict) -> None:
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        put(run / rel, data)
    return damage


def nan_first(sd: dict) -> None:
    key = next(k for k, v in sd.items() if v.is_floating_point())
    sd[key] = sd[key].clone()
    sd[key].view(-1)[0] = float("nan")


def state(fn):
    return edit_json("search/state.json", fn)


def table(entries: dict, **key) -> bytes:
    k = {"device": "cpu", "device_name": "x", "threads": 1, "batch_size": 1, "torch": torch.__version__, **key}
    return json.dumps({"format": "metaprune.latency/1", "key": k, "entries": entries}).encode()


def nothing(run: Path, w: dict) -> None:
    pass


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@pytest.fixture(scope="module")
def world(smoke_run, tmp_path_factory):
    """A searched run with its checkpoint, a spec exported from it and a folder of bad files."""
    from metaprune.cli.main import main

    base = tmp_path_factory.mktemp("integrity")
    run = clone(smoke_run, base / "run")
    assert main(["search", str(run), "-c", "smoke", "--strategy", "pareto", "--set", "generations=1",
                 "--set", "eval.max_images=64", "--quiet"]) == 0
    spec = base / "spec.json"
    assert main(["export", str(run), "--id", "0", "-o", str(spec)]) == 0
    f = base / "files"
    f.mkdir()
    os.mkfifo(f / "fifo.json")
    os.mkfifo(f / "fifo.yaml")
    (f / "bomb.yaml").write_text("seed: 0\nspace:\n  name: mobilenet_v2\n  options:\n" +
                                 "".join("    " + ln + "\n" for ln in BOMB.splitlines()))
    (f / "bomb_search.yaml").write_text("population: &p 4\nparents: *p\n")
    (f / "merge.yaml").write_text("base: &b {lr: 0.1}\nrecipe:\n  <<: *b\n")
    (f / "epochs.yaml").write_text("train:\n  epochs: 100000000000000000000000000\n")
    (f / "latin1_table.json").write_bytes(b'{"format": "metaprune.latency/1", "key": "caf\xe9"}')
    (f / "nan_table.json").write_bytes(table({"conv": float("nan")}))
    (f / "neg_table.json").write_bytes(table({"conv": -1.5}))
    from pruningnet import build_model
    from pruningnet.cost import cost_model

    from metaprune.baselines.full import full_spec
    from metaprune.store.runs import open_run

    space = open_run(run).space
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                for k, v in build_model(full_spec(space)).state_dict().items()}, f / "nan_full.pt")
    t = base / "scratch"
    t.mkdir()
    budget = str(int(cost_model(space).macs(space.max_channels())[0]) // 2)
    return {"run": run, "spec": spec, "f": f, "t": t, "budget": budget}


def nan_full_network(run: Path, w: dict) -> None:
    """A cached full network of NaN weights beside an earlier, good baseline spec."""
    from pruningnet import build_model

    from metaprune.baselines import baseline_path
    from metaprune.baselines.full import _key, full_spec
    from metaprune.store.runs import open_run
    from metaprune.training import load_train_config

    r = open_run(run)
    cfg = load_train_config("smoke", {}, run)
    key = _key(r.space, cfg, cfg.seed, 0.0)
    sd = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
          for k, v in build_model(full_spec(r.space)).state_dict().items()}
    (run / "baselines").mkdir()
    torch.save(sd, run / "baselines" / f"full-{key}.pt")
    put(run / "baselines" / f"full-{key}.json", json.dumps({"file": "x.pt", "test_top1": 0.9}))
    put(baseline_path(run, "l1", int(w["budget"]), 0, 1), Path(w["spec"]).read_text())  # an earlier, good spec


def bad_checkpoint(fn):
    return edit_pt("checkpoints/last.pt", fn)


def _step(sd: dict, v) -> None:
    sd["step"] = v


TRAIN_NEW = ["train-pruningnet", "-c", "smoke", "--run-dir", "{t}/new", "--quiet"]
EVALUATE = ["evaluate", "{run}", "--uniform", "0.5"]
RESUME = ["train-pruningnet", "--resume", "{run}", "--quiet"]
SEARCH_NEW = ["search", "{run}", "-c", "smoke", "--strategy", "pareto", "--overwrite", "--quiet"]
LATENCY_SEARCH = ["search", "{run}", "-c", "smoke", "--max-latency-ms", "5", "--overwrite", "--quiet"]

CASES = [
    # reads that would block, or show a file from elsewhere: refused before they are read
    pytest.param(fifo("search/state.json"), ["search", "{run}", "--resume"], "a FIFO", id="fifo-state"),
    pytest.param(fifo("space.json"), EVALUATE, "a FIFO", id="fifo-space"),
    pytest.param(fifo("config.yaml"), ["pareto", "{run}", "--baselines", "0"], "a FIFO", id="fifo-config"),
    pytest.param(fifo("search/candidates.json"), ["export", "{run}", "--id", "0", "-o", "{t}/x.json"], "a FIFO",
                 id="fifo-candidates"),
    pytest.param(fifo("split.json"), EVALUATE, "a FIFO", id="fifo-split"),
    pytest.param(fifo("pruningnet.pt"), EVALUATE, "a FIFO", id="fifo-pruningnet"),
    pytest.param(fifo("checkpoints/last.pt"), RESUME, "a FIFO", id="fifo-checkpoint"),
    pytest.param(fifo("metrics.jsonl"), RESUME, "a FIFO", id="fifo-metrics"),
    pytest.param(fifo("latency/table.json"), LATENCY_SEARCH, "a FIFO",
                 id="fifo-latency-table"),
    pytest.param(sock("search/front.json"), ["pareto", "{run}", "--baselines", "0"], "a socket", id="socket-front"),
    pytest.param(link("search/front.json", "/etc/passwd"), ["pareto", "{run}", "--baselines", "0"],
                 "symbolic link", id="symlink-front"),
    pytest.param(link("space.json", "/dev/zero"), EVALUATE, "symbolic link", id="symlink-space-to-device"),
    pytest.param(nothing, ["cost", "{f}/fifo.json"], "a FIFO", id="fifo-spec-argument"),
    pytest.param(nothing, ["train-pruningnet", "-c", "{f}/fifo.yaml", "--run-dir", "{t}/new"], "a FIFO",
                 id="fifo-config-argument"),
    pytest.param(nothing, ["latency", "check", "{spec}", "--table", "/dev/zero"], "character device",
                 id="device-table-argument"),
    pytest.param(text("latency/table.json", b'{"format": "caf\xe9"}'), LATENCY_SEARCH, "UTF-8",
                 id="latin1-latency-table"),
    pytest.param(nothing, ["latency", "check", "{spec}", "--table", "{f}/latin1_table.json"], "UTF-8",
                 id="latin1-table-argument"),
    # YAML anchors and aliases: refused in every user YAML
    pytest.param(nothing, TRAIN_NEW[:1] + ["-c", "{f}/bomb.yaml", "--run-dir", "{t}/new"], "alias",
                 id="alias-bomb-config"),
    pytest.param(nothing, TRAIN_NEW + ["--set", "space.options={{a: &x [1, 2], b: *x}}"], "alias",
                 id="alias-set-value"),
    pytest.param(text("config.yaml", BOMB), EVALUATE, "alias", id="alias-bomb-run-config"),
    pytest.param(nothing, ["search", "{run}", "-c", "{f}/bomb_search.yaml", "--overwrite"], "alias",
                 id="alias-search-config"),
    pytest.param(nothing, ["train", "{run}", "--spec", "{spec}", "--recipe", "{f}/merge.yaml"], "alias",
                 id="merge-key-recipe"),
    # numbers out of range
    pytest.param(nothing, TRAIN_NEW + ["--set", "seed=1180591620717411303424"], "seed=1180591620717411303424",
                 id="seed-2**70"),
    pytest.param(nothing, TRAIN_NEW + ["--set", "seed=-1"], "seed=-1", id="seed-negative"),
    pytest.param(nothing, SEARCH_NEW + ["--set", "seed=4294967296"], "seed=4294967296", id="search-seed-2**32"),
    pytest.param(nothing, SEARCH_NEW + ["--set", "eval.threads=1000000"], "eval.threads=1000000",
                 id="search-threads-1e6"),
    pytest.param(nothing, TRAIN_NEW[:1] + ["-c", "{f}/epochs.yaml", "--run-dir", "{t}/new"], "train.epochs=",
                 id="epochs-1e26"),
    pytest.param(nothing, TRAIN_NEW + ["--set", "train.threads=100000"], "train.threads=100000", id="threads-1e5"),
    pytest.param(nothing, TRAIN_NEW + ["--set", "model.hidden=1000000"], "model.hidden=1000000", id="hidden-1e6"),
    pytest.param(nothing, TRAIN_NEW + ["--set", "train.spike_factor=1e31"], "train.spike_factor", id="float-1e31"),
    pytest.param(nothing, ["train", "{run}", "--spec", "{spec}", "--set", "seed=-1"], "seed=-1", id="recipe-seed"),
    pytest.param(nothing, ["train", "{run}", "--spec", "{spec}", "--set", "recipe.epochs=10000000"],
                 "recipe.epochs=10000000", id="recipe-epochs-1e7"),
    pytest.param(nothing, ["search", "{run}", "--max-latency-ms", "inf"], "inf", id="latency-budget-inf"),
    pytest.param(nothing, ["latency", "build", "{run}", "--threads", "1000000"], "--threads", id="latency-threads"),
    pytest.param(nothing, ["evaluate", "{run}", "--uniform", "0.5", "--bn-batches", "1000000000000"],
                 "--bn-batches", id="bn-batches-1e12"),
    pytest.param(nothing, ["baseline", "{run}", "--criteria", "l1", "--max-macs", "{budget}", "--seeds",
                           "1180591620717411303424"], "--seeds", id="baseline-seeds-2**70"),
    pytest.param(nothing, ["baseline", "{run}", "--criteria", "l1", "--max-macs", "{budget}", "--slimming", "1e300"],
                 "--slimming", id="baseline-slimming-1e300"),
    pytest.param(nothing, ["train-pruningnet", "--resume", "{run}", "--workers", "1000000"], "--workers",
                 id="workers-1e6"),
    pytest.param(nothing, ["train-pruningnet", "--resume", "{run}", "--workers", "1", "--gpus-per-worker", "nan"],
                 "--gpus-per-worker", id="gpus-per-worker-nan"),
    # damaged run files: one line naming the file and the field
    pytest.param(state(lambda d: d["evolution"].__setitem__("candidates", "x")), ["search", "{run}", "--resume"],
                 "evolution.candidates", id="state-candidates-type"),
    pytest.param(state(lambda d: d["search"]["proxy"].__setitem__("threads", 1000000)),
                 ["export", "{run}", "--id", "0", "--with-weights", "--format", "onnx", "-o", "{t}/x.onnx"],
                 "search.proxy.threads", id="state-proxy-threads"),
    pytest.param(state(lambda d: d["evolution"]["population"].__setitem__(0, [i % 2 for i in range(25)])),
                 ["search", "{run}", "--resume"], "evolution: population[0] is a vector",
                 id="state-population-unknown"),
    pytest.param(state(lambda d: d["evolution"]["rng"].__setitem__("numpy", {"bit_generator": "MT"})),
                 ["search", "{run}", "--resume"], "evolution.rng: the saved RNG states do not restore", id="state-rng"),
    pytest.param(state(lambda d: d["evolution"].__setitem__("seed", 7)), ["search", "{run}", "--resume"],
                 "evolution.seed", id="state-seed-mismatch"),
    pytest.param(state(lambda d: d["search"]["config"].__setitem__("population", -3)),
                 ["search", "{run}", "--resume"], "search.config.population", id="state-config"),
    pytest.param(state(lambda d: d["search"].__setitem__("budgets", {"macs": float("nan")})),
                 ["search", "{run}", "--resume"], "search.budgets.macs", id="state-budget-nan"),
    pytest.param(edit_json("search/candidates.json", lambda d: d["candidates"][0].pop("macs")),
                 ["export", "{run}", "--max-macs", "20M", "-o", "{t}/x.json"], "candidates[0].macs is missing",
                 id="candidate-without-macs"),
    pytest.param(edit_json("search/candidates.json", lambda d: d.__setitem__("candidates", [])),
                 ["export", "{run}", "--max-macs", "20M", "-o", "{t}/x.json"], "candidates=[]", id="empty-search"),
    pytest.param(edit_json("search/candidates.json", lambda d: d["candidates"][1].__setitem__("top1", float("nan"))),
                 ["export", "{run}", "--max-macs", "20M", "-o", "{t}/x.json"], "candidates[1].top1",
                 id="candidate-top1-nan"),
    pytest.param(edit_json("search/front.json", lambda d: d.__setitem__("front", [])),
                 ["pareto", "{run}", "--baselines", "0"], "front=[]", id="empty-front"),
    pytest.param(edit_json("search/front.json", lambda d: d["front"][0]["channels"].__setitem__("stem", "8")),
                 ["pareto", "{run}", "--baselines", "0"], "front[0].channels.stem", id="front-channel-type"),
    pytest.param(text("latency/table.json", table({"conv": float("nan")})), LATENCY_SEARCH, "entries.conv",
                 id="latency-nan"),
    pytest.param(text("latency/table.json", table({"conv": -1.5})), LATENCY_SEARCH, "entries.conv",
                 id="latency-negative"),
    pytest.param(text("latency/table.json", table({}, threads=1000000)), LATENCY_SEARCH, "key.threads",
                 id="latency-threads"),
    pytest.param(nothing, ["latency", "check", "{spec}", "--table", "{f}/nan_table.json"], "entries.conv",
                 id="latency-nan-argument"),
    pytest.param(nothing, ["latency", "check", "{spec}", "--table", "{f}/neg_table.json"], "entries.conv",
                 id="latency-negative-argument"),
    pytest.param(bad_checkpoint(lambda sd: _step(sd, -1)), RESUME, "step=-1", id="checkpoint-step-negative"),
    pytest.param(bad_checkpoint(lambda sd: _step(sd, 10**6)), RESUME, "step=1000000", id="checkpoint-step-beyond"),
    pytest.param(bad_checkpoint(lambda sd: _step(sd, "7")), RESUME, "step='7'", id="checkpoint-step-type"),
    pytest.param(bad_checkpoint(lambda sd: nan_first(sd["net"])), RESUME, "non-finite", id="checkpoint-nan"),
    pytest.param(bad_checkpoint(lambda sd: sd["guard"].__setitem__("ema", "x")), RESUME, "guard.ema",
                 id="checkpoint-guard"),
    pytest.param(edit_pt("pruningnet.pt", nan_first), EVALUATE, "non-finite", id="pruningnet-nan"),
    pytest.param(edit_pt("pruningnet.pt", nan_first), SEARCH_NEW, "non-finite", id="pruningnet-nan-search"),
    pytest.param(edit_json("split.json", lambda d: d.__setitem__("fingerprints", [1])), EVALUATE, "fingerprints",
                 id="split-fingerprints"),
    pytest.param(edit_json("space.json", lambda d: d.__setitem__("options", [])), EVALUATE, "options",
                 id="space-options"),
    pytest.param(text("config.yaml", "seed: -1\n"), EVALUATE, "seed=-1", id="run-config-seed"),
    pytest.param(nan_full_network, ["baseline", "{run}", "--criteria", "l1", "--max-macs", "{budget}"],
                 "non-finite", id="baseline-nan-cached-full"),
    pytest.param(nothing, ["baseline", "{run}", "--criteria", "l1", "--max-macs", "{budget}", "--full-checkpoint",
                           "{f}/nan_full.pt"], "non-finite", id="baseline-nan-full-checkpoint"),
]


def _fill(arg: str, w: dict) -> str:
    return arg.format(**{k: str(v) for k, v in w.items() if isinstance(v, (str, Path))})


def check_refusal(code: int, out: str, err: str, needle: str) -> str:
    """Exit 2, exactly one error line (beside train-pruningnet's ``run:`` banner), no traceback."""
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("run: ")]
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("metaprune: error:"), err
    assert "Traceback" not in err and "weights_only=False" not in err, err
    assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_the_table_is_large():
    assert len(CASES) >= 60


@pytest.mark.parametrize("damage, args, needle", CASES)
def test_refused_in_one_line_and_nothing_changed(world, tmp_path, cli, tree_hash, damage, args, needle):
    run = clone(world["run"], tmp_path / "run")
    w = {**world, "run": run}
    damage(run, w)
    before, scratch = tree_hash(run), sorted(p.name for p in world["t"].iterdir())
    check_refusal(*cli(*[_fill(a, w) for a in args]), needle=_fill(needle, w))
    assert tree_hash(run) == before, "the run directory changed"
    assert not (run / "search" / ".replaced").exists()
    assert sorted(p.name for p in world["t"].iterdir()) == scratch, "a file was left in the scratch folder"


# --- one writer per run -----------------------------------------------------------------------
LOCKED = [
    pytest.param(RESUME, id="train-pruningnet-resume"),
    pytest.param(["train-pruningnet", "-c", "smoke", "--run-dir", "{new}", "--quiet"], id="train-pruningnet-new"),
    pytest.param(SEARCH_NEW, id="search"),
    pytest.param(["search", "{run}", "--resume", "--quiet"], id="search-resume"),
    pytest.param(["baseline", "{run}", "--criteria", "l1", "--max-macs", "{budget}"], id="baseline"),
    pytest.param(["export", "{run}", "--id", "0", "-o", "{run}/exports/x.json"], id="export-into-run"),
    pytest.param(["train", "{run}", "--spec", "{spec}", "--epochs", "1"], id="train"),
    pytest.param(["latency", "build", "{run}", "--threads", "1", "--clock", "cpu"], id="latency-build-into-run"),
]


@pytest.mark.parametrize("args", LOCKED)
def test_a_second_writer_is_refused_naming_the_holder(world, tmp_path, cli, tree_hash, args):
    from metaprune.store.runlock import run_lock

    run = clone(world["run"], tmp_path / "run")
    new = tmp_path / "new"
    with run_lock(run, "holder-job"), run_lock(new, "holder-job", create=True):
        before = tree_hash(run), tree_hash(new)
        line = check_refusal(*cli(*[_fill(a, {**world, "run": run, "new": new}) for a in args]), needle="in use")
        assert f"holder-job (pid {os.getpid()} on {socket.gethostname()})" in line, line
        assert (tree_hash(run), tree_hash(new)) == before
    assert (run / "run.lock").read_bytes() == b""  # released: the file stays, empty


def test_readers_and_exports_elsewhere_take_no_lock(world, tmp_path, cli):
    from metaprune.store.runlock import run_lock

    run = clone(world["run"], tmp_path / "run")
    with run_lock(run, "holder-job"):
        code, _, err = cli("export", run, "--id", "0", "-o", tmp_path / "x.json")
        assert code == 0, err
        code, _, err = cli("pareto", run, "--baselines", "0", "--json")
        assert code == 0, err


def test_the_lock_holds_across_processes_and_dies_with_its_holder(world, tmp_path, cli):
    run = clone(world["run"], tmp_path / "run")
    hold = subprocess.Popen([sys.executable, "-c", "import sys; from metaprune.store.runlock import run_lock\n"
                             "with run_lock(sys.argv[1], 'search'):\n    print('held', flush=True); sys.stdin.read()",
                             str(run)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert hold.stdout.readline().strip() == "held"
        check_refusal(*cli(*[_fill(a, {**world, "run": run}) for a in RESUME[:3]]), needle=f"search (pid {hold.pid}")
    finally:
        hold.kill()
        hold.wait()
    from metaprune.store.runlock import run_lock

    with run_lock(run, "after"):  # the kernel released it with its holder: no stale lock
        pass


# --- a full disk --------------------------------------------------------------------------------
@pytest.fixture
def small_disk():
    """Mount a tmpfs of a given size at a path (remountable); skip where mounting is not allowed."""
    mounted = []

    def mount(path: Path, size: int) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here to fill a disk ({(r.stderr or 'mount failed').strip()}; "
                        "needs root with CAP_SYS_ADMIN)")
        mounted.append(path)
        return path

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("filling a disk needs a tmpfs, and mounting one needs root")
    yield mount
    for p in reversed(mounted):
        subprocess.run(["umount", "-l", str(p)], capture_output=True)


def fill(directory: Path, leave: int) -> None:
    """Take all free space of ``directory``'s filesystem but about ``leave`` bytes."""
    with open(directory / ".filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        except OSError:
            pass
    size = (directory / ".filler").stat().st_size
    os.truncate(directory / ".filler", max(0, size - leave))


def test_a_full_disk_during_meta_training_keeps_the_last_checkpoint(world, tmp_path, small_disk, cli):
    from metaprune.config import dump_yaml, read_yaml

    run = tmp_path / "run"
    shutil.copytree(world["run"], run, ignore=shutil.ignore_patterns("checkpoints", "search"))
    cfg = read_yaml(run / "config.yaml")
    cfg["train"].update(epochs=cfg["train"]["epochs"] + 1, checkpoint_every_steps=1)  # one more step, then a checkpoint
    put(run / "config.yaml", dump_yaml(cfg))
    ckpt = world["run"] / "checkpoints" / "last.pt"
    small_disk(run / "checkpoints", ckpt.stat().st_size * 3 // 2)  # the old one, not a second beside it
    shutil.copy(ckpt, run / "checkpoints" / "last.pt")
    old, metrics = ckpt.read_bytes(), (run / "metrics.jsonl").read_bytes()
    code, out, err = cli(*RESUME[:2], run, "--quiet")
    line = check_refusal(code, out, err, needle="No space left on device")
    assert "last.pt" in line and "checkpoint of step 162 is intact" in line and "--resume" in line, line
    assert (run / "checkpoints" / "last.pt").read_bytes() == old
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.pt"]  # no temporary file left
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "No space left" in status["reason"] and status["step"] == 162, status
    assert (run / "metrics.jsonl").read_bytes().startswith(metrics)


def test_a_full_disk_during_search_changes_nothing(world, tmp_path, small_disk, cli, tree_hash):
    run = clone(world["run"], tmp_path / "run")
    saved = tmp_path / "saved"
    shutil.copytree(run / "search", saved)
    shutil.rmtree(run / "search")
    small_disk(run / "search", 1 << 20)
    for f in saved.iterdir():
        shutil.copy2(f, run / "search" / f.name)
    fill(run / "search", 12 * 1024)  # room for one file of a generation, not for four
    before = tree_hash(run)
    line = check_refusal(*cli("search", run, "-c", "smoke", "--strategy", "pareto", "--overwrite", "--quiet",
                              "--set", "generations=1", "--set", "population=2", "--set", "eval.max_images=32",
                              "--set", "eval.bn_batches=1"), needle="No space left on device")
    assert "nothing was changed" in line, line
    assert tree_hash(run) == before
    assert not list((run / "search").glob(".*.tmp")) and not (run / "search" / ".replaced").exists()


def test_a_full_disk_during_export_leaves_no_file(world, tmp_path, small_disk, cli):
    out = small_disk(tmp_path / "disk", 64 * 1024)
    fill(out, 0)
    line = check_refusal(*cli("export", world["run"], "--id", "0", "-o", out / "x.json"),
                         needle="No space left on device")
    assert "x.json" in line and "nothing was changed" in line, line
    assert sorted(p.name for p in out.iterdir()) == [".filler"]


# --- the contracts other readers rely on ---------------------------------------------------------
def test_read_text_never_blocks_and_refuses_in_one_line(tmp_path):
    from metaprune import UserError
    from metaprune.store.fileio import read_json, read_text

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_bytes(b"x" * 100)
    (tmp_path / "latin1").write_bytes(b"caf\xe9")
    (tmp_path / "ok").write_text('{"a": 1}')
    os.symlink(tmp_path / "ok", tmp_path / "link")
    for path, kw, needle in [("fifo", {}, "a FIFO"), ("big", {"max_bytes": 10}, "at most 10"),
                             ("latin1", {}, "not UTF-8"), ("link", {"follow": False}, "symbolic link"),
                             ("nope", {}, "does not exist"), (".", {}, "directory")]:
        with pytest.raises(UserError, match=needle) as e:
            read_text(tmp_path / path, "test file", **kw)
        assert "\n" not in str(e.value)
    assert read_json(tmp_path / "link", "test file") == {"a": 1}  # outside a run a link is followed


def test_finite_float_option_type_refuses_nan_and_inf():
    import click

    from metaprune.cli.common import CPUS_PER_TRIAL, GPUS_PER_TRIAL

    for t, bad, good in [(CPUS_PER_TRIAL, ("nan", "inf", "0", "-1", "1e9"), ("0.5", "2")),
                         (GPUS_PER_TRIAL, ("nan", "-inf", "-1", "65"), ("0", "1"))]:
        for v in bad:
            with pytest.raises(click.BadParameter):
                t.convert(v, None, None)
        assert [t.convert(v, None, None) for v in good] == [float(v) for v in good]
    assert math.isfinite(CPUS_PER_TRIAL.convert("1", None, None))
