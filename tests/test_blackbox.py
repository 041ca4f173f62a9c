"""Model-agnostic explanations (xai_helpers.methods.blackbox), each checked against something independent.

* KernelSHAP against Shapley values by enumeration (exact_shapley, a different formula), on a random
  nonlinear game and on a real network whose game the test builds itself;
* KernelSHAP and LIME on a linear model against the closed form sum_i w_i (x_i - x'_i) per segment;
* LIME's ridge regression against the normal equations of the augmented system, written here;
* RISE against its definition with masks from rise_masks, on models whose score is known;
* the registry's output contract, state restore, chunking, seeds, batch independence and errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from model_state import assert_untouched, snapshot
from torch import nn

from xai_helpers import registry
from xai_helpers.cost import count_passes
from xai_helpers.data import make_shapes
from xai_helpers.methods import blackbox
from xai_helpers.methods.blackbox import (
    exact_shapley,
    kernel_shap,
    kernel_shap_explanation,
    kernel_shap_values,
    lime,
    lime_explanation,
    lime_weights,
    rise,
    rise_masks,
    segment_images,
    shapley_kernel,
    superpixels,
)
from xai_helpers.models import SmallCNN

DTYPE = torch.float64


# ----------------------------------------------------------------------------- helpers written here
def grid_segments(height: int, width: int, rows: int, cols: int) -> torch.Tensor:
    """Block superpixels ``[H, W]``: ``rows x cols`` rectangles numbered in raster order."""
    r = torch.arange(height) * rows // height
    c = torch.arange(width) * cols // width
    return r[:, None] * cols + c[None, :]


class Linear(nn.Module):
    """``logits = W x + b``: a model whose target logit is linear in the pixels."""

    def __init__(self, shape: tuple[int, int, int], classes: int = 3, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(classes, math.prod(shape), generator=g, dtype=DTYPE))
        self.bias = nn.Parameter(torch.randn(classes, generator=g, dtype=DTYPE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


def linear_closed_form(
    model: Linear, x: torch.Tensor, reference: torch.Tensor, segments: torch.Tensor, target: int
) -> torch.Tensor:
    """``phi_j = sum_{i in segment j} w_i (x_i - x'_i)`` for one image ``x [C, H, W]``."""
    with torch.no_grad():
        contribution = (model.weight[target].view_as(x) * (x - reference)).sum(0)  # [H, W]
    m = int(segments.max()) + 1
    return torch.zeros(m, dtype=DTYPE).index_add_(0, segments.flatten(), contribution.flatten().double())


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN(num_classes=3, width=4).eval()


@pytest.fixture(scope="module")
def shapes16() -> torch.Tensor:
    return make_shapes(2, size=16, seed=3).images


# ----------------------------------------------------------------------------- RISE
def test_rise_masks_shape_range_mean_and_prefix():
    masks = rise_masks(400, (20, 24), grid=5, p=0.3, seed=2)
    assert masks.shape == (400, 20, 24) and masks.dtype == torch.float32
    assert masks.min() >= 0 and masks.max() <= 1
    assert abs(float(masks.mean()) - 0.3) < 0.03  # E[M] = p (bilinear keeps the mean)
    assert torch.equal(rise_masks(50, (20, 24), grid=5, p=0.3, seed=2), masks[:50])  # prefix of one sequence
    assert torch.equal(rise_masks(10, 16, seed=4), rise_masks(10, 16, seed=4))
    assert not torch.equal(rise_masks(10, 16, seed=4), rise_masks(10, 16, seed=5))
    # bilinear ramps: a step between neighbours is at most 1 / (upsampling factor (grid + 1) * cell / grid)
    cell = math.ceil(24 / 5)
    assert (masks[:, :, 1:] - masks[:, :, :-1]).abs().max() <= 5 / (6 * cell) + 1e-6
    assert rise_masks(3, 8, dtype=torch.float64).dtype == torch.float64


def test_rise_masks_keep_everything_or_nothing_at_the_extremes():
    assert torch.equal(rise_masks(5, 12, grid=3, p=1 - 1e-12), torch.ones(5, 12, 12))
    assert torch.equal(rise_masks(5, 12, grid=3, p=1e-12), torch.zeros(5, 12, 12))


class ConstantLogits(nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 3), self.value, dtype=x.dtype) + 0 * x.flatten(1)[:, :1]


