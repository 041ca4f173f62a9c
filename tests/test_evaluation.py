"""Tests for xai_helpers.evaluation on cases whose answer is known.

* AUC: the trapezoid rule on curves with closed-form areas; a model whose logit is the mean pixel
  gives the straight lines ``1 - f`` (deletion) and ``f`` (insertion), area 1/2, for any map.
* Ordering: on an additive model whose exact per-pixel contributions are known, the perfect map
  beats a random map, which beats the reversed map (insertion high, deletion low).
* Pointing game and energy on hand-made maps and masks, with and without tolerance.
"""
import pytest
import torch
from torch import nn

from xai_helpers.cost import count_passes
from xai_helpers.evaluation import (
    Curve,
    OutputOf,
    baseline_image,
    deletion_and_insertion,
    deletion_curve,
    energy_in_mask,
    insertion_curve,
    map_similarity,
    perturbation_curve,
    perturbation_order,
    pointing_game,
)


class MeanPixel(nn.Module):
    """Logits ``[mean(x), 0]``: deleting k of N pixels of a white image to black leaves ``1 - k/N``."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([m, torch.zeros_like(m)], 1)


class Additive(nn.Module):
    """Two classes; the logit difference is ``sum_ij W_ij sum_c x_cij - t``, so a pixel's contribution is known."""

    def __init__(self, weights, offset):
        super().__init__()
        self.weights, self.offset = weights, offset

    def forward(self, x):
        s = (x.sum(1) * self.weights).flatten(1).sum(1) - self.offset
        return torch.stack([s, torch.zeros_like(s)], 1)


# ----------------------------------------------------------------------------- AUC and curves


