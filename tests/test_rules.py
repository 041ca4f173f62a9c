"""Tests for xai_helpers.rules: backward rules as objects, applied to activation modules *and*
functional calls, checked against backward passes written out by hand and against a second
implementation (torch's functional activations patched with reference autograd Functions)."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from xai_helpers import backward_rules
from xai_helpers.backward_rules import BackwardRule, Deconvnet, Gradient, Guided, as_rule, input_gradients, relu_rule
from xai_helpers.methods.gradients import deconvnet, guided_backprop, saliency

RULE_NAMES = ["gradient", "deconvnet", "guided"]


def hooks_of(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


# ----------------------------------------------------------------- the activations' derivatives
@pytest.mark.parametrize("activation, reference", [
    (backward_rules.relu(), torch.relu),
    (backward_rules.capped_relu(6.0), F.relu6),
    (backward_rules.capped_relu(2.5), lambda x: F.hardtanh(x, 0.0, 2.5)),
    (backward_rules.leaky_relu(0.2), lambda x: F.leaky_relu(x, 0.2)),
    (backward_rules.silu(), F.silu),
    (backward_rules.gelu(), F.gelu),
    (backward_rules.gelu("tanh"), lambda x: F.gelu(x, approximate="tanh")),
    (backward_rules.hardswish(), F.hardswish),
])
def test_closed_form_derivatives_match_autograd(activation, reference):
    x = (torch.randn(2000, dtype=torch.float64) * 4).requires_grad_(True)
    y = reference(x)
    (autograd,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(activation.function(x.detach()), y.detach())
    assert torch.allclose(activation.derivative(x.detach()), autograd, atol=1e-12)
    g = torch.randn(2000, dtype=torch.float64)   # the chain rule by ATen's kernel: f'(x) * g
    assert torch.allclose(activation.chain(g, x.detach()), autograd * g, atol=1e-12)


@pytest.mark.parametrize("rule", ["gradient", "guided"])
def test_signal_shortcut_gives_what_backward_defines(rule):
    """The rules written as f'(x) * s(g) give the same map through ``signal`` as through ``backward``."""
    class ByBackward(type(as_rule(rule))):
        def signal(self, g):
            return None

    net, x = Mixed().double(), torch.randn(5, 1, 2, 3, dtype=torch.float64)
    nonzero = 0
    for target in range(3):
        shortcut = input_gradients(net, x, target, backward=rule)
        assert torch.allclose(shortcut, input_gradients(net, x, target, backward=ByBackward()), atol=1e-12)
        nonzero += int(shortcut.abs().max() > 0)
    assert nonzero >= 2


# ------------------------------------------- a hand-written net mixing modules and functional calls
class Mixed(nn.Module):
    """Linear layers joined by every kind of activation call the rules know, modules and functions."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.lins = nn.ModuleList([nn.Linear(6, 6) for _ in range(9)] + [nn.Linear(6, 3)])
        self.silu, self.hardswish, self.relu6 = nn.SiLU(), nn.Hardswish(inplace=True), nn.ReLU6(inplace=True)

    # (name, activation applied to z) in forward order; the reference backward below uses the same list
    def steps(self):
        return [
            lambda z: F.relu(z),
            lambda z: self.silu(z),
            lambda z: torch.relu_(z.clone()),
            lambda z: F.gelu(z),
            lambda z: self.hardswish(z),
            lambda z: z.clamp(min=0),
            lambda z: F.leaky_relu(z, 0.1),
            lambda z: F.hardtanh(z, 0.0, 6.0),
            lambda z: self.relu6(z),
        ]

    def forward(self, x):
        h = x.flatten(1) * 3
        for lin, act in zip(self.lins, self.steps()):
            h = act(lin(h))
        return self.lins[-1](h)


def manual_backward(net, x, target, rule):
    """The backward pass written out: through each Linear by its weight, through each activation by
    the rule, with the activation's local derivative taken from torch's autograd of that activation."""
    h, pre = x.flatten(1) * 3, []
    with torch.no_grad():
        for lin, act in zip(net.lins, net.steps()):
            z = lin(h)
            pre.append(z)
            h = act(z.clone())
    g = net.lins[-1].weight[target].expand(x.shape[0], -1)
    for lin, act, z in reversed(list(zip(net.lins, net.steps(), pre))):
        zz = z.clone().requires_grad_(True)
        (derivative,) = torch.autograd.grad(act(zz.clone()).sum(), zz)   # elementwise: f'(z)
        g = {"gradient": derivative * g, "deconvnet": g.clamp_min(0), "guided": derivative * g.clamp_min(0)}[rule]
        g = g @ lin.weight
    return (3 * g).view_as(x)


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_mixed_modules_and_functional_calls_against_a_manual_backward(rule):
    net, x = Mixed().double(), torch.randn(5, 1, 2, 3, dtype=torch.float64)
    nonzero = 0
    for target in range(3):
        expected = manual_backward(net, x, target, rule)
        nonzero += int(expected.abs().sum() > 0)
        assert torch.allclose(input_gradients(net, x, target, backward=rule), expected, atol=1e-10)
    assert nonzero >= 2
    if rule == "gradient":  # the rerouted gradient is autograd's
        assert torch.allclose(input_gradients(net, x, 1, backward="gradient"), saliency(net, x, 1), atol=1e-10)
    else:
        assert not torch.allclose(input_gradients(net, x, 1, backward=rule), saliency(net, x, 1), atol=1e-6)


def test_strings_map_to_rule_objects_and_a_new_rule_is_one_class():
    assert isinstance(as_rule("guided"), Guided) and isinstance(as_rule("deconvnet"), Deconvnet)
    assert isinstance(as_rule("gradient"), Gradient) and as_rule(Guided()).name == "guided"

    class Scaled(BackwardRule):
        """A rule with a parameter: ``c * f'(x) * g``."""

        name = "scaled"

        def __init__(self, c):
            self.c = c

        def backward(self, g, derivative, x):
            return self.c * derivative * g

    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(3, 1, 1, 4)
    assert torch.allclose(input_gradients(net, x, 1, backward=Scaled(2.5)), 2.5 * saliency(net, x, 1), atol=1e-6)
    with relu_rule(net, "guided") as hooked:
        pass
    assert hooked == ["2"]


