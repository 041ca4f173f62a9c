"""Tests for the CAM family in xai_helpers.cam: Grad-CAM++, HiResCAM, LayerCAM and Score-CAM.

Independent facts: at the input of global average pooling + linear (SmallCNN's ``relu3``) the
gradient is ``w_k / Z`` at every location, so

* HiResCAM equals Grad-CAM exactly; LayerCAM is ``sum_k ReLU(w_k) A^k / Z`` (= Grad-CAM when every
  weight is positive); Grad-CAM++ has the closed-form weights ``ReLU(w_k) / (2 + w_k mean(A^k))``;
* on a network without GAP, HiResCAM is the elementwise product computed by hand from gradients;
* Score-CAM matches a one-channel-at-a-time loop written here, whatever its batch size.
Hygiene: no hooks or ``.grad`` left behind, mode and flags restored, the calling convention's errors.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xai_helpers.core import rescale_maps
from xai_helpers.cost import count_passes
from xai_helpers.methods.cam import (
    activations_and_gradients,
    grad_cam,
    grad_cam_plus_plus,
    hires_cam,
    layer_cam,
    score_cam,
)
from xai_helpers.models import SmallCNN

GRADIENT_CAMS = [grad_cam_plus_plus, hires_cam, layer_cam]
ALL_CAMS = GRADIENT_CAMS + [score_cam]
RAW = dict(relu=False, upsample=False, rescale=False)


def gap_model(width=4, seed=0, positive=False):
    torch.manual_seed(seed)
    model = SmallCNN(num_classes=3, width=width).double().eval()
    if positive:
        with torch.no_grad():
            model.fc.weight.abs_()
    return model


def features_and_weights(model, x, targets):
    with torch.no_grad():
        a = model.features(x)                               # [B, K, h, w]
    return a, model.fc.weight[targets].detach(), a.shape[-2] * a.shape[-1]


def test_hires_cam_equals_grad_cam_at_a_gap_layer():
    model = gap_model()
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    targets = [0, 2, 1]
    assert torch.allclose(hires_cam(model, x, targets, layer="relu3", **RAW),
                          grad_cam(model, x, targets, layer="relu3", **RAW),
                          rtol=1e-12, atol=1e-14)


def test_layer_cam_at_a_gap_layer_is_cam_with_positive_weights():
    model = gap_model(seed=1)
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    targets = [1, 0, 2]
    a, w, z = features_and_weights(model, x, targets)
    assert (w < 0).any()  # the ReLU on the gradients matters here
    expected = torch.einsum("bk,bkhw->bhw", w.clamp_min(0), a) / z
    assert torch.allclose(layer_cam(model, x, targets, layer="relu3", **RAW), expected, rtol=1e-12, atol=1e-14)


def test_layer_cam_equals_grad_cam_when_all_class_weights_are_positive():
    model = gap_model(seed=2, positive=True)
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    for method in (layer_cam, hires_cam):
        assert torch.allclose(method(model, x, [0, 1], layer="relu3"), grad_cam(model, x, [0, 1], layer="relu3"),
                              atol=1e-12)


def test_grad_cam_plus_plus_closed_form_at_a_gap_layer():
    # G = w/Z everywhere, so a = 1 / (2 + S w / Z) with S = sum_ab A_ab, and the weight is
    # sum_ij a ReLU(w/Z) = ReLU(w) / (2 + w mean(A)).
    model = gap_model(seed=3)
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    targets = [2, 2, 0]
    a, w, _ = features_and_weights(model, x, targets)
    weights = w.clamp_min(0) / (2 + w * a.mean(dim=(2, 3)))
    expected = torch.einsum("bk,bkhw->bhw", weights, a)
    assert torch.allclose(grad_cam_plus_plus(model, x, targets, layer="relu3", **RAW), expected, rtol=1e-10, atol=1e-14)


def conv_net(seed=0):
    """No GAP: the gradient varies over space, so the variants differ."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1, stride=2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 4)).double().eval()


