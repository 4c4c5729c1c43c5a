"""One schema per kind of file a run directory holds, checked by every reader of that kind.

Every file in a run directory is treated as written by an attacker: a reader loads it with
:func:`Kind.read` (JSON: :func:`metaprune.store.fileio.read_json`, never blocking, no symbolic links) or
checks a loaded object with :func:`Kind.check`, and any defect (a missing field, a wrong type, a
number out of range, ``NaN``, a non-finite weight) is one :class:`UserError` line naming the file,
the field and what is accepted, before anything is computed from it or written::

    search state '/r/search/state.json' is damaged: evolution.candidates[3].macs is missing
    (accepted: a number in (0, 1e+15]); start a new search with --overwrite

The specs are small combinators (:class:`Int`, :class:`Num`, :class:`Str`, :class:`List`,
:class:`Map`, :class:`Obj`, :class:`Tensors`, ...); each kind is a :class:`Kind` below.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from pruningnet.errors import UserError

from ..ranges import SEED_RANGE, THREADS_RANGE

MAX_COUNT = 10**15  # MACs, params: as metaprune.units
MAX_CHANNELS = 1 << 20
MAX_ITEMS = 10_000_000


class _Bad(Exception):
    """``where`` fails: its ``value`` (or, with ``problem``, what is wrong with it) is not ``accepted``."""

    def __init__(self, where: str, value: Any, accepted: str, missing: bool = False, problem: str = ""):
        self.where, self.value, self.accepted, self.missing, self.problem = where, value, accepted, missing, problem


def _shown(value: Any) -> str:
    r = repr(value)
    if type(value).__name__ == "Tensor":
        r = f"tensor of shape {tuple(value.shape)}"
    return r if len(r) <= 48 else r[:40] + "..." + r[-5:]


def _sub(where: str, key: Any) -> str:
    k = str(key)
    if isinstance(key, str) and k.replace("_", "").isalnum():
        return f"{where}.{k}" if where else k
    return f"{where}[{key!r}]"


class Spec:
    """What a value must be; ``check`` raises :class:`_Bad` naming where it is."""

    accepted = "a value"

    def check(self, value: Any, where: str) -> None:
        raise NotImplementedError


class AnyValue(Spec):
    def check(self, value, where):
        pass


@dataclass(frozen=True)
class Int(Spec):
    lo: int = 0
    hi: int = 2**31 - 1

    @property
    def accepted(self) -> str:
        return f"an integer in [{self.lo}, {self.hi}]"

    def check(self, value, where):
        if isinstance(value, bool) or not isinstance(value, int) or not self.lo <= value <= self.hi:
            raise _Bad(where, value, self.accepted)


@dataclass(frozen=True)
class Num(Spec):
    """A finite number (int or float) in ``[lo, hi]``, or ``(lo, hi]`` with ``lo_open``."""

    lo: float = -1e15
    hi: float = 1e15
    lo_open: bool = False

    @property
    def accepted(self) -> str:
        return f"a finite number in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}]"

    def check(self, value, where):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Bad(where, value, self.accepted)
        v = float(value) if abs(value) < 1e300 else math.inf
        if not math.isfinite(v) or not (self.lo < v if self.lo_open else self.lo <= v) or v > self.hi:
            raise _Bad(where, value, self.accepted)


@dataclass(frozen=True)
class Str(Spec):
    choices: tuple[str, ...] | None = None
    max_len: int = 4096

    @property
    def accepted(self) -> str:
        return f"one of {', '.join(self.choices)}" if self.choices else "a string"

    def check(self, value, where):
        if not isinstance(value, str) or len(value) > self.max_len or \
                (self.choices is not None and value not in self.choices):
            raise _Bad(where, value, self.accepted)


class Bool(Spec):
    accepted = "true or false"

    def check(self, value, where):
        if not isinstance(value, bool):
            raise _Bad(where, value, self.accepted)


@dataclass(frozen=True)
class Opt(Spec):
    """``spec`` or null."""

    spec: Spec

    @property
    def accepted(self) -> str:
        return f"{self.spec.accepted} or null"

    def check(self, value, where):
        if value is not None:
            self.spec.check(value, where)


@dataclass(frozen=True)
class List(Spec):
    item: Spec = field(default_factory=AnyValue)
    min_len: int = 0
    max_len: int = MAX_ITEMS

    @property
    def accepted(self) -> str:
        return f"a list of {self.min_len} or more" if self.min_len else "a list"

    def check(self, value, where):
        if not isinstance(value, list) or not self.min_len <= len(value) <= self.max_len:
            raise _Bad(where, value, self.accepted)
        for i, v in enumerate(value):
            self.item.check(v, f"{where}[{i}]")


@dataclass(frozen=True)
class Map(Spec):
    """A mapping of string keys to ``value``."""

    value: Spec = field(default_factory=AnyValue)
    min_len: int = 0

    accepted = "a JSON object"

    def check(self, value, where):
        if not isinstance(value, Mapping) or len(value) < self.min_len:
            raise _Bad(where, value, self.accepted + (" that is not empty" if self.min_len else ""))
        for k, v in value.items():
            if not isinstance(k, str):
                raise _Bad(where, k, "string keys")
            self.value.check(v, _sub(where, k))


@dataclass(frozen=True)
class Obj(Spec):
    """A mapping with ``required`` and ``optional`` keys (others are allowed: later versions add some)."""

    required: Mapping[str, Spec]
    optional: Mapping[str, Spec] = field(default_factory=dict)

    accepted = "a JSON object"

    def check(self, value, where):
        if not isinstance(value, Mapping):
            raise _Bad(where, value, self.accepted)
        for k, spec in self.required.items():
            if k not in value:
                raise _Bad(_sub(where, k), None, spec.accepted, missing=True)
            spec.check(value[k], _sub(where, k))
        for k, spec in self.optional.items():
            if k in value:
                spec.check(value[k], _sub(where, k))


@dataclass(frozen=True)
class Tensors(Spec):
    """A state dict: string keys to tensors, every floating-point one finite."""

    min_len: int = 1
    accepted = "tensors with finite values"

    def check(self, value, where):
        import torch

        if not isinstance(value, Mapping) or len(value) < self.min_len:
            raise _Bad(where, value, "a state dict of tensors")
        for k, v in value.items():
            w = _sub(where, k)
            if not isinstance(k, str) or not isinstance(v, torch.Tensor):
                raise _Bad(w, v, "a tensor")
            if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all()):
                raise _Bad(w, v, self.accepted, problem="holds non-finite values (NaN or inf)")


@dataclass(frozen=True)
class Custom(Spec):
    """``spec``, then ``test(value)`` returning None or what is wrong."""

    spec: Spec
    test: Callable[[Any], str | None]
    accepted_text: str

    @property
    def accepted(self) -> str:
        return self.accepted_text

    def check(self, value, where):
        self.spec.check(value, where)
        problem = self.test(value)
        if problem:
            raise _Bad(where, value, self.accepted_text, problem=problem)


@dataclass(frozen=True)
class Kind:
    """A kind of run file: what it is called, its schema and what to do when it is damaged."""

    what: str
    spec: Spec
    hint: str
    damaged: str = "damaged"  # the word for a file that fails the schema

    def check(self, doc: Any, path: str | os.PathLike) -> Any:
        """``doc`` if it fits the schema, else one :class:`UserError` line naming ``path`` and the field."""
        try:
            self.spec.check(doc, "")
        except _Bad as e:
            where = e.where or "the document"
            problem = (f"{where} is missing (accepted: {e.accepted})" if e.missing else
                       f"{where}: {e.problem} (accepted: {e.accepted})" if e.problem else
                       f"{where}={_shown(e.value)} is not accepted (accepted: {e.accepted})")
            raise UserError(f"{self.what} {str(path)!r} is {self.damaged}: {problem}; {self.hint}") from None
        return doc

    def read(self, path: str | os.PathLike, max_bytes: int | None = None, follow: bool = False) -> Any:
        """Read the JSON file at ``path`` (never blocking; inside a run, ``follow=False``, no symbolic
        links) and check it."""
        from .fileio import MAX_DOC_BYTES, read_json

        doc = read_json(path, self.what, kind=None, follow=follow, max_bytes=max_bytes or MAX_DOC_BYTES)
        return self.check(doc, path)


# --- the run's own files ----------------------------------------------------------------------
_NEW_RUN = "restore it or meta-train a new run"
SPACE_FILE = Kind("run space file", Obj({"space": Str(max_len=64), "options": Map()}), _NEW_RUN)
SPLIT_FILE = Kind("run split file", Obj({}, {"fingerprints": Opt(Map(Opt(Str(max_len=256))))}), _NEW_RUN)
STATUS_STATES = ("running", "done", "interrupted", "failed")
STATUS_FILE = Kind("meta-training status", Obj({"state": Str(STATUS_STATES)},
                                               {"step": Int(0, 10**12), "total_steps": Int(0, 10**12)}),
                   "resume meta-training with `metaprune train-pruningnet --resume RUN`")
PRUNINGNET = Kind("PruningNet weights", Tensors(), "meta-train this run again (its weights were never "
                  "written with non-finite values)")
_LOSS_MIN = Custom(AnyValue(), lambda v: None if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and v >= 0 else "not a loss", "a number >= 0 (inf before the first step)")
CHECKPOINT = Kind("meta-training checkpoint",
                  Obj({"net": Tensors(), "opt": Map(), "sched": Map(), "step": Int(0, 10**12)},
                      {"guard": Obj({"ema": Opt(Num(0, 1e9)), "running_min": _LOSS_MIN, "armed": Bool(),
                                     "spikes": Int(0, 10**9)}),
                       "scaler": Map()}),
                  "delete it to restart meta-training from step 0")

# --- search ---------------------------------------------------------------------------------
COST_KEYS = ("macs", "params", "latency_ms", "flops_metapruning")
_COUNT = Num(0, MAX_COUNT, lo_open=True)
BUDGETS = Map(_COUNT)
_SCORE = Num(0.0, 1.0)
MAX_LOSS = 1e9  # the largest candidate loss a search file holds (search.evaluate caps at it)
_LOSS = Num(0.0, MAX_LOSS)  # a candidate's mean cross-entropy (search eval.score: loss)
_FITNESS = Num(-MAX_LOSS, 1.0)  # what the search maximises: top-1, or minus the loss
_SCORE_MODE = Str(("top1", "loss"))  # which of the two the search maximised (eval.score)
CANDIDATE = Obj({"id": Int(0, MAX_ITEMS), "generation": Int(0, 10**6),
                 "channels": Map(Int(1, MAX_CHANNELS), min_len=1), "macs": _COUNT, "params": _COUNT,
                 "top1": _SCORE},
                {"latency_ms": Num(0, 1e7, lo_open=True), "flops_metapruning": _COUNT, "loss": _LOSS,
                 "score": _FITNESS})
_SEARCH_AGAIN = "rerun the search with --overwrite"
CANDIDATES_FILE = Kind("search candidates file", Obj({"candidates": List(CANDIDATE, min_len=1)},
                                                     {"budgets": BUDGETS, "strategy": Str(max_len=64),
                                                      "score": _SCORE_MODE}),
                       _SEARCH_AGAIN)
FRONT_FILE = Kind("search front file",
                  Obj({"front": List(CANDIDATE, min_len=1), "strategy": Str(("constrained", "pareto")),
                       "budgets": BUDGETS, "objectives": List(Str(COST_KEYS), 1, 3)}, {"score": _SCORE_MODE}),
                  _SEARCH_AGAIN)
BASELINE_SCORES = Kind("baseline scores", Obj(
    {"baselines": List(Obj({"channels": Map(Int(1, MAX_CHANNELS), min_len=1), "top1": _SCORE, "macs": _COUNT},
                           {"params": _COUNT, "ratio": Num(0.0, 1.0), "loss": _LOSS, "score": _FITNESS}))},
    {"pruningnet": Opt(Str(max_len=64))}), "delete it; `metaprune pareto` scores the baselines again")

_GENES = List(Int(0, MAX_CHANNELS), min_len=1)
_EVO_CANDIDATE = Obj({"id": Int(0, MAX_ITEMS), "generation": Int(0, 10**6), "genes": _GENES,
                      "channels": List(Int(1, MAX_CHANNELS), min_len=1), "macs": _COUNT, "params": _COUNT,
                      "score": _FITNESS},
                     {"latency_ms": Num(0, 1e7, lo_open=True), "flops_metapruning": _COUNT, "top1": _SCORE,
                      "loss": _LOSS})


def _rng_problem(rng: Mapping) -> str | None:
    """Whether the saved RNG states restore (numpy's bit generator, ``random``'s state)."""
    import random

    import numpy as np

    try:
        np.random.default_rng().bit_generator.state = dict(rng["numpy"])
        version, internal, gauss = rng["random"]
        random.Random().setstate((version, tuple(internal), gauss))
    except (KeyError, TypeError, ValueError, OverflowError):
        return "the saved RNG states do not restore"
    return None


def _genes_problem(evo: Mapping) -> str | None:
    """Population and elite are vectors that were evaluated (the resumed search looks them up)."""
    known = {tuple(c["genes"]) for c in evo["candidates"]}
    for key in ("population", "elite"):
        for i, g in enumerate(evo[key]):
            if tuple(g) not in known:
                return f"{key}[{i}] is a vector that is not among the candidates"
    return None


_EVOLUTION = Custom(Obj({
    "format": Str(("evolution.state/1",)), "seed": Int(*SEED_RANGE), "settings": Map(),
    "choices": List(List(Int(1, MAX_CHANNELS), min_len=1), min_len=1), "budgets": BUDGETS,
    "generation": Int(0, 10**6), "finished": Bool(), "elite": List(_GENES), "population": List(_GENES),
    "candidates": List(_EVO_CANDIDATE, min_len=1), "logbook": List(Map()),
    "rng": Custom(Obj({"numpy": Map(), "random": List(AnyValue(), 3, 3)}), _rng_problem,
                  "the RNG states metaprune saved")}),
    _genes_problem, "a population and elite drawn from the candidates")
PROXY = Obj({"bn_batches": Int(1, 1_000_000), "batch_size": Int(1, 1 << 20), "max_images": Opt(Int(1, 10**9)),
             "seed": Int(*SEED_RANGE)}, {"threads": Opt(Int(*THREADS_RANGE)),
                                          "execution": Opt(Str(("auto", "sliced", "masked"))),
                                          "score": Opt(_SCORE_MODE)})
SEARCH_STATE = Kind("search state", Obj({
    "search": Obj({"strategy": Str(("constrained", "pareto")), "budgets": BUDGETS, "seed": Int(*SEED_RANGE),
                   "config": Map(), "proxy": PROXY}, {"pruningnet": Opt(Str(max_len=64))}),
    "evolution": _EVOLUTION}), "start a new search with --overwrite")

# --- latency tables -------------------------------------------------------------------------
_MS = Num(0, 1e7, lo_open=True)
LATENCY_TABLE = Kind("latency table", Obj(
    {"format": Str(max_len=64),
     "key": Obj({"device": Str(("cpu", "cuda")), "device_name": Str(max_len=512), "threads": Int(*THREADS_RANGE),
                 "batch_size": Int(1, 1 << 16), "torch": Str(max_len=64)}),
     "entries": Map(Num(0, 1e7))},
    {"timing": Obj({}, {"warmup": Int(0, 1000), "repeats": Int(1, 1000), "min_sample_ms": Num(0, 1e4, lo_open=True),
                        "clock": Str(("wall", "cpu")), "cuda_graphs": Bool()}),
     "grid_step": Int(1, 64), "info": Map(),
     "overheads": Map(Obj({"ms": Num(-1e7, 1e7)}, {"networks": Int(1, 100), "parts_ms": List(_MS, max_len=10_000),
                                                   "whole_ms": List(_MS, max_len=10_000), "space": Str(max_len=64),
                                                   "options": Map()}))}),
    "rebuild it with `metaprune latency build`", damaged="malformed")

# --- baselines ------------------------------------------------------------------------------
FULL_WEIGHTS = Kind("cached full network", Tensors(), "delete it (and its .json record) to train the "
                    "full network again")
FULL_RECORD = Kind("full-network record", Obj({"file": Str()}, {"test_top1": Opt(_SCORE), "seed": Int(*SEED_RANGE),
                                                                "epochs": Int(1, 100_000)}),
                   "delete it (and its .pt weights) to train the full network again")
