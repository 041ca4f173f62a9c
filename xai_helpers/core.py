"""The machinery every attribution method shares, written once.

* input checks: :func:`check_images`, :func:`as_targets`, :func:`check_logits`,
  :func:`check_autograd_available`, :func:`check_spatial_activation` (clear errors that name the fix);
* :class:`SelectOutput`: wraps a model that returns a tuple or a dict, so that it returns the logits;
  :class:`ScoreOutput` wraps a model with a function of its output (several labels, a region of a
  segmentation map), so that every method explains that one number;
* layers: :func:`resolve_layer` (a module or a dotted name), :func:`find_last_conv_layer`;
* model state: :func:`explaining` puts a model in eval mode and freezes its parameters for the
  duration of an explanation, then restores the mode and every ``requires_grad`` flag;
* activations: :func:`capture_activation` records one layer's output during a forward pass and
  builds the autograd graph only from that layer to the output (so a gradient costs little more
  than a forward pass); :func:`forward_until` records the outputs (or inputs) of some layers and
  stops the forward pass as soon as it has them all;
* transformers: :func:`tokens_to_grid` lays a vision transformer's tokens ``[B, N, D]`` out as the
  map ``[B, D, s, s]`` of their patches, so that CAMs explain them like a convolution's output;
* :func:`postprocess_maps`: the optional ReLU, bilinear upsampling and min-max rescaling
  (:func:`rescale_maps`);
* references: :func:`baseline_like` (a method's reference input as a tensor), :func:`score_change`
  and :func:`completeness_error` (how far attributions are from summing to the score change);
* chunks of forward passes, for the methods and metrics that expand their input into many images
  (Integrated Gradients, SmoothGrad, occlusion, Score-CAM, deletion and insertion curves):
  :func:`default_chunk_size` (small on a CPU, where a large batch costs more per image),
  :func:`check_chunk_size` and :func:`in_chunks`.
"""
from __future__ import annotations

import difflib
import math
import numbers
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "check_images",
    "as_targets",
    "check_logits",
    "check_autograd_available",
    "check_spatial_activation",
    "token_grid",
    "tokens_to_grid",
    "as_map",
    "default_chunk_size",
    "check_chunk_size",
    "equal_chunks",
    "in_chunks",
    "SelectOutput",
    "ScoreOutput",
    "probabilities",
    "select_scores",
    "resolve_layer",
    "layer_name",
    "find_last_conv_layer",
    "explaining",
    "Capture",
    "capture_activation",
    "forward_until",
    "baseline_like",
    "score_change",
    "completeness_error",
    "rescale_maps",
    "postprocess_maps",
]

Target = int | Sequence[int] | torch.Tensor  # NumPy integers and integer arrays are accepted too

# Images are expected in [0, 1]. A maximum above this is far outside that range (ImageNet-normalised
# images stay below 2.7, SmoothGrad's noisy copies below about 2) and almost surely means [0, 255].
_MAX_PLAUSIBLE_PIXEL = 5.0


def check_images(x: torch.Tensor, *, warn_range: bool = True) -> None:
    """Raise a clear error unless ``x`` is a float tensor ``[B, C, H, W]``.

    With ``warn_range`` it also warns when ``x.max() > 5``: the methods expect images in [0, 1], and
    such a value almost surely means an image in [0, 255] (divide it by 255). Methods that check
    images they made themselves (noisy or interpolated copies) can pass ``warn_range=False``.
    """
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
    if warn_range and x.numel():
        top = float(x.detach().max())
        if top > _MAX_PLAUSIBLE_PIXEL:
            warnings.warn(
                f"x has values up to {top:g}, but the methods expect images in [0, 1]: an image in "
                "[0, 255] should be divided by 255 (x / 255). If x is normalised (mean/std), put the "
                "normalisation inside the model (xai_helpers.models.Normalize) and pass x in [0, 1].",
                UserWarning,
                stacklevel=3,
            )


