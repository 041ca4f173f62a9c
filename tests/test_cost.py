"""Counted cost: forward and backward passes per image, checked against a counter written here."""
import pytest
import torch
from torch import nn

from xai_helpers.cost import PassCount, count_passes
from xai_helpers.methods import cam, perturbation
from xai_helpers.methods.gradients import saliency, smoothgrad
from xai_helpers.models import SmallCNN


class CountingWrapper(nn.Module):
    """An independent count: the wrapper itself adds up batch sizes in forward, and a custom
    autograd function on its output adds them up in backward."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.forward_images = 0
        self.backward_images = 0

    def forward(self, x):
        self.forward_images += x.shape[0]
        out = self.model(x)
        if out.requires_grad:
            wrapper = self

            class Tap(torch.autograd.Function):
                @staticmethod
                def forward(ctx, t):
                    return t.view_as(t)

                @staticmethod
                def backward(ctx, g):
                    wrapper.backward_images += g.shape[0]
                    return g

            out = Tap.apply(out)
        return out


@pytest.fixture
def model():
    torch.manual_seed(0)
    return CountingWrapper(SmallCNN(num_classes=3).eval())


@pytest.mark.parametrize("method, forward, backward", [
    (lambda m, x, t: saliency(m, x, t), 1, 1),
    (lambda m, x, t: cam.grad_cam(m, x, t, layer="model.relu3"), 1, 1),
    (lambda m, x, t: smoothgrad(m, x, t, n_samples=5, chunk_size=4), 5, 5),
    (lambda m, x, t: perturbation.occlusion(m, x, t, window=16, stride=16), 5, 0),
])
def test_counts_match_an_independent_counter(model, method, forward, backward):
    x = torch.rand(3, 3, 32, 32)
    with count_passes(model) as count:
        method(model, x, [0, 1, 2])
    assert (count.forward, count.backward) == (model.forward_images, model.backward_images)
    assert (count.forward, count.backward) == (3 * forward, 3 * backward)
    assert count.per_image(3) == forward + backward


def test_no_grad_forward_counts_no_backward(model):
    with count_passes(model) as count, torch.no_grad():
        model(torch.rand(4, 3, 32, 32))
    assert count == PassCount(forward=4, backward=0)


def test_hook_removed_even_after_an_error(model):
    with pytest.raises(ValueError), count_passes(model):
        saliency(model, torch.rand(2, 3, 32, 32), [0, 1, 2])   # wrong number of targets
    assert not model._forward_hooks


def test_per_image_rejects_zero():
    with pytest.raises(ValueError, match="at least 1"):
        PassCount(3, 3).per_image(0)


def test_forward_batches_lists_each_call_in_order(model):
    with count_passes(model) as count, torch.no_grad():
        for batch in (3, 1, 2):
            model(torch.rand(batch, 3, 32, 32))
    assert count.forward_batches == [3, 1, 2] and count.forward == 6
    assert count == PassCount(forward=6, backward=0)          # the list does not take part in ==
