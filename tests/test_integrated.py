"""Tests for xai_helpers.integrated: the quadratures against exact integrals, Integrated Gradients
against a closed form, the meaning of ``steps``, and the tolerance mode."""
import pytest
import torch
from torch import nn

from xai_helpers.core import completeness_error
from xai_helpers.methods import integrated
from xai_helpers.methods.integrated import (
    QUADRATURES,
    integrated_gradients,
    integrated_gradients_to_tolerance,
    quadrature_nodes,
)


@pytest.mark.parametrize("n", range(1, 9))
def test_gauss_legendre_with_n_points_integrates_degree_2n_minus_1_exactly(n):
    alphas, weights = quadrature_nodes(n, "gauss-legendre")
    assert alphas.shape == weights.shape == (n,) and (alphas > 0).all() and (alphas < 1).all()
    for degree in range(2 * n):
        assert abs(float((weights * alphas**degree).sum()) - 1 / (degree + 1)) < 1e-13, degree
    assert abs(float((weights * alphas ** (2 * n)).sum()) - 1 / (2 * n + 1)) > 1e-12   # and not degree 2n


def test_trapezoid_and_riemann_grids():
    a, w = quadrature_nodes(5, "trapezoid")
    assert torch.allclose(a, torch.tensor([0, 0.25, 0.5, 0.75, 1], dtype=torch.float64))
    assert torch.allclose(w, torch.tensor([1, 2, 2, 2, 1], dtype=torch.float64) / 8)
    a, w = quadrature_nodes(4, "riemann")
    assert torch.allclose(a, torch.tensor([0.25, 0.5, 0.75, 1], dtype=torch.float64))
    assert torch.allclose(w, torch.full((4,), 0.25, dtype=torch.float64))
    with pytest.raises(ValueError, match="trapezoid rule needs steps >= 2"):
        quadrature_nodes(1, "trapezoid")
    with pytest.raises(ValueError, match="unknown quadrature"):
        quadrature_nodes(4, "simpson")
    with pytest.raises(ValueError, match="steps"):
        quadrature_nodes(0)


class Cubic(nn.Module):
    """``y_k = sum_i c_ki x_i^3``: Integrated Gradients is ``c_ki (x_i^3 - x'_i^3)`` exactly."""

    def __init__(self, pixels, classes=2):
        super().__init__()
        self.c = nn.Parameter(torch.randn(classes, pixels, dtype=torch.float64))

    def forward(self, x):
        return x.flatten(1).pow(3) @ self.c.T


def test_integrated_gradients_of_a_cubic_against_the_closed_form():
    torch.manual_seed(0)
    net = Cubic(12)
    x, base = torch.rand(3, 3, 2, 2, dtype=torch.float64), torch.rand(1, 3, 2, 2, dtype=torch.float64)
    exact = net.c[[0, 1, 1]].detach().view(3, 3, 2, 2) * (x**3 - base**3)
    # the integrand 3 c (x' + a d)^2 is a quadratic in a: two Gauss-Legendre nodes are exact, one is not
    assert torch.allclose(integrated_gradients(net, x, [0, 1, 1], baseline=base, steps=2), exact, atol=1e-12)
    assert not torch.allclose(integrated_gradients(net, x, [0, 1, 1], baseline=base, steps=1), exact, atol=1e-4)
    # the trapezoid rule's error on a quadratic is -h^2/12 * f'' per interval: 6 c d^3 / (12 (n-1)^2)
    d = x - base
    trapezoid = integrated_gradients(net, x, [0, 1, 1], baseline=base, steps=5, quadrature="trapezoid")
    assert torch.allclose(trapezoid - exact, net.c[[0, 1, 1]].detach().view(3, 3, 2, 2) * d**3 / (2 * 16), atol=1e-12)
    assert torch.allclose(completeness_error(net, x, [0, 1, 1], exact, baseline=base),
                          torch.zeros(3, dtype=torch.float64), atol=1e-12)


class Counter(nn.Module):
    """Counts the images it sees."""

    def __init__(self, net):
        super().__init__()
        self.net, self.images = net, 0

    def forward(self, x):
        self.images += x.shape[0]
        return self.net(x)


