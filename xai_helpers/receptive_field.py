"""Receptive fields of convolutional networks: computed in closed form and measured with gradients.

The *receptive field* of a unit in a feature map is the patch of input pixels that can change its
value. Two ways to find its size, which the tests check against each other:

* :func:`receptive_field` runs the closed-form recurrence over a stack of ``(kernel, stride)`` layers::

      r_0 = 1, j_0 = 1,   r_l = r_{l-1} + (k_l - 1) * j_{l-1},   j_l = j_{l-1} * s_l

  where ``r_l`` is the receptive-field size after layer ``l`` (in input pixels), ``j_l`` the *jump*
  (input pixels between neighbouring units of that layer's output), ``k_l`` the kernel size and
  ``s_l`` the stride. Pooling layers count as layers with their window and stride; 1x1 convolutions,
  activations and batch norm add nothing.
* :func:`measure_receptive_field` takes any module, back-propagates from one unit near the centre of
  its output to the input, and reports the bounding box of the pixels whose gradient is non-zero.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

__all__ = ["ReceptiveField", "MeasuredField", "receptive_field", "receptive_fields", "measure_receptive_field"]


class ReceptiveField(NamedTuple):
    """Receptive-field ``size`` r (input pixels along one side) and ``jump`` j (input pixels per output step)."""

    size: int
    jump: int


def _check_layer(i: int, layer: Sequence[int]) -> tuple[int, int]:
    if isinstance(layer, (str, bytes)) or not isinstance(layer, Sequence) or len(layer) != 2:
        raise ValueError(f"layer {i} must be a pair (kernel, stride), got {layer!r}")
    kernel, stride = layer
    for name, value in (("kernel", kernel), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"layer {i}: {name} must be a positive int, got {value!r}")
    return kernel, stride


def receptive_fields(layers: Sequence[tuple[int, int]]) -> list[ReceptiveField]:
    """The recurrence after every layer: ``[(r_0, j_0) = (1, 1), (r_1, j_1), ..., (r_L, j_L)]``.

    ``layers`` lists ``(kernel, stride)`` per layer, input side first.

    >>> [r.size for r in receptive_fields([(3, 1), (3, 1), (3, 1)])]
    [1, 3, 5, 7]
    """
    fields = [ReceptiveField(1, 1)]
    for i, layer in enumerate(layers):
        kernel, stride = _check_layer(i, layer)
        size, jump = fields[-1]
        fields.append(ReceptiveField(size + (kernel - 1) * jump, jump * stride))
    return fields


def receptive_field(layers: Sequence[tuple[int, int]]) -> ReceptiveField:
    """Receptive field ``(r_L, j_L)`` of a unit after a stack of ``(kernel, stride)`` layers.

    >>> receptive_field([(3, 2), (3, 1)])
    ReceptiveField(size=7, jump=2)
    """
    return receptive_fields(layers)[-1]


@dataclass
class MeasuredField:
    """What :func:`measure_receptive_field` found.

    ``size`` is ``(height, width)`` of the bounding box of ``mask``; ``mask`` ``[H, W]`` bool marks the
    input pixels with a non-zero gradient; ``gradient`` ``[H, W]`` is the summed absolute gradient
    (its shape inside the box is the *effective* receptive field); ``unit`` is the output position used.
    """

    size: tuple[int, int]
    mask: torch.Tensor
    gradient: torch.Tensor
    unit: tuple[int, int]


def measure_receptive_field(
    module: nn.Module,
    input_size: int | tuple[int, int],
    *,
    in_channels: int = 3,
    channel: int | None = None,
    batch: int = 8,
    seed: int = 0,
) -> MeasuredField:
    """Measure the receptive field of the centre unit of ``module``'s output by back-propagation.

    ``module`` maps ``[B, in_channels, H, W]`` to ``[B, C, h, w]``; ``input_size`` is ``H`` (square) or
    ``(H, W)``. The gradient of the unit at ``(h // 2, w // 2)`` (channel ``channel``, or the sum over
    all channels when ``None``) is taken with respect to ``batch`` seeded random inputs in [0, 1];
    a pixel belongs to the receptive field when its gradient is non-zero for any of them. Several
    inputs are used because a ReLU that is off, or a max pool that picked another pixel, hides part of
    the field for one input. The module runs in eval mode (batch norm is then a fixed affine map) and
    its mode is restored afterwards.

    Raises ``ValueError`` when the field reaches the border of the input: it may then be cut off, so
    use a larger ``input_size``.
    """
    height, width = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if min(height, width, in_channels, batch) < 1:
        raise ValueError(f"input_size, in_channels and batch must be positive, got {input_size!r}, "
                         f"{in_channels!r}, {batch!r}")
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, in_channels, height, width, generator=generator).requires_grad_(True)
    was_training = {m: m.training for m in module.modules()}
    module.eval()
    try:
        out = module(x)
    finally:
        for m, mode in was_training.items():
            m.train(mode)
    if out.ndim != 4:
        raise ValueError(f"expected the module to return [B, C, h, w] feature maps, got shape {list(out.shape)}")
    if channel is not None and not 0 <= channel < out.shape[1]:
        raise ValueError(f"channel {channel} is out of range for an output with {out.shape[1]} channels")
    row, col = out.shape[2] // 2, out.shape[3] // 2
    unit = out[:, :, row, col] if channel is None else out[:, channel, row, col]
    (grad,) = torch.autograd.grad(unit.sum(), x)
    gradient = grad.abs().sum(dim=(0, 1))  # [H, W]
    mask = gradient > 0
    if not mask.any():
        raise ValueError("every input gradient is zero (dead unit?); try another seed, channel or batch size")
    rows, cols = mask.any(dim=1).nonzero()[:, 0], mask.any(dim=0).nonzero()[:, 0]
    if rows[0] == 0 or cols[0] == 0 or rows[-1] == height - 1 or cols[-1] == width - 1:
        raise ValueError(f"the receptive field reaches the border of the {height}x{width} input and may be "
                         "cut off; measure with a larger input_size")
    size = (int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1)
    return MeasuredField(size=size, mask=mask, gradient=gradient.detach(), unit=(row, col))
