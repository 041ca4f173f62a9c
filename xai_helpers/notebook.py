"""Numbers from the code into the prose, wherever a chapter runs.

The book's chapters put every measured number into their text with :func:`glue`: on the website
(Jupyter Book with myst-nb) the value replaces a ``{glue:text}`` role in the prose, so the text
cannot drift from what the code computed. In Jupyter or Colab, where myst-nb is usually not
installed, the same call does nothing, and the chapter still runs.
"""
from __future__ import annotations

from typing import Any

__all__ = ["glue"]


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` under ``name`` for the prose's ``{glue:text}`name``` role (``myst_nb.glue``);
    a no-op where myst-nb is not installed."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return
    myst_glue(name, value, display=display)