def test_rise_is_the_score_weighted_mean_of_its_masks():
    # A constant score c gives S = c * sum_i M_i / (N p): the expectation identity, exactly.
    x = torch.rand(2, 3, 16, 16, dtype=DTYPE)
    n, p, c = 300, 0.4, 2.5
    saliency = rise(ConstantLogits(c), x, 1, n_masks=n, grid=4, p=p, seed=7, score="logit")
    expected = c * rise_masks(n, 16, grid=4, p=p, seed=7, dtype=DTYPE).sum(0) / (n * p)
    assert torch.allclose(saliency, expected.expand(2, 16, 16), atol=1e-12)
    assert abs(float(saliency.mean()) / c - 1) < 0.05  # and it is close to c
    # The probability of a constant model over three classes is 1/3 everywhere.
    probability = rise(ConstantLogits(c), x, 1, n_masks=n, grid=4, p=p, seed=7)
    assert torch.allclose(probability, expected.expand(2, 16, 16) / c / 3, atol=1e-12)


class RegionMean(nn.Module):
    """Logit 0 = mean of the pixels in rows and columns ``region``; logit 1 = 0."""

    def __init__(self, region: tuple[slice, slice]):
        super().__init__()
        self.region = region

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inside = x[:, :, self.region[0], self.region[1]].mean(dim=(1, 2, 3))
        return torch.stack([inside, torch.zeros_like(inside)], 1)


def test_rise_concentrates_on_the_region_the_score_reads():
    region = (slice(4, 10), slice(14, 22))
    x = torch.ones(1, 3, 24, 24)
    saliency = rise(RegionMean(region), x, 0, n_masks=1000, grid=6, seed=0, score="logit")[0]
    inside = torch.zeros(24, 24, dtype=torch.bool)
    inside[region] = True
    # S(u) = E[s M(u)] / p is E[s] (about 0.5) where M(u) is independent of the region, and higher
    # where the mask value at u goes with the masks' values over the region
    far = torch.ones(24, 24, dtype=torch.bool)
    far[0:18, 6:24] = False  # two cells or more from the region
    assert abs(float(saliency[far].mean()) - 0.5) < 0.03
    assert saliency[inside].mean() > saliency[~inside].mean() + 0.05
    peak = int(saliency.argmax())
    grown = torch.zeros(24, 24, dtype=torch.bool)
    grown[0:14, 10:24] = True  # the region grown by one cell
    assert grown.flatten()[peak]


def test_rise_seeds_chunks_and_batch_independence(net):
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    one = rise(net, x, [0, 1, 2], n_masks=40, grid=4, seed=3, chunk_size=40)
    assert torch.equal(one, rise(net, x, [0, 1, 2], n_masks=40, grid=4, seed=3, chunk_size=40))
    for chunk in (1, 7, None):
        assert torch.allclose(
            rise(net, x, [0, 1, 2], n_masks=40, grid=4, seed=3, chunk_size=chunk), one, rtol=1e-5, atol=1e-7
        )
    assert torch.allclose(rise(net, x[1:2], 1, n_masks=40, grid=4, seed=3), one[1:2], rtol=1e-5, atol=1e-7)
    assert not torch.allclose(rise(net, x, [0, 1, 2], n_masks=40, grid=4, seed=4), one)


def test_rise_converges_as_the_masks_grow(net):
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    for seed in range(3):
        n = 100
        maps = {k: rise(net, x, 0, n_masks=k, grid=4, seed=seed, score="logit")[0] for k in (n, 2 * n, 4 * n)}
        assert (maps[2 * n] - maps[4 * n]).norm() < (maps[n] - maps[4 * n]).norm(), seed


