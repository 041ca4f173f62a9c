"""Backward rules: how a gradient-like signal passes back through an activation function.

Deconvnet and guided backpropagation are the ordinary backward pass with one change: at every
activation ``y = f(x)`` the signal ``g`` arriving at the output (``g = dy^c/dy`` for the plain
gradient) is sent to the input by a *rule* instead of by the chain rule. A rule is an object
(:class:`BackwardRule`) with one method, ``backward(g, derivative, x)``, where ``derivative`` is
the activation's true local derivative ``f'(x)`` (same shape as ``x``):

=============  ==================================  ===============================
rule           backward signal to the input        reference
=============  ==================================  ===============================
``gradient``   ``f'(x) * g``                       plain backpropagation
``deconvnet``  ``max(g, 0)``                       Zeiler & Fergus (2014)
``guided``     ``f'(x) * max(g, 0)``               Springenberg et al. (2015)
=============  ==================================  ===============================

For a ReLU ``f'(x) = [x > 0]`` and these are exactly the papers' rules. The papers define them for
ReLU networks only. For the other activations this module knows, the book makes its own choice,
the one above: *gradient* is the true derivative; *deconvnet* rectifies the backward signal and
ignores the forward pass; *guided* keeps the true local derivative and rectifies the backward
signal. It reduces to the paper's rule on every ReLU-shaped activation (ReLU, ReLU6 where ``f' =
[0 < x < 6]``, LeakyReLU where ``f'`` is the slope) and needs nothing but ``f'``. No paper defines
guided backpropagation for SiLU, GELU or Hardswish (the maintainer of the widely used
``utkuozbulak/pytorch-cnn-visualizations`` says as much in its issue #78 and suggests the same
"positive signal times the forward gate"); note that SiLU's and GELU's ``f'`` is slightly negative
for ``x`` below about -1.3 and -0.75, so a guided map there can carry a small negative signal.

Recognised activations (module or functional call, in place or not):

* ReLU: ``nn.ReLU``, ``F.relu``, ``torch.relu``, ``torch.relu_``, ``Tensor.relu``,
  ``x.clamp(min=0)``, ``x.clamp_min(0)``, ``torch.clip(x, 0)``;
* capped ReLU ``min(max(0, x), c)``: ``nn.ReLU6``, ``F.relu6``, ``nn.Hardtanh(0, c)``,
  ``F.hardtanh(x, 0, c)``, ``x.clamp(0, c)``;
* ``nn.LeakyReLU`` / ``F.leaky_relu``; ``nn.SiLU`` / ``F.silu``; ``nn.GELU`` / ``F.gelu`` (both
  ``approximate`` modes); ``nn.Hardswish`` / ``F.hardswish``.

Gates and squashing functions (sigmoid, hard sigmoid, tanh, softmax, as in squeeze-and-excitation
blocks) are not rectifiers and keep their true derivative under every rule, as in the papers;
the same holds for attention (its softmax, or a fused attention call). Since the map is then the
method on the rectifiers only, :func:`relu_rule` warns, naming the gates and attention calls it
passed.
Any other activation (ELU, SELU, CELU, Mish, PReLU, Softplus, ..., and a Hardtanh whose lower
limit is not 0) has no defined deconvnet or guided rule: :func:`relu_rule` raises rather than
silently returning the plain gradient, and it raises too when a forward pass meets no activation
it recognises.

The mechanism: inside :func:`relu_rule` a :class:`torch.overrides.TorchFunctionMode` sees every
torch function call. Activation modules call the functional ops, so this one mechanism covers
modules and functional calls alike; each recognised call is computed by :class:`_RuleFunction`,
whose forward is the activation and whose backward is the rule. Nothing on the model is changed.

The activations' local derivatives ``f'`` are written once, here (:func:`local_derivative`): LRP and
DeepLIFT (:mod:`xai_helpers.relevance.hooks`) take theirs from it too. The rules of layer-wise
relevance propagation, which act on linear layers rather than activations, are in
:mod:`xai_helpers.relevance.rules`.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .core import Target, check_autograd_available, check_images, explaining, select_scores

__all__ = [
    "Activation",
    "BackwardRule",
    "Gradient",
    "Deconvnet",
    "Guided",
    "RULES",
    "SUPPORTED_ACTIVATIONS",
    "as_rule",
    "recognise",
    "relu_rule",
    "input_gradients",
    "local_derivative",
    "apply_rule",
]


# ----------------------------------------------------------------------------------- activations
@dataclass(frozen=True)
class Activation:
    """One elementwise activation ``y = f(x)``: its name, ``f``, its local derivative ``f'`` and the chain rule.

    ``function(x)`` and ``derivative(x)`` map a tensor to one of the same shape; ``chain(g, x)`` is
    ``f'(x) * g``, computed by ATen's own backward kernel of the activation (one pass, no ``f'`` tensor).
    """

    name: str
    function: Callable[[torch.Tensor], torch.Tensor]
    derivative: Callable[[torch.Tensor], torch.Tensor]
    chain: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


_aten = torch.ops.aten


def _step(condition: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return condition.to(like.dtype)


def relu() -> Activation:
    """``max(0, x)``; ``f' = [x > 0]``."""
    return Activation("relu", torch.relu, lambda x: _step(x > 0, x), lambda g, x: _aten.threshold_backward(g, x, 0))


def capped_relu(cap: float) -> Activation:
    """``min(max(0, x), cap)`` (ReLU6 for ``cap = 6``); ``f' = [0 < x < cap]``."""
    return Activation(f"relu{cap:g}" if cap != 6 else "relu6", lambda x: x.clamp(0, cap),
                      lambda x: _step((x > 0) & (x < cap), x), lambda g, x: _aten.hardtanh_backward(g, x, 0, cap))


def leaky_relu(slope: float) -> Activation:
    """``x`` for ``x > 0``, ``slope * x`` elsewhere; ``f'`` is 1 or ``slope``."""
    return Activation("leaky_relu", lambda x: F.leaky_relu(x, slope),
                      lambda x: torch.where(x > 0, 1.0, slope).to(x.dtype),
                      lambda g, x: _aten.leaky_relu_backward(g, x, slope, False))


def silu() -> Activation:
    """``x * s(x)`` with the logistic sigmoid ``s``; ``f' = s(x) (1 + x (1 - s(x)))``."""

    def derivative(x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(x)
        return s * (1 + x * (1 - s))

    return Activation("silu", F.silu, derivative, _aten.silu_backward)


def gelu(approximate: str = "none") -> Activation:
    """``x * Phi(x)``; ``f' = Phi(x) + x phi(x)`` (``approximate="tanh"``: the derivative of the tanh form)."""
    if approximate == "none":
        def derivative(x: torch.Tensor) -> torch.Tensor:
            cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
            pdf = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
            return cdf + x * pdf
    elif approximate == "tanh":
        def derivative(x: torch.Tensor) -> torch.Tensor:
            # f = x/2 (1 + tanh(u)), u = k (x + 0.044715 x^3), k = sqrt(2/pi)
            k = math.sqrt(2 / math.pi)
            t = torch.tanh(k * (x + 0.044715 * x**3))
            return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)
    else:
        raise ValueError(f"unknown GELU approximation {approximate!r}")
    return Activation("gelu", lambda x: F.gelu(x, approximate=approximate), derivative,
                      lambda g, x: _aten.gelu_backward(g, x, approximate=approximate))


def hardswish() -> Activation:
    """``x * min(max(x + 3, 0), 6) / 6``; ``f'`` is 0 below -3, ``(2x + 3) / 6`` up to 3, 1 above."""

    def derivative(x: torch.Tensor) -> torch.Tensor:
        return torch.where(x < -3, 0.0, torch.where(x > 3, 1.0, (2 * x + 3) / 6)).to(x.dtype)

    return Activation("hardswish", F.hardswish, derivative, _aten.hardswish_backward)


#: Activation modules the rules apply to (their functional forms are recognised too).
SUPPORTED_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Hardswish)
# Rectifier-like activations with no deconvnet/guided rule: relu_rule refuses them.
_UNKNOWN_MODULES = (nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.PReLU, nn.RReLU, nn.Softplus, nn.GLU, nn.Threshold,
                    nn.Hardshrink, nn.Softshrink, nn.Tanhshrink, nn.Softsign, nn.LogSigmoid)
