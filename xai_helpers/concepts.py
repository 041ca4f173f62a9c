"""Concept-based explanations: what a layer encodes, in human terms.

**Concept activation vectors and TCAV** (Kim et al. 2018). Let ``f_l(x)`` be the activations of
layer ``l`` for image ``x``, flattened to a vector of ``D`` numbers, and ``h_k`` the map from them
to the logit of class ``k``. A *concept activation vector* (CAV) ``v_C`` is the unit normal of a
linear classifier that separates ``f_l`` of images of a concept ``C`` (stripes) from ``f_l`` of
random images, pointing towards the concept (:func:`train_cav`). The *directional derivative*

    ``S_{C,k,l}(x) = grad h_k(f_l(x)) . v_C``

says whether moving the activations towards the concept raises the class's logit
(:func:`directional_derivatives`), and the *TCAV score* of a set ``X_k`` of images of class ``k`` is
the fraction with a positive one, ``|{x in X_k : S_{C,k,l}(x) > 0}| / |X_k|`` (:func:`tcav_score`).
A CAV against one random set can pick up chance directions, so :func:`tcav` trains one CAV against
each of several random counter-sets, and CAVs of random "pseudo-concepts" against the same sets for
a null distribution, and compares the two samples of TCAV scores by a two-sided t-test (the
paper's test), or the concept's mean score with those of several random pseudo-concepts (a
set-level test, which stays calibrated when the concept set itself is a chance draw);
:func:`tcav_concepts` does this for several concepts at once with Holm's correction
(:func:`holm_tcav`).

**Network dissection** (Bau et al. 2017), offline. Each unit ``k`` of a convolutional layer gets the
threshold ``T_k`` above which lie 0.5 % of its activations over the whole data set (every position
of every image; :func:`unit_thresholds`); its activation map, upsampled bilinearly to the image,
thresholded at ``T_k``, is its mask ``M_k(x)``; and its agreement with the mask ``L_c(x)`` of a
concept ``c`` is the intersection over union accumulated over the data set,
``IoU_{k,c} = sum_x |M_k(x) & L_c(x)| / sum_x |M_k(x) | L_c(x)|`` (:func:`unit_iou`). The concept
masks here are exact by construction (:mod:`xai_helpers.concept_sets`): the shapes' masks, patches
pasted into photos. :func:`dissect` runs the model and names each unit's best concept.

Activations and gradients are taken with the shared hooks of :mod:`xai_helpers.core`: the model is
in eval mode with frozen parameters for the duration, every hook is removed even after an error,
and a gradient is taken only from the layer to the output.

**Concept relevance propagation** (Achtibat et al. 2023). LRP tells how much relevance reaches each
channel of a layer (:func:`channel_relevance`); keeping it in one channel (or a set of channels: a
concept) and propagating only that part on to the pixels tells *where* in the image that concept
matters for the class (:func:`concept_relevance`).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from scipy import stats as _scipy_stats
from torch import nn

from .core import (
    Target,
    as_targets,
    capture_activation,
    check_autograd_available,
    check_chunk_size,
    check_images,
    explaining,
    forward_until,
    layer_name,
    select_scores,
)
from .relevance.composites import Composite
from .stats import Interval, holm, t_interval

__all__ = [
    "layer_activations",
    "layer_gradients",
    "CAV",
    "train_cav",
    "directional_derivatives",
    "tcav_score",
    "TCAVResult",
    "tcav",
    "tcav_concepts",
    "holm_tcav",
    "unit_thresholds",
    "unit_iou",
    "unit_iou_table",
    "unit_masks",
    "DissectionResult",
    "dissect",
    "channel_relevance",
    "concept_relevance",
]

Layer = nn.Module | str


# ----------------------------------------------------------------------------- activations and gradients


def layer_activations(
    model: nn.Module, images: torch.Tensor, layer: Layer, chunk_size: int | None = None, *, flatten: bool = True
) -> torch.Tensor:
    """The activations of ``layer`` for ``images [N, C, H, W]``: ``[N, D]`` flattened, or ``[N, ...]``.

    ``chunk_size`` images per forward pass (default :func:`~xai_helpers.core.default_chunk_size`),
    without autograd; the forward pass stops once ``layer`` has run. The model is in eval mode
    for the duration (restored after). ``D`` is the product of the layer's output dimensions after
    the batch (``K h w`` for a convolutional layer, in ``torch.flatten`` order).
    """
    check_images(images)
    name = layer_name(model, layer)
    chunk = check_chunk_size(chunk_size, images)
    recorded: list[torch.Tensor] = []
    with explaining(model), torch.no_grad():
        for start in range(0, images.shape[0], chunk):
            output = forward_until(model, images[start : start + chunk], [name])[name]
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"layer {name!r} returns {type(output).__name__}, not a tensor")
            recorded.append(output.detach().clone())
    activations = torch.cat(recorded)
    return activations.flatten(1) if flatten else activations


def layer_gradients(
    model: nn.Module, images: torch.Tensor, target: Target, layer: Layer, chunk_size: int | None = None
) -> torch.Tensor:
    """``grad h_k(f_l(x))`` flattened: the gradient of the target logit with respect to ``layer``'s
    output, ``[N, D]`` (same order as :func:`layer_activations`).

    One forward and one backward pass per chunk, the backward pass only from the output to the layer
    (:func:`~xai_helpers.core.capture_activation`); any layer with a tensor output works (spatial or
    not). Images do not interact in eval mode, so a chunk's summed score gives each image its own
    gradient. ``target``: an int for every image, or one per image.
    """
    check_images(images)
    check_autograd_available("layer_gradients")
    chunk = check_chunk_size(chunk_size, images)
    targets = as_targets(target, images.shape[0])  # [N]; the class range is checked against the logits
    gradients = []
    with explaining(model):
        for start in range(0, images.shape[0], chunk):
            x, t = images[start : start + chunk], targets[start : start + chunk].to(images.device)
            with capture_activation(model, layer, graph_from_layer=True) as capture:
                with torch.no_grad():  # the graph starts at the layer (the hook switches autograd on)
                    scores = select_scores(model(x), t)  # [n]
                if not scores.requires_grad:
                    raise RuntimeError(f"the model's output does not depend on layer {capture.layer!r}")
                (grad,) = torch.autograd.grad(scores, capture.output, torch.ones_like(scores), allow_unused=True)
            if grad is None:
                raise RuntimeError(f"the target scores do not depend on layer {capture.layer!r}")
            gradients.append(grad.detach().flatten(1))
    return torch.cat(gradients)


# ----------------------------------------------------------------------------- concept activation vectors


@dataclass(frozen=True, eq=False)
class CAV:
    """A concept activation vector: the linear classifier ``v . a + bias > 0`` (concept) in a layer.

    ``direction [D]`` (float64) is the unit normal ``v``, pointing towards the concept; ``bias`` makes
    ``v . a + bias`` the signed distance of activations ``a`` from the decision boundary.
    ``accuracy`` is the balanced accuracy (mean of the two classes' accuracies) on the held-out
    examples, ``train_accuracy`` on those it was fitted on; ``n_concept`` and ``n_random`` count all
    examples; ``l2`` is the regularisation it was fitted with.
    """

    direction: torch.Tensor
    bias: float
    accuracy: float
    train_accuracy: float
    n_concept: int
    n_random: int
    l2: float

    def decision(self, activations: torch.Tensor) -> torch.Tensor:
        """``v . a + bias`` for activations ``[N, D]`` (or ``[N, ...]``, flattened): ``[N]``, positive = concept."""
        return activations.flatten(1).double() @ self.direction + self.bias


def _balanced_accuracy(decision: torch.Tensor, labels: torch.Tensor) -> float:
    predicted = decision > 0
    return 0.5 * (float(predicted[labels].double().mean()) + float((~predicted[~labels]).double().mean()))


def _fit_logistic(x: torch.Tensor, labels: torch.Tensor, l2: float, max_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``w [D]`` and bias ``b`` minimising the class-balanced logistic loss plus ``l2/2 |w|^2``.

    ``x [n, D]`` float64, ``labels [n]`` bool. L-BFGS with a strong Wolfe line search from zero; the
    objective is strictly convex, so the minimiser is unique and found to ``tolerance_grad``.
    """
    sign = labels.double() * 2 - 1  # +1 concept, -1 random
    weight = torch.where(labels, 0.5 / labels.sum(), 0.5 / (~labels).sum()).double()  # sums to 1
    params = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [params],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        w, b = params[:-1], params[-1]
        loss = (weight * F.softplus(-sign * (x @ w + b))).sum() + 0.5 * l2 * (w @ w)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return params[:-1].detach(), params[-1].detach()


def train_cav(
    concept_acts: torch.Tensor,
    random_acts: torch.Tensor,
    *,
    seed: int = 0,
    l2: float = 1e-2,
    test_fraction: float = 0.25,
    max_iter: int = 500,
) -> CAV:
    """Fit a CAV separating ``concept_acts [Nc, D]`` from ``random_acts [Nr, D]`` (flattened if not 2-D).

    **The classifier** is L2-regularised logistic regression, fitted in float64 by L-BFGS: it
    minimises ``sum_i c_i log(1 + exp(-y_i (w . z_i + b))) + (l2 / 2) |w|^2`` with ``y_i = +1`` for
    the concept and ``-1`` for random, example weights ``c_i`` that give each class half the total
    (so unequal set sizes do not shift the boundary), and ``z_i = (a_i - mu) / s`` the activations
    centred on the training mean ``mu`` and divided by one number, their root-mean-square norm ``s``
    (so ``mean |z_i|^2 = 1``). Centring and one global scale move neither the direction nor the
    ranking of images along it; they only make ``l2`` mean the same at every layer. The objective is
    strictly convex, so the answer does not depend on a random start (unlike stochastic gradient
    descent, which the TCAV reference code uses); logistic regression rather than a linear SVM
    because its loss is smooth and every example contributes. A large ``l2`` turns ``w`` towards the
    difference of the two classes' means, a small one towards the maximum-margin direction; the
    default lies between. The CAV is the unit vector along ``w / s`` in the raw activations.

    **The held-out split** is seeded and stratified: ``round(test_fraction * n)`` examples of each
    class (at least one) are held out, the CAV is fitted on the rest, and ``CAV.accuracy`` is
    the balanced accuracy on the held-out ones. Two clouds the classifier cannot tell apart give
    about 0.5.
    """
    concept = concept_acts.detach().flatten(1).double()
    random = random_acts.detach().flatten(1).double()
    if concept.shape[1] != random.shape[1]:
        raise ValueError(f"concept and random activations differ in size: {concept.shape[1]} and {random.shape[1]}")
    if min(len(concept), len(random)) < 2:
        raise ValueError(f"need at least 2 examples of each class, got {len(concept)} concept and {len(random)} random")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    if l2 <= 0:
        raise ValueError(f"l2 must be positive (it makes the minimiser unique), got {l2}")
    gen = torch.Generator().manual_seed(seed)
    train_parts, test_parts = [], []
    for examples, is_concept in ((concept, True), (random, False)):
        order = torch.randperm(len(examples), generator=gen)
        n_test = min(len(examples) - 1, max(1, round(test_fraction * len(examples))))
        labels = torch.full((len(examples),), is_concept)
        test_parts.append((examples[order[:n_test]], labels[:n_test]))
        train_parts.append((examples[order[n_test:]], labels[n_test:]))
    x_train = torch.cat([p[0] for p in train_parts])
    y_train = torch.cat([p[1] for p in train_parts])
    x_test = torch.cat([p[0] for p in test_parts])
    y_test = torch.cat([p[1] for p in test_parts])

    mu = x_train.mean(0)
    scale = float((x_train - mu).pow(2).sum(1).mean().sqrt())
    scale = scale if scale > 0 else 1.0
    w, b = _fit_logistic((x_train - mu) / scale, y_train, l2, max_iter)
    w_raw = w / scale
    norm = float(w_raw.norm())
    if not norm > 0 or not math.isfinite(norm):
        raise ValueError(
            "the concept and random activations could not be separated at all (the classifier's weights are zero)"
        )
    direction = w_raw / norm
    bias = float(b - w_raw @ mu) / norm
    cav = CAV(direction, bias, float("nan"), float("nan"), len(concept), len(random), l2)
    return replace(
        cav,
        accuracy=_balanced_accuracy(cav.decision(x_test), y_test),
        train_accuracy=_balanced_accuracy(cav.decision(x_train), y_train),
    )


# ----------------------------------------------------------------------------- TCAV


def _direction(cav: CAV | torch.Tensor) -> torch.Tensor:
    return (cav.direction if isinstance(cav, CAV) else torch.as_tensor(cav)).double().flatten()


def directional_derivatives(
    model: nn.Module,
    images: torch.Tensor,
    target: Target,
    layer: Layer,
    cav: CAV | torch.Tensor,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """``S(x) = grad h_k(f_l(x)) . v`` for each of ``images [N, C, H, W]``: ``[N]`` (float64).

    The gradient of the target logit at ``layer``, flattened (:func:`layer_gradients`), dotted with
    the CAV's direction ``v [D]`` (a :class:`CAV`, or a vector ``[D]`` used as it is, not normalised).
    """
    gradients = layer_gradients(model, images, target, layer, chunk_size).double()
    v = _direction(cav)
    if gradients.shape[1] != v.numel():
        raise ValueError(
            f"the CAV has {v.numel()} entries but layer {layer!r} has {gradients.shape[1]} activations per image"
        )
    return gradients @ v


def tcav_score(derivatives: torch.Tensor) -> float:
    """The fraction of directional derivatives ``[N]`` that are positive (zero counts as not positive).

    Where the logit is linear in the layer's activations (the layer just before global average
    pooling and a linear classifier, such as ``relu3`` of :class:`~xai_helpers.models.SmallCNN`), the
    gradient is the same for every image, and the score is 0 or 1: one bit per CAV. Close to such a
    head, scores cluster at 0 and 1 too, and random CAVs scatter between them.
    """
    if derivatives.numel() == 0:
        raise ValueError("no directional derivatives to score")
    return float((derivatives > 0).double().mean())


@dataclass(frozen=True, eq=False)
class TCAVResult:
    """TCAV scores of one concept for one class at one layer, with two tests against random concepts.

    ``scores [K]``: the TCAV score of each of the ``K`` runs (the concept's CAV against each random
    counter-set); ``random_scores [J, K]``: those of the ``J`` random pseudo-concepts against the same
    counter-sets; ``cav_accuracies [K]`` and ``random_cav_accuracies [J, K]``: their CAVs' held-out
    balanced accuracies.

    * ``p_value``: Kim et al.'s test, two-sided Student's t-test of ``scores`` against
      ``random_scores[0]`` (one fixed random pseudo-concept, as the reference code). It treats the
      ``K`` runs as independent, but they share the one concept set, so it answers "does *this set*
      differ from *that random set*?" and rejects a concept set drawn like the random ones far more
      often than its nominal rate (the tests construct such a case).
    * ``p_sets``: the set-level test (None unless ``J >= 2``): the concept's mean score ``m`` against
      the ``J`` pseudo-concepts' mean scores ``m_1 .. m_J`` (mean ``mbar``, sample standard deviation
      ``s``), ``t = (m - mbar) / (s sqrt(1 + 1/J))`` with ``J - 1`` degrees of freedom, two-sided: is
      the concept's score outside what random *sets* give? Exact for normal set means when the concept
      set is exchangeable with the random sets (a shared counter-set moves all means alike and cancels).
    * ``p_adjusted``, ``p_sets_adjusted``: after Holm's correction over the concepts tested together
      (None if not adjusted; :func:`holm_tcav`).
    """

    concept: str
    target: int
    layer: str
    scores: torch.Tensor
    random_scores: torch.Tensor
    cav_accuracies: torch.Tensor
    random_cav_accuracies: torch.Tensor
    p_value: float
    p_sets: float | None = None
    p_adjusted: float | None = None
    p_sets_adjusted: float | None = None

    @property
    def n_runs(self) -> int:
        """``K``, the number of CAVs of the concept (one per random counter-set)."""
        return len(self.scores)

    @property
    def n_random_concepts(self) -> int:
        """``J``, the number of random pseudo-concepts."""
        return self.random_scores.shape[0]

    @property
    def mean(self) -> float:
        """Mean TCAV score over the runs."""
        return float(self.scores.mean())

    @property
    def std(self) -> float:
        """Sample standard deviation of the TCAV scores over the runs."""
        return float(self.scores.std())

    @property
    def effect(self) -> float:
        """``mean - random_mean``: positive where moving towards the concept raises the class's logit
        more often than moving towards a random set does (the sign the two-sided tests leave open)."""
        return self.mean - self.random_mean

    @property
    def random_mean(self) -> float:
        """Mean TCAV score of all random pseudo-concept CAVs."""
        return float(self.random_scores.mean())

    @property
    def random_std(self) -> float:
        """Sample standard deviation of the TCAV scores of all random pseudo-concept CAVs."""
        return float(self.random_scores.flatten().std())

    def interval(self, level: float = 0.95) -> Interval:
        """Student's t interval of the mean TCAV score over the ``K`` runs (:func:`~xai_helpers.stats.t_interval`).

        It describes the spread over counter-sets for this concept set, not over concept sets."""
        return t_interval(self.scores, level=level)

    def significant(self, alpha: float = 0.05, *, test: Literal["runs", "sets"] = "runs") -> bool:
        """Whether the p-value of ``test`` (``"runs"``: ``p_value``; ``"sets"``: ``p_sets``), Holm-adjusted
        where that has been done, is below ``alpha``: the scores differ from random's, in either direction."""
        if test == "runs":
            p = self.p_value if self.p_adjusted is None else self.p_adjusted
        elif test == "sets":
            if self.p_sets is None:
                raise ValueError(
                    "the set-level test needs at least 2 random pseudo-concepts (n_random_concepts=2 or more)"
                )
            p = self.p_sets if self.p_sets_adjusted is None else self.p_sets_adjusted
        else:
            raise ValueError(f"test must be 'runs' or 'sets', got {test!r}")
        return p < alpha

    def __str__(self) -> str:
        adjusted = "" if self.p_adjusted is None else f", Holm {self.p_adjusted:.3g}"
        text = (
            f"{self.concept}: TCAV {self.mean:.3f} +- {self.std:.3f} over {self.n_runs} runs, random "
            f"{self.random_mean:.3f} +- {self.random_std:.3f}; p = {self.p_value:.3g}{adjusted} "
            "(two-sided t-test over runs)"
        )
        if self.p_sets is not None:
            adjusted = "" if self.p_sets_adjusted is None else f", Holm {self.p_sets_adjusted:.3g}"
            text += f", p = {self.p_sets:.3g}{adjusted} (against {self.n_random_concepts} random concepts)"
        return text


def _t_test(scores: torch.Tensor, random_scores: torch.Tensor, equal_var: bool) -> float:
    """Two-sided p-value of Student's (or Welch's) t-test; two constant samples: 1 if equal, else 0."""
    if float(scores.std()) == 0.0 and float(random_scores.std()) == 0.0:
        return 1.0 if float(scores.mean()) == float(random_scores.mean()) else 0.0
    with warnings.catch_warnings():
        # One constant sample (every image positive in every run: all scores 1) is exact, not a
        # "catastrophic cancellation" as SciPy fears; its variance is 0 and the test stays valid.
        warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
        return float(_scipy_stats.ttest_ind(scores.numpy(), random_scores.numpy(), equal_var=equal_var).pvalue)


def _set_test(mean: float, set_means: torch.Tensor) -> float:
    """Two-sided p-value of ``mean`` as one more draw from the distribution of ``set_means [J]``:
    ``t = (mean - mbar) / (s sqrt(1 + 1/J))``, ``J - 1`` degrees of freedom (a prediction interval).
    Constant ``set_means``: 1 if ``mean`` equals them, else 0."""
    j = len(set_means)
    spread = float(set_means.std())
    centre = float(set_means.mean())
    if spread == 0.0:
        return 1.0 if mean == centre else 0.0
    t = (mean - centre) / (spread * math.sqrt(1 + 1 / j))
    return float(2 * _scipy_stats.t.sf(abs(t), j - 1))


def _check_runs(random_sets: Sequence[torch.Tensor], n_random_concepts: int, n_runs: int | None) -> int:
    if isinstance(random_sets, torch.Tensor) or len(random_sets) < 3:
        raise ValueError(
            "random_sets must be a sequence of at least 3 image tensors [Nr, C, H, W]: random "
            "pseudo-concepts and at least 2 counter-sets (xai_helpers.concept_sets.random_counter_sets)"
        )
    if (
        isinstance(n_random_concepts, bool)
        or not isinstance(n_random_concepts, int)
        or not 1 <= n_random_concepts <= len(random_sets) - 2
    ):
        raise ValueError(
            f"n_random_concepts must be an int in [1, {len(random_sets) - 2}] (the rest of the "
            f"{len(random_sets)} random sets are counter-sets, at least 2), got {n_random_concepts!r}"
        )
    available = len(random_sets) - n_random_concepts
    runs = available if n_runs is None else n_runs
    if isinstance(runs, bool) or not isinstance(runs, int) or not 2 <= runs <= available:
        raise ValueError(f"n_runs must be an int in [2, {available}] (one run per counter-set), got {n_runs!r}")
    return runs


def tcav_concepts(
    model: nn.Module,
    class_images: torch.Tensor,
    target: int,
    layer: Layer,
    concepts: Mapping[str, torch.Tensor],
    random_sets: Sequence[torch.Tensor],
    *,
    n_random_concepts: int = 1,
    n_runs: int | None = None,
    seed: int = 0,
    l2: float = 1e-2,
    test_fraction: float = 0.25,
    equal_var: bool = True,
    chunk_size: int | None = None,
) -> dict[str, TCAVResult]:
    """:func:`tcav` for each of ``concepts`` (name -> images ``[Nc, C, H, W]``), Holm-adjusted over them.

    The gradients of the class images, the activations of the random sets and the random
    pseudo-concepts' CAVs are computed once, so every concept is tested against the same null.
    """
    runs = _check_runs(random_sets, n_random_concepts, n_runs)
    if not concepts:
        raise ValueError("no concepts given")
    if isinstance(target, bool) or not isinstance(target, numbers.Integral):
        raise TypeError(f"target must be one class index (an int) for all class images, got {target!r}")
    name = layer_name(model, layer)
    gradients = layer_gradients(model, class_images, int(target), layer, chunk_size).double()  # [N, D]
    pseudo = [layer_activations(model, r, layer, chunk_size) for r in random_sets[:n_random_concepts]]
    counter = [
        layer_activations(model, r, layer, chunk_size)
        for r in random_sets[n_random_concepts : n_random_concepts + runs]
    ]

    def against_counter_sets(acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TCAV scores ``[K]`` and held-out accuracies ``[K]`` of CAVs of ``acts`` against each counter-set."""
        cavs = [train_cav(acts, counter[i], seed=seed + i, l2=l2, test_fraction=test_fraction) for i in range(runs)]
        scores = torch.tensor([tcav_score(gradients @ c.direction) for c in cavs], dtype=torch.float64)
        return scores, torch.tensor([c.accuracy for c in cavs], dtype=torch.float64)

    null = [against_counter_sets(acts) for acts in pseudo]
    random_scores = torch.stack([scores for scores, _ in null])  # [J, K]
    random_accuracies = torch.stack([acc for _, acc in null])
    results = {}
    for concept, images in concepts.items():
        scores, accuracies = against_counter_sets(layer_activations(model, images, layer, chunk_size))
        p_sets = _set_test(float(scores.mean()), random_scores.mean(1)) if n_random_concepts >= 2 else None
        results[concept] = TCAVResult(
            concept,
            int(target),
            name,
            scores,
            random_scores,
            accuracies,
            random_accuracies,
            _t_test(scores, random_scores[0], equal_var),
            p_sets,
        )
    return holm_tcav(results) if len(results) > 1 else results


def tcav(
    model: nn.Module,
    class_images: torch.Tensor,
    target: int,
    layer: Layer,
    concept_images: torch.Tensor,
    random_sets: Sequence[torch.Tensor],
    *,
    n_random_concepts: int = 1,
    n_runs: int | None = None,
    seed: int = 0,
    concept: str = "concept",
    l2: float = 1e-2,
    test_fraction: float = 0.25,
    equal_var: bool = True,
    chunk_size: int | None = None,
) -> TCAVResult:
    """TCAV with its tests (Kim et al. 2018): is ``concept_images``'s concept used for class ``target``?

    ``class_images [N, C, H, W]``: images of the class; ``concept_images [Nc, C, H, W]``: examples of
    the concept; ``random_sets``: ``R >= 3`` tensors of random images ``[Nr, C, H, W]``. The first
    ``J = n_random_concepts`` random sets play random pseudo-concepts (the null); the next ``K =
    n_runs`` (default all ``R - J``) are counter-sets. For each counter-set ``i``, a CAV of the
    concept against it (:func:`train_cav`, split seed ``seed + i``) and its TCAV score on the class
    images (:func:`tcav_score` of :func:`directional_derivatives`); the same for each pseudo-concept.

    ``p_value`` is the paper's test (the reference code's design: one fixed random pseudo-concept
    against the same counter-sets; ``scipy.stats.ttest_ind``, Student's, or Welch's with
    ``equal_var=False``; two constant samples give p = 1 if equal and 0 if not). It replicates over
    counter-sets but not over concept sets, and is anti-conservative for a concept set drawn like
    the random ones; with ``n_random_concepts >= 2`` (better 5 or more), ``p_sets`` compares the
    concept's mean with the pseudo-concepts' means instead (see :class:`TCAVResult`). A score far
    from random's in either direction counts: above, the concept raises the logit; below, it
    lowers it. For several concepts use :func:`tcav_concepts`, which corrects for multiplicity.
    """
    (result,) = tcav_concepts(
        model,
        class_images,
        target,
        layer,
        {concept: concept_images},
        random_sets,
        n_random_concepts=n_random_concepts,
        n_runs=n_runs,
        seed=seed,
        l2=l2,
        test_fraction=test_fraction,
        equal_var=equal_var,
        chunk_size=chunk_size,
    ).values()
    return result


def holm_tcav(results: Mapping[str, TCAVResult]) -> dict[str, TCAVResult]:
    """Copies of ``results`` with ``p_adjusted`` (and ``p_sets_adjusted``, where every result has a
    ``p_sets``) set by Holm's correction over all of them (:func:`~xai_helpers.stats.holm`): a concept
    whose adjusted p is below 0.05 is significant with a family-wise error rate of at most 5 % over
    the concepts tested (as far as the unadjusted test is valid)."""
    adjusted = holm({name: r.p_value for name, r in results.items()})
    sets: dict[str, float | None] = dict.fromkeys(results)
    p_sets = {name: r.p_sets for name, r in results.items() if r.p_sets is not None}
    if len(p_sets) == len(results):
        sets.update(holm(p_sets))
    return {name: replace(r, p_adjusted=adjusted[name], p_sets_adjusted=sets[name]) for name, r in results.items()}


# ----------------------------------------------------------------------------- network dissection

# Elements (image positions x units) in one step of the IoU count: the thresholded maps of a chunk
# are [n, k, H, W]; below 2^24 every partial count is an integer that float32 holds exactly.
_IOU_STEP_ELEMENTS = 2**24


def unit_thresholds(activations: torch.Tensor, quantile: float = 0.995) -> torch.Tensor:
    """Per unit, the ``quantile`` of its activations over the data set: ``[N, K, h, w]`` -> ``[K]`` (float64).

    All ``N h w`` values of unit ``k`` are pooled; the quantile interpolates linearly between order
    statistics (as ``torch.quantile`` and NumPy's default): with the values sorted, ``v_(0) <= ... <=
    v_(M-1)``, it is ``v_(j) + (p - j) (v_(j+1) - v_(j))`` at ``p = quantile (M - 1)``, ``j = floor(p)``.
    At the default 0.995, 0.5 % of the positions lie above it (Bau et al.'s ``T_k``).
    """
    if activations.dim() != 4:
        raise ValueError(f"activations must be [N, K, h, w], got shape {list(activations.shape)}")
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must lie in [0, 1], got {quantile}")
    values = activations.detach().transpose(0, 1).reshape(activations.shape[1], -1)  # [K, M]
    position = quantile * (values.shape[1] - 1)
    low = math.floor(position)
    high = min(low + 1, values.shape[1] - 1)
    # order statistics by selection (kthvalue is 1-based), without sorting all M values
    below = values.kthvalue(low + 1, dim=1).values.double()
    above = values.kthvalue(high + 1, dim=1).values.double()
    return below + (position - low) * (above - below)


def _check_masks(masks: torch.Tensor, n: int, name: str = "masks") -> torch.Tensor:
    if masks.dim() != 3 or masks.shape[0] != n:
        raise ValueError(f"{name} must be [N, H, W] with N = {n} (one per image), got shape {list(masks.shape)}")
    if masks.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor (True on the concept), got dtype {masks.dtype}")
    return masks


def unit_iou_table(
    activations: torch.Tensor,
    masks_by_concept: Mapping[str, torch.Tensor],
    quantile: float = 0.995,
    *,
    thresholds: torch.Tensor | None = None,
) -> torch.Tensor:
    """``IoU [K, C]`` of every unit of ``activations [N, K, h, w]`` with every concept's ``masks [N, H, W]``.

    Unit ``k``'s mask on image ``x`` is ``M_k(x) = up(A_k(x)) >= T_k``: its map bilinearly upsampled
    to ``H x W`` (``align_corners=False``: pixel centres, as :func:`~xai_helpers.core.postprocess_maps`)
    and thresholded at ``T_k`` (``thresholds [K]``, or :func:`unit_thresholds` at ``quantile`` of the
    maps before upsampling). Then ``IoU_{k,c} = sum_x |M_k(x) & L_c(x)| / sum_x |M_k(x) | L_c(x)|``,
    summed over all ``N`` images, also those without the concept (where all that a unit marks counts
    against it). A union of zero gives 0, and so does a unit that is constant over the data set (its
    map marks nothing). The work grows with ``N K H W`` (every unit's map is upsampled to the masks'
    size): masks at half the image's resolution cost a quarter as much.
    """
    if activations.dim() != 4:
        raise ValueError(f"activations must be [N, K, h, w], got shape {list(activations.shape)}")
    if not masks_by_concept:
        raise ValueError("no concept masks given")
    n, k_units = activations.shape[:2]
    masks = [_check_masks(m, n, f"the masks of {name!r}") for name, m in masks_by_concept.items()]
    size = tuple(masks[0].shape[-2:])
    if any(tuple(m.shape[-2:]) != size for m in masks):
        raise ValueError("all concept masks must have the same size")
    activations = activations.detach()
    t = unit_thresholds(activations, quantile) if thresholds is None else torch.as_tensor(thresholds).double().flatten()
    if t.numel() != k_units:
        raise ValueError(f"thresholds must have one entry per unit ({k_units}), got {t.numel()}")
    pixels = size[0] * size[1]
    units_per_step = max(1, min(k_units, _IOU_STEP_ELEMENTS // pixels))
    images_per_step = max(1, _IOU_STEP_ELEMENTS // (pixels * units_per_step))
    intersection = torch.zeros(len(masks), k_units, dtype=torch.float64)
    unit_area = torch.zeros(k_units, dtype=torch.float64)
    for i in range(0, n, images_per_step):
        chunk_masks = [m[i : i + images_per_step].float() for m in masks]
        for k in range(0, k_units, units_per_step):
            on = unit_masks(
                activations[i : i + images_per_step, k : k + units_per_step], t[k : k + units_per_step], size
            ).float()  # [n, k, H, W]
            unit_area[k : k + units_per_step] += on.sum((0, 2, 3)).double()
            for c, m in enumerate(chunk_masks):
                intersection[c, k : k + units_per_step] += torch.einsum("nkhw,nhw->k", on, m).double()
    concept_area = torch.tensor([float(m.sum()) for m in masks], dtype=torch.float64)
    union = unit_area[None] + concept_area[:, None] - intersection  # [C, K]
    iou = torch.where(union > 0, intersection / union.clamp_min(1), 0.0)
    constant = activations.amax(dim=(0, 2, 3)) == activations.amin(dim=(0, 2, 3))
    iou[:, constant] = 0.0
    return iou.T.contiguous()


def unit_masks(activations: torch.Tensor, thresholds: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Each unit's mask ``M_k(x)``: ``activations [N, K, h, w]`` upsampled bilinearly to ``size`` (H, W)
    and compared with ``thresholds [K]`` (:func:`unit_thresholds`): bool ``[N, K, H, W]``."""
    a = activations if activations.is_floating_point() else activations.float()
    if tuple(a.shape[-2:]) != tuple(size):
        a = F.interpolate(a, size=tuple(size), mode="bilinear", align_corners=False)
    return a >= torch.as_tensor(thresholds).to(a.dtype).view(1, -1, 1, 1)


def unit_iou(
    activations: torch.Tensor, masks: torch.Tensor, quantile: float = 0.995, *, thresholds: torch.Tensor | None = None
) -> torch.Tensor:
    """IoU ``[K]`` of each unit of ``activations [N, K, h, w]`` with one concept's ``masks [N, H, W]``
    (bool), accumulated over the data set as in :func:`unit_iou_table` (Bau et al. 2017)."""
    return unit_iou_table(activations, {"concept": masks}, quantile, thresholds=thresholds)[:, 0]


@dataclass(frozen=True, eq=False)
class DissectionResult:
    """What :func:`dissect` found: ``iou [K, C]`` of each unit with each of ``concepts`` (``C`` names),
    the units' ``thresholds [K]`` at ``quantile``, at ``layer``."""

    layer: str
    concepts: tuple[str, ...]
    iou: torch.Tensor
    thresholds: torch.Tensor
    quantile: float

    @property
    def best_iou(self) -> torch.Tensor:
        """``[K]``: each unit's largest IoU over the concepts."""
        return self.iou.max(1).values

    @property
    def best_concept(self) -> list[str]:
        """Each unit's concept of largest IoU (the first, on ties)."""
        return [self.concepts[int(c)] for c in self.iou.argmax(1)]

    def top_units(self, concept: str, k: int = 5) -> list[tuple[int, float]]:
        """The ``k`` units of largest IoU with ``concept``, as ``(unit, IoU)``, best first."""
        if concept not in self.concepts:
            raise ValueError(f"unknown concept {concept!r}; dissected: {', '.join(self.concepts)}")
        column = self.iou[:, self.concepts.index(concept)]
        values, units = column.topk(min(k, len(column)))
        return [(int(u), float(v)) for u, v in zip(units, values)]

    def detectors(self, min_iou: float = 0.04) -> dict[int, str]:
        """Units whose best IoU exceeds ``min_iou`` (Bau et al. call them detectors at 0.04) -> their concept."""
        best, names = self.best_iou, self.best_concept
        return {k: names[k] for k in range(len(best)) if float(best[k]) > min_iou}


def dissect(
    model: nn.Module,
    layer: Layer,
    images: torch.Tensor,
    masks_by_concept: Mapping[str, torch.Tensor],
    *,
    quantile: float = 0.995,
    chunk_size: int | None = None,
) -> DissectionResult:
    """Network dissection of ``layer`` on ``images [N, C, H, W]`` with exact concept masks.

    ``masks_by_concept``: name -> bool masks ``[N, H', W']`` over the same ``N`` images (all False
    where an image lacks the concept). The layer's maps ``[N, K, h, w]`` (:func:`layer_activations`,
    unflattened) give each unit a threshold at ``quantile`` over the data set, and its IoU with each
    concept (:func:`unit_iou_table`); the result names each unit's best concept.
    """
    activations = layer_activations(model, images, layer, chunk_size, flatten=False)
    if activations.dim() != 4:
        raise ValueError(f"dissection needs a layer with maps [N, K, h, w]; {layer!r} gives {list(activations.shape)}")
    thresholds = unit_thresholds(activations, quantile)
    iou = unit_iou_table(activations, masks_by_concept, quantile, thresholds=thresholds)
    return DissectionResult(layer_name(model, layer), tuple(masks_by_concept), iou, thresholds, quantile)


# ----------------------------------------------------------------------------- concept relevance propagation


def channel_relevance(
    model: nn.Module, x: torch.Tensor, target: Target, layer: Layer, *, composite: Composite | None = None
) -> torch.Tensor:
    """LRP relevance of each channel of ``layer`` for ``target``: ``[B, K]``, summed over positions.

    ``layer`` must output maps ``[B, K, h, w]`` or vectors ``[B, K]``. Its entries sum to the relevance
    that reaches the layer (``y^c`` up to what the rules above it absorb)."""
    from .methods.propagation import lrp_with_layers

    name = layer_name(model, layer)
    _, recorded = lrp_with_layers(model, x, target, composite=composite, record=[name])
    if name not in recorded:
        raise RuntimeError(f"no relevance reached layer {name!r}: the target does not depend on it")
    relevance = recorded[name]
    if relevance.dim() not in (2, 4):
        raise ValueError(f"layer {name!r} gives {list(relevance.shape)}; channels need [B, K, h, w] or [B, K]")
    return relevance.flatten(2).sum(2) if relevance.dim() == 4 else relevance


def concept_relevance(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    layer: Layer,
    channels: int | Sequence[int] | torch.Tensor,
    composite: Composite | None = None,
) -> torch.Tensor:
    """Concept relevance propagation (Achtibat et al. 2023): ``[B, C, H, W]``, signed.

    LRP (:func:`~xai_helpers.methods.propagation.lrp`, same ``composite``) in which the relevance at
    ``layer``'s output is kept only in ``channels`` (an index, a list of them taken together as one
    concept, or a ``[B]`` tensor of one channel per image) and dropped in the others before it
    propagates to the pixels. The map answers: *where* in the image does the concept that these
    channels encode contribute to ``y^c``? Summed over all ``K`` channels one at a time, the maps are
    the LRP map (the backward pass is linear in the relevance it carries); its total is the channels'
    share of :func:`channel_relevance` up to what the rules below the layer absorb.
    """
    from .methods.propagation import lrp_with_layers

    check_images(x)
    name = layer_name(model, layer)
    with explaining(model), torch.no_grad():
        out = forward_until(model, x[:1], [name])[name]
    if not isinstance(out, torch.Tensor) or out.dim() not in (2, 4):
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"layer {name!r} gives {shape}; concept relevance needs channels, [B, K, h, w] or [B, K]")
    k, batch = out.shape[1], x.shape[0]
    keep = torch.zeros(batch, k, dtype=x.dtype, device=x.device)
    if isinstance(channels, torch.Tensor) and channels.dim() == 1 and channels.numel() == batch > 1:
        index = channels.long().to(x.device)[:, None]                              # one channel per image
    else:
        index = torch.as_tensor(channels, dtype=torch.long, device=x.device).flatten()[None].expand(batch, -1)
    if index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= k:
        raise ValueError(f"channels must be indices in [0, {k}) of layer {name!r}'s channels, got {channels!r}")
    keep.scatter_(1, index, 1.0)
    keep = keep.view(batch, k, *([1] * (out.dim() - 2)))
    return lrp_with_layers(model, x, target, composite=composite, condition=(name, keep))[0]
