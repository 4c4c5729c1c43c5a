"""docs/configuration.md is generated from the config dataclasses and must match them."""
from __future__ import annotations

import dataclasses

from metaprune.config_docs import DOC_PATH, field_comments, render, undocumented


def test_committed_reference_equals_the_generated_one():
    assert DOC_PATH.read_text() == render(), "docs/configuration.md is stale; run: python -m metaprune.config_docs"


def test_every_config_key_has_a_description():
    assert undocumented() == []


def test_comments_are_read_from_the_field_line_or_the_lines_above():
    @dataclasses.dataclass
    class Example:
        a: int = 1  # on the line
        # above, first line
        # above, second line
        b: int = 2
        c: int = 3

    assert field_comments(Example) == {"a": "on the line", "b": "above, first line above, second line"}
    text = render()
    assert "| `train.lr` | float | `0.25` |" in text and "| `recipe.precision` |" in text