def test_rise_with_a_grey_baseline_is_the_blend():
    x = torch.rand(1, 3, 12, 12, dtype=DTYPE)
    masks = rise_masks(30, 12, grid=3, seed=0, dtype=DTYPE)
    model = Linear((3, 12, 12))
    blended = x * masks[:, None] + 0.5 * (1 - masks[:, None])  # [30, 3, 12, 12]
    scores = model(blended)[:, 2]
    expected = torch.einsum("k,khw->hw", scores, masks) / (30 * 0.5)
    result = rise(model, x, 2, n_masks=30, grid=3, seed=0, baseline=0.5, score="logit")
    assert torch.allclose(result[0], expected, atol=1e-10)


def test_rise_counts_its_forward_passes(net):
    x = torch.rand(2, 3, 16, 16)
    with count_passes(net) as count:
        rise(net, x, 0, n_masks=25, grid=4, chunk_size=10)
    assert count.forward == 2 * 25 and count.backward == 0
    assert count.forward_batches == [10, 10, 10, 10, 5, 5]


# ----------------------------------------------------------------------------- superpixels
def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.ravel().tolist(), b.ravel().tolist()))
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def test_superpixels_are_slic_renumbered():
    from skimage.segmentation import slic

    x = make_shapes(2, size=32, seed=0).images
    segments = superpixels(x, 20, compactness=10.0)
    assert segments.shape == (2, 32, 32) and segments.dtype == torch.long
    for b in range(2):
        flat = segments[b].flatten()
        m = int(flat.max()) + 1
        assert m >= 2 and torch.equal(torch.unique(flat), torch.arange(m))
        first = [int((flat == k).nonzero()[0]) for k in range(m)]
        assert first == sorted(first)  # numbered by first appearance
        reference = slic(x[b].permute(1, 2, 0).double().numpy(), n_segments=20, compactness=10.0, start_label=0)
        assert same_partition(segments[b].numpy(), reference)
    grey = superpixels(x[:, :1], 6, compactness=0.1)
    assert grey.shape == (2, 32, 32) and int(grey[0].max()) >= 1


def test_segment_images_by_hand():
    image, fill = torch.ones(2, 2, 3), torch.zeros(2, 2, 3)
    segments = torch.tensor([[0, 0, 1], [2, 2, 1]])
    keep = torch.tensor([[True, False, True], [False, False, False]])
    out = segment_images(image, fill, segments, keep)
    assert out.shape == (2, 2, 2, 3)
    assert out[0, 0].tolist() == [[1, 1, 0], [1, 1, 0]] and out[1].sum() == 0


# ----------------------------------------------------------------------------- exact Shapley values
def test_exact_shapley_on_games_with_known_values():
    a = torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=DTYPE)
    assert torch.allclose(exact_shapley(lambda z: z.double() @ a, 4), a)  # additive game
    unanimity = exact_shapley(lambda z: z[:, [0, 2]].all(1).double(), 4)  # v(S) = [{0, 2} in S]
    assert torch.allclose(unanimity, torch.tensor([0.5, 0.0, 0.5, 0.0], dtype=DTYPE))
    # glove game: player 0 owns a left glove, 1 and 2 a right one; a pair is worth 1
    glove = exact_shapley(lambda z: (z[:, 0] & (z[:, 1] | z[:, 2])).double(), 3)
    assert torch.allclose(glove, torch.tensor([4 / 6, 1 / 6, 1 / 6], dtype=DTYPE))
    two = exact_shapley(lambda z: torch.stack([z.sum(1), 2 * z.sum(1)], 1).double(), 3)  # [K, 2] values
    assert two.shape == (3, 2) and torch.allclose(two, torch.tensor([[1.0, 2.0]] * 3, dtype=DTYPE))


