"""The browser checks can fail: each one is run on a tiny site made broken on purpose.

A clean page must pass every check, and the broken page must be caught by each check for the fault
it was given. The "outside" address is another port on the loopback interface, so nothing leaves
the machine.
"""
from __future__ import annotations

import struct
import zlib

import pytest
from sitecheck import (
    PDF_NAME,
    check_alt_text,
    check_code_scroll,
    check_console,
    check_deck,
    check_figure_sizes,
    check_images,
    check_links,
    check_local_resources,
    check_math,
    check_mathjax_local,
    check_no_failure_banner,
    check_outputs,
    check_page_weight,
    check_pdf_link,
    check_phone_menu,
    check_single_search,
    check_solutions_hidden,
    check_solutions_open,
    check_wide_equations,
    loaded_bytes,
    open_page,
    page_problems,
    site_decks,
    site_pages,
)


def _png(width: int = 1, height: int = 1) -> bytes:
    """A valid white RGB PNG of the given size, written out by hand."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = (b"\x00" + b"\xff" * 3 * width) * height
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _png_1px() -> bytes:
    return _png(1, 1)


# sphinx-togglebutton in a few lines: a dropdown admonition starts folded, a click on its title
# unfolds it (the site test clicks titles the same way).
TOGGLE = """<style>.admonition.toggle-hidden > :not(.admonition-title) { display: none; }</style>
<script>document.addEventListener("DOMContentLoaded", () => {
  for (const a of document.querySelectorAll(".admonition.dropdown")) {
    if (a.classList.contains("broken-toggle")) continue;
    a.classList.add("toggle-hidden");
    a.querySelector(".admonition-title").addEventListener("click", () => a.classList.toggle("toggle-hidden"));
  }
});</script>"""

# A folded solution as book/_ext/xai_book_solutions.py writes it: prose and the tagged cell inside.
SOLUTION = """<div class="admonition dropdown"><p class="admonition-title">Solution to exercise 1</p>
<p>The answer is printed below.</p>
<div class="cell tag_solution"><div class="cell_output"><div class="output stream"><pre>42</pre></div></div>
<div class="cell_output"><img src="dot.png" alt="Figure of the solution to exercise 1"></div></div></div>"""


CLEAN = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>clean</title>TOGGLE</head><body>
<nav><a class="xai-pdf-link" href="explaining-cnns.pdf">The whole book as one PDF</a>
<button class="search-button-field">Search</button></nav>
<article><h1 id="top">Clean</h1>
<p><a href="broken.html">the other page</a>, <a href="#top">top</a>, <a href="broken.html#here">there</a>,
<a href="https://example.org/">an outside link is not followed</a></p>
<img src="dot.png" alt="a dot">
<div class="cell_output"><div class="output stream"><pre>accuracy 0.93</pre></div></div>
SOLUTION
<div class="highlight"><pre style="overflow:auto">short = "a line that fits its box"</pre></div>
<div class="cell_output"><img src="wide.png" alt="A wide figure at its natural size"></div>
</article></body></html>""".replace("TOGGLE", TOGGLE).replace("SOLUTION", SOLUTION)

