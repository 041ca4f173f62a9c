"""Every exercise of every chapter has a worked solution below the exercise list.

A chapter's ``## Exercises`` section is a numbered Markdown list. Each item N needs a MyST dropdown
admonition titled "Solution to exercise N" in the same section::

    ```{admonition} Solution to exercise 3
    :class: dropdown
    ...
    ```

The test parses the MyST sources only (no notebook is run); the solutions' code and its asserts run
with the chapters (nbval and the book build).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.md"))

# Chapters whose solutions are still to be written (issue 13). Listed by name, so that a chapter
# that gains its solutions makes its xfail fail (strict) and must be taken off this list.
WITHOUT_SOLUTIONS_YET: set[str] = set()

EXERCISE_ITEM = re.compile(r"^(\d+)\. \S")
SOLUTION = re.compile(r"^(`{3,}|:{3,})\{admonition\}\s+Solution to exercise (\d+)\s*$")


def exercises_section(text: str) -> list[str]:
    """The lines from ``## Exercises`` to the next heading of level 1 or 2 (or the end)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "## Exercises"]
    if not starts:
        return []
    section, fence = [], None
    for line in lines[starts[0] + 1 :]:
        marker = re.match(r"^(`{3,}|:{3,})", line)
        if fence is None and marker:
            fence = marker.group(1)                  # a code cell or directive opens
        elif fence is not None and line.strip() == fence:
            fence = None                             # ... and closes
        elif fence is None and re.match(r"^#{1,2} ", line):
            break                                    # a heading (not a comment inside a code cell)
        section.append(line)
    return section


def exercise_numbers(section: list[str]) -> list[int]:
    """The numbers of the top-level list items (unindented ``N. text``) before the first solution."""
    numbers = []
    for line in section:
        if SOLUTION.match(line) or line.startswith("```"):
            break           # the list ends where the first solution or code cell begins
        match = EXERCISE_ITEM.match(line)
        if match:
            numbers.append(int(match.group(1)))
    return numbers


def solution_numbers(section: list[str]) -> list[int]:
    return [int(m.group(2)) for m in map(SOLUTION.match, section) if m]


def test_parser_on_a_small_example():
    text = "\n".join([
        "## Exercises", "", "1. First", "   continued.", "2. Second", "",
        "```{admonition} Solution to exercise 1", ":class: dropdown", "1. not an exercise", "```",
        "```{code-cell} ipython3", "# a comment, not a heading", "x = 1", "```",
        "```{admonition} Solution to exercise 2", ":class: dropdown", "```", "## Next",
        "```{admonition} Solution to exercise 3", "```",
    ])
    section = exercises_section(text)
    assert exercise_numbers(section) == [1, 2]
    assert solution_numbers(section) == [1, 2]   # the one after "## Next" is outside the section


@pytest.mark.parametrize(
    "chapter",
    [pytest.param(c, marks=pytest.mark.xfail(strict=True, reason="solutions not written yet (issue 13)"))
     if c.stem in WITHOUT_SOLUTIONS_YET else c for c in CHAPTERS],
    ids=lambda p: p.stem,
)
def test_every_exercise_has_a_solution(chapter: Path):
    section = exercises_section(chapter.read_text(encoding="utf-8"))
    exercises = exercise_numbers(section)
    assert exercises, f"{chapter.name}: no numbered list under '## Exercises'"
    assert exercises == list(range(1, len(exercises) + 1)), (
        f"{chapter.name}: exercises are numbered {exercises}; number them 1, 2, 3, ...")
    solutions = solution_numbers(section)
    missing = sorted(set(exercises) - set(solutions))
    assert not missing, (
        f"{chapter.name}: no solution for exercise(s) {missing}; add a '```{{admonition}} Solution to "
        f"exercise N' block with ':class: dropdown' below the exercise list")
    extra = sorted(set(solutions) - set(exercises))
    assert not extra, f"{chapter.name}: solutions {extra} have no exercise of that number"
    assert len(solutions) == len(set(solutions)), f"{chapter.name}: a solution appears twice: {solutions}"
    assert solutions == sorted(solutions), f"{chapter.name}: put the solutions in order: {solutions}"


@pytest.mark.parametrize("chapter", [c for c in CHAPTERS if c.stem not in WITHOUT_SOLUTIONS_YET],
                         ids=lambda p: p.stem)
def test_solutions_are_dropdowns(chapter: Path):
    """A solution is hidden behind a toggle on the website: its admonition has the dropdown class."""
    lines = chapter.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if SOLUTION.match(line):
            options = lines[i + 1 : i + 4]
            assert any(o.strip().startswith(":class:") and "dropdown" in o for o in options), (
                f"{chapter.name}, line {i + 1}: add ':class: dropdown' under '{line.strip()}'")
