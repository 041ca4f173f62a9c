"""Display helpers: every method's output as a heatmap in [0, 1], and pixel-space attributions
``[B, C, H, W]`` as one value per pixel or as an RGB image."""
from __future__ import annotations

import torch

from .core import normalize_maps

__all__ = ["to_heatmap", "reduce_channels", "gradient_image"]


def to_heatmap(attributions: torch.Tensor) -> torch.Tensor:
    """The one post-processing of the output contract: any method's result -> ``[B, H, W]`` in [0, 1].

    Input-space attributions ``[B, C, H, W]`` become ``max_c |a_c|`` per pixel (the sign dropped, as
    in the papers' figures); maps ``[B, H, W]`` keep their positive part (the evidence *for* the
    class, as a CAM's ReLU does). Each map is then min-max scaled per image; a map that is zero
    everywhere stays zero.
    """
    if attributions.dim() == 4:
        return reduce_channels(attributions, "max", normalize=True)
    if attributions.dim() == 3:
        return normalize_maps(attributions.detach().clamp_min(0))
    raise ValueError(f"attributions must be [B, C, H, W] or [B, H, W], got shape {list(attributions.shape)}")

def reduce_channels(attributions: torch.Tensor, how: str = "max", normalize: bool = True) -> torch.Tensor:
    """One value per pixel from ``[B, C, H, W]`` attributions: ``[B, H, W]``.

    ``how="max"`` takes ``max_c |a_c|`` (Simonyan et al.), ``"sum"`` takes ``sum_c |a_c|``, ``"l2"``
    the Euclidean norm over channels. With ``normalize`` each map is min-max scaled to [0, 1].
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
    return normalize_maps(maps) if normalize else maps


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
