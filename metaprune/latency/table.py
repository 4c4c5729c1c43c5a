"""The latency lookup table: entries keyed by shape, a network's latency as the sum of its terms.

File format (JSON, written atomically)::

    {"format": "metaprune.latency/1",
     "key": {"device", "device_name", "threads", "batch_size", "torch"},
     "timing": {"warmup", "repeats", "min_sample_ms", "clock", "cuda_graphs"}, "grid_step": 3,
     "entries": {SHAPE_KEY: ms},
     "overheads": {SPACE_KEY: {"space", "options", "ms", "parts_ms", "whole_ms"}}}

A network's predicted latency = sum of its terms' entries (interpolated on the grid) + the space's
overhead, measured once per network structure: for three calibration networks (narrowest, middle and
widest uniform vectors), three rounds each, the gap end-to-end - sum of the same network's terms
timed just before. The gap grows with the network (smoke space, cpu clock: 0.2, 0.9, 2.2 ms for
1.7, 3.3, 6.2 ms of terms; BENCHMARKS.md, issue 17), so a network's overhead is the gap interpolated
at its own sum of terms between the three networks' median gaps (held constant beyond them);
``ms``, the median of all nine gaps, is what tables before that used as one constant. Entries are
measured in a seeded shuffled order.

Loading a table measured under another key (device name or torch version) *warns*; measuring a
missing entry into such a table raises :class:`UserError` (it would mix machines).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from pruningnet.build import build_model
from pruningnet.errors import UserError
from pruningnet.spaces.ir import Scaled, Space
from pruningnet.spec import make_spec

from ..store.fileio import read_json, write_json
from ..store.schemas import LATENCY_TABLE
from .machine import MachineKey, check_device, current_key
from .shapes import Shape, Term, grid_shapes, resolve, space_terms, term_axes, term_points
from .timing import (CLOCKS, MODEL_TIMING, check_clock, TimingConfig, measure_model_ms, time_call_ms, torch_threads,
                     uses_graphs)

FORMAT_NAME = "metaprune.latency"
FORMAT_VERSION = 1
FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"
DEFAULT_GRID_STEP = 3
CALIBRATION_RATIOS = (0.0, 0.55, 1.0)  # 0.0 -> the narrowest choice of every unit


class LatencyKeyWarning(UserWarning):
    """A table was measured under another device, threads, batch size or torch version."""


def default_table_path(run_dir: str | os.PathLike) -> Path:
    """Where a run keeps its latency table: ``RUN/latency/table.json``."""
    return Path(run_dir) / "latency" / "table.json"


def space_key(space: Space) -> str:
    """A stable id of a network structure (name and options that change it; not the choice grid)."""
    opts = {k: v for k, v in sorted(space.options.items()) if k not in ("ratios", "fixed_units")}
    digest = hashlib.sha1(json.dumps([space.name, opts], sort_keys=True).encode()).hexdigest()[:12]
    return f"{space.name}:{digest}"


def overhead_at(entry: Mapping, terms_ms: np.ndarray) -> np.ndarray:
    """The calibration ``entry``'s overhead for networks whose terms sum to ``terms_ms``: each
    calibration network's median gap, interpolated linearly at its median sum of terms (constant
    beyond the narrowest and widest). An entry without per-network timings gives its constant ``ms``."""
    n = entry.get("networks")
    parts, whole = entry.get("parts_ms"), entry.get("whole_ms")
    if not n or not parts or len(parts) != len(whole) or len(parts) % n:
        return np.full(np.shape(terms_ms), float(entry["ms"]))
    p = np.asarray(parts, dtype=float).reshape(-1, n)  # rounds x networks, as calibrate() times them
    gaps = np.median(np.asarray(whole, dtype=float).reshape(-1, n) - p, axis=0)
    xs = np.median(p, axis=0)
    order = np.argsort(xs)
    return np.interp(terms_ms, xs[order], gaps[order])


class LatencyTable:
    """Per-shape latencies (ms) measured under one :class:`MachineKey`, and per-space overheads.

    ``predict_ms`` measures missing entries on first use (when this machine matches the key) and,
    when the table has a ``path``, persists them atomically.
    """

    def __init__(self, key: MachineKey, timing: TimingConfig = TimingConfig(),
                 grid_step: int = DEFAULT_GRID_STEP, entries: Mapping[str, float] | None = None,
                 overheads: Mapping[str, dict] | None = None, path: str | os.PathLike | None = None,
                 info: Mapping | None = None):
        if isinstance(grid_step, bool) or not isinstance(grid_step, int) or grid_step < 1:
            raise UserError(f"grid step {grid_step!r} must be an integer >= 1")
        self.key = key
        self.timing = timing
        self.grid_step = grid_step
        self.entries: dict[str, float] = dict(entries or {})
        self.overheads: dict[str, dict] = {k: dict(v) for k, v in (overheads or {}).items()}
        self.path = Path(path) if path is not None else None
        self.info: dict = dict(info or {})
        self.measured = 0  # entries measured by this object (build or lazily)
        self._plans: dict[str, list] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_plans": {}}

    def _plan(self, space: Space) -> list[tuple[Term, tuple]]:
        """The space's terms with their grids (cached per structure and grid step)."""
        k = f"{space_key(space)}|{self.grid_step}|{space.unit_names}|{[u.choices for u in space.units]}"
        if k not in self._plans:
            self._plans[k] = [(t, term_axes(space, t, self.grid_step)) for t in space_terms(space)]
        return self._plans[k]

    # ---- measuring -------------------------------------------------------------------------
    def _check_can_measure(self) -> None:
        here = current_key(self.key.device, self.key.batch_size, self.key.threads)
        check_clock(self.timing.clock, self.key.device, self.key.threads)
        bad = self.key.mismatches(here)
        if bad:
            raise UserError(f"cannot measure missing latency entries: this machine does not match the "
                            f"table's key ({'; '.join(bad)}); build a table here with "
                            f"'metaprune latency build'")

    def model_timing(self) -> TimingConfig:
        """How end-to-end models are timed for this table (more samples, the table's clock)."""
        return TimingConfig(MODEL_TIMING.warmup, MODEL_TIMING.repeats, MODEL_TIMING.min_sample_ms,
                            self.timing.clock, self.timing.cuda_graphs)

    def measure(self, shapes: list[Shape], progress: Callable[[int, int], None] | None = None,
                save_every_s: float = 30.0) -> int:
        """Time every shape not yet in the table; returns how many were measured."""
        todo = [s for s in shapes if s.key() not in self.entries]
        if not todo:
            return 0
        # a seeded shuffle spreads bursts of load from other processes over unrelated layers
        todo = [todo[i] for i in np.random.default_rng(len(todo)).permutation(len(todo))]
        self._check_can_measure()
        dev = check_device(self.key.device)
        last_save = time.monotonic()
        with torch_threads(self.key.threads):
            for i, shape in enumerate(todo):
                module = shape.module().to(dev)
                self.entries[shape.key()] = round(time_call_ms(module, shape.inputs(self.key.batch_size, dev),
                                                               self.key.device, self.timing), 6)
                self.measured += 1
                if progress is not None:
                    progress(i + 1, len(todo))
                if self.path is not None and time.monotonic() - last_save > save_every_s:
                    self.save()
                    last_save = time.monotonic()
        return len(todo)

    def calibrate(self, space: Space, rounds: int = 3) -> float:
        """Measure and store the space's overhead in ms: what the sum of terms misses end to end.

        For the narrowest, a middle and the widest uniform network, ``rounds`` times each, the
        network's own terms are timed afresh right before the network is timed end to end; the
        overhead is the median gap. Timing both sides back to back keeps the gap independent of
        the load the machine had when the entries were measured. (A fitted scale was tried and
        dropped: on a busy machine a slope from 9 noisy points made predictions worse.)
        """
        self._check_can_measure()
        dev = check_device(self.key.device)
        vectors = [space.min_channels() if r == 0.0 else space.uniform_channels(r) for r in CALIBRATION_RATIOS]
        terms = space_terms(space)
        nets = []
        for vec in vectors:
            shapes = [t.shape(resolve(t.in_ref, vec), resolve(t.out_ref, vec)) for t in terms]
            nets.append(([(s.module().to(dev), s.inputs(self.key.batch_size, dev)) for s in shapes],
                         build_model(make_spec(space, vec))))
        parts_ms, whole_ms = [], []
        opts = space.options
        with torch_threads(self.key.threads):
            for _ in range(max(1, rounds)):
                for modules, model in nets:
                    parts = sum(time_call_ms(m, x, self.key.device, self.timing) for m, x in modules)
                    whole = measure_model_ms(model, opts["input_size"], opts["in_channels"], self.key.device,
                                             self.key.batch_size, self.key.threads, self.model_timing())
                    parts_ms.append(parts)
                    whole_ms.append(whole)
        overhead = float(np.median(np.array(whole_ms) - np.array(parts_ms)))
        self.overheads[space_key(space)] = {"space": space.name, "ms": round(overhead, 6),
                                            "networks": len(nets),
                                            "parts_ms": [round(g, 4) for g in parts_ms],
                                            "whole_ms": [round(g, 4) for g in whole_ms],
                                            "options": {k: v for k, v in space.options.items()
                                                        if k not in ("ratios", "fixed_units")}}
        return overhead

    # ---- predicting ------------------------------------------------------------------------
    @staticmethod
    def _matrix(space: Space, X) -> np.ndarray:
        if isinstance(X, Mapping):
            X = [X]
        if isinstance(X, list) and X and isinstance(X[0], Mapping):
            X = [[int(v[u]) for u in space.unit_names] for v in X]
        x = np.asarray(X)
        x = x.reshape(1, -1) if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[1] != len(space.units):
            raise UserError(f"channel matrix has shape {x.shape}; expected (N, {len(space.units)}) "
                            f"in the order of space {space.name}'s units")
        return x.astype(np.int64)

    def _needed(self, space: Space, x: np.ndarray) -> tuple[list, list[Shape]]:
        index = {u: i for i, u in enumerate(space.unit_names)}
        plan, missing = [], {}
        for term, axes in self._plan(space):
            cols = [np.full(len(x), r) if isinstance(r, int) else
                    r.factor * x[:, index[r.unit]] if isinstance(r, Scaled) else x[:, index[r]]
                    for r in (term.in_ref, term.out_ref)]
            if len(x) == 1:
                pairs, inverse = np.stack(cols, 1), np.zeros(1, dtype=np.int64)
            else:
                pairs, inverse = np.unique(np.stack(cols, 1), axis=0, return_inverse=True)
            points = [term_points(term, axes, int(a), int(b)) for a, b in pairs]
            for pts in points:
                for s, _ in pts:
                    if s.key() not in self.entries:
                        missing.setdefault(s.key(), s)
            plan.append((points, inverse.reshape(-1)))
        return plan, list(missing.values())

    def _terms_ms(self, space: Space, x: np.ndarray) -> np.ndarray:
        plan, missing = self._needed(space, x)
        if missing:
            self.measure(missing)
            if self.path is not None:
                self.save()
        total = np.zeros(len(x))
        for points, inverse in plan:
            values = np.array([sum(w * self.entries[s.key()] for s, w in pts) for pts in points])
            total += values[inverse]
        return total

    def terms_ms(self, space: Space, X) -> np.ndarray:
        """The sum of each row's term entries (the prediction without the overhead)."""
        return self._terms_ms(space, self._matrix(space, X))

    def predict_ms(self, space: Space, X) -> np.ndarray:
        """Predicted latency in ms of each row of ``X`` ((N, units) ints in ``space.unit_names``
        order, or one channels dict); missing entries are measured and persisted first."""
        x = self._matrix(space, X)
        terms = self._terms_ms(space, x)
        if space_key(space) not in self.overheads:
            self.calibrate(space)
            if self.path is not None:
                self.save()
        pred = terms + overhead_at(self.overheads[space_key(space)], terms)
        if not np.all(np.isfinite(pred) & (pred > 0)):  # a damaged overhead (entries are checked at load)
            bad = float(pred[~(np.isfinite(pred) & (pred > 0))][0])
            raise UserError(f"latency table {str(self.path) if self.path else '(in memory)'!r} predicts {bad:.4g} ms "
                            f"for a network of space {space.name}: its overheads entry {space_key(space)!r} is "
                            "damaged; accepted: a positive latency; rebuild it with 'metaprune latency build'")
        return pred

    def breakdown_ms(self, space: Space, channels: Mapping[str, int]) -> dict[str, float]:
        """``{term name: ms}`` for one channels dict, plus ``"overhead"``; sums to the prediction."""
        x = self._matrix(space, channels)
        out = {}
        for term in space_terms(space):
            axes = term_axes(space, term, self.grid_step)
            pts = term_points(term, axes, resolve(term.in_ref, channels), resolve(term.out_ref, channels))
            self.measure([s for s, _ in pts])
            out[term.name] = sum(w * self.entries[s.key()] for s, w in pts)
        out["overhead"] = float(self.predict_ms(space, x)[0]) - sum(out.values())  # calibrates if needed
        return out

    # ---- files -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "key": self.key.to_dict(), "timing": self.timing.to_dict(),
                "grid_step": self.grid_step, "info": self.info,
                "entries": dict(sorted(self.entries.items())), "overheads": self.overheads}

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the table atomically, merging entries another process saved there meanwhile."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("this table has no path; pass one")
        if target.is_file():
            try:
                other = _read(target)
                if (other.key == self.key and other.grid_step == self.grid_step
                        and other.timing.clock == self.timing.clock
                        and uses_graphs(other.timing, other.key.device) == uses_graphs(self.timing, self.key.device)):
                    self.entries = {**other.entries, **self.entries}
                    self.overheads = {**other.overheads, **self.overheads}
            except UserError:
                pass
        write_json(target, self.to_dict())
        if self.path is None:
            self.path = target
        return target


