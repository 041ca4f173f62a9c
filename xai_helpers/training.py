"""Training small models quickly and reproducibly, for the synthetic experiments.

:func:`train_classifier` fits a model with the book's one recipe: Adam on the cross-entropy, in
minibatches drawn in a seeded order, with a learning rate that warms up linearly and then follows a
cosine down to zero. With :class:`~xai_helpers.models.SmallCNN` (which has batch norm) on a few
thousand 32x32 images from :func:`~xai_helpers.data.make_shapes`, this recipe reaches its accuracy
on every training seed and under every numerical setting of the robustness sweep
(``tests/robustness``), where a constant learning rate without batch norm stalled near chance on
some of them. :func:`train_small_cnn` builds and trains a ``SmallCNN`` from a seed, and reuses a
model trained earlier with the same data, seed and recipe when a model cache is set
(:data:`MODEL_CACHE_ENV`), so that chapters which explain the same models train them once.
:func:`accuracy` and :func:`predict` score a model.
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MODEL_CACHE_ENV", "learning_rate_at", "train_classifier", "train_small_cnn", "accuracy", "predict"]

#: Name of the environment variable that holds the model cache folder of :func:`train_small_cnn`
#: (unset: no cache). ``make book`` and ``make test`` set it to ``_build/models``.
MODEL_CACHE_ENV = "XAI_MODEL_CACHE"


def learning_rate_at(step: int, steps: int, lr: float, warmup: float = 0.05) -> float:
    """The recipe's learning rate at ``step`` of ``steps`` (0-based): a linear warm-up over the first
    ``warmup`` fraction of the steps (at least one), then a cosine from ``lr`` down to 0 at the end."""
    warm = max(1, round(warmup * steps))
    if step < warm:
        return lr * (step + 1) / warm
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 10,
    minibatch_size: int = 32,
    lr: float = 3e-3,
    warmup: float = 0.05,
    seed: int = 0,
    stop_at_accuracy: float | None = None,
) -> list[float]:
    """Train ``model`` on ``images [N, C, H, W]`` and ``labels [N]``; returns the mean loss of each epoch.

    Adam minimises the cross-entropy over minibatches of ``minibatch_size`` images; the learning rate
    follows :func:`learning_rate_at` over ``epochs`` epochs. The minibatch order is drawn from a
    generator seeded with ``seed``, so the same call gives the same model on the same machine (another
    CPU rounds differently, which is why the book's findings are checked over many seeds and numerical
    settings). With ``stop_at_accuracy``, training stops after the first epoch at whose end the model
    reaches that accuracy on the training set itself (to memorise a set, e.g. with random labels), or
    after ``epochs``; ``len(result)`` says which. The model is left in eval mode.
    """
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {labels.shape[0]} labels")
    if stop_at_accuracy is not None and not 0.0 < stop_at_accuracy <= 1.0:
        raise ValueError(f"stop_at_accuracy is an accuracy in (0, 1], got {stop_at_accuracy}")
    if epochs < 1 or minibatch_size < 1:
        raise ValueError(f"epochs and minibatch_size must be positive, got {epochs} and {minibatch_size}")
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    per_epoch = math.ceil(len(labels) / minibatch_size)
    step, history = 0, []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=gen)
        total = 0.0
        for start in range(0, len(order), minibatch_size):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(step, epochs * per_epoch, lr, warmup)
            idx = order[start : start + minibatch_size]
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            step += 1
        history.append(total / len(labels))
        if stop_at_accuracy is not None and accuracy(model, images, labels) >= stop_at_accuracy:
            break
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    return history


def _cache_key(images: torch.Tensor, labels: torch.Tensor, seed: int, options: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    for t in (images, labels):
        digest.update(str((t.dtype, tuple(t.shape))).encode())
        digest.update(t.detach().contiguous().cpu().numpy().tobytes())
    digest.update(repr((seed, sorted(options.items()), torch.__version__)).encode())
    return digest.hexdigest()[:24]


def train_small_cnn(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    seed: int = 0,
    num_classes: int = 3,
    width: int = 16,
    **recipe: Any,
) -> nn.Module:
    """A :class:`~xai_helpers.models.SmallCNN` initialised with ``torch.manual_seed(seed)`` and trained
    on ``images [N, C, H, W]`` and ``labels [N]`` by :func:`train_classifier` (``seed`` and ``recipe``).

    When the environment variable :data:`MODEL_CACHE_ENV` names a folder, the trained weights are
    stored there under a hash of the images, labels, seed, recipe and torch version, and a later
    call with the same arguments loads them (``weights_only=True``) instead of training again.
    Returns the model in eval mode.
    """
    from .models import SmallCNN

    options = dict(recipe, num_classes=num_classes, width=width)
    folder = os.environ.get(MODEL_CACHE_ENV)
    path = Path(folder) / f"small_cnn_{_cache_key(images, labels, seed, options)}.pt" if folder else None
    torch.manual_seed(seed)
    model = SmallCNN(num_classes=num_classes, in_channels=images.shape[1], width=width)
    if path is not None and path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    train_classifier(model, images, labels, seed=seed, **recipe)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.part")
        torch.save(model.state_dict(), partial)
        partial.replace(path)      # atomic: a reader never sees half a file
    return model


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, chunk_size: int = 256) -> torch.Tensor:
    """Predicted class for each image: ``[N, C, H, W]`` -> ``[N]`` (model in eval mode, ``chunk_size``
    images a forward pass)."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(images[i : i + chunk_size]).argmax(1) for i in range(0, len(images), chunk_size)])
    finally:
        model.train(was_training)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``images`` whose predicted class equals ``labels``."""
    return (predict(model, images) == labels).float().mean().item()
