"""Lints on the MyST sources of the book's pages, for slips a strict build does not report."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
PAGES = sorted(BOOK.glob("*.md"))
# {eq}`label` renders with its own parentheses, "(9.3)": "({eq}`label`" would show "((9.3)".
DOUBLE_PARENTHESES = re.compile(r"\(\s*\{eq\}`")


def double_parentheses(text: str) -> list[str]:
    """The lines of ``text`` that open a parenthesis right before an equation reference."""
    return [f"{i}: {line.strip()}" for i, line in enumerate(text.splitlines(), 1) if DOUBLE_PARENTHESES.search(line)]


def test_the_lint_finds_a_wrapped_reference_and_leaves_a_plain_one():
    assert double_parentheses("as in ({eq}`eq-a`), and") == ["1: as in ({eq}`eq-a`), and"]
    assert double_parentheses("as in {eq}`eq-a`, and (equation {eq}`eq-b` with p = 0)") == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_equation_reference_in_double_parentheses(page: Path):
    assert double_parentheses(page.read_text(encoding="utf-8")) == []
