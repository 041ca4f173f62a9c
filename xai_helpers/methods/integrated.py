"""Integrated Gradients (Sundararajan et al., 2017): the path integral, its quadrature and its check.

For an image ``x``, a baseline ``x'`` and the target score ``y^c``,

    IG_i(x) = (x_i - x'_i) * integral_0^1 dy^c/dx_i (x' + a (x - x')) da,

and by completeness ``sum_i IG_i(x) = y^c(x) - y^c(x')``. The integral is a quadrature
``sum_k w_k h(a_k)`` over ``steps`` nodes ``a_k`` in [0, 1]; everywhere in this module ``steps``
is the *number of gradient evaluations along the path* per image (the cost of the method):

====================  ===============================================  ============================
``quadrature``        nodes and weights                                exact for polynomials of
====================  ===============================================  ============================
``"gauss-legendre"``  Gauss-Legendre nodes on [0, 1] (the default)     degree ``2 steps - 1``
``"trapezoid"``       ``steps`` equally spaced points with both ends,  degree 1
                      ends weighted 1/2 (``steps - 1`` intervals)
``"riemann"``         right Riemann sum ``a_k = k / steps``, as in     degree 0
                      the paper's eq. (3)
====================  ===============================================  ============================

:func:`integrated_gradients_to_tolerance` doubles ``steps`` until the completeness error is below
a given fraction of ``|y^c(x) - y^c(x')|`` and reports what it reached. :func:`integrated_gradients`
does the same when ``steps`` is not given (from 16 up to 256 steps, to within 5 %) and warns for an
image it could not bring there; a fixed ``steps`` is the caller's choice and is not checked. The completeness error
itself is :func:`xai_helpers.core.completeness_error`, shared with DeepLIFT and LRP. The baseline
``x'`` is ``0.0``, the black image, unless told otherwise.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..backward_rules import input_gradients
from ..core import Target, as_targets, baseline_like, check_chunk_size, check_images, score_change
from ..registry import register

__all__ = [
    "QUADRATURES",
    "quadrature_nodes",
    "integrated_gradients",
    "integrated_gradients_to_tolerance",
    "IGResult",
    "completeness_curve",
    "DEFAULT_TOLERANCE",
]

#: The quadratures :func:`quadrature_nodes` knows.
QUADRATURES = ("gauss-legendre", "trapezoid", "riemann")
#: Without ``steps``, :func:`integrated_gradients` refines each image until its completeness error is
#: within this fraction of ``|y^c(x) - y^c(x')|``, from ``_DEFAULT_STEPS[0]`` up to ``_DEFAULT_STEPS[1]`` steps.
DEFAULT_TOLERANCE = 0.05
_DEFAULT_STEPS = (16, 256)


def quadrature_nodes(steps: int, quadrature: str = "gauss-legendre") -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes ``a [steps]`` in [0, 1] and weights ``w [steps]`` (summing to 1), float64, for
    ``integral_0^1 h(a) da ~ sum_k w_k h(a_k)``; ``quadrature`` is one of :data:`QUADRATURES`."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps (gradient evaluations along the path) must be an int >= 1, got {steps!r}")
    if quadrature == "gauss-legendre":
        nodes, gl_weights = np.polynomial.legendre.leggauss(steps)  # on [-1, 1], weights sum to 2
        return torch.from_numpy((nodes + 1) / 2), torch.from_numpy(gl_weights / 2)
    if quadrature == "trapezoid":
        if steps < 2:
            raise ValueError("the trapezoid rule needs steps >= 2 (both ends of the path); use 'gauss-legendre'")
        weights = torch.full((steps,), 1.0 / (steps - 1), dtype=torch.float64)
        weights[[0, -1]] /= 2
        return torch.linspace(0, 1, steps, dtype=torch.float64), weights
    if quadrature == "riemann":
        return (torch.arange(1, steps + 1, dtype=torch.float64) / steps,
                torch.full((steps,), 1.0 / steps, dtype=torch.float64))
    raise ValueError(f"unknown quadrature {quadrature!r}; choose one of {QUADRATURES}")


def _path_integrals(
    model: nn.Module, x: torch.Tensor, targets: torch.Tensor, base: torch.Tensor,
    alphas: torch.Tensor, weights: torch.Tensor, chunk_size: int | None,
) -> torch.Tensor:
    """``sum_k weights[q, k] * grad(base + alphas[k] (x - base))`` for every grid ``q``: ``[Q, B, C, H, W]``.

    ``alphas [K]``, ``weights [Q, K]``. The ``B * K`` path images go through the model
    ``chunk_size`` at a time (:func:`~xai_helpers.core.check_chunk_size`) and are summed as they
    come, so memory does not grow with ``K``.
    """
    chunk_size = check_chunk_size(chunk_size, x)
    b, k = x.shape[0], alphas.numel()
    out = torch.zeros((weights.shape[0], *x.shape), dtype=x.dtype, device=x.device)
    image = torch.arange(b, device=x.device).repeat_interleave(k)      # pair p -> image p // k
    node = torch.arange(k, device=x.device).repeat(b)                  # pair p -> node p % k
    for start in range(0, b * k, chunk_size):
        i, j = image[start : start + chunk_size], node[start : start + chunk_size]
        points = base[i] + alphas[j].view(-1, 1, 1, 1) * (x[i] - base[i])
        grads = input_gradients(model, points, targets[i])                             # [n, C, H, W]
        out.index_add_(1, i, weights[:, j].view(weights.shape[0], -1, 1, 1, 1) * grads[None])
    return out


@register("integrated_gradients", title="Integrated Gradients", space="input", needs_layer=False,
          family="path", cost="steps x (1 forward + 1 backward); without steps, 16 to 256 per image",
          reference="sundararajan2017axiomatic", quick={"steps": 4})
def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    baseline: torch.Tensor | float = 0.0,
    steps: int | None = None,
    chunk_size: int | None = 32,
    quadrature: str = "gauss-legendre",
) -> torch.Tensor:
    """Integrated Gradients: ``(x - x') * integral_0^1 dy^c/dx(x' + a (x - x')) da``, ``[B, C, H, W]``.

    ``x [B, C, H, W]``; ``baseline`` ``x'`` is ``0.0`` (the black image) by default, or another number
    or a tensor that broadcasts to ``x``. The integral uses ``steps`` gradient evaluations per image
    with the ``quadrature`` of :data:`QUADRATURES`; ``chunk_size`` path images go through the model
    at a time (``None``: :func:`~xai_helpers.core.default_chunk_size`).

    By completeness the attributions of an image sum to ``y^c(x) - y^c(x')``. Without ``steps``, each
    image's grid is doubled from 16 steps until its completeness error is within
    :data:`DEFAULT_TOLERANCE` (5 %) of ``|y^c(x) - y^c(x')|``, up to 256 steps, and a ``UserWarning``
    names every image still outside it. With ``steps`` the grid is fixed and unchecked (fast and
    predictable); check it with :func:`~xai_helpers.core.completeness_error`, or use
    :func:`integrated_gradients_to_tolerance` for another tolerance. The result does not require grad.
    """
    check_images(x)
    x = x.detach()
    base = baseline_like(x, baseline)
    targets = as_targets(target, x.shape[0], device=x.device)
    if steps is None:
        start, most = _DEFAULT_STEPS
        result = integrated_gradients_to_tolerance(
            model, x, targets, tolerance=DEFAULT_TOLERANCE, baseline=base, start_steps=start, max_steps=most,
            chunk_size=chunk_size, quadrature=quadrature)
        missed = (~result.converged).nonzero().flatten().tolist()
        if missed:
            errors = ", ".join(f"{i} ({float(result.relative_error[i]):.0%})" for i in missed)
            warnings.warn(
                f"Integrated Gradients misses completeness by more than {DEFAULT_TOLERANCE:.0%} of "
                f"|y(x) - y(x')| after {most} steps on image(s) {errors}: their attributions do not sum to the "
                "score change. Use integrated_gradients_to_tolerance(..., max_steps=...) for a finer grid, or "
                "check whether the model's score is smooth along the path.", UserWarning, stacklevel=2)
        return result.attributions
    alphas, weights = (t.to(x) for t in quadrature_nodes(steps, quadrature))
    return (x - base) * _path_integrals(model, x, targets, base, alphas, weights[None], chunk_size)[0]


@dataclass
class IGResult:
    """What :func:`integrated_gradients_to_tolerance` reached, per image.

    ``attributions [B, C, H, W]``; ``steps [B]`` the gradient evaluations of the accepted grid;
    ``relative_error [B]`` ``|completeness error| / |y^c(x) - y^c(x')|`` there; ``converged [B]``
    whether it is within ``tolerance``; ``evaluations`` the gradient evaluations spent in all.
    """

    attributions: torch.Tensor
    steps: torch.Tensor
    relative_error: torch.Tensor
    converged: torch.Tensor
    tolerance: float
    evaluations: int


def integrated_gradients_to_tolerance(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    tolerance: float = 0.01,
    baseline: torch.Tensor | float = 0.0,
    start_steps: int = 8,
    max_steps: int = 512,
    chunk_size: int | None = 32,
    quadrature: str = "gauss-legendre",
) -> IGResult:
    """Integrated Gradients with ``steps`` doubled until ``|completeness error| <= tolerance * |y^c(x) - y^c(x')|``.

    Each image starts at ``start_steps`` gradient evaluations and is refined (8, 16, 32, ...) until
    it meets the tolerance or reaches ``max_steps``; an image is not refined once it has converged.
    A zero score change with zero error counts as converged. Returns an :class:`IGResult`; check
    ``result.converged``: an image that never met the tolerance keeps its ``max_steps`` attributions.
    """
    check_images(x)
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0 (a fraction of |y(x) - y(x')|, e.g. 0.01), got {tolerance}")
    if not 1 <= start_steps <= max_steps:
        raise ValueError(f"need 1 <= start_steps <= max_steps, got {start_steps} and {max_steps}")
    x = x.detach()
    base = baseline_like(x, baseline)
    targets = as_targets(target, x.shape[0], device=x.device)
    gap = score_change(model, x, targets, base)                                      # [B]
    attributions = torch.zeros_like(x)
    steps_used = torch.zeros(x.shape[0], dtype=torch.long)
    relative = torch.full((x.shape[0],), float("inf"), dtype=x.dtype, device=x.device)
    active = torch.arange(x.shape[0], device=x.device)
    steps, evaluations = start_steps, 0
    while True:
        alphas, weights = (t.to(x) for t in quadrature_nodes(steps, quadrature))
        xa, ba = x[active], base[active]
        ig = (xa - ba) * _path_integrals(model, xa, targets[active], ba, alphas, weights[None], chunk_size)[0]
        evaluations += steps * active.numel()
        error = (ig.flatten(1).sum(1) - gap[active]).abs()
        rel = torch.nan_to_num(error / gap[active].abs(), nan=0.0)                   # 0 / 0: exact
        attributions[active], relative[active], steps_used[active.cpu()] = ig, rel, steps
        active = active[rel > tolerance]
        if active.numel() == 0 or steps >= max_steps:
            break
        steps = min(2 * steps, max_steps)
    return IGResult(attributions, steps_used, relative, relative <= tolerance, tolerance, evaluations)


def completeness_curve(
    model: nn.Module, x: torch.Tensor, target: Target, steps: Sequence[int] = (4, 8, 16, 32, 64), *,
    baseline: torch.Tensor | float = 0.0, chunk_size: int | None = 32,
    quadrature: str = "gauss-legendre",
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Integrated Gradients with ``max(steps)`` evaluations, and the completeness error for every ``steps``.

    Returns ``(attributions [B, C, H, W], {steps: error [B]})``, each error as
    :func:`~xai_helpers.core.completeness_error` computes it for that grid's attributions. Every
    grid's nodes are evaluated once, and a node shared by several grids (e.g. the trapezoid rule's
    ends and nested points) only once, so the cost is the number of distinct nodes per image.
    """
    check_images(x)
    x = x.detach()
    steps = sorted(set(steps))
    base = baseline_like(x, baseline)
    targets = as_targets(target, x.shape[0], device=x.device)
    grids = [quadrature_nodes(s, quadrature) for s in steps]
    keys = np.round(torch.cat([a for a, _ in grids]).numpy(), 12)
    unique, inverse = np.unique(keys, return_inverse=True)
    weights = torch.zeros((len(steps), unique.size), dtype=torch.float64)
    offset = 0
    for q, (a, w) in enumerate(grids):
        weights[q].index_add_(0, torch.from_numpy(inverse[offset:offset + a.numel()]), w)
        offset += a.numel()
    sums = _path_integrals(model, x, targets, base, torch.from_numpy(unique).to(x), weights.to(x), chunk_size)
    gap = score_change(model, x, targets, base)
    attributions = (x - base) * sums                                                   # [Q, B, C, H, W]
    errors = {s: attributions[q].flatten(1).sum(1) - gap for q, s in enumerate(steps)}
    return attributions[-1], errors