def test_variants_combine_activations_and_gradients_as_their_equations_say():
    model = conv_net()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    a, g, _ = activations_and_gradients(model, x, [1, 3], "3")
    assert torch.allclose(hires_cam(model, x, [1, 3], layer="3", **RAW), (g * a).sum(1))
    assert torch.allclose(layer_cam(model, x, [1, 3], layer="3", **RAW), (g.clamp_min(0) * a).sum(1))
    assert not torch.allclose(hires_cam(model, x, [1, 3], layer="3", **RAW),
                              grad_cam(model, x, [1, 3], layer="3", **RAW))
    # Grad-CAM++, written out with loops over channels and locations.
    expected = torch.zeros(2, 4, 4, dtype=torch.float64)
    for b in range(2):
        for k in range(a.shape[1]):
            total = a[b, k].sum()
            weight = 0.0
            for i in range(4):
                for j in range(4):
                    gij = g[b, k, i, j]
                    den = 2 * gij**2 + total * gij**3
                    weight += (gij**2 / den if den != 0 else 0.0) * max(float(gij), 0.0)
            expected[b] += weight * a[b, k]
    assert torch.allclose(grad_cam_plus_plus(model, x, [1, 3], layer="3", **RAW), expected)


def score_cam_by_hand(model, x, target, layer_module, weighting="increase"):
    """One channel at a time, straight from Wang et al. (2020), eqs. 5-8 and Algorithm 1.

    ``"increase"``: ``w_k = p^c(x M^k) - p^c(0)`` (softmax probabilities); ``"softmax"``: the logit
    increases ``f^c(x M^k) - f^c(0)`` with a softmax over the channels (the baseline is kept here,
    though it cancels, to check that it does).
    """
    store = {}
    handle = layer_module.register_forward_hook(lambda m, i, o: store.__setitem__("a", o.detach()))
    score = (lambda out: out.softmax(1)[0, target]) if weighting == "increase" else (lambda out: out[0, target])
    with torch.no_grad():
        model(x)
        handle.remove()
        a = store["a"][0]
        base = score(model(torch.zeros_like(x)))
        increases = []
        for k in range(a.shape[0]):
            mask = F.interpolate(a[k][None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
            span = mask.max() - mask.min()
            mask = (mask - mask.min()) / span if span > 0 else torch.zeros_like(mask)
            increases.append(score(model(x * mask)) - base)
        weights = torch.stack(increases)
        if weighting == "softmax":
            weights = torch.exp(weights) / torch.exp(weights).sum()
        total = torch.zeros(a.shape[1:], dtype=x.dtype)
        for k in range(a.shape[0]):
            total += weights[k] * a[k]
    cam = F.interpolate(total.clamp_min(0)[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0]
    return rescale_maps(cam)


@pytest.mark.parametrize("weighting", ["increase", "softmax"])
@pytest.mark.parametrize("chunk_size", [1, 5])
def test_score_cam_weightings_match_a_loop_over_channels(weighting, chunk_size):
    model = conv_net(seed=7)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    maps = score_cam(model, x, [3, 1], layer="3", chunk_size=chunk_size, weighting=weighting, rescale=True)
    for b, t in enumerate([3, 1]):
        assert torch.allclose(maps[b], score_cam_by_hand(model, x[b : b + 1], t, model[3], weighting)[0], atol=1e-12)


def test_score_cam_weightings_differ_and_the_default_is_unchanged():
    model = conv_net(seed=8)
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    raw = {w: score_cam(model, x, 2, layer="3", weighting=w, **RAW) for w in ("increase", "softmax")}
    assert torch.equal(score_cam(model, x, 2, layer="3", **RAW), raw["increase"])
    assert not torch.allclose(raw["increase"] / raw["increase"].abs().max(),
                              raw["softmax"] / raw["softmax"].abs().max())
    with pytest.raises(ValueError, match="weighting must be 'increase' or 'softmax'"):
        score_cam(model, x, 2, layer="3", weighting="paper")


@pytest.mark.parametrize("chunk_size", [1, 5, 64])
def test_score_cam_matches_a_loop_over_channels(chunk_size):
    model = conv_net(seed=4)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    maps = score_cam(model, x, [0, 2], layer="3", chunk_size=chunk_size, rescale=True)
    for b, t in enumerate([0, 2]):
        assert torch.allclose(maps[b], score_cam_by_hand(model, x[b : b + 1], t, model[3])[0], atol=1e-12)


@pytest.mark.parametrize("weighting", ["increase", "softmax"])
def test_score_cam_skips_the_passes_of_blank_channels_and_gives_the_same_map(weighting):
    # Channels 0 and 2 of the ReLU are dead (bias -100): their masks are blank, their masked images black.
    model = conv_net(seed=5)
    with torch.no_grad():
        model[2].bias[[0, 2]] = -100.0
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    with count_passes(model) as count:
        maps = score_cam(model, x, [1, 3], layer="3", chunk_size=2, weighting=weighting, rescale=True)
    for b, t in enumerate([1, 3]):
        assert torch.allclose(maps[b], score_cam_by_hand(model, x[b : b + 1], t, model[3], weighting)[0], atol=1e-12)
    channels = model[2].out_channels
    # One forward of x, one of the black images (both photos together), the live channels' masked images.
    assert count.forward == 2 + 2 + 2 * (channels - 2), count


def test_score_cam_weights_are_softmax_increases():
    # With one channel that is constant, the mask is all zeros: x * M = the black baseline, weight 0.
    model = nn.Sequential(nn.Conv2d(3, 1, 1), nn.Flatten(), nn.Linear(16, 2)).double().eval()
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(1.0)
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    assert torch.equal(score_cam(model, x, 0, layer="0", **RAW), torch.zeros(1, 4, 4, dtype=torch.float64))


# ----------------------------------------------------------------------------- calling convention


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.mark.parametrize("method", ALL_CAMS)
def test_shapes_ranges_and_a_clean_model(method):
    torch.manual_seed(0)
    model = SmallCNN(num_classes=3, width=4)
    model.train()
    model.conv1.weight.requires_grad_(False)
    x = torch.rand(2, 3, 20, 24)
    maps = method(model, x, torch.tensor([0, 1]), layer="relu3")
    assert maps.shape == (2, 20, 24) and maps.min() >= 0 and maps.max() <= 1
    assert method(model, x, 1, layer="relu3", upsample=False).shape == (2, 5, 6)
    assert model.training and not model.conv1.weight.requires_grad and model.conv2.weight.requires_grad
    assert hook_count(model) == 0 and all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("method", ALL_CAMS)
def test_a_batch_gives_the_maps_of_single_images(method):
    model = conv_net(seed=5)
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    batch = method(model, x, [0, 1, 2], layer="3")
    singles = torch.cat([method(model, x[i : i + 1], i, layer="3") for i in range(3)])
    assert torch.allclose(batch, singles, atol=1e-12)


@pytest.mark.parametrize("method", ALL_CAMS)
def test_inplace_relu_gives_the_same_maps(method):
    model = conv_net(seed=6)
    inplace = conv_net(seed=6)
    inplace[1].inplace = inplace[3].inplace = True
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    assert torch.allclose(method(model, x, [1, 2], layer="2"), method(inplace, x, [1, 2], layer="2"))


@pytest.mark.parametrize("method", ALL_CAMS)
def test_errors_follow_the_convention(method):
    model = conv_net()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="targets for a batch of 2"):
        method(model, x, [0], layer="3")
    with pytest.raises(ValueError, match="out of range"):
        method(model, x, 9, layer="3")
    with pytest.raises(ValueError, match="no layer named"):
        method(model, x, 0, layer="conv9")
    assert hook_count(model) == 0


def test_score_cam_rejects_a_bad_chunk_size():
    with pytest.raises(ValueError, match="chunk_size"):
        score_cam(conv_net(), torch.rand(1, 3, 8, 8, dtype=torch.float64), 0, layer="3", chunk_size=0)


def test_hires_cam_sums_to_the_score_before_a_linear_layer():
    # y = sum W * A + b when the layer feeds flatten + linear, and G = W: the map accounts for y - b.
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    model = model.double().eval()
    x = torch.rand(3, 3, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)[:, 1] - model[3].bias[1]
    assert torch.allclose(hires_cam(model, x, 1, layer="1", **RAW).sum((1, 2)), expected)


def test_without_chunk_size_score_cam_runs_default_chunk_size_images_a_pass(monkeypatch):
    from xai_helpers import core

    model, x = conv_net(), torch.rand(1, 3, 8, 8, dtype=torch.float64)
    reference = score_cam(model, x, 0, layer="3", chunk_size=1)
    monkeypatch.setattr(core, "CPU_PIXELS_PER_FORWARD", 2 * 8 * 8)       # 2 images of 8 x 8 a pass
    with count_passes(model) as count:
        by_default = score_cam(model, x, 0, layer="3")
    sizes = count.forward_batches
    assert max(sizes) == 2 and sizes.count(2) >= 2, sizes
    assert torch.allclose(by_default, reference, atol=1e-12)
