"""What the browser test checks on one page, as functions that return a list of problems.

Each ``check_*`` function looks at the page the browser shows now (after :func:`open_page`) and
returns human-readable problems; an empty list means the page passed. ``test_checkers.py`` feeds them
small broken pages to prove that each one can fail.
"""
from __future__ import annotations

import functools
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

# Browser console lines that say nothing about the site (Chromium asks every server for a favicon).
IGNORED_CONSOLE = (re.compile(r"/favicon\.ico\b"),)
WARNING_TEXT = re.compile(r"\b[A-Za-z]*Warning\b")
TRACEBACK_TEXT = re.compile(r"Traceback \(most recent call last\)")
RAW_MATH = re.compile(r"\$\$|\\\(|\\\)|\\begin\{")


def site_pages(site_dir: Path) -> list[str]:
    """Every HTML page of a built site, relative to it (the theme's own folders excluded)."""
    site_dir = Path(site_dir)
    pages = []
    for path in sorted(site_dir.rglob("*.html")):
        rel = path.relative_to(site_dir)
        if any(part.startswith("_") for part in rel.parts[:-1]):
            continue  # _static, _sources, _images: assets, not pages
        pages.append(rel.as_posix())
    return pages


def open_page(driver, url: str) -> None:
    """Load ``url``, then wait for the document, its images and (where present) MathJax."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(url)
    driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const deadline = Date.now() + 30000;
        const images = () => Promise.all(Array.from(document.images, img => {
            img.loading = "eager";
            return img.complete ? null : new Promise(ok => {
                img.addEventListener("load", ok); img.addEventListener("error", ok); setTimeout(ok, 15000);
            });
        }));
        const mathjax = () => new Promise(ok => {
            const poll = () => {
                if (!document.querySelector(".math")) return ok();
                if (!(window.MathJax && MathJax.startup)) return ok();  // after the load event: no MathJax ran
                if (window.MathJax && MathJax.startup && MathJax.startup.promise)
                    return MathJax.startup.promise.then(ok, ok);
                if (Date.now() > deadline) return ok();
                setTimeout(poll, 100);
            };
            poll();
        });
        const ready = () => new Promise(ok => {
            if (document.readyState === "complete") ok(); else window.addEventListener("load", ok);
        });
        ready().then(images).then(mathjax).then(() => done(true), () => done(false));
        """
    )


def check_outputs(driver) -> list[str]:
    """No error, traceback or stderr output, no warning text in cell outputs, no docutils errors."""
    found = driver.execute_script(
        """
        const out = [];
        const text = e => (e.textContent || "").trim().replace(/\\s+/g, " ").slice(0, 160);
        for (const e of document.querySelectorAll(".output.traceback, .output.error, .output.stderr, .stderr"))
            out.push(["error output", text(e)]);
        for (const e of document.querySelectorAll(".system-message, .problematic"))
            out.push(["docutils error", text(e)]);
        for (const e of document.querySelectorAll(".cell_output, .output"))
            out.push(["cell output", e.textContent || ""]);
        return out;
        """
    )
    problems = []
    for kind, text in found:
        if kind != "cell output":
            problems.append(f"{kind}: {text!r}")
            continue
        if TRACEBACK_TEXT.search(text):
            problems.append(f"traceback in a cell output: {text.strip()[:160]!r}")
        match = WARNING_TEXT.search(text)
        if match:
            start = max(match.start() - 60, 0)
            problems.append(f"warning text in a cell output: {text[start:match.end() + 100].strip()!r}")
    return sorted(set(problems))


def check_images(driver) -> list[str]:
    """Every ``<img>`` has loaded (``naturalWidth > 0``)."""
    broken = driver.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
        ".map(i => i.getAttribute('src'));"
    )
    return [f"image does not load: {src}" for src in broken]


@functools.lru_cache(maxsize=None)
def _ids(path: Path) -> frozenset[str]:
    class Ids(HTMLParser):
        def __init__(self):
            super().__init__()
            self.ids: set[str] = set()

        def handle_starttag(self, tag, attrs):
            for key, value in attrs:
                if key == "id" or (key == "name" and tag == "a"):
                    self.ids.add(value or "")

    parser = Ids()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.ids)


def check_links(driver, site_dir: Path, base_url: str) -> list[str]:
    """Every link into the site names an existing file and, after ``#``, an existing id."""
    site_dir = Path(site_dir).resolve()
    hrefs = driver.execute_script("return Array.from(document.querySelectorAll('a[href]'), a => a.href);")
    live_ids = None
    problems = []
    for href in sorted(set(hrefs)):
        if not href.startswith(base_url):
            continue  # another site, mailto: or javascript:
        url, fragment = urldefrag(href)
        rel = unquote(urlparse(url).path).lstrip("/")
        target = (site_dir / rel).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_relative_to(site_dir) or not target.is_file():
            problems.append(f"broken link: {href} (no file {rel or '/'})")
            continue
        fragment = unquote(fragment)
        if not fragment or target.suffix != ".html":
            continue
        if fragment in _ids(target):
            continue
        if url == driver.current_url.split("#")[0]:
            if live_ids is None:  # ids that scripts added to this page
                live_ids = set(driver.execute_script(
                    "return Array.from(document.querySelectorAll('[id]'), e => e.id);"))
            if fragment in live_ids:
                continue
        problems.append(f"broken anchor: {href} (no id {fragment!r} in {rel})")
    return problems


