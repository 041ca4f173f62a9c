"""Interactive explorers for Jupyter and Colab that degrade to a static figure on the website.

``explore(draw, **choices)`` calls ``draw(**values) -> Figure`` and shows the figure. In a live
notebook it also shows one control per choice (a dropdown for a list or dict, a slider for a
:class:`Slider`) and redraws when a control changes. When the book is built (the Makefile sets
``XAI_BOOK_STATIC=1``), or when ipywidgets is missing, it shows only the figure for the default
values, because a static page has no kernel to run the callbacks.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Slider", "explore", "is_static"]


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


def _control(name: str, choice: Any) -> Any:
    import ipywidgets as w

    if isinstance(choice, Slider):
        is_int = all(float(v).is_integer() for v in (choice.min, choice.max, choice.step, choice.value))
        cls = w.IntSlider if is_int else w.FloatSlider
        kind = int if is_int else float
        return cls(min=kind(choice.min), max=kind(choice.max), step=kind(choice.step),
                   value=kind(choice.value), description=name, continuous_update=False)
    # The dropdown holds positions, not the values themselves: ipywidgets finds the current value by
    # comparing with ==, which an array value (a convolution kernel) turns into an elementwise array.
    labels = list(choice) if isinstance(choice, Mapping) else [str(v) for v in choice]
    return w.Dropdown(options=[(str(label), i) for i, label in enumerate(labels)], value=0, description=name)


def _value(choice: Any, control_value: Any) -> Any:
    """The value a control's state stands for: a slider's number, or the chosen entry of a list or dict."""
    if isinstance(choice, Slider):
        return control_value
    values = list(choice.values()) if isinstance(choice, Mapping) else list(choice)
    return values[control_value]


def explore(draw: Callable[..., Any], **choices: Any) -> Any:
    """Show ``draw(**values)`` with one control per keyword; see the module docstring.

    Returns the default figure in static mode (so a notebook cell displays it), else ``None``
    after displaying the controls and the live figure.
    """
    defaults = {name: _default(choice) for name, choice in choices.items()}
    if is_static():
        return draw(**defaults)
    import ipywidgets as w
    from IPython.display import display

    controls = {name: _control(name, choice) for name, choice in choices.items()}
    def show(**states: Any) -> None:
        display(draw(**{name: _value(choices[name], state) for name, state in states.items()}))

    out = w.interactive_output(show, controls)
    display(w.VBox([w.HBox(list(controls.values())), out]))
    return None
