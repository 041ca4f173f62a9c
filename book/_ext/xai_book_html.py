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

The reader's side of the site (issue 25):

- **The phone menu.** pydata-sphinx-theme 0.17 fills its ``navbar_persistent`` option with a search
  field unless the site sets it, and sphinx-book-theme 1.3 does not set it (its theme.conf value is
  overridden), so every page gets a second header: an empty bar with a second search field on the
  desktop, and a second, hidden ``.primary-toggle`` button before the visible one. The theme's
  script binds the menu to the first ``.primary-toggle`` only, so on a phone the visible menu button
  did nothing (pydata-sphinx-theme #2451, sphinx-book-theme #988). :func:`no_navbar` sets the
  option to an empty list, which removes that header, its search field and its button.
- **Alt text.** A figure's picture gets its caption as alt text (docutils would use the file path,
  a hash); a picture without a caption is named after its solution or its section
  (:class:`AltFromCaption`).
- **MathJax** is loaded only by pages that show math. Sphinx also loads it on a page whose toctree
  includes pages with math (the landing page), which shows none (:func:`mathjax_only_with_math`).
- **The book's PDF** is linked from every page: in the sidebar, and in the header's download menu
  (whose "print this page" entry says so). The link is always ``explaining-cnns.pdf`` at the site's
  root. At the end of the build the PDF of ``make pdf`` (``_build/latex/explaining-cnns.pdf``) is
  copied there when it exists; when it does not, a one-page PDF saying how to build it stands in,
  so that the link is never broken (``make pdf`` then copies the real one over it). The student
  edition (book/_ext/xai_book_solutions.py) always links a stand-in: the PDF prints the solutions.
- **Version and last update**, in the sidebar: the version of pyproject.toml and the date of the
  last git commit, read when the site is built (outside git only the version).
- **Page weight.** pydata-sphinx-theme loads Font Awesome twice: as web fonts through its CSS
  (which draws every icon the theme uses) and as ``fontawesome.js`` (1.5 MB), which only turns the
  icons into SVG, "so that users can add custom icons"; the book adds none. The template that
  loads the script has no option to leave it out, so :func:`drop_fontawesome_script` replaces the
  copied file with an empty script after the build (the 1.5 MB ``.map`` beside it is never loaded).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging

logger = logging.getLogger(__name__)

_REPOSITORY = Path(__file__).resolve().parents[2]
PDF_NAME = "explaining-cnns.pdf"
_TEMPLATES = Path(__file__).resolve().parent / "templates"


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


def no_navbar(app: Sphinx, config) -> None:
    """No top navbar: its search field repeats the sidebar's, and its hidden menu button takes the
    theme's click handler from the visible one (see the module docstring)."""
    options = dict(config.html_theme_options or {})
    options.setdefault("navbar_persistent", [])
    # The sidebar ends with the PDF link and the version line (templates/xai-sidebar-end.html).
    options.setdefault("primary_sidebar_end", ["xai-sidebar-end.html"])
    config.html_theme_options = options
    config.templates_path = [*config.templates_path, str(_TEMPLATES)]


def has_math(doctree: nodes.Node | None) -> bool:
    """True when the page's own doctree holds inline or displayed math."""
    if doctree is None:
        return False
    return any(True for _ in doctree.findall(lambda n: isinstance(n, (nodes.math, nodes.math_block))))


def mathjax_only_with_math(app, pagename, templatename, context, doctree) -> None:
    """Drop MathJax (its script and its configuration) from a page that shows no math."""
    scripts = context.get("script_files")
    if not scripts or has_math(doctree):
        return
    mathjax_path = str(app.config.mathjax_path or "")

    def is_mathjax(script) -> bool:
        filename = str(getattr(script, "filename", script) or "")
        body = str((getattr(script, "attributes", {}) or {}).get("body", ""))
        return (bool(mathjax_path) and filename.endswith(mathjax_path)) or "window.MathJax" in body

    context["script_files"] = [s for s in scripts if not is_mathjax(s)]


# ---- alt text -----------------------------------------------------------------------------------

def _caption_text(figure: nodes.figure) -> str:
    caption = next(iter(figure.findall(nodes.caption)), None)
    return " ".join(caption.astext().split()) if caption is not None else ""


def alt_text(image: nodes.image) -> str:
    """What a screen reader should read for a picture: its figure's caption, else the solution
    or the section it belongs to."""
    parent = image.parent
    while parent is not None:
        if isinstance(parent, nodes.figure):
            text = _caption_text(parent)
            if text:
                return text
        if isinstance(parent, nodes.Admonition) and parent.children and isinstance(parent[0], nodes.title):
            return f"Figure of the {parent[0].astext().strip()[:1].lower()}{parent[0].astext().strip()[1:]}"
        if isinstance(parent, nodes.section) and parent.children and isinstance(parent[0], nodes.title):
            return f"Figure of the section \u201c{parent[0].astext().strip()}\u201d"
        parent = parent.parent
    return "Figure"


_PATH_LIKE = re.compile(r"^[\w./-]+\.(png|jpe?g|gif|svg|webp)$", re.IGNORECASE)


class AltFromCaption(SphinxPostTransform):
    """Every picture without a written alt text (or with a file path as one) gets :func:`alt_text`."""

    default_priority = 220
    formats = ("html",)

    def run(self, **kwargs: Any) -> None:
        for image in self.document.findall(nodes.image):
            alt = image.get("alt", "")
            if not alt or _PATH_LIKE.match(alt) or alt == image.get("uri"):
                image["alt"] = alt_text(image)


