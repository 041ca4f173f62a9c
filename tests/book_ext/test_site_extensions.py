"""The website's extensions in book/_ext, piece by piece (the fixture book of tests/site builds them
together in a browser): solutions folded into their dropdowns, a failed chapter's banner and its
error, alt text from captions, the version line, the stand-in PDF, MathJax only with math."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from docutils import nodes

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "book" / "_ext" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


solutions = _load("xai_book_solutions")
failures = _load("xai_book_failures")
html = _load("xai_book_html")


def _cell(*tags: str, text: str = "print(42)") -> nodes.container:
    cell = nodes.container(nb_element="cell_code", classes=["cell", *(f"tag_{t}" for t in tags)])
    cell += nodes.literal_block(text, text)
    return cell


def _dropdown(title: str) -> nodes.admonition:
    box = nodes.admonition(classes=["admonition-solution", "dropdown"])
    box += nodes.title(text=title)
    box += nodes.paragraph(text="The answer.")
    return box


def test_solution_cells_move_into_the_dropdown_before_them():
    document = nodes.section()
    first, second = _dropdown("Solution to exercise 1"), _dropdown("Solution to exercise 2")
    a, b, c = _cell("hide-input", "solution"), _cell("solution"), _cell("solution")
    plain = _cell("hide-input")
    document += [first, a, nodes.target(), b, nodes.paragraph(text="Between."), plain, second, c]
    assert solutions.fold_solutions(document) == []
    assert list(first.children)[-2:] == [a, b] and list(second.children)[-1] == c
    assert plain.parent is document, "a cell without the tag stays where it is"


def test_a_solution_cell_without_its_solution_is_reported_and_stays():
    document = nodes.section()
    note = nodes.admonition(classes=["note"])          # not a dropdown
    stray, after_text = _cell("solution"), _cell("solution")
    document += [note, stray, nodes.paragraph(text="Text."), after_text]
    assert solutions.fold_solutions(document) == [stray, after_text]
    assert stray.parent is document and after_text.parent is document


def test_the_student_edition_withholds_solutions_and_keeps_hints():
    """Solutions (with the cells folded into them) leave the page; one note per section stands
    where the first one was; a hint and the exercises stay."""
    exercises, other = nodes.section(), nodes.section()
    first, second, hint = _dropdown("Solution to exercise 1"), _dropdown("Solution to exercise 2"), _dropdown("Hint")
    listing = nodes.enumerated_list()
    exercises += [listing, first, _cell("solution"), second, hint]
    third = _dropdown("Solution to exercise 3")
    other += [third]
    document = nodes.section()
    document += [exercises, other]
    assert solutions.fold_solutions(document) == []
    assert solutions.withhold_solutions(document) == 3
    assert [type(c) for c in exercises.children] == [nodes.enumerated_list, nodes.admonition, nodes.admonition]
    note, kept = exercises.children[1], exercises.children[2]
    assert solutions.WITHHELD_CLASS in note["classes"] and "student edition" in note.astext()
    assert kept is hint and len(other.children) == 1 and other.children[0] is not third
    assert not list(document.findall(solutions.is_solution_cell))
    assert not any(solutions.is_solution(n) for n in document.findall(nodes.admonition))


def test_a_dropdown_holding_a_solution_cell_is_a_solution_whatever_its_title():
    box = _dropdown("Answer")
    assert not solutions.is_solution(box)
    box += _cell("solution")
    assert solutions.is_solution(box)


def test_the_edition_setting_is_checked():
    solutions.check_edition(None, SimpleNamespace(xai_book_edition="student"))
    solutions.check_edition(None, SimpleNamespace())                 # the default: instructor
    with pytest.raises(solutions.ExtensionError, match="one of instructor, student"):
        solutions.check_edition(None, SimpleNamespace(xai_book_edition="teacher"))


def test_the_failed_cell_error_is_read_from_the_traceback():
    traceback = ("\x1b[0;31m---------------------------------------------------------------------------\x1b[0m\n"
                 "\x1b[0;31mValueError\x1b[0m                                Traceback (most recent call last)\n"
                 "Cell \x1b[0;32mIn[2], line 1\x1b[0m\n----> 1 raise ValueError('bad input')\n\n"
                 "\x1b[0;31mValueError\x1b[0m: bad input")
    assert failures.cell_error(traceback) == "ValueError: bad input"
    assert failures.cell_error("") == "" and failures.cell_error(None) == ""
    env = SimpleNamespace(nb_metadata={
        "ok": {"exec_data": {"succeeded": True}},
        "bad": {"exec_data": {"succeeded": False, "error": "CellExecutionError", "traceback": traceback}},
        "bare": {"exec_data": {"succeeded": False, "error": "CellTimeoutError", "traceback": None}},
        "text": {}})
    assert failures.failed_executions(env) == {"bad": "ValueError: bad input", "bare": "CellTimeoutError"}


def test_the_banner_says_the_page_is_incomplete():
    box = failures.banner("ValueError: bad input")
    assert failures.BANNER_CLASS in box["classes"] and "error" in box["classes"]
    assert box[0].astext() == "This page is incomplete" and "ValueError: bad input" in box.astext()


def test_unresolved_references_are_collected_once():
    import logging

    handler = failures.UnresolvedReferences()
    for message, kind in [("undefined label: 'fig-x'", ("ref", "ref")), ("undefined label: 'fig-x'", ("ref", "ref")),
                          ('could not find bibtex key "k"', ("bibtex", "key_not_found")),
                          ("No key 'g' found in glue data for this document.", (None, None)),
                          ("an unrelated warning", (None, None))]:
        record = logging.LogRecord("sphinx.x", logging.WARNING, __file__, 1, message, None, None)
        record.type, record.subtype = kind
        handler.emit(record)
    assert list(handler.found) == ["undefined label: 'fig-x'", 'could not find bibtex key "k"',
                                   "No key 'g' found in glue data for this document."]


def test_alt_text_comes_from_the_caption_else_the_solution_or_section():
    figure = nodes.figure()
    image = nodes.image(uri="_images/0a1b2c.png")
    figure += [image, nodes.caption(text="A cat  and\nits map.")]
    assert html.alt_text(image) == "A cat and its map."
    solution = _dropdown("Solution to exercise 3")
    loose = nodes.image(uri="x.png")
    solution += loose
    assert html.alt_text(loose) == "Figure of the solution to exercise 3"
    section = nodes.section()
    section += nodes.title(text="Where to look")
    inside = nodes.image(uri="y.png")
    section += nodes.paragraph("", "", inside)
    assert html.alt_text(inside) == "Figure of the section \u201cWhere to look\u201d"


def test_math_is_found_in_a_page_or_not():
    page = nodes.section()
    page += nodes.paragraph(text="no math")
    assert not html.has_math(page) and not html.has_math(None)
    page += nodes.math_block("x^2", "x^2")
    assert html.has_math(page)


def test_the_version_line_reads_pyproject_and_survives_outside_git(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\n\n[project]\nname = "x"\nversion = "0.2.0"\n')
    assert html.book_version(tmp_path) == "0.2.0"
    assert html.book_version(tmp_path / "nowhere") == ""
    assert html.last_commit(tmp_path) == ("", "")          # not a git repository
    expected = "Version 0.2.0 \u00b7 last updated 2026-12-03 (abc1234)"
    assert html.version_line("0.2.0", "2026-12-03", "abc1234") == expected
    assert html.version_line("0.2.0", "", "") == "Version 0.2.0"
    assert html.version_line("", "2026-12-03", "") == "Last updated 2026-12-03"


def test_the_stand_in_pdf_is_a_valid_pdf():
    data = html.placeholder_pdf(["The PDF was not built (run `make pdf`)."])
    assert data.startswith(b"%PDF-1.4\n") and data.rstrip().endswith(b"%%EOF")
    xref = int(data.rsplit(b"startxref\n", 1)[1].split()[0])
    assert data[xref:xref + 4] == b"xref"
    offsets = [int(line.split()[0]) for line in data[xref:].splitlines()[3:8]]
    assert [data[o:o + 7] for o in offsets] == [f"{n} 0 obj".encode() for n in range(1, 6)]
    assert b"(The PDF was not built \\(run `make pdf`\\).)" in data


def test_no_navbar_keeps_the_user_s_choices():
    config = SimpleNamespace(html_theme_options={"repository_url": "u"}, templates_path=["_templates"])
    html.no_navbar(None, config)
    assert config.html_theme_options == {"repository_url": "u", "navbar_persistent": [],
                                         "primary_sidebar_end": ["xai-sidebar-end.html"]}
    assert config.templates_path[0] == "_templates" and config.templates_path[1].endswith("templates")
    config = SimpleNamespace(html_theme_options={"navbar_persistent": ["search-button"]}, templates_path=[])
    html.no_navbar(None, config)
    assert config.html_theme_options["navbar_persistent"] == ["search-button"]


def _app(outdir: Path, fmt: str = "html"):
    return SimpleNamespace(outdir=str(outdir), builder=SimpleNamespace(format=fmt),
                           config=SimpleNamespace(html_theme_options={"repository_url": "https://example.org/r"}))


def test_the_site_gets_the_built_pdf_or_a_stand_in(tmp_path):
    site = tmp_path / "html"
    site.mkdir()
    html.copy_book_pdf(_app(site), None)
    stand_in = (site / html.PDF_NAME).read_bytes()
    assert stand_in.startswith(b"%PDF-") and b"make pdf" in stand_in and b"https://example.org/r" in stand_in
    (tmp_path / "latex").mkdir()
    (tmp_path / "latex" / html.PDF_NAME).write_bytes(b"%PDF-1.7 the book")
    html.copy_book_pdf(_app(site), None)
    assert (site / html.PDF_NAME).read_bytes() == b"%PDF-1.7 the book"
    (site / html.PDF_NAME).unlink()
    html.copy_book_pdf(_app(site, "latex"), None)          # other builders: nothing
    html.copy_book_pdf(_app(site), RuntimeError("failed"))  # a failed build: nothing
    assert not (site / html.PDF_NAME).exists()


def test_the_student_edition_never_serves_the_book_pdf(tmp_path):
    """The PDF prints every solution: the student site links a stand-in that says so, even when
    the real PDF lies beside it."""
    site = tmp_path / "html"
    site.mkdir()
    (tmp_path / "latex").mkdir()
    (tmp_path / "latex" / html.PDF_NAME).write_bytes(b"%PDF-1.7 the instructor's book")
    app = _app(site)
    app.config.xai_book_edition = "student"
    html.copy_book_pdf(app, None)
    served = (site / html.PDF_NAME).read_bytes()
    assert served.startswith(b"%PDF-") and b"student edition" in served and b"instructor's book" not in served


def test_the_fontawesome_script_is_emptied(tmp_path):
    script = tmp_path / html.FONTAWESOME_SCRIPT
    script.parent.mkdir(parents=True)
    script.write_text("x" * 1000)
    styles = tmp_path / "_static" / "styles" / "pydata-sphinx-theme.css"
    styles.parent.mkdir(parents=True)
    styles.write_text(".fa-solid{}")                    # a theme whose CSS does not draw the icons
    html.drop_fontawesome_script(_app(tmp_path), None)
    assert script.read_text() == "x" * 1000
    styles.write_text('@font-face{font-family:Font Awesome\\ 6 Free}.fa-bars:before{content:"\\f0c9"}')
    html.drop_fontawesome_script(_app(tmp_path), None)
    assert script.read_text().startswith("/*") and len(script.read_text()) < 300
    html.drop_fontawesome_script(_app(tmp_path / "missing"), None)   # no theme script: nothing to do
