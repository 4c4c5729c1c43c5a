"""Faults with nothing lost (issue 14): a lock race between two processes, a kill during a checkpoint
write, non-finite weights, an interrupted --overwrite, unreadable weights files."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

RACE = r"""
import os, sys, time
from pathlib import Path
from metaprune.search.store import search_lock
from metaprune import UserError
run, seconds = Path(sys.argv[1]), float(sys.argv[2])
held = overlaps = 0
marker = run / "held"
print("ready", flush=True)
while not (run / "go").exists():
    time.sleep(0.001)
end = time.time() + seconds
while time.time() < end:
    try:
        with search_lock(run):
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                overlaps += 1
                continue
            held += 1
            time.sleep(0.0005)
            os.close(fd)
            os.unlink(marker)
    except UserError:
        pass
print(held, overlaps)
"""


def test_two_processes_never_hold_the_search_lock_together(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path), "3"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    (tmp_path / "go").touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(tuple(int(v) for v in out.split()))
    assert all(overlaps == 0 for _, overlaps in results), results
    assert all(held > 0 for held, _ in results), results  # both got it sometimes: a real race


def test_a_killed_holder_releases_the_lock(tmp_path, cli):
    from metaprune import UserError
    from metaprune.search.store import search_lock

    hold = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                             "from metaprune.search.store import search_lock\n"
                             "with search_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)",
                             str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert hold.stdout.readline().strip() == "held"
    with pytest.raises(UserError, match=f"pid {hold.pid}"):
        with search_lock(tmp_path):
            pass
    hold.kill()
    hold.wait()
    with search_lock(tmp_path):  # the kernel released it: no stale lock to clean up
        pass


TINY = ["--set", "data.name=synthetic", "--set", "space.options.width_mult=0.25", "--set",
        "space.options.ratios=[0.5,1.0]", "--set", "model.hidden=4", "--set", "train.batch_size=32"]


@pytest.fixture(scope="module")
def searched_run(smoke_run, tmp_path_factory):
    from metaprune.cli.main import main

    run = tmp_path_factory.mktemp("faults") / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("search", "train", "exports", "checkpoints"))
    assert main(["search", str(run), "-c", "smoke", "--strategy", "pareto", "--set", "generations=1",
                 "--set", "eval.max_images=64", "--quiet"]) == 0
    return run


def test_overwrite_that_fails_before_its_first_generation_keeps_the_old_search(searched_run, tmp_path, cli,
                                                                              tree_hash):
    run = tmp_path / "run"
    shutil.copytree(searched_run, run)
    search_before = tree_hash(run / "search")
    (run / "pruningnet.pt").write_bytes((run / "pruningnet.pt").read_bytes()[:5000])  # truncated
    code, _, err = cli("search", run, "-c", "smoke", "--strategy", "pareto", "--overwrite", "--quiet")
    assert code == 2 and "truncated" in err and "weights_only=False" not in err, err
    assert tree_hash(run / "search") == search_before  # the earlier search is all there
    code, out, err = cli("pareto", run, "--baselines", "0", "--json")
    assert code == 0, err


def test_overwrite_interrupted_by_sigint_keeps_the_old_search(searched_run, tmp_path):
    """Ctrl-C during the new search's first generation: the old files come back."""
    import signal
    import time

    run = tmp_path / "run"
    shutil.copytree(searched_run, run)
    before = json.loads((run / "search" / "candidates.json").read_text())
    # a shell that started us in the background may have set SIGINT to "ignore", which children
    # inherit: restore Python's own handler, as an interactive user's shell would have it
    launcher = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                "from metaprune.cli.main import run; run()")
    proc = subprocess.Popen([sys.executable, "-c", launcher, "search", str(run), "-c", "smoke",
                             "--strategy", "pareto", "--overwrite", "--quiet", "--set", "eval.max_images=500",
                             "--set", "eval.bn_batches=20"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    aside = run / "search" / ".replaced"
    deadline = time.time() + 120
    while not aside.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert aside.exists(), proc.stderr.read() if proc.poll() is not None else "never moved aside"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "--resume" in err, err
    assert json.loads((run / "search" / "candidates.json").read_text()) == before
    assert not aside.exists()


def test_foreign_and_malicious_weights_are_refused_without_unsafe_advice(searched_run, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(searched_run, run, ignore=shutil.ignore_patterns("search"))

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"x": Evil()}, run / "pruningnet.pt")
    code, _, err = cli("evaluate", run, "--uniform", "0.5")
    assert code == 2 and "refused" in err and "weights_only=False" not in err, err
    assert not (tmp_path / "pwned").exists()
    torch.save({"foreign": torch.zeros(3)}, run / "pruningnet.pt")
    code, _, err = cli("evaluate", run, "--uniform", "0.5")
    assert code == 2 and "do not fit" in err, err


def test_no_unsafe_unpickling_anywhere_in_the_package():
    for pkg in ("metaprune", "pruningnet", "evolution"):
        for f in (REPO / pkg).rglob("*.py"):
            text = f.read_text()
            assert "weights_only=False" not in text, f
            assert "pickle.load(" not in text or f.name == "sources.py", f


def test_non_finite_weights_are_never_checkpointed(tmp_path, smoke_run):
    from metaprune.metatrain.divergence import DivergenceGuard
    from metaprune.metatrain.loop import CHECKPOINT, TrainingDiverged, _save_checkpoint
    from metaprune.store.runs import open_run

    src = open_run(smoke_run)
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run, run_dir, ignore=shutil.ignore_patterns("search", "train", "exports"))
    run = open_run(run_dir)
    good = (run_dir / CHECKPOINT).read_bytes()
    net = src.load_pruningnet()
    with torch.no_grad():
        next(net.parameters())[0] = float("nan")
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    with pytest.raises(TrainingDiverged, match="not finite"):
        _save_checkpoint(run, net, opt, sched, 7, DivergenceGuard())
    assert (run_dir / CHECKPOINT).read_bytes() == good


