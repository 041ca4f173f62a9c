"""Every chapter has a Colab notebook beside it that matches its MyST source.

Colab opens ``.ipynb`` files only, so each ``book/NN_*.md`` has a ``book/NN_*.ipynb`` (made by
``make notebooks``), without outputs, whose cells equal the chapter's cells: its code cells as
they are, its text cells in plain Markdown (MyST roles and directives rewritten by
book/_ext/colab_markdown.py, whose own tests are in tests/book_ext/). Each chapter's first code
cell is the Colab setup cell, which installs xai_helpers from the repository named in
``_config.yml`` when it runs in Colab and does nothing elsewhere.
"""
from __future__ import annotations

import ast
import functools
import importlib.util
import re
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.md"))
FIX = "run `make notebooks`"


def _colab_markdown():
    """book/_ext/colab_markdown.py, the rewriting `make notebooks` applies."""
    spec = importlib.util.spec_from_file_location("colab_markdown", BOOK / "_ext" / "colab_markdown.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("colab_markdown", module)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=1)
def _book_index():
    return _colab_markdown().build_index(BOOK, ROOT / "_toc.yml")


def colab_notebook(chapter: Path):
    """The chapter as `make notebooks` writes it: jupytext's notebook, its text in plain Markdown."""
    return _colab_markdown().convert_notebook(jupytext.read(chapter), chapter.stem, _book_index())


def repository_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")


def colab_cell_source(url: str) -> str:
    """The setup cell every chapter starts with (chapter 01 holds the original)."""
    return f'''# Colab setup: install xai_helpers from the book's repository. Does nothing anywhere else.
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "xai-helpers @ git+{url}"], check=True)'''


def cells(notebook) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in notebook.cells]


def test_there_are_chapters():
    assert CHAPTERS, "no book/NN_*.md chapters found"


def test_no_orphan_notebooks():
    orphans = [nb.name for nb in BOOK.glob("[0-9][0-9]_*.ipynb") if not nb.with_suffix(".md").exists()]
    assert not orphans, f"notebooks without a chapter: {orphans} ({FIX})"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_notebook_matches_chapter(chapter: Path):
    notebook_path = chapter.with_suffix(".ipynb")
    assert notebook_path.exists(), f"{notebook_path.name} is missing ({FIX})"
    source = colab_notebook(chapter)
    notebook = nbformat.read(notebook_path, as_version=4)
    nbformat.validate(notebook)
    expected, actual = cells(source), cells(notebook)
    for i, (want, got) in enumerate(zip(expected, actual)):
        assert want == got, f"{notebook_path.name} cell {i} differs from {chapter.name} ({FIX})"
    assert len(expected) == len(actual), (
        f"{notebook_path.name}: {len(actual)} cells, chapter has {len(expected)} ({FIX})")
    assert notebook.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_notebook_has_no_outputs(chapter: Path):
    notebook_path = chapter.with_suffix(".ipynb")
    if not notebook_path.exists():
        pytest.fail(f"{notebook_path.name} is missing ({FIX})")
    notebook = nbformat.read(notebook_path, as_version=4)
    dirty = [i for i, c in enumerate(notebook.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{notebook_path.name}: cells {dirty} have outputs ({FIX})"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_first_code_cell_is_the_colab_setup(chapter: Path):
    notebook = jupytext.read(chapter)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code, f"{chapter.name} has no code cell"
    first = code[0]
    url = repository_url()
    assert first.source.strip() == colab_cell_source(url), (
        f"{chapter.name}: the first code cell must be the Colab setup cell of chapter 01, "
        f"installing xai-helpers @ git+{url}"
    )
    assert "remove-cell" in first.metadata.get("tags", []), f"{chapter.name}: tag the Colab cell remove-cell"


def test_colab_cell_installs_from_the_configured_repository():
    """The cell's text is Python that pip-installs exactly ``xai-helpers @ git+<repository.url>``."""
    url = repository_url()
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url), url
    tree = ast.parse(colab_cell_source(url))
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert f"xai-helpers @ git+{url}" in strings
    assert "google.colab" in strings


def test_colab_cell_does_nothing_outside_colab(monkeypatch):
    calls = []
    monkeypatch.setattr("subprocess.run", lambda *a, **k: calls.append(a))
    monkeypatch.delitem(__import__("sys").modules, "google.colab", raising=False)
    exec(compile(colab_cell_source(repository_url()), "<colab-cell>", "exec"), {})
    assert calls == []


def test_checker_catches_a_stale_notebook(tmp_path):
    """The comparison is not vacuous: an edited chapter no longer matches its old notebook."""
    chapter = CHAPTERS[0]
    stale = colab_notebook(chapter)
    stale.cells[-1].source += "\nprint('an edit made after the notebook was generated')"
    notebook = nbformat.read(chapter.with_suffix(".ipynb"), as_version=4) if chapter.with_suffix(".ipynb").exists() \
        else jupytext.read(chapter)
    assert cells(stale) != cells(notebook)


def test_colab_notebooks_show_no_myst_markup():
    """Colab renders CommonMark: no role, directive or label line is left in a text cell."""
    markup = re.compile(r"\{[\w:-]+\}`|^[`:]{3,}\{|^\([\w-]+\)=\s*$", re.MULTILINE)
    for chapter in CHAPTERS:
        notebook_path = chapter.with_suffix(".ipynb")
        if not notebook_path.exists():
            continue
        notebook = nbformat.read(notebook_path, as_version=4)
        for i, cell in enumerate(notebook.cells):
            if cell.cell_type == "markdown":
                found = markup.search(cell.source)
                assert not found, f"{notebook_path.name} cell {i} shows MyST markup {found.group(0)!r} ({FIX})"
