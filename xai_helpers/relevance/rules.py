"""Relevance rules: how relevance passes back through a linear layer ``z = W x + b``.

LRP is a gradient under *modified backward rules* (the "gradient trick"). Every tensor ``a`` in the
network carries a relevance ``R(a) = a * g(a)`` where ``g(a)`` is what autograd sends back to ``a``.
A linear layer (``Conv2d``, ``Linear``, average pooling) with a rule's modified pre-activation
``z'(x)`` gets the backward ``g(x) = d/dx [ z'(x) * stopgrad(z * g(z) / z') ]``, i.e. ``R_j = x_j
sum_k w'_jk R_k / z'_k``: :class:`Rule` and its subclasses say which ``z'`` (LRP-0, epsilon, gamma,
z+, alpha-beta, z^B). The autograd functions below compute the common rules in few operations.

:class:`RelevanceState` is what a rule may read and write during one pass (the pixel bounds of the
z^B rule, the extra graph leaves); :func:`xai_helpers.relevance.hooks.relevance_rules` sets it up.
Which rule each layer gets is said by a :class:`~xai_helpers.relevance.composites.Composite`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Rule", "ZeroRule", "EpsilonRule", "GammaRule", "ZPlusRule", "AlphaBetaRule", "ZBoxRule", "RelevanceState"]

#: The linear layers that rules apply to.
LINEAR = (nn.Conv2d, nn.Linear)
Linear = nn.Conv2d | nn.Linear
#: Parameter-free linear layers: average pooling (rules whose ``pools`` is true apply to them).
POOLS = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
STABILIZER = 1e-6  # added with the denominator's sign, so that R / z' never divides by zero


def _stabilize(d: torch.Tensor, eps: float = STABILIZER) -> torch.Tensor:
    """``d + eps * sign(d)`` with ``sign(0) = +1``."""
    return torch.copysign(d.new_tensor(eps), d).add_(d)   # one new tensor; +0 counts as positive


class _Rewire(torch.autograd.Function):
    """Forward: a copy of ``value``. Backward: ``g * z * c_i / stab(d_i)`` into each ``t_i``.

    ``_Rewire.apply(value, z, [(c_1, d_1), ...], t_1, ...)``: the output has the value of the real
    layer ``z``; its gradient flows into the modified pre-activations ``t_i`` (with graphs to the
    layer's input), weighted by coefficients ``c_i`` (numbers or tensors) over denominators ``d_i``.
    """

    @staticmethod
    def forward(ctx, value, z, coefs, *modified):  # noqa: D102
        ctx.coefs = coefs
        ctx.save_for_backward(z)
        return value.clone()    # a copy: an in-place op after the layer must not touch saved tensors

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        (z,) = ctx.saved_tensors
        gz = g * z
        grads, cache = [], {}
        for c, d in ctx.coefs:
            if id(d) not in cache:
                cache[id(d)] = gz / _stabilize(d)
            grad = cache[id(d)]
            grads.append(grad if isinstance(c, float) and c == 1.0 else grad * c)
        return (None, None, None, *grads)


class _Epsilon(torch.autograd.Function):
    """Forward: a copy of ``z``. Backward: ``g * z / (z + eps sign z) = g * |z| / (|z| + eps)``."""

    @staticmethod
    def forward(ctx, z, eps):  # noqa: D102
        ctx.eps = eps
        ctx.save_for_backward(z)
        return z.clone()

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        (z,) = ctx.saved_tensors
        m = z.abs()
        return m.div_(m + ctx.eps).mul_(g), None


def _linear_input_grad(module: Linear, x: torch.Tensor, weight: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``d/dx <g, module's forward at x with weight>``: the transposed convolution (or ``g @ W``), bias-free.

    The real input ``x`` is passed (not only its shape), so that the backend picks the same
    convolution algorithm as for the forward pass."""
    if isinstance(module, nn.Conv2d):
        return torch.ops.aten.convolution_backward(
            g, x, weight, None, module.stride, module.padding, module.dilation, False, [0, 0],
            module.groups, (True, False, False))[0]
    return g @ weight


class _Gamma(torch.autograd.Function):
    """LRP-gamma (:class:`GammaRule`) for a ``Conv2d``/``Linear`` layer: forward a copy of ``z``, backward the rule.

    With ``w_up = w + gamma w^+`` and ``w_down = w + gamma w^-``, the numerator ``x_j w_jk + gamma
    (x_j w_jk)^+`` is ``x_j w_up_jk`` where ``x_j >= 0`` and ``x_j w_down_jk`` where ``x_j < 0`` (and
    the other way round for the ``z_k < 0`` branch). So the backward is one transposed convolution
    with ``w_up`` when ``x >= 0`` (after a ReLU) and relevance reaches only ``z_k >= 0`` (before a
    ReLU), two or four otherwise. The denominators need ``sum_j (x_j w_jk)^+``: one extra
    convolution, ``x`` with ``w^+`` when ``x >= 0``, else ``(|x| * |w| + z - b) / 2``.
    """

    @staticmethod
    def forward(ctx, x, z, module, gamma, nonnegative):  # noqa: D102
        w, b = module.weight, module.bias
        shape = (-1,) + (1,) * (z.dim() - 2)
        if nonnegative:
            zp = _linear(module, x, w.clamp_min(0), None)                 # sum_j (x_j w_jk)^+
        else:
            zp = _linear(module, x.abs(), w.abs(), None).add_(z)          # |xw| + xw = 2 (xw)^+
            if b is not None:
                zp.sub_(b.view(shape))
            zp.mul_(0.5)
        if b is not None:
            zp.add_(b.clamp_min(0).view(shape))                          # + b^+
        # z'_k = z_k + gamma zp_k where z_k >= 0; the z_k < 0 branch, z_k + gamma (z_k - zp_k), is
        # worked out in the backward pass, and only if relevance arrives there.
        ctx.module, ctx.gamma, ctx.nonnegative = module, gamma, nonnegative
        ctx.save_for_backward(x, z, zp)
        return z.clone()    # a copy: an in-place op after the layer (ResNet's `out += identity`) must not touch z

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        x, z, zp = ctx.saved_tensors
        module, gamma = ctx.module, ctx.gamma
        w = module.weight
        w_up, w_down = w + gamma * w.clamp_min(0), w + gamma * w.clamp_max(0)

        def transposed(weight, s):
            return _linear_input_grad(module, x, weight, s)

        gz = g * z
        if not bool((z < 0).logical_and_(gz != 0).any()):               # behind a ReLU
            s = gz.div_(_stabilize(torch.add(z, zp, alpha=gamma)))
            up = transposed(w_up, s)
            down = None if ctx.nonnegative else transposed(w_down, s)
        else:
            negative = z < 0
            s = gz.div_(_stabilize(torch.where(negative, torch.add(z, z - zp, alpha=gamma),
                                                torch.add(z, zp, alpha=gamma))))
            zero = s.new_zeros(())
            s_up, s_down = torch.where(negative, zero, s), torch.where(negative, s, zero)
            up = transposed(w_up, s_up) + transposed(w_down, s_down)
            down = None if ctx.nonnegative else transposed(w_down, s_up) + transposed(w_up, s_down)
        grad = up if down is None else torch.where(x >= 0, up, down)
        return grad, None, None, None, None


def _linear(module: Linear, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``module``'s forward with another ``weight`` and ``bias`` (Conv2d or Linear)."""
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            raise ValueError(f"Conv2d with padding_mode={module.padding_mode!r} is not supported; use zero padding")
        return F.conv2d(x, weight, bias, module.stride, module.padding, module.dilation, module.groups)
    return F.linear(x, weight, bias)


class Rule:
    """A relevance rule for a linear layer ``z = W x + b``.

    A rule says which *modified pre-activations* ``z'_i(x)`` the relevance flows through and with
    which weights: ``R_j = x_j * sum_i s_i sum_k d z'_ik / d x_j * R_k / z'_ik``. Subclasses
    override :meth:`modified`, returning ``[(z'_1, s_1), ...]``. The base implementation is
    LRP-0: ``[(z, 1)]``.
    """

    #: whether the rule may be used on parameter-free linear layers (average pooling)
    pools: bool = True

    def modified(self, module: nn.Module, x: torch.Tensor, z: torch.Tensor,
                 state: RelevanceState) -> list[tuple[torch.Tensor, float | torch.Tensor, torch.Tensor]]:
        """``[(t_i, c_i, d_i), ...]``: tensors ``t_i`` differentiable in ``x``, coefficients and
        denominators with ``R_j = x_j sum_i sum_k c_ik d t_ik / d x_j R_k / d_ik``. LRP-0: ``[(z, 1, z)]``."""
        return [(z, 1.0, z)]

    def apply(self, module: nn.Module, x: torch.Tensor, z: torch.Tensor, state: RelevanceState) -> torch.Tensor:
        """The layer's output ``z`` (same values), with the rule's backward."""
        parts = self.modified(module, x, z, state)
        if len(parts) == 1 and parts[0][0] is z and parts[0][2] is z and parts[0][1] == 1.0:
            return z                                   # LRP-0 on a linear layer is the gradient
        coefs = [(c.detach() if isinstance(c, torch.Tensor) else float(c), d.detach()) for _, c, d in parts]
        return _Rewire.apply(z.detach(), z.detach(), coefs, *(t for t, _, _ in parts))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class ZeroRule(Rule):
    """LRP-0 (Bach et al. 2015): ``R_j = sum_k x_j w_jk / z_k R_k``; the bias keeps ``b_k / z_k R_k``."""


class EpsilonRule(Rule):
    """LRP-epsilon: ``R_j = sum_k x_j w_jk / (z_k + eps sign(z_k)) R_k``; weak or contradicting
    contributions are absorbed by ``eps`` (relevance leaks:
    ``sum_j R_j = sum_k (z_k - b_k) / (z_k + eps sign z_k) R_k``)."""

    def __init__(self, epsilon: float = 0.25):
        if epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}")
        self.epsilon = epsilon

    def modified(self, module, x, z, state):
        sign = torch.where(z.detach() >= 0, 1.0, -1.0).to(z)
        return [(z, 1.0, z + self.epsilon * sign)]     # z' = z + eps sign(z): same gradient, larger denominator

    def apply(self, module, x, z, state):
        return _Epsilon.apply(z, self.epsilon)      # the same, in fewer operations


class GammaRule(Rule):
    """LRP-gamma, favouring the contributions that agree with the output's sign:
    ``z'_k = z_k + gamma (sum_j (x_j w_jk)^+ + b_k^+)`` where ``z_k >= 0``, and the same with the
    negative parts where ``z_k < 0``; ``R_j = sum_k (x_j w_jk + gamma (x_j w_jk)^{+/-}) / z'_k R_k``.

    For positive inputs and outputs this is Montavon et al.'s ``w + gamma w^+``. Following the
    output's sign keeps ``|z'| >= |z|`` with the same sign, so ``z / z'`` lies in (0, 1]: it cannot
    explode where signed inputs (a residual stream) make ``sum_j x_j (w_jk + gamma w_jk^+)`` cross 0.

    Montavon et al. state the rule for layers that read ReLU outputs (``x >= 0``). ``signed_input``
    is the rule for a layer whose input has negative entries (in an MBConv network, the expand
    convolution reading the residual stream); ``None`` keeps gamma's signed form there.
    """

    pools = False

    def __init__(self, gamma: float = 0.25, signed_input: Rule | None = None):
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if isinstance(signed_input, GammaRule):
            raise ValueError("signed_input must be another rule than GammaRule (None keeps gamma's signed form)")
        self.gamma = gamma
        self.signed_input = signed_input

    def apply(self, module, x, z, state):
        nonnegative = bool(x.detach().min() >= 0)
        if not nonnegative and self.signed_input is not None:
            return self.signed_input.apply(module, x, z, state)
        # The whole rule is one autograd function (see _Gamma): fewer full-size operations than the
        # generic modified-pre-activation path, and one transposed convolution behind a ReLU.
        return _Gamma.apply(x, z.detach(), module, self.gamma, nonnegative)


def _positive_part(module: Linear, x: torch.Tensor) -> torch.Tensor:
    """``sum_j (x_j w_jk)^+`` without bias, as ``x^+ w^+ + x^- w^-``."""
    w = module.weight
    if bool(x.detach().min() >= 0):                 # after a ReLU: one convolution suffices
        return _linear(module, x, w.clamp_min(0), None)
    return _linear(module, x.clamp_min(0), w.clamp_min(0), None) + _linear(module, x.clamp_max(0), w.clamp_max(0), None)


def _positive_negative(module: Linear, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum_j (x_j w_jk)^+, sum_j (x_j w_jk)^-)`` without bias; the second is ``z - b`` minus the first."""
    zp = _positive_part(module, x)
    b = module.bias
    return zp, (z - zp if b is None else z - b.view((-1,) + (1,) * (z.dim() - 2)) - zp)


class ZPlusRule(Rule):
    """LRP-z+ (alpha=1, beta=0): ``R_j = sum_k (x_j w_jk)^+ / sum_j' (x_j' w_j'k)^+ R_k``, bias ignored."""

    pools = False

    def modified(self, module, x, z, state):
        zp = _positive_part(module, x)
        return [(zp, 1.0, zp)]


class AlphaBetaRule(Rule):
    """LRP-alpha-beta with ``alpha - beta = 1``, bias ignored:
    ``R_j = sum_k (alpha (x_j w_jk)^+ / z_k^+ - beta (x_j w_jk)^- / z_k^-) R_k``."""

    pools = False

    def __init__(self, alpha: float = 2.0, beta: float = 1.0):
        if abs(alpha - beta - 1) > 1e-9 or beta < 0:
            raise ValueError(f"alpha - beta must be 1 with beta >= 0 (conservation), got alpha={alpha}, beta={beta}")
        self.alpha, self.beta = alpha, beta

    def modified(self, module, x, z, state):
        zp, zn = _positive_negative(module, x, z)
        return [(zp, self.alpha, zp), (zn, -self.beta, zn)]


class ZBoxRule(Rule):
    """The z^B rule for the input layer, for pixels bounded by ``low <= x <= high`` (in pixel space):
    ``R_j = sum_k (x_j w_jk - l_j w_jk^+ - h_j w_jk^-) / sum_j' (...) R_k``, bias ignored.

    The bounds are mapped to the first layer's input by the model's own preprocessing (e.g.
    ``Normalize``); the relevance of ``l`` and ``h`` is added to that of ``x``.
    """

    pools = False
    first_only = True

    def __init__(self, low: float = 0.0, high: float = 1.0):
        if not low < high:
            raise ValueError(f"need low < high, got low={low}, high={high}")
        self.low, self.high = low, high

    def modified(self, module, x, z, state):
        if state.bounds is None:
            raise RuntimeError("ZBoxRule applies to the first layer only (its bounds are pixel bounds)")
        low, high = (t.expand_as(x).clone().requires_grad_(True) for t in state.bounds)
        state.extra_leaves += [low, high]
        w = module.weight
        zm = (_linear(module, x, w, None) - _linear(module, low, w.clamp_min(0), None)
              - _linear(module, high, w.clamp_max(0), None))
        return [(zm, 1.0, zm)]


@dataclass
class RelevanceState:
    """What :func:`~xai_helpers.relevance.hooks.relevance_rules` set up and records during one pass,
    and what a rule may read (``bounds``) and add to (``extra_leaves``).

    ``rules``: ``{layer name: rule}``. ``leaf``: the first linear layer's input as a graph leaf
    (``[B, ...]``, same number of elements per image as ``x``). ``extra_leaves``: tensors whose
    ``tensor * grad`` is added to the input relevance (the z^B bounds). ``bounds``: the pixel
    bounds mapped to the first layer's input. ``recording``: DeepLIFT's reference pass is running
    (activations are recorded, not rewired). ``relevance``: ``{name: R [B, ...]}`` at the outputs
    of the modules named in ``record``.
    """

    rules: dict[str, Rule]
    first: str
    mode: str = "lrp"
    leaf: torch.Tensor | None = None
    extra_leaves: list[torch.Tensor] = field(default_factory=list)
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None
    relevance: dict[str, torch.Tensor] = field(default_factory=dict)
    recording: bool = False
