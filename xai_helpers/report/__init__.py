"""A trust report for any CNN: which explanation of *your* model passes which test.

:func:`trust_report` explains each image with each method, runs every check of
:mod:`xai_helpers.report.checks` on each explanation (model randomisation, input invariance,
insertion and deletion against a random ranking, completeness where a method defines it, stability
under small noise, localisation when masks are given, and the cost in passes) and returns a
:class:`TrustReport`: one row per method, one column per check, each cell the mean over the images
with its ``n``, a 95 % interval (Student's t below 30 images, BCa from 30) and a verdict whose rule
the report states. It renders as one self-contained HTML page (:meth:`TrustReport.to_html`), as
Markdown and as JSON.

Per-image results go into a :class:`~xai_helpers.report.store.ResultStore` as they are computed, and
every random draw is seeded from the image's id, the method and the check
(:func:`~xai_helpers.report.checks.image_seed`). So a run can be split over processes and resumed
after it was killed, with the same results: ``python -m xai_helpers.report`` does both, under
``torchrun`` (see :mod:`xai_helpers.report.__main__`).

What a report cannot tell: its images are the ones you gave (a hand-picked set says little about
others), a pass is a necessary condition and not a proof, and the verdicts are not corrected for the
many cells read at once.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from .. import registry
from ..core import find_last_conv_layer
from ..cost import count_passes
from ..stats import Interval, bootstrap_interval, t_interval
from .checks import Check, Context, get_check, image_seed
from .checks import checks as registered_checks
from .store import ResultStore, Row

__all__ = [
    "Cell", "ReportMethod", "TrustReport", "trust_report", "report_methods", "measure_images", "summarise",
    "add_thumbnails", "default_methods", "COSTLY_FAMILIES",
]

HeatmapFn = Callable[[nn.Module, torch.Tensor, Any], torch.Tensor]


@dataclass(frozen=True)
class ReportMethod:
    """A method as the report runs it: ``title``, registry ``name`` (``None`` for a plain function),
    ``options`` and ``heatmap(model, x, target) -> [B, H, W]`` in [0, 1]."""

    title: str
    name: str | None
    options: dict[str, Any]
    heatmap: HeatmapFn


def _report_options(method: registry.Method, size: int) -> dict[str, Any]:
    """The report's settings for a method that expands its input: occlusion with a window of a seventh of
    the image and half of that as stride, Integrated Gradients with 32 steps, SmoothGrad with 16 samples."""
    options: dict[str, Any] = {}
    if method.name == "occlusion":
        window = max(4, size // 7)
        options.update(window=window, stride=max(1, window // 2))
    if method.name == "integrated_gradients":
        options.setdefault("steps", 32)
    if method.name == "smoothgrad":
        options.setdefault("n_samples", 16)
    return options


#: Families a report leaves out unless asked ("all", or by name): the model-agnostic methods cost
#: hundreds of forward passes per map, and the checks compute a map up to eight times per image.
COSTLY_FAMILIES = ("blackbox",)


def default_methods() -> list[str]:
    """The methods a report runs when none are named: every registered method outside
    :data:`COSTLY_FAMILIES`."""
    return [m.name for m in registry.methods() if m.family not in COSTLY_FAMILIES]


def report_methods(
    model: nn.Module,
    methods: Sequence[str] | Mapping[str, str | HeatmapFn] | str | None = None,
    *,
    layer: nn.Module | str | None = None,
    image_size: int = 224,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[ReportMethod]:
    """The methods a report runs: :func:`default_methods` (``None``), every registered method
    (``"all"``), the registered ``methods`` by name, or ``{title: name or function(model, x, target)
    -> [B, H, W]}``. CAMs explain ``layer`` (default
    :func:`~xai_helpers.core.find_last_conv_layer`); ``options[name]`` overrides the report's
    settings of a registered method (:func:`_report_options`)."""
    if methods is None:
        methods = default_methods()
    elif isinstance(methods, str):
        if methods != "all":
            raise ValueError(f"methods={methods!r}: give 'all', None (the defaults) or a list of names")
        methods = [m.name for m in registry.methods()]
    overrides = options or {}
    items = list(methods.items()) if isinstance(methods, Mapping) else [(None, name) for name in methods]
    chosen = []
    for title, spec in items:
        if callable(spec):
            chosen.append(ReportMethod(str(title), None, {}, spec))
            continue
        method = registry.get(spec)
        settings = _report_options(method, image_size) | dict(overrides.get(method.name, {}))
        if method.needs_layer:
            settings["layer"] = layer if layer is not None else find_last_conv_layer(model)
        chosen.append(
            ReportMethod(title or method.title, method.name, settings, registry.heatmap_method(method.name, **settings))
        )
    return chosen


def _with_seed(method: ReportMethod, seed: int) -> HeatmapFn:
    """The method with its own random draws (SmoothGrad's noise) seeded for one image."""
    if method.name == "smoothgrad":
        return registry.heatmap_method(method.name, **(method.options | {"seed": seed}))
    return method.heatmap


def measure_images(
    model: nn.Module,
    images: Iterable[tuple[str, torch.Tensor | Exception]],
    targets: Mapping[str, int],
    methods: Sequence[ReportMethod],
    store: ResultStore,
    *,
    checks_to_run: Sequence[Check] | None = None,
    masks: Mapping[str, torch.Tensor] | None = None,
    seed: int = 0,
    settings: Mapping[str, Any] | None = None,
    progress: bool = False,
    total: int | None = None,
) -> None:
    """Run every check of every method on every image, storing one :class:`~.store.Row` per result.

    ``images`` yields ``(image id, x [1, C, H, W] in [0, 1])`` or ``(image id, exception)`` for an image
    that could not be read (recorded, then skipped). What ``store`` already holds is skipped, so a run
    can resume. Errors of a method on an image are recorded in its rows and never stop the run.
    """
    chosen = list(checks_to_run) if checks_to_run is not None else registered_checks()
    done, settings = store.done(), dict(settings or {}) | {"seed": seed}
    start, seen = time.perf_counter(), 0
    for image_id, x in images:
        seen += 1
        if isinstance(x, Exception):
            store.note_image(image_id, "error", f"{type(x).__name__}: {x}")
            continue
        mask = None if masks is None else masks.get(image_id)
        target = targets[image_id]
        for method in methods:
            todo = [
                c
                for c in chosen
                if (image_id, method.title, c.name) not in done
                and (not c.needs_mask or mask is not None)
                and c.applies(method.name)
            ]
            if not todo:
                continue
            heatmap = _with_seed(method, image_seed(image_id, method.title, "map", seed))
            try:
                with count_passes(model) as passes:
                    base_map = heatmap(model, x, [target]).detach()
            except Exception as err:  # the method refuses this model or image: record it
                for c in todo:
                    store.add(
                        Row(image_id, method.title, c.name, math.nan, {}, "error", f"{type(err).__name__}: {err}")
                    )
                continue
            cache: dict[str, Any] = {}  # shared by the checks of this image and method
            for c in todo:
                # One seed per image and check, the same for every method: every method of an image is
                # judged against the same randomised weights, noise and random ranking (a paired comparison).
                ctx = Context(
                    model,
                    image_id,
                    x,
                    target,
                    heatmap,
                    method.name,
                    method.options,
                    image_seed(image_id, "every method", c.name, seed),
                    base_map,
                    mask,
                    settings,
                    float(passes.per_image(1)),
                    cache,
                )
                try:
                    result = c.measure(ctx)
                    store.add(Row(image_id, method.title, c.name, float(result.pop("value")), result))
                except Exception as err:
                    store.add(
                        Row(image_id, method.title, c.name, math.nan, {}, "error", f"{type(err).__name__}: {err}")
                    )
        store.note_image(image_id, "ok", "")
        if progress:
            elapsed = time.perf_counter() - start
            of = f"/{total}" if total else ""
            print(f"\r{seen}{of} images, {seen / max(elapsed, 1e-9):.2f} images/s", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)


@dataclass(frozen=True)
class Cell:
    """One method on one check: the mean ``value`` over ``n`` images with its ``interval`` (or None),
    the ``verdict`` (``"pass"``, ``"fail"``, ``"undecided"``, ``"n/a"`` or ``"error"``; ``""`` for a
    check without one), ``favourable`` (how many images lie on the good side of the bar) and the
    first ``error`` message, if any."""

    value: float
    n: int
    interval: Interval | None
    verdict: str
    favourable: int = 0
    errors: int = 0
    error: str = ""

    def text(self) -> str:
        """The cell as the report prints it."""
        if self.verdict == "n/a":
            return "not defined for this method" if self.n == 0 else "n/a"
        if self.verdict == "error" and self.n == 0:
            return f"error: {self.error}"
        if self.interval is None:
            return f"{self.value:.3g} (n = {self.n})"
        i = self.interval
        return f"{i.mean:.3f} [{i.low:.3f}, {i.high:.3f}], n = {self.n}"


def _verdict(check: Check, interval: Interval | None) -> str:
    if check.bar is None:
        return ""
    if interval is None:
        return "undecided"
    good_low, good_high = (
        (interval.low > check.bar, interval.high > check.bar)
        if check.better == "higher"
        else (interval.high < check.bar, interval.low < check.bar)
    )
    if good_low:
        return "pass"
    if not good_high:
        return "fail"
    return "undecided"


def summarise(
    store: ResultStore, method_titles: Sequence[str], check_list: Sequence[Check]
) -> dict[tuple[str, str], Cell]:
    """The cells of the report from the stored rows (see :class:`Cell`)."""
    by_key: dict[tuple[str, str], list[Row]] = {}
    for row in store.rows():
        by_key.setdefault((row.method, row.check), []).append(row)
    cells = {}
    for title in method_titles:
        for c in check_list:
            rows = by_key.get((title, c.name), [])
            ok = [r.value for r in rows if r.status == "ok" and not math.isnan(r.value)]
            errors = [r for r in rows if r.status != "ok"]
            if not rows:
                cells[title, c.name] = Cell(math.nan, 0, None, "n/a")
                continue
            if not ok:
                cells[title, c.name] = Cell(
                    math.nan, 0, None, "error", errors=len(errors), error=errors[0].message if errors else "no value"
                )
                continue
            interval = None
            if len(ok) >= 2:
                interval = t_interval(ok) if len(ok) < 30 else bootstrap_interval(ok)
                low, high = c.bounds          # a t interval at small n can reach past what a value can be
                interval = replace(interval, low=max(interval.low, low), high=min(interval.high, high))
            good = 0 if c.bar is None else sum((v > c.bar) if c.better == "higher" else (v < c.bar) for v in ok)
            mean = float(sum(ok) / len(ok))
            cells[title, c.name] = Cell(
                mean, len(ok), interval, _verdict(c, interval), good, len(errors), errors[0].message if errors else ""
            )
    return cells


_VERDICT_COLOURS = {
    "pass": "#1a7f37",
    "fail": "#cf222e",
    "undecided": "#9a6700",
    "n/a": "#6e7781",
    "error": "#6e7781",
    "": "#24292f",
}


@dataclass
class TrustReport:
    """The report: ``methods`` (row titles), ``checks`` (columns), ``cells[(method, check)]``, the per-image
    ``rows``, the ``images`` with their status and notes, ``meta`` (model, settings) and ``thumbnails``
    (``{method: [(image id, PNG bytes)]}``, the first images' heatmaps)."""

    methods: list[str]
    checks: list[Check]
    cells: dict[tuple[str, str], Cell]
    rows: list[Row]
    images: dict[str, tuple[str, str]]
    meta: dict[str, Any] = field(default_factory=dict)
    thumbnails: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)

    def verdicts(self) -> dict[str, dict[str, str]]:
        """``{method: {check: verdict}}``."""
        return {m: {c.name: self.cells[m, c.name].verdict for c in self.checks} for m in self.methods}

    def to_json(self) -> str:
        """Every cell and every per-image result, as JSON."""

        def interval(i: Interval | None) -> dict[str, Any] | None:
            return None if i is None else {"mean": i.mean, "low": i.low, "high": i.high, "n": i.n, "method": i.method}

        return json.dumps(
            {
                "meta": self.meta,
                "checks": [
                    {"name": c.name, "title": c.title, "rule": c.rule, "bar": c.bar, "better": c.better}
                    for c in self.checks
                ],
                "cells": [
                    {
                        "method": m,
                        "check": c.name,
                        "value": None if math.isnan(cell.value) else cell.value,
                        "n": cell.n,
                        "interval": interval(cell.interval),
                        "verdict": cell.verdict,
                        "favourable": cell.favourable,
                        "errors": cell.errors,
                        "error": cell.error,
                    }
                    for m in self.methods
                    for c in self.checks
                    for cell in [self.cells[m, c.name]]
                ],
                "images": {k: {"status": s, "note": n} for k, (s, n) in self.images.items()},
                "rows": [
                    {
                        "image": r.image,
                        "method": r.method,
                        "check": r.check,
                        "value": None if math.isnan(r.value) else r.value,
                        "status": r.status,
                        "message": r.message,
                    }
                    for r in self.rows
                ],
            },
            indent=1,
        )

    def to_markdown(self) -> str:
        """The table (verdict, then mean [interval], n), the rules and the images' notes, as Markdown."""
        lines = [
            f"# Trust report: {self.meta.get('model', 'model')}",
            "",
            f"{self.meta.get('n_images', len(self.images))} images; verdicts are not corrected for the "
            "number of cells read at once.",
            "",
            "| method | " + " | ".join(c.title for c in self.checks) + " |",
            "|---" * (len(self.checks) + 1) + "|",
        ]
        for m in self.methods:
            cells = [self.cells[m, c.name] for c in self.checks]
            lines.append(
                f"| {m} | "
                + " | ".join((f"**{cell.verdict}** " if cell.verdict else "") + cell.text() for cell in cells)
                + " |"
            )
        lines += ["", "## How each column is decided", ""] + [f"- **{c.title}**: {c.rule}." for c in self.checks]
        notes = [(k, s, n) for k, (s, n) in self.images.items() if s != "ok" or n]
        if notes:
            lines += ["", "## Images with a note", ""] + [f"- `{k}`: {s}{': ' + n if n else ''}" for k, s, n in notes]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """One self-contained HTML page: the table, the rules, thumbnails of the maps, the images' notes."""
        esc = html.escape
        head = "".join(f"<th>{esc(c.title)}</th>" for c in self.checks)
        body = []
        for m in self.methods:
            tds = []
            for c in self.checks:
                cell = self.cells[m, c.name]
                colour = _VERDICT_COLOURS.get(cell.verdict, "#24292f")
                verdict = f'<b style="color:{colour}">{esc(cell.verdict)}</b><br>' if cell.verdict else ""
                extra = (
                    f"<br><small>{cell.favourable} of {cell.n} images on the good side</small>"
                    if c.bar is not None and cell.n
                    else ""
                )
                tds.append(f"<td>{verdict}{esc(cell.text())}{extra}</td>")
            body.append(f"<tr><th>{esc(m)}</th>{''.join(tds)}</tr>")
        rules = "".join(f"<li><b>{esc(c.title)}</b>: {esc(c.rule)}.</li>" for c in self.checks)
        thumbs = []
        for m, items in self.thumbnails.items():
            pics = "".join(
                f'<figure><img alt="{esc(m)} on {esc(i)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                f"<figcaption>{esc(i)}</figcaption></figure>"
                for i, png in items
            )
            thumbs.append(f"<h3>{esc(m)}</h3><div class=row>{pics}</div>")
        notes = "".join(
            f"<li><code>{esc(k)}</code>: {esc(s)}{(': ' + esc(n)) if n else ''}</li>"
            for k, (s, n) in self.images.items()
            if s != "ok" or n
        )
        meta = "".join(f"<li>{esc(str(k))}: {esc(str(v))}</li>" for k, v in self.meta.items())
        return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>Trust report: {esc(str(self.meta.get("model", "model")))}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#24292f}} table{{border-collapse:collapse}}
