"""Tests for xai_helpers.propagation: every rule against a brute-force, layer-by-layer reference
written here with dense matrices (no hooks, no gradient trick), closed forms by hand, conservation,
summation-to-delta, and state safety."""
import pytest
import torch
import torch.nn.functional as F
from model_state import assert_untouched, snapshot
from torch import nn

from xai_helpers.core import completeness_error
from xai_helpers.methods.integrated import integrated_gradients
from xai_helpers.methods.propagation import deeplift, gradient_x_input, lrp, lrp_with_layers
from xai_helpers.models import Normalize
from xai_helpers.relevance.canonizers import merge_batchnorm
from xai_helpers.relevance.composites import Composite, epsilon_gamma_box, uniform
from xai_helpers.relevance.rules import STABILIZER, AlphaBetaRule, EpsilonRule, GammaRule, ZBoxRule, ZeroRule, ZPlusRule

STAB = STABILIZER


# ------------------------------------------------------------------------------------------------
# A tiny network with every part of EfficientNet-Lite0: Normalize, conv + BN + ReLU6, depthwise
# conv + BN + ReLU6, 1x1 projection + BN, a residual sum, adaptive average pooling, a linear layer.
# ------------------------------------------------------------------------------------------------
class Tiny(nn.Module):
    def __init__(self, inplace: bool = False):
        super().__init__()
        self.normalize = Normalize((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU6(inplace=inplace))
        self.dw = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(4),
                                nn.ReLU6(inplace=inplace))
        self.proj = nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        a1 = self.stem(self.normalize(x))
        s = a1 + self.proj(self.dw(a1))
        return self.fc(self.flatten(self.pool(s)))


def tiny(seed: int = 0, inplace: bool = False) -> Tiny:
    torch.manual_seed(seed)
    model = Tiny(inplace)
    with torch.no_grad():
        model.stem[0].weight.mul_(3)            # so that some ReLU6 units saturate above 6
        for bn in (model.stem[1], model.dw[1], model.proj[1]):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    return model.double().eval()          # float64: the comparisons are not blurred by rounding


def dense(module: nn.Module, in_shape) -> torch.Tensor:
    """The matrix ``[out, in]`` of a conv/linear layer's weight part (bias left out), column by column."""
    n = torch.Size(in_shape).numel()
    basis = torch.eye(n, dtype=module.weight.dtype).view(n, *in_shape)
    if isinstance(module, nn.Conv2d):
        out = F.conv2d(basis, module.weight, None, module.stride, module.padding, module.dilation, module.groups)
    else:
        out = F.linear(basis, module.weight)
    return out.reshape(n, -1).T.detach()


def merged(conv: nn.Conv2d, bn: nn.BatchNorm2d, in_shape, hw: int):
    """Dense weight and bias of conv followed by eval-mode batch norm (written out independently)."""
    W = dense(conv, in_shape)
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    b = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=W.dtype)
    bias = (b - bn.running_mean) * scale + bn.bias.detach()
    return scale.repeat_interleave(hw)[:, None] * W, bias.repeat_interleave(hw)


def reference_layers(model: Tiny, x: torch.Tensor):
    """Dense matrices and the forward values of ``model`` for one image ``x [1, 3, H, W]``."""
    _, c, h, w = x.shape
    hw = h * w
    mean, std = model.normalize.mean.flatten(), model.normalize.std.flatten()
    xn = ((x[0] - mean[:, None, None]) / std[:, None, None]).flatten()
    W1, b1 = merged(model.stem[0], model.stem[1], (3, h, w), hw)
    W2, b2 = merged(model.dw[0], model.dw[1], (4, h, w), hw)
    W3, b3 = merged(model.proj[0], model.proj[1], (4, h, w), hw)
    Pm = torch.kron(torch.eye(4, dtype=x.dtype), torch.full((1, hw), 1.0 / hw, dtype=x.dtype))
    W4, b4 = model.fc.weight.detach(), model.fc.bias.detach()
    z1 = W1 @ xn + b1
    a1 = z1.clamp(0, 6)
    z2 = W2 @ a1 + b2
    a2 = z2.clamp(0, 6)
    z3 = W3 @ a2 + b3
    s = a1 + z3
    p = Pm @ s
    y = W4 @ p + b4
    return dict(xn=xn, W1=W1, b1=b1, W2=W2, b2=b2, W3=W3, b3=b3, P=Pm, W4=W4, b4=b4,
                z1=z1, a1=a1, z2=z2, a2=a2, z3=z3, s=s, p=p, y=y, std=std, hw=hw)


