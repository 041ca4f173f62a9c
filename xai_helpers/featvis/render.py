"""The render loop: gradient ascent on an objective, with an early-stopping forward pass.

:func:`render` builds a parametrised image batch, then repeats: transform the image, run the network
*only as far as the objective needs*, and take an Adam step that raises the objective, ``iterations``
times. Forward hooks record the layers the objective reads; as soon as the last of them has produced
its output, the forward pass stops (:func:`xai_helpers.core.forward_until`), so the rest of the
network never runs (a channel in ``blocks.1`` costs a few layers, not the whole network). Hooks are
removed, and the model's mode and ``requires_grad`` flags restored, even after an error.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..core import explaining, forward_until
from .objectives import INPUT, Objective
from .param import make_param
from .transforms import Transform

__all__ = ["RenderResult", "render", "activations", "evaluate"]


def _forward(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str], stop_early: bool = True
) -> dict[str, torch.Tensor]:
    """Run ``model(x)`` (stopping early if asked) and return ``{layer: output}`` for ``layers``."""
    return forward_until(model, x, [name for name in layers if name != INPUT], stop_early=stop_early)


@torch.no_grad()
def activations(model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Outputs of ``layers`` for images ``x`` ``[B, 3, H, W]``, computed no further than needed."""
    with explaining(model):
        acts = _forward(model, x, layers)
    return {INPUT: x, **acts} if INPUT in layers else acts


@torch.no_grad()
def evaluate(model: nn.Module, objective: Objective, x: torch.Tensor) -> torch.Tensor:
    """The objective's score for each image of ``x`` ``[B, 3, H, W]`` (no transformations): ``[B]``."""
    return objective({**activations(model, x, objective.layers), INPUT: x})


@dataclass
class RenderResult:
    """``images [B, 3, H, W]`` in [0, 1]; ``history [iterations, B]`` the objective before each Adam
    step; ``seconds`` the wall time of the loop."""

    images: torch.Tensor
    history: torch.Tensor
    seconds: float


def render(
    model: nn.Module,
    objective: Objective,
    *,
    param: str | nn.Module = "fourier",
    batch: int = 1,
    size: int = 128,
    iterations: int = 128,
    lr: float = 0.05,
    transforms: Transform | None = None,
    seed: int = 0,
    stop_early: bool = True,
    progress: bool = False,
) -> RenderResult:
    """Maximise ``objective`` over a batch of ``batch`` images of ``size x size`` pixels with ``iterations``
    steps of Adam.

    ``param`` is ``"fourier"`` (decorrelated, 1/f-scaled; the default), ``"fourier_rgb"``,
    ``"pixel"``, or a ready parametrisation module (its ``batch`` wins). One ``torch.Generator``
    seeded with ``seed`` draws the initial image and every random transformation, so the same
    arguments give bit-for-bit the same images. ``progress`` prints the objective ten times.
    """
    generator = torch.Generator().manual_seed(seed)
    image_param = make_param(param, batch, size, generator)
    optimizer = torch.optim.Adam(image_param.parameters(), lr=lr)
    history = []
    start = time.perf_counter()
    with explaining(model):
        for step in range(iterations):
            image = image_param()
            x = transforms(image, generator) if transforms is not None else image
            acts = _forward(model, x, objective.layers, stop_early)
            acts[INPUT] = image
            score = objective(acts)  # [B]
            optimizer.zero_grad()
            (-score.sum()).backward()
            optimizer.step()
            history.append(score.detach())
            if progress and (step + 1) % max(1, iterations // 10) == 0:
                print(f"step {step + 1:4d}/{iterations}: objective {score.mean().item():.3f}", flush=True)
    with torch.no_grad():
        images = image_param().detach()
    return RenderResult(images, torch.stack(history), time.perf_counter() - start)