_UNKNOWN_FUNCTIONS = {
    F.elu, F.elu_, F.selu, F.celu, F.mish, F.softplus, F.prelu, F.rrelu, F.rrelu_, F.glu, F.threshold,
    getattr(F, "threshold_"), F.hardshrink, F.softshrink, F.tanhshrink, F.softsign, F.logsigmoid,
    torch.selu, torch.selu_,
    torch.celu, torch.celu_, torch.prelu, torch.rrelu, torch.hardshrink, torch._C._nn.elu,
    torch._C._nn.softplus, torch._C._nn.mish, torch._C._nn.glu, torch._C._nn.softshrink,
}


# Gates (squeeze-excitation's sigmoid, a tanh) and attention (its softmax) are not rectifiers: no paper
# defines a deconvnet or guided rule for them, so the plain gradient passes through them and relu_rule
# says so in a warning.
_GATE_FUNCTIONS = {
    torch.sigmoid, torch.sigmoid_, torch.Tensor.sigmoid, torch.Tensor.sigmoid_, F.sigmoid, F.hardsigmoid,
    torch._C._nn.hardsigmoid, torch._C._nn.hardsigmoid_, torch.tanh, torch.tanh_, torch.Tensor.tanh,
    torch.Tensor.tanh_, F.tanh, torch.softmax, torch.Tensor.softmax, F.softmax, F.scaled_dot_product_attention,
    torch._native_multi_head_attention, F.multi_head_attention_forward,
}


