"""The machinery every attribution method shares, written once.

* input checks: :func:`check_images`, :func:`as_targets` (clear errors that name the fix);
* layers: :func:`resolve_layer` (a module or a dotted name), :func:`find_last_conv_layer`;
* model state: :func:`explaining` puts a model in eval mode and freezes its parameters for the
  duration of an explanation, then restores the mode and every ``requires_grad`` flag;
* activations: :func:`capture_activation` records one layer's output during a forward pass and
  builds the autograd graph only from that layer to the output (so a gradient costs little more
  than a forward pass);
* :func:`postprocess_maps`: the optional ReLU, bilinear upsampling and min-max normalisation.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "check_images",
    "as_targets",
    "select_scores",
    "resolve_layer",
    "layer_name",
    "find_last_conv_layer",
    "explaining",
    "Capture",
    "capture_activation",
    "normalize_maps",
    "postprocess_maps",
]

Target = int | Sequence[int] | torch.Tensor


def check_images(x: torch.Tensor) -> None:
    """Raise a clear error unless ``x`` is a float tensor ``[B, C, H, W]``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor [B, C, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        hint = " Add a batch dimension with x.unsqueeze(0)." if x.dim() == 3 else ""
        raise ValueError(f"x must be 4-D [B, C, H, W], got shape {list(x.shape)}.{hint}")
    if not x.is_floating_point():
        raise TypeError(
            f"x must be a float tensor in [0, 1], got dtype {x.dtype}. Convert with x.float() / 255."
        )
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch")


def as_targets(target: Target, batch_size: int, num_classes: int | None = None, device=None) -> torch.Tensor:
    """Turn an int, a sequence of ``B`` ints or a LongTensor ``[B]`` into a LongTensor ``[B]``.

    An int is used for every image. A sequence or tensor must have exactly one entry per image.
    With ``num_classes`` given, every entry must lie in ``[0, num_classes)``.
    """
    if isinstance(target, bool):
        raise TypeError("target must be a class index, not a bool")
    if isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.dtype == torch.bool:
            raise TypeError(f"a target tensor must hold integer class indices, got dtype {target.dtype}")
        if target.dim() == 0:
            target = target.expand(batch_size)
        elif target.dim() != 1:
            raise ValueError(f"a target tensor must be 1-D [B], got shape {list(target.shape)}")
        targets = target.long()
    elif isinstance(target, int):
        targets = torch.full((batch_size,), target, dtype=torch.long)
    elif isinstance(target, Sequence) and not isinstance(target, str):
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in target):
            raise TypeError(f"every target must be an int class index, got {list(target)!r}")
        targets = torch.tensor(list(target), dtype=torch.long)
    else:
        raise TypeError(f"target must be an int, a sequence of ints or a LongTensor, got {type(target).__name__}")
    if targets.numel() != batch_size:
        raise ValueError(
            f"got {targets.numel()} targets for a batch of {batch_size} images: give one target per image, "
            "or a single int for all of them (to explain several classes of one image, repeat the image)"
        )
    if num_classes is not None and targets.numel():
        low, high = int(targets.min()), int(targets.max())
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise ValueError(f"target class {bad} is out of range: the model has {num_classes} classes (0..{num_classes - 1})")
    return targets.to(device) if device is not None else targets


def select_scores(logits: torch.Tensor, target: Target) -> torch.Tensor:
    """The target class's score for each image: ``logits [B, K]`` -> ``[B]`` (targets are checked)."""
    if logits.dim() != 2:
        raise ValueError(f"the model must return logits [B, num_classes], got shape {list(logits.shape)}")
    targets = as_targets(target, logits.shape[0], logits.shape[1], device=logits.device)
    return logits.gather(1, targets[:, None])[:, 0]


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> nn.Module:
    """The submodule ``layer`` of ``model``, given as a module or a dotted name from ``named_modules()``."""
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError(f"the layer {type(layer).__name__} is not a submodule of this model")
        return layer
    if not isinstance(layer, str):
        raise TypeError(f"layer must be an nn.Module or a dotted name, got {type(layer).__name__}")
    modules = dict(model.named_modules())
    if layer in modules and layer != "":
        return modules[layer]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5) or names[-5:]
    raise ValueError(
        f"the model has no layer named {layer!r}. Close names: {', '.join(close)}. "
        "See [name for name, _ in model.named_modules()] for all of them, or use find_last_conv_layer(model)."
    )


def layer_name(model: nn.Module, layer: nn.Module | str) -> str:
    """The dotted name of ``layer`` inside ``model``."""
    module = resolve_layer(model, layer)
    return next(name for name, m in model.named_modules() if m is module)


