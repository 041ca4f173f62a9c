"""Class activation maps: Grad-CAM and its family.

Every CAM method has the same skeleton: run the model, record the activations ``A`` of one layer
and the gradients ``G`` of the target score with respect to them, combine ``A`` and ``G`` into a
coarse map, then post-process it (ReLU and upsampling; min-max rescaling only on request, as
``rescale=True``: under the package's output contract a method returns the unscaled map).
:func:`activations_and_gradients` does the shared work; a CAM variant only says how it combines
``A`` and ``G`` (:func:`gradient_cam`).

The layer is a keyword argument, ``grad_cam(model, x, target, layer="head")``, as the calling
convention of :mod:`xai_helpers.registry` says. Three options change what a CAM returns and are
for direct calls only: ``upsample=False`` (the map at the layer's resolution), ``rescale=True``
(min-max scaled to [0, 1]) and ``relu=False`` (the signed map). Under
:func:`xai_helpers.registry.attribute` they would break the output contract, so the registry
refuses them (:attr:`xai_helpers.registry.Method.refuses`).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..core import (
    Target,
    as_map,
    as_targets,
    capture_activation,
    check_autograd_available,
    check_chunk_size,
    check_images,
    check_logits,
    equal_chunks,
    explaining,
    postprocess_maps,
    probabilities,
    select_scores,
)
from ..registry import register

Layer = nn.Module | str
Combine = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["activations_and_gradients", "gradient_cam", "grad_cam", "grad_cam_plus_plus", "hires_cam", "layer_cam",
           "score_cam"]

#: The options a CAM refuses under the registry's output contract (see the module docstring).
_CONTRACT_BREAKING = ("upsample", "rescale", "relu")


def activations_and_gradients(
    model: nn.Module, x: torch.Tensor, target: Target, layer: nn.Module | str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Activations ``A [B, K, h, w]`` of ``layer``, gradients ``dy^c/dA [B, K, h, w]``, logits ``[B, N]``.

    Autograd records only the part of the model after ``layer``, so no parameter gets a ``.grad`` and
    the cost is about one forward pass. A transformer layer's tokens ``[B, N, D]`` become the map
    ``[B, D, s, s]`` of their patches (:func:`~xai_helpers.core.tokens_to_grid`), gradients alike. The
    model's mode and flags are restored, and the hook removed, even if the model raises.
    """
    check_images(x)
    check_autograd_available("activations_and_gradients")
    with explaining(model), capture_activation(model, layer, graph_from_layer=True, spatial=True) as capture:
        with torch.no_grad():  # no graph for the layers before `layer` ...
            # ... until the hook on `layer` runs: it stores the layer's output A as a new leaf that
            # requires grad and calls torch.set_grad_enabled(True), so from A to the scores autograd
            # records the graph. Leaving this block switches grad mode back to what it was.
            logits = check_logits(model(x))        # [B, N]
            scores = select_scores(logits, target)  # [B]
        if not scores.requires_grad:
            raise RuntimeError(f"the model's output does not depend on layer {capture.layer!r}")
        # Backward from the scores to A, where the graph starts. Output gradients of ones give the
        # gradient of scores.sum(): each image its own, since images do not interact in eval mode.
        (gradients,) = torch.autograd.grad(scores, capture.output, torch.ones_like(scores), allow_unused=True)
    if gradients is None:
        raise RuntimeError(f"the target scores do not depend on layer {capture.layer!r}")
    return as_map(capture.output.detach()), as_map(gradients), logits.detach()


def gradient_cam(model: nn.Module, x: torch.Tensor, target: Target, *, layer: Layer, combine: Combine,
                 relu: bool = True, upsample: bool = True, rescale: bool = False) -> torch.Tensor:
    """The CAM skeleton: ``combine(A, G) -> [B, h, w]``, then :func:`~xai_helpers.core.postprocess_maps`."""
    activations, gradients, _ = activations_and_gradients(model, x, target, layer)
    maps = combine(activations, gradients)
    return postprocess_maps(maps, (x.shape[-2], x.shape[-1]), relu=relu, upsample=upsample, rescale=rescale)


@register("grad_cam", title="Grad-CAM", space="map", needs_layer=True, family="cam", signed=False,
          cost="1 forward + 1 backward to the layer", reference="selvaraju2020gradcam",
          refuses=_CONTRACT_BREAKING)
