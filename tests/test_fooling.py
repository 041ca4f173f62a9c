"""Explanations that can be fooled, and max-sensitivity (xai_helpers.fooling).

* max-sensitivity against closed forms (0 for maps that cannot move, the norm of the perturbation
  for the identity map) and against the maximum over the perturbed inputs, recorded here;
* the softplus copy against the ReLU network (convergence as beta grows), against softplus applied
  by hand to a network with functional ReLUs, and against the vanishing second derivative of ReLU;
* the differentiable maps against the package's own implementations (cam, gradients, propagation);
* both attacks on a SmallCNN trained here for a few seconds, measured with the package's Grad-CAM.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from model_state import assert_untouched, snapshot
from torch import nn

from xai_helpers.data import make_shapes
from xai_helpers.fooling import (
    explanation_with_graph,
    fine_tune_to_fool,
    manipulate_input,
    map_loss,
    max_sensitivity,
    softplus_copy,
    unit_mean,
)
from xai_helpers.methods.cam import grad_cam
from xai_helpers.methods.gradients import saliency
from xai_helpers.methods.propagation import gradient_x_input
from xai_helpers.models import SmallCNN
from xai_helpers.training import accuracy, train_small_cnn

DTYPE = torch.float64


class Linear(nn.Module):
    def __init__(self, features: int, classes: int = 3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(classes, features, generator=g, dtype=DTYPE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T


def blob(size: int, row: float, col: float, sigma: float = 4.0) -> torch.Tensor:
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    return torch.exp(-((ys - row) ** 2 + (xs - col) ** 2) / (2 * sigma**2))


# ----------------------------------------------------------------------------- max-sensitivity
def test_max_sensitivity_is_zero_for_maps_that_cannot_move():
    x = torch.rand(2, 3, 8, 8, dtype=DTYPE)
    model = Linear(3 * 8 * 8)
    constant = max_sensitivity(lambda m, x, t: torch.ones(x.shape[0], 8, 8, dtype=x.dtype), model, x, 0)
    assert constant.shape == (2,) and torch.equal(constant, torch.zeros(2, dtype=DTYPE))
    # the gradient of a linear model is its weight, wherever it is taken
    assert torch.equal(max_sensitivity(saliency, model, x, [0, 2], keep_prediction=False), torch.zeros(2, dtype=DTYPE))
    assert torch.equal(max_sensitivity("saliency", model, x, 1, keep_prediction=False), torch.zeros(2, dtype=DTYPE))


def test_max_sensitivity_of_the_identity_map_is_the_largest_perturbation():
    x = 0.2 + 0.6 * torch.rand(2, 3, 16, 16, dtype=DTYPE, generator=torch.Generator().manual_seed(0))
    model = Linear(3 * 16 * 16)
    seen = []

    def identity(m, images, t):
        seen.append(images.clone())
        return images

    radius, n = 0.05, 12
    result = max_sensitivity(identity, model, x, 0, radius=radius, n_samples=n, keep_prediction=False, chunk_size=5)
    # x first, then the n * B noisy images, sample by sample, in chunks of at most 5
    assert torch.equal(seen[0], x) and [len(s) for s in seen[1:]] == [5, 5, 5, 5, 4]
    noisy = torch.cat(seen[1:]).view(n, *x.shape)                              # [n, B, C, H, W]
    moved = torch.stack([(s - x).flatten(1).norm(dim=1) for s in noisy])       # [n, B]
    assert torch.allclose(result, moved.amax(0) / x.flatten(1).norm(dim=1))
    assert bool((noisy - x).abs().max() <= radius + 1e-12)
    assert torch.allclose(noisy[:, 0] - x[0], noisy[:, 1] - x[1], rtol=0, atol=1e-12)   # the same draws for both
    # the map at x, if the caller has it, is not computed again; the chunks do not change the result
    seen.clear()
    given = max_sensitivity(identity, model, x, 0, radius=radius, n_samples=n, keep_prediction=False, map_at_x=x)
    assert len(seen) == 1 and seen[0].shape[0] == n * 2 and torch.allclose(given, result, rtol=0, atol=1e-12)
    # uniform noise in [-r, r]^D has ||d|| close to r sqrt(D / 3), and never above r sqrt(D)
    d = 3 * 16 * 16
    assert (result * x.flatten(1).norm(dim=1) <= radius * math.sqrt(d)).all()
    assert (result * x.flatten(1).norm(dim=1) >= 0.9 * radius * math.sqrt(d / 3)).all()
    # the same draws for every image: a batch of one gives that image's value
    again = max_sensitivity(lambda m, i, t: i, model, x[1:], 0, radius=radius, n_samples=n, keep_prediction=False)
    assert torch.allclose(again, result[1:])


class Threshold(nn.Module):
    """Two classes, decided by whether the mean pixel exceeds ``level``."""

    def __init__(self, level: float):
        super().__init__()
        self.level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x.mean(dim=(1, 2, 3)) - self.level) * 1000
        return torch.stack([s, -s], 1)


def test_max_sensitivity_counts_only_perturbations_that_keep_the_prediction():
    x = torch.full((1, 3, 8, 8), 0.5, dtype=DTYPE)
    model = Threshold(0.5 - 1e-3)  # predicts class 0, barely
    seen = []

    def identity(m, images, t):
        seen.append(images.clone())
        return images

    result = max_sensitivity(identity, model, x, 0, radius=0.05, n_samples=40, seed=3)
    noisy = torch.cat(seen[1:])[:, None]                 # [40, 1, C, H, W]: each noisy image as a batch of one
    assert len(noisy) == 40
    kept = [bool(model(s).argmax(1) == 0) for s in noisy]
    assert 0 < sum(kept) < len(kept)  # some perturbations flip it
    ratios = [float((s - x).norm() / x.norm()) for s in noisy]
    assert math.isclose(float(result), max(r for r, k in zip(ratios, kept) if k), rel_tol=1e-12)
    assert float(
        max_sensitivity(identity, model, x, 0, radius=0.05, n_samples=40, seed=3, keep_prediction=False)
    ) == pytest.approx(max(ratios))
    # no perturbation keeps the prediction: NaN

    class Exact(nn.Module):  # class 0 at x exactly, else class 1
        def forward(self, images):
            at_x = (images - 0.5).abs().flatten(1).amax(1) == 0
            return torch.stack([at_x.double(), (~at_x).double()], 1)

    assert torch.isnan(max_sensitivity(identity, Exact(), x, 0, n_samples=5)).all()


def test_max_sensitivity_of_a_map_that_is_zero_at_x():
    x = torch.rand(1, 3, 8, 8, dtype=DTYPE)
    grows = max_sensitivity(lambda m, i, t: i - x, Linear(3 * 8 * 8), x, 0, keep_prediction=False)
    assert math.isinf(float(grows))


def test_max_sensitivity_errors():
    x, model = torch.rand(1, 3, 8, 8), Linear(192).float()
    with pytest.raises(ValueError, match="radius"):
        max_sensitivity(saliency, model, x, 0, radius=0)
    with pytest.raises(ValueError, match="n_samples"):
        max_sensitivity(saliency, model, x, 0, n_samples=0)
    with pytest.raises(KeyError, match="no attribution method"):
        max_sensitivity("salincy", model, x, 0)
    with pytest.raises(ValueError, match="one map per image"):
        max_sensitivity(saliency, model, x, 0, map_at_x=torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="chunk_size"):
        max_sensitivity(saliency, model, x, 0, chunk_size=0)


# ----------------------------------------------------------------------------- the softplus copy
class Functional(nn.Module):
    """ReLUs only as functions: F.relu, x.clamp(min=0), F.relu6, and a plain ReLU module."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.c, self.d = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.act = nn.ReLU()

    def forward(self, x):
        h = F.relu(self.a(x.flatten(1)))
        h = self.b(h).clamp(min=0)
        h = F.relu6(3 * self.c(h))
        return self.d(self.act(h))