BROKEN = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>broken</title>
<script src="OUTSIDE/mathjax/tex-chtml.js"></script></head><body>
<article><h1 id="here">Broken</h1>
<p><a href="missing.html">a missing page</a>, <a href="clean.html#no-such-id">a missing anchor</a></p>
<img src="missing.png" alt="a missing image">
<p>Raw math: $$x^2$$ and <span class="math notranslate nohighlight">\\(x\\)</span></p>
<div class="cell_output"><div class="output stderr"><pre>oops</pre></div></div>
<div class="cell_output"><div class="output traceback"><pre>Traceback (most recent call last):
ValueError: bad</pre></div></div>
<div class="cell_output"><div class="output stream"><pre>/x.py:3: UserWarning: careful</pre></div></div>
<script>undefinedFunction();</script>
</article></body></html>"""

# One fault per new check of issue 25 (the page has no PDF link either).
BROKEN_READER = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>reader</title>TOGGLE
<script src="heavy.js"></script></head><body>
<nav><button class="search-button-field">Search</button></nav>
<header><button class="search-button-field">Search</button></header>
<article><h1>Reader</h1>
<div class="admonition error xai-run-failed"><p class="admonition-title">This page is incomplete</p></div>
<div class="admonition dropdown broken-toggle"><p class="admonition-title">Solution to exercise 1</p>
<p>shown although closed</p></div>
<div class="admonition dropdown"><p class="admonition-title">Solution to exercise 2</p><p>prose</p></div>
<div class="cell"><div class="cell_output"><div class="output stream"><pre>the answer, 17</pre></div></div></div>
<p>Some text.</p>
<div class="cell tag_solution"><div class="cell_output"><pre>a tagged cell outside its dropdown</pre></div></div>
<div class="admonition dropdown"><p class="admonition-title">Solution to exercise 3</p><p>prose</p>
<div class="cell tag_solution"><div class="cell_input"><pre>print("never shown")</pre></div>
<div class="cell_output" style="display:none"><pre>never shown</pre></div></div></div>
<div class="cell_output"><img src="dot.png" alt="_images/0a1b2c3d.png"><img src="dot.png"></div>
<div class="cell_output"><img src="dot.png" alt="blown up" style="width:40px"></div>
<div class="cell_output"><img src="wide.png" alt="shrunk" style="width:200px"></div>
<div class="xai-explorer" style="width:600px"><img class="xai-explorer-image" src="wide.png" alt="explorer"
  style="width:300px" data-xai-dpi="100"></div>
<div class="highlight" style="width:200px"><pre
  style="overflow:auto;font-size:14px">a = "a line of forty characters, or so"</pre></div>
<div class="math" style="width:300px;overflow:hidden"><mjx-container display="true"
  style="display:block;overflow:auto"><span style="display:inline-block;width:900px">wide</span></mjx-container></div>
</article></body></html>""".replace("TOGGLE", TOGGLE)

# The phone menu: a working one, and the theme's bug (the handler on a hidden second button).
MENU = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>menu</title>
<style>#side { display: none; } #side.open { display: block; position: fixed; left: 0; top: 0; }
.hidden-button { display: none; }</style></head><body>
HIDDEN<button class="primary-toggle" id="visible">Menu</button>
<div id="side"><nav class="bd-links"><a href="clean.html">1. A chapter</a></nav></div>
<script>document.querySelector(".primary-toggle").addEventListener("click",
  () => document.querySelector("#side").classList.add("open"));</script>
<article><h1>Menu</h1></article></body></html>"""
MENU_OK = MENU.replace("HIDDEN", "")
MENU_BROKEN = MENU.replace("HIDDEN", '<button class="primary-toggle hidden-button">Menu</button>')


# A deck as make_slides.py writes it, reduced to what check_deck looks at (reveal.js marks its root
# "ready" once it has started); the broken one never starts, shows no picture, leaves math raw and
# loads a script from outside.
DECK = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>deck</title></head><body>
<div class="reveal"><div class="slides"><section><h1>Title</h1></section>
<section><p>MATH</p><img src="../dot.png" alt="a figure"></section></div></div>
<script>document.querySelector(".reveal").classList.add(READY);</script></body></html>"""
DECK_OK = DECK.replace("READY", '"ready"').replace("MATH", "typeset math")
DECK_BROKEN = (DECK.replace("READY", '"loading"').replace("MATH", "$$x^2$$").replace("../dot.png", "../missing.png")
               .replace("</head>", '<script src="OUTSIDE/reveal.js"></script></head>'))


@pytest.fixture(scope="module")
def fake_site(tmp_path_factory, serve):
    root = tmp_path_factory.mktemp("fake_site")
    outside = serve(tmp_path_factory.mktemp("outside"))  # another origin, on the loopback interface
    (root / "clean.html").write_text(CLEAN)
    (root / "broken.html").write_text(BROKEN.replace("OUTSIDE/", outside.base_url))
    (root / "reader.html").write_text(BROKEN_READER)
    (root / "menu_ok.html").write_text(MENU_OK)
    (root / "menu_broken.html").write_text(MENU_BROKEN)
    (root / "dot.png").write_bytes(_png_1px())
    (root / "wide.png").write_bytes(_png(400, 20))     # 400 px wide, shown at 300 px or less
    (root / "heavy.js").write_text("// " + "x" * 20_000 + "\n")
    (root / PDF_NAME).write_bytes(b"%PDF-1.4\n% a stand-in\n%%EOF\n")
    (root / "slides").mkdir()
    (root / "slides" / "01_ok.slides.html").write_text(DECK_OK)
    (root / "slides" / "02_broken.slides.html").write_text(DECK_BROKEN.replace("OUTSIDE/", outside.base_url))
    (root / "_static").mkdir()
    (root / "_static" / "asset.html").write_text("<p>not a page</p>")
    return root, serve(root)