def as_targets(target: Target, batch_size: int, num_classes: int | None = None, device=None) -> torch.Tensor:
    """Turn an int, a sequence of ``B`` ints or a LongTensor ``[B]`` into a LongTensor ``[B]``.

    NumPy integers (``np.int64(3)``) and integer arrays (0-D or ``[B]``) count as ints and tensors.
    An int is used for every image. A sequence or tensor must have exactly one entry per image.
    With ``num_classes`` given, every entry must lie in ``[0, num_classes)``.
    """
    if isinstance(target, bool):
        raise TypeError("target must be a class index, not a bool")
    if not isinstance(target, torch.Tensor) and hasattr(target, "__array__") and hasattr(target, "dtype"):
        # a NumPy array (or scalar): integer kinds become a tensor, anything else is an error below
        if getattr(target.dtype, "kind", "") not in ("i", "u"):
            raise TypeError(f"a target array must hold integer class indices, got dtype {target.dtype}")
        target = torch.as_tensor(target.__array__()).long()
    if isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.dtype == torch.bool:
            raise TypeError(f"a target tensor must hold integer class indices, got dtype {target.dtype}")
        if target.dim() == 0:
            target = target.expand(batch_size)
        elif target.dim() != 1:
            raise ValueError(f"a target tensor must be 1-D [B], got shape {list(target.shape)}")
        targets = target.long()
    elif isinstance(target, numbers.Integral):  # int, and NumPy's integer scalars
        targets = torch.full((batch_size,), int(target), dtype=torch.long)
    elif isinstance(target, Sequence) and not isinstance(target, str):
        if not all(isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in target):
            raise TypeError(f"every target must be an int class index, got {list(target)!r}")
        targets = torch.tensor([int(t) for t in target], dtype=torch.long)
    elif callable(target):
        raise TypeError(
            "a function as target (a score of the model's output) is taken by xai_helpers.registry.attribute, "
            "which wraps the model in ScoreOutput(model, function) and explains its one output; calling a method "
            "directly, pass ScoreOutput(model, function) as the model and 0 as the target")
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
            raise ValueError(
                f"target class {bad} is out of range: the model has {num_classes} classes (0..{num_classes - 1})")
    return targets.to(device) if device is not None else targets


def check_logits(output: object) -> torch.Tensor:
    """``output`` if it is a logits tensor ``[B, num_classes]``; else an error that says how to get one.

    A tuple, list or dict (torchvision's GoogLeNet in training mode returns a namedtuple, HuggingFace
    models a dict with ``"logits"``) is answered with the :class:`SelectOutput` wrapper that picks
    the logits; a 1-D output (a batch dimension dropped, or one score per image) with how to fix it.
    """
    if isinstance(output, torch.Tensor):
        if output.dim() == 2:
            return output
        if output.dim() == 1:
            raise ValueError(
                f"the model returned 1-D scores of shape {list(output.shape)}; the methods need logits "
                "[B, num_classes], one row per image. If the model squeezes its output, keep the batch "
                "dimension; a model with one score per image should return [B, 1] (e.g. out[:, None])."
            )
        raise ValueError(f"the model must return logits [B, num_classes], got shape {list(output.shape)}")
    if isinstance(output, Mapping):
        keys = list(output.keys())
        key = "logits" if "logits" in output else (keys[0] if keys else "logits")
        raise TypeError(
            f"the model returned a {type(output).__name__} with keys {keys}, not a tensor of logits "
            f"[B, num_classes]. Wrap it so that it returns the logits: "
            f"xai_helpers.core.SelectOutput(model, {key!r})"
        )
    if isinstance(output, (tuple, list)):
        fields = getattr(output, "_fields", None)  # a namedtuple names its entries
        named = f" (fields {list(fields)})" if fields else ""
        raise TypeError(
            f"the model returned a {type(output).__name__} of {len(output)} outputs{named}, not a tensor of "
            "logits [B, num_classes]. Wrap it so that it returns the logits: "
            "xai_helpers.core.SelectOutput(model, 0) (or the index of the logits)"
        )
    raise TypeError(f"the model must return a tensor of logits [B, num_classes], got {type(output).__name__}")


