"""The built website, opened page by page in headless Chromium.

Run by ``make test-site`` after the strict build (``make test-book``). The site folder comes from
``XAI_SITE_DIR`` (default ``_build/html``). On every page: no error, traceback or stderr output, no
warning text in cell outputs, every image loads, every internal link and anchor resolves, math is
typeset by the site's own MathJax, nothing is loaded from outside the site, and the console is
clean. Screenshots of the landing page and of one chapter go to ``XAI_SCREENSHOT_DIR`` (default
``_build/screenshots``; ``make screenshots`` refreshes the ones in ``docs/screenshots/``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from sitecheck import open_page, page_problems, site_pages

ROOT = Path(__file__).resolve().parents[2]
SITE = Path(os.environ.get("XAI_SITE_DIR", ROOT / "_build" / "html")).resolve()
SCREENSHOTS = Path(os.environ.get("XAI_SCREENSHOT_DIR", ROOT / "_build" / "screenshots")).resolve()
PAGES = site_pages(SITE) if SITE.is_dir() else []

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


def _is_notebook_chapter(page: str) -> bool:
    source = ROOT / "book" / Path(page).with_suffix(".md")
    return source.is_file() and source.read_text(encoding="utf-8").startswith("---\njupytext:")


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


def _screenshot(driver, url: str, path: Path, height: int, scroll_to: str | None = None) -> None:
    open_page(driver, url)
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, height)
    try:
        if scroll_to:
            driver.execute_script(
                "const e = document.querySelector(arguments[0]); if (e) e.scrollIntoView({block: 'start'});"
                "window.scrollBy(0, -80);", scroll_to)
        driver.execute_script("return document.fonts.ready;")
        path.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(path)), f"could not write {path}"
    finally:
        driver.set_window_size(width, 1000)


def test_screenshots(browser, site):
    """landing.png (the landing page) and chapter.png (a chapter with figure and math)."""
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
    for name in ("landing.png", "chapter.png"):
        data = (SCREENSHOTS / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, f"{name} looks empty"


def test_math_is_typeset_offline(browser, site):
    """Not vacuous: the book has math, and the site's own MathJax turns it into mjx-container elements."""
    math_pages = [p for p in PAGES if 'class="math' in (SITE / p).read_text(encoding="utf-8")]
    assert math_pages, "no page of the site has math"
    assert (SITE / "_static" / "mathjax" / "tex-chtml-full.js").is_file(), "MathJax is not in the site"
    open_page(browser, site.url(math_pages[0]))
    typeset = browser.execute_script("return document.querySelectorAll('.math mjx-container').length;")
    assert typeset > 0, f"{math_pages[0]}: math was not typeset"
