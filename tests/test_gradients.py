"""Tests for xai_helpers.gradients: the backward rules against hand computations, batches against
single images, Integrated Gradients against completeness, and the model left as it was."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xai_helpers.backward_rules import input_gradients, relu_rule
from xai_helpers.core import completeness_error
from xai_helpers.data import sample_image
from xai_helpers.display import gradient_image, reduce_channels
from xai_helpers.methods.gradients import deconvnet, guided_backprop, guided_grad_cam, saliency, smoothgrad
from xai_helpers.methods.integrated import completeness_curve, integrated_gradients
from xai_helpers.models import SmallCNN

METHODS = {"saliency": saliency, "deconvnet": deconvnet, "guided_backprop": guided_backprop}

# The chapter's 1-D example: ReLU inputs x and the gradient g arriving at the ReLU's output.
X = [1.5, 2.0, -1.0, -0.5]
G = [0.8, -0.6, 0.4, -0.3]
BY_HAND = {
    "saliency": [0.8, -0.6, 0.0, 0.0],        # g * [x > 0]
    "deconvnet": [0.8, 0.0, 0.4, 0.0],        # max(g, 0)
    "guided_backprop": [0.8, 0.0, 0.0, 0.0],  # max(g, 0) * [x > 0]
}


def one_relu_net(activation: nn.Module, weights=G) -> nn.Module:
    """``y = sum_i w_i act(x_i)`` for an input ``[1, 1, 1, 4]``: the gradient at the activation's output is ``w``."""
    linear = nn.Linear(len(weights), 1, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([weights]))
    return nn.Sequential(nn.Flatten(), activation, linear)


def as_image(values):
    return torch.tensor(values).view(1, 1, 1, -1)


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("name", list(METHODS))
def test_one_relu_by_hand(name, inplace):
    out = METHODS[name](one_relu_net(nn.ReLU(inplace=inplace)), as_image(X), 0)
    assert torch.allclose(out.flatten(), torch.tensor(BY_HAND[name]))


def test_relu6_rules_by_hand():
    x = [1.5, 7.0, -1.0, 3.0]
    g = [0.8, 0.5, 0.4, -0.3]
    net = one_relu_net(nn.ReLU6(inplace=True), g)
    expected = {
        "saliency": [0.8, 0.0, 0.0, -0.3],          # [0 < x < 6] g
        "deconvnet": [0.8, 0.5, 0.4, 0.0],          # max(g, 0)
        "guided_backprop": [0.8, 0.0, 0.0, 0.0],    # [0 < x < 6] max(g, 0)
    }
    for name, method in METHODS.items():
        assert torch.allclose(method(net, as_image(x), 0).flatten(), torch.tensor(expected[name])), name


def test_leaky_relu_rules_by_hand():
    net = one_relu_net(nn.LeakyReLU(0.1))
    expected = {
        "saliency": [0.8, -0.6, 0.04, -0.03],       # slope(x) g
        "deconvnet": [0.8, 0.0, 0.4, 0.0],          # max(g, 0)
        "guided_backprop": [0.8, 0.0, 0.04, 0.0],   # slope(x) max(g, 0)
    }
    for name, method in METHODS.items():
        assert torch.allclose(method(net, as_image(X), 0).flatten(), torch.tensor(expected[name])), name


def mlp(inplace=False, act=nn.ReLU):
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), act(inplace=inplace), nn.Linear(5, 4),
                         act(inplace=inplace), nn.Linear(4, 3))


def backward_by_hand(net, x, target, rule):
    """The backward pass of ``mlp`` written out with the layer weights and the rule at each ReLU."""
    lin1, lin2, lin3 = net[1], net[3], net[5]
    z1 = lin1(x.flatten(1))
    z2 = lin2(z1.clamp_min(0))
    rules = {
        "saliency": lambda z, g: g * (z > 0),
        "deconvnet": lambda z, g: g.clamp_min(0),
        "guided_backprop": lambda z, g: g.clamp_min(0) * (z > 0),
    }
    g = lin3.weight[target].expand_as(z2)
    g = rules[rule](z2, g) @ lin2.weight
    g = rules[rule](z1, g) @ lin1.weight
    return g.view_as(x).detach()


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("name", list(METHODS))
def test_two_relu_layers_against_the_rules_by_hand(name, inplace):
    net = mlp(inplace)
    x = torch.randn(4, 1, 2, 3)
    for target in range(3):
        expected = backward_by_hand(net, x, target, name)
        assert expected.abs().sum() > 0
        assert torch.allclose(METHODS[name](net, x, target), expected, atol=1e-6)


