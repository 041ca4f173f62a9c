"""Lecture slides: one reveal.js deck per chapter, made from the chapter's executed notebook.

Run as::

    python book/_ext/make_slides.py --reveal _build/reveal.js --out _build/html/slides \\
        (--cache _build/.execution_cache | --executed _build/jupyter_execute) [NN_name ...]

The outputs (printed numbers, tables, figures) are the ones the book build shows: ``--cache`` reads
each chapter from the jupyter-cache folder of ``make test`` (stored by nbval's run, matched as myst-nb
matches it), ``--executed`` from the executed notebooks that a website build leaves in
``_build/jupyter_execute``. Nothing is executed here. A chapter missing from either is an error.

How a chapter becomes a deck:

- the chapter title and each ``##`` section start a new slide, each ``###`` a sub-slide (reveal.js's
  vertical slides), and a figure gets a sub-slide of its own, with its caption;
- the code shown on the site is shown; code hidden on the site (``hide-input``, ``remove-input``)
  shows its outputs only; hidden checks (``remove-cell``) and worked solutions (cells tagged
  ``solution`` and the "Solution ..." dropdowns) are left out, so a deck can be shown while the
  exercises are still homework;
- MyST markup is written as plain Markdown, as for the Colab notebooks (colab_markdown.py), except
  that a glued value (``{glue:text}``) is the value itself, taken from the executed notebook.

The decks are HTML files with the figures inside them. They use the reveal.js beside them (copied
into ``<out>/reveal.js`` from ``--reveal``, the npm release that ``make reveal`` fetches and checks)
and the website's MathJax (``../_static/mathjax``), so they load nothing from outside the site.
"""
from __future__ import annotations

import argparse
import copy
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import nbformat

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from colab_markdown import BookIndex, build_index, convert_markdown  # noqa: E402

BOOK = HERE.parent
ROOT = BOOK.parent
TEMPLATES = HERE / "slides_template"
#: What the decks need of a reveal.js release (the rest of the package is demos and sources).
REVEAL_FILES = ("dist/reveal.css", "dist/reveal.js", "dist/theme/white.css", "dist/plugin/notes.js", "LICENSE")
MATHJAX_URL = "../_static/mathjax/tex-chtml-full.js"
HIDDEN_CELL = {"remove-cell", "solution"}
HIDDEN_INPUT = {"hide-input", "remove-input"}
HIDDEN_OUTPUT = {"hide-output", "remove-output"}
GLUE_PREFIX = "application/papermill.record/"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")
_HEADING = re.compile(r"^(#{1,3})\s+\S")
_FENCE = re.compile(r"^\s*(`{3,}|:{3,}|~{3,})(.*)$")


def chapters(book: Path = BOOK) -> list[str]:
    """The chapters ``NN_name`` of the book, in order."""
    return sorted(p.stem for p in book.glob("[0-9][0-9]_*.md"))


# ---- reading the executed chapter ---------------------------------------------------------------

def from_cache(cache_dir: Path, name: str, book: Path = BOOK) -> Any:
    """The chapter with the outputs stored in a jupyter-cache folder (as myst-nb reads it from there)."""
    from jupyter_cache import get_cache
    from myst_nb.core.read import read_myst_markdown_notebook

    source = book / f"{name}.md"
    notebook = read_myst_markdown_notebook(source.read_text(encoding="utf-8"), add_source_map=True, path=str(source))
    try:
        _, executed = get_cache(str(cache_dir)).merge_match_into_notebook(notebook)
    except KeyError:
        raise SystemExit(f"{name}: not in the execution cache {cache_dir} (run `make test-notebooks` first)") from None
    return executed


def from_folder(folder: Path, name: str) -> Any:
    """The chapter as a website build wrote it, executed (``_build/jupyter_execute/NN_name.ipynb``)."""
    path = folder / f"{name}.ipynb"
    if not path.is_file():
        raise SystemExit(f"{name}: no executed notebook {path} (build the website first: `make book`)")
    return nbformat.read(path, as_version=4)