def _module_activation(module: nn.Module) -> Activation | None:
    """The :class:`Activation` an activation module computes (``None`` for any other module)."""
    if isinstance(module, nn.ReLU):
        return relu()
    if isinstance(module, nn.Hardtanh):  # nn.ReLU6 is a Hardtanh(0, 6)
        return capped_relu(module.max_val) if module.min_val == 0 else None
    if isinstance(module, nn.LeakyReLU):
        return leaky_relu(module.negative_slope)
    if isinstance(module, nn.SiLU):
        return silu()
    if isinstance(module, nn.GELU):
        return gelu(module.approximate)
    if isinstance(module, nn.Hardswish):
        return hardswish()
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _clamp(x, min=None, max=None, *_, **__) -> Activation | None:  # noqa: A002 - torch's own names
    """``clamp(x, 0)`` is a ReLU and ``clamp(x, 0, c)`` a capped ReLU; any other clamp is not an activation."""
    if not (_number(min) and min == 0):
        return None
    if max is None:
        return relu()
    return capped_relu(float(max)) if _number(max) and max > 0 else None


def _hardtanh(x, min_val=-1.0, max_val=1.0, *_, **__) -> Activation | str:
    return capped_relu(float(max_val)) if min_val == 0 else f"hardtanh({min_val}, {max_val})"


# Each recognised torch function -> a parser of its arguments giving the Activation (None: not an
# activation here, e.g. clamp(x, -1, 1); a string: an activation without a rule, named for the error).
_PARSERS: dict[Callable[..., Any], Callable[..., Activation | str | None]] = {}
_f: Any
for _f in (F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_):
    _PARSERS[_f] = lambda x, *_, **__: relu()
for _f in (F.relu6, torch._C._nn.relu6, torch._C._nn.relu6_):
    _PARSERS[_f] = lambda x, *_, **__: capped_relu(6.0)
for _f in (F.hardtanh, F.hardtanh_, torch._C._nn.hardtanh, torch._C._nn.hardtanh_):
    _PARSERS[_f] = _hardtanh
