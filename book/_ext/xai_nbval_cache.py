"""pytest plugin: nbval's execution of the chapters, stored for the book builds of `make test`.

`make test-notebooks` runs every chapter under nbval (``pytest --nbval-lax -p xai_nbval_cache``).
nbval keeps the outputs of each cell it runs (``IPyNbCell.test_outputs``); this plugin collects
them, and when every cell of a chapter passed, stores the executed chapter in the jupyter-cache
folder named by ``XAI_BOOK_EXECUTION_CACHE``, keyed as myst-nb keys it: the chapter's MyST source
read by myst-nb's own reader, whose code cells (source and metadata) jupyter-cache hashes. The
strict website build and the PDF (``xai_book_execution``) then find every chapter in the cache and
do not execute it again. A chapter with a failing cell is not stored, so a build executes it itself
(and fails). Without the variable the plugin does nothing.
"""
from __future__ import annotations

import os
from pathlib import Path

import nbformat

from xai_book_execution import ENVIRONMENT_VARIABLE, prepare_cache

BOOK = Path(__file__).resolve().parents[1]

# notebook path -> [(cell source, outputs, passed)] in execution order
_RUNS: dict[Path, list[tuple[str, list, bool]]] = {}


def pytest_runtest_makereport(item, call):
    if call.when != "call" or not hasattr(item, "test_outputs") or not hasattr(item, "cell"):
        return
    outputs = [nbformat.from_dict(dict(o)) for o in (item.test_outputs or [])]
    _RUNS.setdefault(Path(str(item.parent.fspath)), []).append((item.cell.source, outputs, call.excinfo is None))


def executed_chapter(source: Path, runs: list[tuple[str, list, bool]]) -> nbformat.NotebookNode | None:
    """The chapter as myst-nb reads it, with nbval's outputs in its code cells; None when a cell
    failed, was not run, or the code cells do not match the ones nbval ran."""
    from myst_nb.core.read import read_myst_markdown_notebook

    notebook = read_myst_markdown_notebook(source.read_text(encoding="utf-8"), add_source_map=True, path=str(source))
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    if len(code) != len(runs) or not all(passed for _, _, passed in runs):
        return None
    for count, (cell, (ran, outputs, _)) in enumerate(zip(code, runs), start=1):
        if cell.source.strip() != ran.strip():
            return None
        for output in outputs:
            if output.output_type == "execute_result":
                output.execution_count = count
        cell.outputs, cell.execution_count = outputs, count
    return notebook


def pytest_sessionfinish(session, exitstatus):
    folder = os.environ.get(ENVIRONMENT_VARIABLE, "")
    if not folder or not _RUNS:
        return
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(str(prepare_cache(folder)))
    stored = []
    for path, runs in _RUNS.items():
        source = BOOK / f"{path.stem}.md"
        notebook = executed_chapter(source, runs) if source.is_file() else None
        if notebook is not None:
            cache.cache_notebook_bundle(CacheBundleIn(notebook, str(source)), check_validity=False, overwrite=True)
            stored.append(path.stem)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"xai_nbval_cache: {len(stored)} of {len(_RUNS)} chapters stored for the book build in {folder}")
