import numpy as np
import pytest
import torch

from xai_helpers.data import SAMPLE_IMAGES, load_image, make_shapes, sample_image, to_tensor


@pytest.mark.parametrize("name", sorted(SAMPLE_IMAGES))
def test_every_sample_image_loads_offline(name):
    x = sample_image(name, size=64)
    assert x.shape == (1, 3, 64, 64) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and x.std() > 0.01


def test_sample_image_sizes_and_crop():
    assert sample_image("cat", size=None, crop=False).shape == (1, 3, 300, 451)
    assert sample_image("cat", size=None).shape == (1, 3, 300, 300)
    assert sample_image("coffee", size=100).shape == (1, 3, 100, 100)


def test_sample_image_errors():
    with pytest.raises(ValueError, match="unknown sample image 'dog'.*cat"):
        sample_image("dog")
    with pytest.raises(ValueError, match="positive int"):
        sample_image("cat", size=0)


def test_to_tensor_conversions_and_errors():
    grey = np.full((10, 20), 255, dtype=np.uint8)
    x = to_tensor(grey, size=None, crop=False)
    assert x.shape == (1, 3, 10, 20) and torch.all(x == 1)
    rgba = np.zeros((8, 8, 4), dtype=np.float32)
    assert to_tensor(rgba, size=4).shape == (1, 3, 4, 4)
    with pytest.raises(ValueError, match="divide by 255"):
        to_tensor(np.full((4, 4, 3), 200.0))
    with pytest.raises(TypeError, match="uint8 or float"):
        to_tensor(np.zeros((4, 4, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        to_tensor(np.zeros((4, 4, 5), dtype=np.uint8))


def test_load_image_round_trip(tmp_path):
    from PIL import Image

    original = (sample_image("coffee", size=32)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(original).save(tmp_path / "coffee.png")
    x = load_image(tmp_path / "coffee.png", size=None)
    assert torch.equal((x[0].permute(1, 2, 0) * 255).round().byte(), torch.from_numpy(original))
    with pytest.raises(FileNotFoundError, match="no image file"):
        load_image(tmp_path / "missing.png")


def test_shapes_are_deterministic_for_a_seed():
    a, b = make_shapes(50, seed=3), make_shapes(50, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.images, make_shapes(50, seed=4).images)


def test_shapes_masks_match_labels():
    data = make_shapes(300, seed=0, noise=0.0)
    assert data.images.shape == (300, 3, 64, 64) and data.masks.shape == (300, 64, 64)
    area = data.masks.flatten(1).float().mean(1)
    assert (area > 0.02).all() and (area < 0.5).all()  # every image has one visible object
    # Off the mask the image is exactly the background colour; on it, it is not.
    from xai_helpers.data import BACKGROUND_COLOURS

    for i in range(20):
        bg = BACKGROUND_COLOURS[data.backgrounds[i]].view(3, 1)
        pixels = data.images[i].flatten(1)
        outside = ~data.masks[i].flatten()
        assert torch.allclose(pixels[:, outside], bg.expand(3, int(outside.sum())))
        assert not torch.allclose(pixels[:, ~outside].mean(1), bg[:, 0], atol=0.05)
    # How much of its bounding box each shape fills: pi/4 for a circle, 1/(|cos t|+|sin t|)^2 for a
    # square turned by t (0.5 to 1, mean about 0.64), at most 1/2 for a triangle.
    fill = []
    for label in range(3):
        m = data.masks[data.labels == label]
        rows, cols = m.any(2).sum(1).float(), m.any(1).sum(1).float()
        fill.append((m.flatten(1).sum(1) / (rows * cols)).mean().item())
    assert abs(fill[0] - np.pi / 4) < 0.03
    assert 0.58 < fill[1] < 0.72
    assert fill[2] < 0.52


def test_spurious_cue_correlates_only_when_on():
    cued = make_shapes(2000, seed=1, spurious_cue=True)
    assert (cued.backgrounds == cued.labels).float().mean() == 1.0
    partial = make_shapes(2000, seed=1, spurious_cue=True, cue_strength=0.5)
    agreement = (partial.backgrounds == partial.labels).float().mean().item()
    assert 0.6 < agreement < 0.73  # 0.5 + 0.5 / 3
    clean = make_shapes(2000, seed=1, spurious_cue=False)
    agreement = (clean.backgrounds == clean.labels).float().mean().item()
    assert abs(agreement - 1 / 3) < 0.04  # chance level: the background says nothing


def test_shapes_dataset_protocol_and_errors():
    data = make_shapes(5, seed=0, class_names=("circle", "square"))
    image, label, mask = data[2]
    assert len(data) == 5 and image.shape == (3, 64, 64) and mask.dtype == torch.bool
    assert set(data.labels.tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="positive int"):
        make_shapes(0)
    with pytest.raises(ValueError, match="probability"):
        make_shapes(5, spurious_cue=True, cue_strength=1.5)
    with pytest.raises(ValueError, match="class_names"):
        make_shapes(5, class_names=("circle", "hexagon"))