@pytest.mark.parametrize("rule", QUADRATURES)
def test_steps_is_the_number_of_gradient_evaluations(rule):
    torch.manual_seed(0)
    model = Counter(Cubic(12))
    integrated_gradients(model, torch.rand(2, 3, 2, 2, dtype=torch.float64), 1, steps=7, chunk_size=3, quadrature=rule)
    assert model.images == 2 * 7


def test_rule_is_not_a_quadrature_keyword():
    # ``rule`` means a backward rule everywhere in the package; the quadrature has its own name.
    net, x = Cubic(12), torch.rand(2, 3, 2, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match="rule"):
        integrated_gradients(net, x, 0, steps=4, rule="riemann")


@pytest.mark.parametrize("rule", ["gauss-legendre", "trapezoid"])
def test_tolerance_mode_reaches_the_tolerance_and_reports_it(rule, smooth_net):
    net = smooth_net(4)
    scale = torch.tensor([1.0, 3.0, 6.0], dtype=torch.float64).view(3, 1, 1, 1)
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64) * scale
    result = integrated_gradients_to_tolerance(net, x, [0, 1, 2], tolerance=1e-4, start_steps=2, max_steps=1024,
                                               quadrature=rule)
    assert result.converged.all() and (result.relative_error <= 1e-4).all()
    gap = -completeness_error(net, x, [0, 1, 2], torch.zeros_like(x))
    for i in range(3):
        steps = int(result.steps[i])
        assert steps in {2 ** k for k in range(1, 11)}
        ig = integrated_gradients(net, x[i:i + 1], [0, 1, 2][i], steps=steps, quadrature=rule)
        assert torch.allclose(result.attributions[i:i + 1], ig, atol=1e-12)
        relative = (ig.sum() - gap[i]).abs() / gap[i].abs()
        assert torch.isclose(result.relative_error[i], relative)
        if steps > 2:   # the step before did not reach the tolerance: it is the smallest power of 2 that does
            coarser = integrated_gradients(net, x[i:i + 1], [0, 1, 2][i], steps=steps // 2, quadrature=rule)
            assert (coarser.sum() - gap[i]).abs() / gap[i].abs() > 1e-4
    assert result.evaluations == sum(2 * int(s) - 2 for s in result.steps)     # 2 + 4 + ... + s per image


def test_tolerance_mode_says_when_it_did_not_converge(smooth_net):
    net, x = smooth_net(4), torch.rand(2, 3, 8, 8, dtype=torch.float64) * 6
    result = integrated_gradients_to_tolerance(net, x, 0, tolerance=1e-12, start_steps=1, max_steps=4,
                                               quadrature="riemann")
    assert not result.converged.any() and (result.steps == 4).all() and (result.relative_error > 1e-12).all()
    assert result.evaluations == 2 * (1 + 2 + 4)
    with pytest.raises(ValueError, match="tolerance"):
        integrated_gradients_to_tolerance(net, x, 0, tolerance=0)


def test_without_steps_the_grid_is_refined_until_completeness_holds(smooth_net, recwarn):
    net = smooth_net(4)
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ig = integrated_gradients(net, x, [0, 1, 2])
    assert not [w for w in recwarn if "completeness" in str(w.message)]
    relative = completeness_error(net, x, [0, 1, 2], ig).abs() / completeness_error(
        net, x, [0, 1, 2], torch.zeros_like(x)).abs()
    assert (relative <= integrated.DEFAULT_TOLERANCE).all()
    # the same as the tolerance mode at the default tolerance, and more than the coarsest grid gives
    reference = integrated_gradients_to_tolerance(net, x, [0, 1, 2], tolerance=integrated.DEFAULT_TOLERANCE,
                                                  start_steps=16, max_steps=256)
    assert torch.equal(ig, reference.attributions)


def test_without_steps_an_image_that_misses_completeness_is_named_in_a_warning(smooth_net, monkeypatch):
    monkeypatch.setattr(integrated, "_DEFAULT_STEPS", (1, 2))     # too coarse for this net on purpose
    net, x = smooth_net(4), torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    said = r"misses completeness by more than 5%.*after 2 steps on image\(s\) 0 \(\d+%\)"
    with pytest.warns(UserWarning, match=said):
        ig = integrated_gradients(net, x, 0, quadrature="riemann")
    assert torch.equal(ig, integrated_gradients(net, x, 0, steps=2, quadrature="riemann"))
