"""The Colab notebooks in plain Markdown: MyST roles and directives rewritten for Jupyter and Colab.

``make notebooks`` writes ``book/NN_*.ipynb`` beside each chapter with jupytext, then runs this
module on them. Jupyter and Colab render CommonMark with dollar math, not MyST, so the chapters'
markup would show literally (``{cite}`selvaraju2020gradcam```, ``:::{admonition}``). In the text
cells (code cells are left alone) this module writes:

- ``{cite}`a,b``` as "(Selvaraju et al., 2020; Zhou et al., 2016)" and ``{cite:t}`a``` as
  "Selvaraju et al. (2020)", from book/references.bib ("[key]" for a key it does not know);
- ``{numref}`` of a figure, table or equation as "the figure below" (or above) in the same chapter,
  "a figure in *Chapter title*" elsewhere; ``{ref}`` as the title of the section or chapter it names
  (or its own text, ``{ref}`text <label>```); ``{doc}`` as the page's title;
- ``{eq}`label``` as "(9.2)", the equation's number in the book, and each labelled display equation
  ``$$ ... $$ (label)`` or ``{math}`` block as ``$$ ... \\tag{9.2} $$``, so the numbers match;
- a glued value (``{glue:text}`name```) as "(computed below)" or "(computed above)", after where
  the cell that glues it stands: the value exists only once the notebook runs;
- ``{math}`x``` as ``$x$``; any other role as its text; a link to a label, ``[text](label)``, as
  its text;
- an admonition (``{admonition} Title``, ``{note}``, ``{tip}``, ...) as its title in bold and its
  body as a quotation; a label line ``(name)=`` and a MyST comment ``% ...`` are dropped.

Equations are numbered as the book numbers them: chapter number (the position of the chapter among
the numbered parts of _toc.yml) and the labelled equations of the chapter in order.

Run as ``python book/_ext/colab_markdown.py book/NN_a.ipynb ...`` (rewrites the notebooks in place);
tests/test_notebooks_sync.py applies :func:`convert_notebook` to each chapter and compares.
"""
from __future__ import annotations

import argparse
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BOOK = Path(__file__).resolve().parents[1]
ROOT = BOOK.parent

# ---- the bibliography -----------------------------------------------------------------------

_ACCENTS = {"'": "\u0301", "`": "\u0300", "^": "\u0302", '"': "\u0308", "~": "\u0303", "c": "\u0327",
            "v": "\u030c", "=": "\u0304", ".": "\u0307", "u": "\u0306", "H": "\u030b", "r": "\u030a"}


def de_latex(text: str) -> str:
    """BibTeX text as plain Unicode: accents (``{\\~a}`` -> ã), braces and ``\\&`` resolved."""
    def accent(match: re.Match) -> str:
        return unicodedata.normalize("NFC", match.group(2) + _ACCENTS[match.group(1)])
    text = re.sub(r"\{?\\([`'^\"~=.]|[cvuHr](?=[\s{]))\s*\{?([A-Za-z])\}?\}?", accent, text)
    text = text.replace("\\&", "&").replace("\\ss", "ß").replace("--", "–")
    return " ".join(text.replace("{", "").replace("}", "").split())


def _fields(entry: str) -> dict[str, str]:
    """The fields of one BibTeX entry's body (balanced braces, or quotes, or a bare number)."""
    fields: dict[str, str] = {}
    i = 0
    while True:
        match = re.compile(r"\s*,?\s*([A-Za-z_-]+)\s*=\s*").match(entry, i)
        if not match:
            break
        name, i = match.group(1).lower(), match.end()
        if i < len(entry) and entry[i] == "{":
            depth, start = 0, i
            while i < len(entry):
                depth += {"{": 1, "}": -1}.get(entry[i], 0)
                i += 1
                if depth == 0:
                    break
            fields[name] = entry[start + 1:i - 1]
        elif i < len(entry) and entry[i] == '"':
            end = entry.index('"', i + 1)
            fields[name], i = entry[i + 1:end], end + 1
        else:
            bare = re.compile(r"[^,}\s]+").match(entry, i)
            if not bare:
                break
            fields[name], i = bare.group(0), bare.end()
    return fields