def test_gradient_rule_reproduces_autograd_on_a_conv_net():
    torch.manual_seed(0)
    model, x = SmallCNN(), torch.rand(3, 3, 32, 32)
    assert torch.allclose(input_gradients(model, x, [0, 1, 2], backward="gradient"), saliency(model, x, [0, 1, 2]),
                          atol=1e-6)


def inplace_copy(model):
    """A copy of ``SmallCNN`` whose ReLUs work in place."""
    other = SmallCNN()
    other.load_state_dict(model.state_dict())
    for name in ("relu1", "relu2", "relu3"):
        setattr(other, name, nn.ReLU(inplace=True))
    return other


@pytest.mark.parametrize("name", list(METHODS))
def test_inplace_relus_give_the_same_result(name):
    torch.manual_seed(0)
    model, x = SmallCNN(), torch.rand(2, 3, 32, 32)
    assert torch.allclose(METHODS[name](model, x, 1), METHODS[name](inplace_copy(model), x, 1), atol=1e-6)


def test_a_reused_relu_module_follows_the_rule_at_each_call():
    net = mlp()
    shared = nn.Sequential(net[0], net[1], net[2], net[3], net[2], net[5])  # one ReLU module used twice
    x = torch.randn(3, 1, 2, 3)
    assert torch.allclose(guided_backprop(shared, x, 2), backward_by_hand(net, x, 2, "guided_backprop"), atol=1e-6)


@pytest.mark.parametrize("name", list(METHODS))
def test_a_batch_gives_the_results_of_single_images(name):
    torch.manual_seed(0)
    model, x, targets = SmallCNN(), torch.rand(3, 3, 32, 32), [2, 0, 1]
    batch = METHODS[name](model, x, targets)
    single = torch.cat([METHODS[name](model, x[i:i + 1], targets[i]) for i in range(3)])
    assert torch.allclose(batch, single, atol=1e-6)


class FunctionalReLUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc(F.relu(x.flatten(1)))


def test_functional_relu_follows_the_rule():
    """Issue 11, item 1: F.relu was not hooked and guided backprop returned the plain gradient."""
    net, x = FunctionalReLUNet(), as_image(X)
    with torch.no_grad():
        net.fc.weight.copy_(torch.tensor([G]))
    for name, method in METHODS.items():
        assert torch.allclose(method(net, x, 0).flatten(), torch.tensor(BY_HAND[name])), name


def test_silu_modules_follow_the_rule():
    """SiLU used to keep its plain gradient (with a warning): guided is f'(x) max(g, 0) there."""
    net = one_relu_net(nn.SiLU())
    x = torch.tensor(X)
    s = torch.sigmoid(x)
    derivative = s * (1 + x * (1 - s))
    g = torch.tensor(G)
    assert torch.allclose(guided_backprop(net, as_image(X), 0).flatten(), derivative * g.clamp_min(0))
    assert torch.allclose(deconvnet(net, as_image(X), 0).flatten(), g.clamp_min(0))
    assert torch.allclose(saliency(net, as_image(X), 0).flatten(), derivative * g)


def test_unknown_rule():
    with pytest.raises(ValueError, match="unknown rule"), relu_rule(mlp(), "positive"):
        pass


def hooks_of(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.mark.parametrize("name", list(METHODS))
def test_model_is_left_exactly_as_it_was(name):
    torch.manual_seed(0)
    model = inplace_copy(SmallCNN()).train()
    model.conv1.weight.requires_grad_(False)
    modules = list(model.named_modules())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    METHODS[name](model, torch.rand(2, 3, 32, 32), 0)
    assert list(model.named_modules()) == modules
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == [False] + [True] * (len(list(model.parameters())) - 1)
    assert all(p.grad is None for p in model.parameters())
    assert hooks_of(model) == 0


def test_hooks_are_removed_after_an_error():
    model = SmallCNN()
    with pytest.raises(ValueError, match="out of range"):
        guided_backprop(model, torch.rand(1, 3, 32, 32), 7)
    assert hooks_of(model) == 0
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("method", [saliency, deconvnet, guided_backprop, smoothgrad, integrated_gradients])
def test_wrong_number_of_targets(method):
    with pytest.raises(ValueError, match="one target per image"):
        method(SmallCNN(), torch.rand(3, 3, 32, 32), [0, 1])


def test_x_is_not_modified_and_needs_no_grad():
    x = torch.rand(2, 3, 32, 32)
    before = x.clone()
    saliency(SmallCNN(), x, 0)
    assert torch.equal(x, before) and not x.requires_grad and x.grad is None


def test_guided_grad_cam_is_guided_backprop_times_the_upsampled_grad_cam():
    """Selvaraju et al.: GB * up(ReLU(sum_k alpha_k A^k)), the CAM *not* min-max scaled (issue 11, item 7)."""
    torch.manual_seed(0)
    model, x, targets = SmallCNN().eval(), torch.rand(2, 3, 32, 32), [0, 2]
    # the CAM by hand, from the layer's activations and plain autograd
    captured = {}
    handle = model.relu3.register_forward_hook(lambda m, i, o: captured.setdefault("A", o))
    try:
        scores = model(x)[[0, 1], targets]
    finally:
        handle.remove()
    (grads,) = torch.autograd.grad(scores.sum(), captured["A"])
    cam = (grads.mean((2, 3), keepdim=True) * captured["A"]).sum(1, keepdim=True).clamp_min(0)
    cam = F.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False).detach()
    assert (cam.flatten(1).amax(1) < 0.5).all()        # so min-max scaling to [0, 1] would change the product
    expected = guided_backprop(model, x, targets) * cam
    assert torch.allclose(guided_grad_cam(model, x, targets, layer="relu3"), expected, rtol=1e-5, atol=1e-9)