def _read(path: Path, follow: bool = True) -> LatencyTable:
    """A table file, every field checked (:data:`metaprune.store.schemas.LATENCY_TABLE`)."""
    doc = read_json(path, "latency table", kind=None, follow=follow)
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if not isinstance(fmt, str) or not fmt.startswith(FORMAT_NAME + "/"):
        raise UserError(f"file {str(path)!r} has format={fmt!r}, not a latency table; accepted: {FORMAT!r}")
    if fmt != FORMAT:
        raise UserError(f"latency table {str(path)!r} has format={fmt!r}; this metaprune reads "
                        f"{FORMAT!r}; rebuild it with 'metaprune latency build'")
    LATENCY_TABLE.check(doc, path)
    # a table written before issue 29 has no cuda_graphs: its CUDA entries were timed eagerly
    timing = TimingConfig(**{"cuda_graphs": False, **{k: v for k, v in doc.get("timing", {}).items()
                                                      if k in ("warmup", "repeats", "min_sample_ms", "clock",
                                                               "cuda_graphs")}})
    entries = {k: float(v) for k, v in doc["entries"].items()}
    key = MachineKey(**{k: doc["key"][k] for k in ("device", "device_name", "threads", "batch_size", "torch")})
    return LatencyTable(key, timing, doc.get("grid_step", DEFAULT_GRID_STEP), entries,
                        doc.get("overheads", {}), path, doc.get("info", {}))


