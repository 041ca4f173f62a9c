"""Explanations that can be fooled, and how much an explanation moves when its input barely does.

* :func:`max_sensitivity` (Yeh et al. 2019): the largest relative change of a map over small random
  perturbations of the input that leave the prediction alone; a robustness metric for any method.
* :func:`softplus_copy`: a copy of a network with its ReLUs replaced by ``softplus_beta``, whose
  second derivatives do not vanish (Dombrowski et al. 2019).
* :func:`manipulate_input` (Dombrowski et al. 2019; Ghorbani et al. 2019 for the idea): a
  perturbation within an L-infinity ball that keeps the output but moves the map towards a target
  map of the attacker's choice, optimised on the smooth copy and then shown on the ReLU network.
* :func:`fine_tune_to_fool` (Heo et al. 2019): fine-tuning a network so that its maps move towards
  target maps while its accuracy stays.

Attacks need the map as a differentiable function of the input (or of the weights):
:func:`explanation_with_graph` computes saliency, gradient x input and Grad-CAM with
``create_graph=True``. Their maps are compared after :func:`unit_mean` (each map divided by its
mean over pixels), so a map's scale never enters a loss.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .backward_rules import Activation, recognise
from .core import Target, as_targets, check_images, check_logits, explaining, in_chunks, resolve_layer, select_scores

__all__ = [
    "max_sensitivity",
    "softplus_copy",
    "GRAPH_METHODS",
    "explanation_with_graph",
    "unit_mean",
    "map_loss",
    "ManipulationResult",
    "manipulate_input",
    "FoolingResult",
    "fine_tune_to_fool",
]

GraphMethod = Literal["saliency", "gradient_x_input", "grad_cam"]

#: The methods :func:`explanation_with_graph` can differentiate (and so attack).
GRAPH_METHODS = ("saliency", "gradient_x_input", "grad_cam")


def _positive_number(value: object, name: str, *, integer: bool = False, allow_zero: bool = False) -> float:
    kind = numbers.Integral if integer else numbers.Real
    number = float(value) if isinstance(value, kind) and not isinstance(value, bool) else math.nan
    if not (math.isfinite(number) and (number >= 0 if allow_zero else number > 0)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {'an int' if integer else 'a number'} {bound}, got {value!r}")
    return number


def _layer_name(model: nn.Module, layer: nn.Module | str | None) -> str | None:
    """``layer``'s dotted name in ``model`` (so the same layer can be found in a copy of it)."""
    if layer is None:
        return None
    module = resolve_layer(model, layer)
    return next(name for name, m in model.named_modules() if m is module)


