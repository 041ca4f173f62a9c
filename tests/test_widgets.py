"""xai_helpers.widgets: a static figure on the website, live controls in Jupyter and Colab."""
from __future__ import annotations

import base64
import itertools
import json
import re

import numpy as np
import pytest

ipywidgets = pytest.importorskip("ipywidgets")
IPython = pytest.importorskip("IPython")

from xai_helpers import widgets  # noqa: E402
from xai_helpers.widgets import Slider, explore, is_static  # noqa: E402

CHOICES = dict(
    image=["cat", "coffee"],
    layer={"last block": "head", "block 10": "blocks.10"},
    alpha=Slider(0.0, 1.0, 0.1, 0.5),
    channel=Slider(0, 31, 1, 3),
)
DEFAULTS = dict(image="cat", layer="head", alpha=0.5, channel=3)


class Recorder:
    """A ``draw`` function that records its calls and returns a marker instead of a figure."""

    def __init__(self):
        self.calls = []

    def __call__(self, **values):
        self.calls.append(values)
        return ("figure", tuple(sorted(values.items())))


@pytest.fixture
def live(monkeypatch):
    """A live notebook front end: no build flag, an IPython shell, and a recorded ``display``."""
    monkeypatch.setenv("XAI_BOOK_STATIC", "0")
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.extend(objs))
    return shown


class Painter:
    """A ``draw`` function whose picture encodes its arguments: one grey level per choice position."""

    def __init__(self, choices):
        self.choices, self.calls = choices, []

    def level(self, name, value):
        choice = self.choices[name]
        if isinstance(choice, Slider):
            return 20 + 10 * choice.values().index(value)
        values = list(choice.values()) if isinstance(choice, dict) else list(choice)
        return 20 + 40 * values.index(value)

    def __call__(self, **values):
        self.calls.append(values)
        picture = np.zeros((8, 8 * len(values), 3), dtype=np.uint8)
        for i, (name, value) in enumerate(values.items()):
            picture[:, 8 * i: 8 * i + 8] = self.level(name, value)
        return picture


SMALL = dict(image=["cat", "coffee", "astronaut"], layer={"last block": "head", "block 10": "blocks.10"},
             alpha=Slider(0.0, 0.3, 0.1, 0.2))


def _decode(webp_or_png: bytes) -> np.ndarray:
    import io

    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(webp_or_png)).convert("RGB")).astype(int)


def test_static_mode_precomputes_every_combination(monkeypatch):
    monkeypatch.setenv("XAI_BOOK_STATIC", "1")
    draw = Painter(SMALL)
    web = explore(draw, **SMALL)
    assert isinstance(web, widgets.WebExplorer)
    assert len(draw.calls) == web.calls == 3 * 2 * 4  # each combination drawn exactly once
    assert web.names == ["image", "layer", "alpha"]
    assert web.labels == [["cat", "coffee", "astronaut"], ["last block", "block 10"], ["0", "0.1", "0.2", "0.3"]]
    assert web.kinds == ["select", "select", "range"]
    assert set(web.images) == set(itertools.product(range(3), range(2), range(4)))
    assert web.default == (0, 0, 2) and draw.calls[0] == dict(image="cat", layer="head", alpha=0.2)
    for key, webp in web.images.items():  # each picture is the one drawn for its own combination
        values = {name: draw.choices[name] for name in web.names}
        expected = [20 + 40 * key[0], 20 + 40 * key[1], 20 + 10 * key[2]]
        picture = _decode(webp)
        for i, level in enumerate(expected):
            assert abs(picture[:, 8 * i + 2: 8 * i + 6].mean() - level) < 4, (key, values)
    # The PNG fallback is the default picture, losslessly.
    assert np.array_equal(_decode(web.png), draw(image="cat", layer="head", alpha=0.2).astype(int))
    assert web.alt((1, 1, 0)) == "image: coffee, layer: block 10, alpha: 0"


def test_html_holds_every_picture_and_shows_the_default(monkeypatch):
    monkeypatch.setenv("XAI_BOOK_STATIC", "1")
    web = explore(Painter(SMALL), **SMALL)
    bundle = web._repr_mimebundle_()
    assert set(bundle) == {"text/html", "image/png", "text/plain"}
    assert base64.b64decode(bundle["image/png"]) == web.png
    page = bundle["text/html"]
    assert "http" not in page  # nothing to fetch: no CDN, no server
    data = json.loads(re.search(r'<script type="application/json" class="xai-explorer-data">(.*?)</script>',
                                page, re.S).group(1))
    assert data["labels"] == web.labels
    assert set(data["images"]) == {",".join(map(str, k)) for k in web.images}
    for key, webp in web.images.items():
        assert data["images"][",".join(map(str, key))] == web.data_uri(webp)
    shown = re.search(r'<img class="xai-explorer-image"[^>]* src="([^"]+)"', page).group(1)
    assert shown == web.data_uri(web.images[web.default])
    assert 'data-key="0,0,2"' in page
    assert '<select data-choice="image"><option value="0" selected>cat</option>' in page
    assert 'type="range" data-choice="alpha" min="0" max="3" step="1" value="2"' in page


