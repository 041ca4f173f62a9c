"""book/_ext/make_slides.py on a small executed notebook made here: what a deck shows and leaves out.

No chapter is executed: the notebook's outputs (a printed line, a PNG, a glued value) are written by
hand. The export to HTML needs nbconvert and is checked where it is installed.
"""
from __future__ import annotations

import base64
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import make_slides  # noqa: E402
from colab_markdown import BookIndex  # noqa: E402

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()


def _code(source: str, outputs: list, tags: list[str] | None = None, **metadata) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source, outputs=outputs)
    if tags:
        cell.metadata["tags"] = tags
    cell.metadata.update(metadata)
    return cell


def _chapter() -> nbformat.NotebookNode:
    printed = nbformat.v4.new_output("stream", name="stdout", text="accuracy 0.93\n")
    figure = nbformat.v4.new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"})
    glued = nbformat.v4.new_output("display_data", data={make_slides.GLUE_PREFIX + "text/plain": "0.8765"},
                                   metadata={"scrapbook": {"name": "acc", "mime_prefix": make_slides.GLUE_PREFIX}})
    answer = nbformat.v4.new_output("stream", name="stdout", text="the secret answer is 42\n")
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("(chap-x)=\n# A chapter\n\nIntroduction."),
        _code("import setup", [], ["remove-cell"]),
        nbformat.v4.new_markdown_cell("## First section\n\nThe accuracy is {glue:text}`acc:.2f`.\n\n"
                                      "### A detail\n\nMore."),
        _code("print('accuracy', 0.93)", [printed, glued]),
        _code("draw()", [figure], ["hide-input"], mystnb={"figure": {"caption": "A **small** figure."}}),
        nbformat.v4.new_markdown_cell("Text after the figure."),
        _code("assert True", [], ["remove-cell"]),
        nbformat.v4.new_markdown_cell("## Exercises\n\n1. What is the answer?\n\n"
                                      "```{admonition} Solution to exercise 1\n:class: dropdown\n"
                                      "Think of the secret.\n```"),
        _code("print('the secret answer is', 42)", [answer], ["hide-input", "solution"]),
    ])


@pytest.fixture(scope="module")
def deck() -> nbformat.NotebookNode:
    return make_slides.slide_notebook(_chapter(), "99_x", BookIndex())


def _kinds(deck) -> list[tuple[str, str]]:
    return [(c.metadata["slideshow"]["slide_type"], c.source.splitlines()[0] if c.source else "<outputs>")
            for c in deck.cells]


def test_headings_start_slides_and_a_figure_gets_its_own(deck):
    assert _kinds(deck) == [
        ("slide", "# A chapter"),           # a heading and the text after it stay together
        ("slide", "## First section"), ("subslide", "### A detail"),
        ("-", "print('accuracy', 0.93)"),
        ("subslide", "<outputs>"), ("-", '<div class="xai-caption">'),
        ("subslide", "Text after the figure."),
        ("slide", "## Exercises"),
    ]


def test_hidden_checks_and_solutions_are_left_out(deck):
    text = "\n".join(c.source for c in deck.cells)
    outputs = str([c.get("outputs") for c in deck.cells])
    assert "import setup" not in text and "assert True" not in text
    assert "Solution" not in text and "Think of the secret" not in text and "secret answer" not in outputs
    assert "1. What is the answer?" in text      # the exercise stays


def test_glued_values_and_captions_are_filled_in(deck):
    text = "\n".join(c.source for c in deck.cells)
    assert "The accuracy is 0.88." in text and "{glue" not in text and "(chap-x)=" not in text
    assert "A **small** figure." in text
    printed = next(c for c in deck.cells if c.source.startswith("print('accuracy'"))
    assert [o.get("text") for o in printed.outputs] == ["accuracy 0.93\n"]   # the glue output is not shown
    figure = next(c for c in deck.cells if make_slides.has_figure(c))
    assert figure.source == "" and figure.metadata["transient"] == {"remove_source": True}


def test_a_chapter_without_its_outputs_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="no executed notebook"):
        make_slides.from_folder(tmp_path, "99_x")


def test_the_deck_loads_nothing_from_outside(deck, tmp_path):
    pytest.importorskip("nbconvert")
    html = make_slides.export(deck, "A chapter")
    assert '<script src="reveal.js/dist/reveal.js">' in html and 'href="reveal.js/dist/theme/white.css"' in html
    assert f'src="{make_slides.MATHJAX_URL}"' in html
    for cdn in ("unpkg.com", "cdnjs", "cdn.jsdelivr", "require.js", "jquery"):
        assert cdn not in html, cdn
    assert html.count("<section") >= 6 and "data:image/png;base64," in html
    assert "secret answer" not in html
