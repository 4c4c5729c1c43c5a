"""``metaprune search``: open the run, check budgets, hold the lock, evaluate (locally or on Ray
actors) and write the search's files after every generation."""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from evolution import BudgetError, Problem, resume_search, run_search

from pruningnet.errors import UserError

from ..config import from_dict, to_dict
from ..store.runlock import run_lock
from ..units import format_count
from .config import SearchConfig
from .evaluate import ProxyScorer, load_latency_table, make_cost_fn, proxy_settings
from .store import read_state, search_dir, search_lock, write_generation

#: Budget key -> the CLI flag that sets it.
BUDGET_FLAGS = {"macs": "--max-macs", "params": "--max-params", "latency_ms": "--max-latency-ms",
                "flops_metapruning": "--max-flops-metapruning"}


def format_cost(key: str, value: float) -> str:
    """``12.3M MACs``, ``1.20M params``, ``4.21 ms``."""
    if key == "latency_ms":
        return f"{value:.2f} ms"
    if key == "flops_metapruning":
        return f"{format_count(value)} FLOPs (MetaPruning's counter)"
    return f"{format_count(value)} {'MACs' if key == 'macs' else key}"


def budget_error(space_name: str, e: BudgetError) -> UserError:
    where = "below the smallest" if e.side == "below" else "above the largest"
    return UserError(f"{BUDGET_FLAGS.get(e.metric, e.metric)} {format_cost(e.metric, e.budget)} is {where} "
                     f"member of space {space_name}; feasible range {format_cost(e.metric, e.low)} to "
                     f"{format_cost(e.metric, e.high)}")


@dataclass(frozen=True)
class SearchOutcome:
    """What a finished ``metaprune search`` reports."""

    path: Path
    strategy: str
    budgets: dict
    evaluated: int
    new_evaluations: int
    seconds: float
    best: dict
    front_size: int


def _remote_only(channels: tuple) -> float:
    raise RuntimeError("this search scores candidates on Ray actors, not locally")


def _resolve(run, cfg: SearchConfig | None, budgets: Mapping[str, float], resume: bool,
             overwrite: bool) -> tuple[SearchConfig, dict, dict | None]:
    saved = read_state(run.path) if resume else None
    if resume:
        if saved is None:
            raise UserError(f"run {str(run.path)!r} has no search to resume; start one without --resume")
        meta = saved["search"]
        state_file = search_dir(run.path) / "state.json"
        try:
            cfg = from_dict(SearchConfig, meta["config"], prefix="search.config.")
        except UserError as e:
            raise UserError(f"search state {str(state_file)!r} is damaged: {e}; start a new search with "
                            "--overwrite") from None
        for key, value in budgets.items():
            if meta["budgets"].get(key) != value:
                raise UserError(f"{BUDGET_FLAGS[key]} {value} differs from the saved search's "
                                f"{meta['budgets'].get(key)}; resume without budget flags or start anew "
                                "with --overwrite")
        return cfg, dict(meta["budgets"]), saved
    return cfg or SearchConfig(), dict(budgets), None


def _refuse_existing(run_path: Path, overwrite: bool) -> None:
    if overwrite:
        return
    saved = read_state(run_path)
    if saved is not None:
        n = len(saved["evolution"]["candidates"])
        state = "a finished" if saved["evolution"]["finished"] else "an unfinished"
        raise UserError(f"run {str(run_path)!r} already holds {state} search ({n} candidates); pass "
                        "--resume to continue it or --overwrite to start a new one")


def _check_resumable(run_path: Path, saved: dict, settings, seed: int, budgets: dict, choices) -> None:
    """The saved evolution state belongs to the saved search (the schema checked its types)."""
    evo = saved["evolution"]
    want = {"seed": seed, "settings": settings.to_dict(), "budgets": budgets,
            "choices": [list(map(int, c)) for c in choices]}
    for key, value in want.items():
        if (not settings.matches(evo[key])) if key == "settings" else evo[key] != value:
            raise UserError(f"search state {str(search_dir(run_path) / 'state.json')!r} is damaged: "
                            f"evolution.{key} does not match the saved search's own (accepted: {str(value)[:60]}); "
                            "start a new search with --overwrite")