def test_auc_is_the_trapezoid_rule():
    f = torch.tensor([0.0, 0.5, 1.0])
    curve = Curve(f, torch.tensor([[1.0, 0.5, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]))
    assert torch.allclose(curve.auc, torch.tensor([0.5, 1.0, 0.5]))
    uneven = Curve(torch.tensor([0.0, 0.25, 1.0]), torch.tensor([[0.0, 1.0, 1.0]]))
    assert torch.allclose(uneven.auc, torch.tensor([0.125 + 0.75]))


@pytest.mark.parametrize("step", [1 / 16, 0.1, 7, 64, 1.0])
def test_mean_pixel_model_gives_straight_lines(step):
    x = torch.ones(2, 3, 8, 8, dtype=torch.float64)
    maps = torch.rand(2, 8, 8, dtype=torch.float64)
    deletion = deletion_curve(MeanPixel(), x, maps, 0, step=step, baseline=0.0, score="logit", chunk_size=5)
    insertion = insertion_curve(MeanPixel(), x, maps, 0, step=step, baseline=0.0, score="logit", chunk_size=5)
    f = deletion.fractions
    assert f[0] == 0 and f[-1] == 1 and (f.diff() > 0).all()
    assert torch.allclose(deletion.scores, (1 - f).expand(2, -1)) and torch.allclose(insertion.scores, f.expand(2, -1))
    assert torch.allclose(deletion.auc, torch.full((2,), 0.5, dtype=torch.float64))
    assert torch.allclose(insertion.auc, torch.full((2,), 0.5, dtype=torch.float64))


def test_step_sizes():
    x = torch.ones(1, 3, 8, 8)
    maps = torch.rand(1, 8, 8)
    assert len(deletion_curve(MeanPixel(), x, maps, 0, step=1 / 16).fractions) == 17
    assert len(deletion_curve(MeanPixel(), x, maps, 0, step=10).fractions) == 8  # 0, 10, ..., 60, 64
    assert len(deletion_curve(MeanPixel(), x, maps, 0, step=1).fractions) == 65


def known_setup(seed=0):
    gen = torch.Generator().manual_seed(seed)
    weights = torch.rand(12, 12, generator=gen, dtype=torch.float64) * (torch.rand(12, 12, generator=gen) < 0.4)
    x = torch.rand(3, 3, 12, 12, generator=gen, dtype=torch.float64)
    contributions = x.sum(1) * weights                  # exact share of each pixel in the logit
    model = Additive(weights, offset=0.5 * contributions[0].sum())
    return model, x, contributions


@pytest.mark.parametrize("score", ["probability", "logit"])
def test_perfect_random_reversed_ordering(score):
    model, x, perfect = known_setup()
    random_map = torch.rand(perfect.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    kwargs = dict(step=1 / 24, baseline=0.0, score=score)
    ins = {name: insertion_curve(model, x, m, 0, **kwargs).auc for name, m in
           [("perfect", perfect), ("random", random_map), ("reversed", -perfect)]}
    dele = {name: deletion_curve(model, x, m, 0, **kwargs).auc for name, m in
            [("perfect", perfect), ("random", random_map), ("reversed", -perfect)]}
    assert (ins["perfect"] > ins["random"]).all() and (ins["random"] > ins["reversed"]).all()
    assert (dele["perfect"] < dele["random"]).all() and (dele["random"] < dele["reversed"]).all()


def test_chunk_size_changes_nothing():
    model, x, perfect = known_setup(2)
    a = deletion_curve(model, x, perfect, [0, 1, 0], step=5, baseline="blur", chunk_size=1)
    b = deletion_curve(model, x, perfect, [0, 1, 0], step=5, baseline="blur", chunk_size=1000)
    assert torch.allclose(a.scores, b.scores, atol=1e-12)


def test_perturbed_images_go_through_the_model_in_equal_chunks_of_at_most_chunk_size():
    model, x, perfect = known_setup(3)   # 3 images of 144 pixels; 3 pixels a step: 49 points each
    with count_passes(model) as count:
        deletion_curve(model, x, perfect, 0, step=3, baseline=0.0, chunk_size=32)
    sizes = count.forward_batches
    assert sum(sizes) == 3 * 49
    assert sorted(sizes) == [29, 29, 29, 30, 30], sizes      # 147 as 5 chunks, not 4 x 32 + 19


def test_without_chunk_size_the_curves_use_the_default_and_agree():
    model, x, perfect = known_setup(3)            # 12 x 12 pixels: all 147 images fit in one chunk
    with count_passes(model) as count:
        auto = deletion_curve(model, x, perfect, 0, step=3, baseline=0.0)
    assert count.forward_batches == [3 * 49]
    one_by_one = deletion_curve(model, x, perfect, 0, step=3, baseline=0.0, chunk_size=1)
    assert torch.allclose(auto.scores, one_by_one.scores, atol=1e-12)
    with pytest.raises(ValueError, match="chunk_size"):
        deletion_curve(model, x, perfect, 0, chunk_size=0)


def test_curves_start_and_end_at_the_image_and_the_baseline():
    model, x, perfect = known_setup(3)
    base = baseline_image(x, "blur")
    with torch.no_grad():
        p_image, p_base = model(x).softmax(1)[:, 1], model(base).softmax(1)[:, 1]
    d = deletion_curve(model, x, perfect, 1, step=0.25)
    i = insertion_curve(model, x, perfect, 1, step=0.25)
    assert torch.allclose(d.scores[:, 0], p_image) and torch.allclose(d.scores[:, -1], p_base)
    assert torch.allclose(i.scores[:, 0], p_base) and torch.allclose(i.scores[:, -1], p_image)


@pytest.mark.parametrize("step", [0.25, 7])
def test_both_curves_together_are_the_two_curves_for_two_passes_fewer_per_image(step):
    model, x, perfect = known_setup(4)
    options = dict(step=step, baseline="blur", chunk_size=5)
    with count_passes(model) as separate:
        expected = (deletion_curve(model, x, perfect, [1, 0, 1], **options),
                    insertion_curve(model, x, perfect, [1, 0, 1], **options))
    with count_passes(model) as together:
        got = deletion_and_insertion(model, x, perfect, [1, 0, 1], **options)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g.fractions, e.fractions)
        torch.testing.assert_close(g.scores, e.scores, rtol=1e-6, atol=1e-7)
    points = expected[0].scores.shape[1]
    assert separate.forward == 2 * points * len(x) and together.forward == 2 * (points - 1) * len(x)
    assert not got[0].scores.is_inference() and not got[1].scores.requires_grad


@pytest.mark.parametrize("score", ["probability", "logit"])
def test_logits_of_the_explanation_spare_the_unperturbed_pass(score):
    from xai_helpers import registry
    model, x, perfect = known_setup(3)
    options = dict(step=0.25, baseline=0.0, chunk_size=4, score=score)
    expected = deletion_and_insertion(model, x, perfect, [1, 0, 1], **options)
    with OutputOf(model, x) as seen:
        registry.attribute("saliency", model, x, [1, 0, 1])
    torch.testing.assert_close(seen.logits, model(x))
    with count_passes(model) as reused:
        got = deletion_and_insertion(model, x, perfect, [1, 0, 1], logits=seen.logits, **options)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g.scores, e.scores, rtol=1e-6, atol=1e-7)
    points = expected[0].scores.shape[1]
    assert reused.forward == (2 * (points - 1) - 1) * len(x)
    # One curve alone, too; and logits that are not the model's output for x move the end point.
    alone = deletion_curve(model, x, perfect, [1, 0, 1], logits=seen.logits, **options)
    torch.testing.assert_close(alone.scores, expected[0].scores, rtol=1e-6, atol=1e-7)
    wrong = insertion_curve(model, x, perfect, [1, 0, 1],
                            logits=seen.logits + 1.0 if score == "logit" else -seen.logits, **options)
    assert not torch.allclose(wrong.scores[:, -1], expected[1].scores[:, -1])
    with pytest.raises(ValueError, match="logits"):
        deletion_curve(model, x, perfect, [1, 0, 1], logits=seen.logits[:2], **options)


def test_output_of_records_only_a_call_on_x_and_removes_its_hook():
    model, x, _ = known_setup(2)
    with OutputOf(model, x) as seen:
        model(x + 1.0)
    assert seen.logits is None and not model._forward_hooks
    with pytest.raises(RuntimeError, match="boom"):
        with OutputOf(model, x):
            raise RuntimeError("boom")
    assert not model._forward_hooks