def stab(d):
    return d + STAB * torch.where(d >= 0, 1.0, -1.0)


def ref_rule(rule: str, W, b, x, R, low=None, high=None, eps=0.1, gamma=0.25, alpha=2.0, beta=1.0):
    """One layer of LRP by its textbook formula, with the contribution matrix ``C_kj = w_kj x_j``."""
    C = W * x[None, :]
    z = C.sum(1) + b
    if rule == "zero":
        Z, d = C, z
    elif rule == "epsilon":
        Z, d = C, z + eps * torch.where(z >= 0, 1.0, -1.0)
    elif rule == "gamma":
        pos = (z >= 0)[:, None]
        extra = torch.where(pos, C.clamp(min=0), C.clamp(max=0))
        extra_b = torch.where(pos[:, 0], b.clamp(min=0), b.clamp(max=0))
        Z, d = C + gamma * extra, z + gamma * (extra.sum(1) + extra_b)
    elif rule == "zplus":
        Z = C.clamp(min=0)
        d = Z.sum(1)
    elif rule == "alphabeta":
        Cp, Cn = C.clamp(min=0), C.clamp(max=0)
        return ((alpha * Cp / stab(Cp.sum(1))[:, None] - beta * Cn / stab(Cn.sum(1))[:, None]) * R[:, None]).sum(0)
    elif rule == "zbox":
        Z = C - W.clamp(min=0) * low[None, :] - W.clamp(max=0) * high[None, :]
        d = Z.sum(1)
    else:
        raise ValueError(rule)
    if rule in ("zero", "epsilon"):   # LRP-0 is the plain gradient; epsilon is its own stabiliser
        return (Z / d[:, None] * R[:, None]).sum(0)
    return (Z / stab(d)[:, None] * R[:, None]).sum(0)


def reference_lrp(model: Tiny, x: torch.Tensor, target: int, rules: dict[str, str], eps: float = 0.1):
    """LRP on ``Tiny`` layer by layer; ``rules`` has keys stem, dw, proj, pool, fc."""
    L = reference_layers(model, x)
    mean, std = model.normalize.mean.flatten(), model.normalize.std.flatten()
    hw = L["hw"]
    low = (-mean / std).repeat_interleave(hw)           # pixel 0 and 1 after Normalize
    high = ((1 - mean) / std).repeat_interleave(hw)
    R_y = torch.zeros(3, dtype=x.dtype)
    R_y[target] = L["y"][target]
    R_p = ref_rule(rules["fc"], L["W4"], L["b4"], L["p"], R_y, eps=eps)
    R_s = ref_rule(rules["pool"], L["P"], torch.zeros(4, dtype=x.dtype), L["s"], R_p, eps=eps)
    R_skip = L["a1"] / L["s"] * R_s                    # the residual sum splits in proportion
    R_z3 = L["z3"] / L["s"] * R_s
    R_a2 = ref_rule(rules["proj"], L["W3"], L["b3"], L["a2"], R_z3, eps=eps)
    R_a1 = R_skip + ref_rule(rules["dw"], L["W2"], L["b2"], L["a1"], R_a2, eps=eps)   # ReLU6 passes R on
    R_x = ref_rule(rules["stem"], L["W1"], L["b1"], L["xn"], R_a1, low=low, high=high, eps=eps)
    return R_x.view(x.shape), L


LIB_RULES = {"zero": ZeroRule(), "epsilon": EpsilonRule(0.1), "gamma": GammaRule(0.25),
             "zplus": ZPlusRule(), "alphabeta": AlphaBetaRule(2.0, 1.0)}


def image(seed=1, size=5):
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_reference_forward_is_the_model():
    model, x = tiny(), image()
    L = reference_layers(model, x)
    torch.testing.assert_close(L["y"], model(x)[0], rtol=1e-5, atol=1e-5)
    assert (L["z1"] > 6).any() and (L["z1"] < 0).any()   # the ReLU6 saturates somewhere


