"""Gradient-based attributions in pixel space: saliency, deconvnet, guided backpropagation,
guided Grad-CAM, SmoothGrad and Integrated Gradients.

Every method here is a gradient of the target score with respect to the input image, sometimes
under *modified backward rules* through the activation functions. The rules are switched on by
one context manager, :func:`relu_rule`; the three rules through a ReLU with input ``x`` and
incoming gradient ``g`` (the gradient with respect to the ReLU's output) are

=============  ==================================  ===============================
rule           backward signal to the ReLU input   reference
=============  ==================================  ===============================
``gradient``   ``g * [x > 0]``                     plain backpropagation
``deconvnet``  ``max(g, 0)``                       Zeiler & Fergus (2014)
``guided``     ``max(g, 0) * [x > 0]``             Springenberg et al. (2015)
=============  ==================================  ===============================

``[x > 0]`` is the ReLU's local derivative. For ``nn.ReLU6`` it is ``[0 < x < 6]`` and for
``nn.LeakyReLU`` it is ``1`` for ``x > 0`` and the negative slope elsewhere; the deconvnet rule
ignores the local derivative altogether and the guided rule multiplies it by ``max(g, 0)``.

Functional activations (``F.relu(x)``, ``x.clamp(min=0)``, ``torch.relu``) are not modules, so no
hook can see them: they keep their plain gradient. :func:`relu_rule` warns (``UserWarning``) when a
model has no supported activation module at all, and when it has activation modules of another
kind (SiLU, GELU, ...), which also keep their plain gradient.

All methods follow the book's calling convention ``method(model, x, target, ...) -> tensor`` with
``x [B, 3, H, W]`` in [0, 1]; they leave the model exactly as it was (same modules, mode and
``requires_grad`` flags, no hooks) and never write a parameter's ``.grad``.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from .cam import grad_cam
from .core import Target, as_targets, check_images, explaining, normalize_maps, select_scores

__all__ = [
    "RULES",
    "SUPPORTED_ACTIVATIONS",
    "relu_rule",
    "input_gradients",
    "saliency",
    "deconvnet",
    "guided_backprop",
    "guided_grad_cam",
    "smoothgrad",
    "integrated_gradients",
    "completeness_error",
    "completeness_curve",
    "reduce_channels",
    "gradient_image",
]

RULES = ("gradient", "deconvnet", "guided")
SUPPORTED_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU)
# Activation modules that keep their plain gradient under relu_rule (a warning names them).
_OTHER_ACTIVATIONS = (nn.SiLU, nn.GELU, nn.ELU, nn.SELU, nn.CELU, nn.Hardswish, nn.Mish, nn.PReLU, nn.Softplus)


def local_derivative(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The activation's derivative at its input ``x`` (same shape): ``[x>0]``, ``[0<x<6]`` or LeakyReLU's slope."""
    if isinstance(module, nn.ReLU6):  # check before ReLU: ReLU6 is a Hardtanh, not a ReLU, but be explicit
        return ((x > 0) & (x < 6)).to(x.dtype)
    if isinstance(module, nn.LeakyReLU):
        return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, module.negative_slope))
    return (x > 0).to(x.dtype)