# ----------------------------------------------------------------------------- max-sensitivity
def max_sensitivity(
    method: Callable[..., torch.Tensor] | str,
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    radius: float = 0.02,
    n_samples: int = 10,
    seed: int = 0,
    keep_prediction: bool = True,
    clip: bool = True,
    chunk_size: int | None = None,
    map_at_x: torch.Tensor | None = None,
) -> torch.Tensor:
    """Max-sensitivity (Yeh et al. 2019) of ``method`` at each image: ``[B]``.

    ``SENS(x) = max_d ||phi(x + d) - phi(x)|| / ||phi(x)||`` over ``n_samples`` perturbations ``d``
    drawn uniformly from the L-infinity ball ``||d||_inf <= radius`` (the same ``n_samples`` draws for
    every image, from a generator seeded with ``seed``); ``||.||`` is the Frobenius norm of the whole
    map and ``phi = method(model, x, target)`` any map ``[B, ...]`` (a function, or the name of a
    registered method, called with its defaults and returning the raw result of the output contract).
    Dividing by ``||phi(x)||`` makes the number independent of the map's scale, as captum's
    ``sensitivity_max`` does; Yeh et al.'s definition is the same without the division.

    With ``keep_prediction`` only the perturbations after which the model still predicts what it
    predicted for ``x`` count (an explanation *should* change when the decision does); an image with
    no such perturbation gets NaN. With ``clip`` the perturbed images are clipped to [0, 1] (which
    only shrinks ``d``). A map that is zero at ``x`` gives 0 if it stays zero and ``inf`` otherwise.
    The target stays the one given. The ``n_samples * B`` perturbed images go to ``method`` (and to
    the model, to check the predictions) in chunks of at most ``chunk_size`` (by default
    :func:`~xai_helpers.core.default_chunk_size`), one more call for ``x`` itself unless the caller
    passes the map it has there as ``map_at_x`` (``method(model, x, target)``, ``[B, ...]``).
    """
    from . import registry

    check_images(x)
    radius = _positive_number(radius, "radius")
    n_samples = int(_positive_number(n_samples, "n_samples", integer=True))
    explain = registry.get(method) if isinstance(method, str) else method
    x = x.detach()
    batch = x.shape[0]
    targets = as_targets(target, batch, device=x.device)
    with explaining(model), torch.no_grad():
        predicted = check_logits(model(x)).argmax(1)
    reference = (explain(model, x, targets) if map_at_x is None else map_at_x).detach().flatten(1).double()  # [B, D]
    if reference.shape[0] != batch:
        raise ValueError(f"map_at_x must hold one map per image ({batch}), got {reference.shape[0]} maps")
    scale = reference.norm(dim=1)
    generator = torch.Generator().manual_seed(seed)
    noise = (2 * torch.rand((n_samples, *x.shape[1:]), generator=generator, dtype=torch.float64) - 1) * radius
    moved = x[None] + noise.to(device=x.device, dtype=x.dtype)[:, None]              # [S, B, C, H, W]
    moved = (moved.clamp(0, 1) if clip else moved).flatten(0, 1)                     # [S * B, C, H, W], sample-major
    repeated = targets.repeat(n_samples)                                             # [S * B]

    def flat_map(m: nn.Module, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:   # -> [n, D]
        return explain(m, images, classes).detach().flatten(1).double()

    maps = in_chunks(flat_map, model, moved, repeated, chunk_size)                   # [S * B, D]
    change = (maps.view(n_samples, batch, -1) - reference).norm(dim=2)               # [S, B]
    ratio = torch.where(scale > 0, change / scale.clamp_min(1e-300), torch.where(change > 0, math.inf, 0.0))
    if keep_prediction:
        with explaining(model), torch.no_grad():
            predictions = in_chunks(lambda m, images, _: check_logits(m(images)).argmax(1), model, moved,
                                    repeated, chunk_size)
        ratio = torch.where(predictions.view(n_samples, batch) == predicted, ratio, -math.inf)
    worst = ratio.amax(0)                                                            # [B]
    worst = torch.where(worst == -math.inf, math.nan, worst)
    return worst.to(x.dtype)


# ----------------------------------------------------------------------------- the softplus copy
class _SmoothReLUMode(TorchFunctionMode):
    """Inside the block, every ReLU-type torch call is computed smoothly (see :func:`softplus_copy`)."""

    def __init__(self, beta: float):
        super().__init__()
        self.beta = beta

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        activation = recognise(func, args, kwargs)
        if isinstance(activation, Activation) and activation.name.startswith("relu"):
            x = args[0]
            # a capped ReLU min(max(0, x), c) maps +inf to its cap c; a plain ReLU keeps it infinite
            cap = float(activation.function(torch.tensor(math.inf)))
            smooth = F.softplus(x, beta=self.beta)
            return smooth if math.isinf(cap) else smooth - F.softplus(x - cap, beta=self.beta)
        return func(*args, **kwargs)


_SMOOTH_CLASSES: dict[type[nn.Module], type[nn.Module]] = {}


def _smooth_class(cls: type[nn.Module]) -> type[nn.Module]:
    """A subclass of ``cls`` whose ``forward`` runs inside :class:`_SmoothReLUMode` (one per class)."""
    if cls not in _SMOOTH_CLASSES:

        def forward(self, *args, **kwargs):
            with _SmoothReLUMode(self.softplus_beta):
                return cls.forward(self, *args, **kwargs)

        _SMOOTH_CLASSES[cls] = type(
            f"Softplus{cls.__name__}",
            (cls,),
            {
                "forward": forward,
                "__module__": cls.__module__,
                "__doc__": f"{cls.__name__} with smooth ReLUs (made by softplus_copy).",
            },
        )
    return _SMOOTH_CLASSES[cls]


def softplus_copy(model: nn.Module, beta: float = 10.0) -> nn.Module:
    """A deep copy of ``model`` whose ReLUs are ``softplus_beta(x) = log(1 + exp(beta x)) / beta``.

    The ReLU's second derivative is zero almost everywhere, so the gradient of an explanation with
    respect to the input (what an attack on the explanation descends) carries no information about
    how the gradient itself changes; softplus has ``softplus_beta'' = beta s(beta x) (1 - s(beta x))``
    (``s`` the logistic sigmoid) and tends to the ReLU as ``beta`` grows (Dombrowski et al. 2019,
    who attack the smooth copy and show that the result transfers to the ReLU network).

    Every ``nn.ReLU`` module becomes ``nn.Softplus(beta)`` (visible in ``print(copy)``, with the same
    names, so ``layer="relu3"`` still finds it). Every other ReLU-type call made during the copy's
    forward pass, as a function or a module (``F.relu``, ``torch.relu``, ``x.clamp(min=0)``, ReLU6,
    ``hardtanh(x, 0, c)``), is computed smoothly too, by a torch function mode around the copy's
    ``forward``: ``max(0, x)`` becomes ``softplus_beta(x)`` and ``min(max(0, x), c)`` becomes
    ``softplus_beta(x) - softplus_beta(x - c)``. The copy's class is a subclass of the model's (so
    ``isinstance`` holds) named ``Softplus<Class>``; it keeps the model's mode and ``requires_grad``
    flags. ``model`` itself is not changed.
    """
    beta = _positive_number(beta, "beta")
    smooth = copy.deepcopy(model)
    for parent in smooth.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.ReLU:
                setattr(parent, name, nn.Softplus(beta=beta))
    smooth.__class__ = _smooth_class(type(smooth))
    setattr(smooth, "softplus_beta", beta)  # a plain attribute, read by the smooth class's forward
    return smooth


# ----------------------------------------------------------------------------- explanations with a graph
def _check_method(method: str) -> None:
    if method not in GRAPH_METHODS:
        raise ValueError(f"method must be one of {GRAPH_METHODS} (the ones differentiated here), got {method!r}")


def _map_and_logits(
    method: str, model: nn.Module, x: torch.Tensor, target: Target, layer: nn.Module | str | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`explanation_with_graph`'s map ``[B, H, W]`` and the logits ``[B, N]`` of the same pass."""
    _check_method(method)
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    if method == "grad_cam":
        if layer is None:
            raise TypeError("grad_cam needs layer=... (a module or a dotted name, e.g. 'relu3' for SmallCNN)")
        module = resolve_layer(model, layer)
        captured: list[torch.Tensor] = []

        def hook(_module, _inputs, output):
            captured.append(output)
            return output.clone()  # later in-place operations cannot change what was captured

        handle = module.register_forward_hook(hook)
        try:
            logits = check_logits(model(x))
        finally:
            handle.remove()
        if len(captured) != 1 or captured[0].dim() != 4:
            raise ValueError(f"layer {layer!r} must run once and output a map [B, C, h, w]")
        activations = captured[0]
        scores = select_scores(logits, target)
        (gradients,) = torch.autograd.grad(scores.sum(), activations, create_graph=True)
        weights = gradients.mean(dim=(2, 3), keepdim=True)  # [B, K, 1, 1]
        cam = F.relu((weights * activations).sum(1, keepdim=True))  # [B, 1, h, w]
        return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0], logits
    if layer is not None:
        raise TypeError(f"{method} takes no layer; drop layer={layer!r}")
    logits = check_logits(model(x))
    scores = select_scores(logits, target)
    (gradients,) = torch.autograd.grad(scores.sum(), x, create_graph=True)  # [B, C, H, W]
    if method == "saliency":
        return gradients.abs().sum(1), logits
    return (x * gradients).sum(1).abs(), logits


def explanation_with_graph(
    method: GraphMethod, model: nn.Module, x: torch.Tensor, target: Target, *, layer: nn.Module | str | None = None
) -> torch.Tensor:
    """A non-negative map ``[B, H, W]`` that autograd can differentiate (``create_graph=True``).

    * ``"saliency"``: ``h = sum_c |dy^c/dx_c|``, the absolute gradient summed over colours;
    * ``"gradient_x_input"``: ``h = |sum_c x_c dy^c/dx_c|``;
    * ``"grad_cam"``: ``h = up(ReLU(sum_k alpha_k A^k))`` at ``layer``, ``alpha_k`` the mean gradient
      over the map, bilinearly upsampled to ``H x W`` (as :func:`xai_helpers.methods.cam.grad_cam`).

    If ``x`` requires grad (e.g. ``x = x0 + d`` with a perturbation ``d`` being optimised) the map is
    a function of it; otherwise of a fresh leaf copy. The map is also a function of every parameter
    that requires grad, which is what fine-tuning needs; freeze them (``core.explaining``) when only
    the input is optimised. The model is run as it is (set eval mode before). Through a ReLU network
    the map's gradient with respect to the input ignores how the ReLU gates switch (their second
    derivative is zero): attack a :func:`softplus_copy` instead.
    """
    return _map_and_logits(method, model, x, target, layer)[0]


def unit_mean(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Each map ``[B, H, W]`` divided by its mean over pixels (an all-zero map stays zero)."""
    return maps / maps.mean(dim=(-2, -1), keepdim=True).clamp_min(eps)


def _target_maps(target_map: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if not isinstance(target_map, torch.Tensor):
        raise TypeError("target_map must be a tensor [B, H, W] or [H, W]")
    if target_map.dim() == 2:
        target_map = target_map.expand(like.shape[0], *target_map.shape)
    if tuple(target_map.shape) != (like.shape[0], *like.shape[-2:]):
        raise ValueError(
            f"target_map must be [B, H, W] = {[like.shape[0], *like.shape[-2:]]} or [H, W], "
            f"got {list(target_map.shape)}"
        )
    if (target_map < 0).any() or not (target_map.flatten(1).amax(1) > 0).all():
        raise ValueError("target_map must be non-negative with a positive value in every map")
    return unit_mean(target_map.detach().to(like))


def map_loss(maps: torch.Tensor, target_maps: torch.Tensor) -> torch.Tensor:
    """``mean_pixels (unit_mean(h) - unit_mean(t))^2`` per map: ``[B]``, differentiable in ``maps``."""
    return (unit_mean(maps) - unit_mean(target_maps)).pow(2).mean(dim=(-2, -1))


# ----------------------------------------------------------------------------- input manipulation
@dataclass
class ManipulationResult:
    """What :func:`manipulate_input` did to each image of a batch of ``B``.

    ``x_adv [B, C, H, W]`` is the manipulated image and ``perturbation = x_adv - x``. The maps, all
    :func:`unit_mean`-scaled ``[B, H, W]`` and computed on the *original* (ReLU) model, are
    ``map_before`` (at ``x``), ``map_after`` (at ``x_adv``) and ``target_map``; ``mse_before`` and
    ``mse_after [B]`` are their mean squared differences to the target. ``logits_before`` and
    ``logits_after [B, N]`` are the original model's outputs, ``prediction_kept [B]`` whether its
    predicted class stayed. ``objective [iterations + 1, B]`` is the loss on the smooth copy at each
    iterate (the returned one is the best that kept the smooth copy's prediction).
    """

    x_adv: torch.Tensor
    perturbation: torch.Tensor
    map_before: torch.Tensor
    map_after: torch.Tensor
    target_map: torch.Tensor
    mse_before: torch.Tensor
    mse_after: torch.Tensor
    logits_before: torch.Tensor
    logits_after: torch.Tensor
    prediction_kept: torch.Tensor
    objective: torch.Tensor


def manipulate_input(
    method: GraphMethod,
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    target_map: torch.Tensor,
    *,
    layer: nn.Module | str | None = None,
    iterations: int = 200,
    lr: float = 5e-3,
    epsilon: float = 8 / 255,
    gamma: float = 10.0,
    beta: float = 10.0,
) -> ManipulationResult:
    """The input manipulation of Dombrowski et al. (2019): a :class:`ManipulationResult`.

    On ``g = softplus_copy(model, beta)`` (parameters frozen, eval mode) a perturbation ``d`` is
    optimised with Adam (``lr``, ``iterations`` steps) to minimise, for each image,

    ``L(d) = mean_pixels (h(x + d) - t)^2 + gamma * mean_classes (g(x + d) - g(x))^2``

    where ``h`` is ``method``'s map on the smooth copy (:func:`explanation_with_graph`, one of
    :data:`GRAPH_METHODS`; ``layer`` for Grad-CAM) and ``t`` the ``target_map`` (``[B, H, W]`` or one
    ``[H, W]`` for all, non-negative), both scaled by :func:`unit_mean`, and ``g`` the logits. After
    each step ``d`` is projected onto ``||d||_inf <= epsilon`` and onto ``0 <= x + d <= 1``. Of the
    ``iterations + 1`` iterates (``d = 0`` first) each image keeps the one with the lowest ``L`` among
    those where the smooth copy still predicts the class it predicts for ``x``. The maps before and
    after are then measured on the original ``model``, which is not changed. Each iteration costs a
    forward and two backward passes of the copy (the second through the first: ``create_graph``).

    Dombrowski et al. bound the perturbation only by the output term; the ball here makes "a small
    perturbation" a number a reader can read off. The defaults are the settings the tests check on
    a ``SmallCNN`` and 32 x 32 shapes; a larger image or network may need more iterations.
    """
    check_images(x)
    _check_method(method)
    iterations = int(_positive_number(iterations, "iterations", integer=True))
    lr = _positive_number(lr, "lr")
    epsilon = _positive_number(epsilon, "epsilon")
    gamma = _positive_number(gamma, "gamma", allow_zero=True)
    x = x.detach()
    batch = x.shape[0]
    targets = as_targets(target, batch, device=x.device)
    goal = _target_maps(target_map, x)
    layer_name = _layer_name(model, layer)
    smooth = softplus_copy(model, beta)
    d = torch.zeros_like(x, requires_grad=True)
    optimizer = torch.optim.Adam([d], lr=lr)
    best = torch.zeros_like(x)
    best_loss = torch.full((batch,), math.inf, dtype=torch.float64, device=x.device)
    objective = torch.empty(iterations + 1, batch, dtype=torch.float64)
    with explaining(smooth):
        with torch.no_grad():
            clean_logits = check_logits(smooth(x))
            clean_class = clean_logits.argmax(1)
        for step in range(iterations + 1):
            maps, logits = _map_and_logits(method, smooth, x + d, targets, layer_name)
            loss = map_loss(maps, goal) + gamma * (logits - clean_logits).pow(2).mean(1)  # [B]
            with torch.no_grad():
                objective[step] = loss.detach().double().cpu()
                better = (loss.detach().double() < best_loss) & (logits.argmax(1) == clean_class)
                best_loss = torch.where(better, loss.detach().double(), best_loss)
                best[better] = d.detach()[better]
            if step == iterations:
                break
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimizer.step()
            with torch.no_grad():
                d.clamp_(-epsilon, epsilon)
                d.copy_((x + d).clamp(0, 1) - x)
    x_adv = (x + best).detach()
    with explaining(model):
        map_before, logits_before = (t.detach() for t in _map_and_logits(method, model, x, targets, layer_name))
        map_after, logits_after = (t.detach() for t in _map_and_logits(method, model, x_adv, targets, layer_name))
    map_before, map_after = unit_mean(map_before), unit_mean(map_after)
    return ManipulationResult(
        x_adv=x_adv,
        perturbation=x_adv - x,
        map_before=map_before,
        map_after=map_after,
        target_map=goal,
        mse_before=(map_before - goal).pow(2).mean(dim=(1, 2)),
        mse_after=(map_after - goal).pow(2).mean(dim=(1, 2)),
        logits_before=logits_before,
        logits_after=logits_after,
        prediction_kept=logits_after.argmax(1) == logits_before.argmax(1),
        objective=objective,
    )


# ----------------------------------------------------------------------------- model manipulation
@dataclass
class FoolingResult:
    """What :func:`fine_tune_to_fool` returns: the fine-tuned copy ``model`` (eval mode) and, per epoch,
    the mean ``cross_entropy`` and mean ``map_loss`` over its minibatches (as trained, before each step)."""

    model: nn.Module
    cross_entropy: list[float] = field(default_factory=list)
    map_loss: list[float] = field(default_factory=list)


def fine_tune_to_fool(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    target_maps: torch.Tensor,
    method: GraphMethod = "grad_cam",
    *,
    layer: nn.Module | str | None = None,
    epochs: int = 20,
    lr: float = 3e-3,
    gamma: float = 0.3,
    minibatch_size: int = 32,
    seed: int = 0,
) -> FoolingResult:
    """Model manipulation (Heo et al. 2019): fine-tune a copy of ``model`` so that its maps match
    ``target_maps`` while it keeps classifying ``images`` as ``labels``. A :class:`FoolingResult`.

    The loss on a minibatch is Heo et al.'s "location fooling" objective with this module's map loss:

    ``L = CE(f(x), y) + gamma * mean_images mean_pixels (h(x) - t)^2``

    with ``h`` the map of the true class ``y`` (:func:`explanation_with_graph`, ``method`` and
    ``layer``) and ``t`` the target map (``target_maps [N, H, W]`` or one ``[H, W]`` for every image),
    both scaled by :func:`unit_mean`. Adam (``lr``) runs ``epochs`` passes over the data in minibatches
    of ``minibatch_size``, in an order drawn from a generator seeded with ``seed``. The copy stays in
    eval mode while it trains (batch-norm statistics frozen, no dropout), so the loss sees exactly
    the maps the fooled model will show; all its parameters are trained. ``model`` is not changed.
    ReLU networks need no smoothing here: the map's gradient with respect to the *weights* does not
    vanish.
    """
    check_images(images)
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be [N] = [{images.shape[0]}], got {list(labels.shape)}")
    _check_method(method)
    epochs = int(_positive_number(epochs, "epochs", integer=True))
    minibatch_size = int(_positive_number(minibatch_size, "minibatch_size", integer=True))
    lr = _positive_number(lr, "lr")
    gamma = _positive_number(gamma, "gamma", allow_zero=True)
    goal = _target_maps(target_maps, images)
    layer_name = _layer_name(model, layer)
    fooled = copy.deepcopy(model).eval()
    for p in fooled.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(fooled.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    result = FoolingResult(fooled)
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator).to(labels.device)
        ce_sum = map_sum = 0.0
        for start in range(0, len(order), minibatch_size):
            idx = order[start : start + minibatch_size]
            maps, logits = _map_and_logits(method, fooled, images[idx].detach(), labels[idx], layer_name)
            ce = F.cross_entropy(logits, labels[idx])
            fooling = map_loss(maps, goal[idx]).mean()
            optimizer.zero_grad(set_to_none=True)
            (ce + gamma * fooling).backward()
            optimizer.step()
            ce_sum += ce.item() * len(idx)
            map_sum += fooling.item() * len(idx)
        result.cross_entropy.append(ce_sum / len(labels))
        result.map_loss.append(map_sum / len(labels))
    optimizer.zero_grad(set_to_none=True)
    for p in fooled.parameters():
        p.grad = None
    return result
