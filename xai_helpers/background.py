"""The "Background" chapters' small models: gradient descent, the perceptron and the XOR data.

Everything here is plain numpy and short enough to print in the book, which shows these functions
with ``inspect.getsource``:

* :func:`gradient_descent` -- the update ``x <- x - lr * grad(x)``, returning the whole path.
* :func:`step` and :func:`perceptron` -- the step function and Rosenblatt's perceptron.
* :func:`train_perceptron` -- the perceptron learning rule, one sample at a time, with a history.
* :func:`linearly_separable` -- whether any perceptron classifies a labelled data set correctly.
* :data:`XOR_X`, :data:`XOR_Y` -- the four corners of the unit square and their XOR labels.
* :func:`draw_points` and :func:`draw_regions` -- a labelled 2-D point cloud and the regions a
  classifier assigns, on a matplotlib axis.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # matplotlib is imported only when a figure is drawn
    import matplotlib.axes

__all__ = ["XOR_X", "XOR_Y", "gradient_descent", "step", "perceptron", "PerceptronHistory",
           "train_perceptron", "linearly_separable", "draw_points", "draw_regions"]

#: ``[4, 2]``: the four corners ``(x1, x2)`` of the unit square, the inputs of the XOR problem.
XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
#: ``[4]``: the labels ``x1 XOR x2`` of :data:`XOR_X`.
XOR_Y = np.array([0, 1, 1, 0])

CLASS_COLOURS = ("#d95f02", "#1b9e77")  # class 0, class 1 (colour-blind safe)


def gradient_descent(
    grad: Callable[[np.ndarray], np.ndarray], x0: np.ndarray | float, lr: float, steps: int
) -> np.ndarray:
    """Run ``steps`` updates ``x_{t+1} = x_t - lr * grad(x_t)`` from ``x0`` (shape ``[n]``).

    Returns the path ``[steps + 1, n]``: row ``t`` is ``x_t``, row 0 the start.
    """
    path = [np.asarray(x0, dtype=float)]
    for _ in range(steps):
        x = path[-1]
        path.append(x - lr * grad(x))
    return np.stack(path)


def step(z: np.ndarray | float) -> np.ndarray:
    """The step function: 1 where ``z >= 0``, else 0 (integers, same shape as ``z``)."""
    return (np.asarray(z) >= 0).astype(int)


def perceptron(x: np.ndarray, w: np.ndarray, w0: float) -> np.ndarray:
    """Perceptron output ``step(w0 + x @ w)`` for inputs ``x`` ``[n]`` or ``[B, n]`` and weights ``w`` ``[n]``."""
    return step(w0 + np.asarray(x) @ w)


@dataclass
class PerceptronHistory:
    """What :func:`train_perceptron` did: the weights after each epoch and the errors made in it.

    ``w`` is ``[E + 1, n]`` and ``w0`` is ``[E + 1]`` (row 0 holds the starting weights); ``errors[e]`` is
    the number of samples epoch ``e`` got wrong (each one caused an update); ``counts[i]`` is the signed
    number of updates sample ``i`` caused (+1 when it was a missed 1, -1 when it was a missed 0).
    """

    w: np.ndarray
    w0: np.ndarray
    errors: np.ndarray
    counts: np.ndarray = field(repr=False)

    @property
    def converged(self) -> bool:
        """True when the last epoch made no error (then every later epoch makes none either)."""
        return bool(self.errors[-1] == 0)


def train_perceptron(x: np.ndarray, y: np.ndarray, lr: float = 1.0, epochs: int = 20,
                     stop_when_correct: bool = True) -> PerceptronHistory:
    """Train a perceptron on ``x`` ``[B, n]`` with labels ``y`` ``[B]`` in {0, 1}, from zero weights.

    Visits the samples in order, once per epoch, and applies the perceptron rule to each one:
    ``w_i += lr * (y - f(x)) * x_i`` and ``w0 += lr * (y - f(x))``. Stops after the first epoch
    without an error when ``stop_when_correct`` is set.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y)
    w, w0 = np.zeros(x.shape[1]), 0.0
    ws, w0s, errors, counts = [w.copy()], [w0], [], np.zeros(len(x), dtype=int)
    for _ in range(epochs):
        mistakes = 0
        for i, (xi, yi) in enumerate(zip(x, y)):
            error = yi - perceptron(xi, w, w0)   # -1, 0 or +1
            w = w + lr * error * xi
            w0 = w0 + lr * error
            mistakes += int(error != 0)
            counts[i] += error
        ws.append(w.copy())
        w0s.append(w0)
        errors.append(mistakes)
        if stop_when_correct and mistakes == 0:
            break
    return PerceptronHistory(np.stack(ws), np.array(w0s), np.array(errors), counts)


def linearly_separable(x: np.ndarray, y: np.ndarray) -> bool:
    """True when some perceptron gets every point of ``x`` ``[B, n]`` right for labels ``y`` ``[B]`` in {0, 1}.

    Solves a linear feasibility problem: find ``(w0, w)`` with ``w0 + w.x <= -1`` for class 0 and
    ``w0 + w.x >= 0`` for class 1. Any separating weights can be scaled to satisfy it, so the problem
    is feasible exactly when the classes are linearly separable.
    """
    from scipy.optimize import linprog

    x_tilde = np.column_stack([np.ones(len(x)), np.asarray(x, dtype=float)])   # [B, n + 1]
    y = np.asarray(y)
    sign = np.where(y == 1, -1.0, 1.0)
    bound = np.where(y == 1, 0.0, -1.0)
    result = linprog(np.zeros(x_tilde.shape[1]), A_ub=sign[:, None] * x_tilde, b_ub=bound,
                     bounds=[(None, None)] * x_tilde.shape[1], method="highs")
    if result.status not in (0, 2):   # 0: feasible, 2: infeasible
        raise RuntimeError(f"linprog failed: {result.message}")
    return result.status == 0


def draw_points(
    ax: matplotlib.axes.Axes, x: np.ndarray, y: np.ndarray, *, size: float = 40, labels: bool = True
) -> None:
    """Scatter ``x`` ``[B, 2]`` on ``ax``: class 0 as orange circles, class 1 as green squares."""
    x, y = np.asarray(x), np.asarray(y)
    for cls, (colour, marker) in enumerate(zip(CLASS_COLOURS, ("o", "s"))):
        keep = y == cls
        ax.scatter(x[keep, 0], x[keep, 1], s=size, c=colour, marker=marker, edgecolors="black",
                   linewidths=0.6, zorder=3, label=f"class {cls}" if labels else None)
    ax.set_aspect("equal")


def draw_regions(ax: matplotlib.axes.Axes, predict: Callable[[np.ndarray], np.ndarray],
                 xlim: tuple[float, float] = (-0.5, 1.5), ylim: tuple[float, float] = (-0.5, 1.5),
                 resolution: int = 300, alpha: float = 0.25) -> None:
    """Shade the plane by ``predict(points [N, 2]) -> [N]`` in {0, 1} (or probabilities, cut at 0.5)."""
    gx, gy = np.meshgrid(np.linspace(xlim[0], xlim[1], resolution), np.linspace(ylim[0], ylim[1], resolution))
    values = np.asarray(predict(np.column_stack([gx.ravel(), gy.ravel()]))).reshape(gx.shape)
    from matplotlib.colors import ListedColormap

    ax.contourf(gx, gy, (values >= 0.5).astype(float), levels=[-0.5, 0.5, 1.5],
                cmap=ListedColormap(CLASS_COLOURS), alpha=alpha)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