# ---- version, last update, the book's PDF -------------------------------------------------------

def book_version(root: Path = _REPOSITORY) -> str:
    """The ``version`` of pyproject.toml's [project] table ("" when there is none)."""
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return ""
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.MULTILINE | re.DOTALL)
    match = re.search(r'^version\s*=\s*"([^"]+)"', project.group(1) if project else "", re.MULTILINE)
    return match.group(1) if match else ""


def last_commit(root: Path = _REPOSITORY) -> tuple[str, str]:
    """(date YYYY-MM-DD, short hash) of the last git commit, or ("", "") outside git."""
    try:
        result = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%cs %h"],
                                capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "", ""
    parts = result.stdout.split()
    return (parts[0], parts[1]) if result.returncode == 0 and len(parts) == 2 else ("", "")


def version_line(version: str, date: str, commit: str) -> str:
    """ "Version 0.2.0 · last updated 2026-12-03 (ae323de)", as far as it is known."""
    parts = [f"Version {version}"] if version else []
    if date:
        parts.append(f"last updated {date}" + (f" ({commit})" if commit else ""))
    line = " \u00b7 ".join(parts)
    return line[:1].upper() + line[1:]


def add_book_context(app: Sphinx) -> None:
    """The version line and the PDF's name for the templates, read once per build."""
    date, commit = last_commit()
    app.config.html_context = {**app.config.html_context,
                               "xai_version_line": version_line(book_version(), date, commit),
                               "xai_pdf": PDF_NAME}


def book_pdf_in_header(app, pagename, templatename, context, doctree) -> None:
    """The book's PDF first in the header's download menu; the theme's ".pdf" entry prints the page."""
    for group in context.get("header_buttons", []):
        if group.get("label") != "download-buttons":
            continue
        for button in group.get("buttons", []):
            if button.get("label") == "download-pdf-button":
                button["text"] = "print page"
                button["tooltip"] = "Print this page (or save it as a PDF)"
        group["buttons"].insert(0, {
            "type": "link", "url": context["pathto"](PDF_NAME, 1), "text": "book (.pdf)",
            "tooltip": "Download the whole book as one PDF", "icon": "fas fa-book",
            "label": "download-book-pdf-button"})


def placeholder_pdf(lines: list[str]) -> bytes:
    """A valid one-page A4 PDF that shows ``lines`` of plain ASCII text in Helvetica."""
    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    stream = "BT /F1 12 Tf 72 770 Td 16 TL " + " ".join(f"({escape(line)}) '" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> "
        "/Contents 5 0 R >>",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("ascii")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode("ascii")
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode("ascii")
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode("ascii")
    return bytes(out)


def copy_book_pdf(app: Sphinx, exception) -> None:
    """The PDF of ``make pdf`` into the site, or a stand-in that says how to build it."""
    if exception is not None or app.builder.format != "html":
        return
    target = Path(app.outdir) / PDF_NAME
    built = Path(app.outdir).parent / "latex" / PDF_NAME
    if getattr(app.config, "xai_book_edition", "instructor") == "student":
        # the PDF prints every solution in full: the student edition links a page that says so
        target.write_bytes(placeholder_pdf([
            "Explaining CNNs, student edition.",
            "The PDF of the book prints the worked solutions of the exercises, so it is not part",
            "of the student edition of the website. Your instructor can share it after the course.",
        ]))
        return
    if built.is_file():
        shutil.copyfile(built, target)
        return
    url = str(getattr(app.config, "html_theme_options", {}).get("repository_url", "") or "")
    target.write_bytes(placeholder_pdf([
        "Explaining CNNs: the PDF of the book was not built with this copy of the website.",
        "Build it from the book's repository with `make pdf`"
        + (f" ({url})." if url else "."),
        "`make pdf` puts it at _build/latex/explaining-cnns.pdf and copies it into the site.",
    ]))
    logger.info(f"no {built}: the site links a one-page stand-in PDF (run `make pdf`)")


FONTAWESOME_SCRIPT = Path("_static") / "scripts" / "fontawesome.js"


def drop_fontawesome_script(app: Sphinx, exception) -> None:
    """Empty the theme's fontawesome.js in the site: the theme's CSS draws the icons (see above)."""
    if exception is not None or app.builder.format != "html":
        return
    script = Path(app.outdir) / FONTAWESOME_SCRIPT
    styles = Path(app.outdir) / "_static" / "styles" / "pydata-sphinx-theme.css"
    css = styles.read_text(encoding="utf-8", errors="replace") if styles.is_file() else ""
    if "Font Awesome" not in css or ".fa-bars:before" not in css:
        logger.info("the theme's CSS does not draw the icons: fontawesome.js is kept")
        return
    if script.is_file():
        script.write_text("/* Font Awesome's SVG script is not needed: the theme's CSS draws the book's icons "
                          "with the Font Awesome web fonts (book/_ext/xai_book_html.py). */\n", encoding="utf-8")


def setup(app):
    app.connect("config-inited", no_navbar)
    app.connect("builder-inited", add_book_context)
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    app.connect("html-page-context", mathjax_only_with_math, priority=901)
    app.connect("html-page-context", book_pdf_in_header, priority=502)
    app.connect("build-finished", copy_book_pdf)
    app.connect("build-finished", drop_fontawesome_script)
    app.connect("missing-reference", link_type_aliases)
    app.setup_extension("sphinx.ext.autodoc")   # for its event, also in a book without an API page
    app.connect("autodoc-process-docstring", drop_type_docstrings)
    app.add_post_transform(AltFromCaption)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
