"""Measuring whether an explanation is right.

Localisation against exact object masks (the synthetic data set has them):

* :func:`energy_in_mask` -- the share of a map's mass that falls inside the object mask (the
  "energy-based pointing game");
* :func:`pointing_game` -- a hit when the map's maximum falls inside the mask (optionally within a
  tolerance of it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["energy_in_mask", "pointing_game"]


def _check_maps_and_masks(maps: torch.Tensor, masks: torch.Tensor) -> None:
    if maps.dim() != 3 or masks.dim() != 3:
        raise ValueError(f"maps and masks must be [B, H, W], got {list(maps.shape)} and {list(masks.shape)}")
    if maps.shape != masks.shape:
        raise ValueError(
            f"maps {list(maps.shape)} and masks {list(masks.shape)} differ in shape; upsample the maps to the image size"
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
    """Bool ``[B]``: does each map's maximum fall inside its mask (grown by ``tolerance`` pixels)?"""
    _check_maps_and_masks(maps, masks)
    if tolerance < 0:
        raise ValueError(f"tolerance is a number of pixels >= 0, got {tolerance}")
    grown = masks.float()[:, None]
    if tolerance:
        grown = F.max_pool2d(grown, 2 * tolerance + 1, stride=1, padding=tolerance)
    peak = maps.flatten(1).argmax(1)
    return grown.flatten(1).gather(1, peak[:, None])[:, 0] > 0
