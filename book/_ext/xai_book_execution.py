"""One execution of the book for every check: `make test` runs each chapter once, under nbval.

`make book` and `make pdf` each execute every chapter (``execute_notebooks: force`` in _config.yml),
so that nothing they show can be stale. `make test` runs every chapter under nbval, then builds the
website and the PDF from the same checkout; executing the whole book again for each build (about
13 min each on the 2-core machine) would repeat nbval's work. So nbval's run stores each chapter it
executed without an error in a jupyter-cache folder (the pytest plugin ``xai_nbval_cache`` beside
this file), and when the environment variable ``XAI_BOOK_EXECUTION_CACHE`` names that folder, this
extension switches myst-nb to its jupyter-cache mode with it: the builds reuse the stored outputs,
and execute a chapter themselves only where none is stored.

jupyter-cache matches a notebook by its code cells only, so a change in ``xai_helpers``, in the
bundled data or in the requirements would not invalidate it. The folder therefore carries a
fingerprint of those (:func:`fingerprint`), and a folder with another fingerprint is emptied before
the build starts. Without the variable the extension does nothing.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

ENVIRONMENT_VARIABLE = "XAI_BOOK_EXECUTION_CACHE"
FINGERPRINT_FILE = "xai_helpers.fingerprint"
_REPOSITORY = Path(__file__).resolve().parents[2]
# What a chapter's outputs depend on besides its own code cells (jupyter-cache hashes those).
_INPUTS = ("xai_helpers", "requirements.txt", "pyproject.toml")


def fingerprint(root: Path = _REPOSITORY) -> str:
    """SHA-256 over the path and bytes of every file the chapters import or read outside the book."""
    digest = hashlib.sha256()
    for name in _INPUTS:
        path = root / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" in file.parts:
                continue
            digest.update(file.relative_to(root).as_posix().encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


def prepare_cache(folder: str | Path) -> Path:
    """The cache folder, emptied first when it holds outputs of another version of the package."""
    cache = Path(folder).resolve()
    stamp = cache / FINGERPRINT_FILE
    current = fingerprint()
    if not stamp.is_file() or stamp.read_text().strip() != current:
        shutil.rmtree(cache, ignore_errors=True)  # outputs of another version of the package
        cache.mkdir(parents=True)
        stamp.write_text(current + "\n")
    return cache


def use_shared_execution(app, config) -> None:
    folder = os.environ.get(ENVIRONMENT_VARIABLE, "")
    if not folder:
        return
    cache = prepare_cache(folder)
    config.nb_execution_mode = "cache"
    config.nb_execution_cache_path = str(cache)


def setup(app):
    app.connect("config-inited", use_shared_execution)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
