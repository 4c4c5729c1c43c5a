"""Load on ``metaprune serve``: 50 concurrent clients poll a run's front and events while a search
runs; how fast are they answered, and how much does the search slow down?

Regime, fixed before the first run (issue 13): a real server on loopback (``--jobs 1``: the search
gets all cores' threads), a smoke run (configs/smoke.yaml, meta-trained here unless --run is given),
the smoke search config as a Pareto search with ``generations=6`` (48 candidates). The search runs
alternately without and with load, ``--repeats`` times each (default 2), starting unloaded. Under
load, each of ``--clients`` (50) clients loops: GET the front (``baselines=0``, every candidate),
GET ``events?after=LAST``, then sleeps ``--interval`` s (1.0; the page's polling fallback waits 2 s),
all in one asyncio process with keep-alive connections. Reported: p50/p99/max latency of the
requests, requests answered, errors, and the search job's wall time (server's started -> ended) with
and without load. The target is a wall-time change under 10%.

    .venv/bin/python benchmarks/bench_service_load.py [--run RUN] [--clients 50] [--interval 1.0]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from service_helpers import Server  # noqa: E402


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def run_search(srv: Server, load: bool, clients: int, interval: float) -> dict:
    body = {"config": "smoke", "strategy": "pareto", "overrides": {"generations": 6}, "overwrite": True}
    status, job = srv.request("POST", "/api/runs/smoke/searches", body)
    assert status == 202, job
    lat: list[float] = []
    errors = 0

    async def client(i: int, stop: asyncio.Event) -> None:
        nonlocal errors
        import httpx2

        last = 0
        async with httpx2.AsyncClient(base_url=srv.base, headers={"Authorization": f"Bearer {srv.token}"},
                                      timeout=30) as c:
            await asyncio.sleep(interval * i / clients)  # spread the clients over one interval
            while not stop.is_set():
                for path in ("/api/runs/smoke/front?baselines=0", f"/api/events?after={last}"):
                    t0 = time.perf_counter()
                    try:
                        r = await c.get(path)
                        ok = r.status_code in (200, 404)  # 404: the new search has no front yet
                        if path.startswith("/api/events") and r.status_code == 200:
                            last = r.json()["last"]
                    except Exception:  # noqa: BLE001
                        ok = False
                    lat.append(time.perf_counter() - t0)
                    errors += not ok
                await asyncio.sleep(interval)

    async def main() -> dict:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(client(i, stop)) for i in range(clients)] if load else []
        while True:
            j = await asyncio.to_thread(srv.request, "GET", f"/api/jobs/{job['id']}?log_lines=0")
            if j[1]["state"] not in ("queued", "running"):
                break
            await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*tasks)
        return j[1]

    done = asyncio.run(main())
    assert done["state"] == "done", done
    out = {"load": load, "wall_s": round(done["ended"] - done["started"], 2)}
    if load:
        lat_ms = sorted(1000 * x for x in lat)
        out.update(requests=len(lat_ms), errors=errors, p50_ms=round(statistics.median(lat_ms), 1),
                   p99_ms=round(lat_ms[int(0.99 * (len(lat_ms) - 1))], 1), max_ms=round(lat_ms[-1], 1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="a meta-trained smoke run to copy [default: meta-train one]")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "service_load.json"))
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        runs.mkdir()
        if args.run:
            shutil.copytree(args.run, runs / "smoke", ignore=shutil.ignore_patterns("search", "train", "exports"))
        else:
            subprocess.run([sys.executable, "-m", "metaprune", "train-pruningnet", "-c", "smoke", "--run-dir",
                            str(runs / "smoke"), "--quiet"], check=True)
        srv = Server(runs)
        try:
            rows = []
            for _ in range(args.repeats):
                for load in (False, True):
                    rows.append(run_search(srv, load, args.clients, args.interval))
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            srv.stop()
    quiet = [r["wall_s"] for r in rows if not r["load"]]
    loaded = [r["wall_s"] for r in rows if r["load"]]
    summary = {"cpu": cpu_model(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
               "clients": args.clients, "interval_s": args.interval, "runs": rows,
               "wall_s_unloaded_mean": round(statistics.mean(quiet), 2),
               "wall_s_loaded_mean": round(statistics.mean(loaded), 2),
               "wall_change": round(statistics.mean(loaded) / statistics.mean(quiet) - 1, 4)}
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
