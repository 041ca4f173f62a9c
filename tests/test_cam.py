"""Tests for xai_helpers.cam.grad_cam against independent facts.

* CAM identity: for GAP + linear, Grad-CAM at the GAP input is CAM (Zhou et al. 2016) divided by Z.
* Finite differences: the gradients it uses match central differences of the score in float64.
* Batching: a batch gives the maps of its images taken one at a time.
* Hygiene: no hooks and no ``.grad`` are left behind, the model's mode and flags are restored, even
  after an exception; in-place ReLUs, frozen parameters and train mode are handled.
"""
import copy

import pytest
import torch
from test_core import Net, hook_count, reused_block_net  # shared test helpers (tests/ is on sys.path)
from torch import nn

from xai_helpers.methods.cam import activations_and_gradients, grad_cam
from xai_helpers.models import SmallCNN, efficientnet_lite0


def raw(model, x, target, layer, **kwargs):
    """Grad-CAM before post-processing: no ReLU, no upsampling, no normalisation."""
    return grad_cam(model, x, target, layer=layer, relu=False, upsample=False, rescale=False, **kwargs)


def conv_net(inplace=False, batchnorm=False, dropout=0.0, classes=5, seed=0):
    """A small non-GAP network: the gradient at ``features.2`` varies over space (unlike with GAP)."""
    torch.manual_seed(seed)
    norm = (lambda c: nn.BatchNorm2d(c)) if batchnorm else (lambda c: nn.Identity())
    net = nn.Sequential()
    net.features = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), norm(4), nn.ReLU(inplace=inplace),
        nn.Conv2d(4, 6, 3, padding=1, stride=2), norm(6), nn.ReLU(inplace=inplace),
    )
    net.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(6 * 4 * 4, 16), nn.Tanh(),
                             nn.Linear(16, classes))
    return net


@pytest.fixture(scope="module")
def lite0():
    return efficientnet_lite0()


# ----------------------------------------------------------------------------- independent facts

@pytest.mark.parametrize("width, size", [(4, 16), (8, 24)])
def test_grad_cam_equals_cam_for_gap_and_linear(width, size):
    torch.manual_seed(1)
    model = SmallCNN(num_classes=3, width=width).double().eval()  # eval: batch norm uses its running statistics
    x = torch.rand(4, 3, size, size, dtype=torch.float64)
    targets = [0, 1, 2, 1]
    with torch.no_grad():
        features = model.features(x)                                        # A: [B, K, h, w]
    weights = model.fc.weight[targets]                                      # w_k^c: [B, K]
    cam = torch.einsum("bk,bkhw->bhw", weights, features)                   # Zhou et al. 2016
    z = features.shape[-2] * features.shape[-1]
    maps = raw(model, x, targets, "relu3")
    assert torch.allclose(maps * z, cam, rtol=1e-10, atol=1e-12)            # exactly CAM / Z
    # With min-max normalisation the positive factor disappears.
    expected = torch.nn.functional.interpolate(cam.clamp_min(0)[:, None], size=(size, size), mode="bilinear",
                                               align_corners=False)[:, 0]
    low = expected.flatten(1).min(1).values[:, None, None]
    span = expected.flatten(1).max(1).values[:, None, None] - low
    assert (span > 0).sum() >= 2  # some maps are not all zero (an untrained net may give all-negative CAMs)
    assert torch.allclose(grad_cam(model, x, targets, layer=model.relu3, rescale=True),
                          (expected - low) / span.clamp_min(1e-12))
    # By default (the package's output contract) the map is not rescaled: ReLU(CAM / Z), upsampled.
    assert torch.allclose(grad_cam(model, x, targets, layer=model.relu3) * z, expected)


def test_gradients_match_finite_differences():
    model = conv_net(classes=3).double().eval()
    torch.manual_seed(2)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    target = [2, 0]
    activations, gradients, logits = activations_and_gradients(model, x, target, "features.2")
    layer = model.features[2]
    eps = 1e-6
    numeric = torch.zeros_like(activations)
    n = activations[0].numel()
    for b, c in enumerate(target):  # all n one-element perturbations of image b in one batch
        delta = eps * torch.eye(n, dtype=torch.float64).view(n, *activations.shape[1:])
        handle = layer.register_forward_hook(lambda _m, _i, out: out + torch.cat([delta, -delta]))
        try:
            with torch.no_grad():
                scores = model(x[b : b + 1].expand(2 * n, -1, -1, -1))[:, c]
        finally:
            handle.remove()
        numeric[b] = ((scores[:n] - scores[n:]) / (2 * eps)).view_as(activations[b])
    assert gradients.abs().max() > 1e-3  # a non-trivial check
    assert torch.allclose(gradients, numeric, rtol=1e-6, atol=1e-8)
    # ... and the map is the alpha-weighted sum of those numeric gradients' means.
    alpha = numeric.mean((2, 3), keepdim=True)
    assert torch.allclose(raw(model, x, target, "features.2"), (alpha * activations).sum(1), atol=1e-8)
    with torch.no_grad():
        assert torch.allclose(logits, model(x))


