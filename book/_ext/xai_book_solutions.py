"""Solutions stay hidden until a reader opens them (loaded by ``sphinx.local_extensions`` in _config.yml).

A worked solution is written as a dropdown admonition (the toggle the reader clicks) followed by the
code cell that computes and checks it::

    ```{admonition} Solution to exercise 1
    :class: dropdown
    The prose of the answer.
    ```

    ```{code-cell} ipython3
    :tags: [hide-input, solution]

    ...  # prints the numbers, draws the figure
    ```

A MyST admonition cannot hold a code cell, so without help the cell's output (the printed answer,
the figure) would sit in plain view below the closed toggle. On the website this post-transform
moves every code cell tagged ``solution`` into the dropdown admonition just before it, where the
toggle hides it with the prose; ``hide-input`` still folds the code away inside the opened
solution. Nothing runs in the browser for this: the page is arranged when it is written. Several
solution cells may follow one admonition (each joins it in turn); cells tagged ``remove-cell``
(hidden asserts) may sit between them, since they never reach the page.

A ``solution`` cell whose neighbour above is not a dropdown admonition is a mistake in the chapter:
it is reported as a warning (which fails the strict build) and left where it is.

The PDF has no toggles: there the cells stay after their admonitions, and the solutions are printed
in full (book/_ext/xai_book_latex.py).

**The student edition** (``make book-student``, issue 30): with the environment variable
``XAI_BOOK_EDITION=student`` (or the Sphinx setting ``xai_book_edition = "student"``) the website
leaves the worked solutions out, so that a course can set the exercises as homework. A solution is
a dropdown admonition whose title starts with "Solution", together with the cells folded into it;
each one is removed from the page, and the first of a section is replaced by a short note that says
where the solutions went. Everything else stays: the exercises, hints (dropdowns not titled
"Solution ..."), and the hidden asserts, which run as they always do. The default edition,
``instructor``, keeps the solutions, and the PDF always does.
"""
from __future__ import annotations

import os
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging

logger = logging.getLogger(__name__)

TAG_CLASS = "tag_solution"
EDITION_VARIABLE = "XAI_BOOK_EDITION"
EDITIONS = ("instructor", "student")
#: What a student reads where the solutions of a section were.
WITHHELD_TITLE = "Solutions"
WITHHELD_TEXT = ("This is the student edition of the book, so the worked solutions are not here: "
                 "try each exercise on your own first. Your instructor has the edition with the "
                 "solutions, and is glad to talk your answers through.")
WITHHELD_CLASS = "xai-solutions-withheld"
#: Nodes that never show on the page and may stand between a solution and its cell.
_INVISIBLE = (nodes.target, nodes.comment, nodes.substitution_definition, nodes.system_message)


def is_solution_cell(node: nodes.Node) -> bool:
    """A code cell (myst-nb container) tagged ``solution``."""
    return (isinstance(node, nodes.container) and node.get("nb_element") == "cell_code"
            and TAG_CLASS in node.get("classes", []))


def is_dropdown(node: nodes.Node) -> bool:
    """An admonition that the site shows folded (``:class: dropdown``)."""
    return isinstance(node, nodes.Admonition) and "dropdown" in node.get("classes", [])


def _previous_visible(node: nodes.Element) -> nodes.Node | None:
    parent = node.parent
    index = parent.index(node)
    for sibling in reversed(parent.children[:index]):
        if not isinstance(sibling, _INVISIBLE):
            return sibling
    return None


def fold_solutions(document: nodes.document) -> list[nodes.Element]:
    """Move each ``solution`` cell into the dropdown admonition before it; return the cells that
    could not be placed (their neighbour above is not a dropdown)."""
    misplaced = []
    for cell in list(document.findall(is_solution_cell)):
        before = _previous_visible(cell) if cell.parent is not None else None
        if before is None or not is_dropdown(before):
            misplaced.append(cell)
            continue
        cell.parent.remove(cell)
        before.append(cell)
    return misplaced


def is_solution(node: nodes.Node) -> bool:
    """A worked solution: a dropdown admonition titled "Solution ...", or one that holds solution
    cells (after :func:`fold_solutions`). A hint, a dropdown with another title, is not."""
    if not is_dropdown(node):
        return False
    titles = [child for child in node.children if isinstance(child, nodes.title)]
    title = titles[0].astext().strip().lower() if titles else ""
    return title.startswith("solution") or any(True for _ in node.findall(is_solution_cell))


def withheld_note() -> nodes.Element:
    note = nodes.admonition(classes=["note", WITHHELD_CLASS])
    note += nodes.title(text=WITHHELD_TITLE)
    note += nodes.paragraph(text=WITHHELD_TEXT)
    return note


def withhold_solutions(document: nodes.document) -> int:
    """The student edition: remove every solution (its cells inside it, so run
    :func:`fold_solutions` first); the first solution of each section makes way for one note.
    Returns how many solutions were removed."""
    solutions = list(document.findall(is_solution))
    noted: set[int] = set()
    for solution in solutions:
        parent = solution.parent
        if id(parent) not in noted:
            noted.add(id(parent))
            parent.insert(parent.index(solution), withheld_note())
        parent.remove(solution)
    return len(solutions)


def edition(config: Any) -> str:
    return str(getattr(config, "xai_book_edition", "instructor"))


class FoldSolutions(SphinxPostTransform):
    """HTML only: solution cells go inside their dropdowns, and in the student edition the
    solutions leave the page (see the module docstring)."""

    default_priority = 210   # after myst-nb has wrapped hidden inputs (HideInputCells, 199)
    formats = ("html",)

    def run(self, **kwargs: Any) -> None:
        for cell in fold_solutions(self.document):
            logger.warning("a code cell tagged 'solution' must follow its solution, a dropdown "
                           "admonition (or another solution cell of it); it stays in plain view",
                           location=cell, type="xai", subtype="solution")
        if edition(self.config) == "student":
            withhold_solutions(self.document)


def check_edition(app: Sphinx, config: Any) -> None:
    if edition(config) not in EDITIONS:
        raise ExtensionError(f"xai_book_edition (or ${EDITION_VARIABLE}) is {edition(config)!r}; "
                             f"it must be one of {', '.join(EDITIONS)}")
    if edition(config) == "student":
        logger.info("the student edition: the website leaves out the worked solutions")


def setup(app: Sphinx) -> dict[str, Any]:
    # "html": the solutions leave when the pages are written, so a change rewrites every page
    app.add_config_value("xai_book_edition", os.environ.get(EDITION_VARIABLE, "") or "instructor", "html")
    app.connect("config-inited", check_edition)
    app.add_post_transform(FoldSolutions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
