"""Attribution by perturbing the input: cover part of the image and watch the score.

:func:`occlusion` (Zeiler & Fergus 2014) slides a window of a constant colour over the image and
records how much the target score drops; a pixel's attribution is the average drop over all window
positions that cover it. It needs no gradient, only forward passes (one per window position), which
run in equal chunks of at most ``chunk_size`` occluded images (by default
:func:`~xai_helpers.core.default_chunk_size`).
"""
from __future__ import annotations

import torch
from torch import nn

from ..core import (
    Target,
    as_targets,
    check_chunk_size,
    check_images,
    check_logits,
    equal_chunks,
    explaining,
    rescale_maps,
)
from ..registry import register

__all__ = ["window_positions", "occlusion"]


def window_positions(size: int, window: int, stride: int) -> list[int]:
    """Start offsets ``0, stride, 2*stride, ...`` of a window along one side, plus ``size - window``
    if the strides stop short, so every pixel is covered by at least one window (``stride <= window``)."""
    if not 1 <= window <= size:
        raise ValueError(f"window must be between 1 and the image side {size}, got {window}")
    if not 1 <= stride <= window:
        raise ValueError(f"stride must lie between 1 and the window {window} (else pixels go uncovered), got {stride}")
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


@register("occlusion", title="occlusion", space="map", needs_layer=False, family="perturbation",
          cost="P + 1 forwards (P window positions)", reference="zeiler2014visualizing",
          refuses=("rescale",), quick={"window": 32, "stride": 32})
def occlusion(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    window: int = 16,
    stride: int = 8,
    baseline: float = 0.5,
    chunk_size: int | None = None,
    rescale: bool = False,
) -> torch.Tensor:
    """Occlusion map ``[B, H, W]``: each pixel's average drop of the target logit over the windows covering it.

    ``x [B, 3, H, W]`` in [0, 1]; ``target`` an int, B ints or a LongTensor ``[B]``. A ``window x window``
    square set to ``baseline`` (0.5, mid-grey, by default) is placed at the offsets of
    :func:`window_positions` in both directions: ``P`` positions, so ``P + 1`` forward passes per image.
    The map is signed (a negative value: covering the pixel *raised* the score); ``rescale`` min-max
    scales each map to [0, 1] (for direct calls: the registry's contract returns the unscaled map).
    The occluded images go through the model in equal chunks of at most ``chunk_size``.
    """
    check_images(x)
    chunk_size = check_chunk_size(chunk_size, x)
    height, width = x.shape[-2:]
    rows, cols = window_positions(height, window, stride), window_positions(width, window, stride)
    covered = torch.zeros(len(rows) * len(cols), height, width, dtype=torch.bool, device=x.device)  # [P, H, W]
    for i, (r, c) in enumerate((r, c) for r in rows for c in cols):
        covered[i, r : r + window, c : c + window] = True
    counts = covered.sum(0).to(x.dtype)  # [H, W] windows covering each pixel (>= 1)
    maps = torch.empty(x.shape[0], height, width, dtype=x.dtype, device=x.device)
    with explaining(model), torch.no_grad():
        logits = check_logits(model(x))  # [B, N]: a tuple, a dict or 1-D scores get a clear error
        targets = as_targets(target, x.shape[0], logits.shape[1], device=x.device)
        for b in range(x.shape[0]):
            clean = logits[b, targets[b]]
            drops = torch.empty(len(covered), dtype=x.dtype, device=x.device)  # [P]
            for chunk in equal_chunks(torch.arange(len(covered), device=x.device), chunk_size):
                hidden = covered[chunk, None]                                # [n, 1, H, W]
                occluded = torch.where(hidden, torch.as_tensor(baseline, dtype=x.dtype), x[b])
                drops[chunk] = clean - model(occluded)[:, targets[b]]
            maps[b] = torch.einsum("p,phw->hw", drops, covered.to(x.dtype)) / counts
    return rescale_maps(maps) if rescale else maps
