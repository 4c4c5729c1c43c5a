"""``metaprune train --resume``: pick an interrupted training back up from our own files only.

Ray Tune's ``Tuner.restore`` unpickles the experiment's state (``tuner.pkl``, the trials' and the
searcher's state, ``error.pkl``), and every file in a run directory is treated as written by an
attacker, so a resume never hands Ray an earlier experiment. It reads ``RUN/train/plan.json`` (JSON,
checked field by field), counts a trial as finished when its own report log
(``RUN/train/ray/EXPERIMENT/reports/NAME-sSEED.reports.jsonl``, JSON lines) records its last epoch,
and starts the others in a fresh Ray experiment beside the first (``EXPERIMENT-resumeK``), each from
the last epoch checkpoint its earlier experiments hold, read with ``torch.load(weights_only=True)``.
A checkpoint that does not load, or does not fit its trial, is refused in one line naming it
(deleting that ``checkpoint_*`` folder resumes from the one before it).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pruningnet import get_space, make_spec
from pruningnet.errors import UserError

from ..config import from_dict, to_dict
from ..store.fileio import load_weights, read_json, read_text
from .loop import check_state
from .recipe import BUDGETS, Recipe, TrainConfig
from .runner import TrialOutcome
from .trainable import REPORTS_FILE, STATE_FILE

PLAN_KEYS = ("experiment", "budget", "config", "cpus_per_trial", "gpus_per_trial", "candidates", "trials")
CANDIDATE_KEYS = ("name", "kind", "macs", "params", "latency_ms", "proxy_top1", "baseline", "ratio", "space",
                  "options", "channels")
TRIAL_KEYS = ("name", "kind", "seed", "epochs", "space", "options", "channels", "recipe", "threads", "gpus",
              "crash_at_epoch")
EXPERIMENT_NAME = re.compile(r"scratch-[0-9]{8}-[0-9]{6}(-[0-9]{1,6})?")
KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")
CHECKPOINT_DIR = re.compile(r"checkpoint_([0-9]{1,9})")
MAX_EPOCHS = 100_000


@dataclass(frozen=True)
class Plan:
    """``RUN/train/plan.json``, checked: what ``metaprune train`` set out to train."""

    path: Path
    experiment: str
    budget: str
    config: TrainConfig
    cpus_per_trial: float
    gpus_per_trial: float
    candidates: list[dict]
    trials: list[dict]


def plan_path(run: str | Path) -> Path:
    return Path(run) / "train" / "plan.json"


class _Checker:
    """One-line errors naming the plan file and the field."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, field: str, value: Any, accepted: str) -> UserError:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return UserError(f"training plan {str(self.path)!r}: {field}={shown} is not accepted; accepted: {accepted}; "
                         "it was not written by metaprune train: restore it or train anew without --resume")

    def keys(self, doc: Any, field: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
        if not isinstance(doc, dict):
            raise self.fail(field, doc, "a JSON object")
        for k in doc:
            if k not in required and k not in optional:
                raise self.fail(f"{field}.{k}" if field else k, doc[k],
                                f"no such key (known: {', '.join(required + optional)})")
        for k in required:
            if k not in doc:
                raise self.fail(f"{field}.{k}" if field else k, None, "a value (the key is missing)")
        return doc

    def int(self, v: Any, field: str, lo: int, hi: int) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise self.fail(field, v, f"an integer in [{lo}, {hi}]")
        return v

    def num(self, v: Any, field: str, lo: float, hi: float, optional: bool = False) -> float | None:
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
            raise self.fail(field, v, f"a finite number in [{lo:g}, {hi:g}]" + (" or null" if optional else ""))
        return float(v)

    def name(self, v: Any, field: str, optional: bool = False) -> str | None:
        if v is None and optional:
            return None
        # names become file names (NAME-sSEED.reports.jsonl, trial folders): one plain path component
        if (not isinstance(v, str) or not 1 <= len(v) <= 200 or v[0] == "." or
                any(c in v for c in "/\\\0\n\r")):
            raise self.fail(field, v, "a name of 1-200 characters, no '/', '\\', line breaks or leading '.'")
        return v

    def network(self, doc: dict, field: str) -> None:
        """``space``, ``options`` and ``channels`` make a spec of a known space."""
        if not isinstance(doc["space"], str):
            raise self.fail(f"{field}.space", doc["space"], "a space name")
        if not isinstance(doc["options"], dict):
            raise self.fail(f"{field}.options", doc["options"], "a JSON object of space options")
        if not isinstance(doc["channels"], dict):
            raise self.fail(f"{field}.channels", doc["channels"], "a JSON object of unit: channels")
        try:
            make_spec(get_space(doc["space"], **doc["options"]), doc["channels"])
        except UserError as e:
            raise UserError(f"training plan {str(self.path)!r}: {field}: {e}") from None
        except TypeError as e:  # e.g. an option name that is not a string
            raise self.fail(f"{field}.options", doc["options"], f"options of space {doc['space']} ({e})") from None


def read_plan(run: str | Path) -> Plan:
    """``RUN/train/plan.json``, every field checked (types, finite ranges, known keys, recipe keys);
    anything else is one :class:`UserError` line naming the file and the field."""
    path = plan_path(run)
    if not path.is_file():
        raise UserError(f"run {str(run)!r} has no training to resume ({str(path)!r} is missing)")
    c = _Checker(path)
    doc = c.keys(read_json(path, "training plan", follow=False), "", PLAN_KEYS)
    experiment = doc["experiment"]
    if not isinstance(experiment, str) or not EXPERIMENT_NAME.fullmatch(experiment):
        raise c.fail("experiment", experiment, "scratch-YYYYmmdd-HHMMSS[-N], as metaprune train names it")
    if doc["budget"] not in BUDGETS:
        raise c.fail("budget", doc["budget"], ", ".join(BUDGETS))
    if not isinstance(doc["config"], dict):
        raise c.fail("config", doc["config"], "a JSON object (the recipe file's sections)")
    try:
        cfg = from_dict(TrainConfig, doc["config"], prefix="config.")
    except UserError as e:
        raise UserError(f"training plan {str(path)!r}: {e}") from None
    cpus = c.num(doc["cpus_per_trial"], "cpus_per_trial", 1e-3, 4096)
    gpus = c.num(doc["gpus_per_trial"], "gpus_per_trial", 0, 64)

    if not isinstance(doc["candidates"], list) or not doc["candidates"]:
        raise c.fail("candidates", doc["candidates"], "a non-empty JSON array")
    candidates, names = [], set()
    for i, cand in enumerate(doc["candidates"]):
        f = f"candidates[{i}]"
        c.keys(cand, f, CANDIDATE_KEYS)
        name = c.name(cand["name"], f"{f}.name")
        if name in names:
            raise c.fail(f"{f}.name", name, "a name no other candidate has")
        names.add(name)
        if not isinstance(cand["kind"], str) or not KIND.fullmatch(cand["kind"]):
            raise c.fail(f"{f}.kind", cand["kind"], "searched, baseline or a criterion name")
        c.int(cand["macs"], f"{f}.macs", 0, 10**15)
        c.int(cand["params"], f"{f}.params", 0, 10**13)
        c.num(cand["latency_ms"], f"{f}.latency_ms", 0, 1e9, optional=True)
        c.num(cand["proxy_top1"], f"{f}.proxy_top1", -1e9, 1e9, optional=True)
        c.num(cand["ratio"], f"{f}.ratio", 0, 1e3, optional=True)
        c.name(cand["baseline"], f"{f}.baseline", optional=True)
        c.network(cand, f)
        candidates.append(cand)
    for i, cand in enumerate(candidates):
        if cand["baseline"] is not None and cand["baseline"] not in names:
            raise c.fail(f"candidates[{i}].baseline", cand["baseline"], "the name of another candidate or null")

    if not isinstance(doc["trials"], list) or not doc["trials"]:
        raise c.fail("trials", doc["trials"], "a non-empty JSON array")
    trials, seen = [], set()
    for i, t in enumerate(doc["trials"]):
        f = f"trials[{i}]"
        c.keys(t, f, TRIAL_KEYS)
        if c.name(t["name"], f"{f}.name") not in names:
            raise c.fail(f"{f}.name", t["name"], "the name of a candidate")
        seed = c.int(t["seed"], f"{f}.seed", 0, 2**31 - 1)
        if (t["name"], seed) in seen:
            raise c.fail(f"{f}.seed", seed, f"a seed no other trial of {t['name']} has")
        seen.add((t["name"], seed))
        c.int(t["epochs"], f"{f}.epochs", 1, MAX_EPOCHS)
        c.int(t["threads"], f"{f}.threads", 1, 4096)
        c.num(t["gpus"], f"{f}.gpus", 0, 64)
        if t["crash_at_epoch"] is not None:
            c.int(t["crash_at_epoch"], f"{f}.crash_at_epoch", 0, MAX_EPOCHS)
        c.network(t, f)
        cand = next(x for x in candidates if x["name"] == t["name"])
        for key in ("kind", "space", "options", "channels"):
            if t[key] != cand[key]:
                raise c.fail(f"{f}.{key}", t[key], f"the {key} of candidate {t['name']}")
        if not isinstance(t["recipe"], dict):
            raise c.fail(f"{f}.recipe", t["recipe"], "a JSON object of recipe keys")
        try:
            recipe = from_dict(Recipe, t["recipe"], prefix=f"{f}.recipe.")
        except UserError as e:
            raise UserError(f"training plan {str(path)!r}: {e}") from None
        trials.append(dict(t, recipe=to_dict(recipe)))
    return Plan(path, experiment, doc["budget"], cfg, cpus, gpus, candidates, trials)


def trial_stem(trial: dict) -> str:
    """The trial's folder and file name stem, as the Tuner names it."""
    return f"{trial['name']}-s{trial['seed']}"


def reports_dir(storage: Path, experiment: str) -> Path:
    """Where the trials of ``experiment`` (and of its resumes) append their report logs."""
    return storage / experiment / "reports"


def finished_metrics(log: Path, trial: dict) -> dict | None:
    """The report of the trial's last epoch from its own log, or None if it did not get there.

    A line cut short by a kill (no line break at the end of the file) is ignored; any other line
    that is not a report is refused in one line."""
    if not log.is_file():
        return None
    text = read_text(log, "trial report log", follow=False)
    lines = text.split("\n")[:-1]  # the last piece is "" or a line whose write was cut short
    last = None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"trial report log {str(log)!r} line {n}"
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            row = None
        if not isinstance(row, dict):
            raise UserError(f"{where} is not a JSON object; it was not written by metaprune: delete the "
                            "log to train that trial again")
        epoch = row.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= int(trial["epochs"]):
            raise UserError(f"{where}: epoch={epoch!r} is not accepted; accepted: an integer in "
                            f"[1, {trial['epochs']}]")
        if epoch != trial["epochs"]:
            continue
        for key, hi in (("test_top1", 1.0), ("test_top5", 1.0), ("wall_s", 1e12)):
            v = row.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and 0 <= v <= hi):
                raise UserError(f"{where}: {key}={v!r} is not accepted; accepted: a finite number in [0, {hi:g}]")
        last = row
    return last


