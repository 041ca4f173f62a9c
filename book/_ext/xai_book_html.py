"""Sphinx fix-ups for the book's HTML pages (loaded by ``sphinx.local_extensions`` in _config.yml).

Sphinx 7.4 lists an inline script twice when an extension adds it after the builder starts
(sphinx-togglebutton's and sphinx-thebe's settings): once as ``_JavaScript(None)`` and once as
``_JavaScript('')``. The second ``const THEBE_JS_URL`` then raises a SyntaxError on every page.
This extension drops the repeats from each page's script list before the page is written.
"""
from __future__ import annotations


def _key(script) -> tuple:
    filename = getattr(script, "filename", script) or ""
    attributes = getattr(script, "attributes", {}) or {}
    return (str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items())))


def drop_repeated_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
