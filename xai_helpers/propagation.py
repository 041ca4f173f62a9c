"""Methods that propagate relevance backwards: gradient x input, LRP and DeepLIFT (Rescale).

All of them are a gradient under *modified backward rules* (the "gradient trick"). Every tensor
``a`` in the network carries a relevance ``R(a) = a * g(a)`` where ``g(a)`` is what autograd sends
back to ``a``. The rules only change ``g``:

* a linear layer ``z = W x + b`` (``Conv2d``, ``Linear``, average pooling) with a rule's modified
  pre-activation ``z'(x)`` gets the backward ``g(x) = d/dx [ z'(x) * stopgrad(z * g(z) / z') ]``,
  i.e. ``R_j = x_j sum_k w'_jk R_k / z'_k`` (:class:`Rule` and its subclasses);
* an activation ``a = f(z)`` (ReLU, ReLU6, LeakyReLU) passes relevance on unchanged, ``R(z) =
  R(a)``, i.e. its backward multiplier is ``f(z) / z`` instead of ``f'(z)``. For DeepLIFT it is the
  Rescale multiplier ``(f(z) - f(z_ref)) / (z - z_ref)``;
* a residual sum ``s = a + b`` is differentiated normally: ``R(a) = a * g(s) = a / s * R(s)``,
  so relevance splits in proportion to the summands' contributions (the LRP-0 rule for a sum);
* max pooling keeps its gradient (winner takes all); flatten and dropout (eval) keep theirs.

Batch norm is merged into the preceding ``Conv2d``/``Linear`` for the duration (:func:`merge_batchnorm`,
the "canonizer") and restored bit for bit. Which rule each layer gets is said by a
:class:`Composite`; :func:`epsilon_gamma_box` is the practice of Montavon et al. (2019).

Calling convention as everywhere in the package: ``method(model, x, target, *, ...) -> [B, C, H, W]``,
signed, detached, not normalised, for ``x [B, 3, H, W]`` in [0, 1]. The model is left exactly as
it was: parameters, buffers, mode, ``requires_grad`` flags, no hooks, even after an error.
"""
from __future__ import annotations

import typing

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .core import Target, baseline_like, check_images, explaining, select_scores
from .registry import register
from .rules import input_gradients

__all__ = [
    "Rule", "ZeroRule", "EpsilonRule", "GammaRule", "ZPlusRule", "AlphaBetaRule", "ZBoxRule",
    "Composite", "epsilon_gamma_box", "uniform",
    "merge_batchnorm", "check_propagatable", "relevance_rules", "RelevanceState",
    "gradient_x_input", "lrp", "lrp_with_layers", "deeplift", "conservation_error",
]

LINEAR = (nn.Conv2d, nn.Linear)
Linear = nn.Conv2d | nn.Linear
BatchNorm = nn.BatchNorm1d | nn.BatchNorm2d
POOLS = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
# Modules whose plain gradient is already the right relevance rule (see the module docstring).
GRADIENT_PASS = (nn.MaxPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Identity, nn.Dropout, nn.Dropout2d)
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


