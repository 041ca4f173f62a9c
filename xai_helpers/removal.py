"""Remove the pixels a map ranks first, fill them in, and measure what the removal itself gives away.

The evaluation of Hooker et al. (ROAR, NeurIPS 2019) and Rong et al. (ROAD, ICML 2022):

* :func:`top_fraction_masks` -- the pixels a map ranks in its top fraction, ties broken at random;
* :func:`fill_with_mean` -- ROAR's fill: each removed pixel becomes the data set's mean colour;
* :func:`noisy_linear_imputation` -- ROAD's fill: each removed pixel becomes the weighted mean of its
  neighbours (a linear system, solved here by iteration), plus a little noise, so that the *shape*
  of the removed region is hard to see;
* :func:`remove_and_retrain` -- ROAR for one map and one fraction: retrain a fresh model on the
  filled training images, and train another on the removal masks alone.

Retraining on the filled images measures whether the removed pixels carried the evidence (ROAR);
training a classifier on the masks alone measures how much the mask leaks the class (ROAD's point).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .evaluation import perturbation_order
from .training import predict, train_classifier

__all__ = [
    "top_fraction_masks",
    "fill_with_mean",
    "noisy_linear_imputation",
    "NEIGHBOUR_WEIGHTS",
    "Retrained",
    "remove_and_retrain",
]

#: ROAD's neighbourhood: weight 1/6 for the four direct neighbours and 1/12 for the four diagonal ones.
NEIGHBOUR_WEIGHTS = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])


def top_fraction_masks(maps: torch.Tensor, fraction: float, *, seed: int = 0) -> torch.Tensor:
    """``[B, H, W]`` bool, True on the ``round(fraction * H * W)`` pixels each map ranks highest.

    Ties (a flat map, or a constant one for random removal) are broken by a seeded permutation, as in
    :func:`~xai_helpers.evaluation.perturbation_order`.
    """
    if maps.dim() != 3:
        raise ValueError(
            f"maps must be [B, H, W] (reduce input-space attributions over channels first), got {list(maps.shape)}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction is a share of the pixels in [0, 1], got {fraction}")
    count = round(fraction * maps[0].numel())
    return (perturbation_order(maps, seed) < count).view_as(maps)


def fill_with_mean(images: torch.Tensor, masks: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
    """``images [B, C, H, W]`` with the pixels of ``masks [B, H, W]`` set to ``mean [C]`` (default: the
    batch's mean colour), as ROAR does."""
    if masks.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(f"masks must be [B, H, W] = {[images.shape[0], *images.shape[-2:]]}, got {list(masks.shape)}")
    colour = images.mean(dim=(0, 2, 3)) if mean is None else mean.to(images)
    return torch.where(masks[:, None], colour.view(1, -1, 1, 1), images)


def noisy_linear_imputation(
    images: torch.Tensor,
    masks: torch.Tensor,
    *,
    noise: float = 0.01,
    iterations: int = 400,
    tolerance: float = 1e-5,
    seed: int = 0,
) -> torch.Tensor:
    """ROAD's fill: each removed pixel ``i`` takes the value that solves ``v_i = sum_j w_ij v_j``.

    ``w`` are :data:`NEIGHBOUR_WEIGHTS` over the 8 neighbours ``j`` inside the image (renormalised at
    the border), kept pixels are fixed, and the removed ones are solved for by Jacobi iteration until
    no value moves by more than ``tolerance`` (or ``iterations`` sweeps). Gaussian noise of std
    ``noise`` is then added to the removed pixels only. A linear ramp is filled exactly away from the
    border: the weights are symmetric, so the neighbours' mean of a linear function is its centre value.

    ``images [B, C, H, W]``, ``masks [B, H, W]`` bool (True = removed) -> ``[B, C, H, W]``.
    """
    if masks.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(f"masks must be [B, H, W] = {[images.shape[0], *images.shape[-2:]]}, got {list(masks.shape)}")
    if noise < 0 or iterations < 1:
        raise ValueError(f"noise must be >= 0 and iterations >= 1, got noise={noise}, iterations={iterations}")
    c = images.shape[1]
    kernel = NEIGHBOUR_WEIGHTS.to(images).expand(c, 1, 3, 3)
    # The weight that falls inside the image, per pixel: 1 in the interior, less at the border.
    total = F.conv2d(torch.ones_like(images[:1, :1]), NEIGHBOUR_WEIGHTS.to(images)[None, None], padding=1)
    removed = masks[:, None].expand_as(images)
    kept_mean = (images * ~removed).sum((2, 3), keepdim=True) / (~removed).sum((2, 3), keepdim=True).clamp_min(1)
    values = torch.where(removed, kept_mean, images)
    for _ in range(iterations):
        mean = F.conv2d(values, kernel, padding=1, groups=c) / total
        update = torch.where(removed, mean, values)
        change = (update - values).abs().max()
        values = update
        if change <= tolerance:
            break
    gen = torch.Generator().manual_seed(seed)
    jitter = noise * torch.randn(images.shape, generator=gen).to(images)
    return torch.where(removed, values + jitter, images)


@dataclass
class Retrained:
    """What :func:`remove_and_retrain` measured, per test image (``[N]`` bool, True where correct).

    ``retrained``: a fresh model trained and tested on the filled images (ROAR). ``mask_only``: a fresh
    one-channel model trained and tested on the removal masks alone (what the mask leaks).
    """

    retrained: torch.Tensor
    mask_only: torch.Tensor


def remove_and_retrain(
    new_model: Callable[[int], nn.Module],
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    train_maps: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    test_maps: torch.Tensor,
    fraction: float,
    *,
    mask_train_size: int | None = None,
    seed: int = 0,
    **train_options: Any,
) -> Retrained:
    """ROAR (Hooker et al. 2019) for one ranking: remove the top ``fraction`` of pixels, fill, retrain.

    ``new_model(in_channels)`` builds an untrained model; ``*_images [N, C, H, W]``, ``*_labels [N]``,
    ``*_maps [N, H, W]`` (larger = removed first). The removed pixels become the training set's mean
    colour (:func:`fill_with_mean`); one model is trained on the filled training images and scored
    on the filled test images, another on the masks alone (the first ``mask_train_size`` of them,
    default all). Both train with :func:`~xai_helpers.training.train_classifier` (``seed`` and
    ``train_options``), under the same seed, so two rankings differ only in what they remove.
    """
    train_masks = top_fraction_masks(train_maps, fraction, seed=seed)
    test_masks = top_fraction_masks(test_maps, fraction, seed=seed)
    mean = train_images.mean(dim=(0, 2, 3))
    retrained = new_model(train_images.shape[1])
    train_classifier(retrained, fill_with_mean(train_images, train_masks, mean), train_labels, seed=seed,
                     **train_options)
    k = len(train_labels) if mask_train_size is None else mask_train_size
    mask_model = new_model(1)
    train_classifier(mask_model, train_masks[:k, None].to(train_images.dtype), train_labels[:k], seed=seed,
                     **train_options)
    return Retrained(
        retrained=predict(retrained, fill_with_mean(test_images, test_masks, mean)) == test_labels,
        mask_only=predict(mask_model, test_masks[:, None].to(test_images.dtype)) == test_labels,
    )
