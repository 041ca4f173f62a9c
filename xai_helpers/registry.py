"""One place that knows every attribution method, and the contract they all keep.

**Calling convention.** Every registered method is called as ::

    method(model, x, target, *, layer=..., **options) -> torch.Tensor

* ``model``: an ``nn.Module`` that takes images in ``[0, 1]`` and returns logits ``[B, N]``
  (wrap a model with another output in :class:`xai_helpers.core.SelectOutput`);
* ``x``: a float tensor ``[B, C, H, W]`` in ``[0, 1]``;
* ``target``: the class to explain, an int for the whole batch, or one per image (a sequence, a
  LongTensor ``[B]`` or a NumPy integer array);
* ``layer``: a module or a dotted name, for the methods whose :attr:`Method.needs_layer` is true;
* options with one meaning each across methods: ``batch_size`` (images per forward pass; called
  ``chunk_size`` by the model-agnostic methods of :mod:`xai_helpers.blackbox`), ``seed`` (every random
  draw), ``baseline`` (the reference image or value), ``steps`` (gradient evaluations along a path),
  ``n_samples`` (random copies of the input: noisy images, LIME's and KernelSHAP's perturbed images),
  ``n_masks`` (RISE's masks), ``n_segments`` (superpixels), ``window`` and ``stride`` (pixels).

**Output contract.** The result is detached (``requires_grad`` false), on ``x``'s device and dtype,
signed where the method is signed, and *not* rescaled:

* ``space="input"``: ``[B, C, H, W]``, one value per input pixel and channel (gradients, IG, LRP);
* ``space="map"``: ``[B, H, W]``, one value per pixel at the input's resolution (CAMs, occlusion).

The one switch for display is :func:`xai_helpers.display.to_heatmap` (or ``attribute(...,
heatmap=True)``): ``[B, H, W]`` in ``[0, 1]``, the largest absolute value over channels for
input-space results and the positive part for maps, min-max scaled per image.

**The registry.** :func:`register` adds a function under a name, with what a caller needs to know
about it (:class:`Method`); :func:`methods` lists them, :func:`get` looks one up and
:func:`attribute` calls one by name under the contract. Tests, benchmarks and the book's tables
iterate over :func:`methods`, so a new method is its function, its ``@register`` line and its test.
"""
from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["Method", "FAMILIES", "METHOD_MODULES", "register", "methods", "get", "attribute", "check_contract",
           "heatmap_method", "heatmap_methods"]

Space = Literal["input", "map"]

#: The families, in the order :func:`methods` lists them.
FAMILIES = ("cam", "perturbation", "gradient", "path", "propagation")

#: The modules whose methods register themselves when they are imported; within a family,
#: :func:`methods` lists them in this order (and a module's methods in the order it registers them).
METHOD_MODULES = ("cam", "gradients", "integrated", "perturbation", "propagation", "blackbox")

_REGISTRY: dict[str, Method] = {}


@dataclass(frozen=True)
class Method:
    """What the registry knows about one attribution method."""

    name: str                       #: registry key, e.g. ``"grad_cam"``
    title: str                      #: display name, e.g. ``"Grad-CAM"``
    function: Callable[..., torch.Tensor]
    space: Space                    #: ``"input"``: ``[B, C, H, W]``; ``"map"``: ``[B, H, W]``
    needs_layer: bool               #: whether ``layer=`` is required
    cost: str                       #: passes per image, e.g. ``"1 forward + 1 backward"``
    family: str                     #: ``"cam"``, ``"gradient"``, ``"path"``, ``"perturbation"``, ``"propagation"``
    signed: bool                    #: whether negative values carry meaning
    reference: str                  #: BibTeX key in the book's ``references.bib``

    def __call__(self, model: nn.Module, x: torch.Tensor, target: Any, **options: Any) -> torch.Tensor:
        return attribute(self.name, model, x, target, **options)


