"""An evaluation set, stated once: the images every trust experiment of the book runs on.

* :func:`usable_photos` -- the bundled photos a network classifies sensibly, with that class and its
  confidence, and every other photo with the reason it was left out.
* :func:`photo_grids` -- 2x2 grids of four such photos with four different predicted classes, and the
  cell of each class as its mask, for the grid pointing game (Rao, Boehle & Schiele, CVPR 2022).
* :func:`shape_set` -- hundreds of synthetic shapes with exact object masks, whose object and
  background colours are drawn so that brightness says nothing about where the object is.
* :func:`shape_grids` -- 2x2 grids of three shapes of three different classes and one empty cell,
  the grid pointing game for a model trained on single shapes.
* :class:`DisconnectedGrid` -- DiFull (Rao, Boehle & Schiele 2022): a copy of a model that sees each
  grid cell on its own and classifies each cell with its own head, so that no cell can influence
  another cell's scores, and attribution outside the explained cell is wrong by construction.

Everything here is deterministic: the same arguments give the same images, in the same order.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field

import torch
from torch import nn

from .core import explaining
from .data import SAMPLE_IMAGES, ShapesDataset, make_shapes, sample_image
from .models import imagenet_categories

__all__ = [
    "PHOTO_CONTENTS",
    "MIN_CONFIDENCE",
    "Photo",
    "PhotoSet",
    "usable_photos",
    "PhotoGrids",
    "photo_grids",
    "ShapeSet",
    "shape_set",
    "shape_grids",
    "CellWise",
    "DisconnectedGrid",
]

#: Photo name -> ``(what it shows, the ImageNet-1k classes that name it correctly)``. An empty set means
#: ImageNet-1k has no class for the photo's content (a texture, a scientific image, printed text, a
#: person), so no top-1 class can be right and the photo is left out whatever the network says.
PHOTO_CONTENTS: dict[str, tuple[str, frozenset[str]]] = {
    "cat": ("a tabby cat", frozenset({"Egyptian cat", "tabby", "tiger cat"})),
    "coffee": ("a cup of coffee", frozenset({"espresso", "cup", "coffee mug"})),
    "astronaut": ("a portrait of an astronaut (a person)", frozenset()),
    "rocket": ("a rocket on its launch pad", frozenset({"missile", "projectile", "space shuttle"})),
    "motorcycle": ("a motorcycle", frozenset({"moped", "motor scooter", "crash helmet"})),
    "horse": ("a black silhouette of a horse (ImageNet has no horse silhouettes)", frozenset({"sorrel"})),
    "camera": ("a cameraman with a camera on a tripod", frozenset({"tripod", "reflex camera", "Polaroid camera"})),
    "coins": ("old coins (no coin class in ImageNet-1k)", frozenset()),
    "brick": ("a brick wall texture, not an object", frozenset()),
    "grass": ("a grass texture, not an object", frozenset()),
    "gravel": ("a gravel texture, not an object", frozenset()),
    "hubble": ("a telescope image of galaxies, not an object", frozenset()),
    "retina": ("a medical image of a retina, not an object", frozenset()),
    "ihc": ("a microscope image of stained tissue, not an object", frozenset()),
    "moon": ("the surface of the moon, not an object", frozenset()),
    "page": ("a printed page (text), not an object", frozenset()),
    "text": ("printed text, not an object", frozenset()),
    "grace_hopper": ("Grace Hopper in uniform", frozenset({"military uniform", "Windsor tie", "bow tie", "suit"})),
}

#: Default confidence threshold of :func:`usable_photos`: below it the top-1 class takes less than a fifth
#: of the probability, too ambiguous a target to say where the evidence for it should lie.
MIN_CONFIDENCE = 0.2


@dataclass(frozen=True)
class Photo:
    """A usable photo: ``image [1, 3, S, S]`` in [0, 1], its top-1 ImageNet class and that class's softmax."""

    name: str
    image: torch.Tensor
    class_index: int
    class_name: str
    confidence: float


@dataclass
class PhotoSet:
    """The result of :func:`usable_photos`.

    ``photos``: the usable ones, in :data:`~xai_helpers.data.SAMPLE_IMAGES` order. ``excluded``: name ->
    why that photo was left out, for every other photo looked at.
    """

    photos: list[Photo]
    excluded: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.photos)

    @property
    def images(self) -> torch.Tensor:
        """All usable photos as one batch ``[N, 3, S, S]``."""
        return torch.cat([p.image for p in self.photos])

    @property
    def classes(self) -> torch.Tensor:
        """Their top-1 classes, LongTensor ``[N]`` (the targets to explain)."""
        return torch.tensor([p.class_index for p in self.photos], dtype=torch.long)

    @property
    def names(self) -> list[str]:
        """Their names, keys of :data:`~xai_helpers.data.SAMPLE_IMAGES`."""
        return [p.name for p in self.photos]