class _Replaced:
    def __init__(self, aside: Path | None):
        self.aside = aside

    def commit(self) -> None:
        if self.aside is not None and self.aside.exists():
            shutil.rmtree(self.aside)
        self.aside = None


@contextlib.contextmanager
def _replacing(d: Path, active: bool):
    """Move an earlier search's files aside while a new one starts; they come back if the new
    search stops (Ctrl-C, a PruningNet that fails to load, a crash) before its first generation is
    written, and are deleted once it has one. ``--overwrite`` never leaves ``RUN/search/`` empty."""
    aside = d / ".replaced"
    if aside.exists():  # an earlier --overwrite was killed -9 before its first generation
        if not any(d.glob("*.json")):
            for f in aside.iterdir():
                os.replace(f, d / f.name)
        shutil.rmtree(aside, ignore_errors=True)
    files = [f for f in (*d.glob("*.json"), d / "pareto.png") if f.is_file()] if active else []
    replaced = _Replaced(aside if files else None)
    try:
        if files:
            aside.mkdir()
            for f in files:
                os.replace(f, aside / f.name)
        yield replaced
    except BaseException:
        if replaced.aside is not None and replaced.aside.is_dir():
            for f in d.glob("*.json"):
                f.unlink()
            for f in replaced.aside.iterdir():
                os.replace(f, d / f.name)
            replaced.aside.rmdir()
        raise
    replaced.commit()


def search_run(run_path: str | Path, cfg: SearchConfig | None, budgets: Mapping[str, float], *,
               resume: bool = False, overwrite: bool = False, workers: int | None = None,
               address: str | None = None, device: str = "auto",
               progress: Callable[[str], None] | None = None) -> SearchOutcome:
    """Search a run's PruningNet under ``budgets`` (keys ``macs``, ``params``, ``latency_ms``)."""
    from ..store.runs import open_run

    run = open_run(run_path)
    if not run.has_pruningnet():
        raise UserError(f"run {str(run.path)!r} has no trained PruningNet; finish meta-training first")
    with run_lock(run.path, "search"):  # one writer per run: everything below sees the run as it stays
        return _search_locked(run, cfg, budgets, resume=resume, overwrite=overwrite, workers=workers,
                              address=address, device=device, progress=progress)


def seed_vectors(run, budgets: Mapping[str, float]) -> list[tuple[int, ...]]:
    """Channel vectors the initial population starts with, beside evolution's own uniform-width ones
    (``seed_uniform``): the on-grid uniform network nearest a MACs budget, and the run's
    criterion-pruned networks (``RUN/baselines/*.json``) that are on the space's grid."""
    from pruningnet.cost import cost_model

    from ..store.specfile import load_spec

    space, out = run.space, []
    if "macs" in budgets:
        try:
            _, ch, _ = cost_model(space).grid_uniform_for_budget(int(budgets["macs"]))
            out.append(tuple(ch[u] for u in space.unit_names))
        except UserError:
            pass  # below the narrowest uniform network: nothing uniform fits
    folder = run.path / "baselines"
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            spec = load_spec(f)
        except UserError:
            continue  # not a spec (a report, a damaged file): nothing to seed
        if spec.space.name == space.name and spec.space.options == space.options and \
                all(spec.channels.get(u.name) in u.choices for u in space.units):
            out.append(tuple(spec.channels[u] for u in space.unit_names))
    return out


