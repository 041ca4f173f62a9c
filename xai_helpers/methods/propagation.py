"""Methods that propagate relevance backwards: gradient x input, LRP and DeepLIFT (Rescale).

All of them are a gradient under *modified backward rules* (the "gradient trick"). Every tensor
``a`` in the network carries a relevance ``R(a) = a * g(a)`` where ``g(a)`` is what autograd sends
back to ``a``. The rules only change ``g``:

* a linear layer ``z = W x + b`` (``Conv2d``, ``Linear``, average pooling) with a rule's modified
  pre-activation ``z'(x)`` gets the backward ``g(x) = d/dx [ z'(x) * stopgrad(z * g(z) / z') ]``,
  i.e. ``R_j = x_j sum_k w'_jk R_k / z'_k`` (:class:`~xai_helpers.relevance.rules.Rule` and its
  subclasses);
* an activation ``a = f(z)`` (ReLU, ReLU6, LeakyReLU) passes relevance on unchanged, ``R(z) =
  R(a)``, i.e. its backward multiplier is ``f(z) / z`` instead of ``f'(z)``. For DeepLIFT it is the
  Rescale multiplier ``(f(z) - f(z_ref)) / (z - z_ref)``;
* a residual sum ``s = a + b`` is differentiated normally: ``R(a) = a * g(s) = a / s * R(s)``,
  so relevance splits in proportion to the summands' contributions (the LRP-0 rule for a sum);
* max pooling keeps its gradient (winner takes all); flatten and dropout (eval) keep theirs.

Batch norm is merged into the preceding ``Conv2d``/``Linear`` for the duration
(:func:`~xai_helpers.relevance.canonizers.merge_batchnorm`, the "canonizer") and restored bit for
bit. Which rule each layer gets is said by a :class:`~xai_helpers.relevance.composites.Composite`;
:func:`~xai_helpers.relevance.composites.epsilon_gamma_box` is the practice of Montavon et al.
(2019). The rules, composites, canonizers and hooks are in :mod:`xai_helpers.relevance`.

Calling convention as everywhere in the package: ``method(model, x, target, *, ...) -> [B, C, H, W]``,
signed, detached, not rescaled, for ``x [B, 3, H, W]`` in [0, 1]. The model is left exactly as
it was: parameters, buffers, mode, ``requires_grad`` flags, no hooks, even after an error.
"""
from __future__ import annotations

import typing
from collections.abc import Sequence

import torch
from torch import nn

from ..backward_rules import input_gradients
from ..core import Target, baseline_like, check_images, select_scores
from ..registry import register
from ..relevance.composites import Composite, epsilon_gamma_box
from ..relevance.hooks import first_layer_input, relevance_rules
from ..relevance.rules import RelevanceState, ZBoxRule

__all__ = ["gradient_x_input", "lrp", "lrp_with_layers", "deeplift"]


@register("gradient_x_input", title="gradient × input", space="input", needs_layer=False, family="propagation",
          cost="1 forward + 1 backward", reference="shrikumar2017learning")