def load_table(path: str | os.PathLike, strict: bool = False, follow: bool = True) -> LatencyTable:
    """Load a table file (``follow=False``: a run's own, no symbolic link). A key that does not match
    this machine warns (:class:`LatencyKeyWarning`), or raises :class:`UserError` with ``strict``; a
    missing or malformed file raises UserError."""
    p = Path(path)
    if not os.path.lexists(p):
        raise UserError(f"latency table {str(p)!r} does not exist; build one with 'metaprune latency build'")
    table = _read(p, follow)
    try:
        here = current_key(table.key.device, table.key.batch_size, table.key.threads)
        bad = table.key.mismatches(here)
    except UserError as e:  # e.g. a CUDA table on a machine without CUDA
        bad = [str(e)]
    if bad:
        msg = (f"latency table {str(p)!r} was measured under another key ({'; '.join(bad)}); "
               "its predictions may not hold on this machine")
        if strict:
            raise UserError(msg)
        warnings.warn(msg, LatencyKeyWarning, stacklevel=2)
    return table


def build_table(space: Space, device: str = "cpu", batch_size: int = 1, threads: int | None = None,
                grid_step: int = DEFAULT_GRID_STEP, timing: TimingConfig = TimingConfig(),
                path: str | os.PathLike | None = None,
                progress: Callable[[int, int], None] | None = None) -> LatencyTable:
    """Measure every grid entry of ``space`` and its overhead on this machine.

    With ``path``, an existing table there with the same key and grid step is extended (entries it
    has are not re-measured), partial progress is saved every 30 s, and the result is written.
    """
    key = current_key(device, batch_size, threads)
    check_clock(timing.clock, key.device, key.threads)
    table = LatencyTable(key, timing, grid_step, path=path)
    if path is not None and Path(path).is_file():
        old = _read(Path(path))
        if (old.key == key and old.grid_step == grid_step and old.timing.clock == timing.clock
                and uses_graphs(old.timing, key.device) == uses_graphs(timing, key.device)):
            table = old
            table.timing = timing
    t0 = time.perf_counter()
    table.measure(grid_shapes(space, grid_step), progress)
    table.calibrate(space)
    table.info = {**table.info, "last_build": {"space": space.name, "seconds": round(time.perf_counter() - t0, 1),
                                               "measured": table.measured,
                                               "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}}
    if path is not None:
        table.save(path)
    return table
