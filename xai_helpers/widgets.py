"""Interactive explorers: live controls in Jupyter and Colab, precomputed controls on the website.

``explore(draw, **choices)`` calls ``draw(**values) -> Figure`` and shows the figure. In a live
notebook it shows one control per choice (a dropdown for a list or dict, a slider for a
:class:`Slider`) and redraws when a control changes.

When the book is built (the Makefile sets ``XAI_BOOK_STATIC=1``), or when ipywidgets is missing,
there is no kernel to run the callbacks. Then ``explore`` draws every combination the web version
offers, once, and returns a :class:`WebExplorer`: a self-contained HTML block (one ``<select>`` per
choice, or a range input for a slider, every picture embedded as a WebP data URI, and a few lines
of inline JavaScript that swap the picture in the browser, with no request to any server), plus a
PNG of the default combination for the PDF, nbval and plain-text front ends. ``web=`` narrows what
the web version offers, ``web_filter=`` drops combinations, and ``max_combinations`` guards the
build time and the page weight. A figure is drawn :data:`WEB_WIDTH` pixels wide, a little more than
the book's text column, and shown at the column's width: never blown up, and its text as large on
the page as the figure's font size makes it (a small ``figsize`` gives large text).
"""
from __future__ import annotations

import base64
import html
import io
import itertools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Slider", "WebExplorer", "explore", "is_static", "MAX_COMBINATIONS", "WEB_WIDTH"]

#: How many combinations ``explore`` precomputes for the website unless told otherwise: each one
#: costs a call to ``draw`` at build time and page weight (20-60 kB at :data:`WEB_WIDTH`).
MAX_COMBINATIONS = 64

#: The width in pixels of an explorer's pictures on the website: the text column is about 784 CSS
#: pixels wide, so a picture this wide fills it without being blown up.
WEB_WIDTH = 800


@dataclass(frozen=True)
class Slider:
    """A numeric control from ``min`` to ``max`` in steps of ``step``, starting at ``value``."""

    min: float
    max: float
    step: float
    value: float

    def __post_init__(self) -> None:
        if not self.min <= self.value <= self.max or self.step <= 0:
            raise ValueError(f"need min <= value <= max and step > 0, got {self}")

    @property
    def is_int(self) -> bool:
        """True when every number of the slider is a whole number (an integer slider)."""
        return all(float(v).is_integer() for v in (self.min, self.max, self.step, self.value))

    def values(self) -> list[float]:
        """Every position of the slider, ``min, min + step, ...`` up to ``max``."""
        n = int(np.floor((self.max - self.min) / self.step + 1e-9)) + 1
        values = [self.min + i * self.step for i in range(n)]
        return [int(round(v)) if self.is_int else round(v, 10) for v in values]


def is_static() -> bool:
    """True while the book is being built or tested (no live widget front end)."""
    if os.environ.get("XAI_BOOK_STATIC", "") not in ("", "0"):
        return True
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return True
    return get_ipython() is None


def _default(choice: Any) -> Any:
    if isinstance(choice, Slider):
        return choice.value
    if isinstance(choice, Mapping):
        if not choice:
            raise ValueError("a dict of choices must not be empty")
        return next(iter(choice.values()))
    if isinstance(choice, Sequence) and not isinstance(choice, str) and len(choice) > 0:
        return choice[0]
    raise TypeError(f"a choice must be a non-empty list, a dict or a Slider, got {choice!r}")


def _control(name: str, choice: Any, title: str | None = None) -> Any:
    import ipywidgets as w

    if isinstance(choice, Slider):
        cls = w.IntSlider if choice.is_int else w.FloatSlider
        kind = int if choice.is_int else float
        return cls(min=kind(choice.min), max=kind(choice.max), step=kind(choice.step),
                   value=kind(choice.value), description=title or name, continuous_update=False,
                   style={"description_width": "initial"})
    # The dropdown holds positions, not the values themselves: ipywidgets finds the current value by
    # comparing with ==, which an array value (a convolution kernel) turns into an elementwise array.
    labels = list(choice) if isinstance(choice, Mapping) else [str(v) for v in choice]
    return w.Dropdown(options=[(str(label), i) for i, label in enumerate(labels)], value=0,
                      description=title or name, style={"description_width": "initial"})


