"""The PDF of the book (`make pdf`): it exists, is complete, and every reference in it resolved.

`make test-pdf` builds the PDF first and sets XAI_PDF_REQUIRED=1, so there a missing PDF fails.
Run on its own (`pytest tests/pdf`), the module checks the PDF at XAI_PDF (default
_build/latex/explaining-cnns.pdf) and skips when there is none. The checks read the PDF with
poppler-utils (pdfinfo, pdfimages, pdftotext), which `make pdf` installs, and compare it with counts
taken from the book's sources, not from the PDF.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
PDF = Path(os.environ.get("XAI_PDF", ROOT / "_build" / "latex" / "explaining-cnns.pdf"))
REQUIRED = os.environ.get("XAI_PDF_REQUIRED") == "1"

# The PDF measured 230 A4 pages (December 2026). The floor is 8 pages per chapter of the toc, far below
# what the chapters fill (a chapter that lost its figures or code would still pass, but a PDF that
# lost chapters would not); the ceiling catches runaway output (a table or log printed page after page).
PAGES_PER_CHAPTER = 8
MAX_PAGES = 600

if not PDF.is_file() and not REQUIRED:
    pytest.skip(f"no PDF at {PDF}: build it with `make pdf` (or run `make test-pdf`)",
                allow_module_level=True)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: `make pdf` installs poppler-utils")
    return path


def _run(*args: str) -> str:
    return subprocess.run([_tool(args[0]), *args[1:]], check=True, capture_output=True,
                          text=True).stdout


def toc_files() -> list[str]:
    """The pages of the book in toc order (root first), as paths relative to book/ without suffix."""
    text = (ROOT / "_toc.yml").read_text()
    root = re.search(r"^root:\s*(\S+)", text, re.M)
    assert root is not None
    return [root.group(1)] + re.findall(r"^\s*- file:\s*(\S+)", text, re.M)


def chapter_titles() -> list[str]:
    """The first level-1 heading of every page in the toc."""
    titles = []
    for name in toc_files():
        heading = re.search(r"^# (.+)$", (BOOK / f"{name}.md").read_text(), re.M)
        assert heading is not None, f"{name}.md has no title"
        titles.append(heading.group(1).strip())
    return titles


def captioned_figures() -> int:
    """How many figures the sources name (`name: fig-...`): each one is at least one image."""
    return sum(len(re.findall(r"^\s*name:\s*fig-", (BOOK / f"{name}.md").read_text(), re.M))
               for name in toc_files())


def _normalise(text: str) -> str:
    """NFKC (ligatures such as "ﬁ" become "fi"), hyphenation at line ends undone, one space."""
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"-\n(?=[a-z])", "", text)
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="module")
def pdf() -> Path:
    if not PDF.is_file():
        pytest.fail(f"no PDF at {PDF}: `make pdf` did not write it")
    return PDF


@pytest.fixture(scope="module")
def text(pdf: Path) -> str:
    return _normalise(_run("pdftotext", "-enc", "UTF-8", str(pdf), "-"))


def test_page_count(pdf: Path) -> None:
    info = _run("pdfinfo", str(pdf))
    match = re.search(r"^Pages:\s+(\d+)", info, re.M)
    assert match is not None, info
    pages = int(match.group(1))
    low = PAGES_PER_CHAPTER * len(toc_files())
    assert low <= pages <= MAX_PAGES, f"{pages} pages, expected {low} to {MAX_PAGES}"


def test_every_figure_has_an_image(pdf: Path) -> None:
    # pdfimages -list: two header lines, then one row per image; soft masks (alpha) are rows too.
    rows = _run("pdfimages", "-list", str(pdf)).splitlines()[2:]
    images = [row for row in rows if row.split()[2] == "image"]
    figures = captioned_figures()
    assert figures > 40, "the sources should name dozens of figures"
    assert len(images) >= figures, f"{len(images)} images for {figures} captioned figures"


def test_every_figure_environment_holds_a_picture(pdf: Path) -> None:
    # A figure whose output LaTeX cannot show (HTML only) keeps its caption and loses its image.
    tex = pdf.with_suffix(".tex")
    if not tex.is_file():
        pytest.skip(f"no LaTeX source beside the PDF ({tex})")
    figures = re.findall(r"\\begin\{figure\}(.*?)\\end\{figure\}", tex.read_text(), re.S)
    assert len(figures) >= captioned_figures(), f"{len(figures)} figure environments"
    empty = [re.search(r"\\caption\{([^}]{0,60})", f) for f in figures if "includegraphics" not in f]
    assert not empty, f"figures without a picture: {[m.group(1) if m else '?' for m in empty]}"


def test_every_chapter_title_is_in_the_text(text: str) -> None:
    missing = [title for title in chapter_titles() if _normalise(title) not in text]
    assert not missing, f"titles not found in the PDF's text: {missing}"


def test_no_unresolved_references(text: str) -> None:
    # LaTeX prints ?? for a \ref to an unknown label and [?] for an unknown citation.
    for marker in ("??", "[?]"):
        where = [m.start() for m in re.finditer(re.escape(marker), text)]
        context = [text[max(i - 60, 0): i + 20] for i in where[:3]]
        assert not where, f"{len(where)} unresolved references ({marker}), e.g. {context}"


def cited_first_authors() -> dict[str, str]:
    """"First Last" of the first author of every work the sources cite, from book/references.bib.

    Names with TeX accents or braces are left out (the PDF prints them as Unicode).
    """
    cited: set[str] = set()
    for name in toc_files():
        for keys in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", (BOOK / f"{name}.md").read_text()):
            cited.update(key.strip() for key in keys.split(","))
    authors: dict[str, str] = {}
    for key, body in re.findall(r"^@\w+\{([^,]+),(.*?)^\}", (BOOK / "references.bib").read_text(),
                                re.M | re.S):
        field = re.search(r"^\s*author\s*=\s*\{(.*)\},?\s*$", body, re.M)
        if key not in cited or field is None:
            continue
        first = field.group(1).split(" and ")[0]
        if "{" in first or "\\" in first or "," not in first:
            continue
        last, given = (part.strip() for part in first.split(",", 1))
        authors[key] = f"{given} {last}"
    return authors


def test_no_output_lost_to_its_text_form(text: str) -> None:
    # LaTeX takes PNG, JPEG, Markdown, LaTeX or plain text from a cell's output and drops HTML.
    # An output with nothing else (an HTML table, a widget) falls back to its plain-text repr.
    reprs = re.findall(r"<(?:IPython\.core\.display\.\w+ object|Figure size [^>]*"
                       r"|[\w.]+ object at 0x[0-9a-f]+)>", text)
    assert not reprs, f"outputs printed as their repr instead of a table or figure: {reprs[:5]}"


def test_bibliography_lists_cited_works(text: str) -> None:
    # Entries print full names ("Ramprasaath R. Selvaraju"); citations in the prose print
    # surnames only ("Selvaraju et al., 2020"), so a full name comes from the bibliography.
    authors = cited_first_authors()
    assert len(authors) > 20, f"only {len(authors)} cited works found in the sources"
    missing = [f"{key} ({name})" for key, name in authors.items() if name not in text]
    assert not missing, f"{len(missing)} cited works have no entry in the PDF, e.g. {missing[:5]}"
    assert re.search(r"Selvaraju et al\.,? \(?\d{4}", text), "no author-year citation of Grad-CAM"


def numbered_chapters() -> list[str]:
    """The pages of the toc's numbered parts, in order: page i is chapter i + 1."""
    text = (ROOT / "_toc.yml").read_text()
    pages = []
    for part in re.split(r"^\s*- caption:", text, flags=re.M)[1:]:
        if re.search(r"^\s*numbered:\s*true", part, re.M):
            pages += re.findall(r"^\s*- file:\s*(\S+)", part, re.M)
    return pages


