"""Sanity checks for saliency maps (Adebayo et al., 2018) and the similarity measures they use.

* :func:`randomize_parameters` redraws a module's parameters at random, seeded;
* :func:`cascading_randomization` randomises a *copy* of a model layer by layer, from the output
  toward the input, and yields the copy after each step (the model passed in is never touched);
* :func:`model_randomization_test` recomputes a set of attribution maps after every step and
  compares them with the maps of the trained model;
* :func:`spearman_rank_correlation` and :func:`ssim` compare two batches of maps ``[B, H, W]``;
* :func:`input_shifted_copy` builds the input-invariance test of Kindermans et al. (2019): a copy
  of the model that reads images shifted by a constant and computes exactly the same function;
* :func:`label_randomization` trains the two models of the data randomisation test: a memoriser of
  permuted labels, and a yardstick trained on the same images with their true labels, under the same
  stopping rule, so that the two differ only in the labels.

An explanation that stays the same when the weights it claims to explain are destroyed cannot be
explaining those weights.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .core import Target, rescale_maps, resolve_layer
from .models import Normalize

__all__ = [
    "randomize_parameters",
    "cascading_randomization",
    "model_randomization_test",
    "SanityResult",
    "rank",
    "spearman_rank_correlation",
    "ssim",
    "input_shifted_copy",
    "LabelRandomization",
    "label_randomization",
]

Step = str | Sequence[str]


def randomize_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Redraw every parameter of ``module`` (and its submodules) in place, i.i.d. Gaussian.

    Each parameter tensor gets values from ``N(mean, std^2)`` with the mean and standard deviation of
    its trained values (a tensor with one element keeps its mean), so activations keep roughly their
    size and the network neither dies nor explodes, while everything it learned is gone. Buffers
    (batch-norm running statistics) are kept.
    """
    with torch.no_grad():
        for p in module.parameters():
            std = p.std() if p.numel() > 1 else p.new_zeros(())
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype, device="cpu").to(p.device)
            p.copy_(p.mean() + std * noise)


def _step_modules(model: nn.Module, step: Step) -> list[nn.Module]:
    names = [step] if isinstance(step, str) else list(step)
    return [resolve_layer(model, name) for name in names]


def step_label(step: Step) -> str:
    """A short label for a cascade step: the layer's name, or ``first..last`` for a group of layers."""
    if isinstance(step, str):
        return step
    return step[0] if len(step) == 1 else f"{step[0]}..{step[-1].split('.')[-1]}"


