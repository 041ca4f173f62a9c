"""Lints on the MyST sources of the book's pages, for slips a strict build does not report."""
from __future__ import annotations

import re
import textwrap
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


# ---- issue 25: solutions, headings, the citation block ------------------------------------------

CELL_OR_ADMONITION = re.compile(r"^(`{3,}|:{3,})\{(code-cell|admonition)\}\s*(.*)$")


def blocks(text: str) -> list[tuple[str, str, list[str], int]]:
    """The code cells and admonitions of a MyST page, in order: (kind, argument, lines, line number)."""
    lines, found, i = text.splitlines(), [], 0
    while i < len(lines):
        match = CELL_OR_ADMONITION.match(lines[i])
        if not match:
            i += 1
            continue
        fence, start = match.group(1), i
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            i += 1
        found.append((match.group(2), match.group(3), lines[start + 1:i], start + 1))
        i += 1
    return found


def tags(cell_lines: list[str]) -> list[str]:
    head = "\n".join(cell_lines[:15])
    match = re.search(r"tags:\s*\[(.*?)\]", head)
    return [t.strip() for t in match.group(1).split(",")] if match else []


def unfolded_solutions(text: str) -> list[str]:
    """Code cells that follow a "Solution" dropdown (hidden assert cells aside) without the tag
    ``solution``, which would leave their output in plain view on the website
    (book/_ext/xai_book_solutions.py), and ``solution`` cells that follow no solution."""
    problems, inside = [], False
    for kind, argument, body, line in blocks(text):
        if kind == "admonition":
            inside = (argument.strip().lower().startswith("solution")
                      and any(":class:" in b and "dropdown" in b for b in body[:4]))
            continue
        cell_tags = tags(body)
        if "remove-cell" in cell_tags:
            continue
        if inside and "solution" not in cell_tags:
            problems.append(f"line {line}: a cell after a solution without the tag 'solution'")
        if not inside and "solution" in cell_tags:
            problems.append(f"line {line}: a 'solution' cell that follows no solution")
        inside = inside and "solution" in cell_tags   # several cells may follow one solution
    return problems


def test_the_solution_lint_finds_an_untagged_cell_and_a_stray_tag():
    page = textwrap.dedent("""\
        ```{admonition} Solution to exercise 1
        :class: dropdown
        Text.
        ```

        ```{code-cell} ipython3
        :tags: [hide-input]

        print(1)
        ```

        ```{code-cell} ipython3
        :tags: [solution]

        print(2)
        ```
        """)
    assert unfolded_solutions(page) == ["line 6: a cell after a solution without the tag 'solution'",
                                        "line 12: a 'solution' cell that follows no solution"]
    fixed = page.replace(":tags: [hide-input]", ":tags: [hide-input, solution]")
    assert unfolded_solutions(fixed) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_solution_cells_are_tagged(page: Path):
    assert unfolded_solutions(page.read_text(encoding="utf-8")) == []


NUMBERED_HEADING = re.compile(r"^#{2,6}\s+\d+(\.\d+)*\.?\s")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_headings_carry_no_numbers_of_their_own(page: Path):
    """The site numbers sections ("15.1."): a heading "## 1. Load a model" would read "15.1. 1. Load"."""
    fence, found = None, []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        opening = re.match(r"^(`{3,}|~{3,})", line)
        if opening:
            if fence is None:
                fence = opening.group(1)
            elif line.strip() == fence:
                fence = None
            continue
        if fence is None and NUMBERED_HEADING.match(line):
            found.append(f"{number}: {line}")
    assert found == []


def test_the_citation_block_names_the_configured_repository():
    import yaml

    url = yaml.safe_load((BOOK.parent / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    intro = (BOOK / "intro.md").read_text(encoding="utf-8")
    bibtex = intro[intro.index("```bibtex"):]
    assert f"url       = {{{url}}}" in bibtex
