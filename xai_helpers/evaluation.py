"""Measuring whether an explanation is right.

Faithfulness to the model, by perturbing the image in the order a map gives (Petsiuk et al. 2018):

* :func:`deletion_curve` -- remove the most important pixels first (replace them by a baseline);
  a faithful map makes the target's probability fall fast: a *low* area under the curve is good;
* :func:`insertion_curve` -- start from the baseline and put the most important pixels back first;
  a *high* area is good. Both call :func:`perturbation_curve` and return a :class:`Curve` with its
  :attr:`Curve.auc`.

Localisation against exact object masks (the synthetic data set has them):

* :func:`energy_in_mask` -- the share of a map's mass that falls inside the object mask (the
  "energy-based pointing game");
* :func:`pointing_game` -- a hit when the map's maximum falls inside the mask (optionally within a
  tolerance of it).

Unless told otherwise (``chunk_size``), the curves send their perturbed images through the model in
chunks of :func:`~xai_helpers.core.default_chunk_size`: small on a CPU, where a large batch costs
more per image.

Stability under model randomisation: :func:`map_similarity` (Spearman rank correlation and SSIM from
:mod:`xai_helpers.sanity`). Cost is counted in passes by :mod:`xai_helpers.cost`; the speed
benchmarks in the repository's ``benchmarks/`` folder time it with ``torch.utils.benchmark``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .core import Target, as_targets, check_chunk_size, check_images, equal_chunks, explaining

__all__ = [
    "energy_in_mask",
    "pointing_game",
    "Curve",
    "baseline_image",
    "perturbation_order",
    "perturbation_curve",
    "deletion_curve",
    "insertion_curve",
    "deletion_and_insertion",
    "OutputOf",
    "map_similarity",
]


def _check_maps_and_masks(maps: torch.Tensor, masks: torch.Tensor) -> None:
    if maps.dim() != 3 or masks.dim() != 3:
        raise ValueError(f"maps and masks must be [B, H, W], got {list(maps.shape)} and {list(masks.shape)}")
    if maps.shape != masks.shape:
        raise ValueError(
            f"maps {list(maps.shape)} and masks {list(masks.shape)} differ in shape; "
            "upsample the maps to the image size"
        )


def energy_in_mask(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``sum(map * mask) / sum(map)`` per image, for non-negative ``maps [B, H, W]`` and bool ``masks``.

    1 means all of the map's mass lies on the object. A map that is zero everywhere scores 0.
    """
    _check_maps_and_masks(maps, masks)
    if (maps < 0).any():
        raise ValueError("energy_in_mask needs non-negative maps; apply a ReLU or take absolute values first")
    inside = (maps * masks.to(maps.dtype)).flatten(1).sum(1)
    total = maps.flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-12), torch.zeros_like(total))


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """Bool ``[B]``: does each map's maximum fall inside its mask (grown by ``tolerance`` pixels)?

    The mask is grown with a square ``(2 * tolerance + 1)``-pixel window. A map without a unique
    maximum points at its first maximum in raster order.
    """
    _check_maps_and_masks(maps, masks)
    if tolerance < 0:
        raise ValueError(f"tolerance is a number of pixels >= 0, got {tolerance}")
    grown = masks.float()[:, None]
    if tolerance:
        grown = F.max_pool2d(grown, 2 * tolerance + 1, stride=1, padding=tolerance)
    peak = maps.flatten(1).argmax(1)
    return grown.flatten(1).gather(1, peak[:, None])[:, 0] > 0


# ----------------------------------------------------------------------------- deletion and insertion


@dataclass
class Curve:
    """A deletion or insertion curve: ``scores [B, S+1]`` after perturbing ``fractions [S+1]`` of the pixels."""

    fractions: torch.Tensor
    scores: torch.Tensor

    @property
    def auc(self) -> torch.Tensor:
        """Area under each curve ``[B]`` by the trapezoid rule over the fraction of pixels (0 to 1)."""
        return torch.trapezoid(self.scores, self.fractions, dim=-1)


def baseline_image(x: torch.Tensor, baseline: str | float | torch.Tensor = "blur", sigma: float = 5.0) -> torch.Tensor:
    """What a removed pixel becomes: ``"blur"`` (the image under a Gaussian blur of ``sigma`` pixels),
    a constant (``0.0`` black, ``0.5`` grey) or a tensor broadcastable to ``x [B, 3, H, W]``."""
    if isinstance(baseline, str):
        if baseline != "blur":
            raise ValueError(f"baseline must be 'blur', a number or a tensor, got {baseline!r}")
        from torchvision.transforms.functional import gaussian_blur

        kernel = 2 * min(math.ceil(3 * sigma), min(x.shape[-2:]) - 1) + 1  # reflection padding < image side
        return gaussian_blur(x, [kernel, kernel], [sigma, sigma])
    if isinstance(baseline, torch.Tensor):
        return baseline.to(x).expand_as(x)
    return torch.full_like(x, float(baseline))