# ----------------------------------------------------------------------------------------------------
# Rules
# ----------------------------------------------------------------------------------------------------
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
    contributions are absorbed by ``eps`` (relevance leaks: ``sum_j R_j = sum_k (z_k - b_k) / (z_k + eps sign z_k) R_k``)."""

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


# ----------------------------------------------------------------------------------------------------
# Composites
# ----------------------------------------------------------------------------------------------------
@dataclass
class Composite:
    """Which rule each layer gets. Linear layers (``Conv2d``, ``Linear``) are numbered ``0..n-1``
    in ``model.modules()`` order (their depth); the first match wins:

    1. ``by_name[name]``;  2. ``first`` for layer 0;  3. ``last`` for layer ``n-1``;
    4. the first ``(upto, rule)`` of ``by_depth`` with ``index / (n - 1) < upto``;
    5. ``by_type[type(module)]``;  6. ``default``.

    Average-pooling layers take ``by_name``, then ``by_type``, then ``pool`` (LRP-0 by default).
    """

    default: Rule = field(default_factory=ZeroRule)
    first: Rule | None = None
    last: Rule | None = None
    by_depth: Sequence[tuple[float, Rule]] = ()
    by_type: Mapping[type, Rule] = field(default_factory=dict)
    by_name: Mapping[str, Rule] = field(default_factory=dict)
    pool: Rule = field(default_factory=ZeroRule)

    def rules(self, model: nn.Module) -> dict[str, Rule]:
        """``{module name: rule}`` for every linear and average-pooling layer of ``model``."""
        layers = [(n, m) for n, m in model.named_modules() if isinstance(m, LINEAR)]
        out: dict[str, Rule] = {}
        for i, (name, module) in enumerate(layers):
            depth = i / max(len(layers) - 1, 1)
            rule = self.by_name.get(name)
            if rule is None and i == 0:
                rule = self.first
            if rule is None and i == len(layers) - 1:
                rule = self.last
            if rule is None:
                rule = next((r for upto, r in self.by_depth if depth < upto), None)
            out[name] = rule or self.by_type.get(type(module)) or self.default
        for name, module in model.named_modules():
            if isinstance(module, POOLS):
                rule = self.by_name.get(name) or self.by_type.get(type(module)) or self.pool
                if not rule.pools:
                    raise ValueError(f"{rule!r} needs weights and cannot be used on the pooling layer {name!r}")
                out[name] = rule
        for name, rule in out.items():
            if getattr(rule, "first_only", False) and name != layers[0][0]:
                raise ValueError(f"{rule!r} is for the input layer only, but the composite gives it to {name!r}")
        return out


def uniform(rule: Rule, first: Rule | None = None) -> Composite:
    """The same ``rule`` for every linear layer (and ``first`` for the input layer, if given)."""
    return Composite(default=rule, first=first, pool=rule if rule.pools else ZeroRule())


def epsilon_gamma_box(epsilon: float = 0.25, gamma: float = 0.25, low: float = 0.0, high: float = 1.0,
                      lower: float = 0.5) -> Composite:
    """Montavon et al. (2019), sec. 10.2.4: z^B at the input, LRP-gamma in the lower layers
    (depth ``< lower``), LRP-epsilon in the middle and upper convolutions, LRP-0 at the last layer.

    The paper's gamma layers read ReLU outputs; a lower layer that reads a signed input (an MBConv
    block's expand convolution, on the residual stream) gets LRP-epsilon (``GammaRule.signed_input``).
    """
    return Composite(default=EpsilonRule(epsilon), first=ZBoxRule(low, high), last=ZeroRule(),
                     by_depth=((lower, GammaRule(gamma, signed_input=EpsilonRule(epsilon))),))


# ----------------------------------------------------------------------------------------------------
# Canonizer: batch norm merged into the preceding layer
# ----------------------------------------------------------------------------------------------------
def _batchnorm_pairs(model: nn.Module) -> list[tuple[str, Linear, str, BatchNorm]]:
    """``(linear name, linear, bn name, bn)`` for each batch norm that directly follows a linear layer
    among its parent's children (``Sequential(conv, bn, ...)`` or ``conv1, bn1`` attributes)."""
    pairs: list[tuple[str, Linear, str, BatchNorm]] = []
    paired: set[int] = set()
    for parent_name, parent in model.named_modules():
        children = list(parent.named_children())
        for (n1, m1), (n2, m2) in zip(children, children[1:]):
            if isinstance(m1, LINEAR) and isinstance(m2, BATCHNORMS):
                prefix = f"{parent_name}." if parent_name else ""
                pairs.append((prefix + n1, m1, prefix + n2, m2))
                paired.add(id(m2))
    for name, m in model.named_modules():
        if isinstance(m, BATCHNORMS) and id(m) not in paired:
            raise ValueError(
                f"batch norm {name!r} does not follow a Conv2d/Linear among its parent's children, so it cannot "
                "be merged into one; relevance propagation supports conv -> batch norm only")
    return pairs


def _skip(x: torch.Tensor) -> torch.Tensor:
    return x