def test_a_batch_gives_the_maps_of_single_images():
    model = conv_net(batchnorm=True).eval()
    torch.manual_seed(3)
    x = torch.rand(5, 3, 8, 8)
    targets = [4, 0, 1, 1, 3]
    batch = grad_cam(model, x, targets, layer="features.3")
    single = torch.cat([grad_cam(model, x[i : i + 1], t, layer="features.3") for i, t in enumerate(targets)])
    assert batch.shape == (5, 8, 8)
    assert torch.allclose(batch, single, atol=1e-6)


def test_batch_on_efficientnet(lite0):
    x = torch.cat([torch.rand(1, 3, 96, 96), torch.rand(1, 3, 96, 96).mul(0.5)])
    batch = grad_cam(lite0, x, [285, 967], layer="head")
    single = torch.cat([grad_cam(lite0, x[:1], 285, layer="head"), grad_cam(lite0, x[1:], 967, layer="head")])
    assert torch.allclose(batch, single, atol=1e-5)


def test_several_targets_for_one_image():
    model = conv_net().eval()
    torch.manual_seed(4)
    image = torch.rand(1, 3, 8, 8)
    maps = raw(model, image.repeat(5, 1, 1, 1), torch.arange(5), "features.5")
    for c in range(5):
        assert torch.allclose(maps[c], raw(model, image, c, "features.5")[0], atol=1e-6)
    assert not torch.allclose(maps[0], maps[1])  # different classes, different maps


def test_target_forms_agree():
    model = conv_net().eval()
    x = torch.rand(3, 3, 8, 8)
    reference = raw(model, x, [1, 1, 1], "features.2")
    for target in (1, (1, 1, 1), torch.tensor([1, 1, 1]), torch.tensor(1)):
        assert torch.equal(raw(model, x, target, "features.2"), reference)


# ----------------------------------------------------------------------------- post-processing and options

def test_output_shapes_and_ranges():
    model = conv_net().eval()
    x = torch.rand(2, 3, 8, 8)
    maps = grad_cam(model, x, 0, layer="features.5", rescale=True)
    assert maps.shape == (2, 8, 8) and maps.dtype == torch.float32
    peaks = maps.flatten(1).max(1).values
    assert all(peak == 1 or (m == 0).all() for peak, m in zip(peaks, maps))  # per-image min-max
    assert maps.min() >= 0 and maps.max() <= 1
    assert grad_cam(model, x, 0, layer="features.5", upsample=False).shape == (2, 4, 4)
    unnormalised = grad_cam(model, x, 0, layer="features.5", rescale=False, upsample=False)
    assert torch.allclose(unnormalised, raw(model, x, 0, "features.5").clamp_min(0))


def test_counterfactual_negates_the_weights():
    model = conv_net().eval()
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(raw(model, x, 3, "features.2", counterfactual=True), -raw(model, x, 3, "features.2"))
    negative = grad_cam(model, x, 3, layer="features.2", upsample=False, rescale=False, counterfactual=True)
    assert torch.allclose(negative, (-raw(model, x, 3, "features.2")).clamp_min(0))


def test_non_square_input(lite0):
    x = torch.rand(1, 3, 64, 128)
    assert grad_cam(lite0, x, 285, layer="head").shape == (1, 64, 128)
    assert grad_cam(lite0, x, 285, layer="head", upsample=False).shape == (1, 2, 4)


# ----------------------------------------------------------------------------- models it must handle

def test_inplace_relus_give_the_same_maps():
    plain, inplace = conv_net(), conv_net(inplace=True)
    inplace.load_state_dict(plain.state_dict())
    x = torch.rand(3, 3, 8, 8)
    for layer in ("features.0", "features.2", "features.3", "features.5"):  # conv before / inplace ReLU itself
        assert torch.allclose(raw(plain, x, [0, 2, 4], layer), raw(inplace, x, [0, 2, 4], layer))
    assert hook_count(inplace) == 0


def test_train_mode_model_is_explained_in_eval_mode_and_restored():
    model = conv_net(batchnorm=True, dropout=0.5)
    model.train(False)
    for _ in range(3):  # give the running statistics non-default values
        model.train()
        model(torch.rand(4, 3, 8, 8) * 2)
    model.train()
    buffers = copy.deepcopy({k: v for k, v in model.state_dict().items() if "running" in k or "batches" in k})
    x = torch.rand(2, 3, 8, 8)
    first = grad_cam(model, x, [0, 1], layer="features.4")
    second = grad_cam(model, x, [0, 1], layer="features.4")
    assert torch.equal(first, second)  # dropout was off
    assert all(m.training for m in model.modules())
    state = model.state_dict()
    for key, value in buffers.items():
        assert torch.equal(state[key], value), key  # running statistics untouched
    expected = grad_cam(model.eval(), x, [0, 1], layer="features.4")
    assert torch.equal(first, expected)


