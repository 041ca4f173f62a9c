"""Random transformations applied to the image before each step ("transformation robustness").

Each factory returns a function ``t(x, generator) -> x`` on ``[B, 3, H, W]``; the randomness comes
only from the ``torch.Generator`` passed in, so a seed fixes every draw. The whole batch shares one
draw per step. An image that still excites a unit after being shifted, scaled and rotated a little
cannot rely on a fragile pixel pattern, so high-frequency noise stops paying off.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["pad", "jitter", "random_scale", "random_rotate", "compose", "standard_transforms"]

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _choice(options: Sequence[float], generator: torch.Generator) -> float:
    return options[int(torch.randint(len(options), (), generator=generator))]


def pad(width: int, value: float = 0.5) -> Transform:
    """Pad every side with ``width`` pixels of constant grey, so borders can move inwards under jitter."""
    return lambda x, generator: F.pad(x, (width,) * 4, value=value)


def jitter(d: int) -> Transform:
    """Crop a random window ``d`` pixels smaller: a random shift of 0 .. d-1 pixels in x and y."""
    def t(x, generator):
        dy, dx = (int(v) for v in torch.randint(d, (2,), generator=generator))
        return x[..., dy: x.shape[-2] - d + 1 + dy, dx: x.shape[-1] - d + 1 + dx]
    return t


def random_scale(scales: Sequence[float]) -> Transform:
    """Resize by a factor drawn from ``scales`` (bilinear)."""
    def t(x, generator):
        s = _choice(scales, generator)
        return F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False) if s != 1 else x
    return t


def random_rotate(degrees: Sequence[float]) -> Transform:
    """Rotate about the centre by an angle drawn from ``degrees`` (bilinear, borders filled by reflection)."""
    def t(x, generator):
        a = math.radians(_choice(degrees, generator))
        if a == 0:
            return x
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])
        grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return t


def compose(*transforms: Transform) -> Transform:
    """Apply ``transforms`` left to right, all from the same generator."""
    def t(x, generator):
        for transform in transforms:
            x = transform(x, generator)
        return x
    return t


def standard_transforms(size: int = 128) -> Transform:
    """Pad, jitter, scale by up to +-10 %, rotate by up to +-10 degrees, jitter again (sizes relative
    to a ``size``-pixel image, following the recipe of Olah et al., 2017)."""
    k = max(1, round(size / 224 * 8))  # 8 px jitter at 224 px
    return compose(
        pad(2 * k),
        jitter(k),
        random_scale([1 + (i - 5) / 50 for i in range(11)]),
        random_rotate(list(range(-10, 11)) + 5 * [0]),
        jitter(max(1, k // 2)),
    )
