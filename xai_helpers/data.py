"""Images and data sets that need no download.

* :func:`sample_image` -- real photos that ship inside scikit-image and matplotlib.
* :func:`load_image` -- your own image file (or array) as a model-ready tensor.
* :func:`make_shapes` -- a seeded synthetic data set of shapes with pixel-exact masks and an optional
  planted spurious cue (a background colour that goes with the class), for experiments whose
  ground truth is known exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SAMPLE_IMAGES", "sample_image", "load_image", "to_tensor", "ShapesDataset", "make_shapes"]

# Friendly name -> where the file lives. Every file is inside an installed wheel.
#: Name -> ``library:file`` of the photos :func:`sample_image` loads (all ship inside installed wheels).
SAMPLE_IMAGES: dict[str, str] = {
    "cat": "skimage:chelsea.png",
    "coffee": "skimage:coffee.png",
    "astronaut": "skimage:astronaut.png",
    "rocket": "skimage:rocket.jpg",
    "motorcycle": "skimage:motorcycle_left.png",
    "horse": "skimage:horse.png",
    "camera": "skimage:camera.png",
    "coins": "skimage:coins.png",
    "brick": "skimage:brick.png",
    "grass": "skimage:grass.png",
    "gravel": "skimage:gravel.png",
    "hubble": "skimage:hubble_deep_field.jpg",
    "retina": "skimage:retina.jpg",
    "ihc": "skimage:ihc.png",
    "moon": "skimage:moon.png",
    "page": "skimage:page.png",
    "text": "skimage:text.png",
    "grace_hopper": "matplotlib:grace_hopper.jpg",
}


def _read_sample(source: str) -> np.ndarray:
    """Read a file that ships inside the scikit-image or matplotlib wheel."""
    library, filename = source.split(":", 1)
    if library == "skimage":
        import skimage.data
        import skimage.io

        array = np.asarray(skimage.io.imread(Path(skimage.data.data_dir) / filename))
        return array.astype(np.uint8) if array.dtype == bool else array
    import matplotlib.cbook
    import matplotlib.image

    path = matplotlib.cbook.get_sample_data(filename, asfileobj=False)  # a path: no open file to close
    return np.asarray(matplotlib.image.imread(path, format=Path(filename).suffix[1:]))


def to_tensor(image: np.ndarray | torch.Tensor, size: int | None = 224, crop: bool = True) -> torch.Tensor:
    """An ``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]`` image -> float tensor ``[1, 3, size, size]`` in [0, 1].

    ``uint8`` images are divided by 255; float images must already lie in [0, 1]. Grey images are
    repeated over three channels and an alpha channel is dropped. With ``crop`` the largest centred
    square is cut out before resizing (no distortion); without it the image is squashed to a square.
    ``size=None`` keeps the original resolution.
    """
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif np.issubdtype(array.dtype, np.floating):
        if array.size and (array.min() < 0 or array.max() > 1):
            raise ValueError(
                f"a float image must lie in [0, 1], but this one spans [{array.min():.3g}, {array.max():.3g}]; "
                "divide by 255 (or pass the uint8 array as it is)."
            )
        array = array.astype(np.float32)
    else:
        raise TypeError(f"expected a uint8 or float image, got dtype {array.dtype}; convert it with .astype(np.uint8)")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"expected an image shaped [H, W], [H, W, 3] or [H, W, 4], got {list(array.shape)}")
    tensor = torch.from_numpy(np.ascontiguousarray(array[:, :, :3])).permute(2, 0, 1)[None]
    if crop:
        h, w = tensor.shape[-2:]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        tensor = tensor[..., top : top + side, left : left + side]
    if size is not None:
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"size must be a positive int (or None to keep the resolution), got {size!r}")
        tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return tensor.clamp(0, 1).contiguous()


def sample_image(name: str, size: int | None = 224, crop: bool = True) -> torch.Tensor:
    """A bundled photo as a float tensor ``[1, 3, size, size]`` in [0, 1] (no network needed).

    ``name`` is a key of :data:`SAMPLE_IMAGES` (``"cat"``, ``"coffee"``, ``"astronaut"``, ...).

    >>> sample_image("cat").shape
    torch.Size([1, 3, 224, 224])
    """
    if name not in SAMPLE_IMAGES:
        raise ValueError(f"unknown sample image {name!r}; choose one of: {', '.join(sorted(SAMPLE_IMAGES))}")
    return to_tensor(_read_sample(SAMPLE_IMAGES[name]), size=size, crop=crop)


def load_image(path: str | Path, size: int | None = 224, crop: bool = True) -> torch.Tensor:
    """Your own image file (PNG, JPEG, ...) as a float tensor ``[1, 3, size, size]`` in [0, 1]."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {str(path)!r}")
    with Image.open(path) as img:
        return to_tensor(np.asarray(img.convert("RGB")), size=size, crop=crop)


