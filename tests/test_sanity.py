"""Tests for xai_helpers.sanity: similarity measures against scipy/scikit-image and identities, and the
cascading randomisation against its promises (seeded, cumulative, on a copy)."""
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

from xai_helpers.display import reduce_channels
from xai_helpers.methods.gradients import saliency
from xai_helpers.models import SmallCNN
from xai_helpers.sanity import (
    cascading_randomization,
    model_randomization_test,
    rank,
    spearman_rank_correlation,
    ssim,
)


def test_rank_handles_ties_like_scipy():
    values = torch.tensor([[3.0, 1.0, 3.0, 2.0, 1.0, 1.0]])
    assert rank(values).tolist() == [[5.5, 2.0, 5.5, 4.0, 2.0, 2.0]]


@pytest.mark.parametrize("ties", [False, True])
def test_spearman_matches_scipy(ties):
    a, b = torch.rand(3, 12, 10), torch.rand(3, 12, 10)
    if ties:  # maps with many equal pixels, like ReLU'd heatmaps
        a, b = (a * 4).round().clamp_max(2), (b * 3).round()
    b[1] = a[1] * 2 + 0.1 * b[1]
    expected = [spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy())[0] for i in range(3)]
    assert np.allclose(spearman_rank_correlation(a, b).numpy(), expected, atol=1e-6)


def test_spearman_identities():
    a = torch.rand(2, 16, 16)
    assert torch.allclose(spearman_rank_correlation(a, a), torch.ones(2))
    assert torch.allclose(spearman_rank_correlation(a, a.exp()), torch.ones(2))   # monotone maps keep ranks
    assert torch.allclose(spearman_rank_correlation(a, -a), -torch.ones(2))
    assert torch.equal(spearman_rank_correlation(a, torch.zeros_like(a)), torch.zeros(2))  # constant: 0, not NaN


