"""Concept activation vectors, TCAV and network dissection, checked against constructions whose
answer is known without training: Gaussian clouds along a known direction, models whose logit is a
known function of the layer, hand-made masks and maps."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xai_helpers import concepts as C
from xai_helpers.stats import holm

D = 20  # activations of the constructed examples: images [N, 1, 4, 5], flattened


def _unit(gen: torch.Generator, d: int = D) -> torch.Tensor:
    u = torch.randn(d, generator=gen, dtype=torch.float64)
    return u / u.norm()


def _as_images(a: torch.Tensor) -> torch.Tensor:
    return a.reshape(-1, 1, 4, 5)


# ----------------------------------------------------------------------------- CAVs


def test_cav_recovers_the_direction_two_clouds_are_separated_along():
    gen = torch.Generator().manual_seed(0)
    u, offset = _unit(gen), 3.0 * _unit(gen)  # a common offset: the boundary need not pass through 0
    concept = offset + 1.5 * u + 0.5 * torch.randn(400, D, generator=gen, dtype=torch.float64)
    random = offset - 1.5 * u + 0.5 * torch.randn(400, D, generator=gen, dtype=torch.float64)
    cav = C.train_cav(concept, random, seed=0)
    assert cav.direction.shape == (D,) and cav.direction.dtype == torch.float64
    assert abs(float(cav.direction.norm()) - 1) < 1e-12
    assert float(cav.direction @ u) > 0.95  # along u, towards the concept
    assert cav.accuracy > 0.97 and cav.train_accuracy > 0.97  # Bayes accuracy Phi(3) = 0.9987
    assert abs(float(cav.decision(offset[None]))) < 0.1  # the boundary passes half-way between the means
    assert (cav.n_concept, cav.n_random) == (400, 400)
    swapped = C.train_cav(random, concept, seed=0)
    assert float(swapped.direction @ u) < -0.95


def test_cav_on_identical_clouds_is_at_chance():
    gen = torch.Generator().manual_seed(1)
    accuracies = [
        C.train_cav(torch.randn(200, D, generator=gen), torch.randn(200, D, generator=gen), seed=s).accuracy
        for s in range(5)
    ]
    assert 0.4 < sum(accuracies) / 5 < 0.6, accuracies


def test_cav_is_seeded_and_ignores_the_scale_and_offset_of_the_activations():
    gen = torch.Generator().manual_seed(2)
    concept, random = torch.randn(60, D, generator=gen) + 0.5, torch.randn(80, D, generator=gen)
    a = C.train_cav(concept, random, seed=3)
    b = C.train_cav(concept, random, seed=3)
    assert torch.equal(a.direction, b.direction) and a.accuracy == b.accuracy
    scaled = C.train_cav(1000 * concept + 7, 1000 * random + 7, seed=3)
    assert torch.allclose(scaled.direction, a.direction, atol=1e-6)
    assert scaled.accuracy == a.accuracy
    other_split = C.train_cav(concept, random, seed=4)
    assert not torch.equal(other_split.direction, a.direction)


def test_cav_errors():
    x = torch.randn(10, D)
    with pytest.raises(ValueError, match="differ in size"):
        C.train_cav(x, torch.randn(10, D + 1))
    with pytest.raises(ValueError, match="at least 2 examples"):
        C.train_cav(x[:1], x)
    with pytest.raises(ValueError, match="test_fraction"):
        C.train_cav(x, x + 1, test_fraction=1.0)
    with pytest.raises(ValueError, match="could not be separated"):
        C.train_cav(torch.ones(10, D), torch.ones(10, D))


# ----------------------------------------------------------------------------- activations, gradients, derivatives


class Boom(nn.Module):
    def forward(self, x):
        raise AssertionError("the forward pass should have stopped at the layer")


def test_layer_activations_stop_at_the_layer_and_restore_the_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), Boom()).train()
    x = torch.rand(7, 1, 4, 5)
    acts = C.layer_activations(model, x, "1", chunk_size=3)
    expected = torch.relu(model[0](x)).detach()
    assert acts.shape == (7, 3 * 4 * 5) and torch.allclose(acts, expected.flatten(1))
    assert torch.allclose(C.layer_activations(model, x, "1", flatten=False), expected)
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_directional_derivative_of_a_linear_head_is_w_dot_v():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Identity(), nn.Linear(D, 3)).double()
    x = _as_images(torch.randn(12, D, dtype=torch.float64))
    v = _unit(torch.Generator().manual_seed(5))
    for k in range(3):
        derivatives = C.directional_derivatives(model, x, k, "1", v, chunk_size=5)
        w = model[2].weight[k].detach()
        assert derivatives.shape == (12,)
        assert torch.allclose(derivatives, (w @ v).expand(12), rtol=0, atol=1e-12)
        along = C.CAV(w / w.norm(), 0.0, 1.0, 1.0, 1, 1, 1e-2)
        assert C.tcav_score(C.directional_derivatives(model, x, k, "1", along)) == 1.0
        against = C.CAV(-w / w.norm(), 0.0, 1.0, 1.0, 1, 1, 1e-2)
        assert C.tcav_score(C.directional_derivatives(model, x, k, "1", against)) == 0.0


def test_directional_derivatives_match_a_jacobian_vector_product():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x = _as_images(torch.randn(9, D, dtype=torch.float64))
    v = _unit(torch.Generator().manual_seed(6), 8)
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    derivatives = C.directional_derivatives(model, x, targets, "1", v, chunk_size=4)
    a = model[1](model[0](x)).detach()
    head = nn.Sequential(model[2], model[3])
    _, jvp = torch.autograd.functional.jvp(head, a, v.expand_as(a))  # d/dt head(a + t v) at t = 0
    assert torch.allclose(derivatives, jvp.gather(1, targets[:, None])[:, 0], atol=1e-12)
    assert not any(p.grad is not None for p in model.parameters())


def test_tcav_score_counts_strictly_positive_derivatives():
    assert C.tcav_score(torch.tensor([1.0, -1.0, 0.0, 2.0])) == 0.5
    with pytest.raises(ValueError):
        C.tcav_score(torch.tensor([]))


# ----------------------------------------------------------------------------- TCAV and its test


class KnownLogit(nn.Module):
    """logit_0 = u . a + (c / 2) |a|^2 and logit_1 = 0, with a = flatten(x) at layer ``flat``.

    The gradient at the layer is u + c a, so along a unit vector v the derivative is u . v + c a . v:
    for v = u about 1 + c N(0, 1) (positive for nearly every image: TCAV score near 1), for a v
    unrelated to u about c N(0, 1) around a small u . v (a score that varies around 0.5)."""

    def __init__(self, u: torch.Tensor, c: float = 0.3):
        super().__init__()
        self.flat = nn.Flatten()
        self.register_buffer("u", u)
        self.c = c

    def forward(self, x):
        a = self.flat(x)
        s = a @ self.u + 0.5 * self.c * (a * a).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


def _tcav_setting(seed: int, n_sets: int = 12):
    """The model above, 100 class images a ~ N(0, I), ``n_sets`` random sets a ~ N(0, I / 4), a planted
    concept a ~ N(2.5 u, I / 4) and a "concept" drawn like the random sets (60 examples each)."""
    gen = torch.Generator().manual_seed(seed)
    u = _unit(gen)
    model = KnownLogit(u).double()
    class_images = _as_images(torch.randn(100, D, generator=gen, dtype=torch.float64).clamp(-4, 4))
    random_sets = [_as_images(0.5 * torch.randn(60, D, generator=gen, dtype=torch.float64)) for _ in range(n_sets)]
    planted = _as_images(2.5 * u + 0.5 * torch.randn(60, D, generator=gen, dtype=torch.float64))
    like_random = _as_images(0.5 * torch.randn(60, D, generator=gen, dtype=torch.float64))
    return model, class_images, random_sets, planted, like_random


def test_tcav_finds_a_planted_concept_and_not_a_random_one():
    model, class_images, random_sets, planted, like_random = _tcav_setting(0)
    result = C.tcav(
        model, class_images, 0, "flat", planted, random_sets, n_random_concepts=6, seed=0, concept="planted"
    )
    assert result.concept == "planted" and result.layer == "flat" and result.target == 0
    assert (result.n_runs, result.n_random_concepts) == (6, 6) and result.random_scores.shape == (6, 6)
    assert result.mean > 0.95 and result.interval().low > result.random_mean
    assert result.effect == pytest.approx(result.mean - result.random_mean) and result.effect > 0.2
    assert 0.2 < result.random_mean < 0.8 and result.random_std > 0.05
    assert float(result.cav_accuracies.min()) > 0.9  # the clouds are 5 sd apart: Bayes accuracy Phi(2.5) = 0.994
    assert result.p_value < 1e-3 and result.significant()
    assert result.p_sets is not None and result.p_sets < 0.05 and result.significant(test="sets")
    null = C.tcav(model, class_images, 0, "flat", like_random, random_sets, n_random_concepts=6, seed=0)
    assert not null.significant(test="sets")
    assert torch.equal(null.random_scores, result.random_scores)  # the same null sample
    assert "two-sided t-test over runs" in str(result) and "against 6 random concepts" in str(result)


def test_tcav_runs_are_the_counter_sets_after_the_pseudo_concepts():
    model, class_images, random_sets, planted, _ = _tcav_setting(0, n_sets=5)
    result = C.tcav(model, class_images, 0, "flat", planted, random_sets, n_runs=3, seed=0)
    assert (result.n_runs, result.n_random_concepts) == (3, 1) and result.p_sets is None
    gradients = C.layer_gradients(model, class_images, 0, "flat").double()
    acts = [C.layer_activations(model, r, "flat") for r in random_sets]
    concept = C.layer_activations(model, planted, "flat")
    for i in range(3):  # run i: counter-set 1 + i, split seed i; the pseudo-concept is set 0
        assert result.scores[i] == C.tcav_score(gradients @ C.train_cav(concept, acts[1 + i], seed=i).direction)
        assert result.random_scores[0, i] == C.tcav_score(
            gradients @ C.train_cav(acts[0], acts[1 + i], seed=i).direction
        )
    with pytest.raises(ValueError, match="at least 2 random pseudo-concepts"):
        result.significant(test="sets")


def test_tcav_set_level_test_keeps_its_level_under_the_null():
    # A "concept" drawn like the random sets is exchangeable with them: the set-level test should
    # reject at about its nominal 5 %. (The runs t-test, which ignores that the runs share one
    # concept set, rejects about 18 of 100 such experiments.)
    rejections = 0
    for seed in range(40):
        model, class_images, random_sets, _, like_random = _tcav_setting(1000 + seed, n_sets=10)
        result = C.tcav(model, class_images, 0, "flat", like_random, random_sets, n_random_concepts=6, seed=seed)
        rejections += result.significant(test="sets")
    assert rejections <= 5, f"{rejections} of 40 null experiments rejected at 5 %"


def test_tcav_concepts_applies_holm_to_both_tests():
    model, class_images, random_sets, planted, like_random = _tcav_setting(0)
    results = C.tcav_concepts(
        model,
        class_images,
        0,
        "flat",
        {"planted": planted, "like_random": like_random},
        random_sets,
        n_random_concepts=6,
        n_runs=5,
        seed=0,
    )
    runs = holm({name: r.p_value for name, r in results.items()})
    sets = holm({name: r.p_sets for name, r in results.items()})
    for name, r in results.items():
        assert r.n_runs == 5 and r.p_adjusted == pytest.approx(runs[name]) and r.p_adjusted >= r.p_value
        assert r.p_sets_adjusted == pytest.approx(sets[name])
    assert results["planted"].significant(test="sets") and not results["like_random"].significant(test="sets")
    single = C.tcav(model, class_images, 0, "flat", planted, random_sets, n_random_concepts=6, n_runs=5, seed=0)
    assert single.p_adjusted is None and torch.equal(single.scores, results["planted"].scores)


def test_the_two_tests_on_constant_samples():
    ones, zeros = torch.ones(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    assert C._t_test(ones, ones, True) == 1.0 and C._t_test(ones, zeros, True) == 0.0
    assert C._set_test(1.0, ones) == 1.0 and C._set_test(0.5, ones) == 0.0
    # the prediction t statistic by hand: means 0.4, 0.5, 0.6 (mbar 0.5, s 0.1), m = 0.8
    t = 0.3 / (0.1 * math.sqrt(1 + 1 / 3))
    from scipy import stats

    assert C._set_test(0.8, torch.tensor([0.4, 0.5, 0.6], dtype=torch.float64)) == pytest.approx(2 * stats.t.sf(t, 2))


def test_tcav_errors():
    model, class_images, random_sets, planted, _ = _tcav_setting(0, n_sets=4)
    with pytest.raises(ValueError, match="at least 3 image tensors"):
        C.tcav(model, class_images, 0, "flat", planted, random_sets[:2])
    with pytest.raises(ValueError, match="n_random_concepts"):
        C.tcav(model, class_images, 0, "flat", planted, random_sets, n_random_concepts=3)
    with pytest.raises(ValueError, match="n_runs"):
        C.tcav(model, class_images, 0, "flat", planted, random_sets, n_runs=4)
    with pytest.raises(TypeError, match="one class index"):
        C.tcav(model, class_images, [0] * 100, "flat", planted, random_sets)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- dissection


def test_unit_thresholds_are_the_quantiles_over_the_data_set():
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(5, 3, 6, 7, generator=gen)
    for q in (0.0, 0.5, 0.9, 0.995, 1.0):
        expected = torch.quantile(acts.transpose(0, 1).reshape(3, -1).double(), q, dim=1)
        assert torch.allclose(C.unit_thresholds(acts, q), expected, atol=1e-12)
    ramp = torch.arange(1000.0).reshape(10, 1, 10, 10)  # values 0..999 of one unit
    t = float(C.unit_thresholds(ramp)[0])
    assert t == pytest.approx(0.995 * 999)  # 994.005
    assert int((ramp >= t).sum()) == 5  # 0.5 % of the 1000 positions


def _square_masks(
    n: int, size: int, side: int, gen: torch.Generator, shift: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of a side x side square per image and the same square shifted right by ``shift``."""
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    shifted = torch.zeros_like(masks)
    for i in range(n):
        top, left = (int(v) for v in torch.randint(0, size - side - shift + 1, (2,), generator=gen))
        masks[i, top : top + side, left : left + side] = True
        shifted[i, top : top + side, left + shift : left + shift + side] = True
    return masks, shifted


