"""Composites: which relevance rule each layer of a model gets.

A :class:`Composite` maps every linear and average-pooling layer to a
:class:`~xai_helpers.relevance.rules.Rule`, by name, by position (first, last, relative depth) or by
type; :func:`uniform` gives every layer the same rule; :func:`epsilon_gamma_box` is the practice
of Montavon et al. (2019).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from torch import nn

from .rules import LINEAR, POOLS, EpsilonRule, GammaRule, Rule, ZBoxRule, ZeroRule

__all__ = ["Composite", "uniform", "epsilon_gamma_box"]


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