def test_baselines():
    x = torch.rand(2, 3, 20, 20)
    assert torch.equal(baseline_image(x, 0.5), torch.full_like(x, 0.5))
    flat = torch.full((1, 3, 20, 20), 0.3)
    assert torch.allclose(baseline_image(flat, "blur"), flat)  # blurring a constant image changes nothing
    blurred = baseline_image(x, "blur")
    assert blurred.shape == x.shape and blurred.std() < x.std() / 3
    assert torch.allclose(blurred.mean(), x.mean(), atol=0.02)
    grey = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    assert torch.equal(baseline_image(x, grey)[1, :, 5, 5], grey.flatten())
    with pytest.raises(ValueError, match="baseline"):
        baseline_image(x, "noise")


def test_perturbation_order_is_a_ranking_with_random_ties():
    maps = torch.tensor([[[0.1, 0.9], [0.5, 0.3]]])
    assert perturbation_order(maps).tolist() == [[3, 0, 1, 2]]
    flat = perturbation_order(torch.zeros(1, 16, 16))
    assert sorted(flat[0].tolist()) == list(range(256))
    assert flat[0, :16].float().mean() > 40  # ties are not taken in raster order (top row first)
    assert torch.equal(flat, perturbation_order(torch.zeros(1, 16, 16)))  # but reproducibly


def test_curve_errors_and_model_state():
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model.train()
    x = torch.rand(1, 3, 8, 8)
    deletion_curve(model, x, torch.rand(1, 8, 8), 0)
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="maps must be"):
        deletion_curve(model, x, torch.rand(1, 4, 4), 0)
    with pytest.raises(ValueError, match="fractional step"):
        deletion_curve(model, x, torch.rand(1, 8, 8), 0, step=1.5)
    with pytest.raises(ValueError, match="at least 1 pixel"):
        deletion_curve(model, x, torch.rand(1, 8, 8), 0, step=0)
    with pytest.raises(ValueError, match="score"):
        insertion_curve(model, x, torch.rand(1, 8, 8), 0, score="margin")
    with pytest.raises(ValueError, match="kind"):
        perturbation_curve(model, x, torch.rand(1, 8, 8), 0, kind="both")


# ----------------------------------------------------------------------------- pointing game and energy


def square_mask():
    mask = torch.zeros(1, 10, 10, dtype=torch.bool)
    mask[0, 3:6, 3:6] = True
    return mask


def peak_at(i, j):
    m = torch.zeros(1, 10, 10)
    m[0, i, j] = 1.0
    return m


def test_pointing_game_hits_misses_and_tolerance():
    mask = square_mask()
    assert pointing_game(peak_at(4, 4), mask).tolist() == [True]
    assert pointing_game(peak_at(5, 5), mask).tolist() == [True]
    assert pointing_game(peak_at(6, 4), mask).tolist() == [False]
    assert pointing_game(peak_at(6, 4), mask, tolerance=1).tolist() == [True]
    assert pointing_game(peak_at(7, 7), mask, tolerance=1).tolist() == [False]
    assert pointing_game(peak_at(7, 7), mask, tolerance=2).tolist() == [True]   # diagonal: square window
    batch = torch.cat([peak_at(4, 4), peak_at(0, 0)])
    assert pointing_game(batch, mask.expand(2, -1, -1)).tolist() == [True, False]
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(peak_at(4, 4), mask, tolerance=-1)


def test_energy_is_one_inside_and_the_area_share_for_a_flat_map():
    mask = square_mask()
    inside = torch.rand(1, 10, 10) * mask
    assert torch.allclose(energy_in_mask(inside, mask), torch.ones(1))
    assert torch.allclose(energy_in_mask(torch.ones(1, 10, 10), mask), torch.tensor([9 / 100]))
    assert torch.allclose(energy_in_mask(torch.ones(1, 10, 10) * ~mask, mask), torch.zeros(1))
    assert energy_in_mask(torch.zeros(1, 10, 10), mask).tolist() == [0.0]
    with pytest.raises(ValueError, match="non-negative"):
        energy_in_mask(-torch.ones(1, 10, 10), mask)
    with pytest.raises(ValueError, match="differ in shape"):
        energy_in_mask(torch.ones(1, 5, 5), mask)


# ----------------------------------------------------------------------------- similarity


def test_map_similarity_of_identical_and_unrelated_maps():
    pytest.importorskip("xai_helpers.sanity")
    torch.manual_seed(0)
    a = torch.rand(2, 16, 16)
    same = map_similarity(a, a)
    assert torch.allclose(same["spearman"], torch.ones(2), atol=1e-5)
    assert torch.allclose(same["ssim"], torch.ones(2), atol=1e-5)
    reversed_ = map_similarity(a, -a)
    assert torch.allclose(reversed_["spearman"], -torch.ones(2), atol=1e-5)