class FunctionalOnly(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(4, 4), nn.Linear(4, 2), act

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x.flatten(1))))


@pytest.mark.parametrize("method", [deconvnet, guided_backprop])
def test_a_model_without_a_known_activation_raises(method):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(NotImplementedError, match="no activation"):
        method(model, torch.randn(2, 1, 1, 4), 0)
    assert hooks_of(model) == 0


@pytest.mark.parametrize("model", [
    nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ELU(), nn.Linear(4, 2)),
    FunctionalOnly(F.elu),
    FunctionalOnly(lambda z: F.relu(F.softplus(z))),
    FunctionalOnly(lambda z: F.hardtanh(z)),          # a Hardtanh(-1, 1) is not a rectifier
], ids=["ELU module", "F.elu", "F.softplus", "F.hardtanh(-1, 1)"])
def test_an_activation_without_a_rule_raises_and_the_model_is_restored(model):
    model.train()
    x = torch.randn(2, 1, 1, 4)
    with pytest.raises(NotImplementedError, match="not defined"):
        guided_backprop(model, x, 0)
    assert hooks_of(model) == 0 and model.training and all(p.requires_grad for p in model.parameters())
    # the exact gradient rule is defined for anything: it is autograd's gradient
    assert torch.allclose(input_gradients(model, x, 0, backward="gradient"), saliency(model, x, 0), atol=1e-6)