def random_game(m: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(m, generator=g, dtype=DTYPE), torch.randn(m, generator=g, dtype=DTYPE)
    pair = torch.randn(m, m, generator=g, dtype=DTYPE)

    def value(z: torch.Tensor) -> torch.Tensor:
        z = z.double()
        return torch.sin(z @ a) + (z @ b) ** 2 + torch.einsum("ki,ij,kj->k", z, pair, z) * z[:, 0]

    return value


def test_shapley_kernel_weights():
    m = 6
    sizes = torch.arange(m + 1)
    weights = shapley_kernel(m, sizes)
    assert math.isinf(weights[0]) and math.isinf(weights[-1])
    for s in range(1, m):
        assert math.isclose(float(weights[s]), (m - 1) / (math.comb(m, s) * s * (m - s)), rel_tol=1e-12)
    assert torch.allclose(weights[1:-1], weights[1:-1].flip(0))  # symmetric in |z| and M - |z|


@pytest.mark.parametrize("m", [1, 2, 5, 8])
def test_kernel_shap_values_equal_exact_shapley_when_enumerated(m):
    value = random_game(m, seed=m)
    estimate = kernel_shap_values(value, m, n_samples=max(1, 2**m - 2))
    assert estimate.exact and estimate.evaluations == 2**m
    assert torch.allclose(estimate.values, exact_shapley(value, m), atol=1e-9, rtol=1e-9)
    assert math.isclose(float(estimate.values.sum()), estimate.full_value - estimate.base_value, abs_tol=1e-9)


def test_kernel_shap_values_sampled_approach_the_exact_values():
    m = 12
    value = random_game(m, seed=1)
    exact = exact_shapley(value, m)
    errors = []
    for n in (100, 3000):
        estimate = kernel_shap_values(value, m, n_samples=n, seed=0)
        assert not estimate.exact and estimate.evaluations == n + 2
        assert math.isclose(float(estimate.values.sum()), float(exact.sum()), abs_tol=1e-9)  # efficiency holds
        errors.append(float((estimate.values - exact).norm() / exact.norm()))
    assert errors[1] < errors[0] and errors[1] < 0.1, errors
    # additive games are solved exactly by any full-rank sample
    a = torch.randn(12, dtype=DTYPE, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(kernel_shap_values(lambda z: z.double() @ a, 12, n_samples=60).values, a, atol=1e-9)


def test_kernel_shap_values_choose_enumeration_by_budget():
    value = random_game(5)
    assert kernel_shap_values(value, 5, n_samples=30).exact  # 2^5 - 2 = 30 fit
    assert not kernel_shap_values(value, 5, n_samples=29).exact
    assert kernel_shap_values(value, 5, n_samples=4, exact=True).evaluations == 32
    assert not kernel_shap_values(value, 5, n_samples=100, exact=False).exact
    seeded = [kernel_shap_values(value, 5, n_samples=12, seed=s).values for s in (0, 0, 1)]
    assert torch.equal(seeded[0], seeded[1]) and not torch.equal(seeded[0], seeded[2])


# ----------------------------------------------------------------------------- KernelSHAP and LIME on images
def image_game(
    model: nn.Module, image: torch.Tensor, fill: torch.Tensor, segments: torch.Tensor, target: int, score: str
):
    """The value function of the superpixel game, composed here without the package."""

    def value(z: torch.Tensor) -> torch.Tensor:
        on = z[:, segments]  # [K, H, W]
        images = on[:, None] * image + (~on[:, None]) * fill
        with torch.no_grad():
            logits = model(images)
        out = logits.softmax(1) if score == "probability" else logits
        return out[:, target].double()

    return value


@pytest.mark.parametrize("score", ["probability", "logit"])
def test_kernel_shap_on_a_small_cnn_equals_exact_shapley(net, shapes16, score):
    x = shapes16
    grid = grid_segments(16, 16, 2, 3)  # 6 superpixels
    slic_segments = superpixels(x, 6, compactness=100.0)  # SLIC's own: 4 on these images
    for segments in (grid.expand(2, 16, 16), slic_segments):
        result = kernel_shap_explanation(net, x, [0, 2], segments=segments, n_samples=64, score=score)
        for b, target in enumerate([0, 2]):
            m = int(segments[b].max()) + 1
            assert 3 <= m <= 6 and result.exact[b]
            fill = torch.full_like(x[b], 0.5)
            exact = exact_shapley(image_game(net, x[b], fill, segments[b], target, score), m)
            error = (result.values[b] - exact).abs().max()
            assert error <= 1e-5 * exact.abs().max() + 1e-9, (b, result.values[b], exact)
            assert torch.equal(result.maps[b], result.values[b].float()[segments[b]])
            assert math.isclose(
                float(result.values[b].sum()), float(result.full_values[b] - result.base_values[b]), abs_tol=1e-6
            )


@pytest.mark.parametrize("baseline", [0.5, 0.0, "image_mean", "segment_mean", "tensor"])
def test_kernel_shap_on_a_linear_model_is_the_closed_form(baseline):
    x = torch.rand(2, 3, 12, 12, dtype=DTYPE, generator=torch.Generator().manual_seed(0))
    model = Linear((3, 12, 12))
    if baseline == "tensor":
        baseline = torch.rand(1, 3, 12, 12, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
    segments = torch.stack([grid_segments(12, 12, 2, 3), grid_segments(12, 12, 4, 4)])  # M = 6 and 16
    result = kernel_shap_explanation(
        model, x, [1, 2], segments=segments, n_samples=200, baseline=baseline, score="logit"
    )
    assert result.exact == [True, False]
    for b, target in enumerate([1, 2]):
        if isinstance(baseline, torch.Tensor):
            reference = baseline[0]
        elif baseline == "image_mean":
            reference = x[b].mean(dim=(1, 2), keepdim=True).expand_as(x[b])
        elif baseline == "segment_mean":
            reference = torch.empty_like(x[b])
            for k in range(int(segments[b].max()) + 1):
                inside = segments[b] == k
                reference[:, inside] = x[b][:, inside].mean(1, keepdim=True)
        else:
            reference = torch.full_like(x[b], baseline)
        closed = linear_closed_form(model, x[b], reference, segments[b], target)
        assert torch.allclose(result.values[b], closed, atol=1e-8), (b, baseline)


def test_lime_on_a_linear_model_recovers_the_closed_form():
    x = torch.rand(1, 3, 12, 12, dtype=DTYPE, generator=torch.Generator().manual_seed(2))
    model = Linear((3, 12, 12), seed=1)
    segments = grid_segments(12, 12, 3, 3)
    closed = linear_closed_form(model, x[0], torch.full_like(x[0], 0.5), segments, 0)
    # The score is linear in z, so the weighted least squares fit is exact for any kernel.
    for width in (0.25, 100.0):
        exact = lime_explanation(
            model, x, 0, segments=segments, n_samples=200, kernel_width=width, alpha=0.0, score="logit"
        )
        assert torch.allclose(exact.coefficients[0], closed, atol=1e-8)
        assert math.isclose(float(exact.r2[0]), 1.0, abs_tol=1e-10)
        assert math.isclose(float(exact.local_predictions[0]), float(exact.full_scores[0]), abs_tol=1e-8)
    # The package's default ridge penalty shrinks the coefficients a little when the kernel is wide
    # (each weighs about n/4 samples against alpha = 1) and more when it is narrow.
    wide = lime_explanation(model, x, 0, segments=segments, n_samples=1000, kernel_width=100.0, score="logit")
    assert torch.allclose(wide.coefficients[0], closed, rtol=0.02, atol=0.02 * float(closed.abs().max()))
    narrow = lime_explanation(model, x, 0, segments=segments, n_samples=1000, kernel_width=0.1, score="logit")
    assert narrow.coefficients[0].norm() < wide.coefficients[0].norm()
    cosine = float(narrow.coefficients[0] @ closed / (narrow.coefficients[0].norm() * closed.norm()))
    assert cosine > 0.95  # the same direction, scaled down


def test_lime_regression_and_weights_against_the_normal_equations(net, shapes16):
    result = lime_explanation(
        net, shapes16, [1, 0], segments=grid_segments(16, 16, 2, 4), n_samples=80, alpha=0.7, seed=5
    )
    for b in range(2):
        z, y, w = result.samples[b].double(), result.scores[b], result.weights[b]
        assert z[0].all() and z.shape == (80, 8)
        # the kernel, from the cosine distance computed with torch's own function
        cosine = torch.nn.functional.cosine_similarity(z, torch.ones_like(z), dim=1)
        distance = torch.where(z.sum(1) > 0, 1 - cosine, torch.ones_like(cosine))
        assert torch.allclose(w, torch.sqrt(torch.exp(-(distance**2) / 0.25**2)), atol=1e-12)
        # ridge with an unpenalised intercept: the augmented normal equations
        design = torch.cat([torch.ones(80, 1, dtype=DTYPE), z], 1)
        penalty = 0.7 * torch.diag(torch.tensor([0.0] + [1.0] * 8, dtype=DTYPE))
        solution = torch.linalg.solve(design.T @ (w[:, None] * design) + penalty, design.T @ (w * y))
        assert torch.allclose(result.coefficients[b], solution[1:], atol=1e-8)
        assert math.isclose(float(result.intercepts[b]), float(solution[0]), abs_tol=1e-8)
        fitted = design @ solution
        ybar = (w @ y) / w.sum()
        r2 = 1 - float(w @ (y - fitted) ** 2) / float(w @ (y - ybar) ** 2)
        assert math.isclose(float(result.r2[b]), r2, abs_tol=1e-8) and 0 <= r2 <= 1
    assert torch.equal(
        result.maps, lime(net, shapes16, [1, 0], segments=grid_segments(16, 16, 2, 4), n_samples=80, alpha=0.7, seed=5)
    )


def test_lime_weights_at_the_ends():
    z = torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0]])
    w = lime_weights(z, 0.5)
    assert math.isclose(float(w[0]), 1.0) and math.isclose(float(w[1]), math.exp(-1 / (2 * 0.25)))
    assert math.isclose(float(w[2]), math.exp(-((1 - 0.5) ** 2) / (2 * 0.25)))


