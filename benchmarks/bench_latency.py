"""Latency table benchmark: build time for a space and the end-to-end error of its predictions.

For each space: build a fresh table (timed), draw N random channel vectors (one seeded numpy
Generator, every unit uniform over its choices), predict each from the table and time the built
model end to end (median), then report the mean absolute percentage error (MAPE). The machine's
load average is recorded, since other processes on a small box disturb both sides.

    .venv/bin/python benchmarks/bench_latency.py --space smoke --threads 1 --vectors 20
    .venv/bin/python benchmarks/bench_latency.py --space smoke --threads 1 --clock cpu --grid-steps 3,1
    .venv/bin/python benchmarks/bench_latency.py --space default224 --threads 1 --vectors 20
    .venv/bin/python benchmarks/bench_latency.py --space default224 --allocators default,steady,default,steady
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from metaprune.latency import TimingConfig, build_table, measure_model_ms, space_key
from metaprune.process.malloc import ENV, malloc_mode, steady_allocator
from metaprune.latency.table import LatencyTable
from pruningnet import build_model, get_space, make_spec

SPACES = {
    "smoke": ("mobilenet_v2", {"input_size": 32, "small_input": True, "in_channels": 1, "num_classes": 10}),
    "default224": ("mobilenet_v2", {}),
}


def random_vectors(space, n: int, seed: int) -> np.ndarray:
    """``n`` channel vectors (rows, in unit order), every unit uniform over its choices."""
    rng = np.random.default_rng(seed)
    return np.array([[int(rng.choice(u.choices)) for u in space.units] for _ in range(n)])


def measure_rounds(space, X: np.ndarray, table: LatencyTable, rounds: int, device: str = "cpu",
                   batch: int = 1, threads: int | None = None) -> np.ndarray:
    """End-to-end ms of each vector's built model, ``rounds`` x len(X); rounds spread each vector's
    timing over the run (interleaved), so a burst of load hits one round of each model."""
    models = [build_model(make_spec(space, dict(zip(space.unit_names, (int(v) for v in row))))) for row in X]
    opts = space.options
    ms = np.zeros((rounds, len(models)))
    for r in range(rounds):
        for i, model in enumerate(models):
            ms[r, i] = measure_model_ms(model, opts["input_size"], opts["in_channels"], device, batch, threads,
                                        table.model_timing())
    return ms


def round_spread_pct(rounds_ms: np.ndarray) -> float:
    """Mean (max - min) / median of each vector's rounds, in percent."""
    return round(float(np.mean((rounds_ms.max(0) - rounds_ms.min(0)) / np.median(rounds_ms, axis=0)) * 100), 1)


def mape_of(table: LatencyTable, space, X: np.ndarray, measured: np.ndarray) -> dict:
    pred = table.predict_ms(space, X)
    err = 100 * (pred / measured - 1)
    o = table.overheads[space_key(space)]
    terms_only = table.terms_ms(space, X)
    raw = 100 * (terms_only / measured - 1)
    const = 100 * ((terms_only + o["ms"]) / measured - 1)  # one constant overhead, as tables before issue 17's last change
    return {"mape_pct": round(float(np.mean(np.abs(err))), 2), "bias_pct": round(float(np.mean(err)), 2),
            "max_abs_pct": round(float(np.max(np.abs(err))), 2),
            "mape_without_calibration_pct": round(float(np.mean(np.abs(raw))), 2),
            "mape_constant_overhead_pct": round(float(np.mean(np.abs(const))), 2),
            "overhead_ms": o["ms"],
            # the calibration's own timings (narrowest, middle, widest network per round): what a
            # misread overhead (0.40 ms in one run where others read 1.0-1.3) can be traced to
            "calibration_parts_ms": o.get("parts_ms"), "calibration_whole_ms": o.get("whole_ms"),
            "predicted_ms": [round(float(p), 3) for p in pred]}