# ---- from a chapter to slides --------------------------------------------------------------------

def tags(cell: Any) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def glued_values(notebook: Any) -> dict[str, str]:
    """name -> the text of each value the chapter glues (myst-nb's ``glue``), from its outputs."""
    values = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            name = (output.get("metadata", {}).get("scrapbook") or {}).get("name")
            data = output.get("data", {})
            text = data.get(GLUE_PREFIX + "text/plain", data.get("text/plain"))
            if name and text is not None:
                values[name] = text
    return values


def glue_text(value: str, spec: str) -> str:
    """A glued value as ``{glue:text}`name:spec``` shows it: a number formatted, a string unquoted."""
    if spec:
        try:
            return format(float(value), spec)
        except ValueError:
            pass
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def fill_glue(text: str, values: dict[str, str]) -> str:
    """Every ``{glue}`` / ``{glue:text}`` role whose value is known, replaced by the value."""
    def replace(match: re.Match) -> str:
        name, _, spec = match.group(2).split("::")[-1].partition(":")
        value = values.get(name.strip())
        return match.group(0) if value is None else glue_text(value, spec.strip())
    return re.sub(r"\{(glue|glue:text|glue:any|glue:md)\}`([^`]*)`", replace, text)


def without_solutions(markdown: str) -> str:
    """The text without its solution dropdowns (a directive whose title starts with "Solution")."""
    kept: list[str] = []
    skipping: str | None = None
    for line in markdown.splitlines():
        if skipping is not None:
            if line.strip() == skipping:
                skipping = None
            continue
        opening = re.match(r"^\s*(`{3,}|:{3,})\{admonition\}\s*Solution\b", line)
        if opening:
            skipping = opening.group(1)
            continue
        kept.append(line)
    return "\n".join(kept)


def split_at_headings(markdown: str) -> list[tuple[int, str]]:
    """The text in pieces that each start at a heading of level 1 to 3 (outside code blocks):
    (level, text); level 0 for text before the first heading."""
    pieces: list[tuple[int, list[str]]] = [(0, [])]
    fence: str | None = None
    for line in markdown.splitlines():
        opening = _FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
        elif fence is not None and line.strip() == fence:
            fence = None
        heading = _HEADING.match(line) if fence is None else None
        if heading:
            pieces.append((len(heading.group(1)), [line]))
        else:
            pieces[-1][1].append(line)
    return [(level, "\n".join(lines).strip()) for level, lines in pieces if "\n".join(lines).strip()]


def shown_outputs(cell: Any) -> list[Any]:
    """The outputs a slide shows: glued values (shown in the text) and widgets' state are left out."""
    kept = []
    for output in cell.get("outputs", []):
        data = output.get("data")
        if data is not None:
            data = {k: v for k, v in data.items()
                    if not k.startswith(GLUE_PREFIX) and not k.startswith("application/vnd.jupyter.widget")}
            if not data:
                continue
            output = copy.deepcopy(output)
            output["data"] = data
        kept.append(output)
    return kept


def has_figure(cell: Any) -> bool:
    return any(any(t in output.get("data", {}) for t in IMAGE_TYPES) for output in cell.get("outputs", []))


