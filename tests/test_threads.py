"""One cap on torch threads and local Ray CPUs for every stage (``METAPRUNE_MAX_THREADS``), and the
service's job slots that set it so that concurrent jobs never use more threads than cores."""
from __future__ import annotations

import pytest

from metaprune.process.threads import local_cpus, set_torch_threads, torch_threads


@pytest.mark.parametrize("env,requested,want", [
    (None, None, None), (None, 4, 4),          # no cap: as asked (None: torch's default)
    ("1", None, 1), ("1", 4, 1), ("2", 1, 1),  # capped, never raised
    ("0", 3, 3), ("x", 3, 3),                   # a cap that is not a positive integer is ignored
])
def test_torch_threads_are_capped_by_the_environment(monkeypatch, env, requested, want):
    if env is None:
        monkeypatch.delenv("METAPRUNE_MAX_THREADS", raising=False)
    else:
        monkeypatch.setenv("METAPRUNE_MAX_THREADS", env)
    assert torch_threads(requested) == want


def test_set_torch_threads_and_local_ray_cpus(monkeypatch):
    import torch

    old = torch.get_num_threads()
    try:
        monkeypatch.setenv("METAPRUNE_MAX_THREADS", "1")
        set_torch_threads(8)
        assert torch.get_num_threads() == 1
        assert local_cpus(16) == 1
        monkeypatch.delenv("METAPRUNE_MAX_THREADS")
        assert local_cpus(16) == 16 and local_cpus() is None
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("cores,jobs,slots,threads", [(2, 1, 1, 2), (2, 2, 2, 1), (2, 3, 2, 1), (16, 4, 4, 4),
                                                     (16, 3, 3, 5)])
def test_service_job_slots_never_exceed_the_cores(tmp_path, cores, jobs, slots, threads):
    from metaprune.service.db import Database
    from metaprune.service.jobs import JobManager

    jm = JobManager(tmp_path, Database(tmp_path / "db.sqlite3"), jobs, cores=cores)
    assert (jm.max_jobs, jm.threads) == (slots, threads) and jm.max_jobs * jm.threads <= cores
