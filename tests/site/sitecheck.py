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
# An alt text that is a file name or path (what docutils writes when a picture has none).
PATH_ALT = re.compile(r"^\S*[/\\]\S*$|\.(png|jpe?g|gif|svg|webp)$", re.IGNORECASE)
#: The smallest text a figure may show, in CSS pixels (the x-height is about half of it).
MIN_TEXT_PX = 9.0
#: The text size of the book's figures: matplotlib's font.size (xai_helpers.plot.STYLE) in points,
#: drawn at the figure's dpi (100 unless the picture says otherwise with ``data-xai-dpi``).
FIGURE_FONT_PT = 10.0
FIGURE_DPI = 100.0
#: Code lines up to this long must fit their box at desktop width (PEP 8's 79 plus some room).
MAX_CODE_CHARS = 88
#: A page with everything it loads (HTML, scripts, styles, fonts, pictures) must weigh less.
MAX_PAGE_BYTES = 5_000_000
PDF_NAME = "explaining-cnns.pdf"
#: The folder of the lecture decks (book/_ext/make_slides.py): reveal.js pages, not pages of the
#: book, so :func:`site_pages` leaves them out and :func:`check_deck` checks them.
SLIDES_DIR = "slides"


def site_pages(site_dir: Path) -> list[str]:
    """Every HTML page of a built site, relative to it (the theme's own folders excluded)."""
    site_dir = Path(site_dir)
    pages = []
    for path in sorted(site_dir.rglob("*.html")):
        rel = path.relative_to(site_dir)
        if any(part.startswith("_") for part in rel.parts[:-1]):
            continue  # _static, _sources, _images: assets, not pages
        if rel.parts[0] == SLIDES_DIR:
            continue  # the decks of slides
        pages.append(rel.as_posix())
    return pages


def site_decks(site_dir: Path) -> list[str]:
    """The decks of slides of a built site (``slides/NN_name.slides.html``), relative to it."""
    return sorted(p.relative_to(site_dir).as_posix() for p in (Path(site_dir) / SLIDES_DIR).glob("*.slides.html"))


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
            errors: Array.from(document.querySelectorAll("mjx-merror"),
                               e => e.getAttribute("data-mjx-error") || e.textContent),
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
        const links = "link[rel~='stylesheet'][href], link[rel~='preload'][href]";
        for (const l of document.querySelectorAll(links)) urls.push(l.href);
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


# Visible: laid out with a size and not hidden. Opacity is left out on purpose: sphinx-togglebutton
# fades a solution in over 0.3 s, but hides and shows it with `visibility` at once.
_VISIBLE_JS = """
const visible = e => {
    if (!e || !e.isConnected) return false;
    const r = e.getBoundingClientRect();
    if (r.width <= 0 || r.height <= 0) return false;
    const s = getComputedStyle(e);
    return s.visibility !== "hidden" && s.display !== "none";
};
const text = e => (e && e.textContent || "").trim().replace(/\\s+/g, " ").slice(0, 80);
const titleOf = a => text(a.querySelector(":scope > .admonition-title, :scope > summary"));
const dropdowns = () => Array.from(document.querySelectorAll(".admonition.dropdown"));
"""


def check_solutions_hidden(driver) -> list[str]:
    """With every toggle closed, nothing of a solution shows: each dropdown shows its title only,
    every cell tagged ``solution`` sits inside a dropdown, and no cell output follows a closed
    "Solution ..." dropdown in plain view (a solution cell someone forgot to tag)."""
    found = driver.execute_script(_VISIBLE_JS + """
        const out = [];
        for (const a of dropdowns()) {
            for (const child of a.children) {
                if (child.classList.contains("admonition-title")) continue;
                if (visible(child)) {
                    out.push(`dropdown '${titleOf(a)}' shows its content while closed: ${text(child)}`);
                    break;
                }
            }
            if (!/^solution/i.test(titleOf(a))) continue;
            for (let n = a.nextElementSibling; n && n.matches(".cell"); n = n.nextElementSibling) {
                const output = n.querySelector(".cell_output");
                if (output && visible(output))
                    out.push(`output of '${titleOf(a)}' in plain view below it: ${text(output)}`);
            }
        }
        for (const cell of document.querySelectorAll(".cell.tag_solution")) {
            if (!cell.closest(".admonition.dropdown"))
                out.push(`solution cell outside a dropdown: ${text(cell)}`);
        }
        return out;
        """)
    return list(found)


