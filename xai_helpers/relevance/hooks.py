"""What applies relevance rules to a model: forward hooks, set up and removed by :func:`relevance_rules`.

Within :func:`relevance_rules` the model's backward pass propagates relevance:

* each linear and average-pooling layer gets the rule its composite says
  (:mod:`xai_helpers.relevance.rules`, :mod:`xai_helpers.relevance.composites`);
* an activation ``a = f(z)`` (ReLU, ReLU6, LeakyReLU) passes relevance on unchanged, ``R(z) =
  R(a)``, i.e. its backward multiplier is ``f(z) / z`` instead of ``f'(z)``. For DeepLIFT it is the
  Rescale multiplier ``(f(z) - f(z_ref)) / (z - z_ref)``;
* a residual sum ``s = a + b`` is differentiated normally: ``R(a) = a * g(s) = a / s * R(s)``,
  so relevance splits in proportion to the summands' contributions (the LRP-0 rule for a sum);
* max pooling keeps its gradient (winner takes all); flatten and dropout (eval) keep theirs;
* batch norm is merged into the preceding ``Conv2d``/``Linear`` for the duration
  (:func:`~xai_helpers.relevance.canonizers.merge_batchnorm`) and restored bit for bit.

:func:`check_propagatable` says, before any of that, whether a model can be propagated through.
Everything is undone on exit, even after an error.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..backward_rules import local_derivative
from ..core import explaining, forward_until
from .canonizers import BATCHNORMS, merge_batchnorm
from .composites import Composite
from .rules import LINEAR, POOLS, RelevanceState

__all__ = ["check_propagatable", "relevance_rules", "first_layer_input"]

#: The activations relevance passes unchanged (LRP) or by the Rescale multiplier (DeepLIFT).
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU)
#: Modules whose plain gradient is already the right relevance rule (see the module docstring).
GRADIENT_PASS = (nn.MaxPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Identity, nn.Dropout, nn.Dropout2d)


class _Rescale(torch.autograd.Function):
    """Forward: a copy of the activation's output ``a = f(z)``. Backward: ``g * (a - a_ref) / (z - z_ref)``.

    Without a reference (LRP: relevance passes the activation unchanged) the multiplier is
    ``a / z`` (0 where ``z = 0``; every supported activation has ``f(0) = 0``). With one (DeepLIFT
    Rescale) it falls back to the derivative ``f'(z)`` where ``|z - z_ref| < 1e-6``.
    """

    @staticmethod
    def forward(ctx, z, a, z_ref, a_ref, module):  # noqa: D102
        ctx.module = module
        ctx.has_ref = z_ref is not None
        ctx.save_for_backward(z, a, *((z_ref, a_ref) if ctx.has_ref else ()))
        return a.clone()

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        if ctx.has_ref:
            z, a, z_ref, a_ref = ctx.saved_tensors
            m = _activation_multiplier(ctx.module, z, a, z_ref, a_ref)
        else:
            z, a = ctx.saved_tensors
            m = torch.nan_to_num_(a / z, nan=0.0)     # 0 / 0 where z = 0 (there a = f(0) = 0)
        return m.mul_(g), None, None, None, None


def _preprocessing_types() -> tuple[type, ...]:
    from ..models import Normalize

    return (Normalize,)


def check_propagatable(model: nn.Module, allow: tuple[type, ...] = ()) -> None:
    """Raise a ``ValueError`` naming the first module relevance cannot be propagated through.

    Supported leaf modules: ``Conv2d`` (also grouped/depthwise), ``Linear``, batch norm after one
    of them, ReLU/ReLU6/LeakyReLU, average/adaptive average pooling, max pooling, ``Flatten``,
    ``Identity``, ``Dropout`` and the package's ``Normalize``, plus the types in ``allow``. A module
    that holds parameters of its own but is none of these (a custom layer) is refused too.
    Functional operations inside a container's ``forward`` (``x + y``, ``torch.flatten``,
    ``F.relu``) cannot be seen; additions and ReLUs are handled correctly by their gradient.
    """
    known = LINEAR + POOLS + ACTIVATIONS + BATCHNORMS + GRADIENT_PASS + _preprocessing_types() + tuple(allow)
    attention = next((n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)), None)
    if attention is not None and nn.MultiheadAttention not in allow:
        raise ValueError(
            f"cannot propagate relevance through the attention of {attention!r} (MultiheadAttention): the "
            "relevance rules here are for convolutional networks (Conv2d, Linear, pooling, batch norm, ReLU-like "
            "activations), and attention and LayerNorm need rules of their own (Ali et al. 2022, AttnLRP). "
            "Explain a transformer with a gradient method or a CAM on its tokens (grad_cam(..., layer="
            "find_last_conv_layer(model))).")
    for name, m in model.named_modules():
        own_params = [p for p, _ in m.named_parameters(recurse=False)]
        if isinstance(m, known) or (isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)) and not own_params):
            continue    # an empty container is the identity (ShuffleNet's stride-1 branch1)
        if own_params:
            raise ValueError(
                f"cannot propagate relevance through {name or 'the model'!r} ({type(m).__name__}): it has parameters "
                f"of its own ({', '.join(own_params)}) and no relevance rule; split it into Conv2d/Linear layers")
        if not any(True for _ in m.children()):
            raise ValueError(
                f"cannot propagate relevance through {name!r} ({type(m).__name__}): supported are Conv2d, Linear, "
                "BatchNorm after a Conv2d/Linear, ReLU, ReLU6, LeakyReLU, average and max pooling, Flatten, "
                "Identity, Dropout. Use gradient methods (xai_helpers.methods.gradients) for this model")


def _activation_multiplier(module: nn.Module, z: torch.Tensor, a: torch.Tensor,
                           z_ref: torch.Tensor | None, a_ref: torch.Tensor | None) -> torch.Tensor:
    """``(a - a_ref) / (z - z_ref)`` (``a_ref = f(0) = 0`` and ``z_ref = 0`` when not given), and the
    derivative ``f'(z)`` where ``|z - z_ref| < 1e-6`` (there the quotient is numerically meaningless)."""
    dz = z if z_ref is None else z - z_ref
    da = a if a_ref is None else a - a_ref
    slope = local_derivative(module, z)     # the activation's f', as the backward rules define it
    close = dz.abs() < 1e-6
    return torch.where(close, slope, da / torch.where(close, torch.ones_like(dz), dz))


