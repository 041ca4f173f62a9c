"""Display helpers: every method's output as a heatmap in [0, 1], and pixel-space attributions
``[B, C, H, W]`` as one value per pixel or as an RGB image; source code and tables for the book's
pages (:func:`source_code`, :func:`numbered_table`), shown alike on the website, in the PDF and in
Jupyter."""
from __future__ import annotations

import inspect
import math
import re
import textwrap
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch

from .core import rescale_maps

__all__ = ["to_heatmap", "reduce_channels", "gradient_image", "SourceCode", "source_code",
           "MarkdownTable", "numbered_table"]


def to_heatmap(attributions: torch.Tensor) -> torch.Tensor:
    """The one post-processing of the output contract: any method's result -> ``[B, H, W]`` in [0, 1].

    Input-space attributions ``[B, C, H, W]`` become ``max_c |a_c|`` per pixel (the sign dropped, as
    in the papers' figures); maps ``[B, H, W]`` keep their positive part (the evidence *for* the
    class, as a CAM's ReLU does). Each map is then min-max scaled per image; a map that is zero
    everywhere stays zero.
    """
    if attributions.dim() == 4:
        return reduce_channels(attributions, "max", rescale=True)
    if attributions.dim() == 3:
        return rescale_maps(attributions.detach().clamp_min(0))
    raise ValueError(f"attributions must be [B, C, H, W] or [B, H, W], got shape {list(attributions.shape)}")


def reduce_channels(attributions: torch.Tensor, how: str = "max", rescale: bool = True) -> torch.Tensor:
    """One value per pixel from ``[B, C, H, W]`` attributions: ``[B, H, W]``.

    ``how="max"`` takes ``max_c |a_c|`` (Simonyan et al.), ``"sum"`` takes ``sum_c |a_c|``, ``"l2"``
    the Euclidean norm over channels. With ``rescale`` each map is min-max scaled to [0, 1].
    Magnitudes only: the sign is dropped, as in the papers' figures.
    """
    if attributions.dim() != 4:
        raise ValueError(f"attributions must be [B, C, H, W], got shape {list(attributions.shape)}")
    reducers = {
        "max": lambda a: a.abs().amax(1),
        "sum": lambda a: a.abs().sum(1),
        "l2": lambda a: a.pow(2).sum(1).sqrt(),
    }
    if how not in reducers:
        raise ValueError(f"unknown reduction {how!r}; choose one of {sorted(reducers)}")
    maps = reducers[how](attributions.detach())
    return rescale_maps(maps) if rescale else maps


def gradient_image(attributions: torch.Tensor, quantile: float = 0.995, center: bool = False) -> torch.Tensor:
    """Signed ``[B, 3, H, W]`` attributions as RGB images in [0, 1] for display: 0 is grey.

    With ``center`` each colour channel's mean over the image is subtracted first (deconvnet's
    output carries a large constant offset that would otherwise hide everything). Each image is
    then divided by its ``quantile`` of ``|a|`` (so a few extreme pixels do not wash out the rest),
    clipped to [-1, 1] and mapped to ``0.5 + 0.5 * a``.
    """
    a = attributions.detach()
    if center:
        a = a - a.mean(dim=(2, 3), keepdim=True)
    scale = torch.quantile(a.abs().flatten(1), quantile, dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (0.5 + 0.5 * (a / scale).clamp(-1, 1)).clamp(0, 1)


class SourceCode:
    """Source text shown as a highlighted code block: Markdown with a fenced block for the book's
    pages and for Jupyter (``text/markdown``), the plain text elsewhere (``text/plain``)."""

    def __init__(self, text: str, language: str = "python") -> None:
        self.text = text.rstrip("\n")
        self.language = language

    def _repr_markdown_(self) -> str:
        longest = max((len(run) for run in re.findall(r"`+", self.text)), default=0)
        fence = "`" * max(3, longest + 1)     # longer than any run of backticks in the source
        return f"{fence}{self.language}\n{self.text}\n{fence}"

    def __repr__(self) -> str:
        return self.text


def source_code(*objects: Any) -> SourceCode:
    """The source of functions, classes or methods (``inspect.getsource``), one after the other,
    as one highlighted block: end a cell with ``source_code(grad_cam)`` instead of printing
    ``inspect.getsource(grad_cam)``, which shows as unhighlighted output text."""
    if not objects:
        raise ValueError("source_code needs at least one function, class or method")
    return SourceCode("\n\n".join(textwrap.dedent(inspect.getsource(o)).rstrip("\n") for o in objects))


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_<|$])")   # what Markdown (and MyST's dollar math) would read


