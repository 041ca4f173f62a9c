"""A chapter that did not run is never published as if it had (loaded by ``sphinx.local_extensions``).

When a code cell of a chapter raises, myst-nb stops executing that chapter, records the failure
(``env.nb_metadata[docname]["exec_data"]["succeeded"]`` is false, with the error's class name) and
logs a warning; the page is still written, with the cells after the error empty, missing figures,
raw labels where references could not be resolved, and prose quoting numbers that were never
computed. ``make book`` fails on the warning (``-W --keep-going``), but the pages are there.

This extension makes such a page say so, and makes the build fail whatever its flags:

- :class:`FailureBanner` puts a banner at the top of every page whose execution failed, saying
  that what follows is incomplete and which error stopped it;
- every unresolved reference is recorded (a cross-reference Sphinx cannot resolve, a citation key
  missing from references.bib, a glued value the chapter never computed);
- at the end of the build, :func:`fail_the_build` lists the failed chapters and the unresolved
  references and sets the exit status to 1, also in a build without ``-W``.
"""
from __future__ import annotations

import logging as std_logging
import re
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging

logger = logging.getLogger(__name__)

BANNER_CLASS = "xai-run-failed"
# Warnings that mean a reference was left unresolved: Sphinx's own (type "ref"), a citation key
# sphinxcontrib-bibtex cannot find, a glue key myst-nb cannot find, a MyST link without a target.
_UNRESOLVED_TYPES = {("bibtex", "key_not_found")}
_UNRESOLVED_TEXT = re.compile(r"\[(myst-nb\.glue_ref|myst\.xref_missing)\]|found in glue data")


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Warning))(?::\s?(.*))?$")


def cell_error(traceback: str | None) -> str:
    """The exception a cell raised, read from the end of its traceback ("ValueError: bad"), or ""."""
    lines = [_ANSI.sub("", line).strip() for line in (traceback or "").splitlines()]
    for line in reversed(lines):
        match = _EXCEPTION_LINE.match(line)
        if match:
            text = f"{match.group(1)}: {match.group(2)}" if match.group(2) else match.group(1)
            return text if len(text) <= 160 else text[:157] + "..."
    return ""


def failed_executions(env) -> dict[str, str]:
    """docname -> the error that stopped it, for every page whose notebook execution failed."""
    failed = {}
    for docname, data in (getattr(env, "nb_metadata", None) or {}).items():
        result = (data or {}).get("exec_data") or {}
        if result and result.get("succeeded") is False:
            failed[docname] = cell_error(result.get("traceback")) or str(result.get("error") or "an error")
    return failed


def banner(error: str) -> nodes.admonition:
    """The banner of a page whose code stopped with ``error``."""
    box = nodes.admonition(classes=["error", BANNER_CLASS])
    box += nodes.title(text="This page is incomplete")
    box += nodes.paragraph(text=(
        f"Its code stopped with an error ({error}) when this copy of the book was built. "
        "Outputs, figures and numbers below may be missing or wrong; the book's build "
        "reported the failure."))
    return box


class FailureBanner(SphinxPostTransform):
    """The banner on top of a page (under its title) whose execution failed."""

    default_priority = 230
    formats = ("html",)

    def run(self, **kwargs: Any) -> None:
        error = failed_executions(self.env).get(self.env.docname)
        if error is None:
            return
        section = next(iter(self.document.findall(nodes.section)), None)
        if section is None:
            self.document.insert(0, banner(error))
        else:
            index = 1 if section.children and isinstance(section[0], nodes.title) else 0
            section.insert(index, banner(error))


class UnresolvedReferences(std_logging.Handler):
    """Collects the warnings that report an unresolved reference (each one once)."""

    def __init__(self) -> None:
        super().__init__(level=std_logging.WARNING)
        self.found: dict[str, None] = {}   # ordered set of messages

    def emit(self, record: std_logging.LogRecord) -> None:
        kind = (getattr(record, "type", None), getattr(record, "subtype", None))
        message = record.getMessage()
        if kind[0] == "ref" or kind in _UNRESOLVED_TYPES or _UNRESOLVED_TEXT.search(message):
            location = getattr(record, "location", None)
            where = location if isinstance(location, str) else ""
            self.found[f"{where}: {message}" if where else message] = None


def start_collecting(app: Sphinx) -> None:
    handler = UnresolvedReferences()
    std_logging.getLogger(logging.NAMESPACE).addHandler(handler)
    app._xai_unresolved = handler  # type: ignore[attr-defined]


def fail_the_build(app: Sphinx, exception) -> None:
    """Report failed chapters and unresolved references, and make the build's exit status 1."""
    handler = getattr(app, "_xai_unresolved", None)
    if handler is not None:
        std_logging.getLogger(logging.NAMESPACE).removeHandler(handler)
    if exception is not None:
        return
    failed = failed_executions(app.env)
    unresolved = list(handler.found) if handler is not None else []
    if not failed and not unresolved:
        return
    app.statuscode = 1
    lines = [f"  {docname}: its code stopped with {error} (the page carries a banner)"
             for docname, error in sorted(failed.items())]
    lines += [f"  unresolved: {text}" for text in unresolved[:50]]
    if len(unresolved) > 50:
        lines.append(f"  ... and {len(unresolved) - 50} more unresolved references")
    logger.error("the book is incomplete: %d page(s) did not run, %d reference(s) unresolved\n%s",
                 len(failed), len(unresolved), "\n".join(lines))


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", start_collecting)
    app.connect("build-finished", fail_the_build)
    app.add_post_transform(FailureBanner)
    # The collected warnings live in this process: parallel writing would lose some.
    return {"parallel_read_safe": True, "parallel_write_safe": False}