# ----------------------------------------------------------------------------- synthetic shapes

SHAPES = ("circle", "square", "triangle")
# Background colours; with the cue on, colour k goes with class k.
BACKGROUND_COLOURS = torch.tensor([[0.25, 0.55, 0.25], [0.25, 0.35, 0.65], [0.65, 0.35, 0.3]])


@dataclass
class ShapesDataset(torch.utils.data.Dataset):
    """Synthetic images of shapes with exact masks.

    Attributes: ``images [N, 3, S, S]`` in [0, 1], ``labels [N]`` (index into ``class_names``),
    ``masks [N, S, S]`` bool (True on the object), ``backgrounds [N]`` (index of the background colour).
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    backgrounds: torch.Tensor
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i], self.masks[i]


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float, angle: float) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    # Rotate into the shape's frame.
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if shape == "square":
        half = r / math.sqrt(2) * 1.15
        return (u.abs() <= half) & (v.abs() <= half)
    # Equilateral triangle inscribed in the circle of radius r*1.2: inside all three half-planes.
    inside = torch.ones(size, size, dtype=torch.bool)
    for k in range(3):
        theta = 2 * math.pi * k / 3 + math.pi / 2
        inside &= (u * math.cos(theta) + v * math.sin(theta)) <= 0.6 * r
    return inside


def make_shapes(
    n: int,
    *,
    size: int = 64,
    seed: int = 0,
    spurious_cue: bool = False,
    cue_strength: float = 1.0,
    noise: float = 0.05,
    class_names: tuple[str, ...] = SHAPES,
) -> ShapesDataset:
    """``n`` images of one shape each (random position, size, angle and colour), with exact masks.

    With ``spurious_cue=True`` the background colour goes with the class: image ``i`` gets background
    ``labels[i]`` with probability ``cue_strength`` (else a random one). With it off the background is
    drawn independently of the label, so the cue carries no information. Same arguments, same data.
    """
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not 0.0 <= cue_strength <= 1.0:
        raise ValueError(f"cue_strength is a probability in [0, 1], got {cue_strength}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    unknown = set(class_names) - set(SHAPES)
    if unknown or not 2 <= len(class_names) <= len(SHAPES):
        raise ValueError(f"class_names must be 2 or 3 of {SHAPES}, got {class_names}")
    gen = torch.Generator().manual_seed(seed)
    k = len(class_names)
    labels = torch.randint(k, (n,), generator=gen)
    random_backgrounds = torch.randint(k, (n,), generator=gen)
    if spurious_cue:
        keep = torch.rand(n, generator=gen) < cue_strength
        backgrounds = torch.where(keep, labels, random_backgrounds)
    else:
        backgrounds = random_backgrounds
    images = torch.empty(n, 3, size, size)
    masks = torch.empty(n, size, size, dtype=torch.bool)
    for i in range(n):
        r = size * (0.16 + 0.1 * torch.rand((), generator=gen).item())
        cx, cy = (r + (size - 2 * r) * torch.rand(2, generator=gen)).tolist()
        angle = 2 * math.pi * torch.rand((), generator=gen).item()
        mask = _shape_mask(class_names[int(labels[i])], size, cx, cy, r, angle)
        colour = 0.55 + 0.45 * torch.rand(3, generator=gen)  # light objects on darker backgrounds
        image = BACKGROUND_COLOURS[backgrounds[i]].view(3, 1, 1).expand(3, size, size).clone()
        image[:, mask] = colour.view(3, 1)
        images[i] = image
        masks[i] = mask
    images = (images + noise * torch.randn(images.shape, generator=gen)).clamp(0, 1)
    return ShapesDataset(images, labels, masks, backgrounds, tuple(class_names))
