"""xai_helpers: small, fast, tested explainable-AI methods for PyTorch CNNs.

The code behind the book "Explaining CNNs". One module per idea:

==========================  =========================================================
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