def test_web_narrows_the_choices_and_keeps_the_default(monkeypatch):
    monkeypatch.setenv("XAI_BOOK_STATIC", "1")
    draw = Painter(SMALL)
    web = explore(draw, web={"image": ["astronaut", "cat"], "alpha": [0.2, 0.0]}, **SMALL)
    assert web.labels == [["cat", "astronaut"], ["last block", "block 10"], ["0.2", "0"]]
    assert web.kinds == ["select", "select", "select"]  # a slider narrowed to a list is a menu
    assert len(draw.calls) == 8 and web.default == (0, 0, 0)
    assert {call["image"] for call in draw.calls} == {"cat", "astronaut"}
    with pytest.raises(ValueError, match="default"):
        explore(draw, web={"image": ["coffee"]}, **SMALL)
    with pytest.raises(ValueError, match="not among"):
        explore(draw, web={"image": ["dog"]}, **SMALL)
    with pytest.raises(ValueError, match="not choices"):
        explore(draw, web={"colour": ["red"]}, **SMALL)


def test_web_filter_drops_combinations(monkeypatch):
    monkeypatch.setenv("XAI_BOOK_STATIC", "1")
    channels = {"a": [3, 5], "b": [7]}
    choices = dict(layer=["a", "b"], channel=Slider(0, 9, 1, 3))
    calls = []

    def draw(**values):
        calls.append(values)
        return np.zeros((2, 2, 3))

    web = explore(draw, web={"channel": [3, 5, 7]}, web_filter=lambda layer, channel: channel in channels[layer],
                  **choices)
    assert calls == [dict(layer="a", channel=3), dict(layer="a", channel=5), dict(layer="b", channel=7)]
    assert web.labels == [["a", "b"], ["3", "5", "7"]]
    assert set(web.images) == {(0, 0), (0, 1), (1, 2)}


def test_the_limit_raises_before_drawing(monkeypatch):
    monkeypatch.setenv("XAI_BOOK_STATIC", "1")
    draw = Painter(SMALL)
    with pytest.raises(ValueError, match=r"24 combinations \(3 image x 2 layer x 4 alpha\).*max_combinations=10"):
        explore(draw, max_combinations=10, **SMALL)
    assert draw.calls == []
    explore(draw, max_combinations=24, **SMALL)
    assert len(draw.calls) == 24


def test_a_figure_is_drawn_once_per_combination(monkeypatch):
    monkeypatch.setenv("XAI_BOOK_STATIC", "1")
    import matplotlib
    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    def draw(shade):
        fig, ax = plt.subplots(figsize=(2, 1))
        ax.imshow(np.full((4, 8), shade), cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
        plt.close(fig)
        return fig

    web = explore(draw, shade=[0.0, 1.0], web_dpi=50)
    dark, light = (_decode(web.images[(i,)]).mean() for i in range(2))
    assert dark < light and _decode(web.images[(0,)]).shape[:2] == (50, 100)
    assert _decode(web.png).mean() < light  # the default (dark) at the figure's own dpi
    with pytest.raises(TypeError, match="Figure"):
        explore(lambda shade: "not a picture", shade=[0.0])


def test_static_without_a_notebook(monkeypatch):
    monkeypatch.delenv("XAI_BOOK_STATIC", raising=False)
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)  # a plain Python process
    assert is_static()


def test_static_flag_wins_over_a_notebook(monkeypatch):
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setenv("XAI_BOOK_STATIC", "1")
    assert is_static()
    monkeypatch.setenv("XAI_BOOK_STATIC", "0")
    assert not is_static()