def test_resume_cleans_temp_files_of_a_checkpoint_write_killed_midway(tmp_path, cli):
    run = tmp_path / "run"
    code, _, err = cli("train-pruningnet", "-c", "smoke", "--run-dir", run, "--quiet", *TINY,
                       "--set", "train.max_steps=4", "--set", "train.checkpoint_every_steps=2")
    assert code == 0, err
    stale = run / "checkpoints" / ".last.pt.abc123.tmp"
    stale.write_bytes(b"\0" * 4096)  # what kill -9 during torch.save leaves
    (run / "pruningnet.pt").unlink()
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text() + '{"step": 5, "lo')  # torn line
    code, _, err = cli("train-pruningnet", "--resume", run, "--quiet")
    assert code == 0, err
    assert not stale.exists()


def test_truncated_checkpoint_on_resume_is_one_line(tmp_path, cli):
    run = tmp_path / "run"
    code, _, err = cli("train-pruningnet", "-c", "smoke", "--run-dir", run, "--quiet", *TINY,
                       "--set", "train.max_steps=2", "--set", "train.checkpoint_every_steps=1")
    assert code == 0, err
    ck = run / "checkpoints" / "last.pt"
    ck.write_bytes(ck.read_bytes()[:1000])
    (run / "pruningnet.pt").unlink()
    code, _, err = cli("train-pruningnet", "--resume", run, "--quiet")
    errors = [ln for ln in err.splitlines() if ln.startswith("metaprune: error:")]
    assert code == 2 and len(errors) == 1 and "truncated" in errors[0] and "Traceback" not in err, err


@contextlib.contextmanager
def read_only(root: Path):
    """``root`` made read-only for this process: as root (who writes through permissions) a read-only
    bind mount of it over itself; otherwise its directories at mode 0555. Skips, saying why, where
    root cannot mount (a container without CAP_SYS_ADMIN)."""
    if os.geteuid() != 0:
        dirs = [p for p in [root, *root.rglob("*")] if p.is_dir()]
        for p in dirs:
            p.chmod(0o555)
        try:
            yield
        finally:
            for p in dirs:
                p.chmod(0o755)
        return
    r = subprocess.run(["mount", "--bind", str(root), str(root)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"root cannot make a read-only directory here: mount --bind failed ({r.stderr.strip()})")
    try:
        r = subprocess.run(["mount", "-o", "remount,bind,ro", str(root)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"root cannot make a read-only directory here: remount ro failed ({r.stderr.strip()})")
        assert not os.access(root, os.W_OK) or subprocess.run(["touch", str(root / ".probe")]).returncode != 0
        yield
    finally:
        subprocess.run(["umount", str(root)], capture_output=True)


def test_read_only_run_directory_is_one_line_and_intact(searched_run, tmp_path, cli, tree_hash):
    run = tmp_path / "run"
    shutil.copytree(searched_run, run)
    before = tree_hash(run)
    with read_only(run):
        code, _, err = cli("export", run, "--id", "0", "-o", run / "exports" / "x.json")
        assert code == 2 and len(err.strip().splitlines()) == 1 and "x.json" in err, err
        assert "Traceback" not in err
    assert tree_hash(run) == before


def test_a_remeta_trained_pruningnet_is_never_mixed_into_old_scores(searched_run, tmp_path, cli):
    from metaprune.store.runs import open_run

    run = tmp_path / "run"
    shutil.copytree(searched_run, run)
    code, _, err = cli("pareto", run, "--baselines", "2", "--json")
    assert code == 0, err
    old = json.loads((run / "search" / "baselines.json").read_text())
    sd = torch.load(run / "pruningnet.pt", weights_only=True)
    key = next(iter(sd))
    sd[key] = sd[key] * 1.5  # "meta-trained again"
    torch.save(sd, run / "pruningnet.pt")
    new_fp = open_run(run).pruningnet_fingerprint()
    assert old["pruningnet"] != new_fp
    code, _, err = cli("search", run, "--resume")
    assert code == 2 and "pruningnet.pt changed" in err and "--overwrite" in err, err
    code, _, err = cli("pareto", run, "--baselines", "2", "--json")
    assert code == 0, err
    assert json.loads((run / "search" / "baselines.json").read_text())["pruningnet"] == new_fp
