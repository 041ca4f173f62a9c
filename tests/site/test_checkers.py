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
    check_console,
    check_images,
    check_links,
    check_local_resources,
    check_math,
    check_mathjax_local,
    check_outputs,
    open_page,
    page_problems,
    page_weight,
    site_pages,
)



def _png_1px() -> bytes:
    """A valid 1x1 white PNG, written out by hand."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\xff\xff")) + chunk(b"IEND", b"")


CLEAN = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>clean</title></head><body>
<article><h1 id="top">Clean</h1>
<p><a href="broken.html">the other page</a>, <a href="#top">top</a>, <a href="broken.html#here">there</a>,
<a href="https://example.org/">an outside link is not followed</a></p>
<img src="dot.png" alt="a dot">
<div class="cell_output"><div class="output stream"><pre>accuracy 0.93</pre></div></div>
</article></body></html>"""

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


@pytest.fixture(scope="module")
def fake_site(tmp_path_factory, serve):
    root = tmp_path_factory.mktemp("fake_site")
    outside = serve(tmp_path_factory.mktemp("outside"))  # another origin, on the loopback interface
    (root / "clean.html").write_text(CLEAN)
    (root / "broken.html").write_text(BROKEN.replace("OUTSIDE/", outside.base_url))
    (root / "dot.png").write_bytes(_png_1px())
    (root / "_static").mkdir()
    (root / "_static" / "asset.html").write_text("<p>not a page</p>")
    return root, serve(root)


def test_pages_are_discovered_without_assets(fake_site):
    root, _ = fake_site
    assert site_pages(root) == ["broken.html", "clean.html"]


def test_page_weight_counts_each_linked_image_once_and_no_embedded_one(tmp_path):
    dot = _png_1px()
    (tmp_path / "dot.png").write_bytes(dot)
    html = ('<p><img src="dot.png" alt="a"><img src="./dot.png#x" alt="again"><img src="none.png" alt="gone">'
            '<img src="data:image/png;base64,AAAA" alt="embedded"><img src="https://example.org/x.png" alt="outside"></p>')
    (tmp_path / "page.html").write_text(html)
    assert page_weight(tmp_path, "page.html") == len(html.encode()) + len(dot)


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