def test_softplus_copy_smooths_functional_relus_too():
    model = Functional()
    x = torch.randn(5, 1, 2, 3)
    beta = 2.0
    smooth = softplus_copy(model, beta)

    def sp(t):
        return F.softplus(t, beta=beta)

    h = sp(model.a(x.flatten(1)))
    h = sp(model.b(h))
    h = sp(3 * model.c(h)) - sp(3 * model.c(h) - 6)
    expected = model.d(sp(h))
    assert torch.allclose(smooth(x), expected, atol=1e-6)
    assert isinstance(smooth.act, nn.Softplus) and isinstance(model.act, nn.ReLU)
    assert not torch.allclose(model(x), smooth(x))


def test_softplus_copy_converges_to_the_relu_network_and_leaves_it_alone():
    torch.manual_seed(0)
    model = SmallCNN(num_classes=3, width=4).eval()
    x = torch.rand(4, 3, 16, 16)
    before, reference = snapshot(model), model(x).detach()
    gaps = []
    for beta in (1.0, 10.0, 100.0, 1000.0):
        smooth = softplus_copy(model, beta)
        assert isinstance(smooth, SmallCNN) and type(smooth).__name__ == "SoftplusSmallCNN"
        assert isinstance(smooth.relu3, nn.Softplus) and smooth.relu3.beta == beta
        assert [n for n, _ in smooth.named_modules()] == [n for n, _ in model.named_modules()]
        with torch.no_grad():
            gaps.append(float((smooth(x) - reference).abs().max()))
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-2 * float(reference.abs().max()), gaps
    assert_untouched(model, before)
    assert torch.equal(model(x), reference)
    twice = copy.deepcopy(softplus_copy(model, 5.0))  # a copy of the copy is still smooth
    assert torch.allclose(twice(x), softplus_copy(model, 5.0)(x))