def check_solutions_open(driver) -> list[str]:
    """Opening a solution (a click on its title, as a reader does) shows its prose and its cells'
    outputs and pictures; the solution is closed again afterwards."""
    found = driver.execute_script(_VISIBLE_JS + """
        const out = [];
        for (const a of dropdowns()) {
            const cells = Array.from(a.querySelectorAll(".cell.tag_solution"));
            if (!cells.length) continue;
            const title = a.querySelector(":scope > .admonition-title");
            if (!title) { out.push(`solution without a title to click: ${text(a)}`); continue; }
            title.click();
            const name = titleOf(a);
            const prose = Array.from(a.children).filter(
                c => !c.classList.contains("admonition-title") && !c.matches(".cell"));
            if (prose.length && !prose.some(visible)) out.push(`'${name}' opened, but its text stays hidden`);
            for (const cell of cells) {
                if (!visible(cell)) {
                    out.push(`'${name}' opened, but its cell stays hidden: ${text(cell)}`);
                    continue;
                }
                for (const output of cell.querySelectorAll(".cell_output"))
                    if (!visible(output)) out.push(`'${name}' opened, but an output stays hidden: ${text(output)}`);
                for (const img of cell.querySelectorAll(".cell_output img"))
                    if (!visible(img) || !(img.complete && img.naturalWidth > 0))
                        out.push(`'${name}' opened, but a picture does not show: ${img.getAttribute("src")}`);
            }
            title.click();
            if (cells.some(visible)) out.push(`'${name}' does not close again`);
        }
        return out;
        """)
    return list(found)


def solutions_on_page(driver) -> dict:
    """What the page shows of its exercises' solutions (the student edition leaves them out):
    the titles of its "Solution ..." dropdowns and of its other dropdowns (hints), the number of
    cells tagged ``solution``, the notes that stand where solutions were withheld, and the text of
    the article (hidden parts included)."""
    return driver.execute_script(_VISIBLE_JS + """
        const all = dropdowns().map(titleOf);
        return {
            solutions: all.filter(t => /^solution/i.test(t)),
            hints: all.filter(t => !/^solution/i.test(t)),
            solution_cells: document.querySelectorAll(".cell.tag_solution").length,
            withheld_notes: document.querySelectorAll(".xai-solutions-withheld").length,
            text: (document.querySelector("article") || document.body).textContent.replace(/\\s+/g, " "),
        };
        """)


def _open_everything(driver) -> None:
    """Open every folded thing on the page (hidden code, dropdowns), so that its layout can be measured."""
    driver.execute_script("""
        document.querySelectorAll("details").forEach(d => { d.open = true; });
        document.querySelectorAll(".toggle-hidden").forEach(e => e.classList.remove("toggle-hidden"));
        """)


def check_code_scroll(driver, max_chars: int = MAX_CODE_CHARS) -> list[str]:
    """No code block (cell input, literal block, cell output) whose lines have at most ``max_chars``
    characters needs a horizontal scroll. Opens every folded block to measure it."""
    _open_everything(driver)
    found = driver.execute_script("""
        const max = arguments[0], out = [];
        for (const pre of document.querySelectorAll("div.highlight pre, .cell_output pre, pre.literal-block")) {
            if (!pre.getClientRects().length) continue;
            const lines = pre.textContent.replace(/\\n$/, "").split("\\n");
            const longest = Math.max(...lines.map(l => l.length));
            if (longest <= max && pre.scrollWidth > pre.clientWidth + 1)
                out.push(`code with lines of ${longest} characters scrolls sideways `
                         + `(${pre.scrollWidth} px in ${pre.clientWidth} px): `
                         + lines.find(l => l.length === longest).trim().slice(0, 60));
        }
        return out;
        """, max_chars)
    return list(found)


def check_wide_equations(driver) -> list[str]:
    """Every displayed equation fits its box (none scrolls, none runs into its number)."""
    found = driver.execute_script("""
        const out = [];
        for (const m of document.querySelectorAll("div.math")) {
            if (!m.getClientRects().length) continue;
            const box = m.querySelector("mjx-container") || m;
            for (const e of new Set([box, m])) {
                if (e.scrollWidth > e.clientWidth + 1) {
                    const number = ((m.querySelector(".eqno") || {}).textContent || "").replace("#", "").trim();
                    out.push(`equation ${number || m.id || ""} is wider than its box `
                             + `(${e.scrollWidth} px in ${e.clientWidth} px)`);
                    break;
                }
            }
        }
        return out;
        """)
    return list(found)