def usable_photos(
    model: nn.Module,
    *,
    size: int = 224,
    min_confidence: float = MIN_CONFIDENCE,
    names: list[str] | None = None,
) -> PhotoSet:
    """The bundled photos ``model`` classifies with a sensible top-1 class, and why the rest are left out.

    The rule, applied to each photo in :data:`~xai_helpers.data.SAMPLE_IMAGES` order (or ``names``):

    1. a photo whose content has no ImageNet-1k class (:data:`PHOTO_CONTENTS` lists none) is left out:
       "not an object ImageNet names";
    2. the top-1 class ``c = argmax_k softmax(f(x))_k`` must be one of the photo's correct classes in
       :data:`PHOTO_CONTENTS`, else it is left out with the wrong class named;
    3. its confidence ``softmax(f(x))_c`` must be at least ``min_confidence``.

    ``model`` takes ``[B, 3, S, S]`` images in [0, 1] and returns ImageNet logits ``[B, 1000]``; the photos
    are centre-cropped and resized to ``size`` px. 224 for every network: the Lite1 and Lite2 weights
    are more confident on these photos at 224 than at their paper sizes (240, 260), and one size lets
    the networks be compared on the same pixels.
    The model runs in eval mode without gradients; its mode and ``requires_grad`` flags are restored.
    """
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence is a probability in [0, 1], got {min_confidence}")
    names = list(SAMPLE_IMAGES) if names is None else list(names)
    unknown = [n for n in names if n not in PHOTO_CONTENTS]
    if unknown:
        raise ValueError(f"no stated content for {unknown}; choose from: {', '.join(PHOTO_CONTENTS)}")
    categories = imagenet_categories()
    photos: list[Photo] = []
    excluded: dict[str, str] = {}
    with explaining(model), torch.no_grad():
        for name in names:
            content, correct = PHOTO_CONTENTS[name]
            if not correct:
                excluded[name] = f"{content}: not an object ImageNet-1k names"
                continue
            image = sample_image(name, size=size)
            logits = model(image)
            if logits.dim() != 2 or logits.shape[1] != len(categories):
                raise ValueError(
                    f"usable_photos needs an ImageNet-1k classifier with logits [B, 1000], got {list(logits.shape)}"
                )
            probs = logits.softmax(1)[0]
            index = int(probs.argmax())  # ties: the lowest index, as argmax does
            label, confidence = categories[index], float(probs[index])
            if label not in correct:
                excluded[name] = f"top-1 {label!r} ({confidence:.2f}) is wrong for {content}"
            elif confidence < min_confidence:
                excluded[name] = f"top-1 {label!r} is right but its confidence {confidence:.2f} < {min_confidence}"
            else:
                photos.append(Photo(name, image, index, label, confidence))
    return PhotoSet(photos, excluded)


# ----------------------------------------------------------------------------- grid pointing game


def _stitch(cells: torch.Tensor) -> torch.Tensor:
    """``[G, 4, C, S, S]`` -> ``[G, C, 2S, 2S]``, cells in raster order."""
    top = torch.cat([cells[:, 0], cells[:, 1]], dim=-1)
    bottom = torch.cat([cells[:, 2], cells[:, 3]], dim=-1)
    return torch.cat([top, bottom], dim=-2)


def _cell_masks(n_grids: int, size: int) -> torch.Tensor:
    """``[G, 4, 2S, 2S]`` bool: cell ``k`` of a 2x2 grid of ``S``-pixel cells, raster order."""
    masks = torch.zeros(n_grids, 4, 2 * size, 2 * size, dtype=torch.bool)
    for k in range(4):
        row, col = divmod(k, 2)
        masks[:, k, row * size : (row + 1) * size, col * size : (col + 1) * size] = True
    return masks


@dataclass
class PhotoGrids:
    """2x2 photo grids for the grid pointing game.

    ``images [G, 3, 2S, 2S]``; ``masks [G, 4, 2S, 2S]`` bool, ``masks[g, k]`` True on cell ``k`` (raster
    order: top-left, top-right, bottom-left, bottom-right); ``classes [G, 4]`` the class of each cell
    (the target whose evidence should lie in that cell); ``photo_indices [G, 4]`` which input photo
    fills each cell, so a bootstrap can resample photos and keep the grids made only of drawn ones.
    """

    images: torch.Tensor
    masks: torch.Tensor
    classes: torch.Tensor
    photo_indices: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)