def slide_notebook(notebook: Any, doc: str, index: BookIndex) -> Any:
    """A chapter's executed notebook as a deck: the cells that show, each with its slide type
    (``metadata.slideshow.slide_type``) as the module docstring describes."""
    values = glued_values(notebook)
    deck = nbformat.v4.new_notebook(metadata={
        key: notebook.metadata[key] for key in ("kernelspec", "language_info") if notebook.metadata.get(key)})
    state = {"figure": False, "started": False}

    def add(cell: Any, kind: str) -> None:
        if kind == "-" and state["figure"]:
            kind = "subslide"      # one figure a slide: what follows it starts a new one
        if not state["started"]:
            kind = "slide"
        state["started"] = True
        if kind in ("slide", "subslide"):
            state["figure"] = False
        cell.metadata["slideshow"] = {"slide_type": kind}
        deck.cells.append(cell)

    for i, cell in enumerate(notebook.cells):
        if tags(cell) & HIDDEN_CELL:
            continue
        if cell.cell_type == "markdown":
            text = without_solutions(fill_glue(cell.source, values))
            for level, piece in split_at_headings(convert_markdown(text, doc, i, index)):
                add(nbformat.v4.new_markdown_cell(piece), {0: "-", 1: "slide", 2: "slide", 3: "subslide"}[level])
            continue
        if cell.cell_type != "code":
            continue
        outputs = [] if tags(cell) & HIDDEN_OUTPUT else shown_outputs(cell)
        hide_input = bool(tags(cell) & HIDDEN_INPUT)
        if hide_input and not outputs:
            continue
        shown = nbformat.v4.new_code_cell("" if hide_input else cell.source, outputs=outputs)
        shown.execution_count = cell.get("execution_count")
        if hide_input:
            shown.metadata["transient"] = {"remove_source": True}   # nbconvert shows the outputs only
        figure = has_figure(shown)
        add(shown, "subslide" if figure and state["started"] else "-")
        if figure:
            state["figure"] = True
            caption = ((cell.metadata.get("mystnb") or {}).get("figure") or {}).get("caption")
            if caption:
                text = convert_markdown(fill_glue(str(caption).strip(), values), doc, i, index)
                note = nbformat.v4.new_markdown_cell(f'<div class="xai-caption">\n\n{text}\n\n</div>')
                note.metadata["slideshow"] = {"slide_type": "-"}
                deck.cells.append(note)
    return deck


# ---- writing the decks ---------------------------------------------------------------------------

def export(deck: Any, title: str) -> str:
    from nbconvert import SlidesExporter
    from traitlets.config import Config

    config = Config()
    config.SlidesExporter.extra_template_basedirs = [str(TEMPLATES)]
    config.SlidesExporter.template_name = "xai_reveal"
    config.SlidesExporter.reveal_url_prefix = "reveal.js"
    config.SlidesExporter.reveal_theme = "white"
    config.SlidesExporter.reveal_transition = "none"
    config.SlidesExporter.reveal_number = "c/t"
    config.SlidesExporter.reveal_width = "1200"      # room for a figure and its caption
    config.SlidesExporter.reveal_height = "800"
    config.SlidesExporter.mathjax_url = MATHJAX_URL
    config.SlidesExporter.exclude_input_prompt = True
    config.SlidesExporter.exclude_output_prompt = True
    deck.metadata["title"] = title
    body, _ = SlidesExporter(config=config).from_notebook_node(deck)
    return body


def copy_reveal(reveal: Path, out: Path) -> None:
    missing = [f for f in REVEAL_FILES if not (reveal / f).is_file()]
    if missing:
        raise SystemExit(f"no reveal.js in {reveal} (missing {', '.join(missing)}): run `make reveal`")
    for name in REVEAL_FILES:
        target = out / "reveal.js" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(reveal / name, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cache", type=Path, help="a jupyter-cache folder (make test's execution cache)")
    source.add_argument("--executed", type=Path, help="a folder of executed notebooks (_build/jupyter_execute)")
    parser.add_argument("--reveal", type=Path, required=True, help="the unpacked reveal.js release")
    parser.add_argument("--out", type=Path, action="append", required=True,
                        help="where the decks go (SITE/slides); repeat it for several sites")
    parser.add_argument("chapters", nargs="*", help="NN_name of the chapters (default: all)")
    args = parser.parse_args(argv)

    index = build_index()
    names = args.chapters or chapters()
    for out in args.out:
        out.mkdir(parents=True, exist_ok=True)
        copy_reveal(args.reveal, out)
    for name in names:
        notebook = from_cache(args.cache, name) if args.cache else from_folder(args.executed, name)
        title = index.titles.get(name, name)
        html = export(slide_notebook(notebook, name, index), title)
        for out in args.out:
            (out / f"{name}.slides.html").write_text(html, encoding="utf-8")
    print(f"make_slides: {len(names)} decks in {', '.join(str(o) for o in args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
