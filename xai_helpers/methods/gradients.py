"""Gradient-based attributions in pixel space: saliency, deconvnet, guided backpropagation,
guided Grad-CAM and SmoothGrad (Integrated Gradients lives in :mod:`xai_helpers.methods.integrated`).

Every method here is a gradient of the target score with respect to the input image, sometimes
under a *modified backward rule* through the activation functions (:mod:`xai_helpers.backward_rules`):

=============  ==================================  ===============================
method         backward signal to an activation    reference
=============  ==================================  ===============================
``saliency``   ``f'(x) * g`` (the gradient)        Simonyan et al. (2014)
``deconvnet``  ``max(g, 0)``                       Zeiler & Fergus (2014)
``guided``     ``f'(x) * max(g, 0)``               Springenberg et al. (2015)
=============  ==================================  ===============================

``g`` is the signal arriving at the activation's output and ``f'(x)`` its local derivative
(``[x > 0]`` for a ReLU). The rules apply to activation modules and functional calls alike
(ReLU, ReLU6, LeakyReLU, SiLU, GELU, Hardswish; see :mod:`xai_helpers.backward_rules` for the definitions
beyond ReLU); a model whose activations have no rule makes deconvnet and guided backprop raise.

All methods follow the book's calling convention ``method(model, x, target, ...) -> tensor`` with
``x [B, 3, H, W]`` in [0, 1]; they leave the model exactly as it was (same modules, mode and
``requires_grad`` flags, no hooks), never write a parameter's ``.grad``, and return tensors that
do not require grad.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..backward_rules import input_gradients
from ..core import Target, as_targets, check_images, in_chunks
from ..registry import register
from .cam import grad_cam

__all__ = ["saliency", "deconvnet", "guided_backprop", "guided_grad_cam", "smoothgrad"]


@register("saliency", title="saliency", space="input", needs_layer=False, family="gradient",
          cost="1 forward + 1 backward", reference="simonyan2014deep")
def saliency(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """Vanilla gradient (Simonyan et al., 2014): ``d y^c / d x``, ``[B, 3, H, W]``, signed.

    Reduce it to one value per pixel with :func:`~xai_helpers.display.reduce_channels` (max of ``|g|`` over colours).
    """
    return input_gradients(model, x, target)


@register("deconvnet", title="deconvnet", space="input", needs_layer=False, family="gradient",
          cost="1 forward + 1 backward", reference="zeiler2014visualizing")
def deconvnet(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """Deconvnet (Zeiler & Fergus, 2014): the backward pass with ``max(g, 0)`` at every activation. ``[B, 3, H, W]``."""
    return input_gradients(model, x, target, backward="deconvnet")


@register("guided_backprop", title="guided backprop", space="input", needs_layer=False, family="gradient",
          cost="1 forward + 1 backward", reference="springenberg2015striving")
def guided_backprop(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al., 2015): ``f'(x) * max(g, 0)`` at every activation.
    ``[B, 3, H, W]``."""
    return input_gradients(model, x, target, backward="guided")


@register("guided_grad_cam", title="guided Grad-CAM", space="input", needs_layer=True, family="gradient",
          cost="2 forwards + 2 backwards", reference="selvaraju2020gradcam")
def guided_grad_cam(model: nn.Module, x: torch.Tensor, target: Target, *, layer: nn.Module | str) -> torch.Tensor:
    """Guided Grad-CAM (Selvaraju et al.): ``GB^c * up(ReLU(sum_k alpha_k^c A^k))``, pixel by pixel, ``[B, 3, H, W]``.

    ``GB^c`` is guided backprop ``[B, 3, H, W]``; the Grad-CAM at ``layer`` is ReLU'd and
    bilinearly upsampled to ``H x W`` but *not* min-max scaled: subtracting each map's minimum
    would zero the region of lowest CAM, which the paper's product keeps.
    """
    cam = grad_cam(model, x, target, layer=layer, rescale=False)    # [B, H, W], >= 0
    return guided_backprop(model, x, target) * cam[:, None].detach()


@register("smoothgrad", title="SmoothGrad", space="input", needs_layer=False, family="gradient",
          cost="n_samples x (1 forward + 1 backward)", reference="smilkov2017smoothgrad", quick={"n_samples": 4})
def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    method: Callable[..., torch.Tensor] = saliency,
    n_samples: int = 16,
    noise: float = 0.15,
    chunk_size: int | None = 16,
    seed: int = 0,
) -> torch.Tensor:
    """SmoothGrad (Smilkov et al., 2017): ``method``'s map averaged over noisy copies of each image.

    Each image gets ``n_samples`` copies ``x + eps`` with ``eps ~ N(0, sigma^2)`` and ``sigma = noise
    * (x.max() - x.min())`` of that image (the paper recommends 10-20 % of the input range). The
    noise comes from a ``torch.Generator`` seeded with ``seed``; the same ``n_samples`` noise
    patterns (scaled by each image's ``sigma``) are used for every image, so an image's result does
    not depend on the rest of the batch. The ``B * n_samples`` noisy images go through ``method``
    (any ``method(model, x, target) -> [B, C, H, W]``, e.g. :func:`saliency` or
    :func:`guided_backprop`) ``chunk_size`` at a time (:func:`~xai_helpers.core.in_chunks`; ``None``:
    :func:`~xai_helpers.core.default_chunk_size`). Noisy images are not clipped to [0, 1].
    Returns ``[B, C, H, W]``.
    """
    check_images(x)
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    x = x.detach()
    b = x.shape[0]
    targets = as_targets(target, b, device=x.device)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    eps = torch.randn((n_samples, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)
    sigma = noise * (x.flatten(1).amax(1) - x.flatten(1).amin(1))          # [B]
    noisy = x[:, None] + sigma.view(b, 1, 1, 1, 1) * eps[None]             # [B, n, C, H, W]
    maps = in_chunks(method, model, noisy.flatten(0, 1), targets.repeat_interleave(n_samples), chunk_size)
    return maps.view(b, n_samples, *maps.shape[1:]).mean(1).detach()
