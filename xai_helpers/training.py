"""Training small models quickly and reproducibly, for the synthetic experiments.

:func:`train_classifier` fits a model with Adam and cross-entropy under a fixed seed;
:func:`accuracy` scores it. With :class:`~xai_helpers.models.SmallCNN` on a few thousand 64x64
images from :func:`~xai_helpers.data.make_shapes`, training takes seconds on a CPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["train_classifier", "accuracy", "predict"]


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 3,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    stop_at_accuracy: float | None = None,
) -> list[float]:
    """Train ``model`` on ``images [N, C, H, W]`` and ``labels [N]``; returns the mean loss of each epoch.

    The batch order is drawn from a generator seeded with ``seed``, so the same call gives the same
    model (on the same machine and thread count). With ``stop_at_accuracy``, training stops after
    the first epoch at whose end the model reaches that accuracy on the training set itself (to
    memorise a set, e.g. with random labels), or after ``epochs``; ``len(result)`` says which.
    The model is left in eval mode.
    """
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {labels.shape[0]} labels")
    if stop_at_accuracy is not None and not 0.0 < stop_at_accuracy <= 1.0:
        raise ValueError(f"stop_at_accuracy is an accuracy in (0, 1], got {stop_at_accuracy}")
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=gen)
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        history.append(total / len(labels))
        if stop_at_accuracy is not None and accuracy(model, images, labels) >= stop_at_accuracy:
            break
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    return history


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted class for each image: ``[N, C, H, W]`` -> ``[N]`` (model in eval mode)."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``images`` whose predicted class equals ``labels``."""
    return (predict(model, images) == labels).float().mean().item()