def photo_grids(
    photos: torch.Tensor | PhotoSet,
    classes: torch.Tensor | list[int] | None = None,
    *,
    max_grids: int | None = None,
    seed: int = 0,
) -> PhotoGrids:
    """Every 2x2 grid of four photos with four different classes, each cell's class with its cell as mask.

    ``photos`` is ``[N, 3, S, S]`` (and ``classes`` their ``N`` predicted classes) or a :class:`PhotoSet`.
    The grids are all ``C(N, 4)`` sets of four photos whose classes differ pairwise, in
    lexicographic order of photo indices; each set is placed in the four cells by a permutation
    drawn from a generator seeded with ``seed``, so no photo sits in the same corner every time.
    With ``max_grids`` a seeded random subset of that many grids is kept (in the same order).

    The score of the grid pointing game (Rao et al. 2022) for cell ``k`` is
    ``sum(relu(A) * masks[g, k]) / sum(relu(A))`` for the map ``A`` of target ``classes[g, k]``.
    """
    if isinstance(photos, PhotoSet):
        if classes is not None:
            raise ValueError("a PhotoSet carries its classes; do not pass classes as well")
        photo_set = photos
        photos, classes = photo_set.images, photo_set.classes
    if classes is None:
        raise ValueError("pass the photos' predicted classes, a list or LongTensor [N], or a PhotoSet")
    classes = torch.as_tensor(classes, dtype=torch.long).flatten()
    if photos.dim() != 4 or photos.shape[1] != 3 or photos.shape[2] != photos.shape[3]:
        raise ValueError(f"photos must be square RGB images [N, 3, S, S], got {list(photos.shape)}")
    if len(classes) != len(photos):
        raise ValueError(f"{len(photos)} photos but {len(classes)} classes; give one class per photo")
    if len(set(classes.tolist())) < 4:
        raise ValueError(
            f"a grid needs four photos with different classes, but the classes are {sorted(set(classes.tolist()))}; "
            "add photos (or a network that classifies more of them sensibly)"
        )
    if max_grids is not None and max_grids < 1:
        raise ValueError(f"max_grids must be a positive int or None, got {max_grids}")
    gen = torch.Generator().manual_seed(seed)
    sets = [c for c in itertools.combinations(range(len(photos)), 4) if len(set(classes[list(c)].tolist())) == 4]
    # One permutation per set, drawn for every set so that max_grids does not change the placements.
    placed = [[c[int(j)] for j in torch.randperm(4, generator=gen)] for c in sets]
    if max_grids is not None and max_grids < len(placed):
        keep = sorted(torch.randperm(len(placed), generator=gen)[:max_grids].tolist())
        placed = [placed[i] for i in keep]
    index = torch.tensor(placed, dtype=torch.long)  # [G, 4]
    images = _stitch(photos[index])  # [G, 4, 3, S, S] -> [G, 3, 2S, 2S]
    return PhotoGrids(images.contiguous(), _cell_masks(len(index), photos.shape[-1]), classes[index], index)


# ----------------------------------------------------------------------------- synthetic shapes


@dataclass
class ShapeSet(ShapesDataset):
    """A :class:`~xai_helpers.data.ShapesDataset` with the colours it was painted with.

    ``object_colours [N, 3]`` and ``background_colours [N, 3]`` (before noise); ``object_lighter [N]`` bool,
    True where the object's mean brightness exceeds the background's (exactly half of the images).
    ``backgrounds`` is -1 throughout: the colours come from no palette, so they carry no cue.
    """

    object_colours: torch.Tensor
    background_colours: torch.Tensor
    object_lighter: torch.Tensor