def check_alt_text(driver) -> list[str]:
    """Every picture has an alt text, and none is a file path (what a screen reader would read)."""
    found = driver.execute_script("""
        return Array.from(document.images, i => [i.getAttribute("src") || "", i.getAttribute("alt"),
               !!i.closest(".cell_output, figure, .xai-explorer")]);
        """)
    problems = []
    for src, alt, is_figure in found:
        if alt is None or (is_figure and not alt.strip()):
            problems.append(f"picture without alt text: {src[:80]}")
        elif PATH_ALT.search(alt.strip()):
            problems.append(f"alt text is a path: {alt[:80]!r}")
    return problems


def check_figure_sizes(driver, min_text_px: float = MIN_TEXT_PX) -> list[str]:
    """Figures are never blown up beyond their natural size, their text stays at least
    ``min_text_px`` high as shown, and explorers fill the column. Opens every folded block."""
    _open_everything(driver)
    found = driver.execute_script("""
        const out = [];
        const images = document.querySelectorAll(".cell_output img, figure img, img.xai-explorer-image");
        for (const img of images) {
            const r = img.getBoundingClientRect();
            if (!r.width || !img.naturalWidth) continue;
            const dpi = Number(img.dataset.xaiDpi || 0) || null;
            const explorer = img.closest(".xai-explorer");
            out.push({src: (img.getAttribute("src") || "").slice(0, 60), alt: (img.alt || "").slice(0, 60),
                      natural: img.naturalWidth, shown: r.width, dpi: dpi,
                      column: explorer ? explorer.clientWidth : null});
        }
        return out;
        """)
    problems = []
    for image in found:
        name = image["alt"] or image["src"]
        scale = image["shown"] / image["natural"]
        if scale > 1.02:
            problems.append(f"picture blown up {scale:.2f}x ({image['natural']} px shown at "
                            f"{image['shown']:.0f} px): {name}")
        dpi = image["dpi"] or FIGURE_DPI
        text_px = FIGURE_FONT_PT * dpi / 72 * scale
        if text_px < min_text_px:
            problems.append(f"figure text {text_px:.1f} px high as shown ({image['natural']} px wide "
                            f"at {dpi:g} dpi, shown at {image['shown']:.0f} px): {name}")
        if image["column"] and image["shown"] < image["column"] - 2:
            problems.append(f"explorer narrower than the column ({image['shown']:.0f} of "
                            f"{image['column']} px): {name}")
    return problems


def check_single_search(driver) -> list[str]:
    """At most one search field shows in the page's header and sidebar (no empty second bar; the
    search page's own form, in the article, is not counted)."""
    count = driver.execute_script(_VISIBLE_JS + """
        return Array.from(document.querySelectorAll(".search-button-field, form.bd-search"))
            .filter(e => !e.closest("dialog, article, .bd-search-container") && visible(e)).length;
        """)
    return [] if count <= 1 else [f"{count} search fields show at once"]


def check_phone_menu(driver, timeout: float = 3.0) -> list[str]:
    """At phone width (the caller sets it): one menu button shows, and tapping it opens the
    chapter list on top of the page."""
    import time

    buttons = [b for b in driver.find_elements("css selector", ".primary-toggle") if b.is_displayed()]
    if len(buttons) != 1:
        return [f"{len(buttons)} menu buttons show at phone width (expected 1)"]
    buttons[0].click()
    deadline = time.monotonic() + timeout
    while True:
        shown = driver.execute_script(_VISIBLE_JS + """
            return Array.from(document.querySelectorAll(".bd-docs-nav a, nav.bd-links a, .bd-sidenav a"))
                .filter(a => {
                    if (!visible(a)) return false;
                    const r = a.getBoundingClientRect();
                    if (r.left < 0 || r.right > innerWidth || r.top < 0 || r.bottom > innerHeight) return false;
                    const top = document.elementFromPoint((r.left + r.right) / 2, (r.top + r.bottom) / 2);
                    return !!top && (top === a || a.contains(top));
                }).length;
            """)
        if shown or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return [] if shown else ["the menu button does not open the chapter list"]


def check_pdf_link(driver, site_dir: Path, base_url: str) -> list[str]:
    """The page links the book's PDF, and the link leads to a PDF file in the site."""
    hrefs = driver.execute_script(
        "return Array.from(document.querySelectorAll('a[href]'), a => a.href).filter(h => /\\.pdf(#|$)/.test(h));")
    book = [h for h in hrefs if urldefrag(h)[0].endswith("/" + PDF_NAME)]
    if not book:
        return [f"no link to the book's PDF ({PDF_NAME})"]
    problems = []
    for href in sorted(set(book)):
        if not href.startswith(base_url):
            problems.append(f"the PDF link leaves the site: {href}")
            continue
        target = Path(site_dir) / unquote(urlparse(href).path).lstrip("/")
        if not target.is_file() or target.read_bytes()[:5] != b"%PDF-":
            problems.append(f"the PDF link leads to no PDF: {href}")
    return problems