def _value(choice: Any, control_value: Any) -> Any:
    """The value a control's state stands for: a slider's number, or the chosen entry of a list or dict."""
    if isinstance(choice, Slider):
        return control_value
    values = list(choice.values()) if isinstance(choice, Mapping) else list(choice)
    return values[control_value]


@dataclass
class _Options:
    """One control of the web version: its labels, the values ``draw`` gets, and its kind."""

    name: str
    labels: list[str]
    values: list[Any]
    default: int
    kind: str  # "select" or "range"


def _slider_label(slider: Slider, v: float) -> str:
    return str(v) if slider.is_int else f"{v:g}"


def _web_options(name: str, choice: Any, narrowed: Any) -> _Options:
    """The entries of one choice that the web version offers (all of them unless ``narrowed``)."""
    default_value = _default(choice)
    if isinstance(choice, Slider):
        if narrowed is None or isinstance(narrowed, Slider):
            slider = narrowed if isinstance(narrowed, Slider) else choice
            values: list[Any] = slider.values()
            kind = "range"
        else:
            values, kind = list(narrowed), "select"
            bad = [v for v in values if not choice.min <= v <= choice.max]
            if bad:
                raise ValueError(f"web values {bad} of {name!r} lie outside the slider {choice}")
        labels = [_slider_label(choice, v) for v in values]
        close = [i for i, v in enumerate(values) if abs(v - default_value) <= 1e-9 * max(1.0, abs(v))]
        if not close:
            raise ValueError(f"the web version of {name!r} must offer the default {default_value}")
        return _Options(name, labels, values, close[0], kind)
    all_labels = [str(k) for k in choice] if isinstance(choice, Mapping) else [str(v) for v in choice]
    all_values = list(choice.values()) if isinstance(choice, Mapping) else list(choice)
    keep = all_labels if narrowed is None else [str(label) for label in narrowed]
    unknown = [label for label in keep if label not in all_labels]
    if unknown:
        raise ValueError(f"web labels {unknown} of {name!r} are not among its choices {all_labels}")
    if all_labels[0] not in keep:
        raise ValueError(f"the web version of {name!r} must offer the default {all_labels[0]!r}")
    keep = [all_labels[0]] + [label for label in keep if label != all_labels[0]]
    return _Options(name, keep, [all_values[all_labels.index(label)] for label in keep], 0, "select")


def _web_dpi(picture: Any, dpi: float | None, width: int) -> float | None:
    """The dpi a figure is drawn at for the website: ``dpi`` when given, else the one that makes it
    ``width`` pixels wide. Not a figure: ``None`` (a PIL image or an array keeps its pixels)."""
    if not hasattr(picture, "savefig"):
        return None
    if dpi:
        return float(dpi)
    return width / float(picture.get_figwidth())


def _to_rgb(picture: Any, dpi: float | None) -> Any:
    """A PIL RGB image of what ``draw`` returned: a matplotlib Figure, a PIL image or an array."""
    from PIL import Image

    if hasattr(picture, "savefig"):
        buffer = io.BytesIO()
        picture.savefig(buffer, format="png", dpi=dpi)
        buffer.seek(0)
        return Image.open(buffer).convert("RGB")
    if isinstance(picture, Image.Image):
        return picture.convert("RGB")
    if isinstance(picture, np.ndarray):
        array = picture
        if array.dtype != np.uint8:
            array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
        return Image.fromarray(array).convert("RGB")
    raise TypeError(f"draw must return a matplotlib Figure, a PIL image or an array, got {type(picture).__name__}")