@pytest.mark.parametrize("function", [lime, kernel_shap])
def test_lime_and_kernel_shap_chunks_seeds_and_batch_independence(net, shapes16, function):
    segments = grid_segments(16, 16, 4, 4)  # M = 16: sampled
    options = dict(segments=segments, n_samples=40)
    one = function(net, shapes16, [0, 2], chunk_size=64, seed=1, **options)
    assert torch.allclose(function(net, shapes16, [0, 2], chunk_size=3, seed=1, **options), one, rtol=1e-5, atol=1e-7)
    assert torch.allclose(function(net, shapes16[1:], 2, seed=1, **options), one[1:], rtol=1e-5, atol=1e-7)
    assert not torch.allclose(function(net, shapes16, [0, 2], seed=2, **options), one)


def test_forward_passes_of_lime_and_kernel_shap(net, shapes16):
    segments = grid_segments(16, 16, 2, 2)
    with count_passes(net) as count:
        lime(net, shapes16, 0, segments=segments, n_samples=30)
    assert count.forward == 2 * 30
    with count_passes(net) as count:
        kernel_shap(net, shapes16, 0, segments=segments, n_samples=30)  # 2^4 - 2 <= 30: exact
    assert count.forward == 2 * 2**4
    with count_passes(net) as count:
        kernel_shap(net, shapes16, 0, segments=grid_segments(16, 16, 4, 4), n_samples=30)
    assert count.forward == 2 * (30 + 2)


