"""Objectives: what feature visualisation maximises.

An :class:`Objective` maps the recorded activations ``acts`` (a dict from layer name to tensor,
plus ``"input"``: the image the network saw) to one score per image, ``[B]``. Objectives combine
like numbers -- ``channel("blocks.6", 3) + 0.5 * diversity("blocks.6")`` -- and each remembers
which layers it reads, so the render loop can stop the forward pass at the deepest of them.

Layers are named as for ``grad_cam``: dotted names from ``model.named_modules()``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["Objective", "channel", "neuron", "layer", "deepdream", "class_logit", "diversity",
           "total_variation", "INPUT"]

#: The pseudo-layer name of the (transformed) image fed to the network: objectives may read it.
INPUT = "input"


class Objective:
    """A score per image, ``fn(acts) -> [B]``, that reads the activations of ``layers``."""

    def __init__(self, fn: Callable[[dict[str, torch.Tensor]], torch.Tensor], layers: Sequence[str], name: str):
        self.fn, self.layers, self.name = fn, tuple(dict.fromkeys(layers)), name

    def __call__(self, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fn(acts)

    def __add__(self, other: "Objective | float") -> "Objective":
        if not isinstance(other, Objective):
            if not isinstance(other, (int, float)):
                return NotImplemented
            return Objective(lambda a: self(a) + other, self.layers, f"{self.name} + {other:g}")
        return Objective(lambda a: self(a) + other(a), self.layers + other.layers, f"{self.name} + {other.name}")

    __radd__ = __add__  # so that sum([...]) works

    def __mul__(self, k: float) -> "Objective":
        if not isinstance(k, (int, float)):
            return NotImplemented
        return Objective(lambda a: k * self(a), self.layers, f"{k:g} * ({self.name})")

    __rmul__ = __mul__

    def __neg__(self) -> "Objective":
        return -1 * self

    def __sub__(self, other: "Objective | float") -> "Objective":
        return self + (-other)

    def __repr__(self) -> str:
        return f"Objective({self.name})"


def _per_image(index: int | Sequence[int], batch: int, size: int, what: str, layer_name: str) -> torch.Tensor:
    """An int or one int per image -> LongTensor ``[B]``, with range and length checks."""
    idx = torch.as_tensor(index, dtype=torch.long).reshape(-1)
    if idx.numel() == 1:
        idx = idx.expand(batch)
    elif idx.numel() != batch:
        raise ValueError(f"got {idx.numel()} {what}s for a batch of {batch} images; give one per image or a single int")
    if idx.min() < 0 or idx.max() >= size:
        raise ValueError(f"{what} {int(idx.max() if idx.max() >= size else idx.min())} is out of range: "
                         f"layer {layer_name!r} has {size} {what}s (0..{size - 1})")
    return idx


def _pick(a: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``a [B, C, ...]``, ``idx [B]`` -> ``a[i, idx[i]]`` stacked: ``[B, ...]``."""
    return a[torch.arange(a.shape[0]), idx]


def channel(layer: str, index: int | Sequence[int]) -> Objective:
    """Mean activation of channel ``index`` over all positions. A list gives image ``i`` channel ``index[i]``."""
    def fn(acts):
        a = acts[layer]  # [B, C, h, w]
        return _pick(a, _per_image(index, a.shape[0], a.shape[1], "channel", layer)).mean((1, 2))
    return Objective(fn, [layer], f"channel({layer!r}, {index})")


def neuron(layer: str, index: int | Sequence[int], x: int | None = None, y: int | None = None) -> Objective:
    """Activation of channel ``index`` at one position (default: the centre of the map)."""
    def fn(acts):
        a = acts[layer]
        h, w = a.shape[-2:]
        return _pick(a, _per_image(index, a.shape[0], a.shape[1], "channel", layer))[:, h // 2 if y is None else y,
                                                                                      w // 2 if x is None else x]
    return Objective(fn, [layer], f"neuron({layer!r}, {index})")


def layer(name: str) -> Objective:
    """DeepDream: the mean squared activation of a whole layer, ``mean(A**2)`` per image."""
    return Objective(lambda acts: acts[name].pow(2).flatten(1).mean(1), [name], f"layer({name!r})")


deepdream = layer


def class_logit(index: int | Sequence[int], logits_layer: str = "classifier") -> Objective:
    """The logit (pre-softmax score) of ImageNet class ``index``, read from the layer that outputs them."""
    def fn(acts):
        a = acts[logits_layer]  # [B, K]
        return _pick(a, _per_image(index, a.shape[0], a.shape[1], "class", logits_layer))
    return Objective(fn, [logits_layer], f"class_logit({index})")


def diversity(layer: str) -> Objective:
    """Minus each image's mean cosine similarity to the *other* images' Gram matrices at ``layer``.

    Adding it (with a weight) to an objective pushes a batch of images apart in "style": each one
    must still excite the unit, but with different textures and arrangements (Olah et al., 2017).
    """
    def fn(acts):
        a = acts[layer]
        b, c = a.shape[:2]
        if b < 2:
            raise ValueError("diversity compares images with each other: render a batch of at least 2")
        flat = a.flatten(2)  # [B, C, hw]
        gram = torch.nn.functional.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1)  # [B, C*C]
        sim = gram @ gram.T  # [B, B] cosine similarities
        return -(sim.sum(1) - sim.diagonal()) / (b - 1)
    return Objective(fn, [layer], f"diversity({layer!r})")


def total_variation() -> Objective:
    """Mean absolute difference between neighbouring pixels of the input image (a smoothness penalty
    when subtracted)."""
    def fn(acts):
        x = acts[INPUT]
        return (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1) + \
            (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return Objective(fn, [INPUT], "total_variation()")