def _search_locked(run, cfg: SearchConfig | None, budgets: Mapping[str, float], *, resume: bool, overwrite: bool,
                   workers: int | None, address: str | None, device: str,
                   progress: Callable[[str], None] | None) -> SearchOutcome:
    cfg, budgets, saved = _resolve(run, cfg, budgets, resume, overwrite)
    settings = cfg.settings()
    if cfg.strategy == "constrained" and not budgets:
        raise UserError("a constrained search needs a budget: --max-macs, --max-params or --max-latency-ms "
                        "(or use --strategy pareto)")
    table = None
    if "latency_ms" in budgets or "latency_ms" in settings.objectives:
        table = load_latency_table(run.path)
    space = run.space
    seed = cfg.seed if cfg.seed is not None else run.seed
    proxy = proxy_settings(run, cfg, seed)
    cost_fn = make_cost_fn(space, table, "flops_metapruning" in budgets or "flops_metapruning" in settings.objectives)
    probe = Problem([u.choices for u in space.units], cost_fn, _remote_only, budgets)
    try:
        probe.check_budgets()
    except BudgetError as e:
        raise budget_error(space.name, e) from None
    if saved is None:
        _refuse_existing(run.path, overwrite)
    fingerprint = run.pruningnet_fingerprint()
    if saved is not None and saved["search"].get("pruningnet") not in (None, fingerprint):
        raise UserError(f"run {str(run.path)!r}: pruningnet.pt changed since this search started (meta-trained "
                        "again?); resuming would mix scores of two PruningNets. Start a new search with "
                        "--overwrite")
    if saved is not None:
        _check_resumable(run.path, saved, settings, seed, budgets, probe.choices)
    meta = {"run": str(run.path), "space": space.name, "strategy": cfg.strategy, "budgets": budgets,
            "seed": seed, "config": to_dict(cfg), "proxy": proxy.to_dict(), "pruningnet": fingerprint}

    ray_map = None
    written: dict = {"generation": saved["evolution"]["generation"] if saved else None}
    try:
        if workers is not None or address is not None:
            from .ray_map import RayActorMap

            # before anything is moved: a request the Ray cluster cannot meet is refused with the run untouched
            ray_map = RayActorMap(run.path, proxy, workers=workers, address=address, device=device)
            fitness, map_fn = _remote_only, ray_map
        else:  # loaded (weights, data, threads) before an earlier search is moved aside
            fitness, map_fn = ProxyScorer(run.path, proxy, device=device), map
        with search_lock(run.path), _replacing(search_dir(run.path), active=saved is None) as replaced:
            problem = Problem(probe.choices, cost_fn, fitness, budgets)
            start_count = len(saved["evolution"]["candidates"]) if saved else 0
            t0 = time.perf_counter()

            def on_generation(state: dict) -> None:
                write_generation(run.path, state, meta, space.unit_names)
                written["generation"] = state["generation"]
                replaced.commit()  # the new search has a generation on disk: the old one can go
                if progress is not None:
                    log = state["logbook"][-1]
                    best = (f"best proxy loss {-log['best_score']:.4f}" if proxy.score == "loss" else
                            f"best proxy top-1 {100 * log['best_score']:.2f}%")
                    progress(f"generation {log['gen'] + 1}/{settings.generations}: {log['evals']} new, "
                             f"{log['evaluated']} evaluated, {best}, front of {log['front_size']}")

            if saved is None:
                result = run_search(problem, settings, seed=seed, map_fn=map_fn, on_generation=on_generation,
                                    initial=seed_vectors(run, budgets))
            else:
                if progress is not None:
                    progress(f"resuming after generation {saved['evolution']['generation'] + 1} "
                             f"({start_count} candidates)")
                result = resume_search(problem, settings, saved["evolution"], map_fn=map_fn,
                                       on_generation=on_generation)
                write_generation(run.path, result.state, meta, space.unit_names)
    except OSError as e:  # a full disk: say what the search's files hold now
        where = f" {str(e.filename)!r}" if e.filename else ""
        if written["generation"] is None:
            raise UserError(f"cannot write{where}: {e.strerror or e}; the search stopped before its first "
                            "generation was written: nothing was changed (an earlier search's files are as "
                            "they were)") from None
        raise UserError(f"cannot write{where}: {e.strerror or e}; the search stopped, its files hold "
                        f"generation {written['generation'] + 1} (written together): free space and run "
                        f"`metaprune search {run.path} --resume`") from None
    finally:
        if ray_map is not None:
            ray_map.close()
    return SearchOutcome(run.path, cfg.strategy, budgets, len(result.candidates),
                         len(result.candidates) - start_count, time.perf_counter() - t0,
                         dict(result.best), len(result.front))
