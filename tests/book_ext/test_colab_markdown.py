"""book/_ext/colab_markdown.py: MyST in the Colab notebooks' text cells, rewritten as plain Markdown."""
from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("colab_markdown", ROOT / "book" / "_ext" / "colab_markdown.py")
cm = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("colab_markdown", cm)
_spec.loader.exec_module(cm)

HEADER = textwrap.dedent("""\
    ---
    jupytext:
      text_representation:
        extension: .md
        format_name: myst
        format_version: 0.13
    kernelspec:
      display_name: Python 3
      language: python
      name: python3
    ---
    """)

FIRST = HEADER + textwrap.dedent('''\
    (chap-first)=
    # The first chapter

    :::{admonition} Learning goals
    :class: tip
    After this chapter you can cite {cite}`smith2020,doe2019`.
    :::

    As {cite:t}`smith2020` showed, the loss obeys

    $$
    L = x^2
    $$ (eq-first-loss)

    and {eq}`eq-first-loss` is all we need. {numref}`fig-first-curve` shows it; see also
    [the next section](sec-first-more) and {ref}`chap-second`.

    ```{code-cell} ipython3
    ---
    mystnb:
      figure:
        caption: A curve.
        name: fig-first-curve
    ---
    plot()
    ```

    (sec-first-more)=
    ## More

    The share is {glue:text}`share:.2f`, e.g. {numref}`fig-first-curve` again.

    ```{code-cell} ipython3
    :tags: [remove-cell]

    glue("share", 0.5, display=False)
    ```

    ```python
    # a code block in the text stays as it is: {cite}`smith2020`
    ```

    ```{admonition} Solution to exercise 1
    :class: dropdown
    The answer is in {numref}`fig-second-map`.
    ```
    ''')

SECOND = HEADER + textwrap.dedent('''\
    (chap-second)=
    # The second chapter

    Some text, unchanged.

    ```{math}
    :label: eq-second-share
    E = \\frac{a}{b}
    ```

    (sec-second-part)=
    ## A part

    ```{code-cell} ipython3
    ---
    mystnb:
      figure:
        caption: A map.
        name: fig-second-map
    ---
    draw()
    ```

    :::{note}
    Unknown {cite}`nobody2000` and {eq}`eq-second-share`.
    :::
    ''')

BIB = textwrap.dedent("""\
    @article{smith2020,
      author = {Smith, Ann and Jones, Bob and M{\\"u}ller, Carl},
      title  = {A {Title}},
      year   = {2020}
    }
    @book{doe2019,
      author = "Jane Doe and Jo{\\~a}o Silva",
      year = 2019,
    }
    """)

TOC = textwrap.dedent("""\
    format: jb-book
    root: intro
    parts:
      - caption: Part
        numbered: true
        chapters:
          - file: 01_first
          - file: 02_second
      - caption: Reference
        chapters:
          - file: notes
    """)


@pytest.fixture
def book(tmp_path: Path) -> tuple[Path, object]:
    (tmp_path / "01_first.md").write_text(FIRST, encoding="utf-8")
    (tmp_path / "02_second.md").write_text(SECOND, encoding="utf-8")
    (tmp_path / "notes.md").write_text("(notes)=\n# Notes\n", encoding="utf-8")
    (tmp_path / "references.bib").write_text(BIB, encoding="utf-8")
    (tmp_path / "_toc.yml").write_text(TOC, encoding="utf-8")
    return tmp_path, cm.build_index(tmp_path, tmp_path / "_toc.yml")


def _converted(book_dir: Path, index, name: str) -> list[str]:
    nb = cm.convert_notebook(jupytext.read(book_dir / f"{name}.md"), name, index)
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


def test_bibtex_text_becomes_unicode():
    assert cm.de_latex('M{\\"u}ller and Jo{\\~a}o \\& {GAN}s') == "Müller and João & GANs"


def test_the_index_numbers_equations_as_the_book_does(book):
    _, index = book
    assert index.targets["eq-first-loss"].number == "1.1"
    assert index.targets["eq-second-share"].number == "2.1"
    assert index.targets["chap-second"].title == "The second chapter"
    assert index.targets["sec-first-more"].kind == "section" and index.targets["fig-second-map"].kind == "figure"
    assert index.titles["notes"] == "Notes"
    assert cm.author_year(index.bib["smith2020"]) == ("Smith et al.", "2020")
    assert cm.author_year(index.bib["doe2019"]) == ("Doe and Silva", "2019")


def test_roles_and_directives_become_plain_markdown(book):
    book_dir, index = book
    first = "\n\n".join(_converted(book_dir, index, "01_first"))
    markups = ("(chap-first)=", ":::", "```{", "{numref}", "{eq}", "{glue", "{ref}", "{cite:t}", "(sec-first-more)")
    for markup in markups:
        assert markup not in first, markup
    assert ("**Learning goals**\n>\n> After this chapter you can cite (Smith et al., 2020; Doe and Silva, 2019)."
            in first)
    assert "As Smith et al. (2020) showed" in first
    assert "$$\nL = x^2\n\\tag{1.1} $$" in first
    assert ("and (1.1) is all we need. The figure below shows it; see also\nthe next section and *The second chapter*."
            in first)
    assert "The share is (computed below), e.g. the figure above again." in first
    assert "```python\n# a code block in the text stays as it is: {cite}`smith2020`\n```" in first
    assert "**Solution to exercise 1**\n>\n> The answer is in a figure in *The second chapter*." in first
    second = "\n\n".join(_converted(book_dir, index, "02_second"))
    assert "$$\nE = \\frac{a}{b}\n\\tag{2.1}\n$$" in second
    assert "**Note**\n>\n> Unknown ([nobody2000]) and (2.1)." in second


def test_the_rewrite_is_idempotent_and_leaves_code_alone(book):
    book_dir, index = book
    nb = jupytext.read(book_dir / "01_first.md")
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    once = cm.convert_notebook(nb, "01_first", index)
    text = [c.source for c in once.cells]
    twice = cm.convert_notebook(once, "01_first", index)
    assert [c.source for c in twice.cells] == text
    assert [c.source for c in twice.cells if c.cell_type == "code"] == code


def test_the_command_rewrites_notebooks_in_place(book, tmp_path):
    book_dir, _ = book
    path = book_dir / "01_first.ipynb"
    nbformat.write(jupytext.read(book_dir / "01_first.md"), path)
    assert cm.main([str(path), "--book", str(book_dir), "--toc", str(book_dir / "_toc.yml")]) == 0
    text = path.read_text(encoding="utf-8")
    assert "{numref}" not in text and "(Smith et al., 2020; Doe and Silva, 2019)" in text
    nbformat.validate(nbformat.read(path, as_version=4))
