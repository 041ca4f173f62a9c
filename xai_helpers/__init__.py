"""xai_helpers: small, fast, tested explainable-AI methods for PyTorch CNNs.

The code behind the book "Explaining CNNs". One module per idea:

========================  ==================================================================
``core``                  shared checks, layer lookup, hooks, state restore, post-processing
``models``                EfficientNet-Lite0 with offline weights, SmallCNN, torchvision models
``data``                  bundled photos, your own images, synthetic shapes with exact masks
``cam``                   Grad-CAM and the CAM family
``rules``                 backward rules (gradient, deconvnet, guided) as objects, and how they apply
``gradients``             saliency, deconvnet, guided backprop, guided Grad-CAM, SmoothGrad
``integrated``            Integrated Gradients: quadratures, completeness, tolerance mode
``display``               the output contract's heatmaps; pixel-space attributions as images
``registry``              every method, its calling convention and output contract
``propagation``           gradient x input, LRP (rules, composites, batch-norm merging), DeepLIFT
``cost``                  forward and backward passes, counted
``stats``                 intervals (BCa bootstrap, t), sign test and Holm's correction
``benchmarks``            the evaluation set: usable photos, photo grids, shapes, DiFull
``removal``               remove and retrain (ROAR), ROAD's imputation, what a removal mask leaks
``perturbation``          occlusion
``blackbox``              model-agnostic: RISE, LIME, KernelSHAP, exact Shapley values
``fooling``               max-sensitivity, softplus copy, input and model manipulation
``featvis``               feature visualisation
``evaluation``            deletion/insertion curves, pointing game, energy in mask
``sanity``                model randomisation and map similarity
``plot``, ``widgets``     figures and interactive explorers
``notebook``              numbers glued into the prose (a no-op outside the book's build)
``training``              the one training recipe, seeded, with a cache of trained models
``receptive_field``       receptive fields, computed and measured
``background``            teaching code for the background chapters
========================  ==================================================================

Every attribution method is called as ``method(model, x, target, ...)`` with ``x [B, 3, H, W]`` in
[0, 1]. Submodules are imported on first use: ``import xai_helpers; xai_helpers.cam.grad_cam``.
"""
import importlib
from types import ModuleType

__version__ = "0.1.0"
__all__ = [
    "core", "registry", "models", "data", "cam", "rules", "gradients", "integrated", "display", "propagation",
    "perturbation", "blackbox", "fooling", "featvis", "evaluation", "cost", "stats", "benchmarks", "removal",
    "sanity", "plot", "widgets", "training", "receptive_field", "background",
]


def __getattr__(name: str) -> ModuleType:
    if name in __all__:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'xai_helpers' has no attribute {name!r}")
