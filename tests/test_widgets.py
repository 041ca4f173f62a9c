"""xai_helpers.widgets: a static figure on the website, live controls in Jupyter and Colab."""
from __future__ import annotations

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


def test_static_mode_returns_the_default_figure(monkeypatch):
    monkeypatch.setenv("XAI_BOOK_STATIC", "1")
    draw = Recorder()
    figure = explore(draw, **CHOICES)
    assert draw.calls == [DEFAULTS]
    assert figure == draw(**DEFAULTS)


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
