"""Model-agnostic explanations: methods that only query the model, never its gradients or layers.

Each method sends many perturbed copies of an image through the model and turns the target's
scores into a map ``[B, H, W]``; it works on any classifier, including one behind an API.

* :func:`rise` (Petsiuk et al. 2018): random binary masks on a coarse grid (:func:`rise_masks`),
  and the score-weighted average of the masks.
* :func:`lime` (Ribeiro et al. 2016): superpixels (:func:`superpixels`) switched on and off at
  random, a weighted ridge regression of the scores on the on/off pattern (the *surrogate*),
  whose coefficients become the map; :func:`lime_explanation` also returns the surrogate's fit.
* :func:`kernel_shap` (Lundberg & Lee 2017): the same superpixels, the Shapley kernel's weights and
  the efficiency constraint, so the map's values estimate the superpixels' Shapley values;
  exact (all ``2^M`` coalitions) when the budget allows. :func:`kernel_shap_values` is the
  estimator for any value function and :func:`exact_shapley` the Shapley values by enumeration.

**Scores.** All three explain the target's softmax *probability* by default (``score="probability"``),
as the RISE paper does and as the ``lime`` package's image explainer does with ``predict_proba``;
``score="logit"`` explains the target's logit instead (a model linear in its input then has a
linear score, which the closed forms in the tests use).

**Removed pixels.** RISE multiplies the image by its masks, ``x * M + (1 - M) * baseline`` with a
black ``baseline`` (0, the paper's) unless told otherwise. LIME and KernelSHAP replace a switched-off
superpixel by ``baseline``: mid-grey (0.5) by default, which both of the book's networks map to a
zero input (their normalisation subtracts 0.5); ``"segment_mean"`` gives each superpixel its own
mean colour (the ``lime`` package's default, ``hide_color=None``), ``"image_mean"`` the image's
mean colour, and a number or a tensor broadcastable to ``x`` is used as given.

**Chunks and seeds.** The perturbed images go through the model ``chunk_size`` at a time (by default
:func:`~xai_helpers.core.default_chunk_size`: small on a CPU). Every random draw comes from a
``torch.Generator`` seeded with ``seed``; RISE uses the same masks for every image of the batch,
and LIME and KernelSHAP draw each image's samples from a generator of its own, so an image's
result never depends on the rest of the batch. The regressions run in float64 on the CPU; the
maps come back in ``x``'s dtype and device, detached (the registry's output contract).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core import (
    Target,
    as_targets,
    baseline_like,
    check_images,
    check_logits,
    default_chunk_size,
    explaining,
    probabilities,
)
from ..registry import register

__all__ = [
    "rise_masks",
    "rise",
    "superpixels",
    "segment_images",
    "lime_weights",
    "LimeResult",
    "lime_explanation",
    "lime",
    "MAX_EXACT_PLAYERS",
    "shapley_kernel",
    "exact_shapley",
    "ShapleyEstimate",
    "kernel_shap_values",
    "KernelShapResult",
    "kernel_shap_explanation",
    "kernel_shap",
]

Score = Literal["probability", "logit"]
Baseline = float | torch.Tensor | str | None

#: The largest number of players :func:`exact_shapley` and an exact :func:`kernel_shap_values` enumerate.
MAX_EXACT_PLAYERS = 20


# ----------------------------------------------------------------------------- shared checks and scores
def _positive_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _chunk_size(chunk_size: int | None, x: torch.Tensor) -> int:
    """``chunk_size`` if it is a positive int; the default for ``x``'s size and device if it is None."""
    if chunk_size is None:
        return default_chunk_size(x)
    return _positive_int(chunk_size, "chunk_size (images per forward pass, or None for the default)")


def _check_score(score: str) -> None:
    if score not in ("probability", "logit"):
        raise ValueError(f"score must be 'probability' (the target's softmax probability) or 'logit', got {score!r}")


def _target_scores(model: nn.Module, images: torch.Tensor, target: int, score: str) -> torch.Tensor:
    """The target's probability or logit for each of ``images [n, C, H, W]``: ``[n]`` in float64."""
    logits = check_logits(model(images))  # [n, N]; a tuple or a dict: a clear error
    targets = as_targets(target, logits.shape[0], logits.shape[1], device=logits.device)  # range checked
    values = probabilities(model, logits) if score == "probability" else logits   # a ScoreOutput: the score
    return values.gather(1, targets[:, None])[:, 0].double()