@pytest.mark.parametrize("name", list(LIB_RULES))
def test_each_rule_matches_the_brute_force_reference(name):
    model, x = tiny(), image()
    rule = LIB_RULES[name]
    pool = name if name in ("zero", "epsilon") else "zero"
    expected, _ = reference_lrp(model, x, 1, {"stem": name, "dw": name, "proj": name, "pool": pool, "fc": name})
    got = lrp(model, x, 1, composite=uniform(rule))
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", list(LIB_RULES))
def test_zbox_at_the_input_matches_the_reference(name):
    model, x = tiny(), image(2)
    pool = name if name in ("zero", "epsilon") else "zero"
    expected, _ = reference_lrp(model, x, 2, {"stem": "zbox", "dw": name, "proj": name, "pool": pool, "fc": name})
    got = lrp(model, x, 2, composite=uniform(LIB_RULES[name], first=ZBoxRule(0.0, 1.0)))
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-9)


def test_the_default_composite_follows_montavon():
    model, x = tiny(), image(3)
    composite = epsilon_gamma_box(epsilon=0.1, gamma=0.25)
    names = {n: type(r).__name__ for n, r in composite.rules(model).items()}
    assert names == {"stem.0": "ZBoxRule", "dw.0": "GammaRule", "proj.0": "EpsilonRule", "fc": "ZeroRule",
                     "pool": "ZeroRule"}
    expected, _ = reference_lrp(model, x, 0, {"stem": "zbox", "dw": "gamma", "proj": "epsilon", "pool": "zero",
                                              "fc": "zero"})
    torch.testing.assert_close(lrp(model, x, 0, composite=composite), expected, rtol=1e-7, atol=1e-9)


def test_gamma_hands_a_layer_with_signed_input_to_its_signed_input_rule():
    # In Tiny, the stem reads the normalised image (signed), dw and proj read ReLU6 outputs (x >= 0).
    model, x = tiny(), image(3)
    composite = uniform(GammaRule(0.25, signed_input=EpsilonRule(0.1)))
    L = reference_layers(model, x)
    assert (L["xn"] < 0).any() and (L["a1"] >= 0).all() and (L["a2"] >= 0).all()
    fc = "epsilon" if (L["p"] < 0).any() else "gamma"
    expected, _ = reference_lrp(model, x, 1, {"stem": "epsilon", "dw": "gamma", "proj": "gamma", "pool": "zero",
                                              "fc": fc})
    torch.testing.assert_close(lrp(model, x, 1, composite=composite), expected, rtol=1e-7, atol=1e-9)
    all_gamma, _ = reference_lrp(model, x, 1, {"stem": "gamma", "dw": "gamma", "proj": "gamma", "pool": "zero",
                                               "fc": "gamma"})
    assert (expected - all_gamma).abs().max() > 1e-3, "the test must tell the two apart"
    with pytest.raises(ValueError, match="signed_input"):
        GammaRule(0.25, signed_input=GammaRule(0.5))


def test_a_batch_gives_the_results_of_single_images():
    model = tiny()
    x = torch.cat([image(1), image(2)])
    both = lrp(model, x, [0, 2])
    torch.testing.assert_close(both[1:], lrp(model, x[1:], 2), rtol=1e-5, atol=1e-6)
    assert both.shape == x.shape and not both.requires_grad


# ------------------------------------------------------------------------------------------------
# By hand: a two-layer network with numbers worked out on paper
# ------------------------------------------------------------------------------------------------
def two_layer():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 2, bias=False), nn.ReLU(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -1.0, 2.0], [-1.0, 1.0, 1.0]]))
        model[3].weight.copy_(torch.tensor([[2.0, 1.0], [-1.0, 3.0]]))
    return model.eval(), torch.tensor([1.0, 0.5, 0.25]).view(1, 3, 1, 1)


# x = (1, 1/2, 1/4); z1 = (1, -1/4), a1 = (1, 0); y = (2, -1); explain class 0, R = y_0 = 2.
# The hidden layer gets R(a1) = (2, 0) (LRP-0: unit 0 is the only contributor), except for epsilon.
# Input layer, hidden unit 0, contributions x_j w_0j = (1, -1/2, 1/2), z = 1:
BY_HAND = {
    "zero": (ZeroRule(), [2.0, -1.0, 1.0]),                                  # (1, -1/2, 1/2) / 1 * 2
    "epsilon": (EpsilonRule(0.5), [16 / 15, -8 / 15, 8 / 15]),              # R(a1)=2*2/2.5; / 1.5
    "gamma": (GammaRule(0.5), [12 / 7, -4 / 7, 6 / 7]),                     # (1.5,-.5,.75)/1.75*2
    "zplus": (ZPlusRule(), [4 / 3, 0.0, 2 / 3]),                            # (1, 0, 1/2)/1.5*2
    "alphabeta": (AlphaBetaRule(2, 1), [8 / 3, -2.0, 4 / 3]),               # 2*(2/3,0,1/3)*2-(0,1,0)*2
    "zbox": (ZBoxRule(0, 1), [1.0, 0.5, 0.5]),                              # x w - 0 w+ - 1 w-
}


