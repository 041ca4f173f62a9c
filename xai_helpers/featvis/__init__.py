"""Feature visualisation: images a CNN unit responds to most, found by gradient ascent.

After Olah, Mordvintsev and Schubert, "Feature Visualization" (Distill, 2017). Four parts:

* :mod:`.param` -- parametrisations: raw pixels, or a decorrelated ``1/f``-scaled Fourier image;
  both give a batch of RGB images in [0, 1] through a sigmoid.
* :mod:`.objectives` -- what to maximise: a channel, a neuron, a whole layer (DeepDream), a class
  logit, a diversity term; they combine with ``+`` and scalar ``*``.
* :mod:`.transforms` -- seeded random pad, jitter, scale and rotation, for robustness.
* :mod:`.render` -- the Adam loop; its forward pass stops at the deepest layer the objective reads.

:mod:`.examples` finds the real photo patches that excite a channel most, to show beside it.

>>> from xai_helpers.featvis import render, objectives as obj, standard_transforms
>>> result = render(model, obj.channel("blocks.6", [0, 1, 2, 3]), batch=4,
...                 transforms=standard_transforms(128))   # doctest: +SKIP
"""
from . import objectives
from .examples import patch_scores, photo_patches, top_patches
from .objectives import Objective, channel, class_logit, deepdream, diversity, layer, neuron, total_variation
from .param import COLOR_CORRELATION_SQRT, FourierImage, PixelImage, fourier_scale
from .render import RenderResult, activations, evaluate, render
from .transforms import compose, jitter, pad, random_rotate, random_scale, standard_transforms

__all__ = [
    "objectives", "Objective", "channel", "neuron", "layer", "deepdream", "class_logit", "diversity",
    "total_variation", "PixelImage", "FourierImage", "COLOR_CORRELATION_SQRT", "fourier_scale",
    "render", "RenderResult", "activations", "evaluate", "pad", "jitter", "random_scale",
    "random_rotate", "compose", "standard_transforms", "photo_patches", "patch_scores", "top_patches",
]
