import itertools
import math

import pytest
import torch
from torch import nn

from xai_helpers.data import SAMPLE_IMAGES, make_shapes, sample_image
from xai_helpers.evaluation import pointing_game
from xai_helpers.models import SmallCNN, imagenet_categories
from xai_helpers.testbeds import (
    PHOTO_CONTENTS,
    CellWise,
    DisconnectedGrid,
    PhotoSet,
    photo_grids,
    shape_grids,
    shape_set,
    usable_photos,
)

# ----------------------------------------------------------------------------- usable_photos


class FixedLogits(nn.Module):
    """Ignores the pixels: image ``i`` of each call gets the logits of the next entry of ``answers``."""

    def __init__(self, answers: list[tuple[int, float]]):
        super().__init__()
        self.answers = list(answers)
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        index, prob = self.answers.pop(0)
        # softmax(logits)[index] == prob exactly: the other 999 classes share the rest equally.
        probs = torch.full((1, 1000), (1 - prob) / 999, dtype=torch.float64)
        probs[0, index] = prob
        return probs.log().float() + 0 * self.weight


def test_the_rule_on_a_network_with_known_outputs():
    cats = imagenet_categories()
    answers = [
        (cats.index("tabby"), 0.6),  # cat: right and confident
        (cats.index("espresso"), 0.1),  # coffee: right but below the threshold
        (cats.index("tripod"), 0.9),  # rocket: confident but wrong
        (cats.index("moped"), 0.2),  # motorcycle: exactly the threshold counts
    ]
    model = FixedLogits(answers)
    result = usable_photos(model, names=["cat", "brick", "coffee", "rocket", "motorcycle"])
    assert [(p.name, p.class_name) for p in result.photos] == [("cat", "tabby"), ("motorcycle", "moped")]
    assert result.photos[0].confidence == pytest.approx(0.6, abs=1e-5)
    assert "not an object" in result.excluded["brick"]
    assert "confidence 0.10 < 0.2" in result.excluded["coffee"]
    assert "'tripod'" in result.excluded["rocket"] and "wrong" in result.excluded["rocket"]
    assert not model.answers  # brick was never run through the network


def test_usable_photos_of_lite0(lite0):
    result = usable_photos(lite0)
    names = result.names
    assert {"cat", "coffee"} <= set(names)
    # Every photo is accounted for exactly once.
    assert set(names) | set(result.excluded) == set(SAMPLE_IMAGES)
    assert not set(names) & set(result.excluded)
    assert names == [n for n in SAMPLE_IMAGES if n in names]  # the stated order
    for texture in ("brick", "grass", "gravel", "moon", "text", "page"):
        assert "not an object" in result.excluded[texture]
    # Classes and confidences agree with a plain forward pass done here.
    cats = imagenet_categories()
    for photo in result.photos:
        with torch.no_grad():
            probs = lite0(sample_image(photo.name)).softmax(1)[0]
        assert photo.class_index == int(probs.argmax()) and photo.class_name == cats[photo.class_index]
        assert photo.confidence == pytest.approx(float(probs.max()), abs=1e-6)
        assert photo.class_name in PHOTO_CONTENTS[photo.name][1] and photo.confidence >= 0.2
    assert result.images.shape == (len(result), 3, 224, 224)
    assert result.classes.tolist() == [p.class_index for p in result.photos]


def test_usable_photos_is_deterministic_and_restores_the_model(lite0):
    lite0.train()
    lite0.classifier.weight.requires_grad_(False)
    try:
        a = usable_photos(lite0, names=["cat", "coffee", "grass"])
        b = usable_photos(lite0, names=["cat", "coffee", "grass"])
        assert lite0.training and lite0.blocks[3].training
        assert not lite0.classifier.weight.requires_grad and lite0.classifier.bias.requires_grad
    finally:
        lite0.classifier.weight.requires_grad_(True)
        lite0.eval()
    def facts(result):
        return [(p.name, p.class_index, p.confidence) for p in result.photos]

    assert facts(a) == facts(b)
    assert a.excluded == b.excluded


def test_usable_photos_errors(lite0):
    with pytest.raises(ValueError, match="no stated content"):
        usable_photos(lite0, names=["cat", "dog"])
    with pytest.raises(ValueError, match="probability in"):
        usable_photos(lite0, min_confidence=1.5)


# ----------------------------------------------------------------------------- photo_grids


def _flat_photos(n: int, size: int = 8) -> torch.Tensor:
    # Photo i is constant i / n in every channel, so a cell tells which photo fills it.
    return (torch.arange(n, dtype=torch.float32) / n).view(n, 1, 1, 1).expand(n, 3, size, size).clone()


