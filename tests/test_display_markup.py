"""xai_helpers.display: source code and numbered tables as Markdown for the book's pages."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from xai_helpers.display import MarkdownTable, SourceCode, numbered_table, source_code


def _example(a, b):
    """Two lines of code."""
    return a + b


class _Thing:
    def method(self):
        return "`` ``` backticks"


def test_source_code_is_a_fenced_python_block_and_plain_text():
    shown = source_code(_example)
    assert isinstance(shown, SourceCode)
    markdown = shown._repr_markdown_()
    assert markdown.startswith("```python\ndef _example(a, b):") and markdown.endswith("\n```")
    assert repr(shown) == shown.text and "return a + b" in repr(shown)


def test_source_code_dedents_methods_joins_several_and_outfences_backticks():
    shown = source_code(_Thing.method, _example)
    assert shown.text.startswith("def method(self):") and "\n\ndef _example" in shown.text
    markdown = shown._repr_markdown_()
    assert markdown.startswith("````python\n") and markdown.endswith("\n````")
    with pytest.raises(ValueError):
        source_code()


@dataclass
class _Interval:       # as xai_helpers.stats.Interval formats and ranks
    mean: float
    low: float
    high: float

    def __format__(self, spec):
        spec = spec or ".3f"
        return f"{self.mean:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


ROWS = {
    "Grad-CAM": {"deletion": 0.12, "pointing": _Interval(0.9, 0.8, 1.0)},
    "random (control)": {"deletion": 0.30, "pointing": _Interval(0.2, 0.1, 0.3)},
    "HiRes*CAM": {"deletion": 0.12},
}


def test_numbered_table_is_a_labelled_list_table_with_the_best_in_bold():
    table = numbered_table(ROWS, ["deletion", "pointing"], caption="Means  over\nthe photos.", name="tab-x",
                           formats={"deletion": "{:.2f}", "pointing": "{:.2f}"},
                           best={"deletion": "min", "pointing": "max"})
    assert isinstance(table, MarkdownTable)
    lines = table._repr_markdown_().splitlines()
    assert lines[:5] == ["```{list-table} Means over the photos.", ":header-rows: 1", ":stub-columns: 1",
                         ":name: tab-x", ":class: xai-table"]
    assert lines[-1] == "```"
    body = "\n".join(lines)
    assert "* - method\n  - deletion\n  - pointing" in body
    assert "* - Grad-CAM\n  - **0.12**\n  - **0.90 [0.80, 1.00]**" in body          # best in both columns
    assert "* - HiRes\\*CAM\n  - **0.12**\n  - \u2013" in body                         # a tie, a dash, escaped
    assert "  - 0.30\n  - 0.20 [0.10, 0.30]" in body
    assert repr(table).startswith("Table tab-x: Means over the photos.\nmethod")


def test_numbered_table_rejects_unknown_best_columns_and_directions():
    with pytest.raises(ValueError, match="not columns"):
        numbered_table(ROWS, ["deletion"], caption="c", name="n", best={"pointing": "max"})
    with pytest.raises(ValueError, match="'max', 'min' or 'zero'"):
        numbered_table(ROWS, ["deletion"], caption="c", name="n", best={"deletion": "lowest"})


def test_numbered_table_ignores_nan_when_ranking():
    rows = {"a": {"x": math.nan}, "b": {"x": 0.5}}
    body = numbered_table(rows, ["x"], caption="c", name="n", best={"x": "max"})._repr_markdown_()
    assert "**0.5**" in body and "**nan**" not in body


def test_numbered_table_bolds_the_value_closest_to_zero_among_the_contenders_only():
    rows = {"a": {"rho": -0.05, "x": 0.9}, "b": {"rho": 0.4, "x": 0.5}, "control": {"rho": 0.0, "x": 1.0}}
    body = numbered_table(rows, ["rho", "x"], caption="c", name="n", best={"rho": "zero", "x": "max"},
                          contenders=["a", "b"])._repr_markdown_()
    assert "* - a\n  - **-0.05**\n  - **0.9**" in body                 # the control is closer but does not compete
    assert "* - control\n  - 0.0\n  - 1.0" in body
    with pytest.raises(ValueError, match="not rows"):
        numbered_table(rows, ["rho"], caption="c", name="n", contenders=["z"])


def test_numbered_table_ranks_values_as_printed():
    rows = {"a": {"d": 0.0012, "p": 0.251}, "b": {"d": -0.0004, "p": 0.249}, "c": {"d": 0.02, "p": 0.3}}
    body = numbered_table(rows, ["d", "p"], caption="c", name="n", formats={"d": "{:.2f}", "p": "{:.0%}"},
                          best={"d": "zero", "p": "min"})._repr_markdown_()
    assert "* - a\n  - **0.00**\n  - **25%**" in body and "* - b\n  - **-0.00**\n  - **25%**" in body
    assert "* - c\n  - 0.02\n  - 30%" in body