def test_pages_are_discovered_without_assets(fake_site):
    root, _ = fake_site
    assert site_pages(root) == ["broken.html", "clean.html", "menu_broken.html", "menu_ok.html", "reader.html"]


def test_decks_are_found_apart_from_the_pages(fake_site):
    root, _ = fake_site
    assert site_decks(root) == ["slides/01_ok.slides.html", "slides/02_broken.slides.html"]


def test_deck_check(browser, fake_site):
    _, server = fake_site
    open_page(browser, server.url("slides/01_ok.slides.html"))
    assert check_deck(browser, server.base_url) == []
    open_page(browser, server.url("slides/02_broken.slides.html"))
    problems = "\n".join(check_deck(browser, server.base_url, timeout=1.0))
    for expected in ("reveal.js did not start", "no picture shows", "raw math", "loads from outside the site"):
        assert expected in problems, (expected, problems)


def test_clean_page_passes(browser, fake_site):
    root, server = fake_site
    assert page_problems(browser, server.url("clean.html"), root, server.base_url) == []


def test_every_check_catches_its_fault(browser, fake_site):
    root, server = fake_site
    open_page(browser, server.url("broken.html"))
    outputs = check_outputs(browser)
    assert any("error output" in p and "oops" in p for p in outputs), outputs
    assert any(p.startswith("traceback") for p in outputs), outputs
    assert any("UserWarning" in p for p in outputs), outputs
    assert check_images(browser) == ["image does not load: missing.png"]
    links = check_links(browser, root, server.base_url)
    assert any("missing.html" in p and p.startswith("broken link") for p in links), links
    assert any("no-such-id" in p and p.startswith("broken anchor") for p in links), links
    assert len(links) == 2, links
    math = check_math(browser)
    assert any("MathJax did not start" in p for p in math), math
    assert any("not typeset" in p for p in math), math
    assert any("raw math delimiter" in p and "$$" in p for p in math), math
    assert any("outside the site" in p for p in check_mathjax_local(browser, server.base_url))
    assert any("mathjax" in p for p in check_local_resources(browser, server.base_url))
    console = check_console(browser)
    assert any("undefinedFunction" in p for p in console), console


def test_every_reader_check_catches_its_fault(browser, fake_site):
    """The checks of issue 25, each on its own fault of reader.html."""
    root, server = fake_site
    open_page(browser, server.url("reader.html"))
    hidden = check_solutions_hidden(browser)
    assert any("Solution to exercise 1" in p and "while closed" in p for p in hidden), hidden
    assert any("in plain view" in p and "the answer, 17" in p for p in hidden), hidden
    assert any("outside a dropdown" in p for p in hidden), hidden
    assert len(hidden) == 3, hidden
    alt = check_alt_text(browser)
    assert any("is a path" in p for p in alt) and any("without alt" in p for p in alt), alt
    assert check_single_search(browser) == ["2 search fields show at once"]
    pdf = check_pdf_link(browser, root, server.base_url)
    assert pdf and "no link to the book's PDF" in pdf[0], pdf
    assert any("code failed" in p for p in check_no_failure_banner(browser))
    weight = check_page_weight(browser, limit=20_000)
    assert weight and "heavy.js" in weight[0], weight
    opened = check_solutions_open(browser)
    assert any("Solution to exercise 3" in p and "output stays hidden" in p for p in opened), opened
    code = check_code_scroll(browser)
    assert len(code) == 1 and "39 characters" in code[0], code
    assert any("wider than its box" in p for p in check_wide_equations(browser))
    sizes = check_figure_sizes(browser)
    assert any("blown up" in p and "blown up 40" in p for p in sizes), sizes
    assert any("figure text" in p and "shrunk" in p for p in sizes), sizes
    assert any("explorer narrower than the column" in p for p in sizes), sizes


def test_clean_reader_page_passes_the_opening_checks(browser, fake_site):
    root, server = fake_site
    open_page(browser, server.url("clean.html"))
    assert check_solutions_open(browser) == []
    assert check_code_scroll(browser) == [] and check_figure_sizes(browser) == []
    assert 0 < sum(loaded_bytes(browser).values()) < 100_000


def test_phone_menu_check(browser, fake_site):
    """The phone-width check passes a working menu and catches the theme's bug."""
    _, server = fake_site
    open_page(browser, server.url("menu_ok.html"))
    assert check_phone_menu(browser, timeout=1.0) == []
    open_page(browser, server.url("menu_broken.html"))
    assert check_phone_menu(browser, timeout=1.0) == ["the menu button does not open the chapter list"]