def find_last_conv_layer(model: nn.Module) -> str:
    """The dotted name of the last module that *contains* a ``Conv2d`` and outputs spatial maps.

    It prefers the outermost such block that ends the convolutional part, e.g. ``"head"`` for
    EfficientNet-Lite0 or ``"layer4"`` for a torchvision ResNet, so that the activation it names is
    what the classifier pools. Falls back to the last ``Conv2d`` itself.
    """
    named = list(model.named_modules())
    convs = [name for name, m in named if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("the model has no nn.Conv2d layer; pass the layer to explain explicitly")
    last_conv = convs[-1]
    # Walk up from the last conv to the largest ancestor whose last conv is still this one and that
    # is not the whole model (or a top-level Sequential wrapping everything).
    parts = last_conv.split(".")
    best = last_conv
    for depth in range(len(parts) - 1, 0, -1):
        ancestor = ".".join(parts[:depth])
        module = dict(named)[ancestor]
        has_head_after = any(isinstance(m, (nn.Linear, nn.AdaptiveAvgPool2d)) for m in module.modules())
        if has_head_after:
            break
        best = ancestor
    return best


@contextmanager
def explaining(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters for the duration; mode and ``requires_grad`` flags restored after.

    Only what needs changing is touched (setting a module attribute is slow), so wrapping an
    explanation costs a fraction of a millisecond even for a model with hundreds of modules.
    """
    training = [m for m in model.modules() if m.training]
    trainable = [p for p in model.parameters() if p.requires_grad]
    try:
        for m in training:
            m.training = False
        for p in trainable:
            p.requires_grad_(False)
        yield model
    finally:
        for m in training:
            m.training = True
        for p in trainable:
            p.requires_grad_(True)


@dataclass
class Capture:
    """What :func:`capture_activation` recorded: the layer's output ``[B, K, h, w]`` as a graph leaf."""

    layer: str
    activation: torch.Tensor | None = None
    calls: int = field(default=0)


@contextmanager
def capture_activation(model: nn.Module, layer: nn.Module | str, *, graph_from_layer: bool = True) -> Iterator[Capture]:
    """Record ``layer``'s output during ``model(x)``; the hook is removed on exit, even after an error.

    With ``graph_from_layer`` (the default) the caller runs the forward pass under
    ``torch.no_grad()``; the hook then switches autograd on, so the graph starts at this layer:
    ``capture.activation`` is a leaf that requires grad, and ``torch.autograd.grad(score,
    capture.activation)`` walks back only from the output to the layer. The layer's output is
    passed on as a copy, so in-place operations after the layer (``ReLU(inplace=True)``) cannot
    change what was recorded.
    """
    module = resolve_layer(model, layer)
    capture = Capture(layer=layer if isinstance(layer, str) else type(layer).__name__)

    def hook(_module, _inputs, output):
        capture.calls += 1
        if capture.calls > 1:
            raise RuntimeError(
                f"layer {capture.layer!r} ran {capture.calls} times in one forward pass (a module reused "
                "inside the model); pick a layer that runs once, e.g. its parent block"
            )
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"layer {capture.layer!r} returns {type(output).__name__}, not a tensor; pick another layer")
        if graph_from_layer:
            torch.set_grad_enabled(True)  # reset by the caller's `with torch.no_grad()` on exit
            capture.activation = output.detach().requires_grad_(True)
        else:
            capture.activation = output
        return capture.activation.clone()

    handle = module.register_forward_hook(hook)
    try:
        yield capture
    finally:
        handle.remove()
    if capture.activation is None:
        raise RuntimeError(f"layer {capture.layer!r} never ran during the forward pass; is it used by forward()?")


def normalize_maps(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-image min-max scaling of ``[B, ...]`` maps to [0, 1] (a constant map becomes all zeros)."""
    flat = maps.flatten(1)
    low = flat.min(1, keepdim=True).values
    span = flat.max(1, keepdim=True).values - low
    return ((flat - low) / span.clamp_min(eps)).view_as(maps)


def postprocess_maps(
    maps: torch.Tensor,
    size: tuple[int, int] | None,
    *,
    relu: bool = True,
    upsample: bool = True,
    normalize: bool = True,
) -> torch.Tensor:
    """``[B, h, w]`` maps -> optional ReLU -> optional bilinear upsampling to ``size`` -> optional min-max.

    Each step is explicit so that "the same method" means the same thing everywhere.
    """
    if relu:
        maps = maps.clamp_min(0)
    if upsample and size is not None and tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    if normalize:
        maps = normalize_maps(maps)
    return maps