@pytest.mark.parametrize("name", list(BY_HAND))
def test_two_layer_network_by_hand(name):
    model, x = two_layer()
    rule, expected = BY_HAND[name]
    # the rule on the input layer; the top layer keeps LRP-0 (epsilon: epsilon everywhere)
    composite = uniform(rule) if name == "epsilon" else Composite(first=rule)
    got = lrp(model, x, 0, composite=composite).flatten()
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_two_layer_network_deeplift_and_gradient_x_input_by_hand():
    model, x = two_layer()
    # zero reference: ReLU multiplier (1 - 0)/(1 - 0) = 1 on unit 0; 2 * (1, -1, 2) * x = (2, -1, 1)
    expected = torch.tensor([2.0, -1.0, 1.0])
    torch.testing.assert_close(deeplift(model, x, 0).flatten(), expected)
    torch.testing.assert_close(gradient_x_input(model, x, 0).flatten(), expected)
    # reference (1, 1, 1): z1_ref = (2, 1), a1_ref = (2, 1); multipliers (1-2)/(1-2) = 1, (0-1)/(-1/4-1) = 4/5
    # m = 2 * 1 * (1,-1,2) + 1 * 4/5 * (-1,1,1) = (6/5, -6/5, 24/5); dx = (0, -1/2, -3/4)
    got = deeplift(model, x, 0, baseline=1.0).flatten()
    torch.testing.assert_close(got, torch.tensor([0.0, 0.6, -3.6]))
    assert abs(got.sum().item() - (2.0 - 5.0)) < 1e-6          # y(x) - y(x_ref) = 2 - (2*2 + 1)


# ------------------------------------------------------------------------------------------------
# Conservation and summation to delta
# ------------------------------------------------------------------------------------------------
def chain(inplace=False):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.ReLU(inplace=inplace),
                          nn.Conv2d(6, 8, 3, padding=1, groups=2, bias=False), nn.ReLU(inplace=inplace),
                          nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 5, bias=False))
    return model.eval()