def run(label: str, threads: int, vectors: int, seed: int, grid_steps: list[int], timing: TimingConfig,
        rounds: int) -> dict:
    name, opts = SPACES[label]
    space = get_space(name, **opts)
    load_before = os.getloadavg()
    out: dict = {"space": label, "clock": timing.clock, "name": name, "options": opts, "threads": threads, "vectors": vectors,
                 "seed": seed, "timing": timing.to_dict(), "builds": {}}
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        for step in grid_steps:
            t0 = time.perf_counter()
            tables[step] = build_table(space, threads=threads, grid_step=step, timing=timing,
                                       path=Path(tmp) / f"table{step}.json")
            out["builds"][step] = {"seconds": round(time.perf_counter() - t0, 1),
                                   "entries": len(tables[step].entries)}
            print(f"[{label}] grid step {step}: built {out['builds'][step]['entries']} entries in "
                  f"{out['builds'][step]['seconds']} s", flush=True)
    X = random_vectors(space, vectors, seed)
    t0 = time.perf_counter()
    rounds_ms = measure_rounds(space, X, tables[grid_steps[0]], rounds, threads=threads)
    out["measure_seconds"] = round(time.perf_counter() - t0, 1)
    measured = np.median(rounds_ms, axis=0)
    out["round_spread_pct"] = round_spread_pct(rounds_ms)
    out["measured_ms"] = [round(float(m), 3) for m in measured]
    out["results"] = {step: mape_of(tables[step], space, X, measured) for step in grid_steps}
    out["loadavg_before"] = [round(x, 2) for x in load_before]
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    for step, r in out["results"].items():
        print(f"[{label}] grid step {step}: MAPE {r['mape_pct']}% (bias {r['bias_pct']:+}%, max "
              f"{r['max_abs_pct']}%; sum of entries alone {r['mape_without_calibration_pct']}%, one constant "
              f"overhead {r['mape_constant_overhead_pct']}%), "
              f"overhead {r['overhead_ms']:.3f} ms; measured {measured.min():.2f}..{measured.max():.2f} ms "
              f"(spread over rounds {out['round_spread_pct']}%); load {out['loadavg_after']}",
              flush=True)
    return out


def compare_allocators(a) -> None:
    """One fresh process per malloc mode (glibc's settings are process-wide and cannot be undone)."""
    import subprocess
    import sys

    argv = list(sys.argv[1:])
    i = argv.index("--allocators")
    del argv[i:i + 2]
    if "--json" in argv:
        j = argv.index("--json")
        del argv[j:j + 2]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, mode in enumerate(a.allocators.split(",")):
            out = Path(tmp) / f"{k}.json"
            subprocess.run([sys.executable, __file__, *argv, "--json", str(out)], check=True,
                           env={**os.environ, ENV: mode})
            runs.append(json.loads(out.read_text()))
    for r in runs:
        g = next(iter(r["results"].values()))
        print(f"malloc {r['malloc']['mode']:<7} MAPE {g['mape_pct']:6.2f}% bias {g['bias_pct']:+7.2f}% max "
              f"{g['max_abs_pct']:6.2f}% (constant overhead {g['mape_constant_overhead_pct']:6.2f}%) | measured {min(r['measured_ms']):.2f}..{max(r['measured_ms']):.2f} ms, "
              f"round spread {r['round_spread_pct']}%")
    if a.json:
        Path(a.json).write_text(json.dumps(runs, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", choices=sorted(SPACES), default="smoke")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vectors", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grid-steps", default="3", help="comma-separated grid steps to build and compare")
    ap.add_argument("--repeats", type=int, default=7, help="samples per table entry (median)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: latency; cpu: thread CPU time (1 thread), robust to a busy machine")
    ap.add_argument("--rounds", type=int, default=3, help="end-to-end timings per vector, median")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--allocators", default=None, metavar="A,B,...",
                    help="run the whole benchmark once per glibc malloc mode (steady, mapped, default; repeats allowed), "
                         "each in a fresh process in this order, and print them side by side")
    a = ap.parse_args()
    if a.allocators:
        compare_allocators(a)
        return
    timing = TimingConfig(warmup=3, repeats=a.repeats, min_sample_ms=1.0, clock=a.clock)
    res = run(a.space, a.threads, a.vectors, a.seed, [int(s) for s in a.grid_steps.split(",")], timing,
              a.rounds)
    res["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    res["malloc"] = {"mode": malloc_mode(), "pinned": steady_allocator()}
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
