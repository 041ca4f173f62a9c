"""Tests for xai_helpers.perturbation.occlusion against a brute-force loop and a closed form.

* Brute force: every window position and every pixel visited with Python loops, on a tiny model.
* Closed form: for a linear model ``y = sum(W * x)``, a 1x1 window's drop at a pixel is
  ``sum_c W_c (x_c - baseline)`` there.
* The batch size changes nothing; the model is left as it was; windows cover every pixel.
"""
import pytest
import torch
from torch import nn

from xai_helpers.cost import count_passes
from xai_helpers.methods.perturbation import occlusion, window_positions


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 3)).double()


def brute_force(model, x, target, window, stride, baseline):
    _, _, h, w = x.shape
    total = torch.zeros(h, w, dtype=x.dtype)
    count = torch.zeros(h, w, dtype=x.dtype)
    rows = list(range(0, h - window + 1, stride))
    cols = list(range(0, w - window + 1, stride))
    rows += [h - window] if rows[-1] != h - window else []
    cols += [w - window] if cols[-1] != w - window else []
    with torch.no_grad():
        clean = model(x)[0, target]
        for r in rows:
            for c in cols:
                hidden = x.clone()
                hidden[..., r : r + window, c : c + window] = baseline
                drop = clean - model(hidden)[0, target]
                for i in range(r, r + window):
                    for j in range(c, c + window):
                        total[i, j] += drop
                        count[i, j] += 1
    return total / count


@pytest.mark.parametrize("window, stride, baseline", [(4, 3, 0.5), (3, 3, 0.0), (5, 2, 1.0), (12, 1, 0.2)])
def test_occlusion_matches_brute_force(window, stride, baseline):
    model = tiny_model().eval()
    x = torch.rand(2, 3, 12, 11, dtype=torch.float64)
    maps = occlusion(model, x, [2, 0], window=min(window, 11), stride=stride, baseline=baseline, chunk_size=7)
    for b, t in enumerate([2, 0]):
        expected = brute_force(model, x[b : b + 1], t, min(window, 11), stride, baseline)
        assert torch.allclose(maps[b], expected, atol=1e-12)


def test_one_pixel_windows_on_a_linear_model_give_the_closed_form():
    torch.manual_seed(1)
    weights = torch.randn(3, 6, 6, dtype=torch.float64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(108, 2, bias=True)).double()
    with torch.no_grad():
        model[1].weight[1] = weights.flatten()
    x = torch.rand(1, 3, 6, 6, dtype=torch.float64)
    maps = occlusion(model, x, 1, window=1, stride=1, baseline=0.25)
    assert torch.allclose(maps[0], (weights * (x[0] - 0.25)).sum(0))


def test_chunk_size_changes_nothing_and_normalize_scales():
    model = tiny_model(2).eval()
    x = torch.rand(2, 3, 10, 10, dtype=torch.float64)
    a = occlusion(model, x, 1, window=4, stride=2, chunk_size=1)
    b = occlusion(model, x, 1, window=4, stride=2, chunk_size=1000)
    assert torch.allclose(a, b, atol=1e-12)
    n = occlusion(model, x, 1, window=4, stride=2, rescale=True)
    assert torch.allclose(n.amin((1, 2)), torch.zeros(2, dtype=n.dtype))
    assert torch.allclose(n.amax((1, 2)), torch.ones(2, dtype=n.dtype))


def test_model_is_left_as_it_was():
    model = tiny_model()
    model.train()
    model[0].weight.requires_grad_(False)
    occlusion(model, torch.rand(1, 3, 8, 8, dtype=torch.float64), 0, window=4, stride=4)
    assert model.training and not model[0].weight.requires_grad and model[4].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


@pytest.mark.parametrize("size, window, stride", [(10, 3, 3), (224, 32, 16), (7, 7, 1), (9, 5, 5)])
def test_window_positions_cover_every_pixel(size, window, stride):
    starts = window_positions(size, window, stride)
    covered = set()
    for s in starts:
        covered.update(range(s, s + window))
    assert covered == set(range(size)) and starts[0] == 0 and starts[-1] == size - window


def test_errors():
    model = tiny_model().eval()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="window"):
        occlusion(model, x, 0, window=9)
    with pytest.raises(ValueError, match="stride"):
        occlusion(model, x, 0, window=2, stride=0)
    with pytest.raises(ValueError, match="uncovered"):
        occlusion(model, x, 0, window=2, stride=3)
    with pytest.raises(ValueError, match="chunk_size"):
        occlusion(model, x, 0, window=2, stride=1, chunk_size=0)
    with pytest.raises(ValueError, match="targets for a batch"):
        occlusion(model, x, [0, 1], window=2, stride=1)


def test_without_chunk_size_occlusion_runs_default_chunk_size_images_a_pass(monkeypatch):
    from xai_helpers import core

    model = tiny_model().eval()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    reference = occlusion(model, x, 0, window=2, stride=1, chunk_size=1)
    monkeypatch.setattr(core, "CPU_PIXELS_PER_FORWARD", 3 * 8 * 8)       # 3 images of 8 x 8 a pass
    with count_passes(model) as count:
        by_default = occlusion(model, x, 0, window=2, stride=1)
    sizes = count.forward_batches
    assert sizes[0] == 1 and max(sizes[1:]) == 3 and sum(sizes[1:]) == 49   # the clean image, then 7 x 7 windows
    assert torch.allclose(by_default, reference, atol=1e-12)


def test_occlusion_chunks_are_equal_not_a_full_run_and_a_remainder():
    model = tiny_model().eval()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    with count_passes(model) as count:
        chunked = occlusion(model, x, 0, window=4, stride=2, chunk_size=4)   # 3 x 3 = 9 windows
    assert count.forward_batches == [1, 3, 3, 3]                             # the clean image, then 9 as 3 + 3 + 3
    assert torch.allclose(chunked, occlusion(model, x, 0, window=4, stride=2, chunk_size=1), atol=1e-12)
