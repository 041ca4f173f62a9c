"""Tests for xai_helpers.featvis: parametrisations, objectives, transforms, the render loop, examples."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from xai_helpers.data import sample_image
from xai_helpers.featvis import (
    COLOR_CORRELATION_SQRT,
    FourierImage,
    PixelImage,
    activations,
    channel,
    class_logit,
    compose,
    deepdream,
    diversity,
    evaluate,
    fourier_scale,
    jitter,
    neuron,
    pad,
    patch_scores,
    photo_patches,
    random_rotate,
    random_scale,
    render,
    standard_transforms,
    top_patches,
    total_variation,
)


class TinyNet(nn.Module):
    """Three conv layers, GAP and a linear layer, Kaiming-initialised so that its units respond strongly
    (an untrained net with default init barely reacts to its input, which makes weak tests)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.relu1 = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()
        self.conv3, self.relu3 = nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU()
        self.gap, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(16, 5)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.relu1(self.conv1(4 * (x - 0.5)))
        x = self.relu3(self.conv3(self.relu2(self.conv2(x))))
        return self.fc(self.gap(x).flatten(1))


@pytest.fixture
def net():
    torch.manual_seed(0)
    return TinyNet().eval()


def photos(size=32):
    return torch.cat([sample_image(n, size=size) for n in ("cat", "coffee", "astronaut", "rocket")])


# ----------------------------------------------------------------------------- parametrisations

def test_fourier_round_trip():
    gen = torch.Generator().manual_seed(0)
    x = photos(24).clamp(0.02, 0.98)
    for decorrelate in (True, False):
        param = FourierImage(4, 24, gen, decorrelate=decorrelate).set_image(x)
        torch.testing.assert_close(param(), x, atol=1e-4, rtol=0)
    odd = torch.rand(2, 3, 15, 21, generator=gen) * 0.9 + 0.05  # odd sizes and a rectangle
    torch.testing.assert_close(FourierImage(2, (15, 21), gen).set_image(odd)(), odd, atol=1e-4, rtol=0)


def test_fourier_scale_is_one_over_f():
    s = fourier_scale(16, 16)
    assert s.shape == (16, 9)
    assert s[0, 0] == s.max() == pytest.approx(1.0)
    # frequency 1/16 cycles per pixel (one cycle per image) and 4/16: ratio 4
    assert s[0, 1] / s[0, 4] == pytest.approx(4.0)
    assert s[2, 0] == pytest.approx(s[0, 2])


def test_parametrisations_give_batches_in_unit_interval():
    gen = torch.Generator().manual_seed(1)
    for param in (PixelImage(3, 20, gen), FourierImage(3, 20, gen)):
        with torch.no_grad():
            param.requires_grad_(False)
            for p in param.parameters():
                p.normal_(0, 50, generator=gen)  # extreme values still map into [0, 1]
        image = param()
        assert image.shape == (3, 3, 20, 20)
        assert image.min() >= 0 and image.max() <= 1


def test_colour_decorrelation_matrix():
    m = COLOR_CORRELATION_SQRT
    lucid = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    # It is Lucid's published U sqrt(S), scaled so that the largest column has norm 1 ...
    torch.testing.assert_close(m, lucid / lucid.norm(dim=0).max())
    assert m.norm(dim=0).max() == pytest.approx(1.0)
    # ... so its columns are (nearly) orthogonal, with decreasing norms (sqrt of the variances) ...
    gram = m.T @ m
    off_diagonal = gram - torch.diag(gram.diagonal())
    assert off_diagonal.abs().max() < 0.02 * gram.diagonal().max()
    assert gram[0, 0] > gram[1, 1] > gram[2, 2]
    # ... and the first column is brightness: R, G and B together.
    brightness = torch.ones(3) / 3**0.5
    assert torch.dot(m[:, 0] / m[:, 0].norm(), brightness) > 0.99
    # An independent check on real photos: their colour covariance's top eigenvector is brightness too.
    pixels = torch.cat([sample_image(n, size=64) for n in ("cat", "coffee", "astronaut")]).permute(1, 0, 2, 3)
    pixels = pixels.reshape(3, -1)
    cov = torch.cov(pixels)
    top = torch.linalg.eigh(cov).eigenvectors[:, -1]
    assert torch.dot(top.abs(), brightness) > 0.95
    # Mapping white noise through the matrix gives colours with covariance M M^T.
    z = torch.randn(3, 200_000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.cov(m @ z), m @ m.T, atol=5e-3, rtol=0)


# ----------------------------------------------------------------------------- objectives

