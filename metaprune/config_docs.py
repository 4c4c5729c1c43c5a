"""The configuration reference, docs/configuration.md, generated from the config dataclasses.

``python -m metaprune.config_docs`` rewrites docs/configuration.md; ``--check`` exits 1 if the
committed file differs (a test runs the same comparison, so the reference cannot go stale). Each key's
description is the comment on its line in the dataclass (or the comment lines just above it); its
type, default and range come from the dataclass and :data:`metaprune.config.NAMED_RANGES`.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import sys
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, Callable

from .config import FLOAT_RANGE, INT_RANGE, NAMED_RANGES
from .store.fileio import write_text

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def _schemas() -> list[tuple[str, type, str, str]]:
    """(title, dataclass, where it is read, example) for every config file kind."""
    from .metatrain.config import MetaTrainConfig
    from .search.config import SearchConfig
    from .training.recipe import TrainConfig

    return [
        ("Meta-training config", MetaTrainConfig,
         "`metaprune train-pruningnet -c NAME|FILE`; shipped: `configs/*.yaml`",
         "metaprune train-pruningnet -c smoke --run-dir runs/demo --set train.lr=0.1"),
        ("Search config", SearchConfig,
         "`metaprune search RUN -c NAME|FILE`; shipped: `configs/search/*.yaml`",
         "metaprune search runs/demo -c smoke --set generations=5"),
        ("Scratch-training recipe", TrainConfig,
         "`metaprune train RUN --recipe NAME|FILE`; shipped: `configs/train/*.yaml`; `seed` and `data` "
         "default to the run's own (a `null` in the recipe's `data` keeps the run's value)",
         "metaprune train runs/demo --spec best.json --recipe smoke --set recipe.epochs=8"),
    ]


def _accepted_now() -> dict[str, Callable[[], str]]:
    """Keys whose accepted values are registries, listed as they are when the reference is built."""
    def datasets() -> str:
        from .data import DATASETS
        return ", ".join(f"`{d}`" for d in DATASETS)

    def spaces() -> str:
        from pruningnet import list_spaces
        return (", ".join(f"`{s}`" for s in list_spaces("*"))
                + ", or `model:MODULE:CALLABLE` (any network torch.fx traces, docs/spaces.md)")

    return {"data.name": datasets, "space.name": spaces}


def field_comments(cls: type) -> dict[str, str]:
    """Each field's comment: the one on its line, else the comment lines directly above it."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.ENDMARKER):
            code_lines.add(tok.start[0])
    out = {}
    (node,) = ast.parse(source).body
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        line = stmt.lineno
        if line in comments:
            out[stmt.target.id] = comments[line]
            continue
        above = []
        line -= 1
        while line in comments and line not in code_lines:
            above.insert(0, comments[line])
            line -= 1
        if above:
            out[stmt.target.id] = " ".join(above)
    return out


def _type_text(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(tp) if a is not type(None)]
        text = " or ".join(_type_text(a) for a in kinds)
        return text + " or null" if len(kinds) < len(typing.get_args(tp)) else text
    if origin in (list, tuple):
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return f"list of {_type_text(item)}"
    if origin is dict or tp is dict:
        return "mapping"
    return {bool: "bool", int: "int", float: "float", str: "string"}.get(tp, getattr(tp, "__name__", str(tp)))


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, (list, dict)) and not value:
        return "`[]`" if isinstance(value, list) else "`{}`"
    return f"`{value}`".replace("'", "")


def _range_text(name: str) -> str:
    """A key's own range (any other integer or number has the general one, stated once at the top)."""
    if name not in NAMED_RANGES:
        return ""
    lo, hi = NAMED_RANGES[name]
    return f"{lo:,} .. {hi:,}"


def _rows(cls: type, prefix: str, accepted: dict[str, Callable[[], str]]) -> tuple[list[str], list[tuple[str, type]]]:
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    rows, sections = [], []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            sections.append((prefix + f.name, tp))
            continue
        key = prefix + f.name
        doc = comments.get(f.name, "").replace("``", "`")
        if key in accepted:
            doc = (doc + "; " if doc else "") + "accepted: " + accepted[key]()
        rows.append(f"| `{key}` | {_type_text(tp)} | {_default_text(f)} | {_range_text(f.name)} | "
                    f"{doc.replace('|', chr(92) + '|')} |")
    return rows, sections


def _doc_of(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    if doc.startswith(cls.__name__ + "("):  # dataclasses' generated signature: no docstring written
        return ""
    return " ".join(doc.split()).replace("``", "`")


def undocumented() -> list[str]:
    """Keys with no description in their dataclass (the reference test requires none)."""
    missing = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        comments = field_comments(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], prefix + f.name + ".")
            elif f.name not in comments:
                missing.append(prefix + f.name)

    for _, cls, _, _ in _schemas():
        walk(cls, "")
    return missing


def render() -> str:
    """The whole of docs/configuration.md."""
    accepted = _accepted_now()
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m metaprune.config_docs` from the config dataclasses; do not edit by hand."
        " tests/test_config_docs.py fails when this file and the code disagree. -->",
        "",
        "Three kinds of YAML file configure the jobs. A shipped config goes by name (`-c smoke`,",
        "`search -c pareto`, `train --recipe cifar10`) or any file by path; `--set KEY=VALUE` (repeatable)",
        "overrides one key, dotted for sections (`--set train.lr=0.1`). An unknown key, a value of the wrong",
        "type or out of range is refused before any work starts, in one line that names the key and what is",
        "accepted (exit 2). YAML anchors and aliases are refused.",
        "",
        f"Every integer not given a range below lies in {INT_RANGE[0]:,} .. {INT_RANGE[1]:,} and every number is "
        f"finite and within {FLOAT_RANGE[0]:g} .. {FLOAT_RANGE[1]:g}; each section adds the bounds that depend on "
        "meaning (for example `lr > 0`, `momentum < 1`), named in its refusal message.",
        "",
    ]
    for title, cls, where, example in _schemas():
        out += [f"## {title}", "", f"Read by {where}.", "", "```bash", example, "```", ""]
        doc = _doc_of(cls)
        if doc:
            out += [doc, ""]
        pending = [("", cls)]
        while pending:
            prefix, section = pending.pop(0)
            rows, subs = _rows(section, prefix + "." if prefix else "", accepted)
            if prefix:
                out += [f"### `{prefix}`", ""]
                doc = _doc_of(section)
                if doc:
                    out += [doc, ""]
            if rows:
                out += ["| key | type | default | range | what it does |", "|---|---|---|---|---|", *rows, ""]
            pending = subs + pending
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write docs/configuration.md, or with ``--check`` say whether it is current."""
    ap = argparse.ArgumentParser(prog="python -m metaprune.config_docs", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed file is not current")
    ap.add_argument("-o", "--output", type=Path, default=DOC_PATH)
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.is_file() and args.output.read_text() == text
        print(f"{args.output}: {'current' if current else 'stale; run python -m metaprune.config_docs'}")
        return 0 if current else 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.output, text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