def _png(picture: Any) -> bytes:
    """The default picture as an RGB PNG (no alpha channel), as a notebook would show it (the
    figure's own dpi)."""
    from PIL import Image

    if hasattr(picture, "savefig"):
        buffer = io.BytesIO()
        picture.savefig(buffer, format="png", bbox_inches="tight")
        buffer.seek(0)
        image = Image.open(buffer).convert("RGB")
    else:
        image = _to_rgb(picture, None)
    out = io.BytesIO()
    image.save(out, format="png", optimize=True)
    return out.getvalue()


# The browser side. One copy per explorer, bound to its own block through document.currentScript,
# so several explorers on a page never share state. Controls are ordered: a control only lists the
# entries that exist together with the controls before it, and a change keeps the later controls
# where that combination exists, else moves them to the first one that does.
_SCRIPT = """
(function () {
  var root = document.currentScript.parentElement;
  var data = JSON.parse(root.querySelector("script.xai-explorer-data").textContent);
  var img = root.querySelector("img.xai-explorer-image");
  var controls = Array.prototype.slice.call(root.querySelectorAll("[data-choice]"));
  var keys = Object.keys(data.images).map(function (k) { return k.split(",").map(Number); });
  function starts(key, prefix) {
    for (var i = 0; i < prefix.length; i++) if (key[i] !== prefix[i]) return false;
    return true;
  }
  function update(changed) {
    var state = controls.map(function (c) { return Number(c.value); });
    if (!keys.some(function (k) { return starts(k, state.slice(0, changed + 1)); })) {
      state = keys.filter(function (k) { return k[changed] === state[changed]; })[0].slice();
    }
    for (var i = changed + 1; i < controls.length; i++) {
      var fits = keys.filter(function (k) { return starts(k, state.slice(0, i)); });
      if (!fits.some(function (k) { return k[i] === state[i]; })) state[i] = fits[0][i];
    }
    controls.forEach(function (c, i) {
      c.value = String(state[i]);
      if (c.tagName === "SELECT") {
        Array.prototype.forEach.call(c.options, function (o) {
          var ok = keys.some(function (k) { return starts(k, state.slice(0, i)) && k[i] === Number(o.value); });
          o.hidden = !ok; o.disabled = !ok;
        });
      } else {
        c.parentElement.querySelector("output").textContent = data.labels[i][state[i]];
      }
    });
    var key = state.join(",");
    img.src = data.images[key];
    img.alt = data.alt[key];
    root.setAttribute("data-key", key);
  }
  controls.forEach(function (c, i) {
    c.addEventListener(c.tagName === "SELECT" ? "change" : "input", function () { update(i); });
  });
  update(-1);
})();
"""

_STYLE = ("display:flex;flex-wrap:wrap;gap:0.4em 1.2em;align-items:center;margin-bottom:0.4em;"
          "font-size:0.9em")


