"""The built website, opened page by page in headless Chromium.

Run by ``make test-site`` after the strict build (``make test-book``). The site folder comes from
``XAI_SITE_DIR`` (default ``_build/html``). On every page (``sitecheck.page_problems``): no error,
traceback or stderr output, no warning text in cell outputs, every image loads, every internal link
and anchor resolves, math is typeset by the site's own MathJax, nothing is loaded from outside the
site, and the console is clean; with every toggle closed no solution shows, and opening a solution
shows its outputs; every picture has an alt text that is not a path; one search field; a link to
the book's PDF; no banner of a failed chapter; everything the page loads (shared theme files,
MathJax and fonts included) weighs under 5 MB; code whose lines have at most 88 characters needs
no sideways scroll, no displayed equation is wider than its box, no figure is blown up, figure text
stays at least 9 px high as shown, and explorers fill the column. At phone width the menu button
opens the chapter list. Every web explorer (``xai_helpers.widgets``) swaps in the picture
precomputed for the combination its controls show. Screenshots at desktop and phone width go to
``XAI_SCREENSHOT_DIR`` (default ``_build/screenshots``; ``make screenshots`` refreshes the ones in
``docs/screenshots/``).

The teaching kit (issue 30): the student edition (``XAI_STUDENT_SITE_DIR``, default
``_build/html-student``) shows the exercises of every chapter and none of their solutions, and a
deck of slides (``slides/``) starts, shows its figures and loads nothing from outside; the teaching
page links a graded problem set per week (``problem_sets/weekNN.ipynb``, copied in by ``make
problem-sets``), and each link opens a student notebook that the site serves, without solutions.

The same test runs on any Jupyter Book built with the book's extensions, such as the small
fixture book of tests/site/fixture_book (``XAI_SITE_DIR=...``): the tests that need the book's own
chapters (explorers, Colab buttons, screenshots of chapter 9) are skipped on another site.
"""
from __future__ import annotations

import os
import re
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest
import yaml
from sitecheck import (
    PDF_NAME,
    check_console,
    check_deck,
    check_phone_menu,
    explorer_state,
    open_page,
    page_problems,
    site_decks,
    site_pages,
    solutions_on_page,
)

ROOT = Path(__file__).resolve().parents[2]
SITE = Path(os.environ.get("XAI_SITE_DIR", ROOT / "_build" / "html")).resolve()
SCREENSHOTS = Path(os.environ.get("XAI_SCREENSHOT_DIR", ROOT / "_build" / "screenshots")).resolve()
PAGES = site_pages(SITE) if SITE.is_dir() else []
EXPLORER_PAGES = [p for p in PAGES if 'class="xai-explorer"' in (SITE / p).read_text(encoding="utf-8")]
PHONE = (420, 900)
# The student edition (make book-student / test-book-student) and the decks (make slides / test-slides).
STUDENT_SITE = Path(os.environ.get("XAI_STUDENT_SITE_DIR", ROOT / "_build" / "html-student")).resolve()
# Under `make test` both must be there; a plain `make test-site` skips what was not built.
KIT_REQUIRED = bool(os.environ.get("XAI_TEACHING_KIT_REQUIRED"))

if "XAI_SITE_DIR" not in os.environ and not (SITE / "index.html").is_file():
    # A plain `pytest` before any build; `make test-site` always sets XAI_SITE_DIR, and fails instead.
    pytest.skip("no built site: run `make test-book test-site`", allow_module_level=True)


def _toc_files(node) -> list[str]:
    files = []
    if isinstance(node, dict):
        for key in ("root", "file"):
            if key in node:
                files.append(node[key])
        for value in node.values():
            if isinstance(value, (list, dict)):
                files += _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            files += _toc_files(item)
    return files


def _config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def _is_the_book() -> bool:
    """The site was built from this repository's book: its landing page carries the book's title
    (the ``html_title`` that ends each page's ``<title>``)."""
    landing = SITE / "intro.html"
    if not landing.is_file():
        return False
    title = re.search(r"<title>(.*?)</title>", landing.read_text(encoding="utf-8"), re.DOTALL)
    return bool(title) and title.group(1).strip().endswith(str(_config()["title"]))


THE_BOOK = SITE.is_dir() and _is_the_book()
book_only = pytest.mark.skipif(not THE_BOOK, reason="needs the book's own chapters (another site)")


@pytest.fixture(scope="module")
def site(serve):
    if not (SITE / "index.html").is_file():
        pytest.fail(f"no built site in {SITE}: run `make test-book` (or set XAI_SITE_DIR)")
    return serve(SITE)