def test_superpixels_by_default(net, shapes16):
    """Without segments=, both methods use superpixels(x, n_segments)."""
    segments = superpixels(shapes16, 6, compactness=10.0)
    result = kernel_shap_explanation(net, shapes16, 0, n_segments=6, n_samples=70)
    assert torch.equal(result.segments, segments)
    assert torch.equal(lime_explanation(net, shapes16, 0, n_segments=6, n_samples=20).segments, segments)


# ----------------------------------------------------------------------------- registry and contract
SMALL = {
    "rise": dict(n_masks=12, grid=4),
    "lime": dict(n_segments=6, compactness=100.0, n_samples=12),
    "kernel_shap": dict(n_segments=6, compactness=100.0, n_samples=12),
}


def test_registered_as_the_blackbox_family_listed_last():
    names = [m.name for m in registry.methods(family="blackbox")]
    assert set(names) == set(SMALL) and [m.name for m in registry.methods()][-len(SMALL):] == names
    for name in SMALL:
        method = registry.get(name)
        assert method.space == "map" and not method.needs_layer and method.reference and method.cost
        assert method.function is getattr(blackbox, name)


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_contract_and_state_restore(name, dtype):
    torch.manual_seed(0)
    model = SmallCNN(num_classes=3, width=4).to(dtype).train()  # training mode, trainable: restored
    x = make_shapes(2, size=16, seed=5).images.to(dtype)
    before = snapshot(model)
    result = registry.attribute(name, model, x, [0, 2], **SMALL[name])  # checks the contract
    assert result.shape == (2, 16, 16) and result.dtype == dtype and not result.requires_grad
    assert torch.isfinite(result).all()
    assert_untouched(model, before)
    heat = registry.attribute(name, model, x, [0, 2], heatmap=True, **SMALL[name])
    assert heat.min() >= 0 and heat.max() <= 1
    # different targets give different maps
    other = registry.attribute(name, model, x, [1, 1], **SMALL[name])
    assert not torch.allclose(other, result)