def apply_rule(rule: str, derivative: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The backward signal to the activation's input, given its local derivative and incoming gradient ``g``."""
    if rule == "gradient":
        return derivative * g
    if rule == "deconvnet":
        return g.clamp_min(0)
    if rule == "guided":
        return derivative * g.clamp_min(0)
    raise ValueError(f"unknown rule {rule!r}; choose one of {RULES}")


class _RuleBackward(torch.autograd.Function):
    """Identity on the activation's *output* value; its backward sends ``rule(derivative, g)`` to the *input*."""

    @staticmethod
    def forward(ctx, pre_activation, output, derivative, rule):  # noqa: D102 - see class docstring
        ctx.save_for_backward(derivative)
        ctx.rule = rule
        return output.clone()

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        (derivative,) = ctx.saved_tensors
        return apply_rule(ctx.rule, derivative, g), None, None, None


@contextmanager
def relu_rule(model: nn.Module, rule: str) -> Iterator[list[str]]:
    """Within the block, backpropagate through every ReLU, ReLU6 and LeakyReLU *module* by ``rule``.

    Yields the names of the hooked modules. Two hooks go on each supported activation module: a
    forward pre-hook hands the module a copy of its input (so an in-place activation cannot
    overwrite the pre-activation) and keeps the original; a forward hook replaces the module's
    output by the same values whose backward is :class:`_RuleBackward`, connected to the original
    input. The activation's own backward is bypassed, so the result does not depend on
    ``inplace``, and a module called several times per forward pass is handled call by call. No
    module is replaced or changed, and every hook is removed on exit, even after an error. (A model
    that calls an in-place activation for its side effect alone, ignoring the returned tensor, would
    see its input unchanged inside the block; models that use the return value, as
    ``nn.Sequential`` and torchvision's models do, are unaffected.)

    Functional activations cannot be hooked and keep their plain gradient (see the module docstring).
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {RULES}")
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, SUPPORTED_ACTIVATIONS)]
    others = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _OTHER_ACTIVATIONS)})
    if not targets:
        warnings.warn(
            f"relu_rule({rule!r}): the model has no nn.ReLU, nn.ReLU6 or nn.LeakyReLU module, so the rule "
            "changes nothing and you get the plain gradient. Activations called as functions (F.relu, "
            "torch.relu, x.clamp) cannot be hooked: replace them by modules to use this method.",
            UserWarning, stacklevel=3,
        )
    elif others:
        warnings.warn(
            f"relu_rule({rule!r}): activation modules {', '.join(others)} keep their plain gradient; "
            "only ReLU, ReLU6 and LeakyReLU follow the rule.", UserWarning, stacklevel=3,
        )
    inputs: dict[int, torch.Tensor] = {}

    def pre_hook(module, args):
        inputs[id(module)] = args[0]
        return (args[0].clone(),) + tuple(args[1:])

    def post_hook(module, _args, output):
        x = inputs.pop(id(module))
        if not torch.is_grad_enabled():
            return output
        return _RuleBackward.apply(x, output.detach(), local_derivative(module, x.detach()), rule)

    handles = []
    try:
        for _, module in targets:
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(post_hook))
        yield [name for name, _ in targets]
    finally:
        for handle in handles:
            handle.remove()
        inputs.clear()


def input_gradients(model: nn.Module, x: torch.Tensor, target: Target, rule: str | None = None) -> torch.Tensor:
    """``d y^c / d x`` for each image, ``[B, C, H, W]``, under the backward ``rule`` (``None``: plain autograd).

    ``x`` is detached and cloned before it gets ``requires_grad`` (the caller's tensor is untouched);
    the parameters are frozen by :func:`~xai_helpers.core.explaining`, so no parameter gets a ``.grad``. Images do not interact
    (eval mode), so the gradient of the summed scores is each image's own gradient.
    """
    check_images(x)
    leaf = x.detach().clone().requires_grad_(True)
    with explaining(model), torch.enable_grad(), (relu_rule(model, rule) if rule else nullcontext()):
        # the model gets a copy of the leaf, so a model that works in place on its input still runs
        scores = select_scores(model(leaf.clone()), target)
        (g,) = torch.autograd.grad(scores.sum(), leaf)
    return g


def saliency(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """Vanilla gradient (Simonyan et al., 2014): ``d y^c / d x``, ``[B, 3, H, W]``, signed.

    Reduce it to one value per pixel with :func:`reduce_channels` (max of ``|g|`` over colours).
    """
    return input_gradients(model, x, target)


def deconvnet(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """Deconvnet (Zeiler & Fergus, 2014): the backward pass with ``max(g, 0)`` at every activation. ``[B, 3, H, W]``."""
    return input_gradients(model, x, target, rule="deconvnet")


def guided_backprop(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al., 2015): ``max(g, 0) * [x > 0]`` at every activation. ``[B, 3, H, W]``."""
    return input_gradients(model, x, target, rule="guided")


def guided_grad_cam(model: nn.Module, x: torch.Tensor, target: Target, layer: nn.Module | str) -> torch.Tensor:
    """Guided Grad-CAM (Selvaraju et al.): guided backprop ``[B, 3, H, W]`` times the upsampled Grad-CAM, pixel by pixel.

    Grad-CAM at ``layer`` is post-processed as usual (ReLU, bilinear upsampling, min-max to [0, 1]).
    Returns ``[B, 3, H, W]``.
    """
    cam = grad_cam(model, x, target, layer)       # [B, H, W] in [0, 1]
    return guided_backprop(model, x, target) * cam[:, None]


def _batched(
    method: Callable[..., torch.Tensor], model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """``method(model, inputs[i:j], targets[i:j])`` over chunks of ``batch_size`` rows, concatenated."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return torch.cat([method(model, inputs[i:i + batch_size], targets[i:i + batch_size])
                      for i in range(0, inputs.shape[0], batch_size)])


def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    method: Callable[..., torch.Tensor] = saliency,
    n_samples: int = 16,
    noise: float = 0.15,
    batch_size: int = 16,
    seed: int = 0,
) -> torch.Tensor:
    """SmoothGrad (Smilkov et al., 2017): ``method``'s map averaged over noisy copies of each image.

    Each image gets ``n_samples`` copies ``x + eps`` with ``eps ~ N(0, sigma^2)`` and ``sigma = noise
    * (x.max() - x.min())`` of that image (the paper recommends 10-20 % of the input range). The
    noise comes from a ``torch.Generator`` seeded with ``seed``; the same ``n_samples`` noise
    patterns (scaled by each image's ``sigma``) are used for every image, so an image's result does
    not depend on the rest of the batch. The ``B * n_samples`` noisy images go through ``method``
    (any ``method(model, x, target) -> [B, C, H, W]``, e.g. :func:`saliency` or
    :func:`guided_backprop`) ``batch_size`` at a time. Noisy images are not clipped to [0, 1].
    Returns ``[B, C, H, W]``.
    """
    check_images(x)
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    b = x.shape[0]
    targets = as_targets(target, b, device=x.device)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    eps = torch.randn((n_samples, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)
    sigma = noise * (x.flatten(1).amax(1) - x.flatten(1).amin(1))          # [B]
    noisy = x[:, None] + sigma.view(b, 1, 1, 1, 1) * eps[None]             # [B, n, C, H, W]
    maps = _batched(method, model, noisy.flatten(0, 1), targets.repeat_interleave(n_samples), batch_size)
    return maps.view(b, n_samples, *maps.shape[1:]).mean(1)


def _path_points(steps: int, rule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``alpha`` on [0, 1] and quadrature weights for the path integral (weights sum to 1)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if rule == "trapezoid":
        alphas = torch.linspace(0, 1, steps + 1)
        weights = torch.full((steps + 1,), 1.0 / steps)
        weights[[0, -1]] /= 2
    elif rule == "riemann":  # right Riemann sum, as in Sundararajan et al., eq. (3)
        alphas = torch.arange(1, steps + 1) / steps
        weights = torch.full((steps,), 1.0 / steps)
    else:
        raise ValueError(f"unknown rule {rule!r}; choose 'trapezoid' or 'riemann'")
    return alphas, weights


def _baseline_like(x: torch.Tensor, baseline: torch.Tensor | float | None) -> torch.Tensor:
    """The baseline as a tensor shaped like ``x`` (``None``: black image, zeros)."""
    if baseline is None:
        return torch.zeros_like(x)
    if not isinstance(baseline, torch.Tensor):
        return torch.full_like(x, float(baseline))
    try:
        return baseline.to(x).expand_as(x)
    except RuntimeError as err:
        raise ValueError(f"baseline of shape {list(baseline.shape)} does not broadcast to x {list(x.shape)}") from err


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    baseline: torch.Tensor | float | None = None,
    steps: int = 32,
    batch_size: int = 32,
    rule: str = "trapezoid",
) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al., 2017): ``(x - x') * integral_0^1 dy^c/dx(x' + a (x - x')) da``.

    ``baseline`` ``x'`` is zeros (a black image) by default, or a number or a tensor that broadcasts
    to ``x``. The integral is approximated on ``steps`` intervals with the ``"trapezoid"`` rule
    (``steps + 1`` gradients, endpoints weighted 1/2; error O(1/steps^2) for smooth models) or the
    right ``"riemann"`` sum of the paper (``steps`` gradients, error O(1/steps)). The
    ``B * len(alphas)`` path images go through the model ``batch_size`` at a time. By completeness
    the attributions of an image sum to about ``y^c(x) - y^c(x')``; see :func:`completeness_error`.
    Returns ``[B, C, H, W]``.
    """
    check_images(x)
    base = _baseline_like(x, baseline)
    alphas, weights = (t.to(x) for t in _path_points(steps, rule))
    grads = _path_gradients(model, x, target, base, alphas, batch_size)      # [B, k, C, H, W]
    return (x - base) * (grads * weights.view(1, -1, 1, 1, 1)).sum(1)


def _path_gradients(model, x, target, base, alphas, batch_size) -> torch.Tensor:
    """Gradients at ``base + alpha (x - base)`` for every image and alpha: ``[B, len(alphas), C, H, W]``."""
    b, k = x.shape[0], alphas.numel()
    targets = as_targets(target, b, device=x.device)
    path = base[:, None] + alphas.view(1, k, 1, 1, 1) * (x - base)[:, None]      # [B, k, C, H, W]
    grads = _batched(saliency, model, path.flatten(0, 1), targets.repeat_interleave(k), batch_size)
    return grads.view(b, k, *x.shape[1:])


def completeness_curve(
    model: nn.Module, x: torch.Tensor, target: Target, steps: tuple[int, ...] = (4, 8, 16, 32, 64), *,
    baseline: torch.Tensor | float | None = None, batch_size: int = 32,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Trapezoid Integrated Gradients with ``max(steps)`` steps, and the :func:`completeness_error` for every ``steps``.

    Returns ``(attributions [B, C, H, W], {steps: error [B]})``. Every number of steps must divide
    the largest, so that the coarser grids are subsets of the finest: the gradients are computed
    once, at ``max(steps) + 1`` points, and reused for every grid.
    """
    check_images(x)
    finest = max(steps)
    if any(finest % s for s in steps):
        raise ValueError(f"every number of steps must divide the largest ({finest}), got {steps}")
    base = _baseline_like(x, baseline)
    alphas, _ = _path_points(finest, "trapezoid")
    grads = _path_gradients(model, x, target, base, alphas.to(x), batch_size)
    gap = -completeness_error(model, x, target, torch.zeros_like(x), baseline=base)    # y(x) - y(x')
    errors, attributions = {}, None
    for s in sorted(steps):
        _, weights = _path_points(s, "trapezoid")
        attributions = (x - base) * (grads[:, :: finest // s] * weights.to(x).view(1, -1, 1, 1, 1)).sum(1)
        errors[s] = attributions.flatten(1).sum(1) - gap
    return attributions, errors


def completeness_error(
    model: nn.Module, x: torch.Tensor, target: Target, attributions: torch.Tensor,
    baseline: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """``sum(attributions) - (y^c(x) - y^c(x'))`` per image, ``[B]``: zero for exact Integrated Gradients."""
    check_images(x)
    base = _baseline_like(x, baseline)
    with explaining(model), torch.no_grad():
        gap = select_scores(model(x), target) - select_scores(model(base), target)
    return attributions.flatten(1).sum(1) - gap


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