def read_bib(path: Path) -> dict[str, dict[str, str]]:
    """key -> {"author": ..., "year": ...} for every entry of a .bib file."""
    text = path.read_text(encoding="utf-8")
    entries = {}
    for match in re.finditer(r"@\w+\s*\{\s*([^,\s]+)\s*,", text):
        start, depth, i = match.end(), 1, match.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        entries[match.group(1)] = _fields(text[start:i - 1])
    return entries


def _last_names(authors: str) -> list[str]:
    names = []
    for person in re.split(r"\s+and\s+", authors.strip()):
        person = de_latex(person)
        if not person:
            continue
        names.append(person.split(",")[0].strip() if "," in person else person.split()[-1])
    return names


def author_year(entry: dict[str, str]) -> tuple[str, str]:
    """("Selvaraju et al.", "2020") as the book's author-year citations write them."""
    names = _last_names(entry.get("author", "") or entry.get("editor", ""))
    if not names:
        who = de_latex(entry.get("title", "Anonymous"))
    elif names[-1].lower() == "others" or len(names) > 2:
        who = f"{names[0]} et al."
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = names[0]
    return who, de_latex(entry.get("year", "n.d."))


# ---- the book's labels, titles and numbers --------------------------------------------------

@dataclass
class Target:
    """What a label names: its kind, its page, its title (sections) or number (equations)."""

    kind: str                 # "chapter", "section", "figure", "table", "equation"
    doc: str
    title: str = ""
    number: str = ""
    cell: int = -1            # the index of the cell that defines it


@dataclass
class BookIndex:
    """The labels of every chapter, the chapters' titles and the cells that glue each value."""

    targets: dict[str, Target] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    glue_cells: dict[str, dict[str, int]] = field(default_factory=dict)   # doc -> name -> cell
    bib: dict[str, dict[str, str]] = field(default_factory=dict)


