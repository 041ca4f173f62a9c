import pytest
import torch
from torch import nn

from xai_helpers.removal import (
    NEIGHBOUR_WEIGHTS,
    fill_with_mean,
    noisy_linear_imputation,
    remove_and_retrain,
    top_fraction_masks,
)


def test_top_fraction_masks_take_the_largest_values_and_break_ties_at_random():
    maps = torch.arange(100.0).view(1, 10, 10)
    mask = top_fraction_masks(maps, 0.25)
    assert mask.sum() == 25 and mask.flatten()[75:].all() and not mask.flatten()[:75].any()
    flat = torch.zeros(2, 10, 10)
    a, b = top_fraction_masks(flat, 0.3, seed=0), top_fraction_masks(flat, 0.3, seed=1)
    assert a.sum() == 60 and not torch.equal(a, b)
    assert not a[0].flatten()[:30].all()              # not the first rows, as a raster order would give
    with pytest.raises(ValueError, match="fraction"):
        top_fraction_masks(flat, 1.5)
    with pytest.raises(ValueError, match="reduce"):
        top_fraction_masks(torch.zeros(1, 3, 4, 4), 0.5)


def test_fill_with_mean():
    images = torch.rand(4, 3, 8, 8)
    masks = torch.rand(4, 8, 8) > 0.5
    filled = fill_with_mean(images, masks, torch.tensor([0.1, 0.2, 0.3]))
    assert torch.equal(filled[:, :, ~masks[0]][0], images[:, :, ~masks[0]][0])
    assert torch.allclose(filled.permute(0, 2, 3, 1)[masks], torch.tensor([0.1, 0.2, 0.3]).expand(int(masks.sum()), 3))
    default = fill_with_mean(images, masks)
    assert torch.allclose(default.permute(0, 2, 3, 1)[masks][0], images.mean(dim=(0, 2, 3)))
    with pytest.raises(ValueError, match="masks"):
        fill_with_mean(images, masks[:, :4])


def test_imputation_restores_a_linear_ramp_and_keeps_the_kept_pixels():
    ys, xs = torch.meshgrid(torch.arange(20.0), torch.arange(20.0), indexing="ij")
    ramp = torch.stack([0.1 + 0.02 * xs + 0.01 * ys, 0.5 - 0.01 * xs, 0.3 + 0.015 * ys])[None]  # [1, 3, 20, 20]
    hole = torch.zeros(1, 20, 20, dtype=torch.bool)
    hole[:, 4:15, 6:13] = True                        # away from the border, where the weights are whole
    filled = noisy_linear_imputation(ramp, hole, noise=0.0, iterations=20000, tolerance=1e-9)
    assert (filled - ramp).abs().max() < 1e-4
    # A non-linear image is not restored (the test can fail), and the kept pixels never move.
    bump = ramp + 0.3 * torch.exp(-((xs - 9) ** 2 + (ys - 9) ** 2) / 8)
    guess = noisy_linear_imputation(bump, hole, noise=0.0)
    assert (guess - bump).abs().max() > 0.05 and torch.equal(guess[:, :, ~hole[0]], bump[:, :, ~hole[0]])


def test_imputation_solves_the_neighbour_equation_and_adds_seeded_noise():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 12, 12)
    masks = torch.rand(2, 12, 12) > 0.6
    filled = noisy_linear_imputation(images, masks, noise=0.0, iterations=5000, tolerance=1e-9)
    # Each removed pixel equals the weighted mean of its neighbours, weights renormalised at the border.
    padded = nn.functional.pad(filled, (1, 1, 1, 1))
    weights = nn.functional.pad(torch.ones(1, 1, 12, 12), (1, 1, 1, 1))
    total = sum(NEIGHBOUR_WEIGHTS[i, j] * weights[..., i : i + 12, j : j + 12] for i in range(3) for j in range(3))
    mean = sum(NEIGHBOUR_WEIGHTS[i, j] * padded[..., i : i + 12, j : j + 12]
               for i in range(3) for j in range(3)) / total
    removed = masks[:, None].expand_as(images)
    assert (filled - mean)[removed].abs().max() < 1e-5
    noisy = noisy_linear_imputation(images, masks, noise=0.05, seed=3)
    assert torch.equal(noisy, noisy_linear_imputation(images, masks, noise=0.05, seed=3))
    assert 0.03 < (noisy - noisy_linear_imputation(images, masks, noise=0.0))[removed].std() < 0.07
    with pytest.raises(ValueError, match="noise"):
        noisy_linear_imputation(images, masks, noise=-1.0)


def test_remove_and_retrain_detects_a_leaking_mask():
    # The class is which half of the image holds the bright bar. A map that ranks the bar first
    # removes it (the image then says nothing), but its mask says where the bar was.
    gen = torch.Generator().manual_seed(0)
    n = 200
    labels = torch.randint(2, (n,), generator=gen)
    images = 0.1 * torch.rand(n, 1, 8, 8, generator=gen)
    bar = torch.zeros(n, 8, 8, dtype=torch.bool)
    for i in range(n):
        bar[i, 1:7, (1 if labels[i] == 0 else 5) : (3 if labels[i] == 0 else 7)] = True
    images[bar[:, None]] = 1.0
    linear = lambda c: nn.Sequential(nn.Flatten(), nn.Linear(c * 64, 2))   # noqa: E731
    options = dict(epochs=30, lr=0.05, minibatch_size=20, seed=0)
    split = slice(0, 150), slice(150, None)

    def args(maps):
        return images[split[0]], labels[split[0]], maps[split[0]], images[split[1]], labels[split[1]], maps[split[1]]

    exact = remove_and_retrain(linear, *args(bar.float()), 12 / 64, **options)
    random = remove_and_retrain(linear, *args(torch.zeros(n, 8, 8)), 12 / 64, **options)
    assert exact.retrained.float().mean() > 0.95 and exact.mask_only.float().mean() > 0.95      # the hole is the class
    assert random.retrained.float().mean() > 0.95 and random.mask_only.float().mean() < 0.75    # a random hole is not
    assert exact.retrained.shape == (50,) and exact.retrained.dtype == torch.bool
