"""Concept images made in code: shapes, ranges, seeds, and the geometry each pattern promises."""

import math

import pytest
import torch

from xai_helpers import concept_sets as S
from xai_helpers.data import make_shapes


@pytest.mark.parametrize("name", S.CONCEPTS)
def test_every_concept_is_seeded_images_in_the_unit_range(name):
    x = S.concept_images(name, 3, size=24, seed=1)
    assert x.shape == (3, 3, 24, 24) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1 and float(x.std()) > 0.01
    assert torch.equal(x, S.concept_images(name, 3, size=24, seed=1))
    assert not torch.equal(x, S.concept_images(name, 3, size=24, seed=2))


@pytest.mark.parametrize("kind", ["photos", "noise", "mixed"])
def test_random_images_are_seeded_images_in_the_unit_range(kind):
    x = S.random_images(4, size=20, kind=kind, seed=0)
    assert x.shape == (4, 3, 20, 20) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(x, S.random_images(4, size=20, kind=kind, seed=0))
    sets = S.random_counter_sets(3, 4, size=20, kind=kind, seed=0)
    assert len(sets) == 3 and not torch.equal(sets[0], sets[1])
    assert torch.equal(sets[2], S.random_counter_sets(3, 4, size=20, kind=kind, seed=0)[2])


def test_generators_leave_the_global_random_state_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    S.stripes(2, size=16), S.random_images(2, size=16), S.colour_patches(2, "red", size=16)
    assert torch.equal(torch.rand(3), expected)


def test_horizontal_stripes_are_constant_along_rows_and_periodic_down_the_columns():
    maps = S.pattern_maps("stripes", 4, size=48, period=8, angle=0.0, seed=0)
    assert float(maps.std(dim=2).max()) < 1e-6  # every row is constant
    assert torch.allclose(maps[:, 8:], maps[:, :-8], atol=0.07)  # period 8 (one sub-sample may flip)
    assert abs(float(maps.mean()) - 0.5) < 0.03  # bands of half a period
    vertical = S.pattern_maps("stripes", 2, size=48, period=8, angle=math.pi / 2, seed=0)
    assert float(vertical.std(dim=1).max()) < 1e-6  # every column is constant


def test_checkerboard_inverts_under_half_a_period_and_dots_cover_their_area():
    board = S.pattern_maps("checkerboard", 3, size=48, period=8, angle=0.0, seed=0)
    assert torch.allclose(board[..., 4:], 1 - board[..., :-4], atol=0.07)
    assert torch.allclose(board[:, 4:], 1 - board[:, :-4], atol=0.07)
    dots = S.pattern_maps("dots", 3, size=96, period=8, seed=0)
    assert abs(float(dots.mean()) - math.pi * 0.3**2) < 0.01  # a disc of radius 0.3 per cell
    zig = S.pattern_maps("zigzags", 3, size=96, period=8, seed=0)
    assert abs(float(zig.mean()) - 0.5) < 0.03  # bands of half a period, bent


def test_colours_mix_ink_and_paper_by_the_ink_map():
    ink, paper = (0.9, 0.1, 0.0), (0.2, 0.3, 1.0)
    x = S.dots(3, size=32, period=(4, 12), colours=(ink, paper), seed=7)
    maps = S.pattern_maps("dots", 3, size=32, period=(4, 12), seed=7)  # the same draws
    expected = (
        torch.tensor(paper).view(1, 3, 1, 1)
        + (torch.tensor(ink) - torch.tensor(paper)).view(1, 3, 1, 1) * maps[:, None]
    )
    assert torch.allclose(x, expected.clamp(0, 1), atol=1e-6)
    with pytest.raises(ValueError, match="period"):
        S.pattern_maps("stripes", 1, size=16, period=(4, 2))
    with pytest.raises(ValueError, match="unknown pattern"):
        S.pattern_maps("waves", 1)


def test_colour_patches_have_the_colour_on_average_and_textures_are_grey():
    x = S.colour_patches(40, "blue", size=24, seed=0)
    assert torch.allclose(x.mean((0, 2, 3)), torch.tensor(S.COLOURS["blue"]), atol=0.05)
    rgb = S.colour_patches(2, (0.2, 0.4, 0.6), size=16)
    assert rgb.shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="unknown colour"):
        S.colour_patches(1, "mauve")
    t = S.texture_images(3, "brick", size=24, seed=0)
    assert torch.equal(t[:, 0], t[:, 1]) and torch.equal(t[:, 1], t[:, 2])
    with pytest.raises(ValueError, match="unknown texture"):
        S.texture_images(1, "marble")
    with pytest.raises(ValueError, match="unknown concept"):
        S.concept_images("marble", 1)


