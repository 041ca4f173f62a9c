import pytest
import torch
from torch import nn

from xai_helpers.data import make_shapes
from xai_helpers.models import SmallCNN
from xai_helpers.training import accuracy, predict, train_classifier


def test_training_is_reproducible_and_learns_a_planted_cue():
    data = make_shapes(600, seed=0, spurious_cue=True)
    models = []
    for _ in range(2):
        torch.manual_seed(1)
        model = SmallCNN()
        history = train_classifier(model, data.images, data.labels, epochs=2, seed=5)
        models.append(model)
    assert history[-1] < history[0]
    assert all(torch.equal(a, b) for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()))
    assert not models[0].training
    # The background colour alone decides the class, so the cue is learned almost at once.
    test = make_shapes(200, seed=9, spurious_cue=True)
    assert accuracy(models[0], test.images, test.labels) > 0.9


def test_predict_restores_mode_and_checks_lengths():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).train()
    x = torch.rand(10, 3, 2, 2)
    assert predict(model, x, batch_size=3).shape == (10,)
    assert model.training
    assert torch.equal(predict(model, x), model(x).argmax(1))
    with pytest.raises(ValueError, match="10 images but 9 labels"):
        train_classifier(model, x, torch.zeros(9, dtype=torch.long))


def test_stop_at_accuracy_stops_once_the_training_set_is_learnt():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(40, 1, 4, 4, generator=gen)
    labels = (images.mean(dim=(1, 2, 3)) > 0.5).long()
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    history = train_classifier(model, images, labels, epochs=500, lr=0.05, batch_size=40, seed=0, stop_at_accuracy=0.9)
    assert len(history) < 500 and accuracy(model, images, labels) >= 0.9
    with pytest.raises(ValueError, match="stop_at_accuracy"):
        train_classifier(model, images, labels, stop_at_accuracy=0.0)