def ssim_numpy(a: np.ndarray, b: np.ndarray) -> float:
    """A second SSIM, written out with explicit 11x11 windows (valid positions only)."""
    r = np.arange(11) - 5
    g = np.exp(-(r**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i:i + 11, j:j + 11], b[i:i + 11, j:j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_ssim_matches_a_second_implementation_and_scikit_image():
    a = torch.rand(2, 20, 24)
    b = (a + 0.3 * torch.rand(2, 20, 24)).clamp(0, 1)
    ours = ssim(a, b)
    for i in range(2):
        x, y = a[i].double().numpy(), b[i].double().numpy()
        assert abs(ours[i].item() - ssim_numpy(x, y)) < 1e-5
        reference = structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False)
        assert abs(ours[i].item() - reference) < 1e-5


def test_ssim_identities():
    a = torch.rand(3, 16, 16)
    assert torch.allclose(ssim(a, a), torch.ones(3))
    assert torch.allclose(ssim(torch.zeros(1, 16, 16), torch.zeros(1, 16, 16)), torch.ones(1))
    assert (ssim(a, torch.rand(3, 16, 16)) < 0.5).all()
    assert torch.allclose(ssim(a, a.flip(0)), ssim(a.flip(0), a))   # symmetric
    with pytest.raises(ValueError, match="smaller"):
        ssim(torch.rand(1, 8, 8), torch.rand(1, 8, 8))


CASCADE = ["fc", "conv3", ["conv2", "conv1"]]


def test_cascade_is_cumulative_seeded_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = SmallCNN().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_state = torch.get_rng_state()
    snapshots = [(label, {k: v.clone() for k, v in m.state_dict().items()})
                 for label, m in cascading_randomization(model, CASCADE, seed=5)]
    assert torch.equal(torch.get_rng_state(), rng_state)             # the global generator is not used
    assert [label for label, _ in snapshots] == ["original", "fc", "conv3", "conv2..conv1"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()) and model.training
    changed = [{k.split(".")[0] for k, v in state.items() if not torch.equal(v, before[k])} for _, state in snapshots]
    assert changed == [set(), {"fc"}, {"fc", "conv3"}, {"fc", "conv3", "conv2", "conv1"}]
    again = [{k: v.clone() for k, v in m.state_dict().items()}
             for _, m in cascading_randomization(model, CASCADE, seed=5)]
    assert all(torch.equal(s[k], t[k]) for (_, s), t in zip(snapshots, again) for k in s)
    other = dict(cascading_randomization(model, CASCADE, seed=6))["conv2..conv1"]
    assert not torch.equal(other.conv1.weight, snapshots[-1][1]["conv1.weight"])


def test_randomised_weights_keep_their_scale():
    model = SmallCNN()
    _, randomized = list(cascading_randomization(model, ["conv2"]))[-1]
    old, new = model.conv2.weight, randomized.conv2.weight
    assert abs(new.std() / old.std() - 1) < 0.05 and abs(new.mean() - old.mean()) < 0.1 * old.std()


def test_unknown_layer_fails_before_any_work():
    with pytest.raises(ValueError, match="no layer named"):
        list(cascading_randomization(SmallCNN(), ["fc", "conv9"]))


def test_model_randomization_test_shapes_and_first_row():
    torch.manual_seed(0)
    model, x = SmallCNN(), torch.rand(2, 3, 32, 32)
    methods = {"gradient": lambda m, x, t: reduce_channels(saliency(m, x, t))}
    result = model_randomization_test(model, x, [0, 1], methods, CASCADE, seed=0)
    assert result.labels == ["original", "fc", "conv3", "conv2..conv1"]
    assert result.maps["gradient"].shape == (4, 2, 32, 32)
    assert torch.allclose(result.spearman["gradient"][0], torch.ones(2))
    assert torch.allclose(result.ssim["gradient"][0], torch.ones(2))
    assert (result.spearman["gradient"][-1] < 0.9).all()     # a random network has other gradients


def test_model_randomization_test_uses_the_original_maps_it_is_given():
    torch.manual_seed(0)
    model, x = SmallCNN(), torch.rand(2, 3, 32, 32)
    models_seen = []

    def gradient(m, images, t):
        models_seen.append(m)
        return reduce_channels(saliency(m, images, t))

    full = model_randomization_test(model, x, [0, 1], {"g": gradient}, CASCADE, seed=0)
    assert len(models_seen) == 4
    models_seen.clear()
    given = model_randomization_test(model, x, [0, 1], {"g": gradient}, CASCADE, seed=0,
                                     original={"g": gradient(model, x, [0, 1])})
    assert len(models_seen) == 1 + 3                       # the call above, then the three steps only
    assert torch.allclose(given.maps["g"], full.maps["g"]) and torch.allclose(given.spearman["g"], full.spearman["g"])


def test_a_method_must_return_maps():
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        model_randomization_test(SmallCNN(), torch.rand(1, 3, 32, 32), 0, {"raw": saliency}, ["fc"])


def test_efficientnet_cascade_copies(lite0):
    names = ["classifier", "head", "blocks.15"]
    labels = [label for label, m in cascading_randomization(lite0, names) if m is not lite0]
    assert labels == ["original", *names]
    assert isinstance(lite0.head.act, nn.ReLU6)


def test_input_shifted_copy_is_the_same_function_of_the_shifted_input():
    from xai_helpers.models import Normalize
    from xai_helpers.sanity import input_shifted_copy

    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2))
    model = nn.Sequential(Normalize((0.4, 0.5, 0.6), (0.2, 0.25, 0.3)), body).eval()
    x = torch.rand(2, 3, 8, 8)
    for shift in (0.2, [0.1, -0.3, 0.5]):
        shifted = input_shifted_copy(model, shift)
        s = torch.as_tensor(shift).view(1, -1, 1, 1)
        torch.testing.assert_close(shifted(x + s), model(x))
        # The closed form of the new first layer: (x + s - (mean + s)) / std.
        torch.testing.assert_close(shifted[0].mean, model[0].mean + s)
        assert not torch.allclose(shifted(x), model(x)), "the copy reads shifted images"
    torch.testing.assert_close(model[0].mean.flatten(), torch.tensor([0.4, 0.5, 0.6]))   # the model is untouched
    with pytest.raises(ValueError, match="exactly one xai_helpers.models.Normalize"):
        input_shifted_copy(body, 0.2)
    with pytest.raises(ValueError, match="1 or 3 values"):
        input_shifted_copy(model, [0.1, 0.2])


def test_label_randomization_trains_a_memoriser_and_a_matched_yardstick():
    from xai_helpers.sanity import label_randomization

    gen = torch.Generator().manual_seed(0)
    images = torch.rand(24, 1, 4, 4, generator=gen)
    labels = torch.arange(24) % 3
    built = []

    def new_model():
        built.append(nn.Sequential(nn.Flatten(), nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 3)))
        return built[-1]

    pair = label_randomization(new_model, images, labels, seed=2, max_epochs=500, lr=0.03, minibatch_size=8)
    assert sorted(pair.permuted.tolist()) == sorted(labels.tolist()) and not torch.equal(pair.permuted, labels)
    assert pair.memoriser is built[0] and pair.yardstick is built[1]
    predicted = lambda net: net(images).argmax(1)  # noqa: E731
    assert torch.equal(predicted(pair.memoriser), pair.permuted)       # memorised every arbitrary label
    assert torch.equal(predicted(pair.yardstick), labels)               # the same images, their true labels
    assert all(1 <= e <= 500 for e in pair.epochs)
    again = label_randomization(new_model, images, labels, seed=2, max_epochs=500, lr=0.03, minibatch_size=8)
    assert torch.equal(again.permuted, pair.permuted)                   # seeded
