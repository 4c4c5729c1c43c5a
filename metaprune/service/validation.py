"""Checks of what clients send: names, config overrides, space options, query values.

Every number is bounded before it reaches a config, a space or a command line: a finite value in a
documented range (``OVERRIDE_RANGES``, ``SPACE_OPTION_RANGES``; other integers within +-1e9, other
floats within +-1e6). A refused value raises :class:`ApiError` (422) whose one-line message names
the field and what is accepted.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}(\.[A-Za-z_][A-Za-z0-9_]{0,40}){0,5}$")
UNIT_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,80}$")
#: config keys a client may not set: they name files, directories or downloads on the server
FORBIDDEN_KEY = re.compile(r"(^|\.)(root|download|address|\w*path|\w*dir|\w*file)$")
MAX_ID = 2**62  # job and candidate ids: within SQLite's integer
MAX_INT = 10**9
MAX_FLOAT = 1e6
MAX_LIST = 256
MAX_STRING = 200
MAX_OVERRIDES = 64

#: (low, high) of config keys a client may set (a key of the meta-training or the search config)
OVERRIDE_RANGES: dict[str, tuple[float, float]] = {
    "seed": (0, 2**32 - 1),
    "train.epochs": (1, 10_000),
    "train.max_steps": (1, 10**8),
    "train.batch_size": (1, 65_536),
    "train.lr": (1e-8, 100),
    "train.momentum": (0, 1),
    "train.weight_decay": (0, 1),
    "train.label_smoothing": (0, 1),
    "train.warmup_steps": (0, 10**8),
    "train.grad_clip": (1e-8, 1e6),
    "train.spike_factor": (1, 1e6),
    "train.threads": (1, 1024),
    "train.checkpoint_every_steps": (1, 10**8),
    "train.log_every_steps": (1, 10**8),
    "model.hidden": (1, 4096),
    "eval.bn_batches": (1, 10_000),
    "eval.batch_size": (1, 65_536),
    "eval.max_images": (1, 10**8),
    "eval.threads": (1, 1024),
    "data.search_per_class": (1, 10**6),
    "data.test_per_class": (1, 10**6),
    "data.image_size": (8, 1024),
    "data.workers": (0, 256),
    "population": (1, 10_000),
    "parents": (1, 10_000),
    "mutations": (0, 10_000),
    "crossovers": (0, 10_000),
    "generations": (1, 10_000),
    "mutation_prob": (0, 1),
    "crossover_prob": (0, 1),
}

#: space options a client may give (GET /api/spaces/NAME?..., or meta-training's space.options.*)
SPACE_OPTION_RANGES: dict[str, tuple[float, float]] = {
    "input_size": (8, 1024),
    "in_channels": (1, 64),
    "num_classes": (1, 100_000),
    "width_mult": (0.01, 4.0),
    "round_to": (1, 256),
}
SPACE_OPTIONS = (*SPACE_OPTION_RANGES, "ratios", "fixed_units", "small_input", "variant", "leaf_modules")
#: modules whose callables a client may name as a ``model:MODULE:CALLABLE`` space. A model space
#: imports MODULE and calls CALLABLE with the space options: the CLI lets its user name any module,
#: a client only these (and only the options above, so no ``weights=`` download).
SERVICE_MODEL_MODULES = ("torchvision.models",)
MAX_RATIOS = 256


class ApiError(Exception):
    """A refused request: HTTP ``status``, a one-line ``message``, the ``field`` it names."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def short(v: Any, limit: int = 60) -> str:
    """``repr(v)``, cut to ``limit`` characters (error messages never echo a whole input)."""
    r = repr(v) if not isinstance(v, (list, dict)) else f"<{type(v).__name__} of {len(v)}>"
    return r if len(r) <= limit else r[: limit - 3] + "..."