def test_works_under_no_grad_and_inference_mode(net, shapes16):
    expected = {name: registry.attribute(name, net, shapes16, 0, **options) for name, options in SMALL.items()}
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            for name, options in SMALL.items():
                assert torch.allclose(registry.attribute(name, net, shapes16, 0, **options), expected[name])


# ----------------------------------------------------------------------------- clear errors
@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda m, x: rise(m, x, 0, n_masks=0), ValueError, "n_masks"),
        (lambda m, x: rise(m, x, 0, p=0.0), ValueError, "strictly between 0 and 1"),
        (lambda m, x: rise(m, x, 0, p=1.0), ValueError, "strictly between 0 and 1"),
        (lambda m, x: rise(m, x, 0, grid=0), ValueError, "grid"),
        (lambda m, x: rise(m, x, 0, n_masks=4, chunk_size=0), ValueError, "chunk_size"),
        (lambda m, x: rise(m, x, 0, n_masks=4, score="prob"), ValueError, "'probability'"),
        (lambda m, x: rise(m, x, 7, n_masks=4), ValueError, "out of range"),
        (lambda m, x: rise(m, x[0], 0, n_masks=4), ValueError, "4-D"),
        (lambda m, x: superpixels(x, 1), ValueError, "n_segments"),
        (lambda m, x: superpixels(x, 5, compactness=0), ValueError, "compactness"),
        (lambda m, x: lime(m, x, 0, n_samples=1), ValueError, "n_samples"),
        (lambda m, x: lime(m, x, 0, kernel_width=0), ValueError, "kernel_width"),
        (lambda m, x: lime(m, x, 0, alpha=-1), ValueError, "alpha"),
        (lambda m, x: lime(m, x, 0, baseline="median"), ValueError, "segment_mean"),
        (lambda m, x: kernel_shap(m, x, 0, n_samples=0), ValueError, "n_samples"),
        (
            lambda m, x: kernel_shap(m, x, 0, segments=torch.zeros(2, 8, 8, dtype=torch.long)),
            ValueError,
            r"\[B, H, W\]",
        ),
        (lambda m, x: kernel_shap(m, x, 0, segments=torch.full((16, 16), 1)), ValueError, "every id present"),
        (lambda m, x: kernel_shap(m, x, 0, segments=torch.zeros(16, 16)), TypeError, "integer"),
        (lambda m, x: kernel_shap_values(lambda z: z.sum(1), 21, exact=True), ValueError, "more than 20"),
        (lambda m, x: exact_shapley(lambda z: z.sum(1), 21), ValueError, "more than 20"),
        (lambda m, x: exact_shapley(lambda z: z.sum(1)[:3], 3), ValueError, "one value per coalition"),
    ],
)
def test_clear_errors(net, call, error, words):
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(error, match=words):
        call(net, x)
