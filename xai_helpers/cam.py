"""Class activation maps: Grad-CAM and its family.

Every CAM method has the same skeleton: run the model, record the activations ``A`` of one layer
and the gradients ``G`` of the target score with respect to them, combine ``A`` and ``G`` into a
coarse map, then post-process it (ReLU, upsampling, normalisation). :func:`activations_and_gradients`
does the shared work; a CAM variant only says how it combines ``A`` and ``G``.
"""
from __future__ import annotations

import torch
from torch import nn

from .core import (
    Target,
    capture_activation,
    check_images,
    explaining,
    postprocess_maps,
    select_scores,
)

__all__ = ["activations_and_gradients", "grad_cam", "gradient_cam"]


def activations_and_gradients(
    model: nn.Module, x: torch.Tensor, target: Target, layer: nn.Module | str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Activations ``A [B, K, h, w]`` of ``layer``, gradients ``dy^c/dA [B, K, h, w]``, logits ``[B, N]``.

    The forward pass runs without autograd up to ``layer``; the backward pass stops there, so no
    parameter gets a ``.grad``. The model's mode and flags are restored, and the hook removed, even
    if the model raises.
    """
    check_images(x)
    with explaining(model), capture_activation(model, layer) as capture:
        with torch.no_grad():
            logits = model(x)
            scores = select_scores(logits, target)  # [B]
            if not scores.requires_grad:
                raise RuntimeError(f"the model's output does not depend on layer {capture.layer!r}")
            (gradients,) = torch.autograd.grad(scores.sum(), capture.activation, allow_unused=True)
    if gradients is None:
        raise RuntimeError(f"the target scores do not depend on layer {capture.layer!r}")
    return capture.activation.detach(), gradients, logits.detach()


def gradient_cam(model, x, target, layer, combine, *, relu=True, upsample=True, normalize=True) -> torch.Tensor:
    """The CAM skeleton: ``combine(A, G) -> [B, h, w]``, then :func:`~xai_helpers.core.postprocess_maps`."""
    activations, gradients, _ = activations_and_gradients(model, x, target, layer)
    maps = combine(activations, gradients)
    return postprocess_maps(maps, tuple(x.shape[-2:]), relu=relu, upsample=upsample, normalize=normalize)


def grad_cam(model, x, target, layer, *, relu=True, upsample=True, normalize=True) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al.): ``ReLU(sum_k alpha_k^c A^k)`` with ``alpha_k^c = mean_ij dy^c/dA^k_ij``.

    ``x [B, 3, H, W]`` in [0, 1]; ``target`` an int, B ints or a LongTensor ``[B]``; ``layer`` a module
    or a dotted name. Returns ``[B, H, W]`` (``[B, h, w]`` with ``upsample=False``).
    """

    def combine(activations, gradients):
        alpha = gradients.mean(dim=(2, 3), keepdim=True)  # [B, K, 1, 1]: one weight per channel
        return (alpha * activations).sum(dim=1)           # [B, h, w]

    return gradient_cam(model, x, target, layer, combine, relu=relu, upsample=upsample, normalize=normalize)