def test_objective_algebra():
    acts = {"a": torch.arange(2 * 3 * 2 * 2, dtype=torch.float).reshape(2, 3, 2, 2),
            "b": torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])}
    c = channel("a", 1)
    logit = class_logit(2, logits_layer="b")
    expected_c = acts["a"][:, 1].mean((1, 2))
    torch.testing.assert_close(c(acts), expected_c)
    torch.testing.assert_close(logit(acts), torch.tensor([3.0, 6.0]))
    combo = 2 * c + logit * 0.5 - c
    torch.testing.assert_close(combo(acts), expected_c + 0.5 * torch.tensor([3.0, 6.0]))
    torch.testing.assert_close((-c)(acts), -expected_c)
    torch.testing.assert_close((c + 1)(acts), expected_c + 1)
    torch.testing.assert_close(sum([c, c, logit])(acts), 2 * expected_c + torch.tensor([3.0, 6.0]))
    assert set(combo.layers) == {"a", "b"} and len(combo.layers) == 2
    # per-image channels, neurons, deepdream
    torch.testing.assert_close(channel("a", [2, 0])(acts),
                               torch.stack([acts["a"][0, 2].mean(), acts["a"][1, 0].mean()]))
    torch.testing.assert_close(neuron("a", [2, 0], x=1, y=0)(acts),
                               torch.stack([acts["a"][0, 2, 0, 1], acts["a"][1, 0, 0, 1]]))
    torch.testing.assert_close(deepdream("a")(acts), acts["a"].pow(2).flatten(1).mean(1))


def test_diversity_is_minus_mean_gram_similarity():
    a = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    score = diversity("a")({"a": a})
    grams = [(x.flatten(1) @ x.flatten(1).T).flatten() for x in a]
    cos = lambda u, v: torch.dot(u, v) / (u.norm() * v.norm())  # noqa: E731
    expected = torch.stack([-(cos(grams[i], grams[j]) + cos(grams[i], grams[k])) / 2
                            for i, j, k in ((0, 1, 2), (1, 0, 2), (2, 0, 1))])
    torch.testing.assert_close(score, expected)
    # identical images are as similar as can be
    same = diversity("a")({"a": a[:1].repeat(3, 1, 1, 1)})
    torch.testing.assert_close(same, -torch.ones(3))


def test_total_variation():
    x = torch.zeros(1, 3, 4, 4)
    x[..., 2:] = 1.0  # one vertical edge: 1 jump in each of 4 rows, over 4*3 horizontal pairs
    assert total_variation()({"input": x}).item() == pytest.approx(4 / 12)


def test_bad_input_errors(net):
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="no layer named 'conv9'.*conv"):
        evaluate(net, channel("conv9", 0), x)
    with pytest.raises(ValueError, match="channel 8 is out of range.*8 channels"):
        evaluate(net, channel("conv1", 8), x)
    with pytest.raises(ValueError, match="got 3 channels for a batch of 2"):
        evaluate(net, channel("conv1", [0, 1, 2]), x)
    with pytest.raises(ValueError, match="got 3 channels for a batch of 2"):
        render(net, channel("conv1", [0, 1, 2]), batch=2, size=16, iterations=1)
    with pytest.raises(ValueError, match="class 7 is out of range"):
        evaluate(net, class_logit(7, "fc"), x)
    with pytest.raises(ValueError, match="at least 2"):
        evaluate(net, diversity("conv1"), x[:1])
    with pytest.raises(ValueError, match="unknown parametrisation"):
        render(net, channel("conv1", 0), param="wavelet", size=16, iterations=1)


# ----------------------------------------------------------------------------- transforms

def test_transforms_shapes_and_seeds():
    x = torch.rand(2, 3, 20, 20)
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert pad(4)(x, gen()).shape == (2, 3, 28, 28)
    assert pad(4)(x, gen())[..., 0, 0].eq(0.5).all()
    assert jitter(5)(x, gen()).shape == (2, 3, 16, 16)
    out = random_scale([1.5])(x, gen())
    assert out.shape == (2, 3, 30, 30)
    torch.testing.assert_close(random_rotate([0])(x, gen()), x)
    r90 = random_rotate([90])(x, gen())
    torch.testing.assert_close(r90, torch.rot90(x, 1, (2, 3)), atol=1e-5, rtol=0)  # a quarter turn is exact
    t = standard_transforms(64)
    torch.testing.assert_close(t(x, gen()), t(x, gen()))  # same seed, same draws
    outs = {tuple(t(x, torch.Generator().manual_seed(s)).shape) for s in range(8)}
    assert len(outs) > 1  # the scale really varies
    crop = compose(pad(2), jitter(5))(x, gen())
    assert crop.shape == (2, 3, 20, 20)


# ----------------------------------------------------------------------------- render loop

def test_render_raises_objective_far_above_photos(net):
    obj = channel("relu2", [0, 1, 2, 3])
    result = render(net, obj, batch=4, size=32, iterations=60, lr=0.2)
    assert result.images.shape == (4, 3, 32, 32)
    assert result.history.shape == (60, 4)
    final = evaluate(net, obj, result.images)
    natural = torch.stack([evaluate(net, channel("relu2", c), photos(32)) for c in range(4)], 1)  # [4 photos, 4 ch]
    assert (final > 3 * natural.max(0).values).all()
    h = result.history
    assert (h[-1] > 10 * h[0]).all()  # the history rises from the grey start ...
    assert (h[-10:].mean(0) > h[-20:-10].mean(0)).all()  # ... to the end
    assert (result.images >= 0).all() and (result.images <= 1).all()