def test_gates_keep_their_gradient():
    """Sigmoid gates (squeeze-and-excitation) are not rectifiers: no rule applies to them."""

    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = self.fc1(x.flatten(1))
            return self.fc2(F.relu(h) * torch.sigmoid(h))

    net, x = Gated().double(), torch.randn(3, 1, 1, 4, dtype=torch.float64)
    # by hand: y = W2 (relu(h) * s(h)); guided signal to h through relu and plain through the gate
    h = net.fc1(x.flatten(1)).detach()
    s = torch.sigmoid(h)
    g = net.fc2.weight[1].expand_as(h)
    to_h = (h > 0) * (g * s).clamp_min(0) + g * h.clamp_min(0) * s * (1 - s)
    said = r"modified 1 activations .* plain gradient through its gates and attention \(sigmoid x1\)"
    with pytest.warns(UserWarning, match=said):
        guided = guided_backprop(net, x, 1)
    assert torch.allclose(guided, (to_h @ net.fc1.weight).view_as(x), atol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # the plain gradient has no rule to skip: no warning
        saliency(net, x, 1)


# -------------------------------------------------------------------- torchvision architectures
class _Reference(torch.autograd.Function):
    """A second implementation of the rules: torch's own activation, its backward replaced."""

    @staticmethod
    def forward(ctx, x, fn, rule):
        ctx.save_for_backward(x)
        ctx.fn, ctx.rule = fn, rule
        return fn(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if ctx.rule == "deconvnet":
            return g.clamp_min(0), None, None
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            (out,) = torch.autograd.grad(ctx.fn(leaf), leaf, g.clamp_min(0))   # f'(x) max(g, 0)
        return out, None, None


def reference_rule(monkeypatch, model, x, target, rule):
    """Plain autograd with F.relu, F.silu, F.gelu and F.hardswish patched to follow ``rule``."""
    originals = {name: getattr(F, name) for name in ("relu", "silu", "hardswish", "gelu")}
    with monkeypatch.context() as patch:
        for name in ("relu", "silu", "hardswish"):   # f(z, inplace=False): computed out of place here
            patch.setattr(F, name, lambda z, inplace=False, _f=originals[name]: _Reference.apply(z, _f, rule))
        patch.setattr(F, "gelu", lambda z, approximate="none": _Reference.apply(
            z, lambda t: originals["gelu"](t, approximate=approximate), rule))
        return saliency(model, x, target)


ARCHITECTURES = {
    "resnet18": ({}, 64),
    "densenet121": ({}, 64),
    "googlenet": ({"aux_logits": False, "init_weights": False}, 64),
    "inception_v3": ({"aux_logits": False, "init_weights": False}, 75),
    "efficientnet_b0": ({}, 64),
    "convnext_tiny": ({}, 64),
    "mobilenet_v3_small": ({}, 64),
}


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_guided_backprop_on_torchvision_architectures(monkeypatch, arch):
    kwargs, size = ARCHITECTURES[arch]
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None, **kwargs).eval()
    if arch == "convnext_tiny":  # layer scale starts at 1e-6, which hides the GELU branches
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("layer_scale"):
                    p.fill_(1.0)
    x, target = torch.rand(2, 3, size, size), [1, 2]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        guided = guided_backprop(model, x, target)
    gates = {"efficientnet_b0": "sigmoid x16", "mobilenet_v3_small": "hardsigmoid x9"}.get(arch)
    said = [str(w.message) for w in caught if "gates" in str(w.message)]
    assert said == ([] if gates is None else [said[0]]) and (gates is None or f"({gates})" in said[0]), said
    plain = saliency(model, x, target)
    expected = reference_rule(monkeypatch, model, x, target, "guided")
    scale = expected.abs().max()
    assert scale > 0
    assert torch.allclose(guided, expected, rtol=1e-4, atol=1e-4 * scale)
    assert (guided - plain).abs().max() > 0.05 * scale                      # the rule did something
    assert hooks_of(model) == 0 and not model.training


def test_deconvnet_on_resnet18_against_the_reference(monkeypatch):
    model, x = torchvision.models.resnet18(weights=None).eval(), torch.rand(2, 3, 64, 64)
    expected = reference_rule(monkeypatch, model, x, [3, 4], "deconvnet")
    assert torch.allclose(deconvnet(model, x, [3, 4]), expected, rtol=1e-4, atol=1e-4 * expected.abs().max())


# --------------------------------------------------------------------------------- torch.compile
def test_compiled_model_follows_the_rule_after_a_hook_free_call():
    torch.manual_seed(0)
    m = torchvision.models.resnet18(weights=None).eval()
    x = torch.rand(2, 3, 64, 64)
    eager_guided, eager_deconv = guided_backprop(m, x, [1, 2]), deconvnet(m, x, [1, 2])
    c = torch.compile(m, backend="eager")
    plain = saliency(c, x, [1, 2])
    assert torch.allclose(plain, saliency(m, x, [1, 2]), atol=1e-6)
    guided = guided_backprop(c, x, [1, 2])
    assert not torch.allclose(guided, plain)
    assert torch.allclose(guided, eager_guided, atol=1e-6)
    assert torch.allclose(deconvnet(c, x, [1, 2]), eager_deconv, atol=1e-6)
    assert torch.allclose(saliency(c, x, [1, 2]), plain, atol=1e-6)     # and compiled again afterwards


def test_a_compiled_submodule_follows_the_rule():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.rand(2, 3, 8, 8)
    expected = guided_backprop(m, x, 0)
    wrapped = nn.Sequential(torch.compile(m, backend="eager"))
    saliency(wrapped, x, 0)
    assert torch.allclose(guided_backprop(wrapped, x, 0), expected, atol=1e-6)
    assert not math.isclose(float((expected - saliency(m, x, 0)).abs().max()), 0.0)