def test_lrp0_conserves_relevance_layer_by_layer_without_biases():
    model, x = chain(), torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        y = model(x)[torch.arange(2), torch.tensor([1, 3])]
    R, layers = lrp_with_layers(model, x, [1, 3], composite=uniform(ZeroRule()), record=["1", "3", "4", "6"])
    for name in ["6", "4", "3", "1"]:
        torch.testing.assert_close(layers[name].flatten(1).sum(1), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(R.flatten(1).sum(1), y, rtol=1e-5, atol=1e-5)
    # LRP-0 on a bias-free ReLU chain without preprocessing is gradient x input
    torch.testing.assert_close(R, gradient_x_input(model, x, [1, 3]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["zplus", "alphabeta", "gamma"])
def test_other_rules_conserve_too_without_biases(name):
    model, x = chain(), torch.rand(1, 3, 8, 8) + 0.1
    y = model(x)[0, 2].item()
    R = lrp(model, x, 2, composite=uniform(LIB_RULES[name]))
    assert abs(R.sum().item() - y) < 1e-4 * max(1, abs(y))


def test_epsilon_leaks_the_stated_amount_at_the_top_layer():
    model, x = chain(), torch.rand(1, 3, 8, 8)
    eps = 0.3
    y = model(x)[0, 0].item()
    _, layers = lrp_with_layers(model, x, 0, composite=Composite(last=EpsilonRule(eps)), record=["5"])
    # sum_j R_j = y * y / (y + eps sign y): the rest stays with epsilon
    expected = y * y / (y + eps * (1 if y >= 0 else -1))
    assert abs(layers["5"].sum().item() - expected) < 1e-5


def test_residual_sum_conserves_relevance():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 3, 3, padding=1, bias=False)
            self.act = nn.ReLU()
            self.b = nn.Conv2d(3, 3, 1, bias=False)
            self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(3, 2, bias=False)

        def forward(self, x):
            h = self.act(self.a(x))
            return self.fc(self.pool(h + self.b(h)).flatten(1))

    torch.manual_seed(0)
    model, x = Res().eval(), torch.rand(1, 3, 6, 6)
    y = model(x)[0, 1].item()
    R, layers = lrp_with_layers(model, x, 1, composite=uniform(ZeroRule()), record=["act", "b", "pool"])
    assert abs(layers["pool"].sum().item() - y) < 1e-5
    # the block's input h gets the skip share plus what comes back through b: everything
    assert abs(layers["act"].sum().item() - y) < 1e-5
    assert abs(R.sum().item() - y) < 1e-5
    assert abs(layers["b"].sum().item()) < abs(y) + 1e-5       # b got its share only


class InputSkip(nn.Module):
    """The image reaches the pooled sum twice: through ``conv`` and directly (``h + x``)."""

    def __init__(self):
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.ReLU()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(3, 2, bias=False)

    def forward(self, x):
        return self.fc(self.pool(self.act(self.conv(x) + x)).flatten(1))


def test_lrp_refuses_a_model_whose_input_bypasses_the_first_layer():
    torch.manual_seed(0)
    model, x = InputSkip().eval(), torch.rand(2, 3, 6, 6)
    with pytest.raises(ValueError, match="bypasses 'conv', the first linear layer.*deeplift"):
        lrp(model, x, 1, composite=uniform(ZeroRule()))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    # the same layers without the skip are accepted, and conserve (a control: the skip is what is refused)
    skip_free = InputSkip().eval()
    skip_free.forward = lambda z: skip_free.fc(skip_free.pool(skip_free.act(skip_free.conv(z))).flatten(1))
    skip_free.load_state_dict(model.state_dict())
    R = lrp(skip_free, x, 1, composite=uniform(ZeroRule()))
    assert torch.allclose(R.flatten(1).sum(1), skip_free(x)[:, 1], atol=1e-5)
    # DeepLIFT follows every path, so summation to delta holds on the skip model
    attributions = deeplift(model, x, 1)
    assert completeness_error(model, x, 1, attributions).abs().max() < 1e-5


def test_deeplift_summation_to_delta_and_reference():
    model = tiny()
    x, ref = image(4), image(5)
    for reference in (0.0, ref, 0.5):
        attributions = deeplift(model, x, 1, baseline=reference)
        assert abs(completeness_error(model, x, 1, attributions, baseline=reference).item()) < 1e-5
    assert torch.equal(deeplift(model, x, 1), deeplift(model, x, 1, baseline=0.0))    # the default: black
    with pytest.raises(ValueError, match="no reference"):       # None means "no reference", not black
        deeplift(model, x, 1, baseline=None)


def test_deeplift_matches_the_dense_reference():
    model, x, ref = tiny(), image(6), image(7)
    L, Lr = reference_layers(model, x), reference_layers(model, ref)

    def rescale(z, zr):
        dz = z - zr
        slope = ((z > 0) & (z < 6)).to(z)
        return torch.where(dz.abs() < 1e-6, slope, (z.clamp(0, 6) - zr.clamp(0, 6)) / dz)

    D1, D2 = torch.diag(rescale(L["z1"], Lr["z1"])), torch.diag(rescale(L["z2"], Lr["z2"]))
    M = L["W4"] @ L["P"] @ (torch.eye(D1.shape[0], dtype=x.dtype) + L["W3"] @ D2 @ L["W2"]) @ D1 @ L["W1"]
    m_pixels = M[0] / L["std"].repeat_interleave(L["hw"])
    expected = ((x - ref).flatten() * m_pixels).view(x.shape)
    torch.testing.assert_close(deeplift(model, x, 0, baseline=ref), expected, rtol=1e-4, atol=1e-6)


def test_gradient_x_input_is_one_step_integrated_gradients_and_the_dense_jacobian():
    model, x = tiny(), image(8)
    gxi = gradient_x_input(model, x, 2)
    ig = integrated_gradients(model, x, 2, steps=1, quadrature="riemann")
    torch.testing.assert_close(gxi, ig, rtol=1e-5, atol=1e-7)
    L = reference_layers(model, x)
    d1 = torch.diag(((L["z1"] > 0) & (L["z1"] < 6)).double())
    d2 = torch.diag(((L["z2"] > 0) & (L["z2"] < 6)).double())
    J = L["W4"] @ L["P"] @ (torch.eye(d1.shape[0], dtype=x.dtype) + L["W3"] @ d2 @ L["W2"]) @ d1 @ L["W1"]
    expected = x.flatten() * J[2] / L["std"].repeat_interleave(L["hw"])
    torch.testing.assert_close(gxi, expected.view(x.shape), rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# The model is left as it was
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [lrp, deeplift, gradient_x_input])
def test_model_is_left_exactly_as_it_was(method):
    model = tiny().train()
    model.fc.weight.requires_grad_(False)
    snap = snapshot(model)
    method(model, image(), 0)
    assert_untouched(model, snap)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("method", [lrp, deeplift])
def test_model_is_restored_after_an_error(method):
    model = tiny().train()
    snap = snapshot(model)
    with pytest.raises(ValueError, match="out of range"):
        method(model, image(), 7)                         # fails after the forward pass
    assert_untouched(model, snap)
    with pytest.raises(RuntimeError):
        method(model, torch.rand(1, 4, 5, 5, dtype=torch.float64), 0)          # fails inside the forward pass
    assert_untouched(model, snap)


def test_merge_batchnorm_keeps_the_function_and_restores_exactly():
    model, x = tiny(), image()
    snap = snapshot(model)
    before = model(x)
    weights = [p for p in model.parameters()]
    with merge_batchnorm(model) as pairs:
        assert pairs == [("stem.0", "stem.1"), ("dw.0", "dw.1"), ("proj.0", "proj.1")]
        torch.testing.assert_close(model(x), before, rtol=1e-10, atol=1e-12)
        assert model.dw[0].bias is not None and model.dw[0].weight is not weights[2]
        t = torch.randn(1, 4, 2, 2, dtype=torch.float64)
        assert model.dw[1](t) is t                         # the batch norm is skipped
    assert_untouched(model, snap)
    assert model.dw[0].bias is None and "forward" not in model.dw[1].__dict__
    assert all(p is q for p, q in zip(model.parameters(), weights))
    assert torch.equal(model(x), before)


@pytest.mark.parametrize("method", [lrp, deeplift])
def test_inplace_activations_give_the_same_result(method):
    x = image()
    torch.testing.assert_close(method(tiny(inplace=True), x, 1), method(tiny(inplace=False), x, 1))


def test_inplace_relu_chain():
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(lrp(chain(True), x, 0, composite=uniform(GammaRule())),
                               lrp(chain(False), x, 0, composite=uniform(GammaRule())))


def test_max_pooling_is_winner_takes_all():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 3 * 3, 2, bias=False)).eval()
    x = torch.rand(1, 3, 6, 6)
    R, layers = lrp_with_layers(model, x, 0, composite=uniform(ZeroRule()), record=["1", "2"])
    assert abs(R.sum().item() - model(x)[0, 0].item()) < 1e-5
    rel_relu = layers["1"][0]
    # within each 2x2 window only the maximum keeps relevance
    windows = F.unfold(rel_relu, 2, stride=2).view(4, 4, -1)
    assert ((windows != 0).sum(1) <= 1).all()


