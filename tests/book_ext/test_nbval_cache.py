"""nbval's run stored for the book build (book/_ext/xai_nbval_cache.py): what it stores, and that
myst-nb finds it, on real chapter sources and on a small MyST notebook."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_cache import get_cache
from myst_nb.core.read import read_myst_markdown_notebook

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
plugin = importlib.import_module("xai_nbval_cache")

SOURCE = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# A page

```{code-cell} ipython3
:tags: [remove-cell]

x = 1
```

Some prose.

```{code-cell} ipython3
print(x + 1)
x
```
"""


def _runs(passed=True):
    stream = nbformat.v4.new_output("stream", name="stdout", text="2\n")
    result = nbformat.v4.new_output("execute_result", data={"text/plain": "1"})
    return [("x = 1", [], True), ("print(x + 1)\nx", [stream, result], passed)]


def test_outputs_go_into_the_code_cells_with_consecutive_counts(tmp_path: Path) -> None:
    source = tmp_path / "page.md"
    source.write_text(SOURCE)
    notebook = plugin.executed_chapter(source, _runs())
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == [1, 2]
    assert code[1].outputs[0].text == "2\n" and code[1].outputs[1].execution_count == 2
    assert code[0].metadata["tags"] == ["remove-cell"]          # the reader's metadata, kept


def test_a_failed_missing_or_different_cell_stores_nothing(tmp_path: Path) -> None:
    source = tmp_path / "page.md"
    source.write_text(SOURCE)
    assert plugin.executed_chapter(source, _runs(passed=False)) is None
    assert plugin.executed_chapter(source, _runs()[:1]) is None
    changed = [("x = 2", [], True), *_runs()[1:]]
    assert plugin.executed_chapter(source, changed) is None


def test_the_build_finds_the_stored_chapter(tmp_path: Path) -> None:
    # myst-nb's cache client matches by jupyter-cache's hash of the notebook its reader makes.
    source = tmp_path / "page.md"
    source.write_text(SOURCE)
    cache = get_cache(str(tmp_path / "cache"))
    from jupyter_cache.base import CacheBundleIn

    cache.cache_notebook_bundle(CacheBundleIn(plugin.executed_chapter(source, _runs()), str(source)),
                                check_validity=False, overwrite=True)
    as_the_build_reads_it = read_myst_markdown_notebook(SOURCE, add_source_map=True, path=str(source))
    record = cache.match_cache_notebook(as_the_build_reads_it)
    _, merged = cache.merge_match_into_notebook(as_the_build_reads_it)
    assert record is not None and [c.execution_count for c in merged.cells if c.cell_type == "code"] == [1, 2]


@pytest.mark.parametrize("chapter", sorted(p.name for p in (ROOT / "book").glob("[0-9][0-9]_*.md")))
def test_nbval_runs_the_code_cells_the_build_would_run(chapter: str) -> None:
    # nbval runs the jupytext conversion of a chapter; the cache is keyed on myst-nb's reading of it.
    # The two must list the same code, cell by cell, or no chapter is ever found in the cache.
    import jupytext

    text = (ROOT / "book" / chapter).read_text(encoding="utf-8")
    by_jupytext = [c.source for c in jupytext.reads(text, fmt="md:myst").cells if c.cell_type == "code"]
    by_myst_nb = [c.source for c in read_myst_markdown_notebook(text).cells if c.cell_type == "code"]
    assert [s.strip() for s in by_jupytext] == [s.strip() for s in by_myst_nb]