td,th{{border:1px solid #d0d7de;padding:.4em .6em;vertical-align:top;font-size:.9em}}
th{{background:#f6f8fa;text-align:left}}
.row{{display:flex;flex-wrap:wrap;gap:.5em}} figure{{margin:0}} img{{width:112px;image-rendering:pixelated}}
figcaption{{font-size:.75em}}</style></head><body>
<h1>Trust report: {esc(str(self.meta.get("model", "model")))}</h1>
<p>One row per explanation method, one column per check. Each cell: the verdict, the mean over the images with its
95 % interval, and n. The verdicts are not corrected for the number of cells read at once; a pass is necessary,
not sufficient; the images are the ones given, and say little about others.</p>
<table><tr><th>method</th>{head}</tr>{"".join(body)}</table>
<h2>How each column is decided</h2><ul>{rules}</ul>
<h2>Maps</h2>{"".join(thumbs) or "<p>(none)</p>"}
<h2>Images with a note</h2><ul>{notes or "<li>none</li>"}</ul>
<h2>Settings</h2><ul>{meta}</ul></body></html>
"""

    def save(self, path: str) -> None:
        """Write the report as HTML, Markdown or JSON, by the file's suffix."""
        text = {".html": self.to_html, ".md": self.to_markdown, ".json": self.to_json}
        suffix = path[path.rfind(".") :] if "." in path else ""
        if suffix not in text:
            raise ValueError(f"save as .html, .md or .json, got {path!r}")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text[suffix]())


def _thumbnail(image: torch.Tensor, heatmap: torch.Tensor) -> bytes:
    """A small PNG: the heatmap over the image (inferno), for the HTML page."""
    import matplotlib
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1.4, 1.4), dpi=80)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().numpy())
    ax.imshow(heatmap.cpu().numpy(), cmap=matplotlib.colormaps["inferno"], alpha=0.5)
    ax.set_axis_off()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def trust_report(
    model: nn.Module,
    images: torch.Tensor,
    targets: Sequence[int] | torch.Tensor | None = None,
    *,
    methods: Sequence[str] | Mapping[str, str | HeatmapFn] | str | None = None,
    layer: nn.Module | str | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    masks: torch.Tensor | None = None,
    checks: Sequence[str] | None = None,
    image_ids: Sequence[str] | None = None,
    store: ResultStore | None = None,
    settings: Mapping[str, Any] | None = None,
    seed: int = 0,
    thumbnails: int = 4,
    progress: bool = False,
) -> TrustReport:
    """Which explanation of ``model`` passes which test, on ``images [N, C, H, W]`` in [0, 1].

    ``targets``: the class to explain per image (default: the predicted class). ``methods``,
    ``layer`` and ``options``: see :func:`report_methods`. ``masks [N, H, W]`` bool: where each
    image's object is (adds the localisation checks). ``checks``: names of
    :func:`~xai_helpers.report.checks.checks` (default all). ``store``: where per-image results
    go (default in memory; a file makes the run resumable).
    ``settings``: the checks' settings (``cascade_steps`` (default 1: the top layer), ``shift``
    (0.2), ``step`` (1/8 of the pixels), ``baseline`` (``"blur"``), ``radius`` (2/255),
    ``noise_samples`` (4)). The model is left as it was. See the module docstring for what
    the report can and cannot tell.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], got {list(images.shape)}")
    n = images.shape[0]
    ids = list(image_ids) if image_ids is not None else [f"image-{i:04d}" for i in range(n)]
    if len(ids) != n or len(set(ids)) != n:
        raise ValueError(f"image_ids must be {n} distinct names, got {len(ids)} ({len(set(ids))} distinct)")
    if targets is None:
        with torch.no_grad():
            was = model.training
            model.eval()
            targets = torch.cat([model(images[i : i + 16]).argmax(1) for i in range(0, n, 16)])
            model.train(was)
    target_list = [int(t) for t in torch.as_tensor(targets).flatten().tolist()]
    if len(target_list) != n:
        raise ValueError(f"{len(target_list)} targets for {n} images; give one per image")
    check_list = (
        [get_check(c) for c in checks]
        if checks is not None
        else [c for c in registered_checks() if not c.needs_mask or masks is not None]
    )
    chosen = report_methods(model, methods, layer=layer, image_size=int(images.shape[-1]), options=options)
    store = store if store is not None else ResultStore()
    mask_map = None if masks is None else {ids[i]: masks[i : i + 1] for i in range(n)}
    measure_images(
        model,
        ((ids[i], images[i : i + 1]) for i in range(n)),
        dict(zip(ids, target_list)),
        chosen,
        store,
        checks_to_run=check_list,
        masks=mask_map,
        seed=seed,
        settings=settings,
        progress=progress,
        total=n,
    )
    report = TrustReport(
        [m.title for m in chosen],
        check_list,
        summarise(store, [m.title for m in chosen], check_list),
        store.rows(),
        store.images(),
        {
            "model": type(model).__name__,
            "n_images": n,
            "seed": seed,
            "settings": dict(settings or {}),
            "methods": {m.title: {k: str(v) for k, v in m.options.items()} for m in chosen},
        },
    )
    shown = [(ids[i], images[i : i + 1], target_list[i]) for i in range(min(thumbnails, n))]
    add_thumbnails(report, model, chosen, shown, seed=seed)
    return report


def add_thumbnails(
    report: TrustReport, model: nn.Module, methods: Sequence[ReportMethod],
    items: Sequence[tuple[str, torch.Tensor, int]], *, seed: int = 0,
) -> None:
    """Put each method's map of each ``(image id, image [1, C, H, W], target)`` over the image, as
    thumbnails for the HTML page; a method that fails on an image gets no more thumbnails (its error
    is in the table already). Random methods draw from the same seeds as the checks."""
    for m in methods:
        pictures = []
        for image_id, image, target in items:
            try:
                heat = _with_seed(m, image_seed(image_id, m.title, "map", seed))(model, image, [target])[0]
            except Exception:
                break
            pictures.append((image_id, _thumbnail(image[0], heat)))
        report.thumbnails[m.title] = pictures