def test_unit_iou_of_exact_shifted_and_mixed_units():
    gen = torch.Generator().manual_seed(0)
    masks, shifted = _square_masks(4, 16, 6, gen, shift=3)
    mixed = torch.cat([masks[:2], shifted[2:]])
    acts = torch.stack([masks, shifted, mixed], 1).float()  # [4, 3, 16, 16], each unit 14 % on: T = 1
    assert torch.equal(C.unit_thresholds(acts), torch.ones(3, dtype=torch.float64))
    iou = C.unit_iou(acts, masks)
    assert iou[0] == pytest.approx(1.0)
    assert iou[1] == pytest.approx(18 / 54)  # 3 x 6 shared of 6 x 6 + 6 x 6 - 3 x 6
    assert iou[2] == pytest.approx(108 / 180)  # accumulated over images, not the mean 2/3 of their IoUs


def test_unit_iou_upsamples_bilinearly_before_thresholding():
    ramp = torch.arange(4.0).expand(1, 1, 4, 4)  # a unit that grows linearly from left to right
    right_half = torch.zeros(1, 16, 16, dtype=torch.bool)
    right_half[..., 8:] = True
    # Pixel X of 16 samples the 4-wide map at (X + 0.5) / 4 - 0.5; the ramp there is that value.
    assert C.unit_iou(ramp, right_half, thresholds=torch.tensor([1.5]))[0] == pytest.approx(1.0)  # X >= 8
    assert C.unit_iou(ramp, right_half, thresholds=torch.tensor([2.0]))[0] == pytest.approx(6 / 8)  # X >= 10


