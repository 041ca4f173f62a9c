"""xai_helpers: small, fast, tested explainable-AI methods for PyTorch CNNs.

The code behind the book "Explaining CNNs". One module per idea:

==========================  ================================================================
``core``                    shared checks, layer lookup, hooks, state restore, post-processing,
                            chunks of forward passes, the completeness error
``registry``                every method, its calling convention and output contract
``methods``                 the attribution methods, one module per family:
``methods.cam``             Grad-CAM and the CAM family
``methods.gradients``       saliency, deconvnet, guided backprop, guided Grad-CAM, SmoothGrad
``methods.integrated``      Integrated Gradients: quadratures, completeness, tolerance mode
``methods.perturbation``    occlusion
``methods.blackbox``        RISE, LIME and KernelSHAP: black-box methods that only query the model
``methods.propagation``     gradient x input, LRP, DeepLIFT
``backward_rules``          backward rules through activations (gradient, deconvnet, guided)
``relevance``               LRP's machinery: ``rules``, ``composites``, ``canonizers``, ``hooks``
``models``                  EfficientNet-Lite0 with offline weights, SmallCNN, torchvision models
``data``                    bundled photos, your own images, synthetic shapes with exact masks
``display``                 the output contract's heatmaps; pixel-space attributions as images
``cost``                    forward and backward passes, counted
``stats``                   intervals (BCa bootstrap, t), sign test and Holm's correction
``testbeds``                the evaluation set: usable photos, photo grids, shapes, DiFull
``removal``                 remove and retrain (ROAR), ROAD's imputation, what a removal mask leaks
``featvis``                 feature visualisation
``evaluation``              deletion/insertion curves, pointing game, energy in mask
``sanity``                  model randomisation and map similarity
``fooling``                 max-sensitivity, and explanations fooled by input or model manipulation
``concepts``                concept activation vectors, TCAV, network dissection
``concept_sets``            concept images made in code, with exact masks
``report``                  the trust report: every check on your model, with intervals and verdicts
``plot``, ``widgets``       figures and interactive explorers
``notebook``                numbers glued into the prose (a no-op outside the book's build)
``training``                the one training recipe, seeded, with a cache of trained models
``receptive_field``         receptive fields, computed and measured
``background``              teaching code for the background chapters
==========================  ================================================================

Every attribution method is called as ``method(model, x, target, *, layer=..., ...)`` with ``x [B,
3, H, W]`` in [0, 1]; import it from its module (``from xai_helpers.methods.cam import grad_cam``)
or call it by name through :func:`xai_helpers.registry.attribute`. Each name has one path: the
packages ``methods`` and ``relevance`` re-export nothing. Top-level modules are imported on first
use: ``import xai_helpers; xai_helpers.core.find_last_conv_layer``.
"""
import importlib
from types import ModuleType

__version__ = "0.2.0"
__all__ = [
    "core", "registry", "methods", "backward_rules", "relevance", "models", "data", "display",
    "featvis", "evaluation", "cost", "stats", "testbeds", "removal",
    "sanity", "fooling", "concepts", "concept_sets", "report", "plot", "widgets", "notebook", "training",
    "receptive_field", "background",
]


def __getattr__(name: str) -> ModuleType:
    if name in __all__:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'xai_helpers' has no attribute {name!r}")