def test_site_has_pages():
    assert (SITE / "index.html").is_file(), f"no built site in {SITE}: run `make test-book`"
    assert len(PAGES) >= 3, PAGES


def test_every_toc_entry_was_built():
    """Pages come from the build; this cross-checks them against _toc.yml (skipped for a private toc)."""
    if "XAI_SITE_DIR" in os.environ and SITE != (ROOT / "_build" / "html").resolve():
        pytest.skip("a site built from another table of contents")
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    missing = [f for f in _toc_files(toc) if f"{Path(f).with_suffix('').as_posix()}.html" not in PAGES]
    assert not missing, f"in _toc.yml but not in the site: {missing}"


@pytest.mark.parametrize("page", PAGES)
def test_page(browser, site, page):
    problems = page_problems(browser, site.url(page), SITE, site.base_url)
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)


@pytest.fixture
def phone(browser):
    """The browser at phone width (420 x 900 CSS pixels, a touch device) for one test."""
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": PHONE[0], "height": PHONE[1], "deviceScaleFactor": 1, "mobile": True})
    try:
        yield browser
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _phone_pages() -> list[str]:
    """The landing page, the first and the last chapter (on another site: its first two pages)."""
    landing = [p for p in ("intro.html", "index.html") if p in PAGES][:1]
    chapters = [p for p in PAGES if re.match(r"\d\d_", p)]
    if not chapters:
        chapters = [p for p in PAGES if p not in landing and p not in ("genindex.html", "search.html")][:2]
    return landing + sorted(set(chapters[:1] + chapters[-1:]))


@pytest.mark.parametrize("page", _phone_pages())
def test_phone_menu_opens_the_chapter_list(phone, site, page):
    """At 420 px the menu button shows, and a tap on it opens the chapter list."""
    open_page(phone, site.url(page))
    width = phone.execute_script("return window.innerWidth;")
    assert width == PHONE[0], f"the phone viewport is {width} px wide"
    problems = check_phone_menu(phone)
    assert not problems, f"{page}: {problems}"


def test_the_pdf_link_leads_to_the_built_pdf():
    """Every page links explaining-cnns.pdf (sitecheck.check_pdf_link). Here: when ``make pdf`` has
    built the book's PDF beside this site, the site serves that PDF and not an older one or the
    stand-in (book/_ext/xai_book_html.py)."""
    served = SITE / PDF_NAME
    assert served.is_file() and served.read_bytes()[:5] == b"%PDF-", f"no {PDF_NAME} in the site"
    built = SITE.parent / "latex" / PDF_NAME
    if os.environ.get("XAI_PDF_REQUIRED") and not built.is_file():
        pytest.fail(f"no {built}: run `make pdf`")
    if built.is_file():
        assert served.read_bytes() == built.read_bytes(), f"{served} is not the PDF in {built}: run `make pdf`"


@book_only
def test_the_book_has_web_explorers():
    """Not vacuous: the chapters that use ``explore`` show web explorers."""
    for chapter in ("02_", "06_", "09_", "10_", "12_"):
        assert any(p.startswith(chapter) for p in EXPLORER_PAGES), f"no web explorer on chapter {chapter}"


def _change(browser, control) -> None:
    """Change one control the way a reader does: pick the next offered entry, or press the right arrow."""
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", control)
    if control.tag_name == "select":
        menu = Select(control)
        offered = [o for o in menu.options if o.is_enabled()]
        current = menu.first_selected_option.get_attribute("value")
        later = [o for o in offered if o.get_attribute("value") != current]
        control.click()
        menu.select_by_value(later[-1].get_attribute("value"))
    else:
        if control.get_attribute("value") == control.get_attribute("max"):
            control.send_keys(Keys.ARROW_LEFT)
        else:
            control.send_keys(Keys.ARROW_RIGHT)


