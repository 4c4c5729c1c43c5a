"""Shared fixtures: one real local Ray cluster per test session, a CLI runner, small specs."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster with 2 CPUs, started once for the whole session."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def cli(capsys):
    """Run the metaprune CLI in-process: returns (exit_code, stdout, stderr)."""
    from metaprune.cli.main import main

    def run(*args: str):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tree_hash(root) -> str:
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    for p in sorted(Path(root).rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def tree_hash():
    """SHA-256 over a directory tree's names and bytes: "nothing changed" checks."""
    return _tree_hash


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """A run meta-trained once per session with configs/smoke.yaml (about a minute here)."""
    from metaprune.cli.main import main

    path = tmp_path_factory.mktemp("smoke") / "run"
    code = main(["train-pruningnet", "-c", os.path.join(REPO, "configs", "smoke.yaml"),
                 "--run-dir", str(path), "--quiet"])
    assert code == 0
    return path
