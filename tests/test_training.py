import copy
import math

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
    assert predict(model, x, chunk_size=3).shape == (10,)
    assert model.training
    assert torch.equal(predict(model, x), model(x).argmax(1))
    with pytest.raises(ValueError, match="10 images but 9 labels"):
        train_classifier(model, x, torch.zeros(9, dtype=torch.long))


def test_stop_at_accuracy_stops_once_the_training_set_is_learnt():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(40, 1, 4, 4, generator=gen)
    labels = (images.mean(dim=(1, 2, 3)) > 0.5).long()
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    history = train_classifier(model, images, labels, epochs=500, lr=0.05, minibatch_size=40, seed=0,
                               stop_at_accuracy=0.9)
    assert len(history) < 500 and accuracy(model, images, labels) >= 0.9
    with pytest.raises(ValueError, match="stop_at_accuracy"):
        train_classifier(model, images, labels, stop_at_accuracy=0.0)


def test_the_learning_rate_warms_up_then_follows_a_cosine_to_zero():
    from xai_helpers.training import learning_rate_at

    steps, lr = 200, 0.01                      # warm-up: 5 % = 10 steps
    rates = [learning_rate_at(s, steps, lr) for s in range(steps)]
    assert rates[0] == pytest.approx(lr / 10) and rates[9] == pytest.approx(lr)
    assert max(rates) == pytest.approx(lr) and rates[-1] < lr / 1000
    # closed form of the cosine half-way between the end of the warm-up and the last step
    middle = 10 + (steps - 10) // 2
    assert rates[middle] == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * (middle - 10) / 190)))
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))          # non-increasing after the warm-up


def test_train_classifier_applies_the_schedule_to_adam():
    # A second implementation of the loop with torch's own LambdaLR must give the same weights.
    from xai_helpers.training import learning_rate_at

    gen = torch.Generator().manual_seed(0)
    images, labels = torch.rand(20, 3, 4, 4, generator=gen), torch.randint(0, 3, (20,), generator=gen)
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    theirs = copy.deepcopy(ours)
    train_classifier(ours, images, labels, epochs=3, minibatch_size=8, lr=0.02, seed=4)
    order_gen = torch.Generator().manual_seed(4)
    optimizer = torch.optim.Adam(theirs.parameters(), lr=0.02)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_at(s, 9, 0.02) / 0.02)
    for _ in range(3):
        order = torch.randperm(20, generator=order_gen)
        for start in range(0, 20, 8):
            idx = order[start:start + 8]
            loss = torch.nn.functional.cross_entropy(theirs(images[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_train_small_cnn_reuses_a_cached_model(tmp_path, monkeypatch):
    from xai_helpers.training import MODEL_CACHE_ENV, train_small_cnn

    data = make_shapes(64, seed=0, spurious_cue=True)
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path))
    first = train_small_cnn(data.images, data.labels, seed=3, epochs=1)
    assert len(list(tmp_path.glob("small_cnn_*.pt"))) == 1
    calls = []
    monkeypatch.setattr("xai_helpers.training.train_classifier", lambda *a, **k: calls.append(1))
    again = train_small_cnn(data.images, data.labels, seed=3, epochs=1)            # loaded, not trained
    assert not calls and not again.training
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    train_small_cnn(data.images, data.labels, seed=4, epochs=1)                    # another seed: trained
    assert calls == [1]
    monkeypatch.delenv(MODEL_CACHE_ENV)
    train_small_cnn(data.images, data.labels, seed=3, epochs=1)                    # no cache: trained
    assert calls == [1, 1]