def check_no_failure_banner(driver) -> list[str]:
    """No banner of a chapter whose code failed (book/_ext/xai_book_failures.py)."""
    texts = driver.execute_script(
        "return Array.from(document.querySelectorAll('.xai-run-failed'), "
        "e => e.textContent.trim().replace(/\\s+/g, ' '));")
    return [f"the page says its code failed: {t[:160]}" for t in texts]


def loaded_bytes(driver) -> dict[str, int]:
    """What the page loaded, by URL: the document and every resource (scripts, styles, fonts,
    pictures), as the browser's resource timing reports their bodies."""
    entries = driver.execute_script("""
        const size = e => e.encodedBodySize || e.transferSize || e.decodedBodySize || 0;
        return performance.getEntriesByType("navigation").concat(performance.getEntriesByType("resource"))
            .map(e => [e.name, size(e)]);
        """)
    sizes: dict[str, int] = {}
    for url, size in entries:
        sizes[url] = max(sizes.get(url, 0), int(size))
    return sizes


def check_page_weight(driver, limit: int = MAX_PAGE_BYTES) -> list[str]:
    """Everything the page loaded on a first visit (shared theme files, MathJax and fonts included)
    weighs less than ``limit`` bytes."""
    sizes = loaded_bytes(driver)
    total = sum(sizes.values())
    if total < limit:
        return []
    heaviest = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    listed = ", ".join(f"{urlparse(u).path.rsplit('/', 1)[-1][:40]} {s / 1e6:.2f} MB" for u, s in heaviest)
    return [f"the page loads {total / 1e6:.2f} MB (limit {limit / 1e6:.2f} MB); heaviest: {listed}"]


def check_deck(driver, base_url: str, timeout: float = 10.0) -> list[str]:
    """A deck of slides, after :func:`open_page`: reveal.js started (its ``.reveal`` element is
    ``ready``) with several slides, at least one picture loads, math is typeset by the site's
    MathJax, nothing comes from outside the site, and the console is clean."""
    import time

    driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const wait = () => (window.MathJax && MathJax.startup && MathJax.startup.promise)
            ? MathJax.startup.promise.then(done, done) : setTimeout(done, 500);
        if (document.readyState === "complete") wait(); else window.addEventListener("load", wait);
        """)
    deadline = time.monotonic() + timeout
    while True:
        state = driver.execute_script("""
            const images = Array.from(document.querySelectorAll(".reveal .slides section img"));
            const slides = document.querySelector(".reveal .slides");
            const prose = slides ? slides.cloneNode(true) : document.createElement("div");
            prose.querySelectorAll("pre, code, script, style").forEach(e => e.remove());
            return {
                ready: !!document.querySelector(".reveal.ready"),
                slides: document.querySelectorAll(".reveal .slides section").length,
                images: images.length,
                loaded: images.filter(i => i.complete && i.naturalWidth > 0).length,
                rawMath: /\\$\\$|\\\\\\(/.test(prose.textContent),
            };
            """)
        if state["ready"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    problems = []
    if not state["ready"]:
        problems.append("reveal.js did not start (no .reveal.ready)")
    if state["slides"] < 2:
        problems.append(f"{state['slides']} slides")
    if not state["loaded"]:
        problems.append(f"no picture shows ({state['images']} in the deck)")
    elif state["loaded"] < state["images"]:
        problems.append(f"{state['images'] - state['loaded']} of {state['images']} pictures do not load")
    if state["rawMath"]:
        problems.append("raw math delimiters in the slides: MathJax did not typeset them")
    return problems + check_local_resources(driver, base_url) + check_console(driver)


def page_problems(driver, url: str, site_dir: Path, base_url: str) -> list[str]:
    """Open ``url`` and run every check on it, at desktop width. The checks that look at closed
    toggles come first; the ones that open them (to click or to measure) come last."""
    open_page(driver, url)
    problems = (
        check_outputs(driver)
        + check_images(driver)
        + check_links(driver, site_dir, base_url)
        + check_math(driver)
        + check_mathjax_local(driver, base_url)
        + check_local_resources(driver, base_url)
        + check_solutions_hidden(driver)
        + check_alt_text(driver)
        + check_single_search(driver)
        + check_pdf_link(driver, site_dir, base_url)
        + check_no_failure_banner(driver)
        + check_page_weight(driver)
        + check_solutions_open(driver)
        + check_console(driver)
    )
    return problems + check_code_scroll(driver) + check_wide_equations(driver) + check_figure_sizes(driver)