def cascading_randomization(
    model: nn.Module, cascade: Sequence[Step], *, seed: int = 0, include_original: bool = True
) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(label, model copy)`` while randomising the layers of the ``cascade`` one step at a time.

    ``cascade`` lists layers (dotted names) from the output toward the input, e.g. ``["classifier",
    "head", "blocks.15", ...]``; a step may be a list of names randomised together. The
    randomisation is cumulative: after step ``k`` the layers of steps ``0..k`` are all random
    (Adebayo et al.'s *cascading* randomisation). Everything happens on one ``copy.deepcopy`` of
    ``model``, in eval mode, so the model passed in is untouched. With ``include_original`` the
    unrandomised copy comes first, labelled ``"original"``. Step ``k`` uses a generator seeded
    with ``seed + k``, so each step's weights do not depend on how many steps came before.
    """
    labels = [step_label(s) for s in cascade]
    work = copy.deepcopy(model).eval()
    groups = [_step_modules(work, s) for s in cascade]  # checks every name before any work
    if include_original:
        yield "original", work
    for k, (label, modules) in enumerate(zip(labels, groups)):
        generator = torch.Generator().manual_seed(seed + k)
        for module in modules:
            randomize_parameters(module, generator)
        yield label, work


@dataclass
class SanityResult:
    """What :func:`model_randomization_test` measured.

    ``labels``: the step labels, ``"original"`` first. ``maps[method]``: ``[S, B, H, W]`` maps in
    [0, 1], one per step. ``spearman[method]`` and ``ssim[method]``: ``[S, B]`` similarity of each
    step's map to the original map (the first row is 1).
    """

    labels: list[str]
    maps: dict[str, torch.Tensor]
    spearman: dict[str, torch.Tensor]
    ssim: dict[str, torch.Tensor]


def model_randomization_test(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    methods: Mapping[str, Callable[[nn.Module, torch.Tensor, object], torch.Tensor]],
    cascade: Sequence[Step],
    *,
    seed: int = 0,
    original: Mapping[str, torch.Tensor] | None = None,
) -> SanityResult:
    """Cascading model-parameter randomisation test (Adebayo et al., 2018).

    ``methods`` maps a name to ``method(model, x, target) -> [B, H, W]`` maps (e.g. absolute
    values reduced over colours). Each method runs on the trained model and again after every
    step of :func:`cascading_randomization` over ``cascade``. The maps are min-max rescaled per
    image; the similarity to the original map is measured with :func:`spearman_rank_correlation`
    and :func:`ssim`. The target stays the class chosen on the trained model. ``original[name]``,
    the ``[B, H, W]`` maps of the trained model where the caller has them, spares running those
    methods on it again.
    """
    original = original or {}
    per_step: dict[str, list[torch.Tensor]] = {name: [] for name in methods}
    labels = []
    for k, (label, randomized) in enumerate(cascading_randomization(model, cascade, seed=seed)):
        labels.append(label)
        for name, method in methods.items():
            given = original.get(name) if k == 0 else None      # step 0: the unrandomised copy
            step_maps = (method(randomized, x, target) if given is None else given).detach()
            if step_maps.dim() != 3:
                raise ValueError(f"method {name!r} must return [B, H, W] maps, got shape {list(step_maps.shape)}")
            per_step[name].append(rescale_maps(step_maps))
    maps = {name: torch.stack(ms) for name, ms in per_step.items()}
    spearman = {name: torch.stack([spearman_rank_correlation(m[0], mk) for mk in m]) for name, m in maps.items()}
    similarity = {name: torch.stack([ssim(m[0], mk) for mk in m]) for name, m in maps.items()}
    return SanityResult(labels, maps, spearman, similarity)


def rank(values: torch.Tensor) -> torch.Tensor:
    """Ranks ``1..n`` of each row of ``values [B, n]``; tied values share their average rank."""
    ranks = torch.empty_like(values, dtype=torch.float64)
    for i, row in enumerate(values):
        unique, inverse, counts = torch.unique(row, sorted=True, return_inverse=True, return_counts=True)
        last = counts.cumsum(0).double()                 # rank of the last copy of each unique value
        ranks[i] = (last - (counts.double() - 1) / 2)[inverse]
    return ranks


def spearman_rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation between maps ``a`` and ``b`` ``[B, H, W]`` (any shape ``[B, ...]``): ``[B]``.

    The Pearson correlation of the pixels' ranks (average ranks for ties, as ``scipy.stats.spearmanr``).
    A constant map has no ranking: its correlation is reported as 0 instead of NaN.
    """
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape, got {list(a.shape)} and {list(b.shape)}")
    ra, rb = rank(a.detach().flatten(1)), rank(b.detach().flatten(1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denominator = (ra.pow(2).sum(1) * rb.pow(2).sum(1)).sqrt()
    rho = (ra * rb).sum(1) / denominator.clamp_min(1e-300)
    return torch.where(denominator > 0, rho, torch.zeros_like(rho)).float()


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-coords**2 / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity (Wang et al., 2004) of maps ``a`` and ``b`` ``[B, H, W]`` in [0, 1]: ``[B]``.

    Local means, variances and covariance are Gaussian-weighted (``window`` x ``window``, standard
    deviation ``sigma``) over the positions where the whole window fits (no padding);
    ``SSIM = (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2))`` with
    ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2`` and ``L = data_range``, averaged over positions. The same as
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)``. ``ssim(a, a) == 1``.
    """
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(f"maps must both be [B, H, W], got {list(a.shape)} and {list(b.shape)}")
    if min(a.shape[-2:]) < window:
        raise ValueError(f"maps of size {list(a.shape[-2:])} are smaller than the {window}x{window} window")
    w = _gaussian_window(window, sigma)[None, None]
    a, b = a.detach().double()[:, None], b.detach().double()[:, None]
    mu_a, mu_b = F.conv2d(a, w), F.conv2d(b, w)
    var_a = F.conv2d(a * a, w) - mu_a**2
    var_b = F.conv2d(b * b, w) - mu_b**2
    cov = F.conv2d(a * b, w) - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1).float()


def input_shifted_copy(model: nn.Module, shift: float | Sequence[float]) -> nn.Module:
    """A copy of ``model`` that reads ``x + shift`` and computes what ``model`` computes on ``x``.

    Kindermans et al. (2019) let the network's first layer absorb a constant shift of the input, so
    that the two networks are the same function of their own inputs; an explanation method is
    *input invariant* if it gives both the same map. Here the first layer is the model's
    :class:`~xai_helpers.models.Normalize`, an affine map per channel, ``(x - mean) / std``: its mean
    moves by ``shift`` (one value, or one per channel), which changes the bias ``-mean / std`` and
    nothing else. Every other layer is an exact copy.
    """
    normalizers = [name for name, m in model.named_modules() if isinstance(m, Normalize)]
    if len(normalizers) != 1:
        raise ValueError(
            f"input_shifted_copy needs a model with exactly one xai_helpers.models.Normalize layer to absorb the "
            f"shift, found {len(normalizers)}; wrap your model as nn.Sequential(Normalize(mean, std), model)"
        )
    old = model.get_submodule(normalizers[0])
    assert isinstance(old, Normalize)
    channels = old.mean.shape[1]
    delta = torch.as_tensor(shift, dtype=old.mean.dtype).flatten()
    if delta.numel() not in (1, channels):
        raise ValueError(f"shift needs 1 or {channels} values (one per channel), got {delta.numel()}")
    shifted = copy.deepcopy(model)         # model itself is never touched
    target = shifted.get_submodule(normalizers[0])
    assert isinstance(target, Normalize)
    target.mean = target.mean + delta.to(target.mean.device).view(1, -1, 1, 1)
    return shifted


@dataclass
class LabelRandomization:
    """The models of :func:`label_randomization`: ``permuted [n]`` labels, the ``memoriser`` trained on
    them and the ``yardstick`` trained on the true labels of the same images; ``epochs`` each ran."""

    permuted: torch.Tensor
    memoriser: nn.Module
    yardstick: nn.Module
    epochs: tuple[int, int]


def label_randomization(
    new_model: Callable[[], nn.Module], images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0,
    max_epochs: int = 400, **recipe: object,
) -> LabelRandomization:
    """The data randomisation test's two models (Adebayo et al. 2018), trained on ``images [n, C, H, W]``.

    The memoriser learns a seeded permutation of ``labels [n]`` until it classifies every image
    "correctly" (``stop_at_accuracy=1.0``, at most ``max_epochs``). The yardstick learns the true
    labels of the *same* images under the same rule. Comparing each one's maps with a reference model's
    then isolates the labels: both saw the same images for as long as they needed, so a method whose
    maps of the memoriser are no further from the reference than the yardstick's does not depend on
    what the labels taught. ``new_model()`` builds an untrained model; the memoriser is built after
    ``torch.manual_seed(seed)``, the yardstick after ``torch.manual_seed(seed + 10)``, and each trains
    with :func:`~xai_helpers.training.train_classifier` under its own seed and ``recipe``.
    """
    from .training import train_classifier

    permuted = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(100 + seed))]
    nets, epochs = [], []
    for targets, start in [(permuted, seed), (labels, seed + 10)]:
        torch.manual_seed(start)
        net = new_model()
        epochs.append(len(train_classifier(net, images, targets, epochs=max_epochs, seed=start,
                                           stop_at_accuracy=1.0, **recipe)))  # type: ignore[arg-type]
        nets.append(net)
    return LabelRandomization(permuted, nets[0], nets[1], (epochs[0], epochs[1]))