@book_only
@pytest.mark.parametrize("page", EXPLORER_PAGES)
def test_explorers_show_the_precomputed_picture(browser, site, page):
    """For each explorer and each control with a choice: change it, and the picture shown is the one
    precomputed for the new combination, different from before, in this explorer only."""
    open_page(browser, site.url(page))
    roots = browser.find_elements("css selector", "div.xai-explorer")
    assert roots, f"{page}: no explorer"
    changed = 0
    for n, root in enumerate(roots):
        for control in root.find_elements("css selector", "[data-choice]"):
            before = [explorer_state(browser, r) for r in roots]
            state = before[n]
            assert state["src"] == state["images"][state["key"]], f"{page} explorer {n}: wrong picture at start"
            if control.tag_name == "select" and len([o for o in control.find_elements("tag name", "option")
                                                     if o.is_enabled()]) < 2:
                continue
            _change(browser, control)
            after = [explorer_state(browser, r) for r in roots]
            new = after[n]
            key = ",".join(new["values"])  # the combination the controls show now
            assert key != state["key"], f"{page} explorer {n}: {control.get_attribute('data-choice')} did not change"
            assert new["key"] == key and new["src"] == new["images"][key], \
                f"{page} explorer {n}: controls say {key}, picture of {new['key']}"
            assert new["src"] != state["src"], f"{page} explorer {n}: the picture did not change"
            assert new["alt"] == new["altOf"][key]
            for m, (b, a) in enumerate(zip(before, after)):
                if m != n:
                    assert a["key"] == b["key"] and a["src"] == b["src"], f"{page}: explorer {m} changed with {n}"
            changed += 1
    assert changed, f"{page}: no control could be changed"
    assert not check_console(browser), check_console(browser)


def _is_notebook_chapter(page: str) -> bool:
    source = ROOT / "book" / Path(page).with_suffix(".md")
    return source.is_file() and source.read_text(encoding="utf-8").startswith("---\njupytext:")


@book_only
@pytest.mark.parametrize("page", [p for p in PAGES if _is_notebook_chapter(p)])
def test_colab_button_opens_the_notebook(browser, site, page):
    """The launch button links to the chapter's .ipynb in the repository (Colab cannot open .md)."""
    config = _config()
    repo = config["repository"]["url"].rstrip("/")
    owner_repo = repo.removeprefix("https://github.com/")
    branch = config["repository"].get("branch", "main")
    book_dir = config["repository"].get("path_to_book", "book")
    open_page(browser, site.url(page))
    links = browser.execute_script(
        "return Array.from(document.querySelectorAll('a[href*=\"colab.research.google.com\"]'), a => a.href);"
    )
    name = Path(page).with_suffix(".ipynb").as_posix()
    expected = f"https://colab.research.google.com/github/{owner_repo}/blob/{branch}/{book_dir}/{name}"
    assert links, f"{page} has no Colab launch button"
    assert set(links) == {expected}, f"{page}: Colab link {links}, expected {expected}"
    assert (ROOT / book_dir / name).is_file(), f"{book_dir}/{name} is missing: run `make notebooks`"


def _screenshot(driver, url: str, path: Path, height: int, scroll_to: str | None = None,
                before=None) -> None:
    open_page(driver, url)
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, height)
    try:
        if before:
            before(driver)
        if scroll_to:
            driver.execute_script(
                "const e = document.querySelector(arguments[0]); if (e) e.scrollIntoView({block: 'start'});"
                "window.scrollBy(0, -80);", scroll_to)
        driver.execute_script("return document.fonts.ready;")
        path.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(path)), f"could not write {path}"
    finally:
        driver.set_window_size(width, 1000)


