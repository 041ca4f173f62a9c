"""What an explanation costs, counted rather than timed.

Wall-clock time depends on the machine and on whatever else runs on it; the number of images that
go through the network does not. :func:`count_passes` counts, for every call of a model inside the
block, the images of its forward passes and the images whose gradient flows back from its output
(a backward pass, full or stopped early at a layer). A method's cost per explained image is then a
machine-independent figure that a build can print and an assert can check.

Timings on a quiet machine live in ``benchmarks/``, never in the book's asserts.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["PassCount", "count_passes"]


@dataclass
class PassCount:
    """Images sent forward through the model, and images whose gradient came back from its output.

    ``forward_batches`` lists the batch size of each forward call, in order (how the images were
    chunked); it takes no part in ``==`` or the repr.
    """

    forward: int = 0
    backward: int = 0
    forward_batches: list[int] = field(default_factory=list, compare=False, repr=False)

    @property
    def total(self) -> int:
        """Forward plus backward passes, each counted per image."""
        return self.forward + self.backward

    def per_image(self, images: int) -> float:
        """:attr:`total` divided by the number of explained images."""
        if images < 1:
            raise ValueError(f"images must be at least 1, got {images}")
        return self.total / images


def _batch_size(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.shape[0] if value.dim() else 1
    if isinstance(value, (tuple, list)) and value:
        return _batch_size(value[0])
    if isinstance(value, dict) and value:
        return _batch_size(next(iter(value.values())))
    return 0


def _output_tensors(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _output_tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _output_tensors(v)]
    return []


@contextmanager
def count_passes(model: nn.Module) -> Iterator[PassCount]:
    """Count the forward and backward passes through ``model`` inside the block, per image.

    A forward hook on ``model`` adds the batch size of every call to ``forward``; when the output
    is part of an autograd graph, a tensor hook on it adds the batch size once more when a gradient
    reaches it, so ``torch.autograd.grad`` and ``.backward()`` are both counted, including backward
    passes that stop at an inner layer (Grad-CAM's). The hook is removed on exit, even after an error.
    """
    count = PassCount()

    def on_backward(gradient: torch.Tensor, batch: int) -> None:
        count.backward += batch

    def on_forward(_module: nn.Module, inputs: tuple, output: object) -> None:
        batch = _batch_size(inputs) or _batch_size(output)
        count.forward += batch
        count.forward_batches.append(batch)
        tensors = [t for t in _output_tensors(output) if t.requires_grad]
        if tensors:  # one backward per output, however many tensors it holds
            tensors[0].register_hook(lambda g, b=batch: on_backward(g, b))

    handle = model.register_forward_hook(on_forward)
    try:
        yield count
    finally:
        handle.remove()