def gradient_x_input(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """Gradient x input: ``x * d y^c / d x``, ``[B, C, H, W]``, signed.

    The first-order Taylor term of ``y^c`` at 0, and Integrated Gradients from a zero baseline with
    a single step. Equals LRP-0 in pixel space for a ReLU network without biases or preprocessing.
    """
    return x.detach() * input_gradients(model, x, target)


def _to_pixels(relevance: torch.Tensor, x: torch.Tensor, first: str) -> torch.Tensor:
    if relevance[0].numel() != x[0].numel():
        raise ValueError(
            f"the first linear layer {first!r} receives {list(relevance.shape)}, not one value per pixel of x "
            f"{list(x.shape)}: relevance at its input cannot be mapped back to the pixels")
    return relevance.reshape(x.shape)


def _keep_only(module: nn.Module, keep: torch.Tensor) -> torch.utils.hooks.RemovableHandle:
    """A forward hook on ``module`` whose output is unchanged but lets the backward pass through only
    where ``keep`` (broadcastable to the output) is 1: the relevance elsewhere is dropped there."""
    def hook(_module, _args, output):
        return output * keep + (output * (1 - keep)).detach()
    return module.register_forward_hook(hook)


def lrp_with_layers(model: nn.Module, x: torch.Tensor, target: Target, *, composite: Composite | None = None,
                    record: Sequence[str] = (), condition: tuple[str, torch.Tensor] | None = None,
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`lrp`, and the relevance ``{name: [B, ...]}`` at the outputs of the modules in ``record``.

    ``condition=(name, keep)``: the relevance at module ``name``'s output is multiplied by ``keep``
    (a 0/1 tensor that broadcasts to that output, e.g. ``[B, K, 1, 1]`` for channels) before it
    propagates further down: concept relevance propagation (:func:`xai_helpers.concepts.concept_relevance`).
    """
    check_images(x)
    composite = composite or epsilon_gamma_box()
    with relevance_rules(model, composite, record=record) as state, torch.enable_grad():
        handle = None if condition is None else _keep_only(dict(model.named_modules())[condition[0]], condition[1])
        try:
            return _lrp_pass(model, x, target, state)
        finally:
            if handle is not None:
                handle.remove()


def _lrp_pass(model: nn.Module, x: torch.Tensor, target: Target, state: RelevanceState,
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward and backward pass of ``model`` under the rules of ``state`` (inside :func:`relevance_rules`)."""
    rule = state.rules.get(state.first)
    if isinstance(rule, ZBoxRule):
        bounds = torch.stack([torch.full_like(x[0], rule.low), torch.full_like(x[0], rule.high)])
        mapped = first_layer_input(model, state.first, bounds)
        state.bounds = (mapped[:1], mapped[1:])
    # x itself needs grad only to see whether a path from it bypasses the first linear layer
    # (whose input the pre-hook detaches): relevance on such a path would be lost.
    image = x.detach().clone().requires_grad_(True)
    scores = select_scores(model(image), target)
    leaves = [typing.cast(torch.Tensor, state.leaf), *state.extra_leaves]
    *grads, bypass = torch.autograd.grad(scores.sum(), [*leaves, image], allow_unused=True)
    if bypass is not None:
        raise ValueError(
            f"the image reaches the output by a path that bypasses {state.first!r}, the first linear layer "
            "(e.g. the input added to a later layer's output). LRP hands relevance to the pixels only through "
            "that layer, so the relevance on the other path would be lost and sum(R) would not match y^c. "
            "Use deeplift() or integrated_gradients(), which follow every path.")
    relevance = leaves[0].detach() * grads[0]
    for leaf, g in zip(leaves[1:], grads[1:]):
        relevance = relevance + leaf.detach() * g
    return _to_pixels(relevance, x, state.first).detach(), dict(state.relevance)


@register("lrp", title="LRP (ε-γ-z^B composite)", space="input", needs_layer=False, family="propagation",
          cost="1 forward + 1 backward under modified rules", reference="bach2015pixel")
def lrp(model: nn.Module, x: torch.Tensor, target: Target, *, composite: Composite | None = None) -> torch.Tensor:
    """Layer-wise relevance propagation (Bach et al. 2015), ``[B, C, H, W]``, signed.

    The relevance ``R = y^c`` of the target logit is propagated to the pixels layer by layer by the
    rules of ``composite`` (default :func:`~xai_helpers.relevance.composites.epsilon_gamma_box`). The
    relevance arriving at the first linear layer's input is the pixels' relevance (the model's
    elementwise preprocessing, e.g. ``Normalize``, passes it on unchanged); a model in which the image
    also reaches a later layer by another path is refused with a ``ValueError``, since that path's
    relevance would be lost. ``sum(R) = y^c`` up to
    what biases, epsilon and the stabiliser absorb: :func:`~xai_helpers.core.completeness_error`
    with ``baseline=None`` (no reference) measures the difference.
    """
    return lrp_with_layers(model, x, target, composite=composite)[0]


@register("deeplift", title="DeepLIFT (Rescale)", space="input", needs_layer=False, family="propagation",
          cost="2 forwards + 1 backward", reference="shrikumar2017learning")
def deeplift(model: nn.Module, x: torch.Tensor, target: Target, *,
             baseline: torch.Tensor | float = 0.0) -> torch.Tensor:
    """DeepLIFT with the Rescale rule (Shrikumar et al. 2017), ``[B, C, H, W]``, signed.

    ``(x - x_ref) * m`` where ``m`` is the chain rule with every activation's derivative replaced
    by ``(f(z) - f(z_ref)) / (z - z_ref)`` (``z_ref`` from the forward pass of the reference input
    ``x_ref = baseline``, the black image ``0.0`` by default, as for Integrated Gradients; ``f'(z)``
    where ``z ~ z_ref``). Summation to delta: ``sum(attributions) = y^c(x) - y^c(x_ref)`` exactly
    when every nonlinearity is a ReLU-family activation (max pooling keeps its gradient, so there it
    is approximate); :func:`~xai_helpers.core.completeness_error` measures it.
    """
    check_images(x)
    ref = baseline_like(x, baseline)
    leaf = x.detach().clone().requires_grad_(True)
    with relevance_rules(model, mode="deeplift") as state:
        state.recording = True
        with torch.no_grad():
            model(ref.detach().clone())
        state.recording = False
        with torch.enable_grad():
            scores = select_scores(model(leaf.clone()), target)
            (g,) = torch.autograd.grad(scores.sum(), leaf)
    return ((x - ref) * g).detach()