@book_only
def test_screenshots(browser, site):
    """At desktop width: landing.png (the landing page), chapter.png (a chapter with figure and
    math), explorer.png (chapter 9's web explorer after a menu changed) and solution.png (an opened
    solution). At phone width: landing-phone.png, chapter-phone.png and menu-phone.png (the menu
    opened)."""
    landing = "intro.html" if "intro.html" in PAGES else "index.html"
    _screenshot(browser, site.url(landing), SCREENSHOTS / "landing.png", 1000)
    chapters = [p for p in PAGES if re.match(r"\d\d_", p)]
    assert chapters, "no chapter pages"

    def has_figure_and_equations(page: str) -> bool:
        html = (SITE / page).read_text(encoding="utf-8")
        return "<figure" in html and '<div class="math' in html

    # The Grad-CAM chapter, else the first chapter with a figure and displayed equations.
    preferred = [p for p in chapters if p.startswith("09_")] + [p for p in chapters if has_figure_and_equations(p)]
    chapter = (preferred or chapters)[0]
    _screenshot(browser, site.url(chapter), SCREENSHOTS / "chapter.png", 1300, scroll_to="div.math")
    explorer_page = next(p for p in EXPLORER_PAGES if p.startswith("09_"))

    def pick_cat(driver) -> None:  # the explorer after a reader chose another image
        from selenium.webdriver.support.ui import Select
        menu = driver.find_element("css selector", "div.xai-explorer select[data-choice='image']")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", menu)
        Select(menu).select_by_visible_text("cat + coffee")
        image = driver.find_element("css selector", "img.xai-explorer-image")
        assert "image: cat + coffee" in image.get_attribute("alt")

    _screenshot(browser, site.url(explorer_page), SCREENSHOTS / "explorer.png", 900,
                scroll_to="div.xai-explorer", before=pick_cat)

    def open_solution(driver) -> None:  # chapter 9's first solution, clicked open
        title = driver.find_element(
            "xpath", "//*[contains(@class, 'dropdown')]/*[contains(@class, 'admonition-title')]"
                     "[contains(., 'Solution to exercise 1')]")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", title)
        title.click()
        driver.execute_script("arguments[0].parentElement.setAttribute('data-xai-shot', '1');", title)
        body = driver.find_element("css selector", "[data-xai-shot] > p:not(.admonition-title)")
        import time
        for _ in range(50):  # the toggle animates open
            if body.is_displayed() and body.size["height"] > 0:
                break
            time.sleep(0.1)
        assert body.is_displayed(), "the solution did not open"

    _screenshot(browser, site.url(chapter if chapter.startswith("09_") else explorer_page),
                SCREENSHOTS / "solution.png", 1000, scroll_to="[data-xai-shot]", before=open_solution)

    # At phone width (420 px): the landing page, the chapter at its first equation, the menu opened.
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": PHONE[0], "height": PHONE[1], "deviceScaleFactor": 1, "mobile": True})
    try:
        _screenshot(browser, site.url(landing), SCREENSHOTS / "landing-phone.png", PHONE[1])
        _screenshot(browser, site.url(chapter), SCREENSHOTS / "chapter-phone.png", PHONE[1], scroll_to="div.math")

        def open_menu(driver) -> None:
            assert check_phone_menu(driver) == [], "the menu did not open"

        _screenshot(browser, site.url(chapter), SCREENSHOTS / "menu-phone.png", PHONE[1], before=open_menu)
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    for name in ("landing.png", "chapter.png", "explorer.png", "solution.png",
                 "landing-phone.png", "chapter-phone.png", "menu-phone.png"):
        data = (SCREENSHOTS / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, f"{name} looks empty"


@book_only
def test_math_is_typeset_offline(browser, site):
    """Not vacuous: the book has math, and the site's own MathJax turns it into mjx-container elements."""
    math_pages = [p for p in PAGES if 'class="math' in (SITE / p).read_text(encoding="utf-8")]
    assert math_pages, "no page of the site has math"
    assert (SITE / "_static" / "mathjax" / "tex-chtml-full.js").is_file(), "MathJax is not in the site"
    open_page(browser, site.url(math_pages[0]))
    typeset = browser.execute_script("return document.querySelectorAll('.math mjx-container').length;")
    assert typeset > 0, f"{math_pages[0]}: math was not typeset"


# --- the teaching kit: the student edition and the slides --------------------------------------------

def _needs(path: Path, what: str, how: str) -> None:
    if path.exists():
        return
    if KIT_REQUIRED:
        pytest.fail(f"no {what} in {path}: run `{how}`")
    pytest.skip(f"no {what} in {path} (`{how}` builds it)")


def _student_chapters() -> list[str]:
    return sorted(p.name for p in STUDENT_SITE.glob("[0-9][0-9]_*.html")) if STUDENT_SITE.is_dir() else []


@book_only
def test_the_student_edition_has_no_solutions():
    """Every chapter of the student edition keeps its exercises and loses its solutions, which the
    default edition shows (so each chapter has something to lose)."""
    _needs(STUDENT_SITE / "index.html", "student edition", "make book-student")
    chapters = _student_chapters()
    assert chapters == sorted(p for p in PAGES if re.match(r"\d\d_", p)), chapters
    for name in chapters:
        student = (STUDENT_SITE / name).read_text(encoding="utf-8")
        instructor = (SITE / name).read_text(encoding="utf-8")
        assert ">Solution to exercise 1<" in instructor, f"{name}: the default edition shows no solution"
        assert "Solution to exercise" not in student and "tag_solution" not in student, name
        assert 'id="exercises"' in student and "xai-solutions-withheld" in student, name


@book_only
def test_a_student_page_in_the_browser(browser, serve):
    """The first chapter of the student edition, opened: it passes every check of a page, shows no
    solution and no solution cell, and says where the solutions are; the exercises are there."""
    _needs(STUDENT_SITE / "index.html", "student edition", "make book-student")
    server = serve(STUDENT_SITE)
    page = _student_chapters()[0]
    problems = page_problems(browser, server.url(page), STUDENT_SITE, server.base_url)
    assert not problems, f"{page} (student):\n  " + "\n  ".join(problems)
    found = solutions_on_page(browser)
    assert found["solutions"] == [] and found["solution_cells"] == 0, found
    assert found["withheld_notes"] >= 1 and "student edition" in found["text"], found["withheld_notes"]
    assert browser.execute_script("return !!document.querySelector('#exercises ol li');"), "no exercises"


@book_only
def test_every_chapter_has_a_deck():
    _needs(SITE / "slides", "slides", "make slides")
    chapters = sorted(p[:-len(".html")] for p in PAGES if re.match(r"\d\d_", p))
    assert site_decks(SITE) == [f"slides/{c}.slides.html" for c in chapters]


def test_a_deck_starts_offline_with_its_figures(browser, site):
    """The first deck: reveal.js starts from the site's copy, a figure shows, math is typeset, and
    nothing is loaded from outside; the worked solutions are not in it."""
    _needs(SITE / "slides", "slides", "make slides")
    decks = site_decks(SITE)
    assert decks, f"no deck in {SITE / 'slides'}"
    open_page(browser, site.url(decks[0]))
    problems = check_deck(browser, site.base_url)
    assert not problems, f"{decks[0]}:\n  " + "\n  ".join(problems)
    assert "Solution to exercise" not in (SITE / decks[0]).read_text(encoding="utf-8")


def _problem_set_links(html: str) -> list[str]:
    """The links of a page to the problem sets, as written in its HTML."""
    return sorted(set(re.findall(r'href="(problem_sets/[^"#]+\.ipynb)"', html)))


def _is_student_notebook(text: str) -> bool:
    """A valid notebook with otter's grader and a check of question 1, and no solution markers."""
    notebook = nbformat.reads(text, as_version=4)
    nbformat.validate(notebook)
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    return "otter.Notebook(" in code and 'grader.check("q1")' in code and "SOLUTION" not in code


@book_only
def test_the_problem_sets_open_from_the_teaching_page(browser, site):
    """The teaching page, opened in the browser, links one problem set per master of problem_sets/;
    every link leads to a file of the site, which the site's server serves as a student notebook.
    The student edition's teaching page links the same notebooks, and its site has them too."""
    _needs(SITE / "problem_sets", "problem sets", "make problem-sets")
    masters = sorted(p.stem for p in (ROOT / "problem_sets").glob("week*.md"))
    assert len(masters) == 10, masters
    open_page(browser, site.url("teaching.html"))
    hrefs = sorted(set(browser.execute_script(
        "return Array.from(document.querySelectorAll('a[href]'), a => a.href)"
        ".filter(h => /\\/problem_sets\\/[^\\/]+\\.ipynb$/.test(h));")))
    assert [Path(urlparse(h).path).stem for h in hrefs] == masters, hrefs
    for href in hrefs:
        assert href.startswith(site.base_url), href
        rel = urlparse(href).path.lstrip("/")
        assert (SITE / rel).is_file(), f"the teaching page links {rel}, which is not in {SITE}"
        with urllib.request.urlopen(href, timeout=10) as response:
            assert response.status == 200 and _is_student_notebook(response.read().decode("utf-8")), href
    if (STUDENT_SITE / "teaching.html").is_file():
        _needs(STUDENT_SITE / "problem_sets", "problem sets in the student edition", "make problem-sets")
        links = _problem_set_links((STUDENT_SITE / "teaching.html").read_text(encoding="utf-8"))
        assert links == [f"problem_sets/{m}.ipynb" for m in masters], links
        assert all(_is_student_notebook((STUDENT_SITE / link).read_text(encoding="utf-8")) for link in links)


def test_the_problem_set_checks_can_fail():
    page = '<a href="problem_sets/week01.ipynb">1</a> <a href="problem_sets/week01.ipynb#x">again</a>'
    assert _problem_set_links(page) == ["problem_sets/week01.ipynb"]
    solution = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('import otter\ngrader = otter.Notebook("week01.ipynb")'),
        nbformat.v4.new_code_cell("def f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION"),
        nbformat.v4.new_code_cell('grader.check("q1")')])
    assert not _is_student_notebook(nbformat.writes(solution))
    solution.cells[1].source = "def f():\n    ..."
    assert _is_student_notebook(nbformat.writes(solution))