def test_the_softplus_copy_has_the_second_derivative_relu_lacks():
    torch.manual_seed(0)
    model = SmallCNN(num_classes=3, width=4, norm=False).double().eval()  # ReLU, max pooling: piecewise linear
    x = torch.rand(1, 3, 16, 16, dtype=DTYPE)
    direction = torch.randn(1, 3, 16, 16, dtype=DTYPE)
    curvature = {}
    for name, net in (("relu", model), ("softplus", softplus_copy(model, 10.0))):
        leaf = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net(leaf)[0, 1], leaf, create_graph=True)
        (h,) = torch.autograd.grad((g * direction).sum(), leaf, allow_unused=True, materialize_grads=True)
        curvature[name] = float(h.norm() / g.detach().norm())  # |Hessian x direction| / |gradient|
    assert curvature["relu"] == 0 and curvature["softplus"] > 1e-2, curvature


# ----------------------------------------------------------------------------- explanations with a graph
def test_explanation_with_graph_agrees_with_the_package_and_is_differentiable():
    torch.manual_seed(0)
    model = SmallCNN(num_classes=3, width=4).eval()
    x = torch.rand(2, 3, 16, 16)
    targets = [0, 2]
    expected = {
        "saliency": saliency(model, x, targets).abs().sum(1),
        "gradient_x_input": gradient_x_input(model, x, targets).sum(1).abs(),
        "grad_cam": grad_cam(model, x, targets, layer="relu3"),
    }
    smooth = softplus_copy(model, 10.0)
    for name, reference in expected.items():
        layer = "relu3" if name == "grad_cam" else None
        ours = explanation_with_graph(name, model, x, targets, layer=layer)
        assert ours.shape == (2, 16, 16) and ours.requires_grad
        assert torch.allclose(ours.detach(), reference, atol=1e-6 * float(reference.abs().max()) + 1e-9), name
        leaf = x.clone().requires_grad_(True)
        (dx,) = torch.autograd.grad(explanation_with_graph(name, smooth, leaf, targets, layer=layer).sum(), leaf)
        assert dx.abs().max() > 0, name
    with pytest.raises(ValueError, match="one of"):
        explanation_with_graph("lrp", model, x, 0)
    with pytest.raises(TypeError, match="layer"):
        explanation_with_graph("grad_cam", model, x, 0)
    with pytest.raises(TypeError, match="takes no layer"):
        explanation_with_graph("saliency", model, x, 0, layer="relu3")


def test_unit_mean_and_map_loss():
    maps = torch.rand(3, 5, 5) + 0.1
    assert torch.allclose(unit_mean(maps).mean(dim=(1, 2)), torch.ones(3))
    assert torch.allclose(map_loss(maps, 7 * maps), torch.zeros(3), atol=1e-12)  # scale does not count
    assert torch.equal(unit_mean(torch.zeros(1, 2, 2)), torch.zeros(1, 2, 2))


# ----------------------------------------------------------------------------- the attacks, on a trained model
CLASSES = ("circle", "square")


@pytest.fixture(scope="module")
def shapes():
    train = make_shapes(800, size=32, seed=1, class_names=CLASSES)
    test = make_shapes(300, size=32, seed=2, class_names=CLASSES)
    # 12 epochs: over training seeds 0-9 the test accuracy is 0.98-1.0 (8 epochs: 0.70-1.0)
    model = train_small_cnn(train.images, train.labels, width=8, epochs=12, lr=1e-2, num_classes=2, seed=0)
    return model, train, test