def check_name(name: str, field: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ApiError(422, f"{field}={short(name)} is not accepted; accepted: letters, digits, '.', '_', '-' "
                            "(at most 64, not starting with '.', '_' or '-')", field)
    return name


def check_number(v: Any, field: str, lo: float | None = None, hi: float | None = None,
                 integer: bool = False) -> int | float:
    """``v`` if it is a finite number in [lo, hi] (an integer if ``integer``); else 422 naming ``field``."""
    if integer and isinstance(v, float) and v.is_integer() and abs(v) <= 2**53:
        v = int(v)
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and (not integer or isinstance(v, int))
    if ok and isinstance(v, float) and not math.isfinite(v):
        ok = False
    if ok:
        lo_ = lo if lo is not None else (-MAX_INT if integer else -MAX_FLOAT)
        hi_ = hi if hi is not None else (MAX_INT if integer else MAX_FLOAT)
        ok = lo_ <= v <= hi_
    if not ok:
        what = "an integer" if integer else "a finite number"
        rng = f" in [{_fmt(lo if lo is not None else (-MAX_INT if integer else -MAX_FLOAT))}, " \
              f"{_fmt(hi if hi is not None else (MAX_INT if integer else MAX_FLOAT))}]"
        raise ApiError(422, f"{field}={short(v)} is not accepted; accepted: {what}{rng}", field)
    return v


def _fmt(x: float) -> str:
    if isinstance(x, float) and not x.is_integer():
        return f"{x:g}"
    x = int(x)
    return f"{x:,}" if abs(x) < 10**12 else f"{x:.3g}"


def check_scalar(v: Any, field: str) -> Any:
    """A plain config value: bool, None, a bounded number, or a short string that is not a path."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int):
        return check_number(v, field, integer=True)
    if isinstance(v, float):
        return check_number(v, field)
    if isinstance(v, str):
        if "/" in v or "\\" in v or v.startswith("~") or len(v) > MAX_STRING or "\x00" in v:
            raise ApiError(422, f"{field}={short(v)} is not accepted; accepted: a plain value of at most "
                                f"{MAX_STRING} characters, not a path", field)
        return v
    raise ApiError(422, f"{field}={short(v)} is not accepted; accepted: a number, a string, true/false or null",
                   field)


def check_overrides(overrides: dict, field: str = "overrides") -> dict:
    """Config keys and values a client may set; ranges from ``OVERRIDE_RANGES`` and space options'."""
    if len(overrides) > MAX_OVERRIDES:
        raise ApiError(422, f"{field} has {len(overrides)} keys; accepted: at most {MAX_OVERRIDES}", field)
    for key, value in overrides.items():
        f = f"{field}.{key[:80]}"
        if not KEY_RE.match(key):
            raise ApiError(422, f"{field}: key {short(key)} is not accepted; accepted: dotted config keys "
                                "such as train.epochs", f)
        if FORBIDDEN_KEY.search(key):
            raise ApiError(422, f"{field}: key {key!r} names files or downloads on the server; the service "
                                "does not accept it (start such runs with the CLI)", f)
        if key == "space.name":
            check_space_name(value, f)
            continue
        if key.startswith("space.options."):
            check_space_options({key[len("space.options."):]: value}, prefix=f"{field}.space.options.")
            continue
        values = value if isinstance(value, list) else [value]
        if len(values) > MAX_LIST:
            raise ApiError(422, f"{f} has {len(values)} values; accepted: at most {MAX_LIST}", f)
        for v in values:
            if key in OVERRIDE_RANGES and isinstance(v, (int, float)) and not isinstance(v, bool):
                lo, hi = OVERRIDE_RANGES[key]
                check_number(v, f, lo, hi, integer=isinstance(v, int) and float(lo).is_integer())
            else:
                check_scalar(v, f)
    return overrides


def check_space_name(name: Any, field: str = "space") -> str:
    """A registered space, or ``model:MODULE:CALLABLE`` with MODULE in ``SERVICE_MODEL_MODULES``."""
    from pruningnet import list_spaces

    if isinstance(name, str) and name in list_spaces("*"):
        return name
    parts = name.split(":") if isinstance(name, str) else []
    if len(parts) == 3 and parts[0] == "model" and parts[1] in SERVICE_MODEL_MODULES \
            and parts[2].isidentifier() and not parts[2].startswith("_"):
        return name
    raise ApiError(404, f"space {short(name)} not found; accepted: {', '.join(list_spaces('*'))} or "
                        f"model:MODULE:CALLABLE with MODULE one of {', '.join(SERVICE_MODEL_MODULES)}", field)


def check_space_options(options: dict, prefix: str = "") -> dict:
    """Space options within ``SPACE_OPTION_RANGES``; ratios and fixed units at most 256 each."""
    for k, v in options.items():
        f = prefix + k
        if k not in SPACE_OPTIONS:
            raise ApiError(422, f"option {short(k)} is not accepted; accepted: {', '.join(SPACE_OPTIONS)}", f)
        if k in SPACE_OPTION_RANGES:
            lo, hi = SPACE_OPTION_RANGES[k]
            check_number(v, f, lo, hi, integer=k != "width_mult")
        elif k == "small_input":
            if not isinstance(v, bool):
                raise ApiError(422, f"{f}={short(v)} is not accepted; accepted: true or false", f)
        elif k == "variant":
            if not isinstance(v, str) or not re.match(r"^[a-z0-9_]{1,32}$", v):
                raise ApiError(422, f"{f}={short(v)} is not accepted; accepted: a variant name", f)
        elif k == "ratios":
            _check_ratios(v, f)
        elif k == "fixed_units":
            names = [x for x in v.split(",") if x] if isinstance(v, str) else v
            if not isinstance(names, list) or len(names) > MAX_LIST or \
                    not all(isinstance(x, str) and UNIT_RE.match(x) for x in names):
                raise ApiError(422, f"{f}={short(v)} is not accepted; accepted: at most {MAX_LIST} unit names",
                               f)
    return options


def _check_ratios(v: Any, f: str) -> None:
    if isinstance(v, str):
        try:
            start, stop, step = (float(p) for p in v.split(":"))
            ok = all(math.isfinite(x) for x in (start, stop, step)) and 0 < start <= stop <= 1 and step > 0
            n = int((stop - start) / step) + 1 if ok else 0
        except ValueError:
            ok, n = False, 0
        if not ok or n > MAX_RATIOS:
            raise ApiError(422, f"{f}={short(v)} is not accepted; accepted: start:stop:step with 0 < start <= "
                                f"stop <= 1, giving at most {MAX_RATIOS} ratios", f)
        return
    if not isinstance(v, list) or not 0 < len(v) <= MAX_RATIOS:
        raise ApiError(422, f"{f}={short(v)} is not accepted; accepted: a list of 1 to {MAX_RATIOS} numbers "
                            "in (0, 1]", f)
    for r in v:
        check_number(r, f, 1e-6, 1.0)


_INT = re.compile(r"^[+-]?\d{1,12}$")
_FLOAT = re.compile(r"^[+-]?(\d{1,12}\.\d{0,12}|\.\d{1,12}|\d{1,12})([eE][+-]?\d{1,3})?$")


def _no_constants(name: str) -> Any:
    raise ValueError(name)


def query_value(key: str, raw: str) -> Any:
    """A query value as a plain value: true/false, an integer, a finite number, a JSON list of at
    most 256 numbers or strings, else the (short) string itself. Never YAML (no aliases, no tags)."""
    s = raw.strip()
    if s.lower() in ("true", "false"):
        return s.lower() == "true"
    if _INT.match(s):
        return int(s)
    if _FLOAT.match(s):
        return float(s)
    if s.startswith("["):
        try:
            v = json.loads(s, parse_constant=_no_constants)
        except (ValueError, RecursionError):
            raise ApiError(422, f"{key}={short(raw)} is not accepted; accepted: a JSON list of numbers or "
                                "names", key) from None
        if not isinstance(v, list) or len(v) > MAX_LIST or \
                not all(isinstance(x, (int, float, str)) and not isinstance(x, bool) for x in v):
            raise ApiError(422, f"{key}={short(raw)} is not accepted; accepted: a flat list of at most "
                                f"{MAX_LIST} numbers or names", key)
        return v
    if len(s) > MAX_STRING:
        raise ApiError(422, f"{key} is {len(s)} characters; accepted: at most {MAX_STRING}", key)
    return s
