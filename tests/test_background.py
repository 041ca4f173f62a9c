"""Tests for xai_helpers.background against closed forms, known facts and hand-worked examples."""
import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from xai_helpers.background import (  # noqa: E402
    XOR_X,
    XOR_Y,
    draw_points,
    draw_regions,
    gradient_descent,
    linearly_separable,
    perceptron,
    step,
    train_perceptron,
)


@pytest.mark.parametrize("lr", [0.01, 0.1, 0.19, 0.21])
def test_gradient_descent_matches_the_closed_form_on_a_quadratic(lr):
    curvatures = np.array([1.0, 10.0])
    start = np.array([-4.0, 1.5])
    path = gradient_descent(lambda p: curvatures * p, start, lr, 30)
    t = np.arange(31)[:, None]
    assert path.shape == (31, 2)
    np.testing.assert_allclose(path, (1 - lr * curvatures) ** t * start, rtol=1e-12, atol=1e-12)


def test_gradient_descent_does_not_modify_the_start_and_accepts_lists():
    start = [1.0, -2.0]
    path = gradient_descent(lambda p: 2 * p, start, 0.25, 3)
    assert start == [1.0, -2.0]
    np.testing.assert_allclose(path[-1], np.array(start) * 0.5 ** 3)


def test_step_is_one_from_zero_on():
    assert step(0.0) == 1 and step(-1e-300) == 0 and step(5) == 1
    np.testing.assert_array_equal(step(np.array([[-2.0, 0.0], [0.5, -0.1]])), [[0, 1], [1, 0]])


def test_perceptron_by_hand():
    w, w0 = np.array([2.0, -1.0]), -1.0
    # 2 * 1 - 1 * 1 - 1 = 0 -> 1;  2 * 0 - 1 * 1 - 1 = -2 -> 0
    assert perceptron(np.array([1.0, 1.0]), w, w0) == 1
    np.testing.assert_array_equal(perceptron(np.array([[1.0, 1.0], [0.0, 1.0]]), w, w0), [1, 0])


def test_perceptron_first_update_by_hand():
    # From zero weights the first sample (label 0) is predicted 1 (sigma(0) = 1): w -= lr * x, w0 -= lr.
    history = train_perceptron(np.array([[2.0, 3.0]]), np.array([0]), lr=0.5, epochs=1)
    np.testing.assert_allclose(history.w[1], [-1.0, -1.5])
    assert history.w0[1] == -0.5 and history.errors.tolist() == [1]


@pytest.mark.parametrize("labels", [[0, 0, 0, 1], [0, 1, 1, 1], [1, 1, 1, 0], [0, 0, 1, 1]])
def test_train_perceptron_converges_on_separable_functions(labels):
    y = np.array(labels)
    history = train_perceptron(XOR_X, y, lr=1.0, epochs=100)
    assert history.converged
    np.testing.assert_array_equal(perceptron(XOR_X, history.w[-1], history.w0[-1]), y)
    # The weights are a signed combination of the training points (from zero weights).
    np.testing.assert_allclose(history.w[-1], history.counts @ XOR_X)
    assert history.w0[-1] == history.counts.sum()


def test_train_perceptron_never_converges_on_xor():
    history = train_perceptron(XOR_X, XOR_Y, epochs=50, stop_when_correct=False)
    assert len(history.errors) == 50 and history.errors.min() > 0 and not history.converged


def test_learning_rate_only_scales_the_weights_from_zero():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 3))
    y = step(x @ np.array([1.0, -2.0, 0.5]) + 0.2)
    a, b = train_perceptron(x, y, lr=1.0, epochs=50), train_perceptron(x, y, lr=0.125, epochs=50)
    np.testing.assert_array_equal(a.errors, b.errors)
    np.testing.assert_allclose(b.w, 0.125 * a.w)


def test_linearly_separable_counts_fourteen_of_sixteen_boolean_functions():
    separable = {labels: linearly_separable(XOR_X, np.array(labels))
                 for labels in itertools.product([0, 1], repeat=4)}
    assert sum(separable.values()) == 14
    assert not separable[(0, 1, 1, 0)] and not separable[(1, 0, 0, 1)]   # XOR and XNOR


def test_linearly_separable_agrees_with_the_perceptron_on_random_data():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(40, 2))
    y = step(x @ np.array([1.0, 1.0]) - 0.1)
    assert linearly_separable(x, y)
    assert train_perceptron(x, y, epochs=1000).converged
    y_circle = (np.sum(x ** 2, axis=1) < 0.4).astype(int)     # inside a circle: not separable
    assert 0 < y_circle.sum() < 40 and not linearly_separable(x, y_circle)


def test_drawing_helpers():
    fig, ax = plt.subplots()
    draw_points(ax, XOR_X, XOR_Y)
    seen = []
    draw_regions(ax, lambda p: seen.append(p.shape) or step(p[:, 0] - 0.5), resolution=20)
    assert seen == [(400, 2)] and ax.get_xlim() == (-0.5, 1.5)
    assert len(ax.collections) >= 2
    plt.close(fig)