class SelectOutput(nn.Module):
    """``model`` with one of its outputs picked: ``SelectOutput(model, key)(x) = model(x)[key]``.

    For models that return a tuple (``key=0``), a namedtuple (an index or a field name) or a dict
    (``key="logits"``, e.g. HuggingFace). The wrapped model's layers are named ``"model.<name>"``.
    """

    def __init__(self, model: nn.Module, key: int | str = 0):
        super().__init__()
        self.model = model
        self.key = key

    def forward(self, *args, **kwargs) -> torch.Tensor:
        output = self.model(*args, **kwargs)
        try:
            if isinstance(self.key, str) and not isinstance(output, Mapping):
                return getattr(output, self.key)  # a namedtuple's field
            return output[self.key]
        except (KeyError, IndexError, AttributeError, TypeError) as err:
            raise KeyError(f"the model's {type(output).__name__} output has no entry {self.key!r}") from err


class ScoreOutput(nn.Module):
    """``model`` scored by a function of its output: ``ScoreOutput(model, score)(x) = score(model(x))[:, None]``.

    ``score(output) -> [n]`` turns whatever the model returns (logits ``[n, K]``, a segmentation
    model's ``{"out": [n, K, H, W]}``, ...) into one number per image; the wrapper returns it as the
    only "class", so every method explains it with target ``0``. Examples: several labels at once
    (``lambda out: out[:, [3, 7]].sum(1)``), a class's score over a region of a segmentation map
    (``lambda out: (out["out"][:, c] * region).sum((1, 2))``). The function must score each row of
    the output from that row alone: methods run many copies of an image (noisy, masked, along a path)
    in one batch. A method that explains the target's softmax probability (Score-CAM's default
    weighting, RISE, LIME and Kernel SHAP by default) explains the score itself: a softmax over one
    output is always 1 (:func:`probabilities`). :func:`xai_helpers.registry.attribute` wraps the
    model this way when the target is a callable. The wrapped model's layers are named
    ``"model.<name>"``.
    """

    def __init__(self, model: nn.Module, score: Callable[[Any], torch.Tensor]):
        super().__init__()
        self.model = model
        self.score = score

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.score(self.model(x))
        if not isinstance(scores, torch.Tensor) or scores.shape not in ((x.shape[0],), (x.shape[0], 1)):
            got = list(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise ValueError(f"a target function must return one score per image, shape [{x.shape[0]}]; got {got}")
        return scores.reshape(-1, 1)


def probabilities(model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """The softmax over the classes of ``logits [B, K]``, for the methods that explain a probability;
    for a :class:`ScoreOutput` model, whose one output is a score and has no classes to share a
    probability with, the score itself."""
    return logits if isinstance(model, ScoreOutput) else logits.softmax(1)


def check_autograd_available(method: str = "this method") -> None:
    """Raise a clear error inside ``torch.inference_mode()``, where no method can take a gradient.

    ``torch.no_grad()`` is fine: the methods switch gradients on where they need them. Inference mode
    cannot be switched off from inside, so ``method`` must be called outside the ``with`` block.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{method} needs autograd, but it was called inside torch.inference_mode(), which disables "
            "autograd for everything in the block. Call it outside that block (inside torch.no_grad() "
            "is fine)."
        )


# On a CPU a forward pass costs more per image once a batch's activations overflow the cache
# (EfficientNet-Lite0, 224 px, 2 threads: about 25-30 ms an image in batches of 4, 45-55 ms in
# batches of 8 to 32); a GPU wants large batches.
CPU_PIXELS_PER_FORWARD = 4 * 224 * 224
GPU_IMAGES_PER_FORWARD = 64


def default_chunk_size(x: torch.Tensor) -> int:
    """Images of ``x [B, C, H, W]``'s size per forward pass when the caller gives no ``chunk_size``.

    On a CPU, as many as fit in ``CPU_PIXELS_PER_FORWARD`` pixels (4 images of 224 x 224, 196 of
    32 x 32, 1 of 448 x 448); elsewhere ``GPU_IMAGES_PER_FORWARD`` (64). Used by the methods and
    metrics that send many perturbed copies of an image through the model without a gradient
    (Score-CAM, occlusion, deletion and insertion).
    """
    if x.device.type == "cpu":
        return max(1, CPU_PIXELS_PER_FORWARD // (x.shape[-2] * x.shape[-1]))
    return GPU_IMAGES_PER_FORWARD


def check_chunk_size(chunk_size: int | None, x: torch.Tensor) -> int:
    """``chunk_size`` if it is a positive int, :func:`default_chunk_size` of ``x`` if it is None.

    A chunk is the number of images that go through the model in one forward pass when a method
    expands its input into many images (points of a path, noisy copies, occluded or masked copies);
    it changes the speed and the memory of a method, never its result.
    """
    if chunk_size is None:
        return default_chunk_size(x)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1 (or None for default_chunk_size), got {chunk_size!r}")
    return int(chunk_size)


def equal_chunks(items: torch.Tensor, chunk_size: int) -> tuple[torch.Tensor, ...]:
    """``items [N, ...]`` split along dim 0 into as few chunks of at most ``chunk_size`` rows as
    possible, of equal sizes (9 rows in chunks of 4 as 3 + 3 + 3, not 4 + 4 + 1): as many forward
    passes, none tiny, and on a CPU a smaller batch costs less per image. No chunk when ``N = 0``."""
    return items.tensor_split(-(-len(items) // chunk_size)) if len(items) else ()


def in_chunks(
    fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int | None,
) -> torch.Tensor:
    """``fn(model, x[i:j], targets[i:j])`` over consecutive chunks of ``chunk_size`` rows, concatenated.

    ``x [N, ...]`` are images a method made from its input (SmoothGrad's ``B * n_samples`` noisy
    copies), ``targets [N]`` their classes, ``fn`` any ``method(model, x, target) -> [n, ...]``.
    ``chunk_size`` is checked by :func:`check_chunk_size` (``None``: :func:`default_chunk_size`).
    Methods that build each chunk of images only when it is sent and reduce it as it comes
    (Integrated Gradients sums the path's gradients, so its memory does not grow with the steps;
    occlusion and Score-CAM make the occluded and masked images of one chunk at a time; the
    deletion and insertion curves too) loop over their chunks themselves, with the same
    :func:`check_chunk_size`; the last three split their images by :func:`equal_chunks`.
    """
    chunk_size = check_chunk_size(chunk_size, x)
    return torch.cat([fn(model, x[i : i + chunk_size], targets[i : i + chunk_size])
                      for i in range(0, x.shape[0], chunk_size)])


def token_grid(n_tokens: int) -> tuple[int, int] | None:
    """``(side, first)`` when ``n_tokens`` tokens are a square grid of patches, ``side x side``, from
    token ``first`` on: ``first = 0`` when ``n_tokens`` is a square, ``1`` (a class token in front)
    when ``n_tokens - 1`` is; ``None`` otherwise."""
    for first in (0, 1):
        side = math.isqrt(max(n_tokens - first, 0))
        if side > 1 and side * side == n_tokens - first:
            return side, first
    return None


def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """A transformer layer's tokens ``[B, N, D]`` -> a map ``[B, D, s, s]``, as CAMs need.

    The ``N`` tokens are a class token followed by ``s * s`` patch tokens in row-major order (ViT), or
    the patch tokens alone; the class token is dropped (it has no place in the image). Any other
    ``N`` raises a ``ValueError``.
    """
    grid = token_grid(tokens.shape[1]) if tokens.dim() == 3 else None
    if grid is None:
        raise ValueError(f"tokens {list(tokens.shape)} are not [B, N, D] with N or N - 1 a square number of patches")
    side, first = grid
    return tokens[:, first:].transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


def as_map(activation: torch.Tensor) -> torch.Tensor:
    """A layer's output as the map ``[B, C, h, w]`` CAMs combine: a map as it is, tokens through
    :func:`tokens_to_grid`."""
    return tokens_to_grid(activation) if activation.dim() == 3 else activation


def check_spatial_activation(activation: torch.Tensor, layer: str) -> None:
    """Raise a clear error unless ``layer``'s output is a map ``[B, C, h, w]`` with ``h * w > 1`` (CAMs
    combine it), or a transformer's tokens ``[B, N, D]`` that :func:`tokens_to_grid` lays out as one."""
    if activation.dim() == 3 and token_grid(activation.shape[1]) is not None:
        return
    if activation.dim() != 4:
        raise ValueError(
            f"CAM methods need a layer whose output is a spatial map [B, C, h, w], or tokens [B, N, D] of a square "
            f"grid of patches (after an optional class token); layer {layer!r} outputs shape "
            f"{list(activation.shape)}. Pick a convolutional layer, e.g. find_last_conv_layer(model)."
        )
    if activation.shape[-2] * activation.shape[-1] == 1:
        raise ValueError(
            f"layer {layer!r} outputs a 1x1 map {list(activation.shape)}, so a CAM there is one number per "
            "image and its upsampled map is constant. Pick a layer before the global pooling, e.g. "
            "find_last_conv_layer(model), or use a larger input."
        )


def select_scores(logits: torch.Tensor, target: Target) -> torch.Tensor:
    """The target class's score for each image: ``logits [B, K]`` -> ``[B]`` (output and targets checked).

    Every method calls it on the model's output, so a tuple, a dict or 1-D scores get the errors of
    :func:`check_logits` everywhere.
    """
    logits = check_logits(logits)
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


_RESIZING_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` are one tensor (the same object, or the same view of the same memory)."""
    return a is b or (
        a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype
    )


def find_last_conv_layer(
    model: nn.Module, *, input_size: int | tuple[int, int] | tuple[int, int, int] | None = None
) -> str:
    """The dotted name of the module whose output ``[B, C, h, w]`` the classifier pools.

    Found from the model's forward pass, not from its names: one dummy image ``[1, C, H, W]`` (``C``
    from the first ``nn.Conv2d``, ``H = W = 224`` unless ``input_size`` gives ``(H, W)``, ``(C, H, W)``
    or a side) runs through the model in eval mode, without autograd, with a forward hook on every
    module. In the order the modules finish, the answer is

    1. the last tensor with a spatial extent: 4-D ``[B, C, h, w]`` with ``h * w > 1``, not counting
       the output of an adaptive pooling module (that resizes the map for the classifier, e.g. VGG's
       ``avgpool`` to 7x7); after it the spatial dimensions collapse (pooling, flattening);
    2. produced by the module that finished last among those returning that tensor, i.e. the
       outermost block (``"layer4"`` rather than ``"layer4.1"``), or the in-place activation after a
       convolution rather than the convolution. Modules that run more than once are skipped.

    Examples: ``"layer4"`` (ResNet), ``"features"`` (VGG, ConvNeXt, EfficientNet, MobileNet, DenseNet),
    ``"Mixed_7c"`` (Inception v3), ``"inception5b"`` (GoogLeNet), ``"trunk_output"`` (RegNet),
    ``"conv5"`` (ShuffleNet), ``"head"`` (EfficientNet-Lite0), ``"relu3"`` (SmallCNN). Two cases to know:

    * DenseNet's classifier pools ``F.relu(features)``, a functional call no module hook can reach:
      the answer, ``"features"``, is the tensor one ReLU before the pooled one (negative values kept).
    * SqueezeNet's classifier is a 1x1 convolution to one channel per class followed by global
      pooling, so the pooled tensor is the class-score map itself. A CAM of that map says little
      (each class has one channel), so when the last spatial map has one channel per output and comes
      from a 1x1 ``nn.Conv2d``, the answer is the map that convolution reads: ``"features"``, the last
      Fire module's output (dropout, an identity in eval mode, is skipped).

    Swin transformers and MaxViT pool a ``[B, C, h, w]`` map too and get an answer (``"permute"``,
    ``"blocks"``). A vision transformer turns its map into tokens ``[B, N, D]`` and classifies the class
    token, so no layer's output is pooled. Its last block's output reaches the class token only
    through the class token itself (the rest is per-token), so the patch tokens there get no gradient;
    the answer is the input norm of the last block (``"encoder.layers.encoder_layer_11.ln_1"`` in
    torchvision's ViT-B, a module named ``ln_1`` or ``norm1``), whose tokens the last attention mixes
    into the class token: CAMs lay them out as a grid (:func:`tokens_to_grid`). A token model without
    such a module gets a ``ValueError``. The hooks are removed and the model's mode and
    ``requires_grad`` flags restored, even after an error.
    """
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("the model has no nn.Conv2d layer; pass the layer to explain explicitly")
    if input_size is None:
        input_size = (224, 224)
    elif isinstance(input_size, int):
        input_size = (input_size, input_size)
    if len(input_size) == 2:
        input_size = (convs[0].in_channels, *input_size)
    if len(input_size) != 3:
        raise ValueError(f"input_size must be (H, W) or (C, H, W), got {input_size!r}")
    reference = next(iter(model.parameters()), None)
    device, dtype = (reference.device, reference.dtype) if reference is not None else ("cpu", torch.float32)
    # a seeded generator of its own: finding a layer must not move the caller's random state
    x = torch.rand((1, *input_size), generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)

    names = {module: name for name, module in model.named_modules()}
    records: list[tuple[str, nn.Module, torch.Tensor, int]] = []  # (name, module, output, its version)
    calls: dict[str, int] = {}
    conv_inputs: dict[nn.Module, torch.Tensor] = {}

    def hook(module, inputs, output):
        name = names[module]
        calls[name] = calls.get(name, 0) + 1
        if isinstance(module, nn.Conv2d) and inputs and isinstance(inputs[0], torch.Tensor):
            conv_inputs[module] = inputs[0]
        if isinstance(output, torch.Tensor):
            records.append((name, module, output, output._version))

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        with explaining(model), torch.no_grad():
            try:
                logits = model(x)
            except Exception as err:
                raise ValueError(
                    f"could not run the model on a dummy input of shape {list(x.shape)} to find its last "
                    f"spatial layer ({type(err).__name__}: {err}). Pass input_size=(H, W) or (C, H, W) "
                    "that the model accepts."
                ) from err
    finally:
        for handle in handles:
            handle.remove()

    spatial = [
        i for i, (_, module, out, _) in enumerate(records)
        if out.dim() == 4 and out.shape[-2] * out.shape[-1] > 1 and not isinstance(module, _RESIZING_POOLS)
    ]
    if not spatial:
        raise ValueError(
            f"no module of this model outputs a spatial map [B, C, h, w] with h * w > 1 for an input of "
            f"size {list(x.shape)}; try a larger input_size, or pass the layer to explain explicitly"
        )
    last = spatial[-1]
    pooled = records[last][2]
    tokens = next((r for r in records[last + 1 :] if r[2].dim() == 3), None)
    if tokens is not None:
        norms = [name for name, _, out, _ in records[last + 1 :] if calls[name] == 1 and out.dim() == 3
                 and name.rsplit(".", 1)[-1] in ("ln_1", "norm1") and token_grid(out.shape[1]) is not None]
        if norms:
            return norms[-1]
        raise ValueError(
            f"this model's classifier does not pool a spatial map: after {records[last][0]!r} "
            f"{list(pooled.shape)} it works on token sequences ({tokens[0]!r} outputs {list(tokens[2].shape)}), "
            "as a vision transformer does, and no block's input norm (ln_1, norm1) holds a square grid of "
            "patch tokens. Pass the layer to explain (its tokens [B, N, D] must be N or N - 1 = a square "
            "number of patches), or explain this model with a gradient or perturbation method."
        )
    same = [i for i, (name, _, out, _) in enumerate(records) if calls[name] == 1 and _same_tensor(out, pooled)]
    n_outputs = logits.shape[-1] if isinstance(logits, torch.Tensor) and logits.dim() == 2 else None
    scorer = next((records[i][1] for i in same if isinstance(records[i][1], nn.Conv2d)
                   and records[i][1].kernel_size == (1, 1) and records[i][1].out_channels == n_outputs), None)
    if scorer is not None and scorer in conv_inputs:  # a class-score map: explain the map it scores
        features, end = conv_inputs[scorer], min(same)
        same = [i for i, (name, module, out, _) in enumerate(records[:end])
                if calls[name] == 1 and not isinstance(module, nn.Dropout) and _same_tensor(out, features)]
    if not same:
        raise ValueError(
            f"the last spatial map {list(pooled.shape)} comes only from modules that run more than once "
            f"({records[last][0]!r}); pass the layer to explain explicitly"
        )
    return records[same[-1]][0]


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

    @property
    def output(self) -> torch.Tensor:
        """The recorded activation; an error if the layer has not run (yet)."""
        if self.activation is None:
            raise RuntimeError(f"layer {self.layer!r} has not run; is it used by the model's forward()?")
        return self.activation


@contextmanager
def capture_activation(
    model: nn.Module, layer: nn.Module | str, *, graph_from_layer: bool = True, spatial: bool = False
) -> Iterator[Capture]:
    """Record ``layer``'s output during ``model(x)``; the hook is removed on exit, even after an error.

    With ``graph_from_layer`` (the default) the caller runs the forward pass under
    ``torch.no_grad()``; the hook then switches autograd on, so the graph starts at this layer:
    ``capture.activation`` is a leaf that requires grad, and ``torch.autograd.grad(score,
    capture.activation)`` walks back only from the output to the layer. The layer's output is
    passed on as a copy, so in-place operations after the layer (``ReLU(inplace=True)``) cannot
    change what was recorded. With ``spatial`` the hook raises a clear error unless the output is a
    map ``[B, C, h, w]`` (:func:`check_spatial_activation`).
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
            raise TypeError(
                f"layer {capture.layer!r} returns {type(output).__name__}, not a tensor; pick another layer")
        if spatial:
            check_spatial_activation(output, capture.layer)
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


class _StopForward(Exception):
    """Raised by a hook of :func:`forward_until` once every value it waits for has been recorded."""


def forward_until(
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[nn.Module | str],
    *,
    inputs: bool = False,
    stop_early: bool = True,
) -> dict[str, torch.Tensor]:
    """Run ``model(x)`` and return ``{layer: value}``: each layer's output (its first positional input
    with ``inputs``) the first time it runs.

    ``layers`` are modules or dotted names (:func:`resolve_layer`); the keys are the names, or the
    dotted name of a module given as a module. With ``stop_early`` a hook ends the forward pass as
    soon as the last of them has been recorded, so the rest of the network never runs (a layer
    near the input costs a few layers, not the whole network). Records keep their autograd graph
    when the caller runs with grad enabled (feature visualisation ascends through them). The hooks
    are removed on return, even after an error; a layer that never ran raises a ``RuntimeError``.
    Autograd mode and the model's mode are the caller's (see :func:`explaining`).
    """
    modules = {(layer if isinstance(layer, str) else layer_name(model, layer)): resolve_layer(model, layer)
               for layer in layers}
    values: dict[str, torch.Tensor] = {}

    def make_hook(name: str) -> Callable[..., None]:
        def record(value: torch.Tensor) -> None:
            values.setdefault(name, value)   # the first call wins if a module runs twice
            if stop_early and len(values) == len(modules):
                raise _StopForward

        if inputs:
            return lambda _module, args: record(args[0])
        return lambda _module, _args, output: record(output)

    handles = [module.register_forward_pre_hook(make_hook(name)) if inputs
               else module.register_forward_hook(make_hook(name)) for name, module in modules.items()]
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in modules if name not in values]
    if missing:
        raise RuntimeError(f"layers {missing} never ran in the forward pass; are they used by forward()?")
    return values


def baseline_like(x: torch.Tensor, baseline: torch.Tensor | float | None) -> torch.Tensor:
    """The baseline (reference input) of a method as a tensor shaped like ``x``, without grad.

    A number fills every pixel (``0.0``, every method's default, is the black image; ``0.5`` is
    mid-grey); a tensor must broadcast to ``x``. ``None`` is not a baseline: in this package it means
    "no reference" (see :func:`score_change`), so a method that needs a reference refuses it.
    """
    if baseline is None:
        raise ValueError(
            "baseline=None means 'no reference input', and this method needs one: pass 0.0 for the black "
            "image (the default), a number for a uniform colour, or a tensor that broadcasts to x")
    if not isinstance(baseline, torch.Tensor):
        return torch.full_like(x, float(baseline))
    try:
        return baseline.detach().to(x).expand_as(x)
    except RuntimeError as err:
        raise ValueError(f"baseline of shape {list(baseline.shape)} does not broadcast to x {list(x.shape)}") from err


def score_change(
    model: nn.Module, x: torch.Tensor, target: Target, baseline: torch.Tensor | float | None = 0.0
) -> torch.Tensor:
    """``y^c(x) - y^c(x')`` per image, ``[B]``, without autograd; ``baseline=None``: ``y^c(x)`` (no reference).

    ``x'`` is :func:`baseline_like` of ``baseline`` (``0.0``: the black image). The model runs in
    eval mode with frozen parameters (:func:`explaining`).
    """
    check_images(x, warn_range=False)
    x = x.detach()
    with explaining(model), torch.no_grad():
        change = select_scores(model(x), target)
        if baseline is not None:
            change = change - select_scores(model(baseline_like(x, baseline)), target)
    return change


def completeness_error(
    model: nn.Module, x: torch.Tensor, target: Target, attributions: torch.Tensor,
    baseline: torch.Tensor | float | None = 0.0,
) -> torch.Tensor:
    """``sum(attributions) - (y^c(x) - y^c(x'))`` per image, ``[B]``: how far attributions are from complete.

    Zero for exact Integrated Gradients and DeepLIFT's summation to delta against the same
    ``baseline`` (``0.0``: the black image); ``baseline=None`` compares with ``y^c(x)`` alone (no
    reference), LRP's conservation, ``sum(R) = y^c(x)`` (:func:`score_change`).
    """
    check_images(x)
    return attributions.detach().flatten(1).sum(1) - score_change(model, x, target, baseline)


def rescale_maps(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-image min-max rescaling of ``[B, ...]`` maps to [0, 1] (a constant map becomes all zeros)."""
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
    rescale: bool = True,
) -> torch.Tensor:
    """``[B, h, w]`` maps -> optional ReLU -> optional bilinear upsampling to ``size`` -> optional min-max
    rescaling to [0, 1] (:func:`rescale_maps`).

    Each step is explicit so that "the same method" means the same thing everywhere.
    """
    if relu:
        maps = maps.clamp_min(0)
    if upsample and size is not None and tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    if rescale:
        maps = rescale_maps(maps)
    return maps