@contextmanager
def merge_batchnorm(model: nn.Module) -> Iterator[list[tuple[str, str]]]:
    """Within the block, every batch norm is folded into the preceding ``Conv2d``/``Linear``
    (eval-mode statistics): ``w' = w * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma /
    sqrt(var + eps) + beta``, and the batch norm is skipped (its ``forward`` is swapped for the
    identity). Yields ``[(linear name, bn name), ...]``.

    Nothing is written into the model's tensors: the layer's ``weight`` and ``bias`` *entries*
    are swapped for new, frozen parameters holding the merged values, and on exit (even after an
    error) the original parameter objects are put back and the batch norm's ``forward`` removed,
    so the ``state_dict`` is bit for bit what it was (and a bias the layer did not have is gone).
    """
    pairs = _batchnorm_pairs(model)
    saved: list[tuple[Linear, BatchNorm, typing.Any, typing.Any, typing.Any]] = []
    try:
        with torch.no_grad():
            for _, lin, _, bn in pairs:
                saved.append((lin, bn, lin._parameters["weight"], lin._parameters["bias"], bn.__dict__.get("forward")))
                mean, var = typing.cast(torch.Tensor, bn.running_mean), typing.cast(torch.Tensor, bn.running_var)
                std = torch.sqrt(var + bn.eps)
                scale = bn.weight / std if bn.affine else 1 / std
                shift = (bn.bias if bn.affine else 0) - mean * scale
                shape = (-1,) + (1,) * (lin.weight.dim() - 1)
                bias = shift if lin.bias is None else lin.bias * scale + shift
                lin._parameters["weight"] = nn.Parameter(lin.weight * scale.view(shape), requires_grad=False)
                lin._parameters["bias"] = nn.Parameter(bias, requires_grad=False)
                setattr(bn, "forward", _skip)   # an instance attribute shadows the class's forward
        yield [(a, c) for a, _, c, _ in pairs]
    finally:
        for lin, bn, weight, bias, forward in reversed(saved):
            lin._parameters["weight"] = weight
            lin._parameters["bias"] = bias
            if forward is None:
                delattr(bn, "forward")
            else:
                setattr(bn, "forward", forward)


# ----------------------------------------------------------------------------------------------------
# Which models can be propagated through
# ----------------------------------------------------------------------------------------------------
def _preprocessing_types() -> tuple[type, ...]:
    from .models import Normalize

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
                "Identity, Dropout. Use gradient methods (xai_helpers.gradients) for this model")


# ----------------------------------------------------------------------------------------------------
# The hooks
# ----------------------------------------------------------------------------------------------------
@dataclass
class RelevanceState:
    """What :func:`relevance_rules` set up and records during one pass.

    ``rules``: ``{layer name: rule}``. ``leaf``: the first linear layer's input as a graph leaf
    (``[B, ...]``, same number of elements per image as ``x``). ``extra_leaves``: tensors whose
    ``tensor * grad`` is added to the input relevance (the z^B bounds). ``bounds``: the pixel
    bounds mapped to the first layer's input. ``recording``: DeepLIFT's reference pass is running (activations are recorded, not rewired).
    ``relevance``: ``{name: R [B, ...]}`` at the outputs of the modules named in ``record``.
    """

    rules: dict[str, Rule]
    first: str
    mode: str = "lrp"
    leaf: torch.Tensor | None = None
    extra_leaves: list[torch.Tensor] = field(default_factory=list)
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None
    relevance: dict[str, torch.Tensor] = field(default_factory=dict)
    recording: bool = False


def _activation_multiplier(module: nn.Module, z: torch.Tensor, a: torch.Tensor,
                           z_ref: torch.Tensor | None, a_ref: torch.Tensor | None) -> torch.Tensor:
    """``(a - a_ref) / (z - z_ref)`` (``a_ref = f(0) = 0`` and ``z_ref = 0`` when not given), and the
    derivative ``f'(z)`` where ``|z - z_ref| < 1e-6`` (there the quotient is numerically meaningless)."""
    dz = z if z_ref is None else z - z_ref
    da = a if a_ref is None else a - a_ref
    if isinstance(module, nn.ReLU6):
        slope = ((z > 0) & (z < 6)).to(z)
    elif isinstance(module, nn.LeakyReLU):
        slope = torch.where(z > 0, 1.0, module.negative_slope).to(z)
    else:
        slope = (z > 0).to(z)
    close = dz.abs() < 1e-6
    return torch.where(close, slope, da / torch.where(close, torch.ones_like(dz), dz))


@contextmanager
def relevance_rules(model: nn.Module, composite: Composite | None = None, *, mode: str = "lrp",
                    record: Sequence[str] = (), allow: tuple[type, ...] = ()) -> Iterator[RelevanceState]:
    """Within the block, ``model``'s backward pass propagates relevance (``mode="lrp"``) or DeepLIFT
    multipliers (``mode="deeplift"``: run the reference through the model first, with
    ``state.recording = True`` and no gradient; the activations' reference values are recorded).

    Eval mode and frozen parameters (:func:`~xai_helpers.core.explaining`), batch norm merged
    (:func:`merge_batchnorm`, LRP only), and forward hooks: on each linear/pooling layer its rule;
    on each activation a pre-hook that hands it a copy of its input (so ``inplace=True`` cannot
    overwrite the pre-activation) and a hook that sets its backward multiplier; on the first
    linear layer a pre-hook that makes its input the graph leaf. All of it is undone on exit, even
    after an error.
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


class _Stop(Exception):
    pass


def _first_layer_input(model: nn.Module, first: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What ``first`` receives when the model is fed ``x`` (the forward pass stops there)."""
    seen: list[torch.Tensor] = []

    def hook(_m, args):
        seen.append(args[0].detach().clone())
        raise _Stop

    handle = first.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError("the first linear layer never ran during the forward pass")
    return seen[0]