@dataclass
class WebExplorer:
    """Every precomputed picture of an explorer, shown as HTML on the website and as PNG elsewhere.

    ``images`` maps a combination, as a tuple of positions into each control's ``labels``, to its
    WebP bytes; ``default`` is the combination a live notebook starts with, and ``png`` its picture.
    """

    names: list[str]
    labels: list[list[str]]
    kinds: list[str]
    images: dict[tuple[int, ...], bytes]
    default: tuple[int, ...]
    png: bytes
    calls: int = field(default=0)
    #: The pictures' size in pixels (of the default one) and the dpi a figure was drawn at.
    size: tuple[int, int] | None = None
    dpi: float | None = None
    #: What each control is called on the page (``names`` where not given).
    titles: list[str] | None = None

    def _titles(self) -> list[str]:
        return list(self.titles) if self.titles else list(self.names)

    def alt(self, key: tuple[int, ...]) -> str:
        """The text that names a combination, e.g. ``"image: cat, layer: head"``."""
        return ", ".join(f"{n}: {labels[i]}" for n, labels, i in zip(self._titles(), self.labels, key))

    @staticmethod
    def data_uri(webp: bytes) -> str:
        """A ``data:`` URI of one picture, as the HTML block embeds it."""
        return "data:image/webp;base64," + base64.b64encode(webp).decode("ascii")

    def to_html(self) -> str:
        """The self-contained HTML block: controls, the default picture, the pictures and the script."""
        key_text = {key: ",".join(map(str, key)) for key in self.images}
        data = {
            "labels": self.labels,
            "images": {key_text[k]: self.data_uri(v) for k, v in self.images.items()},
            "alt": {key_text[k]: self.alt(k) for k in self.images},
        }
        # JSON inside <script>: "<" escaped so that no label can close the element.
        payload = json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c")
        controls = []
        for i, (name, title, labels, kind) in enumerate(zip(self.names, self._titles(), self.labels, self.kinds)):
            label, choice = html.escape(title), html.escape(name)
            if kind == "range":
                controls.append(
                    f'<label>{label} <input type="range" data-choice="{choice}" min="0" max="{len(labels) - 1}" '
                    f'step="1" value="{self.default[i]}"> '
                    f'<output>{html.escape(labels[self.default[i]])}</output></label>')
            else:
                options = "".join(
                    f'<option value="{j}"{" selected" if j == self.default[i] else ""}>{html.escape(text)}</option>'
                    for j, text in enumerate(labels))
                controls.append(f'<label>{label} <select data-choice="{choice}">{options}</select></label>')
        default_key = ",".join(map(str, self.default))
        # As wide as the column, never wider than the picture itself (never blown up).
        size = (f' width="{self.size[0]}" height="{self.size[1]}" style="width:100%;max-width:{self.size[0]}px;'
                f'height:auto"' if self.size else ' style="max-width:100%;height:auto"')
        dpi = f' data-xai-dpi="{self.dpi:g}"' if self.dpi else ""
        return (
            f'<div class="xai-explorer" data-key="{default_key}">'
            f'<div class="xai-explorer-controls" style="{_STYLE}">{"".join(controls)}</div>'
            f'<img class="xai-explorer-image"{size}{dpi} src="{self.data_uri(self.images[self.default])}" '
            f'alt="{html.escape(self.alt(self.default))}">'
            f'<script type="application/json" class="xai-explorer-data">{payload}</script>'
            f"<script>{_SCRIPT}</script></div>"
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {
            "text/html": self.to_html(),
            "image/png": base64.b64encode(self.png).decode("ascii"),
            "text/plain": f"<explorer of {len(self.images)} pictures; shown: {self.alt(self.default)}>",
        }


def _web_explorer(draw: Callable[..., Any], choices: Mapping[str, Any], web: Mapping[str, Any],
                  web_filter: Callable[..., bool] | None, max_combinations: int,
                  dpi: float | None, quality: int, width: int = WEB_WIDTH,
                  titles: Mapping[str, str] | None = None) -> WebExplorer:
    unknown = sorted(set(web) - set(choices))
    if unknown:
        raise ValueError(f"web= names {unknown}, which are not choices of this explorer ({list(choices)})")
    options = [_web_options(name, choice, web.get(name)) for name, choice in choices.items()]
    keys = [key for key in itertools.product(*(range(len(o.values)) for o in options))
            if web_filter is None or web_filter(**{o.name: o.values[i] for o, i in zip(options, key)})]
    default = tuple(o.default for o in options)
    if default not in keys:
        raise ValueError("web_filter drops the default combination, which the website shows first")
    if len(keys) > max_combinations:
        sizes = " x ".join(f"{len(o.values)} {o.name}" for o in options)
        raise ValueError(
            f"the web version would precompute {len(keys)} combinations ({sizes}), more than "
            f"max_combinations={max_combinations}: narrow it with web={{name: [labels...]}} or "
            "web_filter=, or raise max_combinations if the build time and page weight allow it")
    # Only entries that occur in some combination become options (web_filter may drop some).
    used = [sorted({key[i] for key in keys}) for i in range(len(options))]
    for o, u in zip(options, used):
        if o.kind == "range" and len(u) != len(o.values):
            o.kind = "select"  # a range input cannot skip positions
    renumber = [{old: new for new, old in enumerate(u)} for u in used]
    images: dict[tuple[int, ...], bytes] = {}
    png = b""
    size: tuple[int, int] | None = None
    shown_dpi: float | None = None
    for key in [default] + [k for k in keys if k != default]:
        picture = draw(**{o.name: o.values[i] for o, i in zip(options, key)})
        picture_dpi = _web_dpi(picture, dpi, width)
        rgb = _to_rgb(picture, picture_dpi)
        buffer = io.BytesIO()
        rgb.save(buffer, format="webp", quality=quality, method=4)
        images[tuple(r[i] for r, i in zip(renumber, key))] = buffer.getvalue()
        if key == default:
            png = _png(picture)
            size, shown_dpi = rgb.size, picture_dpi
    return WebExplorer(
        names=[o.name for o in options],
        labels=[[o.labels[i] for i in u] for o, u in zip(options, used)],
        kinds=[o.kind for o in options],
        images=images,
        default=tuple(r[i] for r, i in zip(renumber, default)),
        png=png,
        calls=len(keys),
        size=size,
        dpi=shown_dpi,
        titles=[str((titles or {}).get(o.name, o.name)) for o in options],
    )


def explore(draw: Callable[..., Any], *, web: Mapping[str, Any] | None = None,
            web_filter: Callable[..., bool] | None = None, max_combinations: int = MAX_COMBINATIONS,
            web_dpi: float | None = None, web_quality: int = 75, web_width: int = WEB_WIDTH,
            titles: Mapping[str, str] | None = None, **choices: Any) -> Any:
    """Show ``draw(**values)`` with one control per keyword; see the module docstring.

    ``choices`` maps each keyword of ``draw`` to a list, a dict (label -> value) or a
    :class:`Slider`; the first entry (a slider's ``value``) is the default. In a live notebook this
    displays the controls and the live figure and returns ``None``.

    In static mode (the book build) it returns a :class:`WebExplorer` with one picture per
    combination that the website offers: the product of the choices, where ``web`` may narrow a
    choice to some of its labels (for a list, ``str`` of each entry; for a dict, its keys; for a
    slider, a list of numbers, which become a drop-down menu, or a narrower ``Slider``), and
    ``web_filter(**values) -> bool`` may drop combinations. The default must stay on offer. More
    than ``max_combinations`` combinations raise ``ValueError`` before anything is drawn.
    A figure is saved ``web_width`` pixels wide (the dpi that takes) as a WebP picture of quality
    ``web_quality``, and the website shows it at the column's width; ``web_dpi`` fixes the dpi
    instead (a picture narrower than the column is then shown at its own, smaller size). The PNG of
    the default keeps the figure's own resolution.

    ``titles`` names the controls for the reader, ``{keyword: title}`` (``{"lr": "learning rate"}``);
    a control without one is called by its keyword. Give a choice of raw values (``[False, True]``)
    readable labels with a dict, ``{"for the class": False, "against it": True}``.
    """
    unknown = sorted(set(titles or {}) - set(choices))
    if unknown:
        raise ValueError(f"titles= names {unknown}, which are not choices of this explorer ({list(choices)})")
    for choice in choices.values():
        _default(choice)  # a bad choice raises here, in both modes
    if is_static():
        return _web_explorer(draw, choices, web or {}, web_filter, max_combinations, web_dpi, web_quality,
                             web_width, titles)
    import ipywidgets as w
    from IPython.display import display

    controls = {name: _control(name, choice, (titles or {}).get(name)) for name, choice in choices.items()}
    def show(**states: Any) -> None:
        display(draw(**{name: _value(choices[name], state) for name, state in states.items()}))

    out = w.interactive_output(show, controls)
    display(w.VBox([w.HBox(list(controls.values())), out]))
    return None