def test_grid_cells_hold_the_named_photos_and_masks_cover_them():
    photos, classes = _flat_photos(6), [10, 10, 11, 12, 13, 14]
    grids = photo_grids(photos, classes)
    # Brute force: sets of four photos whose classes are all different.
    expected = [c for c in itertools.combinations(range(6), 4) if len({classes[i] for i in c}) == 4]
    assert len(grids) == len(expected) == math.comb(6, 4) - math.comb(4, 2)
    assert sorted(tuple(sorted(r)) for r in grids.photo_indices.tolist()) == expected
    assert grids.images.shape == (len(expected), 3, 16, 16) and grids.masks.shape == (len(expected), 4, 16, 16)
    # The cells partition the image: every pixel in exactly one.
    assert torch.equal(grids.masks.sum(1), torch.ones(len(expected), 16, 16, dtype=torch.long))
    for g in range(len(grids)):
        for k in range(4):
            i = int(grids.photo_indices[g, k])
            cell = grids.images[g][:, grids.masks[g, k]]
            assert torch.equal(cell, torch.full_like(cell, i / 6))  # cell k shows photo i ...
            assert int(grids.classes[g, k]) == classes[i]  # ... and is labelled with its class
        assert len(set(grids.classes[g].tolist())) == 4
    # Cell 1 is the top-right quarter.
    assert grids.masks[0, 1, :8, 8:].all() and not grids.masks[0, 1, 8:].any() and not grids.masks[0, 1, :, :8].any()


def test_grids_are_deterministic_and_vary_the_corners():
    photos, classes = _flat_photos(7), list(range(7))
    a, b = photo_grids(photos, classes, seed=3), photo_grids(photos, classes, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.photo_indices, b.photo_indices)
    assert len(a) == 35
    # A photo does not always sit in the same corner.
    assert all(len(set(a.photo_indices[:, k].tolist())) > 1 for k in range(4))
    assert not torch.equal(photo_grids(photos, classes, seed=4).photo_indices, a.photo_indices)
    few = photo_grids(photos, classes, seed=3, max_grids=5)
    assert len(few) == 5
    assert {tuple(r) for r in few.photo_indices.tolist()} <= {tuple(r) for r in a.photo_indices.tolist()}


def test_grids_from_a_photo_set(lite0):
    result = usable_photos(lite0)
    grids = photo_grids(result)
    assert grids.images.shape[-1] == 448
    assert len(grids) >= 1 and grids.photo_indices.max() < len(result)


def test_grid_errors():
    with pytest.raises(ValueError, match="four photos with different classes"):
        photo_grids(_flat_photos(5), [0, 0, 1, 1, 2])
    with pytest.raises(ValueError, match="5 photos but 4 classes"):
        photo_grids(_flat_photos(5), [0, 1, 2, 3])
    with pytest.raises(ValueError, match="carries its classes"):
        photo_grids(PhotoSet([]), [0, 1, 2, 3])


# ----------------------------------------------------------------------------- shape_set


def test_shape_set_masks_are_exact():
    shapes = shape_set(200, seed=1, noise=0.0)
    reference = make_shapes(200, seed=1, noise=0.0)
    assert shapes.images.shape == (200, 3, 64, 64) and shapes.masks.shape == (200, 64, 64)
    assert torch.equal(shapes.masks, reference.masks) and torch.equal(shapes.labels, reference.labels)
    # Without noise the object is exactly its colour and everything else exactly the background's.
    for i in range(0, 200, 17):
        inside, outside = shapes.images[i][:, shapes.masks[i]], shapes.images[i][:, ~shapes.masks[i]]
        assert torch.equal(inside, shapes.object_colours[i].view(3, 1).expand_as(inside))
        assert torch.equal(outside, shapes.background_colours[i].view(3, 1).expand_as(outside))
    contrast = shapes.object_colours.mean(1) - shapes.background_colours.mean(1)
    assert (contrast.abs() >= 0.15).all()
    assert torch.equal(contrast > 0, shapes.object_lighter)


def test_shape_set_is_deterministic():
    a, b = shape_set(50, seed=2), shape_set(50, seed=2)
    assert torch.equal(a.images, b.images) and torch.equal(a.object_lighter, b.object_lighter)
    assert not torch.equal(shape_set(50, seed=3).images, a.images)
    assert len(shape_set()) == 300


def _brightness_points(images: torch.Tensor, masks: torch.Tensor) -> tuple[float, float]:
    # Pointing game of a map that is the image's brightness, and of its negative.
    brightness = images.mean(1)
    return (
        pointing_game(brightness, masks).float().mean().item(),
        pointing_game(-brightness, masks).float().mean().item(),
    )