for _f in (torch.clamp, torch.clamp_, torch.clip, torch.clip_, torch.Tensor.clamp, torch.Tensor.clamp_,
           torch.Tensor.clip, torch.Tensor.clip_, torch.clamp_min, torch.clamp_min_, torch.Tensor.clamp_min,
           torch.Tensor.clamp_min_):
    _PARSERS[_f] = _clamp
for _f in (F.leaky_relu, F.leaky_relu_, torch._C._nn.leaky_relu, torch._C._nn.leaky_relu_):
    _PARSERS[_f] = lambda x, negative_slope=0.01, *_, **__: leaky_relu(float(negative_slope))
for _f in (F.silu, torch._C._nn.silu, torch._C._nn.silu_):
    _PARSERS[_f] = lambda x, *_, **__: silu()
for _f in (F.gelu,):
    _PARSERS[_f] = lambda x, approximate="none", *_, **__: gelu(approximate)
for _f in (F.hardswish, torch._C._nn.hardswish, torch._C._nn.hardswish_):
    _PARSERS[_f] = lambda x, *_, **__: hardswish()


def recognise(func: Callable[..., Any], args: tuple, kwargs: dict) -> Activation | str | None:
    """What a torch function call computes: an :class:`Activation`, the name of an activation that
    has no rule (a string), or ``None`` (not an activation)."""
    if func in _UNKNOWN_FUNCTIONS:
        return getattr(func, "__name__", str(func))
    parser = _PARSERS.get(func)
    if parser is None or not args or not isinstance(args[0], torch.Tensor):
        return None
    return parser(*args, **kwargs)


