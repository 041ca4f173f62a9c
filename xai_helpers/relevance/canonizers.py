"""Canonizers: rewrite a model for the duration of an explanation into one that rules apply to.

:func:`merge_batchnorm` folds every batch norm into the ``Conv2d``/``Linear`` before it (eval-mode
statistics), and restores the model bit for bit on exit.
"""
from __future__ import annotations

import typing
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .rules import LINEAR, Linear

__all__ = ["merge_batchnorm"]

BatchNorm = nn.BatchNorm1d | nn.BatchNorm2d
#: The batch norms that :func:`merge_batchnorm` folds into the layer before them.
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


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