def test_equations_are_numbered_by_chapter(text: str) -> None:
    # LaTeX numbers display equations by chapter, (c.n); {eq} references print the same.
    # Chapter c with k labelled equations (`$$ (eq-...)`) must show (c.1) to (c.k).
    shown = set(re.findall(r"\((\d{1,2}\.\d{1,2})\)", text))
    expected, missing = 0, []
    for number, name in enumerate(numbered_chapters(), start=1):
        labels = len(re.findall(r"^\$\$\s*\(eq-", (BOOK / f"{name}.md").read_text(), re.M))
        expected += labels
        missing += [f"({number}.{n})" for n in range(1, labels + 1) if f"{number}.{n}" not in shown]
    assert expected > 40, "the sources should label dozens of equations"
    assert not missing, f"equation numbers not in the PDF: {missing}"


def test_no_missing_glyphs(pdf: Path) -> None:
    # XeLaTeX writes "Missing character: There is no ..." to its log for a glyph the font lacks
    # and prints nothing in its place.
    log = pdf.with_suffix(".log")
    if not log.is_file():
        pytest.skip(f"no LaTeX log beside the PDF ({log})")
    missing = sorted(set(re.findall(r"Missing character: There is no (.+?) in font",
                                    log.read_text(errors="replace"))))
    assert not missing, f"characters the fonts lack: {missing}"