_LABEL_LINE = re.compile(r"^\(([^()\s]+)\)=\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_DISPLAY_LABEL = re.compile(r"\$\$\s*\(([^()\s]+)\)\s*$")
_MATH_LABEL = re.compile(r"^:label:\s*(\S+)\s*$")
_NAME_OPTION = re.compile(r"^\s*:?name:\s*([A-Za-z0-9_.:-]+)\s*$")
_CODE_TABLE_NAME = re.compile(r"""["']:name:\s*(tab-[A-Za-z0-9_.:-]+)["']""")
_GLUE_CALL = re.compile(r"""\bglue\(\s*["']([^"']+)["']""")


def _heading_text(text: str) -> str:
    return re.sub(r"\{[\w:-]+\}`([^`]*)`", r"\1", text).strip()


def numbered_chapters(toc_path: Path) -> dict[str, int]:
    """doc -> chapter number, for the files of the numbered parts of _toc.yml, in order."""
    import yaml

    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    numbers, n = {}, 0
    for part in toc.get("parts", []):
        if not part.get("numbered"):
            continue
        for chapter in part.get("chapters", []):
            n += 1
            numbers[Path(chapter["file"]).with_suffix("").as_posix()] = n
    return numbers


_PLAIN_FENCE = re.compile(r"^(`{3,}|~{3,})(?!.*\{[\w:-]+\})")


def index_notebook(nb: Any, doc: str, chapter: int | None, index: BookIndex) -> None:
    """Collect the labels, equations, figures, tables and glue calls of one chapter's notebook."""
    equations = 0
    title_seen = False

    def equation(name: str, cell: int) -> None:
        nonlocal equations
        equations += 1   # the book numbers the labelled display equations of a chapter in order
        index.targets[name] = Target("equation", doc, number=f"{chapter}.{equations}" if chapter else str(equations),
                                     cell=cell)

    for i, cell in enumerate(nb.cells):
        source = cell.source
        if cell.cell_type == "code":
            figure = ((cell.metadata.get("mystnb") or {}).get("figure") or {})
            if figure.get("name"):
                index.targets[str(figure["name"])] = Target("figure", doc, cell=i)
            for name in _CODE_TABLE_NAME.findall(source):
                index.targets[name] = Target("table", doc, cell=i)
            for name in _GLUE_CALL.findall(source):
                index.glue_cells.setdefault(doc, {}).setdefault(name, i)
            continue
        if cell.cell_type != "markdown":
            continue
        pending: list[str] = []
        fence: str | None = None
        directive = ""
        for line in source.splitlines():
            stripped = line.strip()
            if fence is not None:
                if stripped == fence:
                    fence = None
                elif directive == "math" and _MATH_LABEL.match(stripped):
                    equation(_MATH_LABEL.match(stripped).group(1), i)
                elif directive in ("figure", "table", "list-table") and _NAME_OPTION.match(stripped):
                    kind = "figure" if directive == "figure" else "table"
                    index.targets[_NAME_OPTION.match(stripped).group(1)] = Target(kind, doc, cell=i)
                continue
            opening = re.match(r"^(`{3,}|:{3,})\{([\w:-]+)\}\s*(.*)$", stripped)
            plain = _PLAIN_FENCE.match(stripped)
            if opening or plain:
                fence = opening.group(1) if opening else plain.group(1)
                directive = opening.group(2) if opening else ""
                continue
            label = _LABEL_LINE.match(stripped)
            if label:
                pending.append(label.group(1))
                continue
            heading = _HEADING.match(stripped)
            if heading:
                text = _heading_text(heading.group(2))
                kind = "section"
                if not title_seen and len(heading.group(1)) == 1:
                    index.titles[doc] = text
                    title_seen, kind = True, "chapter"
                for name in pending:
                    index.targets[name] = Target(kind, doc, title=text, cell=i)
                pending = []
                continue
            if stripped:
                pending = []
            display = _DISPLAY_LABEL.search(stripped)
            if display:
                equation(display.group(1), i)


def build_index(book: Path = BOOK, toc: Path = ROOT / "_toc.yml", bib: Path | None = None) -> BookIndex:
    """The index of every chapter ``book/NN_*.md`` (read with jupytext) and of references.bib."""
    import jupytext

    index = BookIndex(bib=read_bib(bib or book / "references.bib"))
    numbers = numbered_chapters(toc)
    for path in sorted(book.glob("*.md")):
        doc = path.stem
        text = path.read_text(encoding="utf-8")
        if text.startswith("---\njupytext:"):
            index_notebook(jupytext.read(path), doc, numbers.get(doc), index)
        else:   # a plain Markdown page (intro, notation, ...): its title and labels
            nb = jupytext.reads(text, fmt="md:myst")
            index_notebook(nb, doc, numbers.get(doc), index)
    return index


# ---- the conversion ---------------------------------------------------------------------------

_ROLE = re.compile(r"\{([\w:-]+)\}`([^`]*)`")
_LABEL_LINK = re.compile(r"\[([^\[\]]+)\]\(#?([A-Za-z0-9_-]+)\)")   # a MyST link to a label: [text](label)
_EXPLICIT = re.compile(r"^(.*?)\s*<([^<>]+)>$", re.DOTALL)
_NOUNS = {"figure": "figure", "table": "table", "equation": "equation", "chapter": "chapter", "section": "section"}
_ADMONITION_TITLES = {"note": "Note", "tip": "Tip", "hint": "Hint", "important": "Important",
                      "warning": "Warning", "caution": "Caution", "attention": "Attention",
                      "danger": "Danger", "error": "Error", "seealso": "See also"}


def _cite(kind: str, keys: str, bib: dict[str, dict[str, str]]) -> str:
    parts = []
    for key in [k.strip() for k in keys.split(",") if k.strip()]:
        if key not in bib:
            parts.append((f"[{key}]", ""))
            continue
        parts.append(author_year(bib[key]))
    if kind == "cite:t":
        return "; ".join(f"{who} ({year})" if year else who for who, year in parts)
    return "(" + "; ".join(f"{who}, {year}" if year else who for who, year in parts) + ")"


def convert_role(role: str, content: str, doc: str, cell: int, index: BookIndex) -> str:
    """One MyST role in a text cell of ``doc`` (cell number ``cell``) as plain Markdown."""
    explicit = _EXPLICIT.match(content)
    text, label = (explicit.group(1).strip(), explicit.group(2).strip()) if explicit else ("", content.strip())
    if role in ("cite", "cite:p", "cite:ps", "cite:t", "cite:ts", "cite:alp", "cite:author", "cite:year"):
        return _cite("cite:t" if role.startswith("cite:t") else "cite", content, index.bib)
    if role == "math":
        return f"${content}$"
    if role in ("glue", "glue:", "glue:text", "glue:md", "glue:any"):
        name = content.split("::")[-1].split(":")[0].strip()
        glued = index.glue_cells.get(doc, {}).get(name)
        if glued is None:
            return "(computed in the code)"
        return "(computed below)" if glued > cell else "(computed above)"
    if role == "eq":
        target = index.targets.get(label)
        return f"({target.number})" if target and target.number else "(the equation)"
    if role == "doc":
        return text or f"*{index.titles.get(Path(label).stem, label)}*"
    if role in ("numref", "ref"):
        target = index.targets.get(label)
        if target is None:
            return text.replace("%s", "").replace("{number}", "").strip() or label
        if target.kind in ("chapter", "section"):
            if text and "%s" not in text and "{" not in text:
                return text
            if target.doc != doc and target.kind == "section":
                return f"*{target.title}* (in *{index.titles.get(target.doc, target.doc)}*)"
            return f"*{target.title}*"
        if role == "ref" and text:
            return text
        if target.kind == "equation" and target.number:
            return f"({target.number})"
        noun = _NOUNS.get(target.kind, "figure")
        if target.doc == doc:
            return f"the {noun} {'below' if target.cell > cell else 'above'}"
        return f"a {noun} in *{index.titles.get(target.doc, target.doc)}*"
    return text or content    # {term}, {abbr}, {sub}, ...: the text itself


_SENTENCE_END = re.compile(r"(^|[.!?:]|\n\s*\n|(^|\n)\s*([-*+>]|\d+[.)]|#+))\s*$")
_ABBREVIATIONS = ("e.g.", "i.e.", "cf.", "vs.", "et al.", "resp.")


def _convert_roles(text: str, doc: str, cell: int, index: BookIndex) -> str:
    """Every role of ``text``; a replacement that opens a sentence starts with a capital."""
    def replace(match: re.Match) -> str:
        new = convert_role(match.group(1), match.group(2), doc, cell, index)
        before = text[:match.start()]
        if new[:1].islower() and _SENTENCE_END.search(before) and not before.rstrip().endswith(_ABBREVIATIONS):
            new = new[0].upper() + new[1:]
        return new
    text = _ROLE.sub(replace, text)
    # [text](label), a MyST link to a label, has no target in a notebook: its text stays.
    return _LABEL_LINK.sub(lambda m: m.group(1) if m.group(2) in index.targets else m.group(0), text)


def _tagged(prefix: str, number: str) -> str:
    """The end of a labelled display equation: ``\\tag{9.2} $$`` after whatever precedes it."""
    tag = f"\\tag{{{number}}} " if number else ""
    return (prefix.rstrip() + " " if prefix.strip() else prefix) + tag + "$$"


def convert_markdown(source: str, doc: str, cell: int, index: BookIndex) -> str:
    """A text cell of chapter ``doc`` (its index ``cell``) in plain Markdown (see the module docstring)."""
    out: list[str] = []       # converted blocks
    prose: list[str] = []     # lines whose roles are converted together (sentences span lines)

    def flush() -> None:
        if prose:
            out.append(_convert_roles("\n".join(prose), doc, cell, index))
            prose.clear()

    lines = source.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if _LABEL_LINE.match(stripped) or re.match(r"^%(\s|$)", stripped):
            i += 1
            continue
        plain = _PLAIN_FENCE.match(stripped)
        opening = re.match(r"^(\s*)(`{3,}|:{3,})\{([\w:-]+)\}\s*(.*)$", line)
        if plain and not opening:      # a code block: verbatim
            flush()
            fence = plain.group(1)
            block = [line]
            i += 1
            while i < len(lines):
                block.append(lines[i])
                i += 1
                if lines[i - 1].strip() == fence:
                    break
            out.append("\n".join(block))
            continue
        if opening:
            flush()
            indent, fence, name, argument = opening.groups()
            body: list[str] = []
            i += 1
            while i < len(lines) and lines[i].strip() != fence:
                body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
                i += 1
            i += 1   # the closing fence
            options = {}
            while body and re.match(r"^:[\w-]+:", body[0].strip()):
                key, _, value = body.pop(0).strip()[1:].partition(":")
                options[key] = value.strip()
            while body and not body[0].strip():
                body.pop(0)
            block_lines = _directive(name, argument, options, body, doc, cell, index)
            out.append("\n".join(indent + b if b else b for b in block_lines))
            continue
        display = _DISPLAY_LABEL.search(line)
        if display:
            target = index.targets.get(display.group(1))
            line = _tagged(line[:display.start()], target.number if target else "")
        prose.append(line)
        i += 1
    flush()
    return "\n".join(out)


def _directive(name: str, argument: str, options: dict[str, str], body: list[str], doc: str, cell: int,
               index: BookIndex) -> list[str]:
    """A directive block as plain Markdown lines."""
    if name == "math":
        target = index.targets.get(options.get("label", ""))
        return ["$$", *body, *([f"\\tag{{{target.number}}}"] if target and target.number else []), "$$"]
    inner = convert_markdown("\n".join(body), doc, cell, index).splitlines()
    quoted = [f"> {line}" if line.strip() else ">" for line in inner]
    if name == "admonition" or name in _ADMONITION_TITLES:
        title = argument if name == "admonition" else _ADMONITION_TITLES[name]
        if name != "admonition" and argument:
            quoted = [f"> {argument}", ">", *quoted]
        title = _convert_roles(title, doc, cell, index).strip()
        return [f"**{title}**", ">", *quoted] if quoted else [f"**{title}**"]
    if name in ("figure", "image"):
        caption = " ".join(inner).strip()
        return [f"![{caption or 'figure'}]({argument})", *([f"*{caption}*"] if caption else [])]
    if name in ("code", "code-block", "sourcecode"):
        return [f"```{argument}", *body, "```"]
    return [f"**{name}** {argument}".rstrip(), *quoted]    # anything else: its name, its body quoted


def convert_notebook(nb: Any, doc: str, index: BookIndex) -> Any:
    """Every text cell of a chapter's notebook in plain Markdown (the notebook is changed and returned)."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            cell.source = convert_markdown(cell.source, doc, i, index)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path, help="book/NN_*.ipynb files, rewritten in place")
    parser.add_argument("--book", type=Path, default=BOOK)
    parser.add_argument("--toc", type=Path, default=ROOT / "_toc.yml")
    args = parser.parse_args(argv)
    import nbformat

    index = build_index(args.book, args.toc)
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        before = nbformat.writes(nb)
        convert_notebook(nb, path.stem, index)
        after = nbformat.writes(nb)
        if after != before:
            path.write_text(after + ("" if after.endswith("\n") else "\n"), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