@contextmanager
def relevance_rules(model: nn.Module, composite: Composite | None = None, *, mode: str = "lrp",
                    record: Sequence[str] = (), allow: tuple[type, ...] = ()) -> Iterator[RelevanceState]:
    """Within the block, ``model``'s backward pass propagates relevance (``mode="lrp"``) or DeepLIFT
    multipliers (``mode="deeplift"``: run the reference through the model first, with
    ``state.recording = True`` and no gradient; the activations' reference values are recorded).

    Eval mode and frozen parameters (:func:`~xai_helpers.core.explaining`), batch norm merged
    (:func:`~xai_helpers.relevance.canonizers.merge_batchnorm`, LRP only), and forward hooks: on
    each linear/pooling layer its rule; on each activation a pre-hook that hands it a copy of its
    input (so ``inplace=True`` cannot overwrite the pre-activation) and a hook that sets its
    backward multiplier; on the first linear layer a pre-hook that makes its input the graph leaf.
    All of it is undone on exit, even after an error.
    """
    if mode not in ("lrp", "deeplift"):
        raise ValueError(f"mode must be 'lrp' or 'deeplift', got {mode!r}")
    check_propagatable(model, allow)
    composite = composite or Composite()
    linears = [n for n, m in model.named_modules() if isinstance(m, LINEAR)]
    if not linears:
        raise ValueError("the model has no Conv2d or Linear layer to propagate relevance through")
    modules = dict(model.named_modules())
    for name in record:
        if name not in modules:
            raise ValueError(f"cannot record relevance at {name!r}: the model has no such module")
    rules = composite.rules(model) if mode == "lrp" else {}
    state = RelevanceState(rules=rules, first=linears[0], mode=mode)
    inputs: dict[int, list[torch.Tensor]] = {}
    ran_linear: list[str] = []

    def first_pre_hook(module, args):
        if ran_linear:
            raise RuntimeError(f"{ran_linear[0]!r} ran before {state.first!r}, the first linear layer in "
                               "model.modules() order; the input layer must come first")
        state.leaf = args[0].detach().requires_grad_(True)
        return (state.leaf,) + tuple(args[1:])

    def make_rule_hook(name, rule):
        def hook(module, args, output):
            ran_linear.append(name)
            if not torch.is_grad_enabled():
                return output
            return rule.apply(module, args[0], output, state)
        return hook

    refs: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def act_pre_hook(module, args):
        inputs.setdefault(id(module), []).append(args[0])
        if getattr(module, "inplace", False):       # the in-place op must not overwrite the pre-activation
            return (args[0].clone(),) + tuple(args[1:])
        return None

    def act_hook(module, _args, output):
        z = inputs[id(module)].pop()
        if state.recording:                          # DeepLIFT's reference pass
            refs.setdefault(id(module), []).append((z.detach(), output.detach()))
            return output
        if not torch.is_grad_enabled():
            return output
        if mode == "deeplift":
            z_ref, a_ref = refs[id(module)].pop(0)
            return _Rescale.apply(z, output.detach(), z_ref, a_ref, module)
        return _Rescale.apply(z, output.detach(), None, None, module)

    def make_record_hook(name):
        def hook(module, args, output):
            if torch.is_grad_enabled() and output.requires_grad:
                value = output.detach()
                output.register_hook(lambda g: state.relevance.__setitem__(name, value * g))
            return output
        return hook

    handles = []
    with explaining(model), (merge_batchnorm(model) if mode == "lrp" else _nothing()):
        try:
            if mode == "lrp":  # DeepLIFT multiplies by x - x_ref in pixel space, through the preprocessing
                handles.append(modules[state.first].register_forward_pre_hook(first_pre_hook))
            for name, rule in rules.items():
                handles.append(modules[name].register_forward_hook(make_rule_hook(name, rule)))
            for m in model.modules():
                # LRP through ReLU and LeakyReLU: f(z) / z is their derivative, autograd's own backward
                plain = mode == "lrp" and isinstance(m, (nn.ReLU, nn.LeakyReLU)) and not m.inplace
                if isinstance(m, ACTIVATIONS) and not plain:
                    handles.append(m.register_forward_pre_hook(act_pre_hook))
                    handles.append(m.register_forward_hook(act_hook))
            for name in record:
                handles.append(modules[name].register_forward_hook(make_record_hook(name)))
            yield state
        finally:
            for h in handles:
                h.remove()
            inputs.clear()
            refs.clear()


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def first_layer_input(model: nn.Module, first: nn.Module | str, x: torch.Tensor) -> torch.Tensor:
    """What the layer ``first`` receives when ``model`` is fed ``x`` (a copy, without autograd).

    The forward pass stops there (:func:`~xai_helpers.core.forward_until`): the z^B rule maps its
    pixel bounds through the model's preprocessing (e.g. ``Normalize``) this way.
    """
    with torch.no_grad():
        (value,) = forward_until(model, x, [first], inputs=True).values()
    return value.detach().clone()