def test_live_mode_builds_one_control_per_choice(live):
    draw = Recorder()
    assert explore(draw, **CHOICES) is None
    boxes = [obj for obj in live if isinstance(obj, ipywidgets.VBox)]
    assert len(boxes) == 1, live
    assert ("figure", tuple(sorted(DEFAULTS.items()))) in live  # drawn into the output area
    row, output = boxes[0].children
    assert isinstance(row, ipywidgets.HBox) and isinstance(output, ipywidgets.Output)
    controls = {c.description: c for c in row.children}
    assert list(controls) == list(CHOICES)
    assert isinstance(controls["image"], ipywidgets.Dropdown)
    assert controls["image"].options == (("cat", 0), ("coffee", 1))
    assert isinstance(controls["layer"], ipywidgets.Dropdown)
    assert controls["layer"].label == "last block"
    assert isinstance(controls["alpha"], ipywidgets.FloatSlider)
    assert (controls["alpha"].min, controls["alpha"].max, controls["alpha"].value) == (0.0, 1.0, 0.5)
    assert isinstance(controls["channel"], ipywidgets.IntSlider) and controls["channel"].value == 3
    assert draw.calls[0] == DEFAULTS  # the first picture is drawn at once

    controls["image"].value = 1                 # the dropdown holds positions; draw gets the entry
    controls["channel"].value = 7
    assert draw.calls[-1] == {**DEFAULTS, "image": "coffee", "channel": 7}


def test_array_values_work_in_a_dropdown(live):
    # Regression: ipywidgets compares option values with ==, which arrays answer elementwise.
    kernels = {"identity": np.eye(3), "box": np.ones((3, 3)) / 9}
    draw = Recorder()
    explore(draw, kernel=kernels)
    row, _ = next(obj for obj in live if isinstance(obj, ipywidgets.VBox)).children
    row.children[0].value = 1
    assert draw.calls[-1]["kernel"] is kernels["box"]


@pytest.mark.parametrize(
    "choice, control, value",
    [
        (Slider(0, 10, 2, 4), ipywidgets.IntSlider, 4),
        (Slider(0.0, 2.0, 0.25, 1.5), ipywidgets.FloatSlider, 1.5),
        (["a", "b"], ipywidgets.Dropdown, 0),
        ({"first": 1, "second": 2}, ipywidgets.Dropdown, 0),
    ],
)
def test_control_for_each_kind_of_choice(choice, control, value):
    widget = widgets._control("name", choice)
    assert isinstance(widget, control)
    assert widget.value == value and widget.description == "name"


@pytest.mark.parametrize("choice, error", [([], TypeError), ({}, ValueError), ("abc", TypeError), (3, TypeError)])
def test_bad_choices_raise(monkeypatch, choice, error):
    monkeypatch.setenv("XAI_BOOK_STATIC", "1")
    with pytest.raises(error):
        explore(Recorder(), x=choice)


@pytest.mark.parametrize("args", [(0, 1, 0.1, 2), (0, 1, 0, 0.5), (1, 0, 0.1, 0.5)])
def test_bad_sliders_raise(args):
    with pytest.raises(ValueError):
        Slider(*args)


def test_a_figure_fills_the_column_without_being_blown_up(monkeypatch):
    """By default a figure is drawn WEB_WIDTH pixels wide, whatever its figsize, and the page shows
    it at the column's width but never wider than it is; its dpi is on the picture (for the site
    test's text-size check). The PNG for other front ends is RGB, without an alpha channel."""
    monkeypatch.setenv("XAI_BOOK_STATIC", "1")
    import matplotlib
    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    def draw(width):
        fig, ax = plt.subplots(figsize=(width, 2))
        ax.plot([0, 1], [0, 1])
        plt.close(fig)
        return fig

    web = explore(draw, width=[4.0, 8.0])
    assert web.size == (widgets.WEB_WIDTH, widgets.WEB_WIDTH // 2) and web.dpi == widgets.WEB_WIDTH / 4
    assert {_decode(v).shape[1] for v in web.images.values()} == {widgets.WEB_WIDTH}
    html = web.to_html()
    assert f'width="{widgets.WEB_WIDTH}"' in html and f"max-width:{widgets.WEB_WIDTH}px" in html
    assert "width:100%" in html and 'data-xai-dpi="200"' in html
    assert Image.open(__import__("io").BytesIO(web.png)).mode == "RGB"
    narrow = explore(draw, width=[4.0], web_dpi=50)    # a fixed dpi: 200 px, shown at 200 px at most
    assert narrow.size == (200, 100) and "max-width:200px" in narrow.to_html()


def test_titles_name_the_controls_for_the_reader(monkeypatch):
    """``titles`` labels a control on the page and in the alt text; the keyword stays in data-choice."""
    monkeypatch.setenv("XAI_BOOK_STATIC", "1")
    web = explore(Painter(SMALL), titles={"alpha": "opacity"}, **SMALL)
    html = web.to_html()
    assert '<label>opacity <input type="range" data-choice="alpha"' in html
    assert '<label>image <select data-choice="image">' in html
    assert web.alt(web.default).endswith("opacity: 0.2")
    with pytest.raises(ValueError, match="titles= names"):
        explore(Painter(SMALL), titles={"colour": "x"}, **SMALL)
