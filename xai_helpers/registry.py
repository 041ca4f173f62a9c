"""One place that knows every attribution method, and the contract they all keep.

**Calling convention.** Every registered method is called as ::

    method(model, x, target, *, layer=..., **options) -> torch.Tensor

* ``model``: an ``nn.Module`` that takes images in ``[0, 1]`` and returns logits ``[B, N]``
  (wrap a model with another output in :class:`xai_helpers.core.SelectOutput`);
* ``x``: a float tensor ``[B, C, H, W]`` in ``[0, 1]``;
* ``target``: the class to explain, an int for the whole batch, or one per image (a sequence, a
  LongTensor ``[B]`` or a NumPy integer array);
* ``layer``: a module or a dotted name, for the methods whose :attr:`Method.needs_layer` is true;
* options with one meaning each across methods: ``chunk_size`` (images per forward pass when a
  method expands its input into many images; ``None``: :func:`~xai_helpers.core.default_chunk_size`),
  ``seed`` (every random draw), ``baseline`` (the reference input, ``0.0`` the black image),
  ``steps`` (gradient evaluations along a path), ``n_samples`` (noisy copies), ``window`` and
  ``stride`` (pixels).

**Output contract.** The result is detached (``requires_grad`` false), on ``x``'s device and dtype,
signed where the method is signed, and *not* rescaled:

* ``space="input"``: ``[B, C, H, W]``, one value per input pixel and channel (gradients, IG, LRP);
* ``space="map"``: ``[B, H, W]``, one value per pixel at the input's resolution (CAMs, occlusion).

The one switch for display is :func:`xai_helpers.display.to_heatmap` (or ``attribute(...,
heatmap=True)``): ``[B, H, W]`` in ``[0, 1]``, the largest absolute value over channels for
input-space results and the positive part for maps, min-max scaled per image.

Every option of a registered method keeps the contract under :func:`attribute`. An option that
would break it (a CAM's ``upsample=False``, ``rescale=True`` or ``relu=False``) is listed in
:attr:`Method.refuses`: :func:`attribute` refuses it with an error that names the direct call which
accepts it (e.g. ``xai_helpers.methods.cam.grad_cam`` for the layer-resolution map).

**The registry.** :func:`register` adds a function under a name, with what a caller needs to know
about it (:class:`Method`); :func:`methods` lists them, :func:`get` looks one up and
:func:`attribute` calls one by name under the contract. The methods live in the modules of
:mod:`xai_helpers.methods`, which :func:`methods` imports, every one of them, found with
``pkgutil.iter_modules``: a method in a new module there registers itself with its decorator
alone. Tests, benchmarks and the book's tables iterate over :func:`methods` (with each method's
:attr:`Method.quick` options where cost matters), so a new method is its function, its
``@register`` line and its test.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["Method", "FAMILIES", "register", "methods", "get", "attribute", "check_contract",
           "heatmap_method", "heatmap_methods"]

Space = Literal["input", "map"]

#: The families, in the order :func:`methods` lists them.
FAMILIES = ("cam", "perturbation", "gradient", "path", "propagation", "blackbox")

#: Why each option a method may refuse (:attr:`Method.refuses`) would break the output contract.
_BREAKS_CONTRACT = {
    "upsample": "upsample=False returns the map at the layer's resolution, not the input's",
    "rescale": "rescale=True min-max scales the map, and the contract returns it unscaled "
               "(attribute(..., heatmap=True) or xai_helpers.display.to_heatmap scale it for display)",
    "relu": "relu=False returns a signed map from a method registered as unsigned",
}

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
    #: options of the function that :func:`attribute` refuses, because they would break the contract
    refuses: tuple[str, ...] = ()
    #: small-cost settings that still run the whole algorithm (tests, benchmarks, quick looks)
    quick: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __call__(self, model: nn.Module, x: torch.Tensor, target: Any, **options: Any) -> torch.Tensor:
        return attribute(self.name, model, x, target, **options)


def register(
    name: str, *, title: str, space: Space, needs_layer: bool, cost: str, family: str,
    signed: bool = True, reference: str = "", refuses: tuple[str, ...] = (),
    quick: Mapping[str, Any] | None = None,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator: add the function to the registry under ``name``; the function itself is unchanged.

    ``refuses`` names options of the function that :func:`attribute` refuses (each must be one of
    the options whose harm to the contract the registry can explain: ``upsample``, ``rescale``,
    ``relu``); ``quick`` gives small-cost options (:attr:`Method.quick`).
    """
    if space not in ("input", "map"):
        raise ValueError(f"space must be 'input' or 'map', got {space!r}")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    unexplained = [option for option in refuses if option not in _BREAKS_CONTRACT]
    if unexplained:
        raise ValueError(f"refuses= names options the registry cannot explain: {unexplained}; "
                         f"known: {sorted(_BREAKS_CONTRACT)}")
    quick_options = MappingProxyType(dict(quick or {}))

    def add(function: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        known = _REGISTRY.get(name)
        if known is not None and known.function.__qualname__ != function.__qualname__:
            raise ValueError(f"a method named {name!r} is already registered ({known.function.__module__})")
        _REGISTRY[name] = Method(name, title, function, space, needs_layer, cost, family, signed, reference,
                                 tuple(refuses), quick_options)
        return function

    return add


_LOADED_PATH: tuple[str, ...] | None = None    # the package path whose modules are all imported


def _load() -> None:
    """Import every module of :mod:`xai_helpers.methods`, so that each method registers itself.

    The folders are listed once (again only if the package's path changes), so that looking a
    method up costs no file-system access.
    """
    global _LOADED_PATH
    from . import methods as package

    path = tuple(package.__path__)
    if path == _LOADED_PATH:
        return
    for info in pkgutil.iter_modules(path, prefix=f"{package.__name__}."):
        importlib.import_module(info.name)
    _LOADED_PATH = path


def methods(*, family: str | None = None, space: Space | None = None) -> list[Method]:
    """Every registered method, by family (:data:`FAMILIES`), optionally only one ``family`` or ``space``."""
    _load()
    chosen = [m for m in _REGISTRY.values()
              if (family is None or m.family == family) and (space is None or m.space == space)]
    return sorted(chosen, key=lambda m: FAMILIES.index(m.family))


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

    ``target``: a class index per image (an int, ``B`` ints or a LongTensor ``[B]``), or a function
    ``score(output) -> [B]`` of the model's output (several labels, a segmentation model's class over
    a region): the model is then wrapped in :class:`~xai_helpers.core.ScoreOutput` and its one output
    explained, by every method and under every option (the function must score each row of the
    output from that row alone). ``heatmap=True`` post-processes the result with
    :func:`xai_helpers.display.to_heatmap` (``[B, H, W]`` in ``[0, 1]``); otherwise the raw result of
    the contract is returned.
    """
    from .core import ScoreOutput, check_images, resolve_layer
    from .display import to_heatmap

    method = get(name)
    check_images(x)
    refused = [option for option in method.refuses if option in options]
    if refused:
        function = f"{method.function.__module__}.{method.function.__qualname__}"
        reasons = "; ".join(_BREAKS_CONTRACT[option] for option in refused)
        raise TypeError(
            f"{name} under the registry's output contract refuses {', '.join(f'{o}=' for o in refused)} ({reasons}). "
            f"Call {function} directly for that result.")
    if method.needs_layer:
        if layer is None:
            raise TypeError(f"{name} needs layer=...; xai_helpers.core.find_last_conv_layer(model) picks the usual one")
        options["layer"] = layer
    elif layer is not None:
        raise TypeError(f"{name} takes no layer (it explains the input directly); drop layer={layer!r}")
    if callable(target) and not isinstance(target, torch.Tensor):
        if method.needs_layer:      # the layer's name is the model's; the module is found inside the wrapper too
            options["layer"] = resolve_layer(model, options["layer"])
        model, target = ScoreOutput(model, target), 0
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
