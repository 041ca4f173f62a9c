"""Dataset examples: the real image patches that excite a channel most.

A feature visualisation shows what a channel *could* respond to; the patches of real photos that
excite it most show what it *does* respond to in practice. We cut overlapping square patches from
the photos bundled with :mod:`xai_helpers.data`, run them all through the network once, and rank
them by each channel's mean activation (the same quantity as the ``channel`` objective).
Each patch's source photo is ``index // patches_per_photo`` (all photos give the same number).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..data import SAMPLE_IMAGES, sample_image
from .render import activations

__all__ = ["photo_patches", "patch_scores", "top_patches"]


def photo_patches(names: Sequence[str] | None = None, *, image_size: int = 224, patch: int = 96,
                  stride: int = 32) -> torch.Tensor:
    """Overlapping ``patch x patch`` windows, ``stride`` apart, from bundled photos resized to
    ``image_size``: ``[N, 3, patch, patch]`` in [0, 1]. ``names`` defaults to every bundled photo."""
    names = list(SAMPLE_IMAGES) if names is None else list(names)
    if patch > image_size:
        raise ValueError(f"patch ({patch}) must not be larger than image_size ({image_size})")
    out = []
    for name in names:
        image = sample_image(name, size=image_size)[0]  # [3, S, S]
        windows = image.unfold(1, patch, stride).unfold(2, patch, stride)  # [3, ny, nx, p, p]
        out.append(windows.permute(1, 2, 0, 3, 4).reshape(-1, 3, patch, patch))
    return torch.cat(out).contiguous()


@torch.no_grad()
def patch_scores(model: nn.Module, patches: torch.Tensor, layers: Sequence[str],
                 chunk_size: int = 128) -> dict[str, torch.Tensor]:
    """Mean activation of every channel of each of ``layers`` for every patch: ``{layer: [N, C]}``.

    One forward pass over the patches (``chunk_size`` at a time) serves all the layers, and it stops
    at the deepest of them.
    """
    chunks = [activations(model, chunk, layers) for chunk in patches.split(chunk_size)]
    return {name: torch.cat([acts[name].mean((2, 3)) for acts in chunks]) for name in layers}


def top_patches(scores: torch.Tensor, channels: Sequence[int], patches: torch.Tensor,
                k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` patches with the highest score for each of ``channels``.

    ``scores [N, C]`` comes from :func:`patch_scores`. Returns the patches
    ``[len(channels), k, 3, p, p]`` and their scores ``[len(channels), k]``.
    """
    channels = list(channels)
    bad = [c for c in channels if not 0 <= c < scores.shape[1]]
    if bad:
        raise ValueError(f"channels {bad} are out of range: the layer has {scores.shape[1]} channels")
    values, index = scores[:, channels].topk(k, dim=0)  # [k, len(channels)]
    return patches[index.T], values.T