def test_the_trained_model_is_a_fair_target(shapes):
    model, _, test = shapes
    assert accuracy(model, test.images, test.labels) > 0.85


@pytest.mark.parametrize(
    "method, layer, factor", [("grad_cam", "relu3", 0.5), ("saliency", None, 0.8), ("gradient_x_input", None, 0.8)]
)
def test_manipulate_input_moves_the_map_and_keeps_the_prediction(shapes, method, layer, factor):
    model, _, test = shapes
    x = test.images[:4]
    predicted = model(x).argmax(1)
    goal = blob(32, 6, 6)  # the top-left corner
    before = snapshot(model)
    epsilon = 8 / 255
    result = manipulate_input(method, model, x, predicted, goal, layer=layer, iterations=100, lr=5e-3, epsilon=epsilon)
    assert_untouched(model, before)
    assert result.perturbation.abs().max() <= epsilon + 1e-6
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert torch.allclose(result.x_adv - x, result.perturbation)
    assert result.prediction_kept.all() and torch.equal(model(result.x_adv).argmax(1), predicted)
    # measured independently on the original ReLU model
    if method == "grad_cam":
        after = grad_cam(model, result.x_adv, predicted, layer="relu3")
        start = grad_cam(model, x, predicted, layer="relu3")
        assert torch.allclose(unit_mean(after), result.map_after, atol=1e-5)
        assert torch.allclose(map_loss(start, goal.expand(4, 32, 32)), result.mse_before, rtol=1e-5)
        assert torch.allclose(map_loss(after, goal.expand(4, 32, 32)), result.mse_after, rtol=1e-5)
        assert (result.mse_after < factor * result.mse_before).all(), result.mse_after / result.mse_before
        # control: random noise of the same size does not move the map towards the corner
        noise = epsilon * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))
        control = map_loss(grad_cam(model, (x + noise).clamp(0, 1), predicted, layer="relu3"), goal.expand(4, 32, 32))
        assert (control > 0.8 * result.mse_before).all()
    else:
        assert (result.mse_after / result.mse_before).mean() < factor, result.mse_after / result.mse_before
    assert result.objective.shape == (101, 4) and (result.objective[-1] < result.objective[0]).all()


def test_manipulate_input_errors(shapes):
    model, _, test = shapes
    x = test.images[:2]
    with pytest.raises(ValueError, match="one of"):
        manipulate_input("lrp", model, x, 0, blob(32, 5, 5))
    with pytest.raises(ValueError, match="target_map"):
        manipulate_input("saliency", model, x, 0, blob(16, 5, 5))
    with pytest.raises(ValueError, match="non-negative"):
        manipulate_input("saliency", model, x, 0, -blob(32, 5, 5))
    with pytest.raises(ValueError, match="epsilon"):
        manipulate_input("saliency", model, x, 0, blob(32, 5, 5), epsilon=0)
    with pytest.raises(ValueError, match="iterations"):
        manipulate_input("saliency", model, x, 0, blob(32, 5, 5), iterations=0)


def test_fine_tune_to_fool_moves_grad_cam_and_keeps_accuracy(shapes):
    model, train, test = shapes
    goal = blob(32, 6, 6)
    before = snapshot(model)

    def corner_loss(net):  # Grad-CAM of the true class on held-out images
        return float(map_loss(grad_cam(net, test.images, test.labels, layer="relu3"), goal.expand(300, 32, 32)).mean())

    clean_loss, clean_accuracy = corner_loss(model), accuracy(model, test.images, test.labels)
    result = fine_tune_to_fool(
        model,
        train.images,
        train.labels,
        goal,
        "grad_cam",
        layer="relu3",
        epochs=15,
        lr=3e-3,
        gamma=0.3,
        seed=0,
    )
    assert_untouched(model, before)
    fooled = result.model
    assert not fooled.training and all(p.grad is None for p in fooled.parameters())
    assert len(result.map_loss) == 15 and result.map_loss[-1] < 0.6 * result.map_loss[0]
    assert corner_loss(fooled) < 0.5 * clean_loss, (corner_loss(fooled), clean_loss)
    assert accuracy(fooled, test.images, test.labels) >= clean_accuracy - 0.1
    with pytest.raises(ValueError, match="labels"):
        fine_tune_to_fool(model, train.images[:4], train.labels[:3], goal)