# ------------------------------------------------------------------------------------------------
# Clear errors
# ------------------------------------------------------------------------------------------------
def test_unsupported_modules_are_named():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ValueError, match=r"'1' \(SiLU\)"):
        lrp(model, torch.rand(1, 3, 5, 5), 0)

    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x * self.s

    model = nn.Sequential(nn.Conv2d(3, 4, 3), Scale(), nn.Flatten(), nn.Linear(36, 2))
    with pytest.raises(ValueError, match=r"'1' \(Scale\).*parameters"):
        deeplift(model, torch.rand(1, 3, 5, 5), 0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(36, 2))
    with pytest.raises(ValueError, match="GELU"):
        lrp(model, torch.rand(1, 3, 5, 5), 0)
    assert not model[0]._forward_hooks


def test_batchnorm_without_a_preceding_layer_is_refused():
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 2, 1), nn.Flatten(), nn.Linear(2 * 25, 2)).eval()
    with pytest.raises(ValueError, match=r"batch norm '0'"):
        lrp(model, torch.rand(1, 3, 5, 5), 0)


def test_bad_rules_and_composites():
    with pytest.raises(ValueError, match="alpha - beta"):
        AlphaBetaRule(1.0, 1.0)
    with pytest.raises(ValueError, match="input layer only"):
        uniform(ZBoxRule()).rules(tiny())
    with pytest.raises(ValueError, match="pooling layer"):
        Composite(by_type={nn.AdaptiveAvgPool2d: GammaRule()}).rules(tiny())
    with pytest.raises(ValueError, match="got 2 targets"):
        lrp(tiny(), image(), [0, 1])
    with pytest.raises(ValueError, match="no such module"):
        lrp_with_layers(tiny(), image(), 0, record=["nope"])