def shape_set(
    n: int = 300,
    seed: int = 0,
    *,
    size: int = 64,
    noise: float = 0.05,
    min_contrast: float = 0.15,
) -> ShapeSet:
    """``n`` synthetic shape images with exact masks, where brightness gives the object away in no image.

    Shapes, positions and masks come from :func:`~xai_helpers.data.make_shapes` (no spurious cue).
    ``make_shapes`` paints light objects (0.55 to 1) on darker palette backgrounds, so a map of
    brightness alone points at the object, and so does anything multiplied by the image. Here each
    image is repainted: the object colour ``o`` and background colour ``b`` are drawn i.i.d. uniform in
    ``[0.05, 0.95]^3``, redrawn until their mean brightnesses differ by at least ``min_contrast`` (so
    the shape stays visible), and swapped where needed so that the object is the lighter one in
    exactly ``n // 2`` images, chosen by a seeded permutation. Confound control: brightness and its
    negative point at the object equally often, and the sign of the contrast is independent of the
    class, position and size. Gaussian noise of std ``noise`` is added, then clipped to [0, 1].

    Returns ``images [n, 3, size, size]``, ``labels [n]``, ``masks [n, size, size]`` (exact) and the colours.
    """
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2 (half the objects are lighter, half darker), got {n!r}")
    if not 0.0 <= min_contrast <= 0.5:
        raise ValueError(
            f"min_contrast must lie in [0, 0.5] (brightness differences span at most 0.9), got {min_contrast}")
    base = make_shapes(n, size=size, seed=seed, noise=0.0)
    # A generator of its own (seed offset) so the colours do not repeat make_shapes' random stream.
    gen = torch.Generator().manual_seed(seed + 7919)
    lighter = torch.zeros(n, dtype=torch.bool)
    lighter[torch.randperm(n, generator=gen)[: n // 2]] = True
    objects = torch.empty(n, 3)
    backgrounds = torch.empty(n, 3)
    for i in range(n):
        while True:
            a, b = 0.05 + 0.9 * torch.rand(2, 3, generator=gen)
            if (a.mean() - b.mean()).abs() >= min_contrast:
                break
        light, dark = (a, b) if a.mean() > b.mean() else (b, a)
        objects[i], backgrounds[i] = (light, dark) if lighter[i] else (dark, light)
    masks = base.masks
    images = torch.where(masks[:, None], objects[:, :, None, None], backgrounds[:, :, None, None])
    images = (images + noise * torch.randn(images.shape, generator=gen)).clamp(0, 1)
    return ShapeSet(
        images=images,
        labels=base.labels,
        masks=masks,
        backgrounds=torch.full((n,), -1, dtype=torch.long),
        class_names=base.class_names,
        object_colours=objects,
        background_colours=backgrounds,
        object_lighter=lighter,
    )


# ----------------------------------------------------------------------------- grids of shapes, DiFull


def shape_grids(shapes: ShapesDataset, n_grids: int, *, seed: int = 0) -> PhotoGrids:
    """``n_grids`` 2x2 grids, each of three shape images of three different classes and one empty cell.

    ``shapes`` must have three classes (:func:`~xai_helpers.data.make_shapes` or :func:`shape_set`).
    Each grid takes one image of each class and an empty cell: a fourth image's background colour
    (its median) everywhere, with noise of that background's spread. No image serves two grids, so
    a bootstrap may resample grids. The four cells are placed by a seeded permutation. Returns
    :class:`PhotoGrids` with ``images [G, 3, 2S, 2S]``, ``masks [G, 4, 2S, 2S]`` (each cell),
    ``classes [G, 4]`` (-1 for the empty cell, which is never a target) and ``photo_indices [G, 4]``
    (the image of ``shapes`` in each cell; for the empty cell, the image whose background it shows).
    """
    if len(shapes.class_names) != 3:
        raise ValueError(f"shape grids need three classes (three shapes and one empty cell), got {shapes.class_names}")
    if not isinstance(n_grids, int) or n_grids < 1:
        raise ValueError(f"n_grids must be a positive int, got {n_grids!r}")
    gen = torch.Generator().manual_seed(seed)
    pools = [torch.nonzero(shapes.labels == k).flatten() for k in range(3)]
    pools = [pool[torch.randperm(len(pool), generator=gen)] for pool in pools]
    smallest = min(len(pool) for pool in pools)
    if smallest < n_grids or len(shapes.labels) < 4 * n_grids:
        raise ValueError(
            f"{n_grids} grids need {n_grids} images of every class and {n_grids} more for the empty cells "
            f"({4 * n_grids} in all), but there are {len(shapes.labels)} with {smallest} in the smallest class; "
            "pass more shapes or ask for fewer grids"
        )
    chosen = torch.stack([pool[:n_grids] for pool in pools], 1)                       # [G, 3]
    rest = torch.cat([pool[n_grids:] for pool in pools])
    empty_from = rest[torch.randperm(len(rest), generator=gen)[:n_grids]]              # [G], no image reused
    source = torch.cat([chosen, empty_from[:, None]], 1)                                # [G, 4]
    cells = shapes.images[source].clone()                                               # [G, 4, 3, S, S]
    # The empty cell: the fourth image's background colour everywhere (its median over the background
    # pixels), with noise of the background's own spread, so it looks like a cell whose shape is gone.
    background_pixels = [img[:, ~m] for img, m in zip(cells[:, 3], shapes.masks[empty_from])]    # [3, n_bg] each
    colour = torch.stack([p.median(dim=1).values for p in background_pixels])                    # [G, 3]
    spread = torch.stack([p.std(dim=1) for p in background_pixels])                              # [G, 3]
    noise = torch.randn(cells[:, 3].shape, generator=gen)
    cells[:, 3] = (colour[:, :, None, None] + spread[:, :, None, None] * noise).clamp(0, 1)
    classes = torch.cat([shapes.labels[chosen], torch.full((n_grids, 1), -1)], 1)       # [G, 4]
    order = torch.stack([torch.randperm(4, generator=gen) for _ in range(n_grids)])      # [G, 4]
    cells = cells.gather(1, order[:, :, None, None, None].expand_as(cells))
    classes, source = classes.gather(1, order), source.gather(1, order)
    return PhotoGrids(_stitch(cells).contiguous(), _cell_masks(n_grids, shapes.images.shape[-1]), classes, source)


class CellWise(nn.Module):
    """Applies ``module`` to each cell of a ``cells x cells`` grid on its own, and stitches the results.

    ``[B, C, H, W]`` -> the cells ``[B * cells^2, C, H/cells, W/cells]`` -> ``module`` -> stitched back to
    ``[B, C', cells * h', cells * w']``. A convolution's padding or a pooling window then never reaches
    across a cell border: each cell is computed exactly as if it were the whole image.
    """

    def __init__(self, module: nn.Module, cells: int = 2):
        super().__init__()
        self.module, self.cells = module, cells

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        k = self.cells
        if h % k or w % k:
            raise ValueError(f"a {k}x{k} grid needs a height and width divisible by {k}, got {h}x{w}")
        split = x.reshape(b, c, k, h // k, k, w // k).permute(0, 2, 4, 1, 3, 5).reshape(b * k * k, c, h // k, w // k)
        out = self.module(split)
        _, c2, h2, w2 = out.shape
        return out.reshape(b, k, k, c2, h2, w2).permute(0, 3, 1, 4, 2, 5).reshape(b, c2, k * h2, k * w2)


class _CellPool(nn.Module):
    """Global average pooling per cell: ``[B, C, H, W]`` -> ``[B, cells^2, C]``."""

    def __init__(self, cells: int):
        super().__init__()
        self.cells = cells

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.adaptive_avg_pool2d(x, self.cells)          # [B, C, k, k], one mean per cell
        return pooled.flatten(2).transpose(1, 2)                            # [B, k*k, C], raster order


class _CellHead(nn.Module):
    """The classifier applied to each cell's pooled features: ``[B, k*k*C]`` -> ``[B, k*k*N]``."""

    def __init__(self, linear: nn.Linear, cells: int):
        super().__init__()
        self.linear, self.cells = linear, cells

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        per_cell = x.reshape(x.shape[0], self.cells**2, self.linear.in_features)
        return self.linear(per_cell).flatten(1)


class DisconnectedGrid(nn.Module):
    """DiFull (Rao, Boehle & Schiele, CVPR 2022): ``model`` run on each cell of a grid separately.

    ``model`` must be a conv net whose modules are applied in sequence with only pointwise operations
    between them and that ends in a global average pooling ``gap`` and a linear ``fc`` (as
    :class:`~xai_helpers.models.SmallCNN`). The copy wraps every convolution and pooling layer in
    :class:`CellWise`, pools each cell separately and applies ``fc`` to each: the output is
    ``[B, cells^2 * N]``, where index ``k * N + c`` is the logit of class ``c`` *for cell* ``k``. It
    equals ``model`` applied to cell ``k`` alone, so that logit depends on no pixel outside cell ``k``,
    and any attribution outside the cell is wrong by construction. ``model``'s layers keep their names
    under ``model.`` (``model.relu1``, whose output now covers the whole grid).
    """

    def __init__(self, model: nn.Module, cells: int = 2):
        super().__init__()
        gap, fc = getattr(model, "gap", None), getattr(model, "fc", None)
        if not isinstance(gap, nn.AdaptiveAvgPool2d) or not isinstance(fc, nn.Linear):
            raise TypeError(
                "DisconnectedGrid needs a model ending in `gap` (nn.AdaptiveAvgPool2d) and `fc` (nn.Linear), "
                f"as SmallCNN does; got gap={type(gap).__name__}, fc={type(fc).__name__}"
            )
        self.model = copy.deepcopy(model)
        self.cells = cells
        for name, child in list(self.model.named_children()):
            if isinstance(child, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
                setattr(self.model, name, CellWise(child, cells))
        self.model.gap = _CellPool(cells)
        self.model.fc = _CellHead(copy.deepcopy(fc), cells)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, cells*S, cells*S]`` -> ``[B, cells^2 * N]``: every cell's logits, cell by cell."""
        return self.model(x)