def test_brightness_does_not_give_the_object_away():
    shapes = shape_set(300, seed=0)
    light, dark = _brightness_points(shapes.images, shapes.masks)
    # Exactly half the objects are lighter, so "point at the brightest pixel" and "point at the darkest"
    # are both a coin flip (binomial sd at n=300 is 0.03).
    assert int(shapes.object_lighter.sum()) == 150
    assert abs(light - 0.5) < 0.1 and abs(dark - 0.5) < 0.1 and abs(light - dark) < 0.15
    # Nor does the sign of the contrast go with the class.
    for c in range(3):
        share = shapes.object_lighter[shapes.labels == c].float().mean().item()
        assert abs(share - 0.5) < 0.15
    # The control is needed: on make_shapes' own images brightness alone wins the pointing game.
    raw = make_shapes(300, seed=0)
    raw_light, raw_dark = _brightness_points(raw.images, raw.masks)
    assert raw_light > 0.9 and raw_dark < 0.1


def test_shape_set_errors():
    with pytest.raises(ValueError, match="n must be"):
        shape_set(1)
    with pytest.raises(ValueError, match="min_contrast"):
        shape_set(10, min_contrast=0.8)


# ----------------------------------------------------------------------------- shape grids and DiFull


def _cells(images: torch.Tensor) -> list[torch.Tensor]:
    """The four cells of [G, C, 2S, 2S] grids, raster order, cut out by hand."""
    s = images.shape[-1] // 2
    return [images[..., r * s : (r + 1) * s, c * s : (c + 1) * s] for r in range(2) for c in range(2)]


def test_shape_grids_hold_three_classes_an_empty_cell_and_no_reused_image():
    shapes = make_shapes(80, size=16, seed=3)
    grids = shape_grids(shapes, 12, seed=0)
    assert grids.images.shape == (12, 3, 32, 32) and grids.masks.shape == (12, 4, 32, 32)
    for g in range(12):
        assert sorted(grids.classes[g].tolist()) == [-1, 0, 1, 2]
        for k, cell in enumerate(_cells(grids.images[g])):
            assert grids.masks[g, k].sum() == 16 * 16
            if grids.classes[g, k] >= 0:      # a shape cell is the named image, unchanged
                assert torch.equal(cell, shapes.images[grids.photo_indices[g, k]])
                assert shapes.labels[grids.photo_indices[g, k]] == grids.classes[g, k]
            else:                             # the empty cell: no object edge, the background's colour
                source = grids.photo_indices[g, k]
                background = shapes.images[source][:, ~shapes.masks[source]].median(dim=1).values
                assert (cell.mean(dim=(1, 2)) - background).abs().max() < 0.03
    assert grids.masks.sum(1).eq(1).all()                 # the cells partition the grid
    assert len(set(grids.photo_indices.flatten().tolist())) == 48    # no image serves two grids
    assert torch.equal(shape_grids(shapes, 12, seed=0).images, grids.images)
    assert not torch.equal(shape_grids(shapes, 12, seed=1).classes, grids.classes)


def test_shape_grid_errors():
    with pytest.raises(ValueError, match="three classes"):
        shape_grids(make_shapes(40, size=16, class_names=("circle", "square")), 2)
    with pytest.raises(ValueError, match="fewer grids"):
        shape_grids(make_shapes(20, size=16), 6)
    with pytest.raises(ValueError, match="positive int"):
        shape_grids(make_shapes(20, size=16), 0)


def test_difull_scores_each_cell_as_the_model_does_alone():
    torch.manual_seed(0)
    model = SmallCNN(num_classes=3, width=4).double().eval()
    difull = DisconnectedGrid(model).eval()
    grids = torch.rand(3, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        scores = difull(grids).view(3, 4, 3)
        for k, cell in enumerate(_cells(grids)):
            torch.testing.assert_close(scores[:, k], model(cell))
    # The original model is untouched, and still sees across cells.
    assert isinstance(model.conv1, nn.Conv2d) and isinstance(difull.model.conv1, CellWise)


def test_difull_gradient_is_zero_outside_the_cell_and_the_plain_model_is_not():
    torch.manual_seed(0)
    model = SmallCNN(num_classes=3, width=4).double().eval()
    difull = DisconnectedGrid(model).eval()
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    difull(x)[0, 2 * 3 + 1].backward()              # cell 2 (bottom left), class 1
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[16:, :16] = True
    assert x.grad[0][:, ~inside].abs().max() == 0 and x.grad[0][:, inside].abs().max() > 0
    x.grad = None
    model(x)[0, 1].backward()
    assert x.grad[0][:, ~inside].abs().max() > 0     # the connected model's receptive field crosses cells


def test_difull_errors():
    with pytest.raises(TypeError, match="gap"):
        DisconnectedGrid(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()))
    with pytest.raises(ValueError, match="divisible"):
        CellWise(nn.Identity())(torch.zeros(1, 1, 5, 6))