def test_same_seed_same_image_and_model_untouched(net):
    flags_before = [p.requires_grad for p in net.parameters()]
    net.train()
    kw = dict(batch=2, size=24, iterations=5, transforms=standard_transforms(24), param="fourier")
    a = render(net, channel("conv2", [1, 2]) - 0.1 * total_variation(), seed=7, **kw).images
    b = render(net, channel("conv2", [1, 2]) - 0.1 * total_variation(), seed=7, **kw).images
    c = render(net, channel("conv2", [1, 2]) - 0.1 * total_variation(), seed=8, **kw).images
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert net.training  # mode restored
    assert [p.requires_grad for p in net.parameters()] == flags_before
    assert all(p.grad is None for p in net.parameters())
    assert not net._forward_hooks and all(not m._forward_hooks for m in net.modules())


def test_forward_pass_stops_early(net):
    calls = {"conv3": 0, "fc": 0, "conv1": 0}
    for name in calls:
        getattr(net, name).register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
    render(net, channel("conv1", 0), size=16, iterations=3)
    assert calls == {"conv1": 3, "conv3": 0, "fc": 0}
    render(net, channel("conv1", 0) + channel("relu2", 1), size=16, iterations=2)  # deepest needed: relu2
    assert calls == {"conv1": 5, "conv3": 0, "fc": 0}
    render(net, channel("conv1", 0), size=16, iterations=2, stop_early=False)
    assert calls == {"conv1": 7, "conv3": 2, "fc": 2}
    render(net, class_logit(1, "fc"), size=16, iterations=1)
    assert calls["fc"] == 3
    # also when the objective raises, every featvis hook is gone afterwards
    with pytest.raises(ValueError):
        render(net, channel("conv1", 99), size=16, iterations=1)
    assert all(len(m._forward_hooks) == (1 if n in calls else 0) for n, m in net.named_modules() if n)
    assert all(p.grad is None for p in net.parameters())


def test_class_logit_and_pixel_param(net):
    result = render(net, class_logit([0, 3], "fc"), param="pixel", batch=2, size=24, iterations=30, lr=0.1)
    logits = net(result.images)
    assert logits[0].argmax() == 0 and logits[1].argmax() == 3


def test_diversity_spreads_images(net):
    base = channel("relu2", 0)
    kw = dict(batch=3, size=24, iterations=40, lr=0.1, seed=0)
    plain = render(net, base, **kw).images
    diverse = render(net, base + 5.0 * diversity("relu2"), **kw).images
    sim = lambda imgs: evaluate(net, diversity("relu2"), imgs).mean()  # noqa: E731  (minus similarity)
    assert sim(diverse) > sim(plain)


# ----------------------------------------------------------------------------- dataset examples

def test_top_patches_match_brute_force(net):
    patches = photo_patches(["cat", "coffee"], image_size=48, patch=16, stride=16)
    assert patches.shape == (2 * 9, 3, 16, 16)
    torch.testing.assert_close(patches[1], sample_image("cat", size=48)[0, :, 0:16, 16:32])
    table = patch_scores(net, patches, ["relu2", "conv1"], chunk_size=7)
    assert table["relu2"].shape == (18, 16) and table["conv1"].shape == (18, 8)
    best, scores = top_patches(table["relu2"], [0, 5], patches, k=3)
    assert best.shape == (2, 3, 3, 16, 16) and scores.shape == (2, 3)
    for row, c in enumerate([0, 5]):
        all_scores = torch.stack([evaluate(net, channel("relu2", c), p[None])[0] for p in patches])
        torch.testing.assert_close(scores[row], all_scores.topk(3).values)
        torch.testing.assert_close(best[row, 0], patches[all_scores.argmax()])
    with pytest.raises(ValueError, match="out of range"):
        top_patches(table["relu2"], [16], patches)
    assert activations(net, patches[:2], ["conv1"])["conv1"].shape == (2, 8, 16, 16)


# ----------------------------------------------------------------------------- the real network (fast)

def test_efficientnet_early_layer_is_cheap_and_stops():
    from xai_helpers.models import efficientnet_lite0

    model = efficientnet_lite0()
    calls = []
    handle = model.blocks[2].register_forward_hook(lambda *_: calls.append(1))
    try:
        result = render(model, channel("blocks.1", [0, 5]), batch=2, size=48, iterations=12, lr=0.05)
    finally:
        handle.remove()
    assert calls == []  # blocks.2 and everything after it never ran
    assert (result.history[-1] > result.history[0]).all()
    assert all(p.grad is None for p in model.parameters())