def experiment_dirs(storage: Path, experiment: str) -> list[Path]:
    """``experiment`` and its resumes (``experiment-resumeK``), oldest first."""
    pattern = re.compile(re.escape(experiment) + r"-resume([0-9]{1,6})")
    resumes = []
    if storage.is_dir():
        for p in storage.iterdir():
            m = pattern.fullmatch(p.name)
            if m and p.is_dir():
                resumes.append((int(m.group(1)), p))
    return [storage / experiment] + [p for _, p in sorted(resumes)]


def last_checkpoint(storage: Path, experiment: str, trial: dict) -> Path | None:
    """The state file of the trial's newest epoch checkpoint in ``experiment`` or its resumes."""
    found = None
    for exp in experiment_dirs(storage, experiment):
        trial_dir = exp / trial_stem(trial)
        if not trial_dir.is_dir():
            continue
        ckpts = [(int(m.group(1)), p) for p in trial_dir.iterdir()
                 if (m := CHECKPOINT_DIR.fullmatch(p.name)) and p.is_dir()]
        if ckpts:
            found = max(ckpts)[1] / STATE_FILE
    return found


def pending_trials(storage: Path, plan: Plan) -> tuple[list[TrialOutcome], list[dict]]:
    """Split the plan's trials into those already finished (their outcome, from their report logs)
    and those to run, each with ``resume_from``: the checked checkpoint to continue from, or None."""
    logs = reports_dir(storage, plan.experiment)
    finished, todo = [], []
    for t in plan.trials:
        metrics = finished_metrics(logs / f"{trial_stem(t)}.{REPORTS_FILE}", t)
        if metrics is not None:
            finished.append(TrialOutcome(t, metrics, None, None))
            continue
        ckpt = last_checkpoint(storage, plan.experiment, t)
        if ckpt is not None:
            hint = f"delete its folder {str(ckpt.parent)!r} to resume from the checkpoint before it"
            try:
                state = load_weights(ckpt, "trial checkpoint", follow=False)
            except UserError as e:
                raise UserError(f"{e}; or {hint}") from None
            try:
                check_state(t, state)
            except ValueError as e:
                raise UserError(f"trial checkpoint {str(ckpt)!r} {e}; it was not written for trial "
                                f"{trial_stem(t)} of this plan: {hint}") from None
            del state
        todo.append(dict(t, resume_from=None if ckpt is None else os.path.abspath(ckpt)))
    return finished, todo
