"""The trust report's checks: each one a function of one image and one method, registered by name.

A check measures one property of an explanation method on one image, ``measure(ctx) -> dict``,
whose ``"value"`` is the number the report aggregates over images (the other entries are kept as
detail: a curve, counts). Its :class:`Check` entry states how the values become a verdict: the
mean over the images with a 95 % interval (Student's t below 30 images, a BCa bootstrap from 30),
a ``bar`` and the side of it that is good. A method **passes** when the whole interval lies on the
good side of the bar, **fails** when the whole interval lies on the other side, and is
**undecided** when the interval contains the bar, which is what a handful of images often gives.

A new check is its function, one :func:`check` decorator and its test; :func:`checks` lists them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from .. import registry, sanity
from ..core import explaining, select_scores
from ..evaluation import deletion_and_insertion, energy_in_mask, pointing_game
from ..fooling import max_sensitivity

__all__ = ["Context", "Check", "check", "checks", "get_check", "image_seed", "cascade_layers", "COMPLETENESS_REFERENCE"]

HeatmapFn = Callable[[nn.Module, torch.Tensor, Any], torch.Tensor]

#: Methods whose attributions should add up to a score difference, and the reference they add up
#: to: ``0.0``, the black image (``sum = y(x) - y(black)``, Integrated Gradients and DeepLIFT), or
#: ``None``, the score itself (``sum = y(x)``, LRP's conservation).
COMPLETENESS_REFERENCE: dict[str, float | None] = {"integrated_gradients": 0.0, "deeplift": 0.0, "lrp": None}


@dataclass
class Context:
    """What a check needs to measure one method on one image.

    ``image`` the image's id, ``x [1, C, H, W]`` in [0, 1], ``target`` its class,
    ``heatmap(model, x, target) -> [1, H, W]`` the method as a heatmap in [0, 1], ``method`` its
    registry name (``None`` for a plain function), ``options`` the method's options (for the raw
    attributions), ``mask [1, H, W]`` bool or None, ``seed`` the image's seed for this check, the same
    for every method (:func:`image_seed`), ``map`` the method's heatmap on ``x`` (computed once per
    image and method, shared by the checks), ``passes`` what computing it cost
    (:class:`~xai_helpers.cost.PassCount` per image), and ``cache``: results that
    several checks of the same image and method share (the perturbation curves).
    """

    model: nn.Module
    image: str
    x: torch.Tensor
    target: int
    heatmap: HeatmapFn
    method: str | None
    options: dict[str, Any]
    seed: int
    map: torch.Tensor
    mask: torch.Tensor | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    passes: float = math.nan
    cache: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """One column of the report: ``measure(ctx) -> {"value": float, ...}`` for one image and method.

    ``bar`` and ``better`` (``"lower"`` or ``"higher"``) turn the interval of the mean into a verdict
    (module docstring); ``bar=None`` reports the value without a verdict. ``applies(method name)``
    says whether the check is defined for a method (others show "n/a"); ``needs_mask``: only with
    masks. ``rule`` is the verdict's rule in words, printed in the report. ``bounds``: the values a
    measurement can take (a rank correlation lies in [-1, 1]); the interval of the mean is clipped
    to them, since a t interval at small n can reach past them.
    """

    name: str
    title: str
    measure: Callable[[Context], dict[str, Any]]
    rule: str
    bar: float | None = None
    better: Literal["lower", "higher"] = "higher"
    needs_mask: bool = False
    applies: Callable[[str | None], bool] = lambda method: True
    bounds: tuple[float, float] = (-math.inf, math.inf)


_CHECKS: dict[str, Check] = {}


def check(
    name: str,
    *,
    title: str,
    rule: str,
    bar: float | None = None,
    better: Literal["lower", "higher"] = "higher",
    needs_mask: bool = False,
    applies: Callable[[str | None], bool] | None = None,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> Callable[[Callable[[Context], dict[str, Any]]], Callable[[Context], dict[str, Any]]]:
    """Decorator: register ``measure(ctx) -> dict`` as the check ``name`` (see :class:`Check`)."""
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")

    def add(measure: Callable[[Context], dict[str, Any]]) -> Callable[[Context], dict[str, Any]]:
        _CHECKS[name] = Check(
            name,
            title,
            measure,
            rule,
            bar,
            better,
            needs_mask,
            applies if applies is not None else (lambda method: True),
            bounds,
        )
        return measure

    return add


def checks() -> list[Check]:
    """Every registered check, in the order they were registered (the report's columns)."""
    return list(_CHECKS.values())


def get_check(name: str) -> Check:
    """The check registered as ``name``."""
    if name not in _CHECKS:
        raise KeyError(f"no check named {name!r}; known: {', '.join(_CHECKS)}")
    return _CHECKS[name]


def image_seed(image_id: str, method: str, check_name: str, seed: int = 0) -> int:
    """A seed from the image's id, the method and the check (and a global ``seed``): every random draw
    of the report depends on these alone, so the results of an image do not depend on which process
    or batch computed them."""
    digest = hashlib.sha256(f"{seed}\0{image_id}\0{method}\0{check_name}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


# ----------------------------------------------------------------------------------- randomisation
def cascade_layers(model: nn.Module) -> list[str]:
    """The model's own layers with parameters, from the output towards the input: the leaf modules
    that hold parameters, in the reverse of the order ``named_modules()`` lists them. The first is
    the top step of the model randomisation cascade (usually the classifier)."""
    names = [
        name
        for name, m in model.named_modules()
        if name and not any(True for _ in m.children()) and any(True for _ in m.parameters(recurse=False))
    ]
    if not names:
        raise ValueError("the model has no layer with parameters to randomise")
    return names[::-1]


def _require_map(ctx: Context) -> None:
    if float(ctx.map.max() - ctx.map.min()) == 0.0:
        raise ValueError("the method's map is blank (constant) on this image, so this check is undefined")


@check(
    "randomisation",
    title="Spearman after randomising the top layer ↓",
    bounds=(-1.0, 1.0),
    rule="passes when the 95 % interval of the mean Spearman correlation between the map of the trained "
    "model and the map after randomising its top layer (the first step of the cascade of Adebayo et al.) "
    "lies below 0.5; fails when it lies above",
    bar=0.5,
    better="lower",
)
def randomisation(ctx: Context) -> dict[str, Any]:
    _require_map(ctx)
    steps = cascade_layers(ctx.model)[: ctx.settings.get("cascade_steps", 1)]
    result = sanity.model_randomization_test(ctx.model, ctx.x, [ctx.target], {"m": ctx.heatmap}, steps, seed=ctx.seed,
                                             original={"m": ctx.map})
    curve = [float(v) for v in result.spearman["m"][:, 0]]  # [1 + steps]: 1 first, then each step
    return {"value": curve[1], "curve": curve, "layers": result.labels}


# ----------------------------------------------------------------------------------- input invariance
class _Shifted(nn.Module):
    """``model(x - shift)``: the same function of ``x - shift``, for models without a Normalize layer."""

    def __init__(self, model: nn.Module, shift: float):
        super().__init__()
        self.model, self.shift = model, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x - self.shift)


def shifted_copy(model: nn.Module, shift: float) -> nn.Module:
    """A network that reads ``x + shift`` and computes what ``model`` computes on ``x``: the model's own
    :class:`~xai_helpers.models.Normalize` absorbs the shift where it has one
    (:func:`~xai_helpers.sanity.input_shifted_copy`), else a subtraction in front of the model."""
    try:
        return sanity.input_shifted_copy(model, shift)
    except ValueError:
        return _Shifted(model, shift)


@check(
    "input_invariance",
    title="change under an absorbed input shift ↓",
    bounds=(0.0, math.inf),
    rule="passes when the 95 % interval of the mean relative change ||L' - L|| / ||L|| of the heatmap, for a copy "
    "of the model that absorbs a constant shift of the input (Kindermans et al.), lies below 0.05; fails "
    "when it lies above",
    bar=0.05,
    better="lower",
)
def input_invariance(ctx: Context) -> dict[str, Any]:
    _require_map(ctx)
    shift = float(ctx.settings.get("shift", 0.2))
    twin = shifted_copy(ctx.model, shift)
    with explaining(ctx.model), torch.no_grad():
        logits = ctx.model(ctx.x)
        logits_gap = float((twin(ctx.x + shift) - logits).abs().max())
    if logits_gap > 1e-3 * max(1.0, float(logits.abs().max())):
        raise RuntimeError(f"the shifted copy does not compute the same logits (largest difference {logits_gap:.2g})")
    moved = ctx.heatmap(twin, ctx.x + shift, [ctx.target])
    change = float((moved - ctx.map).flatten().norm() / ctx.map.flatten().norm().clamp_min(1e-12))
    return {"value": change}


# ----------------------------------------------------------------------------------- faithfulness
def _curves(ctx: Context) -> dict[str, float]:
    """Insertion and deletion AUCs of the method's map and of a random ranking (seeded by the image), once
    per image and method: ``settings`` ``step`` (default 1/8 of the pixels) and ``baseline`` (``"blur"``)."""
    if "curves" not in ctx.cache:
        h, w = ctx.x.shape[-2:]
        seed = image_seed(ctx.image, "every method", "curves", ctx.settings.get("seed", 0))  # one per image
        random_map = torch.rand(1, h, w, generator=torch.Generator().manual_seed(seed)).to(ctx.x)
        step, baseline = ctx.settings.get("step", 1 / 8), ctx.settings.get("baseline", "blur")
        auc = {}
        for name, ranking in [("method", ctx.map), ("random", random_map)]:
            dele, ins = deletion_and_insertion(ctx.model, ctx.x, ranking, [ctx.target], step=step, baseline=baseline)
            auc[f"{name} deletion"], auc[f"{name} insertion"] = float(dele.auc[0]), float(ins.auc[0])
        ctx.cache["curves"] = auc
    return ctx.cache["curves"]


@check(
    "insertion",
    title="insertion AUC gain over a random ranking ↑",
    bounds=(-1.0, 1.0),
    rule="passes when the 95 % interval of the mean gain in insertion AUC over a random ranking of the same "
    "pixels (paired, image by image; 8 steps from a blurred copy) lies above 0; fails when it lies below",
    bar=0.0,
    better="higher",
)
def insertion(ctx: Context) -> dict[str, Any]:
    auc = _curves(ctx)
    return {"value": auc["method insertion"] - auc["random insertion"], "auc": auc["method insertion"]}


@check(
    "deletion",
    title="deletion AUC gain over a random ranking ↑",
    bounds=(-1.0, 1.0),
    rule="passes when the 95 % interval of the mean gain (the random ranking's deletion AUC minus the method's; "
    "paired, 8 steps towards a blurred copy) lies above 0; fails when it lies below",
    bar=0.0,
    better="higher",
)
def deletion(ctx: Context) -> dict[str, Any]:
    auc = _curves(ctx)
    return {"value": auc["random deletion"] - auc["method deletion"], "auc": auc["method deletion"]}


# ----------------------------------------------------------------------------------- completeness
@check(
    "completeness",
    title="completeness error ↓",
    bounds=(0.0, math.inf),
    rule="defined for Integrated Gradients and DeepLIFT (the attributions should add up to y(x) - y(black)) and "
    "LRP (to y(x)); passes when the 95 % interval of the mean |sum - expected| / |expected| lies below 0.05; "
    "fails when it lies above",
    bar=0.05,
    better="lower",
    applies=lambda method: method in COMPLETENESS_REFERENCE,
)
def completeness(ctx: Context) -> dict[str, Any]:
    assert ctx.method is not None
    reference = COMPLETENESS_REFERENCE[ctx.method]
    raw = registry.attribute(ctx.method, ctx.model, ctx.x, [ctx.target], **ctx.options)
    with explaining(ctx.model), torch.no_grad():
        expected = select_scores(ctx.model(ctx.x), [ctx.target])
        if reference is not None:
            expected = expected - select_scores(ctx.model(torch.full_like(ctx.x, reference)), [ctx.target])
    error = float((raw.flatten().sum() - expected[0]).abs() / expected[0].abs().clamp_min(1e-12))
    return {"value": error, "expected": float(expected[0])}


# ----------------------------------------------------------------------------------- stability
@check(
    "stability",
    title="max-sensitivity under small noise ↓",
    bounds=(0.0, math.inf),
    rule="max-sensitivity (Yeh et al. 2019): the largest relative change of the heatmap over 4 uniform "
    "perturbations of at most 2/255 per pixel that leave the prediction unchanged; passes when the 95 % "
    "interval of the mean lies below 0.5; fails when it lies above",
    bar=0.5,
    better="lower",
)
def stability(ctx: Context) -> dict[str, Any]:
    _require_map(ctx)
    radius, samples = ctx.settings.get("radius", 2 / 255), ctx.settings.get("noise_samples", 4)
    sensitivity = max_sensitivity(ctx.heatmap, ctx.model, ctx.x, [ctx.target], radius=radius, n_samples=samples,
                                  seed=ctx.seed, map_at_x=ctx.map)
    return {"value": float(sensitivity[0])}


# ----------------------------------------------------------------------------------- localisation
@check(
    "localisation",
    title="energy in the mask minus the mask's share ↑",
    bounds=(-1.0, 1.0),
    rule="with masks only: the share of the heatmap's mass inside the mask minus the mask's share of the image "
    "(what a flat map gets); passes when the 95 % interval of the mean lies above 0; fails when it lies below",
    bar=0.0,
    better="higher",
    needs_mask=True,
)
def localisation(ctx: Context) -> dict[str, Any]:
    assert ctx.mask is not None
    share = float(ctx.mask.float().mean())
    energy = float(energy_in_mask(ctx.map, ctx.mask)[0])
    return {"value": energy - share, "energy": energy, "pointing": float(pointing_game(ctx.map, ctx.mask)[0])}


@check(
    "containment",
    title="share of the map outside the mask ↓",
    bounds=(0.0, 1.0),
    rule="with masks only: the share of the heatmap's mass outside the mask; passes when the 95 % interval of "
    "the mean lies below 0.05, fails when it lies above. Meant for masks that hold every pixel that can "
    "influence the score (a DiFull grid, chapter 15): for masks of an object, most methods fail it",
    bar=0.05,
    better="lower",
    needs_mask=True,
)
def containment(ctx: Context) -> dict[str, Any]:
    assert ctx.mask is not None
    return {"value": 1.0 - float(energy_in_mask(ctx.map, ctx.mask)[0])}


# ----------------------------------------------------------------------------------- cost
@check(
    "cost",
    title="forward and backward passes per image",
    bounds=(0.0, math.inf),
    rule="counted, not timed (xai_helpers.cost.count_passes) while the map is computed: images sent forward plus "
    "images whose gradient came back from the output; no verdict",
)
def cost(ctx: Context) -> dict[str, Any]:
    return {"value": ctx.passes}
