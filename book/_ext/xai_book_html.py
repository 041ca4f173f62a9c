"""Sphinx fix-ups for the book's HTML pages (loaded by ``sphinx.local_extensions`` in _config.yml).

Sphinx 7.4 lists an inline script twice when an extension adds it after the builder starts
(sphinx-togglebutton's and sphinx-thebe's settings): once as ``_JavaScript(None)`` and once as
``_JavaScript('')``. The second ``const THEBE_JS_URL`` then raises a SyntaxError on every page.
This extension drops the repeats from each page's script list before the page is written.

Second, for the API reference (book/api.md): autodoc writes a type alias in a signature (``target:
Target``) as a class reference, and Sphinx 7.4's class role does not look at ``py:type`` entries, so
the strict build reports it missing. :func:`link_type_aliases` resolves such a reference to the
documented alias. And a module constant named with ``autodata`` but without a ``#:`` doc comment
would show its type's docstring (a tuple's "Built-in immutable sequence..."):
:func:`drop_type_docstrings` leaves such an entry with its name and value only.
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


def link_type_aliases(app, env, node, contnode):
    """A ``py:class`` reference that names a documented ``py:type`` alias links to the alias."""
    if node.get("refdomain") != "py" or node.get("reftype") != "class":
        return None
    return env.get_domain("py").resolve_xref(env, node.get("refdoc", ""), app.builder, "type",
                                             node["reftarget"], node, contnode)


def drop_type_docstrings(app, what, name, obj, options, lines) -> None:
    """Clear a data entry's docstring when it is only the docstring of the value's type."""
    if what in ("data", "attribute") and lines:
        type_doc = getattr(type(obj), "__doc__", None)
        if isinstance(type_doc, str) and [line.strip() for line in lines if line.strip()] == [line.strip() for line in type_doc.splitlines() if line.strip()]:
            lines.clear()


def setup(app):
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    app.connect("missing-reference", link_type_aliases)
    app.connect("autodoc-process-docstring", drop_type_docstrings)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
