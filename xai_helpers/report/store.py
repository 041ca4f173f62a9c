"""Where the trust report keeps its per-image results: one SQLite file per process.

One row per image, method and check (``value``, the detail as JSON, and a status: ``"ok"``, or
``"error"`` with the message), and one row per image (its status and any note, e.g. "converted from
grey-scale"). An image's rows are committed together with its own row, when the image is done
(:meth:`ResultStore.note_image`), so a run that is killed loses at most the image in progress, and a
run started again skips what is stored (:meth:`ResultStore.done`); one commit per image rather than
per row spares a disk write (an fsync) per row.
Several processes never share a file: each writes its own (``results-rank{r}.sqlite``), and
:func:`merge` reads them all.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Row", "ResultStore", "merge"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (image TEXT, method TEXT, check_name TEXT, value REAL, detail TEXT,
                                    status TEXT, message TEXT, PRIMARY KEY (image, method, check_name));
CREATE TABLE IF NOT EXISTS images (image TEXT PRIMARY KEY, status TEXT, note TEXT);
"""


@dataclass(frozen=True)
class Row:
    """One result: ``image``, ``method``, ``check``, ``value`` (NaN where the check failed), ``detail``,
    ``status`` (``"ok"`` or ``"error"``) and ``message``."""

    image: str
    method: str
    check: str
    value: float
    detail: dict[str, Any]
    status: str = "ok"
    message: str = ""


class ResultStore:
    """A SQLite file of :class:`Row` s (``path=None``: in memory)."""

    def __init__(self, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(":memory:" if self.path is None else str(self.path))
        self.db.executescript(_SCHEMA)

    def add(self, row: Row) -> None:
        """Store ``row`` (replacing an earlier one for the same image, method and check); committed by
        the image's :meth:`note_image` (or :meth:`commit`)."""
        value = None if math.isnan(row.value) else row.value
        self.db.execute(
            "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?)",
            (row.image, row.method, row.check, value, json.dumps(row.detail), row.status, row.message),
        )

    def note_image(self, image: str, status: str, note: str = "") -> None:
        """Record an image's status (``"ok"`` or ``"error"``) and a note for the reader (an empty note
        keeps the one recorded before), and commit it with the image's rows."""
        self.db.execute(
            "INSERT INTO images VALUES (?, ?, ?) ON CONFLICT(image) DO UPDATE SET status = excluded.status, "
            "note = CASE WHEN excluded.note = '' THEN images.note ELSE excluded.note END",
            (image, status, note),
        )
        self.db.commit()

    def commit(self) -> None:
        """Write what was added since the last commit to the file."""
        self.db.commit()

    def done(self) -> set[tuple[str, str, str]]:
        """``{(image, method, check)}`` already stored."""
        return {tuple(r) for r in self.db.execute("SELECT image, method, check_name FROM results")}

    def rows(self) -> list[Row]:
        """Every stored result, ordered by image, method and check."""
        out = []
        for image, method, check, value, detail, status, message in self.db.execute(
            "SELECT * FROM results ORDER BY image, method, check_name"
        ):
            out.append(
                Row(image, method, check, math.nan if value is None else value, json.loads(detail), status, message)
            )
        return out

    def images(self) -> dict[str, tuple[str, str]]:
        """``{image: (status, note)}``."""
        return {image: (status, note) for image, status, note in self.db.execute("SELECT * FROM images ORDER BY image")}

    def close(self) -> None:
        """Commit and close (rows added since an image's :meth:`note_image` are kept too)."""
        self.db.commit()
        self.db.close()


def merge(paths: Iterable[str | Path], into: ResultStore | None = None) -> ResultStore:
    """One store holding the rows of every file in ``paths`` (e.g. one per process)."""
    merged = into if into is not None else ResultStore()
    for path in paths:
        part = ResultStore(path)
        for row in part.rows():
            merged.add(row)
        for image, (status, note) in part.images().items():
            merged.note_image(image, status, note)
        part.close()
    merged.commit()
    return merged