def test_smoothgrad_is_seeded_batched_and_independent_of_the_batch():
    torch.manual_seed(0)
    model, x = SmallCNN(), torch.rand(3, 3, 16, 16)
    a = smoothgrad(model, x, [0, 1, 2], n_samples=5, chunk_size=4, seed=3)
    assert torch.allclose(a, smoothgrad(model, x, [0, 1, 2], n_samples=5, chunk_size=1, seed=3), atol=1e-6)
    assert torch.allclose(a[1:2], smoothgrad(model, x[1:2], 1, n_samples=5, seed=3), atol=1e-6)
    assert not torch.allclose(a, smoothgrad(model, x, [0, 1, 2], n_samples=5, seed=4))


def test_smoothgrad_by_hand():
    """The mean of the saliency maps of the noisy images, drawn with the same generator."""
    torch.manual_seed(0)
    model, x = SmallCNN(), torch.rand(1, 3, 16, 16)
    eps = torch.randn((4, 3, 16, 16), generator=torch.Generator().manual_seed(7))
    sigma = 0.2 * (x.max() - x.min())
    expected = torch.stack([saliency(model, x + sigma * e, 0)[0] for e in eps]).mean(0, keepdim=True)
    assert torch.allclose(smoothgrad(model, x, 0, n_samples=4, noise=0.2, seed=7), expected, atol=1e-6)


def test_smoothgrad_without_noise_and_with_another_method():
    torch.manual_seed(0)
    model, x = SmallCNN(), torch.rand(2, 3, 32, 32)
    assert torch.allclose(smoothgrad(model, x, 1, n_samples=3, noise=0.0), saliency(model, x, 1), atol=1e-6)
    assert torch.allclose(smoothgrad(model, x, 1, n_samples=3, noise=0.0, method=guided_backprop),
                          guided_backprop(model, x, 1), atol=1e-6)


def test_integrated_gradients_of_a_linear_model_are_exact():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x, base = torch.rand(2, 3, 2, 2), torch.rand(1, 3, 2, 2)
    for rule, steps in (("gauss-legendre", 1), ("trapezoid", 2), ("riemann", 1)):
        ig = integrated_gradients(net, x, [1, 2], baseline=base, steps=steps, quadrature=rule)
        assert torch.allclose(ig, (x - base) * net[1].weight[[1, 2]].view(2, 3, 2, 2), atol=1e-6)


@pytest.mark.parametrize("rule", ["gauss-legendre", "trapezoid", "riemann"])
def test_integrated_gradients_completeness_error_shrinks_with_the_steps(rule, smooth_net):
    net, x = smooth_net(3), torch.rand(2, 3, 8, 8, dtype=torch.float64) * 4
    errors = [completeness_error(net, x, [0, 2], integrated_gradients(net, x, [0, 2], steps=s, quadrature=rule)).abs()
              for s in (2, 8, 32, 128)]
    gap = completeness_error(net, x, [0, 2], torch.zeros_like(x)).abs()     # f(x) - f(0)
    assert (gap > 0.02).all()
    for coarse, fine in zip(errors, errors[1:]):
        assert (fine < coarse).all() or (fine < 1e-12 * gap).all()    # shrinks, or already at rounding
    assert (errors[-1] < 0.02 * gap).all()
    # 4x the steps: the error falls about 16x (trapezoid, O(1/m^2)) or 4x (right Riemann sum, O(1/m));
    # Gauss-Legendre on a smooth integrand converges faster than any power (down to rounding)
    if rule == "gauss-legendre":
        assert (errors[-2] < 1e-6 * gap).all()
    else:
        assert (errors[-2] / errors[-1] > {"trapezoid": 10, "riemann": 3}[rule]).all()