# ----------------------------------------------------------------------------------------------------
# Methods
# ----------------------------------------------------------------------------------------------------
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


def lrp_with_layers(model: nn.Module, x: torch.Tensor, target: Target, *, composite: Composite | None = None,
                    record: Sequence[str] = ()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`lrp`, and the relevance ``{name: [B, ...]}`` at the outputs of the modules in ``record``."""
    check_images(x)
    composite = composite or epsilon_gamma_box()
    with relevance_rules(model, composite, record=record) as state, torch.enable_grad():
        rule = state.rules.get(state.first)
        if isinstance(rule, ZBoxRule):
            first = dict(model.named_modules())[state.first]
            bounds = torch.stack([torch.full_like(x[0], rule.low), torch.full_like(x[0], rule.high)])
            mapped = _first_layer_input(model, first, bounds)
            state.bounds = (mapped[:1], mapped[1:])
        scores = select_scores(model(x.detach().clone()), target)
        leaves = [typing.cast(torch.Tensor, state.leaf), *state.extra_leaves]
        grads = torch.autograd.grad(scores.sum(), leaves)
        relevance = leaves[0].detach() * grads[0]
        for leaf, g in zip(leaves[1:], grads[1:]):
            relevance = relevance + leaf.detach() * g
    return _to_pixels(relevance, x, state.first).detach(), dict(state.relevance)


@register("lrp", title="LRP (ε-γ-z^B composite)", space="input", needs_layer=False, family="propagation",
          cost="1 forward + 1 backward under modified rules", reference="bach2015pixel")
def lrp(model: nn.Module, x: torch.Tensor, target: Target, *, composite: Composite | None = None) -> torch.Tensor:
    """Layer-wise relevance propagation (Bach et al. 2015), ``[B, C, H, W]``, signed.

    The relevance ``R = y^c`` of the target logit is propagated to the pixels layer by layer by the
    rules of ``composite`` (default :func:`epsilon_gamma_box`). The relevance arriving at the
    first linear layer's input is the pixels' relevance (the model's elementwise preprocessing,
    e.g. ``Normalize``, passes it on unchanged). ``sum(R) = y^c`` up to what biases, epsilon and
    the stabiliser absorb; see :func:`conservation_error`.
    """
    return lrp_with_layers(model, x, target, composite=composite)[0]


@register("deeplift", title="DeepLIFT (Rescale)", space="input", needs_layer=False, family="propagation",
          cost="2 forwards + 1 backward", reference="shrikumar2017learning")
def deeplift(model: nn.Module, x: torch.Tensor, target: Target, *,
             baseline: torch.Tensor | float | None = None) -> torch.Tensor:
    """DeepLIFT with the Rescale rule (Shrikumar et al. 2017), ``[B, C, H, W]``, signed.

    ``(x - x_ref) * m`` where ``m`` is the chain rule with every activation's derivative replaced
    by ``(f(z) - f(z_ref)) / (z - z_ref)`` (``z_ref`` from the forward pass of the reference input
    ``x_ref = baseline``, zeros by default, as for Integrated Gradients; ``f'(z)`` where ``z ~ z_ref``). Summation to delta: ``sum(attributions) = y^c(x) -
    y^c(x_ref)`` exactly when every nonlinearity is a ReLU-family activation (max pooling keeps its
    gradient, so there it is approximate).
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


def conservation_error(model: nn.Module, x: torch.Tensor, target: Target, attributions: torch.Tensor,
                       baseline: torch.Tensor | float | None = 0.0) -> torch.Tensor:
    """``sum(attributions) - (y^c(x) - y^c(x_ref))`` per image ``[B]``; ``baseline=None`` compares with ``y^c(x)``."""
    check_images(x)
    with explaining(model), torch.no_grad():
        gap = select_scores(model(x), target)
        if baseline is not None:
            gap = gap - select_scores(model(baseline_like(x, baseline)), target)
    return attributions.flatten(1).sum(1) - gap