def grad_cam(model: nn.Module, x: torch.Tensor, target: Target, *, layer: Layer, relu: bool = True,
             upsample: bool = True, rescale: bool = False, counterfactual: bool = False) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al.): ``ReLU(sum_k alpha_k^c A^k)`` with ``alpha_k^c = mean_ij dy^c/dA^k_ij``.

    ``x [B, 3, H, W]`` in [0, 1]; ``target`` an int, B ints or a LongTensor ``[B]``; ``layer`` a module
    or a dotted name, passed by keyword. Returns ``[B, H, W]`` (``[B, h, w]`` with ``upsample=False``). With
    ``counterfactual=True`` the gradients are negated: the map shows what speaks *against* the class.
    """
    sign = -1.0 if counterfactual else 1.0

    def combine(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        alpha = sign * gradients.mean(dim=(2, 3), keepdim=True)  # [B, K, 1, 1]: one weight per channel
        return (alpha * activations).sum(dim=1)                  # [B, h, w]

    return gradient_cam(model, x, target, layer=layer, combine=combine, relu=relu, upsample=upsample, rescale=rescale)


# ----------------------------------------------------------------------------- the rest of the family
# Each variant below is one `combine(A, G)`; gradient_cam does the hooks, targets and post-processing.


@register("grad_cam_plus_plus", title="Grad-CAM++", space="map", needs_layer=True, family="cam", signed=False,
          cost="1 forward + 1 backward to the layer", reference="chattopadhay2018gradcampp",
          refuses=_CONTRACT_BREAKING)
def grad_cam_plus_plus(model: nn.Module, x: torch.Tensor, target: Target, *, layer: Layer, relu: bool = True,
                       upsample: bool = True, rescale: bool = False) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018): ``sum_k w_k A^k`` with ``w_k = sum_ij a^k_ij ReLU(G^k_ij)``.

    ``a^k_ij = G^2 / (2 G^2 + sum_ab A^k_ab G^3)`` (powers elementwise at ``ij``): the paper's closed
    form for the exponential of the score, whose higher derivatives are powers of the first. Where the
    denominator is 0 the coefficient is 0. Same arguments and shapes as :func:`grad_cam`.
    """

    def combine(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        g2 = gradients.pow(2)
        denominator = 2 * g2 + activations.sum(dim=(2, 3), keepdim=True) * gradients.pow(3)
        coefficients = torch.where(denominator != 0, g2 / torch.where(denominator != 0, denominator, 1), 0)
        weights = (coefficients * gradients.clamp_min(0)).sum(dim=(2, 3), keepdim=True)  # [B, K, 1, 1]
        return (weights * activations).sum(dim=1)

    return gradient_cam(model, x, target, layer=layer, combine=combine, relu=relu, upsample=upsample, rescale=rescale)


@register("hires_cam", title="HiResCAM", space="map", needs_layer=True, family="cam", signed=False,
          cost="1 forward + 1 backward to the layer", reference="draelos2020hirescam",
          refuses=_CONTRACT_BREAKING)
def hires_cam(model: nn.Module, x: torch.Tensor, target: Target, *, layer: Layer, relu: bool = True,
              upsample: bool = True, rescale: bool = False) -> torch.Tensor:
    """HiResCAM (Draelos & Carin 2020): ``sum_k G^k * A^k``, the gradient kept per location, not averaged.

    Same arguments and shapes as :func:`grad_cam`.
    """
    return gradient_cam(model, x, target, layer=layer, combine=lambda a, g: (g * a).sum(dim=1),
                        relu=relu, upsample=upsample, rescale=rescale)


@register("layer_cam", title="LayerCAM", space="map", needs_layer=True, family="cam", signed=False,
          cost="1 forward + 1 backward to the layer", reference="jiang2021layercam",
          refuses=_CONTRACT_BREAKING)
def layer_cam(model: nn.Module, x: torch.Tensor, target: Target, *, layer: Layer, relu: bool = True,
              upsample: bool = True, rescale: bool = False) -> torch.Tensor:
    """LayerCAM (Jiang et al. 2021): ``sum_k ReLU(G^k) * A^k``, only positive gradients, per location.

    Same arguments and shapes as :func:`grad_cam`.
    """
    return gradient_cam(model, x, target, layer=layer, combine=lambda a, g: (g.clamp_min(0) * a).sum(dim=1),
                        relu=relu, upsample=upsample, rescale=rescale)


@register("score_cam", title="Score-CAM", space="map", needs_layer=True, family="cam", signed=False,
          cost="K + 2 forwards (K channels of the layer)", reference="wang2020scorecam",
          refuses=_CONTRACT_BREAKING)
def score_cam(model: nn.Module, x: torch.Tensor, target: Target, *, layer: Layer, chunk_size: int | None = None,
              weighting: str = "increase", relu: bool = True, upsample: bool = True,
              rescale: bool = False) -> torch.Tensor:
    """Score-CAM (Wang et al. 2020): ``sum_k w_k A^k`` with ``w_k`` from masked forward passes, no gradient.

    Each channel ``A^k``, upsampled to the image and min-max scaled to [0, 1], becomes a mask ``M^k``,
    and the masked image ``x * M^k`` goes through the model. Two weightings, both from the paper's
    circle (``p^c`` the target's softmax probability over classes, ``f^c`` its logit):

    * ``weighting="increase"`` (the default, the one the book's figures use):
      ``w_k = p^c(x * M^k) - p^c(0)``, the increase of the target's probability over a black image.
      This is the paper's "channel-wise increase of confidence" measured on the softmax probability,
      as the authors' released code scores the masked images, but without the softmax over channels
      of the paper's Algorithm 1. At most ``K + 2`` forward passes per image (blank channels below).
    * ``weighting="softmax"``: ``w = softmax_k(f^c(x * M^k) - f^c(X_b))``, the increases of the logit
      normalised by a softmax over the ``K`` channels, as in Algorithm 1. The baseline cancels in the
      softmax (it shifts every channel by the same amount): ``K + 1`` passes at most.

    A channel that is constant over the map (after a ReLU, often zero everywhere: 50-60 % of
    EfficientNet-Lite0's ``head`` channels on the bundled photos) gives an all-zero mask, so its
    masked image *is* the black image. It is not sent through the model again: its score is the black
    image's, computed once, so its ``"increase"`` weight is exactly 0. That saves those passes and
    changes no weight. The other masked images run in equal chunks of at most ``chunk_size`` (by
    default :func:`~xai_helpers.core.default_chunk_size`). Same arguments and shapes as :func:`grad_cam`.
    """
    check_images(x)
    chunk_size = check_chunk_size(chunk_size, x)
    if weighting not in ("increase", "softmax"):
        raise ValueError(f"weighting must be 'increase' or 'softmax', got {weighting!r}")
    size = (x.shape[-2], x.shape[-1])
    with explaining(model), torch.no_grad():
        with capture_activation(model, layer, graph_from_layer=False, spatial=True) as capture:
            logits = check_logits(model(x))
        targets = as_targets(target, x.shape[0], logits.shape[1], device=x.device)
        activations = as_map(capture.output)                                        # [B, K, h, w]

        def score(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:    # [n, 3, H, W] -> [n]
            out = model(images)
            out = probabilities(model, out) if weighting == "increase" else out  # probability, or the logit
            return out.gather(1, classes[:, None])[:, 0]

        weights = torch.empty(activations.shape[:2], dtype=logits.dtype, device=x.device)  # [B, K]
        black: torch.Tensor | None = None                                           # [B]: score of x * 0
        for b in range(x.shape[0]):
            flat = activations[b].flatten(1)                                         # [K, h * w]
            blank = flat.amax(1) == flat.amin(1)     # [K]: a constant channel scales to M^k = 0, x * M^k = 0
            if blank.any():
                if black is None:
                    black = score(torch.zeros_like(x), targets)
                weights[b, blank] = black[b]
            live = (~blank).nonzero()[:, 0]
            # Each chunk's masks are upsampled only when it is sent: the memory of one chunk, never [K, H, W].
            for channels in equal_chunks(live, chunk_size):
                masks = postprocess_maps(activations[b, channels], size, relu=False)  # [n, H, W] in [0, 1]
                masked = x[b] * masks[:, None]                                       # [n, 3, H, W]
                weights[b, channels] = score(masked, targets[b].expand(len(masked)))
        if weighting == "increase":
            if black is None:
                black = score(torch.zeros_like(x), targets)
            weights = weights - black[:, None]                                       # minus p^c(black)
        else:
            weights = weights.softmax(1)                                             # over the K channels
        maps = (weights[:, :, None, None] * activations).sum(dim=1)
    return postprocess_maps(maps, size, relu=relu, upsample=upsample, rescale=rescale)