def test_completeness_curve_matches_integrated_gradients(smooth_net):
    net, x = smooth_net(3), torch.rand(2, 3, 8, 8, dtype=torch.float64)
    base = torch.full_like(x, 0.5)
    finest, curve = completeness_curve(net, x, 1, steps=(2, 4, 8), baseline=base)
    assert torch.allclose(finest, integrated_gradients(net, x, 1, baseline=base, steps=8))
    for s, error in curve.items():
        ig = integrated_gradients(net, x, 1, baseline=base, steps=s)
        assert torch.allclose(error, completeness_error(net, x, 1, ig, baseline=base), atol=1e-5)
    # any numbers of steps, and the other quadratures (the trapezoid grids share their nodes)
    finest, curve = completeness_curve(net, x, 1, steps=(3, 8, 5), baseline=base, quadrature="trapezoid")
    assert list(curve) == [3, 5, 8]
    assert torch.allclose(finest, integrated_gradients(net, x, 1, baseline=base, steps=8, quadrature="trapezoid"))
    ig = integrated_gradients(net, x, 1, baseline=base, steps=3, quadrature="trapezoid")
    assert torch.allclose(curve[3], completeness_error(net, x, 1, ig, baseline=base), atol=1e-9)


def test_integrated_gradients_batch_and_chunk_size():
    torch.manual_seed(0)
    model, x = SmallCNN(), torch.rand(3, 3, 16, 16)
    a = integrated_gradients(model, x, [0, 1, 2], steps=6, chunk_size=5)
    assert torch.allclose(a, integrated_gradients(model, x, [0, 1, 2], steps=6, chunk_size=100), atol=1e-6)
    assert torch.allclose(a[2:], integrated_gradients(model, x[2:], 2, steps=6), atol=1e-6)


def test_reduce_channels_and_gradient_image():
    a = torch.tensor([[[[1.0, -4.0]], [[-3.0, 2.0]], [[0.0, 0.0]]]])  # [1, 3, 1, 2]
    assert torch.equal(reduce_channels(a, "max", rescale=False), torch.tensor([[[3.0, 4.0]]]))
    assert torch.equal(reduce_channels(a, "sum", rescale=False), torch.tensor([[[4.0, 6.0]]]))
    assert torch.allclose(reduce_channels(a, "l2", rescale=False), torch.tensor([[[10.0, 20.0]]]).sqrt())
    assert torch.equal(reduce_channels(a), torch.tensor([[[0.0, 1.0]]]))
    image = gradient_image(torch.randn(2, 3, 8, 8))
    assert image.shape == (2, 3, 8, 8) and image.min() >= 0 and image.max() <= 1
    assert torch.equal(gradient_image(torch.zeros(1, 3, 4, 4)), torch.full((1, 3, 4, 4), 0.5))
    offset = torch.randn(1, 3, 4, 4) + torch.tensor([5.0, -2.0, 1.0]).view(1, 3, 1, 1)
    centred = offset - offset.mean((2, 3), keepdim=True)
    assert torch.allclose(gradient_image(offset, center=True), gradient_image(centred))


@pytest.mark.parametrize("method", [saliency, deconvnet, guided_backprop, smoothgrad, integrated_gradients,
                                    lambda m, x, t: guided_grad_cam(m, x, t, layer="relu3")])
def test_results_do_not_require_grad_even_when_x_does(method):
    """Issue 11, item 6: integrated_gradients returned a tensor that required grad."""
    x = torch.rand(2, 3, 16, 16).requires_grad_(True)
    out = method(SmallCNN(), x, [0, 1])
    assert not out.requires_grad and out.grad_fn is None and x.grad is None


def test_efficientnet_hooks_every_relu6_and_stays_untouched(lite0):
    x = sample_image("cat", size=64)
    state = {k: v.clone() for k, v in lite0.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with relu_rule(lite0, "guided") as hooked:
            pass
        plain = input_gradients(lite0, x, 285, backward="gradient")
        guided = guided_backprop(lite0, x, 285)
    assert len(hooked) == sum(isinstance(m, nn.ReLU6) for m in lite0.modules()) == 33
    assert torch.allclose(plain, saliency(lite0, x, 285), atol=1e-5)
    assert guided.abs().sum() > 0 and not torch.allclose(guided, plain)
    assert all(torch.equal(v, lite0.state_dict()[k]) for k, v in state.items())
    assert hooks_of(lite0) == 0 and not lite0.training
    assert all(p.requires_grad and p.grad is None for p in lite0.parameters())