def _fill(x: torch.Tensor, baseline: Baseline, segments: torch.Tensor | None = None) -> torch.Tensor:
    """The image that replaces removed pixels, ``[B, C, H, W]`` (see the module docstring)."""
    if isinstance(baseline, str):
        if baseline == "image_mean":
            return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
        if baseline == "segment_mean" and segments is not None:
            fill = torch.empty_like(x)
            for b in range(x.shape[0]):
                ids = segments[b].flatten()  # [H*W]
                count = torch.bincount(ids).to(x.dtype)  # [M]
                sums = torch.zeros(x.shape[1], len(count), dtype=x.dtype, device=x.device)
                sums.index_add_(1, ids, x[b].flatten(1))  # [C, M]
                fill[b] = (sums / count.clamp_min(1))[:, segments[b]]
            return fill
        allowed = "'image_mean', 'segment_mean'" if segments is not None else "'image_mean'"
        raise ValueError(f"baseline must be a number, a tensor or one of {allowed}; got {baseline!r}")
    return baseline_like(x, baseline)


# ----------------------------------------------------------------------------------------------- RISE
def _rise_draws(n: int, grid: int, p: float, seed: int) -> torch.Tensor:
    """``[n, grid * grid + 2]`` uniform numbers: each mask's grid cells, then its two shifts.

    One row per mask, drawn in order, so the first ``m`` of ``n`` masks are the ``m`` masks.
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((n, grid * grid + 2), generator=generator, dtype=torch.float64)


def _rise_block(
    draws: torch.Tensor,
    size: tuple[int, int],
    grid: int,
    p: float,
    dtype: torch.dtype,
    device: torch.device | str | None,
) -> torch.Tensor:
    """The masks ``[k, H, W]`` of ``draws [k, grid * grid + 2]`` (see :func:`rise_masks`)."""
    height, width = size
    cell_h, cell_w = math.ceil(height / grid), math.ceil(width / grid)
    cells = (draws[:, : grid * grid] < p).view(-1, 1, grid, grid).to(device=device, dtype=dtype)
    up = F.interpolate(cells, size=((grid + 1) * cell_h, (grid + 1) * cell_w), mode="bilinear", align_corners=False)[
        :, 0
    ].clamp_(0, 1)  # [k, (g+1) ch, (g+1) cw]
    dy = (draws[:, -2] * cell_h).long().clamp_max(cell_h - 1).to(up.device)  # [k] shifts in [0, cell)
    dx = (draws[:, -1] * cell_w).long().clamp_max(cell_w - 1).to(up.device)
    rows = dy[:, None] + torch.arange(height, device=up.device)  # [k, H]
    cols = dx[:, None] + torch.arange(width, device=up.device)  # [k, W]
    index = torch.arange(len(draws), device=up.device)[:, None, None]
    return up[index, rows[:, :, None], cols[:, None, :]]  # [k, H, W]


def _check_rise(n: int, grid: int, p: float) -> None:
    _positive_int(n, "n_masks")
    _positive_int(grid, "grid")
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 < p < 1:
        raise ValueError(f"p (the probability that a grid cell is kept) must lie strictly between 0 and 1, got {p!r}")


def rise_masks(
    n: int,
    size: int | tuple[int, int],
    grid: int = 7,
    p: float = 0.5,
    seed: int = 0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """RISE's ``n`` random masks ``[n, H, W]`` with values in [0, 1] (Petsiuk et al. 2018, section 3.2).

    Each mask starts as a binary ``grid x grid`` array whose cells are 1 with probability ``p``. It is
    upsampled bilinearly (``F.interpolate``, ``align_corners=False``) to ``(grid + 1) * cell`` pixels a
    side, with ``cell = ceil(H / grid)`` (and likewise for ``W``), and a random ``H x W`` window of it is
    kept, shifted by ``0 .. cell - 1`` pixels in each direction, so the grid's edges fall anywhere in
    the image. This follows the authors' ``generate_masks`` (which upsamples with scikit-image's
    ``resize``, so values near the border differ slightly). ``size`` is ``H`` (square) or ``(H, W)``.
    The draws come from a generator seeded with ``seed``, one row per mask in order, so
    ``rise_masks(n, ...)[:m]`` equals ``rise_masks(m, ...)``: maps for a growing ``n`` are running
    averages over one sequence of masks.
    """
    _check_rise(n, grid, p)
    height, width = size if isinstance(size, (tuple, list)) else (size, size)
    _positive_int(height, "the mask height")
    _positive_int(width, "the mask width")
    return _rise_block(_rise_draws(n, grid, p, seed), (int(height), int(width)), grid, p, dtype, device)


@register(
    "rise",
    title="RISE",
    space="map",
    needs_layer=False,
    family="blackbox",
    signed=False,
    cost="n_masks forwards",
    reference="petsiuk2018rise",
    quick={"n_masks": 4},
)
def rise(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    n_masks: int = 1000,
    grid: int = 7,
    p: float = 0.5,
    chunk_size: int | None = None,
    seed: int = 0,
    score: Score = "probability",
    baseline: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """RISE (Petsiuk et al. 2018): the score-weighted average of random masks, ``[B, H, W]``.

    With the masks ``M_1 .. M_N`` of :func:`rise_masks` (``N = n_masks``, the same masks for every
    image) and ``s_i`` the target's score on the masked image ``x * M_i + (1 - M_i) * baseline``, the
    map is

    ``S = sum_i s_i M_i / (N p)``,

    a Monte Carlo estimate of ``E[s M(u)] / E[M(u)]`` at each pixel ``u``, the expected score when
    ``u`` is kept (the paper's equation 6, with ``E[M(u)] = p``). ``score="probability"`` (the
    default, the paper's) takes the target's softmax probability, ``"logit"`` its logit.
    ``baseline`` is the removed pixels' value: ``0.0`` (black, the paper's ``x * M``), a number or a
    tensor broadcastable to ``x``. The paper used ``N = 4000``
    masks (ResNet-50) and 8000 (VGG-16), ``grid = 7``, ``p = 0.5``; the map converges at the Monte
    Carlo rate, so check it with twice the masks. ``N`` forward passes per image, ``chunk_size`` masked
    images at a time; the sums are accumulated in float64.
    """
    check_images(x)
    _check_rise(n_masks, grid, p)
    _check_score(score)
    chunk = _chunk_size(chunk_size, x)
    batch, _, height, width = x.shape
    targets = as_targets(target, batch)
    fill = baseline_like(x, baseline)
    draws = _rise_draws(n_masks, grid, p, seed)
    saliency = torch.zeros(batch, height, width, dtype=torch.float64, device=x.device)
    with explaining(model), torch.no_grad():
        for start in range(0, n_masks, chunk):
            masks = _rise_block(draws[start : start + chunk], (height, width), grid, p, x.dtype, x.device)
            for b in range(batch):
                masked = x[b] * masks[:, None] + fill[b] * (1 - masks[:, None])  # [k, C, H, W]
                scores = _target_scores(model, masked, int(targets[b]), score)  # [k]
                saliency[b] += torch.einsum("k,khw->hw", scores, masks.double())
    return (saliency / (n_masks * p)).to(x.dtype)


# ----------------------------------------------------------------------------------------- superpixels
def superpixels(
    x: torch.Tensor, n_segments: int = 50, compactness: float = 10.0, *, sigma: float = 0.0
) -> torch.Tensor:
    """SLIC superpixels of each image: ``x [B, C, H, W]`` in [0, 1] -> LongTensor ``[B, H, W]``.

    ``skimage.segmentation.slic(image, n_segments, compactness, sigma=sigma, start_label=0)`` on each
    image (RGB images are clustered in CIELAB, as SLIC's default; a one-channel image in its grey
    values), then the labels renumbered ``0 .. M_b - 1`` in order of first appearance in raster order,
    so ``segments[b].max() + 1`` is image ``b``'s number of superpixels ``M_b``. ``n_segments`` is a
    target: SLIC may return fewer or more, and on small, flat images far fewer (a 16 x 16 image of a
    shape with ``n_segments=4`` can come back as one superpixel; ``compactness=100`` gives a more
    regular grid there). SLIC starts from a regular grid and draws nothing at random, so the result
    needs no seed. Larger ``compactness`` gives squarer superpixels, smaller ones follow colour edges
    more closely (10 suits RGB images, whose CIELAB values span about 0 to 100; grey values in [0, 1]
    want about 0.1).
    """
    from skimage.segmentation import slic

    check_images(x)
    n_segments = _positive_int(n_segments, "n_segments", minimum=2)
    if isinstance(compactness, bool) or not isinstance(compactness, numbers.Real) or compactness <= 0:
        raise ValueError(f"compactness must be a positive number, got {compactness!r}")
    images = x.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()  # [B, H, W, C]
    segments = np.empty(images.shape[:3], dtype=np.int64)
    for b, image in enumerate(images):
        if image.shape[-1] == 1:
            labels = slic(
                image[..., 0],
                n_segments=n_segments,
                compactness=compactness,
                sigma=sigma,
                start_label=0,
                channel_axis=None,
            )
        else:
            labels = slic(
                image,
                n_segments=n_segments,
                compactness=compactness,
                sigma=sigma,
                start_label=0,
                channel_axis=-1,
                convert2lab=image.shape[-1] == 3,
            )
        _, first, inverse = np.unique(labels.ravel(), return_index=True, return_inverse=True)
        order = np.argsort(np.argsort(first))  # label rank by first appearance
        segments[b] = order[inverse].reshape(labels.shape)
    return torch.from_numpy(segments).to(x.device)


def _check_segments(segments: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``segments [B, H, W]`` checked against ``x``; ids must be ``0 .. M_b - 1`` with every id present."""
    if not isinstance(segments, torch.Tensor) or segments.dtype not in (
        torch.int64,
        torch.int32,
        torch.int16,
        torch.uint8,
    ):
        raise TypeError("segments must be an integer tensor [B, H, W] of superpixel ids (see superpixels())")
    if segments.dim() == 2:
        segments = segments.expand(x.shape[0], *segments.shape)
    if tuple(segments.shape) != (x.shape[0], x.shape[2], x.shape[3]):
        raise ValueError(
            f"segments must be [B, H, W] = {[x.shape[0], x.shape[2], x.shape[3]]}, got {list(segments.shape)}"
        )
    segments = segments.to(device=x.device, dtype=torch.long)
    for b in range(len(segments)):
        present = torch.bincount(segments[b].flatten())
        if segments[b].min() < 0 or bool((present == 0).any()):
            raise ValueError(
                f"the segment ids of image {b} must be 0 .. M - 1 with every id present "
                "(renumber them, e.g. with torch.unique(..., return_inverse=True))"
            )
    return segments