def check_math(driver) -> list[str]:
    """Every math element was typeset by MathJax, without TeX errors, raw delimiters or missing fonts."""
    state = driver.execute_script(
        """
        const math = Array.from(document.querySelectorAll(".math"));
        const body = (document.querySelector("article") || document.body).cloneNode(true);
        body.querySelectorAll("pre, code, script, style, textarea, .highlight").forEach(e => e.remove());
        return {
            math: math.length,
            untypeset: math.filter(e => !e.querySelector("mjx-container")).map(e => e.textContent.slice(0, 80)),
            errors: Array.from(document.querySelectorAll("mjx-merror"), e => e.getAttribute("data-mjx-error") || e.textContent),
            mathjax: !!(window.MathJax && MathJax.startup),
            text: body.textContent,
            badFonts: Array.from(document.fonts).filter(f => f.status === "error").map(f => f.family),
        };
        """
    )
    problems = []
    if state["math"] and not state["mathjax"]:
        problems.append(f"{state['math']} math elements but MathJax did not start")
    problems += [f"math not typeset: {t!r}" for t in state["untypeset"]]
    problems += [f"MathJax error: {t!r}" for t in state["errors"]]
    problems += [f"font failed to load: {f}" for f in state["badFonts"]]
    for match in RAW_MATH.finditer(state["text"]):
        start = max(match.start() - 40, 0)
        problems.append(f"raw math delimiter in the text: {state['text'][start:match.end() + 40]!r}")
    return problems


def check_local_resources(driver, base_url: str) -> list[str]:
    """Scripts (MathJax included), styles, fonts and images all come from the site itself."""
    urls = driver.execute_script(
        """
        const urls = performance.getEntriesByType("resource").map(e => e.name);
        for (const s of document.querySelectorAll("script[src]")) urls.push(s.src);
        for (const l of document.querySelectorAll("link[rel~='stylesheet'][href], link[rel~='preload'][href]")) urls.push(l.href);
        return urls;
        """
    )
    external = sorted({u for u in urls if not u.startswith(base_url) and not u.startswith("data:")})
    return [f"loads from outside the site: {u}" for u in external]


def check_mathjax_local(driver, base_url: str) -> list[str]:
    """A page with math loads MathJax from the site (never from a CDN)."""
    has_math = driver.execute_script("return document.querySelectorAll('.math').length > 0;")
    sources = driver.execute_script(
        "return Array.from(document.querySelectorAll('script[src]'), s => s.src).filter(s => /mathjax/i.test(s));"
    )
    if has_math and not sources:
        return ["page has math but no MathJax script"]
    return [f"MathJax served from outside the site: {s}" for s in sources if not s.startswith(base_url)]


def check_console(driver) -> list[str]:
    """No error in the browser console (failed requests, JavaScript exceptions)."""
    problems = []
    for entry in driver.get_log("browser"):
        if entry.get("level") != "SEVERE":
            continue
        message = entry.get("message", "")
        if any(p.search(message) for p in IGNORED_CONSOLE):
            continue
        problems.append(f"console error: {message[:200]}")
    return problems


def page_weight(site_dir: Path, page: str) -> int:
    """Bytes of a page's HTML plus the local images it shows (shared theme files not counted)."""
    site_dir = Path(site_dir)
    path = site_dir / page

    class Images(HTMLParser):
        def __init__(self):
            super().__init__()
            self.sources: set[str] = set()

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                src = dict(attrs).get("src") or ""
                if src and not src.startswith(("data:", "http:", "https:")):
                    self.sources.add(unquote(urldefrag(src)[0]))

    html = path.read_text(encoding="utf-8")
    parser = Images()
    parser.feed(html)
    images = {(path.parent / src).resolve() for src in parser.sources}
    return len(html.encode("utf-8")) + sum(p.stat().st_size for p in images if p.is_file())


def explorer_state(driver, root) -> dict:
    """What one web explorer shows: its key, the picture's src and alt, the controls' values, and the
    pictures (and names) it precomputed, by combination."""
    return driver.execute_script(
        """
        const root = arguments[0];
        const data = JSON.parse(root.querySelector("script.xai-explorer-data").textContent);
        const img = root.querySelector("img.xai-explorer-image");
        return {key: root.getAttribute("data-key"), src: img.getAttribute("src"), alt: img.alt,
                values: Array.from(root.querySelectorAll("[data-choice]"), c => c.value),
                images: data.images, altOf: data.alt};
        """, root)


def page_problems(driver, url: str, site_dir: Path, base_url: str) -> list[str]:
    """Open ``url`` and run every check on it."""
    open_page(driver, url)
    return (
        check_outputs(driver)
        + check_images(driver)
        + check_links(driver, site_dir, base_url)
        + check_math(driver)
        + check_mathjax_local(driver, base_url)
        + check_local_resources(driver, base_url)
        + check_console(driver)
    )
