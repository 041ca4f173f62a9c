"""The book's site extensions (book/_ext) on a small fixture book, built here in a few seconds.

tests/site/fixture_book has three small notebooks that need only matplotlib: folded solutions (with
a printed answer, a figure, several cells and a hint), a numbered table made by code, a captioned
figure, code of 88 characters per line and a long output. Built strictly, every page passes every
check of the site test (``sitecheck.page_problems``), and the phone menu opens. Built again with a
chapter whose code fails, a page with an unresolved reference and a misplaced solution cell, the
build fails even without ``-W``, the failed chapter carries its banner, and the log names all three.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sitecheck import (
    check_phone_menu,
    check_solutions_open,
    open_page,
    page_problems,
    site_pages,
    solutions_on_page,
)

FIXTURE = Path(__file__).resolve().parent / "fixture_book"
JUPYTER_BOOK = Path(sys.executable).parent / "jupyter-book"


def _build(out: Path, toc: str, *strict: str, edition: str | None = None) -> subprocess.CompletedProcess:
    if not JUPYTER_BOOK.exists():
        pytest.fail(f"no {JUPYTER_BOOK}: run the site test with the project's venv (`make test-site`)")
    env = {k: v for k, v in os.environ.items() if k != "XAI_BOOK_EDITION"}
    if edition is not None:
        env["XAI_BOOK_EDITION"] = edition
    return subprocess.run(
        [str(JUPYTER_BOOK), "build", str(FIXTURE), "--toc", str(FIXTURE / toc), "--path-output", str(out), *strict],
        capture_output=True, text=True, timeout=600, check=False, env=env)


@pytest.fixture(scope="module")
def good_site(tmp_path_factory, serve):
    out = tmp_path_factory.mktemp("fixture_good")
    result = _build(out, "_toc.yml", "-n", "-W", "--keep-going")
    assert result.returncode == 0, (
        f"the fixture book does not build strictly:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    site = out / "_build" / "html"
    return site, serve(site)


@pytest.fixture(scope="module")
def student_site(tmp_path_factory, serve):
    """The same fixture book in the student edition (``XAI_BOOK_EDITION=student``)."""
    out = tmp_path_factory.mktemp("fixture_student")
    result = _build(out, "_toc.yml", "-n", "-W", "--keep-going", edition="student")
    assert result.returncode == 0, (
        f"the student edition does not build strictly:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    site = out / "_build" / "html"
    return site, serve(site)


@pytest.fixture(scope="module")
def broken_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("fixture_broken")
    result = _build(out, "_toc_broken.yml")   # no -W: the extensions alone must fail it
    return out / "_build" / "html", result


def test_every_page_of_the_fixture_passes(browser, good_site):
    site, server = good_site
    pages = site_pages(site)
    assert {"intro.html", "solutions.html", "figures.html"} <= set(pages), pages
    for page in pages:
        problems = page_problems(browser, server.url(page), site, server.base_url)
        assert not problems, f"{page}:\n  " + "\n  ".join(problems)


def test_solutions_fold_their_cells(browser, good_site):
    """Both solutions hold their cells (the second two, with an assert between them), the hint
    holds none, and a click opens each with its printed answer or its figure."""
    site, server = good_site
    open_page(browser, server.url("solutions.html"))
    held = browser.execute_script("""
        return Array.from(document.querySelectorAll(".admonition.dropdown"), a => [
            a.querySelector(".admonition-title").textContent.trim(),
            a.querySelectorAll(".cell.tag_solution").length,
            a.querySelectorAll(".cell_output img").length,
            a.textContent.includes("six times seven is 42")]);
        """)
    assert [h[:3] for h in held] == [["Solution to exercise 1", 1, 0], ["Solution to exercise 2", 2, 1],
                                      ["Hint for exercise 3", 0, 0]], held
    assert held[0][3], "the printed answer is not inside the first solution"
    assert check_solutions_open(browser) == []


def test_a_table_made_by_code_is_numbered_and_referenced(good_site):
    site, _ = good_site
    html = (site / "solutions.html").read_text(encoding="utf-8")
    assert '<span class="caption-number">Table 1.1 </span>' in html
    assert 'href="#tab-fixture-scores"' in html and "Table 1.1</span></a>" in html
    assert "<strong>0.90</strong>" in html


def test_a_figure_reads_its_caption_as_alt_text(good_site):
    site, _ = good_site
    html = (site / "figures.html").read_text(encoding="utf-8")
    assert 'alt="A small wave, drawn at its natural size."' in html


def test_the_phone_menu_opens(browser, good_site):
    _, server = good_site
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 420, "height": 900, "deviceScaleFactor": 1, "mobile": True})
    try:
        open_page(browser, server.url("solutions.html"))
        assert check_phone_menu(browser) == []
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_a_failed_chapter_fails_the_build_and_carries_a_banner(browser, broken_build, serve):
    site, result = broken_build
    log = result.stdout + result.stderr
    assert result.returncode != 0, "a build with a failing chapter succeeded"
    assert "failing: its code stopped with ValueError: a deliberate failure" in log, log[-3000:]
    assert "fig-that-does-not-exist" in log and "reference(s) unresolved" in log, log[-3000:]
    assert "a code cell tagged 'solution' must follow its solution" in log, log[-3000:]
    server = serve(site)
    open_page(browser, server.url("failing.html"))
    banner = browser.execute_script(
        "const b = document.querySelector('.xai-run-failed'); return b && b.getBoundingClientRect().top < "
        "document.querySelector('.cell').getBoundingClientRect().top ? b.textContent : null;")
    assert banner and "This page is incomplete" in banner and "ValueError: a deliberate failure" in banner, banner
    open_page(browser, server.url("solutions.html"))
    assert not browser.execute_script("return document.querySelector('.xai-run-failed');"), \
        "a page that ran carries the banner"


def test_source_shown_as_markdown_is_highlighted(good_site):
    """A cell that displays a fenced Python block (xai_helpers.display.source_code) shows highlighted
    code, not plain output text."""
    site, _ = good_site
    html = (site / "figures.html").read_text(encoding="utf-8")
    output = html[html.index("Library source shown"):]
    highlighted = '<div class="highlight-python notranslate"><div class="highlight"><pre><span></span>'
    assert highlighted + '<span class="k">def</span>' in output


# --- the two editions --------------------------------------------------------------------------------

#: Text that only the worked solutions of solutions.md show (a prose line and a printed answer).
SOLUTION_TEXT = ("Multiply: the cell below prints the product.", "six times seven is 42")
EXERCISE_TEXT = ("What is six times seven?", "Draw the line y = 2x")


def test_the_instructor_edition_keeps_the_solutions(browser, good_site):
    """The default build is the instructor edition: both solutions and their cells are on the page
    (so that the student test below has something to find missing)."""
    _, server = good_site
    open_page(browser, server.url("solutions.html"))
    found = solutions_on_page(browser)
    assert found["solutions"] == ["Solution to exercise 1", "Solution to exercise 2"], found
    assert found["solution_cells"] == 3 and not found["withheld_notes"], found
    assert all(s in found["text"] for s in SOLUTION_TEXT + EXERCISE_TEXT), found["text"][:500]


def test_the_student_edition_leaves_the_solutions_out(browser, student_site):
    """XAI_BOOK_EDITION=student: no solution, no solution cell and none of their text, one note in
    their place; the exercises and the hint stay, and the page passes every check of the site."""
    site, server = student_site
    problems = page_problems(browser, server.url("solutions.html"), site, server.base_url)
    assert not problems, "solutions.html (student):\n  " + "\n  ".join(problems)
    found = solutions_on_page(browser)
    assert found["solutions"] == [] and found["solution_cells"] == 0, found
    assert found["withheld_notes"] == 1, found
    assert found["hints"] == ["Hint for exercise 3"], found
    assert not [s for s in SOLUTION_TEXT if s in found["text"]], found["text"][:500]
    assert all(s in found["text"] for s in EXERCISE_TEXT), found["text"][:500]
    html = (site / "solutions.html").read_text(encoding="utf-8")
    assert "six times seven is" not in html and "tag_solution" not in html
    pdf = (site / "explaining-cnns.pdf").read_bytes()
    assert pdf[:5] == b"%PDF-" and b"student edition" in pdf, "the student site must not serve the PDF"


def test_an_unknown_edition_stops_the_build(tmp_path):
    result = _build(tmp_path, "_toc.yml", edition="teacher")
    assert result.returncode != 0
    assert "it must be one of instructor, student" in result.stdout + result.stderr