def _escape(text: str) -> str:
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


# how each direction of best= scores a value: the highest score wins
_RANKS = {"max": lambda v: v, "min": lambda v: -v, "zero": lambda v: -abs(v)}


def _number(value: Any) -> float:
    """The number a table cell is ranked by: an interval's mean, or the value itself."""
    return float(getattr(value, "mean", value))


class MarkdownTable:
    """A numbered, captioned table (MyST ``list-table``) for the book's pages, plain text elsewhere.

    ``markdown`` is what the website and the PDF render (with ``nb_render_markdown_format: myst``,
    set in _config.yml); ``text`` what a plain-text front end shows."""

    def __init__(self, markdown: str, text: str) -> None:
        self.markdown = markdown
        self.text = text

    def _repr_markdown_(self) -> str:
        return self.markdown

    def __repr__(self) -> str:
        return self.text


def numbered_table(
    rows: Mapping[str, Mapping[str, Any]],
    columns: Sequence[str],
    *,
    caption: str,
    name: str,
    formats: Mapping[str, str] | None = None,
    best: Mapping[str, str] | None = None,
    contenders: Collection[str] | None = None,
    first_column: str = "method",
    missing: str = "\u2013",
) -> MarkdownTable:
    """A table with a number, a caption and a label, its best values in bold.

    ``rows`` maps each row's name to ``{column: value}``; a value missing from a row prints as
    ``missing``. ``formats`` maps a column to a format string (default ``"{}"``; an
    :class:`~xai_helpers.stats.Interval` formats as ``"mean [low, high]"``, ``{:.2f}`` included).
    ``best`` maps a column to ``"max"``, ``"min"`` or ``"zero"`` (closest to zero): the cells with
    the best value of that column (an interval's mean) are set in bold, ties included; values are
    ranked as printed, so two cells that print the same are both bold or neither. Only the rows named
    in ``contenders`` compete for bold (default: every row), so controls can be left out. The website
    and the PDF number it
    ("Table N.k"): refer to it with the ``numref`` role and its ``name``. End a cell with it (the
    cell needs no other output).
    """
    formats = dict(formats or {})
    best = dict(best or {})
    unknown = sorted(set(best) - set(columns))
    if unknown:
        raise ValueError(f"best= names {unknown}, which are not columns of the table")
    bad = {c: how for c, how in best.items() if how not in _RANKS}
    if bad:
        raise ValueError(f"best= must say 'max', 'min' or 'zero' for each column, got {bad}")
    unknown = sorted(set(contenders or ()) - set(rows))
    if unknown:
        raise ValueError(f"contenders= names {unknown}, which are not rows of the table")
    competing = set(rows) if contenders is None else set(contenders)

    def printed(value: Any, column: str) -> float:
        # rank what the reader sees: "0.00" and "-0.00" tie, whatever the digits behind them
        text = formats.get(column, "{}").format(_number(value))
        try:
            return float(text.removesuffix("%"))
        except ValueError:                                   # not a plain number: rank the value
            return _number(value)

    winners: dict[str, float] = {}
    for column, how in best.items():
        scores = [_RANKS[how](printed(r[column], column)) for label, r in rows.items()
                  if label in competing and column in r and not math.isnan(_number(r[column]))]
        if scores:
            winners[column] = max(scores)

    def cell(label: str, row: Mapping[str, Any], column: str) -> tuple[str, bool]:
        if column not in row:
            return missing, False
        text = formats.get(column, "{}").format(row[column])
        won = (label in competing and column in winners
               and _RANKS[best[column]](printed(row[column], column)) == winners[column])
        return text, won

    header = [first_column, *columns]
    body = [[(str(label), False), *(cell(label, row, c) for c in columns)] for label, row in rows.items()]
    lines = [f"```{{list-table}} {' '.join(caption.split())}", ":header-rows: 1", ":stub-columns: 1",
             f":name: {name}", ":class: xai-table", ""]
    for entries in [[(h, False) for h in header], *body]:
        for i, (text, bold) in enumerate(entries):
            shown = f"**{_escape(text)}**" if bold else _escape(text)
            lines.append(("* - " if i == 0 else "  - ") + shown)
    lines.append("```")
    widths = [max(len(h), *(len(r[i][0]) + 2 * r[i][1] for r in body)) for i, h in enumerate(header)]
    plain = [" | ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    plain += [" | ".join((f"*{t}*" if b else t).ljust(w) for (t, b), w in zip(r, widths)).rstrip() for r in body]
    return MarkdownTable("\n".join(lines), f"Table {name}: {' '.join(caption.split())}\n" + "\n".join(plain))