def segment_images(image: torch.Tensor, fill: torch.Tensor, segments: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Copies of one image with some superpixels replaced: ``[K, C, H, W]``.

    ``image`` and ``fill`` are ``[C, H, W]``, ``segments [H, W]`` holds ids ``0 .. M - 1`` and ``keep``
    is a bool ``[K, M]``: copy ``k`` shows ``image`` where ``keep[k, segments]`` is true and ``fill``
    elsewhere (LIME's and KernelSHAP's perturbed images, ``keep`` their interpretable inputs ``z``).
    """
    on = keep.to(device=image.device, dtype=torch.bool)[:, segments]  # [K, H, W]
    return torch.where(on[:, None], image, fill)


def _segment_scores(
    model: nn.Module,
    image: torch.Tensor,
    fill: torch.Tensor,
    segments: torch.Tensor,
    keep: torch.Tensor,
    target: int,
    score: str,
    chunk: int,
) -> torch.Tensor:
    """The target's score on each of the ``K`` copies of :func:`segment_images`: ``[K]`` float64."""
    scores = torch.empty(len(keep), dtype=torch.float64, device=image.device)
    for start in range(0, len(keep), chunk):
        images = segment_images(image, fill, segments, keep[start : start + chunk])
        scores[start : start + chunk] = _target_scores(model, images, target, score)
    return scores


def _segments_for(x: torch.Tensor, segments: torch.Tensor | None, n_segments: int, compactness: float) -> torch.Tensor:
    if segments is None:
        return superpixels(x, n_segments, compactness)
    return _check_segments(segments, x)


# ----------------------------------------------------------------------------------------------- LIME
def lime_weights(samples: torch.Tensor, kernel_width: float = 0.25) -> torch.Tensor:
    """LIME's sample weights ``[n]`` for interpretable samples ``z [n, M]`` (bool or 0/1).

    As the ``lime`` package does for images: the cosine distance of ``z`` to the all-ones vector
    (the unperturbed image), ``d = 1 - |z| / sqrt(|z| M) = 1 - sqrt(|z| / M)`` (``|z|`` the number of
    superpixels kept; ``d = 1`` for ``z = 0``, as scikit-learn's ``pairwise_distances`` gives), then
    the exponential kernel ``pi = sqrt(exp(-d^2 / w^2)) = exp(-d^2 / (2 w^2))`` with ``w =
    kernel_width`` (0.25, the package's default for images). Float64.
    """
    if isinstance(kernel_width, bool) or not isinstance(kernel_width, numbers.Real) or kernel_width <= 0:
        raise ValueError(f"kernel_width must be a positive number, got {kernel_width!r}")
    z = samples.to(torch.float64)
    distance = 1 - torch.sqrt(z.sum(1) / z.shape[1])
    return torch.exp(-(distance**2) / (2 * float(kernel_width) ** 2))


def _weighted_ridge(
    z: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, float, float]:
    """Weighted ridge regression with an unpenalised intercept, as scikit-learn's ``Ridge`` with
    ``sample_weight`` (the weights as given, not normalised): coefficients ``[M]``, intercept, weighted
    R^2. All float64 on the CPU."""
    share = weights / weights.sum()
    x_mean, y_mean = share @ z, share @ y  # weighted means
    zc, yc = z - x_mean, y - y_mean
    gram = zc.T @ (weights[:, None] * zc) + alpha * torch.eye(z.shape[1], dtype=z.dtype)
    coefficients = torch.linalg.lstsq(gram, (zc.T @ (weights * yc))[:, None], driver="gelsd").solution[:, 0]
    intercept = float(y_mean - x_mean @ coefficients)
    residual = float(share @ (y - intercept - z @ coefficients) ** 2)
    total = float(share @ yc**2)
    r2 = 1 - residual / total if total > 0 else (1.0 if residual <= 1e-30 else 0.0)
    return coefficients, intercept, r2


@dataclass
class LimeResult:
    """What :func:`lime_explanation` found for each image ``b`` of a batch of ``B``.

    ``coefficients[b] [M_b]`` is the surrogate's weight of each superpixel, ``maps [B, H, W]`` the
    coefficient of each pixel's superpixel; ``intercepts [B]``, ``r2 [B]`` the surrogate's weighted
    R^2 on its own samples (1: the linear surrogate reproduces the scores exactly), ``local_predictions
    [B]`` the surrogate at ``z = 1`` (the unperturbed image) and ``full_scores [B]`` the model's score
    there. ``samples[b] [n, M_b]`` (bool), ``weights[b] [n]`` and ``scores[b] [n]`` are the regression's
    data, for plotting the kernel and the fit. ``segments [B, H, W]`` as used.
    """

    maps: torch.Tensor
    coefficients: list[torch.Tensor]
    intercepts: torch.Tensor
    r2: torch.Tensor
    local_predictions: torch.Tensor
    full_scores: torch.Tensor
    segments: torch.Tensor
    samples: list[torch.Tensor]
    weights: list[torch.Tensor]
    scores: list[torch.Tensor]


def lime_explanation(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    n_segments: int = 50,
    compactness: float = 10.0,
    n_samples: int = 1000,
    kernel_width: float = 0.25,
    alpha: float = 1.0,
    chunk_size: int | None = None,
    seed: int = 0,
    baseline: Baseline = 0.5,
    score: Score = "probability",
    segments: torch.Tensor | None = None,
) -> LimeResult:
    """LIME (Ribeiro et al. 2016) on superpixels, with the surrogate's fit: a :class:`LimeResult`.

    For each image: its superpixels (``segments [B, H, W]``, or ``[H, W]`` for every image, if given,
    else :func:`superpixels` with ``n_segments`` and ``compactness``), ``M`` of them; ``n_samples``
    interpretable samples ``z`` in ``{0, 1}^M``, each superpixel kept with probability 1/2, the first
    sample all ones (the image itself), as the ``lime`` package draws them; the target's score ``y``
    (``score``, see the module docstring) on each perturbed image (switched-off superpixels set to
    ``baseline``); weights ``pi`` by :func:`lime_weights` (``kernel_width``); then the weighted ridge
    regression

    ``min_{beta, b} sum_k pi_k (y_k - b - z_k . beta)^2 + alpha ||beta||^2``

    (the package's ``Ridge(alpha=1)``, intercept unpenalised), solved in closed form in float64. Unlike
    the package, every superpixel enters the surrogate (no feature selection). On a score linear in
    ``z`` the surrogate is exact for ``alpha = 0``, whatever the kernel: ``beta_j = f(with j) -
    f(without j)``. ``n_samples`` forward passes per image.
    """
    check_images(x)
    n_samples = _positive_int(n_samples, "n_samples", minimum=2)
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or alpha < 0:
        raise ValueError(f"alpha (the ridge penalty) must be a number >= 0, got {alpha!r}")
    lime_weights(torch.ones(1, 1), kernel_width)  # checks kernel_width
    _check_score(score)
    chunk = _chunk_size(chunk_size, x)
    batch = x.shape[0]
    targets = as_targets(target, batch)
    x = x.detach()
    segments = _segments_for(x, segments, n_segments, compactness)
    fill = _fill(x, baseline, segments)
    maps = torch.empty(batch, *x.shape[2:], dtype=x.dtype, device=x.device)
    coefficients, samples, weights, scores = [], [], [], []
    intercepts, r2, local, full = (torch.empty(batch, dtype=torch.float64) for _ in range(4))
    with explaining(model), torch.no_grad():
        for b in range(batch):
            m = int(segments[b].max()) + 1
            generator = torch.Generator().manual_seed(seed)
            z = torch.randint(0, 2, (n_samples, m), generator=generator).bool()
            z[0] = True
            y = _segment_scores(model, x[b], fill[b], segments[b], z, int(targets[b]), score, chunk).cpu()
            pi = lime_weights(z, kernel_width)
            beta, intercepts[b], r2[b] = _weighted_ridge(z.double(), y, pi, float(alpha))
            local[b], full[b] = intercepts[b] + beta.sum(), y[0]
            maps[b] = beta.to(device=x.device, dtype=x.dtype)[segments[b]]
            coefficients.append(beta)
            samples.append(z)
            weights.append(pi)
            scores.append(y)
    return LimeResult(maps, coefficients, intercepts, r2, local, full, segments, samples, weights, scores)


@register(
    "lime",
    title="LIME",
    space="map",
    needs_layer=False,
    family="blackbox",
    cost="n_samples forwards (+ SLIC)",
    reference="ribeiro2016why",
    quick={"n_segments": 4, "n_samples": 4},
)
def lime(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    n_segments: int = 50,
    compactness: float = 10.0,
    n_samples: int = 1000,
    kernel_width: float = 0.25,
    alpha: float = 1.0,
    chunk_size: int | None = None,
    seed: int = 0,
    baseline: Baseline = 0.5,
    score: Score = "probability",
    segments: torch.Tensor | None = None,
) -> torch.Tensor:
    """LIME's map ``[B, H, W]``: each pixel gets its superpixel's surrogate coefficient (signed).

    The ``maps`` of the :class:`LimeResult` of :func:`lime_explanation`, which documents the arguments
    and also returns the surrogate's fit (weighted R^2).
    """
    return lime_explanation(
        model,
        x,
        target,
        n_segments=n_segments,
        compactness=compactness,
        n_samples=n_samples,
        kernel_width=kernel_width,
        alpha=alpha,
        chunk_size=chunk_size,
        seed=seed,
        baseline=baseline,
        score=score,
        segments=segments,
    ).maps


# ------------------------------------------------------------------------------------------ KernelSHAP
def shapley_kernel(m: int, sizes: torch.Tensor | int) -> torch.Tensor:
    """The Shapley kernel ``pi(z) = (M - 1) / (C(M, |z|) |z| (M - |z|))`` for coalition sizes ``|z|``.

    Lundberg & Lee (2017), Theorem 2: with these weights (and the constraints at ``|z| = 0`` and
    ``|z| = M``, where the weight is infinite and returned as ``inf``), the weighted linear regression
    of the value function on the coalitions gives the Shapley values. Float64, ``sizes``'s shape.
    """
    m = _positive_int(m, "the number of players M")
    s = torch.as_tensor(sizes, dtype=torch.float64)
    log_comb = math.lgamma(m + 1) - torch.lgamma(s + 1) - torch.lgamma(m - s + 1)
    inner = (s > 0) & (s < m)
    safe = torch.where(inner, s, torch.ones_like(s))
    weight = (m - 1) / (torch.exp(log_comb) * safe * (m - safe))
    return torch.where(inner, weight, torch.full_like(s, math.inf))


def _all_coalitions(m: int) -> torch.Tensor:
    """Every coalition of ``m`` players as bool ``[2^m, m]``: row ``i`` has player ``j`` iff bit ``j`` of ``i``."""
    index = torch.arange(2**m)
    return (index[:, None] >> torch.arange(m)) & 1 == 1


def exact_shapley(value_fn: Callable[[torch.Tensor], torch.Tensor], m: int) -> torch.Tensor:
    """Shapley values by enumeration: ``[M, ...]`` float64 (Shapley 1953).

    ``value_fn`` maps coalitions, a bool tensor ``[K, M]`` (True: the player takes part), to their
    values ``[K]`` (or ``[K, ...]``); it is called once with all ``2^M`` coalitions. Then

    ``phi_j = sum_{S not containing j} |S|! (M - |S| - 1)! / M! * (v(S + j) - v(S))``.

    ``M`` at most :data:`MAX_EXACT_PLAYERS`.
    """
    m = _positive_int(m, "the number of players M")
    if m > MAX_EXACT_PLAYERS:
        raise ValueError(f"exact Shapley values enumerate 2^M coalitions; M = {m} is more than {MAX_EXACT_PLAYERS}")
    coalitions = _all_coalitions(m)
    values = torch.as_tensor(value_fn(coalitions)).to(torch.float64).cpu()
    if values.shape[0] != len(coalitions):
        raise ValueError(
            f"value_fn must return one value per coalition ({len(coalitions)}), got shape {list(values.shape)}"
        )
    sizes = coalitions.sum(1)
    sizes = sizes.double()
    weight = torch.exp(torch.lgamma(sizes + 1) + torch.lgamma(m - sizes) - math.lgamma(m + 1))
    index = torch.arange(2**m)
    phi = []
    for j in range(m):
        without = index[~coalitions[:, j]]  # S not containing j
        gain = values[without | (1 << j)] - values[without]  # v(S + j) - v(S)
        w = weight[without].view(-1, *[1] * (values.dim() - 1))
        phi.append((w * gain).sum(0))
    return torch.stack(phi)


@dataclass
class ShapleyEstimate:
    """What :func:`kernel_shap_values` returns: ``values [M]`` (float64) with
    ``values.sum() == full_value - base_value`` (efficiency), ``base_value = v(no player)``,
    ``full_value = v(all players)``, whether the coalitions were all enumerated (``exact``) and how
    many times the value function was evaluated (``evaluations``, coalitions counted one by one)."""

    values: torch.Tensor
    base_value: float
    full_value: float
    exact: bool
    evaluations: int


def _kernel_coalitions(
    m: int, n_samples: int, exact: bool, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coalitions ``[K, M]`` (no empty or full one) and their regression weights ``[K]`` (sum 1)."""
    if exact:
        coalitions = _all_coalitions(m)[1:-1]  # all but empty and full
        weights = shapley_kernel(m, coalitions.sum(1))
        return coalitions, weights / weights.sum() if len(weights) else weights
    sizes = torch.arange(1, m, dtype=torch.float64)
    size_probability = (m - 1) / (sizes * (m - sizes))  # C(M, s) pi(s): the size law
    pairs = (n_samples + 1) // 2
    drawn = 1 + torch.multinomial(size_probability, pairs, replacement=True, generator=generator)  # [pairs]
    ranks = torch.rand((pairs, m), generator=generator).argsort(1).argsort(1)  # a random order per sample
    half = ranks < drawn[:, None]  # a uniform subset of that size
    coalitions = torch.stack([half, ~half], 1).flatten(0, 1)[:n_samples]  # paired: z, then 1 - z
    return coalitions, torch.full((len(coalitions),), 1.0 / len(coalitions), dtype=torch.float64)


def _efficient_regression(
    coalitions: torch.Tensor, values: torch.Tensor, weights: torch.Tensor, base: float, full: float
) -> torch.Tensor:
    """``argmin_phi sum_k w_k (v_k - base - z_k . phi)^2`` subject to ``sum(phi) = full - base``: ``[M]``.

    Solved through the Lagrangian's linear system ``[[2 Z'WZ, 1], [1', 0]] [phi, lambda] = [2 Z'W(v -
    base), full - base]`` by least squares (LAPACK's gelsd, so a singular system, e.g. a player in no
    sampled coalition, gets the minimum-norm solution instead of an error).
    """
    m = coalitions.shape[1]
    z = coalitions.to(torch.float64)
    system = torch.zeros(m + 1, m + 1, dtype=torch.float64)
    system[:m, :m] = 2 * z.T @ (weights[:, None] * z)
    system[:m, m] = 1
    system[m, :m] = 1
    right = torch.cat([2 * z.T @ (weights * (values - base)), torch.tensor([full - base], dtype=torch.float64)])
    return torch.linalg.lstsq(system, right[:, None], driver="gelsd").solution[:m, 0]


def _use_exact(m: int, n_samples: int, exact: bool | None) -> bool:
    if m == 1:  # one player: no coalition between the empty and the full one
        return True
    if exact is None:
        return m <= MAX_EXACT_PLAYERS and 2**m - 2 <= n_samples
    if exact and m > MAX_EXACT_PLAYERS:
        raise ValueError(f"exact=True enumerates 2^M - 2 coalitions; M = {m} is more than {MAX_EXACT_PLAYERS}")
    return bool(exact)


def kernel_shap_values(
    value_fn: Callable[[torch.Tensor], torch.Tensor],
    m: int,
    *,
    n_samples: int = 1000,
    seed: int = 0,
    exact: bool | None = None,
) -> ShapleyEstimate:
    """KernelSHAP (Lundberg & Lee 2017) for any value function of ``M`` players: a :class:`ShapleyEstimate`.

    ``value_fn`` maps coalitions, bool ``[K, M]``, to values ``[K]``; it is called twice: with the
    empty and the full coalition (``v(0)``, ``v(1)``), then with all the others at once. The Shapley
    values are the solution of the weighted least-squares problem

    ``min_phi sum_z pi(z) (v(z) - v(0) - z . phi)^2  subject to  sum_j phi_j = v(1) - v(0)``

    with the Shapley kernel ``pi`` (:func:`shapley_kernel`); the constraint is the efficiency property
    and carries the kernel's infinite weights at ``|z| = 0`` and ``|z| = M``. Two ways to fill the sum:

    * exactly, all ``2^M - 2`` other coalitions weighted by ``pi``: the solution *is* the Shapley
      values. Chosen when ``exact=True``, or with ``exact=None`` when ``2^M - 2 <= n_samples`` (then
      ``2^M`` evaluations in all, which may be fewer than ``n_samples + 2``);
    * by sampling ``n_samples`` coalitions from the kernel itself, weighted equally: a size ``s`` with
      probability proportional to ``C(M, s) pi(s) = (M - 1) / (s (M - s))``, then a uniformly random
      coalition of that size, each followed by its complement (paired sampling, which cancels the
      estimator's leading error term; Covert & Lee 2021). ``n_samples + 2`` evaluations.

    Draws come from a generator seeded with ``seed``.
    """
    m = _positive_int(m, "the number of players M")
    n_samples = _positive_int(n_samples, "n_samples")
    use_exact = _use_exact(m, n_samples, exact)
    generator = torch.Generator().manual_seed(seed)
    coalitions, weights = _kernel_coalitions(m, n_samples, use_exact, generator)
    ends = torch.stack([torch.zeros(m, dtype=torch.bool), torch.ones(m, dtype=torch.bool)])
    base, full = (float(v) for v in torch.as_tensor(value_fn(ends)).to(torch.float64).cpu())
    if len(coalitions):
        values = torch.as_tensor(value_fn(coalitions)).to(torch.float64).cpu()
    else:  # M = 1: nothing in between
        values = torch.zeros(0, dtype=torch.float64)
    phi = _efficient_regression(coalitions, values, weights, base, full)
    return ShapleyEstimate(phi, base, full, use_exact, 2 + len(coalitions))


@dataclass
class KernelShapResult:
    """What :func:`kernel_shap_explanation` found for each image ``b`` of a batch of ``B``.

    ``values[b] [M_b]`` (float64) estimates each superpixel's Shapley value, ``maps [B, H, W]`` puts
    it on the superpixel's pixels; ``base_values [B]`` is the score of the baseline image,
    ``full_values [B]`` that of the image, and ``values[b].sum() == full_values[b] - base_values[b]``.
    ``exact[b]``: all coalitions enumerated; ``segments [B, H, W]`` as used.
    """

    maps: torch.Tensor
    values: list[torch.Tensor]
    base_values: torch.Tensor
    full_values: torch.Tensor
    exact: list[bool]
    segments: torch.Tensor


def kernel_shap_explanation(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    n_segments: int = 50,
    compactness: float = 10.0,
    n_samples: int = 1000,
    chunk_size: int | None = None,
    seed: int = 0,
    baseline: Baseline = 0.5,
    score: Score = "probability",
    segments: torch.Tensor | None = None,
    exact: bool | None = None,
) -> KernelShapResult:
    """KernelSHAP (Lundberg & Lee 2017) on superpixels: a :class:`KernelShapResult`.

    The players are the superpixels (``segments [B, H, W]``, or ``[H, W]`` for every image, if given,
    else :func:`superpixels` with ``n_segments`` and ``compactness``); a coalition ``z`` in
    ``{0, 1}^M`` is the image with the superpixels outside it set to ``baseline`` (see the module
    docstring), and its value the target's ``score`` there. The
    Shapley values of this game come from :func:`kernel_shap_values` (``n_samples``, ``seed``,
    ``exact``): exact when ``2^M - 2 <= n_samples``, else estimated from kernel-sampled coalitions.
    ``n_samples + 2`` forward passes per image (``2^M`` when enumerated).
    """
    check_images(x)
    n_samples = _positive_int(n_samples, "n_samples")
    _check_score(score)
    chunk = _chunk_size(chunk_size, x)
    batch = x.shape[0]
    targets = as_targets(target, batch)
    x = x.detach()
    segments = _segments_for(x, segments, n_segments, compactness)
    fill = _fill(x, baseline, segments)
    maps = torch.empty(batch, *x.shape[2:], dtype=x.dtype, device=x.device)
    values, exact_used = [], []
    base_values, full_values = torch.empty(batch, dtype=torch.float64), torch.empty(batch, dtype=torch.float64)
    with explaining(model), torch.no_grad():
        for b in range(batch):
            m = int(segments[b].max()) + 1

            def value_fn(keep: torch.Tensor, b: int = b) -> torch.Tensor:
                return _segment_scores(model, x[b], fill[b], segments[b], keep, int(targets[b]), score, chunk)

            estimate = kernel_shap_values(value_fn, m, n_samples=n_samples, seed=seed, exact=exact)
            maps[b] = estimate.values.to(device=x.device, dtype=x.dtype)[segments[b]]
            values.append(estimate.values)
            exact_used.append(estimate.exact)
            base_values[b], full_values[b] = estimate.base_value, estimate.full_value
    return KernelShapResult(maps, values, base_values, full_values, exact_used, segments)


@register(
    "kernel_shap",
    title="KernelSHAP",
    space="map",
    needs_layer=False,
    family="blackbox",
    cost="n_samples + 2 forwards (2^M if all coalitions fit)",
    reference="lundberg2017unified",
    quick={"n_segments": 4, "n_samples": 4},
)
def kernel_shap(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    n_segments: int = 50,
    compactness: float = 10.0,
    n_samples: int = 1000,
    chunk_size: int | None = None,
    seed: int = 0,
    baseline: Baseline = 0.5,
    score: Score = "probability",
    segments: torch.Tensor | None = None,
    exact: bool | None = None,
) -> torch.Tensor:
    """KernelSHAP's map ``[B, H, W]``: each pixel gets its superpixel's Shapley value (signed).

    The ``maps`` of the :class:`KernelShapResult` of :func:`kernel_shap_explanation`, which documents
    the arguments. Summed over superpixels (one value each, not over pixels), a map gives
    ``f(x) - f(baseline)``.
    """
    return kernel_shap_explanation(
        model,
        x,
        target,
        n_segments=n_segments,
        compactness=compactness,
        n_samples=n_samples,
        chunk_size=chunk_size,
        seed=seed,
        baseline=baseline,
        score=score,
        segments=segments,
        exact=exact,
    ).maps