# ----------------------------------------------------------------------------------------- rules
class BackwardRule:
    """A backward rule through an activation: ``backward(g, derivative, x) -> signal to x``.

    ``g`` is the signal arriving at the activation's output, ``derivative`` its true local
    derivative ``f'(x)`` and ``x`` its input, all the same shape. Subclass it and write
    ``backward`` to make a new rule (with any parameters in ``__init__``); :func:`relu_rule` does
    the rest. ``exact`` rules reproduce the true gradient, so they apply to any activation. A rule
    that never reads ``derivative`` sets ``uses_derivative = False`` and is passed ``None`` for it
    (saving two full-size operations per activation in the backward pass). A rule of the form
    ``f'(x) * s(g)`` may also write ``signal(g) -> s(g)``: the activation's own backward kernel then
    multiplies by ``f'(x)`` (:attr:`Activation.chain`) and ``backward`` is not called (the same
    result, one pass fewer; ``backward`` still defines the rule).
    """

    name: ClassVar[str] = "rule"
    exact: ClassVar[bool] = False
    uses_derivative: ClassVar[bool] = True

    def backward(self, g: torch.Tensor, derivative: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def signal(self, g: torch.Tensor) -> torch.Tensor | None:
        """``s(g)`` for a rule ``f'(x) * s(g)``; ``None`` (the default): call :meth:`backward` instead."""
        return None

    def __call__(self, g: torch.Tensor, derivative: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.backward(g, derivative, x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Gradient(BackwardRule):
    """The chain rule: ``f'(x) * g``."""

    name = "gradient"
    exact = True

    def backward(self, g, derivative, x):
        return derivative * g

    def signal(self, g):
        return g


class Deconvnet(BackwardRule):
    """Zeiler & Fergus (2014): ``max(g, 0)``, the rectifier applied to the backward signal."""

    name = "deconvnet"
    uses_derivative = False

    def backward(self, g, derivative, x):
        return g.clamp_min(0)


class Guided(BackwardRule):
    """Springenberg et al. (2015): ``f'(x) * max(g, 0)``; for a ReLU ``[x > 0] * max(g, 0)``."""

    name = "guided"

    def backward(self, g, derivative, x):
        return g.clamp_min(0).mul_(derivative)      # in place on the new tensor: one allocation fewer

    def signal(self, g):
        return g.clamp_min(0)


#: The built-in rules by name, as accepted by :func:`relu_rule`.
RULES: dict[str, BackwardRule] = {rule.name: rule for rule in (Gradient(), Deconvnet(), Guided())}


def as_rule(rule: str | BackwardRule) -> BackwardRule:
    """A rule object from a rule object or one of the names in :data:`RULES`."""
    if isinstance(rule, BackwardRule):
        return rule
    if isinstance(rule, str) and rule in RULES:
        return RULES[rule]
    raise ValueError(f"unknown rule {rule!r}; choose one of {tuple(RULES)} or pass a BackwardRule object")


def local_derivative(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The derivative ``f'(x)`` (same shape as ``x``) of an activation module at its input ``x``."""
    activation = _module_activation(module)
    if activation is None:
        raise ValueError(f"no backward rule is defined for {type(module).__name__}")
    return activation.derivative(x)


def apply_rule(rule: str | BackwardRule, derivative: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The backward signal to an activation's input from its local derivative and incoming ``g``."""
    return as_rule(rule).backward(g, derivative, derivative)  # the built-in rules do not read x


# ------------------------------------------------------------------------------------- mechanism
class _RuleFunction(torch.autograd.Function):
    """Forward: the activation ``f(x)``. Backward: ``rule.backward(g, f'(x), x)`` instead of ``f'(x) g``."""

    @staticmethod
    def forward(ctx, x, activation, rule):  # noqa: D102 - see class docstring
        ctx.save_for_backward(x)
        ctx.activation, ctx.rule = activation, rule
        return activation.function(x)

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        (x,) = ctx.saved_tensors
        signal = ctx.rule.signal(g)
        if signal is not None:      # f'(x) * s(g) in the activation's own backward kernel
            return ctx.activation.chain(signal, x), None, None
        derivative = ctx.activation.derivative(x) if ctx.rule.uses_derivative else None
        return ctx.rule.backward(g, derivative, x), None, None


class _RuleMode(TorchFunctionMode):
    """Reroutes every recognised activation call through :class:`_RuleFunction` while grad is on."""

    def __init__(self, rule: BackwardRule):
        super().__init__()
        self.rule = rule
        self.applied = 0
        self.gates: dict[str, int] = {}     # gate function name -> calls that kept the plain gradient

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # Under no_grad (a forward without gradients, or inside the backward pass itself) nothing changes.
        if not torch.is_grad_enabled():
            return func(*args, **kwargs)
        if func in _GATE_FUNCTIONS and not self.rule.exact:
            name = getattr(func, "__name__", str(func)).rstrip("_")
            self.gates[name] = self.gates.get(name, 0) + 1
            return func(*args, **kwargs)
        activation = recognise(func, args, kwargs)
        if activation is None:
            return func(*args, **kwargs)
        if isinstance(activation, str):
            if self.rule.exact:
                return func(*args, **kwargs)
            raise NotImplementedError(
                f"the {self.rule.name!r} rule is not defined for the activation {activation!r} that this model "
                "calls (rules exist for ReLU, ReLU6/capped ReLU, LeakyReLU, SiLU, GELU and Hardswish). The result "
                "would not be the method you asked for; use saliency() for the plain gradient."
            )
        self.applied += 1
        # Out of place even for relu_/inplace=True: the pre-activation must survive for the backward.
        return _RuleFunction.apply(args[0], activation, self.rule)


def _check_module_kinds(model: nn.Module, rule: BackwardRule) -> list[str]:
    """Names of the recognised activation modules; raise on modules with no such rule."""
    if rule.exact:
        return [name for name, m in model.named_modules() if _module_activation(m) is not None]
    unknown = sorted({type(m).__name__ for m in model.modules()
                      if isinstance(m, _UNKNOWN_MODULES) or (isinstance(m, nn.Hardtanh) and m.min_val != 0)})
    if unknown:
        raise NotImplementedError(
            f"the {rule.name!r} rule is not defined for the activation modules {', '.join(unknown)} of this model "
            "(rules exist for ReLU, ReLU6/capped ReLU, LeakyReLU, SiLU, GELU and Hardswish). Use saliency() for "
            "the plain gradient, or write a BackwardRule whose backward handles them."
        )
    return [name for name, m in model.named_modules() if _module_activation(m) is not None]


@contextmanager
def relu_rule(model: nn.Module, backward: str | BackwardRule) -> Iterator[list[str]]:
    """Within the block, backpropagate through every recognised activation of ``model`` by the rule ``backward``.

    ``backward`` is a :class:`BackwardRule` or a name from :data:`RULES` (``"gradient"``,
    ``"deconvnet"``, ``"guided"``). Yields the names of the activation *modules* the rule applies
    to; functional calls (``F.relu``, ``x.clamp(min=0)``, ...) follow the rule as well. A forward
    pass of ``model`` under grad mode that meets no recognised activation, or one that has no rule,
    raises (except for the exact ``gradient`` rule), so a method never returns the plain gradient
    under another name. Compiled code (``torch.compile``, ``nn.Module.compile``) runs eagerly inside
    the block (``torch.compiler.set_stance("force_eager")``): a compiled graph would bypass the rule.
    Nothing on the model is changed; the one forward hook on ``model`` (for that check) is removed
    on exit, even after an error. In-place activations are computed out of place inside the block
    (a model that ignores the returned tensor of an in-place activation would see its input
    unchanged; ``nn.Sequential`` and torchvision's models use the returned tensor).
    """
    rule = as_rule(backward)
    names = _check_module_kinds(model, rule)
    mode = _RuleMode(rule)
    depth_and_count: list[int] = []

    def pre_hook(_module, _args):
        depth_and_count.append(mode.applied)
        if len(depth_and_count) == 1:
            mode.gates.clear()

    def post_hook(_module, _args, _output):
        before = depth_and_count.pop()
        if not torch.is_grad_enabled() or rule.exact:
            return
        if mode.applied == before:
            raise NotImplementedError(
                f"the {rule.name!r} rule found no activation it applies to in this model's forward pass (it knows "
                "ReLU, ReLU6/capped ReLU, LeakyReLU, SiLU, GELU and Hardswish, as modules or functions): the "
                "result would be the plain gradient. Use saliency() for that."
            )
        if mode.gates and not depth_and_count:
            gates = ", ".join(f"{n} x{k}" for n, k in sorted(mode.gates.items()))
            warnings.warn(
                f"the {rule.name!r} rule modified {mode.applied - before} activations of this model but passed the "
                f"plain gradient through its gates and attention ({gates}): they are not rectifiers and no paper "
                "defines the rule for them. The map is the method on the rectifiers only.",
                UserWarning, stacklevel=2)

    handles = [model.register_forward_pre_hook(pre_hook), model.register_forward_hook(post_hook)]
    try:
        with torch.compiler.set_stance("force_eager"), mode:
            yield names
    finally:
        for handle in handles:
            handle.remove()


def input_gradients(
    model: nn.Module, x: torch.Tensor, target: Target, backward: str | BackwardRule | None = None
) -> torch.Tensor:
    """``d y^c / d x`` for each image, ``[B, C, H, W]``, under the backward rule ``backward`` (a name from
    :data:`RULES` or a :class:`BackwardRule`; ``None``: plain autograd).

    ``x`` is detached and cloned before it gets ``requires_grad`` (the caller's tensor is untouched);
    the parameters are frozen by :func:`~xai_helpers.core.explaining`, so no parameter gets a ``.grad``.
    Images do not interact (eval mode), so the gradient of the summed scores is each image's own
    gradient. The result never requires grad.
    """
    check_images(x)
    check_autograd_available("a gradient")
    leaf = x.detach().clone().requires_grad_(True)
    with explaining(model), torch.enable_grad():
        if backward is None:
            scores = select_scores(model(leaf.clone()), target)
            (g,) = torch.autograd.grad(scores.sum(), leaf)
        else:
            with relu_rule(model, backward):
                # the model gets a copy of the leaf, so a model that works in place on its input still runs
                scores = select_scores(model(leaf.clone()), target)
                (g,) = torch.autograd.grad(scores.sum(), leaf)
    return g.detach()