def register(
    name: str, *, title: str, space: Space, needs_layer: bool, cost: str, family: str,
    signed: bool = True, reference: str = "",
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator: add the function to the registry under ``name``; the function itself is unchanged."""
    if space not in ("input", "map"):
        raise ValueError(f"space must be 'input' or 'map', got {space!r}")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")

    def add(function: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        known = _REGISTRY.get(name)
        if known is not None and known.function.__qualname__ != function.__qualname__:
            raise ValueError(f"a method named {name!r} is already registered ({known.function.__module__})")
        _REGISTRY[name] = Method(name, title, function, space, needs_layer, cost, family, signed, reference)
        return function

    return add


def _load() -> None:
    for module in METHOD_MODULES:
        try:
            importlib.import_module(f"xai_helpers.{module}")
        except ModuleNotFoundError as err:   # a method module that this installation does not have
            if err.name != f"xai_helpers.{module}":
                raise


def methods(*, family: str | None = None, space: Space | None = None) -> list[Method]:
    """Every registered method, by family (:data:`FAMILIES`), optionally only one ``family`` or ``space``."""
    _load()
    chosen = [m for m in _REGISTRY.values()
              if (family is None or m.family == family) and (space is None or m.space == space)]
    return sorted(chosen, key=lambda m: (FAMILIES.index(m.family), _module_rank(m)))


def _module_rank(method: Method) -> int:
    """Where ``method``'s module stands in :data:`METHOD_MODULES` (others last), so that the order of
    :func:`methods` does not depend on which module was imported first."""
    module = method.function.__module__.rpartition(".")[2]
    return METHOD_MODULES.index(module) if module in METHOD_MODULES else len(METHOD_MODULES)


def get(name: str) -> Method:
    """The method registered as ``name`` (a close match is suggested when there is none)."""
    _load()
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise KeyError(f"no attribution method named {name!r}.{hint} Known: {', '.join(_REGISTRY)}")


def check_contract(method: Method, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
    """Raise unless ``result`` keeps the output contract for ``method`` and input ``x``; return it."""
    b, c, h, w = x.shape
    expected = (b, c, h, w) if method.space == "input" else (b, h, w)
    if not isinstance(result, torch.Tensor) or tuple(result.shape) != expected:
        got = list(result.shape) if isinstance(result, torch.Tensor) else type(result).__name__
        raise RuntimeError(f"{method.name} broke the output contract: expected shape {list(expected)}, got {got}")
    if result.requires_grad or result.device != x.device or result.dtype != x.dtype:
        raise RuntimeError(
            f"{method.name} broke the output contract: requires_grad={result.requires_grad}, "
            f"device {result.device} (input {x.device}), dtype {result.dtype} (input {x.dtype})"
        )
    return result


def attribute(
    name: str, model: nn.Module, x: torch.Tensor, target: Any, *,
    layer: nn.Module | str | None = None, heatmap: bool = False, **options: Any,
) -> torch.Tensor:
    """Run the method registered as ``name`` under the calling convention and output contract.

    ``heatmap=True`` post-processes the result with :func:`xai_helpers.display.to_heatmap`
    (``[B, H, W]`` in ``[0, 1]``); otherwise the raw result of the contract is returned.
    """
    from .core import check_images
    from .display import to_heatmap

    method = get(name)
    check_images(x)
    if method.needs_layer:
        if layer is None:
            raise TypeError(f"{name} needs layer=...; xai_helpers.core.find_last_conv_layer(model) picks the usual one")
        options["layer"] = layer
    elif layer is not None:
        raise TypeError(f"{name} takes no layer (it explains the input directly); drop layer={layer!r}")
    result = check_contract(method, x, method.function(model, x, target, **options))
    return to_heatmap(result) if heatmap else result


HeatmapMethod = Callable[[nn.Module, torch.Tensor, Any], torch.Tensor]


def heatmap_method(name: str, **options: Any) -> HeatmapMethod:
    """The method registered as ``name`` with its ``options`` bound, as ``(model, x, target) -> [B, H, W]``
    heatmaps in ``[0, 1]`` (:func:`attribute` with ``heatmap=True``): the form that metrics, sanity checks
    and comparison tables take. ``layer`` is one of the options, for the methods that need one."""
    method = get(name)                               # an unknown name fails here, not at the first call

    def heatmap(model: nn.Module, x: torch.Tensor, target: Any) -> torch.Tensor:
        return attribute(method.name, model, x, target, heatmap=True, **options)

    heatmap.__name__ = heatmap.__qualname__ = f"{name}_heatmap"
    return heatmap


def heatmap_methods(
    options: dict[str, dict[str, Any]] | None = None, *, layer: nn.Module | str | None = None,
    exclude: tuple[str, ...] = (),
) -> dict[str, HeatmapMethod]:
    """``{title: heatmap_method(name, **options)}`` for every registered method not in ``exclude``,
    in the order of :func:`methods`. ``options[name]`` overrides a method's options; a method that
    needs a layer and has none there gets ``layer``."""
    options = options or {}
    unknown = set(options) - {m.name for m in methods()}
    if unknown:
        raise KeyError(f"options for unknown methods {sorted(unknown)}; known: {', '.join(m.name for m in methods())}")
    chosen = {}
    for method in methods():
        if method.name in exclude:
            continue
        settings = dict(options.get(method.name, {}))
        if method.needs_layer and "layer" not in settings:
            if layer is None:
                raise TypeError(f"{method.name} needs a layer: pass layer=... or options[{method.name!r}]['layer']")
            settings["layer"] = layer
        chosen[method.title] = heatmap_method(method.name, **settings)
    return chosen