def test_unit_iou_table_is_chunk_free_and_constant_units_score_zero(monkeypatch):
    gen = torch.Generator().manual_seed(1)
    masks, shifted = _square_masks(6, 12, 4, gen, shift=2)
    acts = torch.cat([torch.rand(6, 5, 6, 6, generator=gen), torch.zeros(6, 1, 6, 6)], 1)
    acts[:, 0] += F.avg_pool2d(masks[:, None].float(), 2)[:, 0]  # unit 0 follows the squares
    table = C.unit_iou_table(acts, {"square": masks, "shifted": shifted})
    assert table.shape == (6, 2) and table[5].eq(0).all()
    assert torch.allclose(table[:, 0], C.unit_iou(acts, masks))
    assert int(table[:, 0].argmax()) == 0
    monkeypatch.setattr(C, "_IOU_STEP_ELEMENTS", 300)  # one image and two units a step
    assert torch.allclose(C.unit_iou_table(acts, {"square": masks, "shifted": shifted}), table)


def test_dissect_names_the_units_that_copy_the_masks():
    gen = torch.Generator().manual_seed(2)
    a, _ = _square_masks(8, 16, 5, gen)
    b, _ = _square_masks(8, 16, 7, gen)
    images = torch.stack([a.float(), torch.rand(8, 16, 16, generator=gen), b.float()], 1)  # [8, 3, 16, 16]
    model = nn.Sequential(nn.Identity(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    result = C.dissect(model, "0", images, {"a": a, "b": b})
    assert result.layer == "0" and result.concepts == ("a", "b") and result.iou.shape == (3, 2)
    assert result.best_concept[0] == "a" and result.best_concept[2] == "b"
    assert result.best_iou[0] == pytest.approx(1.0) and result.best_iou[2] == pytest.approx(1.0)
    assert result.top_units("b", 1) == [(2, pytest.approx(1.0))]
    assert set(result.detectors(0.5)) == {0, 2}


def test_dissection_errors():
    with pytest.raises(ValueError, match=r"\[N, K, h, w\]"):
        C.unit_iou(torch.rand(2, 3, 4), torch.zeros(2, 4, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        C.unit_iou(torch.rand(2, 3, 4, 4), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="one per image"):
        C.unit_iou(torch.rand(2, 3, 4, 4), torch.zeros(3, 4, 4, dtype=torch.bool))


# ----------------------------------------------------------------------------- concept relevance propagation


def _small_cnn(seed: int = 0) -> nn.Module:
    from xai_helpers.models import SmallCNN

    torch.manual_seed(seed)
    model = SmallCNN(num_classes=3, width=4).eval()
    with torch.no_grad():  # batch-norm statistics away from the identity, so the canonizer matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


def test_concept_relevance_over_every_channel_sums_to_the_lrp_map():
    from model_state import assert_untouched, snapshot

    from xai_helpers.methods.propagation import lrp

    model, x = _small_cnn(), torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    before = snapshot(model)
    k = model.conv2.out_channels
    parts = torch.stack([C.concept_relevance(model, x, 1, layer="relu2", channels=c) for c in range(k)])
    whole = lrp(model, x, 1)
    assert torch.allclose(parts.sum(0), whole, rtol=1e-4, atol=1e-6 * float(whole.abs().max()))
    # a set of channels is the sum of its members, and one channel per image picks that image's map
    pair = C.concept_relevance(model, x, 1, layer="relu2", channels=[0, 2])
    assert torch.allclose(pair, parts[0] + parts[2], rtol=1e-4, atol=1e-7)
    per_image = C.concept_relevance(model, x, 1, layer="relu2", channels=torch.tensor([0, 3, 1]))
    assert torch.allclose(per_image, torch.stack([parts[0][0], parts[3][1], parts[1][2]]), rtol=1e-4, atol=1e-7)
    assert_untouched(model, before)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


class TwoHalves(nn.Module):
    """Two channels: channel 0 sees only the left half of the image, channel 1 only the right half;
    the logit is their sum. No biases, so LRP-0 conserves relevance exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.relu = nn.ReLU()
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.conv(x))  # [B, 2, H, W]
        w = x.shape[-1] // 2
        return (a[:, 0, :, :w].sum((1, 2)) + a[:, 1, :, w:].sum((1, 2)))[:, None]


def test_concept_relevance_of_a_channel_lies_where_that_channel_reads_and_conserves_its_share():
    from xai_helpers.relevance.composites import uniform
    from xai_helpers.relevance.rules import ZeroRule

    model, x = TwoHalves().eval(), torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(0)) + 0.1
    lrp0 = uniform(ZeroRule())
    shares = C.channel_relevance(model, x, 0, "relu", composite=lrp0)  # [B, 2]
    expected = torch.stack([x[..., :3].sum((1, 2, 3)), 2 * x[..., 3:].sum((1, 2, 3))], 1)  # closed form
    assert torch.allclose(shares, expected, rtol=1e-5)
    left = C.concept_relevance(model, x, 0, layer="relu", channels=0, composite=lrp0)
    right = C.concept_relevance(model, x, 0, layer="relu", channels=1, composite=lrp0)
    assert torch.equal(left[..., 3:], torch.zeros_like(left[..., 3:])) and torch.allclose(left[..., :3], x[..., :3])
    assert torch.equal(right[..., :3], torch.zeros_like(right[..., :3]))
    assert torch.allclose(right.sum((1, 2, 3)), shares[:, 1], rtol=1e-5)


def test_concept_relevance_errors_name_the_fix_and_leave_no_hook():
    model, x = _small_cnn(), torch.rand(2, 3, 16, 16)
    k = model.conv2.out_channels
    with pytest.raises(ValueError, match=rf"indices in \[0, {k}\)"):
        C.concept_relevance(model, x, 0, layer="relu2", channels=k)
    with pytest.raises(ValueError, match="no layer named"):
        C.concept_relevance(model, x, 0, layer="relu9", channels=0)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_unit_masks_upsample_bilinearly_then_threshold():
    a = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]], [[[3.0, 2.0], [1.0, 0.0]]]])  # [2, 1, 2, 2]
    masks = C.unit_masks(a, torch.tensor([1.5]), (4, 4))
    up = F.interpolate(a, size=(4, 4), mode="bilinear", align_corners=False)
    assert masks.dtype == torch.bool and masks.shape == (2, 1, 4, 4)
    # bilinear upsampling by hand: rows 0.25 apart in value along x, 0.5 along y, from 0 to 3
    expected = torch.tensor([[0, 0, 0.0, 0], [0, 0, 0, 1], [1, 1, 1, 1], [1, 1, 1, 1]]).bool()
    assert torch.equal(masks[0, 0], expected) and torch.equal(masks[1, 0], expected.flip(0, 1))
    assert torch.equal(masks, up >= 1.5)
    assert torch.equal(C.unit_masks(a, torch.tensor([2.0]), (2, 2)), a >= 2.0)  # same size: no resampling