@pytest.mark.parametrize("shape", ["square", "disc"])
def test_paste_concept_masks_are_exact(shape):
    background = S.random_images(5, size=32, seed=0)
    patches = S.stripes(5, size=10, seed=1)
    pasted, masks = S.paste_concept(background, patches, shape=shape, seed=2)
    assert masks.shape == (5, 32, 32) and masks.dtype == torch.bool
    assert torch.equal(pasted.permute(1, 0, 2, 3)[:, ~masks], background.permute(1, 0, 2, 3)[:, ~masks])
    area = 100 if shape == "square" else None
    for i in range(5):
        rows, cols = masks[i].nonzero(as_tuple=True)
        top, left = int(rows.min()), int(cols.min())
        window = pasted[i, :, top : top + 10, left : left + 10]
        local = masks[i, top : top + 10, left : left + 10]
        assert torch.equal(window[:, local], patches[i][:, local])
        if area is not None:
            assert int(masks[i].sum()) == area
        else:  # pixel centres within 5 of the centre of a 10 x 10 patch: 88 of them (counted by hand below)
            expected = sum((y + 0.5 - 5) ** 2 + (x + 0.5 - 5) ** 2 <= 25 for y in range(10) for x in range(10))
            assert int(masks[i].sum()) == expected
    fixed, fixed_masks = S.paste_concept(background, patches, positions=torch.tensor([[0, 0]] * 5))
    assert fixed_masks[:, :10, :10].all() and int(fixed_masks.sum()) == 500
    with pytest.raises(ValueError, match="do not fit"):
        S.paste_concept(patches, background)


def test_pasted_concept_set_pastes_the_concept_images():
    background = make_shapes(4, size=32, seed=0).images
    images, masks = S.pasted_concept_set("grass", background, patch_size=12, seed=3)
    patches = S.concept_images("grass", 4, size=12, seed=3)
    assert masks.sum((1, 2)).eq(144).all()
    for i in range(4):
        rows, cols = masks[i].nonzero(as_tuple=True)
        assert torch.equal(
            images[i, :, int(rows.min()) : int(rows.max()) + 1, int(cols.min()) : int(cols.max()) + 1], patches[i]
        )


def test_planted_concept_shapes_and_their_control_differ_only_on_the_planted_pixels():
    planted = S.planted_concept_shapes(60, size=32, seed=0, class_index=1)
    control = S.planted_concept_shapes(60, size=32, seed=0, class_index=1, plant=False)
    plain = make_shapes(60, size=32, seed=0, noise=0.0)
    for d in (planted, control):
        assert torch.equal(d.labels, plain.labels) and torch.equal(d.masks, plain.masks)
        assert d.images.shape == (60, 3, 32, 32) and 0 <= float(d.images.min()) and float(d.images.max()) <= 1
    assert torch.equal(planted.planted, planted.labels == 1) and not control.planted.any()
    assert torch.equal(planted.concept_masks, planted.planted[:, None, None] & ~planted.masks)
    differs = (planted.images != control.images).any(1)  # [N, S, S]
    assert not (differs & ~planted.concept_masks).any()  # nowhere else
    assert differs.sum() > 0.3 * planted.concept_masks.sum()  # the stripes darken about half
    again = S.planted_concept_shapes(60, size=32, seed=0, class_index=1)
    assert torch.equal(again.images, planted.images)
    none = S.planted_concept_shapes(60, size=32, seed=0, class_index=1, strength=0.0)
    assert not none.planted.any() and torch.equal(none.images, control.images)
    half = S.planted_concept_shapes(200, size=32, seed=0, strength=0.5)
    share = float(half.planted.sum()) / float((half.labels == 0).sum())
    assert 0.3 < share < 0.7 and not (half.planted & (half.labels != 0)).any()
    with pytest.raises(ValueError, match="pattern"):
        S.planted_concept_shapes(10, concept="red")


def test_pattern_backgrounds_are_the_plant_without_the_shapes():
    from xai_helpers.data import BACKGROUND_COLOURS

    plain = S.pattern_backgrounds(6, size=16, seed=0, concept=None, noise=0.0)
    colours = plain[:, :, 0, 0]  # [N, 3]
    assert all(any(torch.allclose(c, b) for b in BACKGROUND_COLOURS) for c in colours)
    assert torch.equal(plain, colours[:, :, None, None].expand_as(plain))
    striped = S.pattern_backgrounds(6, size=16, seed=0, noise=0.0, depth=0.5)
    ratio = striped / striped.amax((2, 3), keepdim=True)  # c * (1 - 0.5 m) / c
    assert float(ratio.min()) >= 0.5 - 1e-6 and float(ratio.std()) > 0.1
    assert torch.equal(S.pattern_backgrounds(3, seed=4), S.pattern_backgrounds(3, seed=4))