def perturbation_order(maps: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Rank ``[B, H*W]`` of each pixel, 0 for the most important. Ties are broken by a seeded random
    permutation, so flat regions of a map are not visited in raster order (top rows first)."""
    flat = maps.flatten(1).float()
    shuffle = torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(seed)).to(maps.device)
    order = shuffle[flat[:, shuffle].argsort(dim=1, descending=True, stable=True)]  # [B, N] pixel indices
    return torch.empty_like(order).scatter_(1, order, torch.arange(flat.shape[1], device=maps.device).expand_as(order))


def _pixels_per_step(step: int | float, n_pixels: int) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, float)):
        raise TypeError(f"step is a number of pixels (int) or a fraction of the image (float), got {step!r}")
    if isinstance(step, float):
        if not 0 < step <= 1:
            raise ValueError(f"a fractional step must lie in (0, 1], got {step}")
        return max(1, round(step * n_pixels))
    if step < 1:
        raise ValueError(f"step must be at least 1 pixel, got {step}")
    return step


def _curves(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    target: Target,
    kinds: tuple[str, ...],
    *,
    step: int | float = 1 / 16,
    baseline: str | float | torch.Tensor = "blur",
    chunk_size: int | None = None,
    score: str = "probability",
    seed: int = 0,
    logits: torch.Tensor | None = None,
) -> list[Curve]:
    """The curves of ``kinds`` for one ordering, each distinct perturbed image sent through the model once.

    ``logits [B, N]``, if given, are the model's output for ``x`` itself (e.g. from the explanation's
    own forward pass, see :class:`OutputOf`): the unperturbed image is then not sent through it again.
    """
    check_images(x)
    if any(kind not in ("deletion", "insertion") for kind in kinds):
        raise ValueError(f"kind must be 'deletion' or 'insertion', got {kinds!r}")
    if maps.shape != (x.shape[0], *x.shape[-2:]):
        raise ValueError(f"maps must be [B, H, W] = {[x.shape[0], *x.shape[-2:]]}, got {list(maps.shape)}")
    if score not in ("probability", "logit"):
        raise ValueError(f"score must be 'probability' or 'logit', got {score!r}")
    chunk_size = check_chunk_size(chunk_size, x)
    if logits is not None and (logits.dim() != 2 or logits.shape[0] != x.shape[0]):
        raise ValueError(
            f"logits must be the model's output for x, [B, N] with B = {x.shape[0]}, got {list(logits.shape)}")
    n_pixels = maps[0].numel()
    per_step = _pixels_per_step(step, n_pixels)
    counts = torch.arange(0, n_pixels + per_step, per_step, device=x.device).clamp_max(n_pixels).unique()  # [S+1]
    last = len(counts) - 1
    rank = perturbation_order(maps, seed).view_as(maps)         # [B, H, W]
    base = baseline_image(x, baseline)
    # A point is (kind, s): insertion (1) or deletion (0) after switching counts[s] pixels. With both
    # kinds, deletion's s = 0 (the image itself) and s = last (the baseline) also serve as insertion's
    # last and first points, so 2 S images per photo go through the model instead of 2 (S + 1).
    both = len(kinds) == 2
    unperturbed = {("deletion", 0), ("insertion", last)}  # the image itself: known if logits are given
    points = [(int(k == "insertion"), s) for k in kinds for s in range(last + 1)
              if not (both and k == "insertion" and s in (0, last))
              and not (logits is not None and (k, s) in unperturbed)]
    spec = torch.tensor(points, device=x.device)                                 # [P, 2]
    row_of = torch.tensor([kinds.index(k) if k in kinds else 0 for k in ("deletion", "insertion")], device=x.device)
    jobs = torch.cartesian_prod(torch.arange(x.shape[0], device=x.device), torch.arange(len(points), device=x.device))
    scores = torch.empty(len(kinds), x.shape[0], last + 1, dtype=x.dtype, device=x.device)

    def score_of(out: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return (out.softmax(1) if score == "probability" else out).gather(1, targets[rows, None])[:, 0]

    with explaining(model), torch.inference_mode():
        targets = as_targets(target, x.shape[0], device=x.device)
        if logits is not None:
            clean = score_of(logits.detach().to(x.device), torch.arange(x.shape[0], device=x.device)).to(x.dtype)
            for k, kind in enumerate(kinds):
                scores[k, :, 0 if kind == "deletion" else last] = clean
        for chunk in equal_chunks(jobs, chunk_size):      # 39 jobs in chunks of 32 as 20 + 19
            b, (insertion, s) = chunk[:, 0], spec[chunk[:, 1]].unbind(1)
            switched = (rank[b] < counts[s, None, None])[:, None]                  # [n, 1, H, W]
            # Deletion switches x to the baseline, insertion the baseline to x.
            ins = insertion.bool()[:, None, None, None]
            start, end = torch.where(ins, base[b], x[b]), torch.where(ins, x[b], base[b])
            values = score_of(model(torch.where(switched, end, start)), b)
            scores[row_of[insertion], b, s] = values
            if both:                          # deletion's end points are insertion's, in reverse
                shared = (insertion == 0) & ((s == 0) | (s == last))
                scores[row_of[1], b[shared], last - s[shared]] = values[shared]
    fractions = counts.to(x.dtype) / n_pixels
    return [Curve(fractions, scores[k]) for k in range(len(kinds))]


def perturbation_curve(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    target: Target,
    *,
    kind: str = "deletion",
    step: int | float = 1 / 16,
    baseline: str | float | torch.Tensor = "blur",
    chunk_size: int | None = None,
    score: str = "probability",
    seed: int = 0,
    logits: torch.Tensor | None = None,
) -> Curve:
    """A deletion or insertion curve (Petsiuk et al. 2018) of ``x [B, 3, H, W]`` ordered by ``maps [B, H, W]``.

    ``kind="deletion"`` replaces the pixels by the baseline, most important first (a low
    :attr:`Curve.auc` is good); ``kind="insertion"`` starts from the baseline and restores the pixels,
    most important first (a high AUC is good). Only the order of the map's values matters (see
    :func:`perturbation_order`). ``step`` is a number of pixels per step (int) or a fraction of the
    image (float; the default 1/16 gives 16 steps, 17 points). ``baseline`` is ``"blur"``, a constant
    or a tensor (:func:`baseline_image`). The ``B * (steps + 1)`` perturbed images run in equal
    chunks of at most ``chunk_size`` (by default :func:`~xai_helpers.core.default_chunk_size`);
    ``score`` is the target's softmax ``"probability"`` or its
    ``"logit"``. ``logits [B, N]``, the model's output for ``x`` if the caller has it
    (:class:`OutputOf`), spare one pass.
    """
    if kind not in ("deletion", "insertion"):
        raise ValueError(f"kind must be 'deletion' or 'insertion', got {kind!r}")
    return _curves(model, x, maps, target, (kind,), step=step, baseline=baseline, chunk_size=chunk_size,
                   score=score, seed=seed, logits=logits)[0]


def deletion_curve(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, target: Target, **options: Any) -> Curve:
    """:func:`perturbation_curve` with ``kind="deletion"``: remove the most important pixels first (low AUC is good)."""
    return perturbation_curve(model, x, maps, target, kind="deletion", **options)


def insertion_curve(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, target: Target, **options: Any) -> Curve:
    """:func:`perturbation_curve` with ``kind="insertion"``: restore the most important pixels first
    (high AUC is good)."""
    return perturbation_curve(model, x, maps, target, kind="insertion", **options)


def deletion_and_insertion(
    model: nn.Module, x: torch.Tensor, maps: torch.Tensor, target: Target, **options: Any
) -> tuple[Curve, Curve]:
    """``(deletion_curve(...), insertion_curve(...))`` with the same ``options``, computed together.

    The two curves share two images: the unperturbed image (deletion's first point, insertion's
    last) and the baseline (deletion's last, insertion's first). Each goes through the model once,
    so the pair costs ``2 S`` forward passes per image instead of ``2 (S + 1)``, and ``2 S - 1``
    with ``logits=`` (the model's output for ``x``, e.g. recorded by :class:`OutputOf` while the
    map was computed).
    """
    deletion, insertion = _curves(model, x, maps, target, ("deletion", "insertion"), **options)
    return deletion, insertion


class OutputOf:
    """Records what ``model`` returns the first time it is called on ``x`` (equal values, same shape).

    Explaining ``x`` usually runs the model on ``x`` once; the curves need that output too::

        with OutputOf(model, x) as seen:
            maps = registry.attribute("grad_cam", model, x, target, layer=layer)
        deletion, insertion = deletion_and_insertion(model, x, maps, target, logits=seen.logits)

    ``seen.logits [B, N]`` is detached, and ``None`` if no call received ``x`` itself (Integrated
    Gradients, say, runs the model on points of a path only); the curves then run it as usual. The
    hook is removed on leaving the block, also after an exception.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor):
        self.model, self.x = model, x
        self.logits: torch.Tensor | None = None
        self._handle: Any = None

    def _record(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self.logits is None and args and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor):
            seen = args[0]
            if seen.shape == self.x.shape and torch.equal(seen.detach(), self.x.detach()):
                self.logits = output.detach()

    def __enter__(self) -> OutputOf:
        self._handle = self.model.register_forward_hook(self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


# ----------------------------------------------------------------------------- stability


def map_similarity(before: torch.Tensor, after: torch.Tensor) -> dict[str, torch.Tensor]:
    """Spearman rank correlation and SSIM ``[B]`` between maps ``[B, H, W]`` of the trained and a
    randomised model (the sanity check of Adebayo et al., as a number: high means the map ignores
    the weights). The two measures come from :mod:`xai_helpers.sanity`."""
    from .sanity import spearman_rank_correlation, ssim

    return {"spearman": spearman_rank_correlation(before, after), "ssim": ssim(before, after)}