def test_frozen_parameters():
    model = conv_net().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.features[0].bias.requires_grad_(True)  # one left trainable, to see that flags come back as they were
    x = torch.rand(1, 3, 8, 8)
    maps = raw(model, x, 2, "features.2")
    assert maps.abs().sum() > 0
    assert [p.requires_grad for p in model.parameters()] == [name == "features.0.bias"
                                                             for name, _ in model.named_parameters()]


def test_no_parameter_gets_a_grad_and_no_hook_remains(lite0):
    model = conv_net(batchnorm=True)
    grad_cam(model, torch.rand(2, 3, 8, 8), 1, layer="features.4")
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert hook_count(model) == 0
    grad_cam(lite0, torch.rand(1, 3, 64, 64), 1, layer="blocks.10")
    assert all(p.grad is None for p in lite0.parameters())
    assert hook_count(lite0) == 0


def test_grad_mode_is_restored():
    model = conv_net().eval()
    x = torch.rand(1, 3, 8, 8)
    grad_cam(model, x, 0, layer="features.2")
    assert torch.is_grad_enabled()
    with torch.no_grad():  # works inside no_grad as well, and leaves it on
        maps = grad_cam(model, x, 0, layer="features.2")
        assert not torch.is_grad_enabled()
    assert torch.allclose(maps, grad_cam(model, x, 0, layer="features.2"))


def explode(net, x):
    net.bn(net.conv(x))
    raise ArithmeticError("boom")


def test_clean_up_after_the_model_raises():
    model = Net(explode, conv=nn.Conv2d(3, 2, 3, padding=1), bn=nn.BatchNorm2d(2)).train()  # raises after the layer
    with pytest.raises(ArithmeticError, match="boom"):
        grad_cam(model, torch.rand(1, 3, 4, 4), 0, layer="conv")
    assert hook_count(model) == 0
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert torch.is_grad_enabled()


# ----------------------------------------------------------------------------- errors

def test_error_unknown_layer_lists_candidates():
    with pytest.raises(ValueError, match=r"no layer named 'features\.9'.*Close names: .*features\.\d"):
        grad_cam(conv_net(), torch.rand(1, 3, 8, 8), 0, layer="features.9")


@pytest.mark.parametrize("target", [[0, 1], [0, 1, 2, 3]])
def test_error_wrong_number_of_targets(target):
    with pytest.raises(ValueError, match=f"got {len(target)} targets for a batch of 3 images"):
        grad_cam(conv_net(), torch.rand(3, 3, 8, 8), target, layer="features.2")


def test_error_out_of_range_class():
    with pytest.raises(ValueError, match="target class 5 is out of range: the model has 5 classes"):
        grad_cam(conv_net(), torch.rand(2, 3, 8, 8), [0, 5], layer="features.2")


def test_error_not_4d():
    with pytest.raises(ValueError, match=r"4-D \[B, C, H, W\].*unsqueeze\(0\)"):
        grad_cam(conv_net(), torch.rand(3, 8, 8), 0, layer="features.2")


def test_error_integer_images():
    with pytest.raises(TypeError, match="float tensor in"):
        grad_cam(conv_net(), torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8), 0, layer="features.2")


def test_error_layer_used_twice():
    model = reused_block_net(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(inplace=True)))
    with pytest.raises(RuntimeError, match="ran 2 times in one forward pass"):
        grad_cam(model, torch.rand(1, 3, 4, 4), 0, layer="block")
    assert hook_count(model) == 0


def test_error_layer_the_score_does_not_depend_on():
    def forward(net, x):
        net.side(x)
        return net.fc(x.mean((2, 3)))

    model = Net(forward, side=nn.Conv2d(3, 3, 1), fc=nn.Linear(3, 2))
    with pytest.raises(RuntimeError, match="does not depend on layer 'side'"):
        grad_cam(model, torch.rand(1, 3, 4, 4), 0, layer="side")


class _CountBackward(torch.autograd.Function):
    """Identity whose backward counts its calls: it shows whether the graph reaches it."""

    calls = 0

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        _CountBackward.calls += 1
        return g


def test_the_graph_starts_at_the_layer():
    # Issue 11, part 2: the forward pass runs under no_grad up to the layer, the hook switches grad
    # mode on there. Nothing before the layer is recorded, inside or outside the caller's no_grad.
    torch.manual_seed(0)
    counter = Net(lambda net, x: _CountBackward.apply(x))
    model = nn.Sequential(counter, nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).eval()
    x = torch.rand(2, 3, 6, 6)
    _CountBackward.calls = 0
    a, g, _ = activations_and_gradients(model, x, [0, 2], "2")
    with torch.no_grad():
        a2, g2, _ = activations_and_gradients(model, x, [0, 2], "2")
    assert _CountBackward.calls == 0
    # and the gradient is the full-graph one
    full = x.clone().requires_grad_(True)
    kept = {}
    handle = model[2].register_forward_hook(lambda m, i, o: kept.setdefault("a", o))
    scores = model(full).gather(1, torch.tensor([[0], [2]]))[:, 0]
    handle.remove()
    (reference,) = torch.autograd.grad(scores.sum(), kept["a"])
    assert torch.allclose(g, reference, atol=1e-6) and torch.equal(g, g2) and torch.equal(a, a2)