def test_efficientnet_lite0(lite0):
    from xai_helpers.data import sample_image

    x = sample_image("cat")
    snap = snapshot(lite0)
    D = deeplift(lite0, x, 285)
    assert abs(completeness_error(lite0, x, 285, D).item()) < 1e-3
    R = lrp(lite0, x, 285)
    assert R.shape == x.shape and torch.isfinite(R).all()
    assert_untouched(lite0, snap)


# ------------------------------------------------------------------------------------------------
# The fast LRP-gamma backward (one custom autograd function) against the rule's definition
# ------------------------------------------------------------------------------------------------
def gamma_by_definition(module, x, relevance, gamma):
    """``R_j = sum_k x_j * (w_jk + gamma (x_j w_jk)^{+/-} / x_j) / z'_k * R_k`` from the explicit
    contributions ``c_jk = x_j w_jk`` (unfolded), with ``+`` where ``z_k >= 0`` and ``-`` elsewhere."""
    if isinstance(module, nn.Conv2d):
        cols = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)  # [B, C*k*k, L]
        B, _, L = cols.shape
        groups, cout = module.groups, module.out_channels
        cols = cols.view(B, groups, -1, L)                                       # [B, G, Cin/G*k*k, L]
        w = module.weight.view(groups, cout // groups, -1)                        # [G, Cout/G, Cin/G*k*k]
        contrib = cols[:, :, None] * w[None, :, :, :, None]                       # [B, G, Cout/G, J, L]
    else:
        contrib = x[:, None, None, :, None] * module.weight[None, None, :, :, None]  # [B, 1, Cout, J, 1]
    b = torch.zeros(module.weight.shape[0], dtype=x.dtype) if module.bias is None else module.bias
    bias = b.view(1, contrib.shape[1], contrib.shape[2], 1, 1)
    z = contrib.sum(3, keepdim=True) + bias
    positive = z >= 0
    modified = contrib + gamma * torch.where(positive, contrib.clamp_min(0), contrib.clamp_max(0))
    denominator = z + gamma * torch.where(positive, contrib.clamp_min(0).sum(3, keepdim=True) + bias.clamp_min(0),
                                          contrib.clamp_max(0).sum(3, keepdim=True) + bias.clamp_max(0))
    denominator = denominator + torch.copysign(torch.tensor(STABILIZER, dtype=x.dtype), denominator)
    r = relevance.reshape(z.shape)
    per_input = (modified / denominator * r).sum(2)                               # [B, G, J, L]
    if isinstance(module, nn.Conv2d):
        per_input = per_input.reshape(B, -1, L)
        return F.fold(per_input, x.shape[-2:], module.kernel_size, module.dilation, module.padding, module.stride)
    return per_input.reshape(x.shape)


@pytest.mark.parametrize("layer", [
    nn.Conv2d(4, 6, 3, padding=1, bias=True), nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=4, bias=False),
    nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=True), nn.Linear(7, 5)])
@pytest.mark.parametrize("signed_input", [False, True])
@pytest.mark.parametrize("behind_relu", [False, True])
def test_the_fast_gamma_rule_matches_its_definition(layer, signed_input, behind_relu):
    """Every branch of the one-function backward: x >= 0 or signed, relevance at z < 0 or not."""
    torch.manual_seed(0)
    layer = layer.double()
    shape = (2, layer.in_channels, 6, 6) if isinstance(layer, nn.Conv2d) else (2, layer.in_features)
    x = torch.randn(shape, dtype=torch.float64)
    x = x if signed_input else x.abs()
    x.requires_grad_(True)
    z = layer(x)
    relevance = torch.randn_like(z)
    if behind_relu:
        relevance = torch.where(z >= 0, relevance, torch.zeros_like(relevance))
    out = GammaRule(0.3).apply(layer, x, z, None)
    torch.testing.assert_close(out, z.detach())
    (grad,) = torch.autograd.grad(out, x, relevance / z.detach())         # g(z) = R / z
    expected = gamma_by_definition(layer, x.detach(), relevance, 0.3)
    torch.testing.assert_close(x.detach() * grad, expected, rtol=1e-6, atol=1e-9)
