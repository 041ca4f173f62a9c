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
"""
from __future__ import annotations

from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging

logger = logging.getLogger(__name__)

TAG_CLASS = "tag_solution"
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


class FoldSolutions(SphinxPostTransform):
    """HTML only: solution cells go inside their dropdowns (see the module docstring)."""

    default_priority = 210   # after myst-nb has wrapped hidden inputs (HideInputCells, 199)
    formats = ("html",)

    def run(self, **kwargs: Any) -> None:
        for cell in fold_solutions(self.document):
            logger.warning("a code cell tagged 'solution' must follow its solution, a dropdown "
                           "admonition (or another solution cell of it); it stays in plain view",
                           location=cell, type="xai", subtype="solution")


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_post_transform(FoldSolutions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
