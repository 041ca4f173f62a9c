"""Concept data made in code: images of a concept, random counter-examples, concepts pasted into
images with exact masks, and a shapes data set with a planted concept.

Concept-based explanations need example images of each concept (TCAV) or pixel masks of where a
concept is (network dissection). Here every such image is drawn by code from a seed, so the data
need no download and the masks are exact by construction.

* Patterns (:data:`PATTERNS`): :func:`stripes`, :func:`dots`, :func:`zigzags`,
  :func:`checkerboard`; :func:`pattern_maps` gives their ink maps ``[N, S, S]`` in [0, 1]. Each has
  a scale, its ``period`` in pixels (the pattern repeats every ``period`` pixels), drawn
  log-uniformly from a range ("several scales") or fixed, and an orientation ``angle``.
* Colours (:data:`COLOURS`): :func:`colour_patches`, a patchwork of shades of one colour.
* Textures (:data:`TEXTURES`): :func:`texture_images`, random crops of the photos of brick, grass
  and gravel that ship with scikit-image, at several scales.
* :func:`concept_images` makes any concept of :data:`CONCEPTS` by name.
* Counter-examples: :func:`random_images` (random crops of the bundled photos, or smooth colour
  noise) and :func:`random_counter_sets` (several independent sets, as TCAV's test needs).
* Masks: :func:`paste_concept` pastes concept patches into images (photos, shapes) and returns the
  exact masks ``[N, S, S]`` (True where a pixel was replaced); :func:`pasted_concept_set` makes the
  patches and pastes them in one call.
* :func:`planted_concept_shapes`: :func:`~xai_helpers.data.make_shapes` with a concept (stripes, by
  default) drawn on the background of one class's images, and its control with the same images
  but no plant, so that what a model can learn from the concept is known;
  :func:`pattern_backgrounds` gives the concept as planted (and plain backgrounds), for TCAV.

Every generator returns float images ``[N, 3, S, S]`` in [0, 1] and is reproducible: the same
arguments and ``seed`` give the same tensor (on one machine; it uses its own
``torch.Generator``, so it neither reads nor moves the global random state).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F

from .data import BACKGROUND_COLOURS, SAMPLE_IMAGES, SHAPES, ShapesDataset, _read_sample, make_shapes, to_tensor

__all__ = [
    "PATTERNS",
    "TEXTURES",
    "COLOURS",
    "CONCEPTS",
    "RANDOM_PHOTOS",
    "pattern_maps",
    "stripes",
    "dots",
    "zigzags",
    "checkerboard",
    "colour_patches",
    "texture_images",
    "concept_images",
    "random_images",
    "random_counter_sets",
    "paste_concept",
    "pasted_concept_set",
    "PlantedShapes",
    "planted_concept_shapes",
    "pattern_backgrounds",
]

#: The patterns :func:`pattern_maps` draws.
PATTERNS: tuple[str, ...] = ("stripes", "dots", "zigzags", "checkerboard")
#: The textures :func:`texture_images` crops (greyscale photos shipped with scikit-image).
TEXTURES: tuple[str, ...] = ("brick", "grass", "gravel")
#: Name -> RGB in [0, 1] of the colours :func:`colour_patches` knows by name.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.1),
    "green": (0.15, 0.65, 0.2),
    "blue": (0.12, 0.25, 0.85),
    "yellow": (0.95, 0.85, 0.1),
    "orange": (0.95, 0.5, 0.08),
    "purple": (0.5, 0.18, 0.65),
}
#: Every concept :func:`concept_images` makes by name: the patterns, the textures and the colours.
CONCEPTS: tuple[str, ...] = PATTERNS + TEXTURES + tuple(COLOURS)
#: The bundled photos :func:`random_images` crops by default: all of :data:`~xai_helpers.data.SAMPLE_IMAGES`
#: but the cat (the class the book's ImageNet examples explain) and the textures (concepts here).
RANDOM_PHOTOS: tuple[str, ...] = tuple(name for name in SAMPLE_IMAGES if name not in ("cat",) + TEXTURES)

Scale = float | tuple[float, float] | None
RGB = tuple[float, float, float]

# Sub-samples per pixel and side: patterns are drawn on a grid this much finer and averaged down,
# so that edges are anti-aliased (a stripe edge inside a pixel gives a grey in proportion).
_SUPERSAMPLE = 4


# ----------------------------------------------------------------------------- checks and draws


def _check_n_size(n: int, size: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int of at least 8 pixels, got {size!r}")


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen, dtype=torch.float64))


def _draw_period(gen: torch.Generator, period: Scale, size: int) -> float:
    """A period in pixels: fixed, or log-uniform in ``(low, high)``; default ``(size / 12, size / 4)``."""
    if period is None:
        period = (size / 12, size / 4)
    if isinstance(period, tuple):
        low, high = period
        if not 0 < low <= high:
            raise ValueError(f"a period range must satisfy 0 < low <= high, got {period}")
        return math.exp(_uniform(gen, math.log(low), math.log(high)))
    if period <= 0:
        raise ValueError(f"period must be positive, got {period}")
    return float(period)


def _draw_angle(gen: torch.Generator, angle: float | None) -> float:
    return _uniform(gen, 0.0, math.pi) if angle is None else float(angle)


def _contrasting_colours(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(ink, paper): one dark colour in [0.05, 0.4]^3 and one light in [0.6, 0.95]^3, in random order."""
    dark = 0.05 + 0.35 * torch.rand(3, generator=gen)
    light = 0.6 + 0.35 * torch.rand(3, generator=gen)
    return (dark, light) if torch.rand((), generator=gen) < 0.5 else (light, dark)


# ----------------------------------------------------------------------------- patterns


def _fine_grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-sample centres ``(x, y)``, each ``[S * ss, S * ss]`` in pixel units (pixel ``j`` spans ``[j, j + 1)``)."""
    coords = (torch.arange(size * _SUPERSAMPLE, dtype=torch.float64) + 0.5) / _SUPERSAMPLE
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    return xs, ys


def _triangle(t: torch.Tensor) -> torch.Tensor:
    """The triangle wave of period 1 with values in [-1, 1]: -1 at integers, +1 at half-integers."""
    return 4 * (t - torch.floor(t + 0.5)).abs() - 1


def _one_pattern(kind: str, size: int, period: float, angle: float, phase: tuple[float, float]) -> torch.Tensor:
    """The ink map ``[S, S]`` in [0, 1] of one pattern (1 = ink), anti-aliased by supersampling.

    ``u`` runs along the pattern's orientation ``angle`` (radians from the image's x axis, y down)
    and ``v`` across it, both in pixels; ``phase`` shifts the pattern by fractions of a period.
    """
    xs, ys = _fine_grid(size)
    c, s = math.cos(angle), math.sin(angle)
    u = (c * xs + s * ys) / period + phase[0]
    v = (-s * xs + c * ys) / period + phase[1]
    if kind == "stripes":  # bands along u, half a period each
        ink = (v - torch.floor(v)) < 0.5
    elif kind == "zigzags":  # the same bands, their centre lines bent into a triangle wave along u
        bent = v + 0.35 * _triangle(u / 1.2)
        ink = (bent - torch.floor(bent)) < 0.5
    elif kind == "dots":  # discs of radius 0.3 period on a square lattice of spacing period
        du, dv = u - torch.floor(u) - 0.5, v - torch.floor(v) - 0.5
        ink = du**2 + dv**2 <= 0.3**2
    elif kind == "checkerboard":  # cells of half a period
        ink = (torch.floor(2 * u) + torch.floor(2 * v)) % 2 == 0
    else:
        raise ValueError(f"unknown pattern {kind!r}; choose one of {', '.join(PATTERNS)}")
    fine = ink.to(torch.float32)[None, None]
    return F.avg_pool2d(fine, _SUPERSAMPLE)[0, 0]


def _pattern_maps(
    kind: str, n: int, size: int, gen: torch.Generator, period: Scale, angle: float | None
) -> torch.Tensor:
    maps = torch.empty(n, size, size)
    for i in range(n):
        p = _draw_period(gen, period, size)
        a = _draw_angle(gen, angle)
        phase = (_uniform(gen, 0, 1), _uniform(gen, 0, 1))
        maps[i] = _one_pattern(kind, size, p, a, phase)
    return maps


def pattern_maps(
    kind: str, n: int, *, size: int = 64, period: Scale = None, angle: float | None = None, seed: int = 0
) -> torch.Tensor:
    """Ink maps ``[N, S, S]`` in [0, 1] of a pattern of :data:`PATTERNS` (1 = ink, 0 = paper).

    In coordinates ``u`` along and ``v`` across the orientation ``angle`` (radians from the x axis;
    the y axis points down), measured in periods and shifted by a random phase:

    * ``"stripes"``: ink where ``frac(v) < 1/2``: bands of half a period. ``angle=0`` gives
      horizontal stripes (every row constant), ``angle=pi/2`` vertical ones;
    * ``"zigzags"``: the stripes with ``v`` replaced by ``v + 0.35 tri(u / 1.2)``, ``tri`` the
      triangle wave of period 1 in [-1, 1];
    * ``"dots"``: discs of radius ``0.3 period`` on a square lattice of spacing ``period``;
    * ``"checkerboard"``: squares of side ``period / 2``, alternating.

    ``period`` (pixels): a number, a range ``(low, high)`` drawn log-uniformly per image, or None for
    ``(size / 12, size / 4)``. ``angle``: a number, or None for uniform in ``[0, pi)`` per image.
    Each pixel is the mean of ``4 x 4`` sub-samples, so edges are anti-aliased.
    """
    _check_n_size(n, size)
    if kind not in PATTERNS:
        raise ValueError(f"unknown pattern {kind!r}; choose one of {', '.join(PATTERNS)}")
    return _pattern_maps(kind, n, size, torch.Generator().manual_seed(seed), period, angle)


def _coloured_pattern(
    kind: str,
    n: int,
    size: int,
    seed: int,
    period: Scale,
    angle: float | None,
    colours: tuple[RGB, RGB] | None,
    noise: float,
) -> torch.Tensor:
    _check_n_size(n, size)
    gen = torch.Generator().manual_seed(seed)
    maps = _pattern_maps(kind, n, size, gen, period, angle)  # [N, S, S]
    images = torch.empty(n, 3, size, size)
    for i in range(n):
        if colours is None:
            ink, paper = _contrasting_colours(gen)
        else:
            ink, paper = torch.tensor(colours[0]), torch.tensor(colours[1])
        images[i] = paper.view(3, 1, 1) + (ink - paper).view(3, 1, 1) * maps[i]
    if noise:
        images = images + noise * torch.randn(images.shape, generator=gen)
    return images.clamp(0, 1)


def stripes(
    n: int,
    *,
    size: int = 64,
    period: Scale = None,
    angle: float | None = None,
    colours: tuple[RGB, RGB] | None = None,
    noise: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """``n`` images ``[N, 3, S, S]`` of stripes (see :func:`pattern_maps` for ``period`` and ``angle``).

    Pixel = ``paper + (ink - paper) * map``: ``colours=(ink, paper)`` RGB triples, or None for a
    random dark and light pair per image; ``noise`` adds Gaussian noise of that standard deviation.
    """
    return _coloured_pattern("stripes", n, size, seed, period, angle, colours, noise)


def dots(
    n: int,
    *,
    size: int = 64,
    period: Scale = None,
    angle: float | None = None,
    colours: tuple[RGB, RGB] | None = None,
    noise: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """``n`` images ``[N, 3, S, S]`` of dots on a lattice of spacing ``period``; as :func:`stripes`."""
    return _coloured_pattern("dots", n, size, seed, period, angle, colours, noise)


def zigzags(
    n: int,
    *,
    size: int = 64,
    period: Scale = None,
    angle: float | None = None,
    colours: tuple[RGB, RGB] | None = None,
    noise: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """``n`` images ``[N, 3, S, S]`` of zigzag bands; as :func:`stripes`."""
    return _coloured_pattern("zigzags", n, size, seed, period, angle, colours, noise)


def checkerboard(
    n: int,
    *,
    size: int = 64,
    period: Scale = None,
    angle: float | None = None,
    colours: tuple[RGB, RGB] | None = None,
    noise: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """``n`` images ``[N, 3, S, S]`` of a checkerboard with squares of side ``period / 2``; as :func:`stripes`."""
    return _coloured_pattern("checkerboard", n, size, seed, period, angle, colours, noise)


# ----------------------------------------------------------------------------- colours and textures


def colour_patches(
    n: int,
    colour: str | RGB,
    *,
    size: int = 64,
    cells: tuple[int, int] = (4, 16),
    shade: float = 0.25,
    jitter: float = 0.05,
    noise: float = 0.02,
    seed: int = 0,
) -> torch.Tensor:
    """``n`` images ``[N, 3, S, S]`` covered by patches of one colour in several shades.

    ``colour``: a name of :data:`COLOURS` or an RGB triple in [0, 1]. Each image is cut into
    Voronoi cells around ``k`` random points (``k`` uniform in ``cells``, inclusive); a cell gets
    ``colour * b + jitter * e``, with brightness ``b`` uniform in ``[1 - shade, 1 + shade]`` and
    ``e`` standard normal per channel; then pixel noise of standard deviation ``noise``; clamped.
    """
    _check_n_size(n, size)
    if isinstance(colour, str):
        if colour not in COLOURS:
            raise ValueError(f"unknown colour {colour!r}; choose one of {', '.join(COLOURS)} or give an RGB triple")
        colour = COLOURS[colour]
    base = torch.tensor(colour, dtype=torch.float32)
    if base.shape != (3,) or base.min() < 0 or base.max() > 1:
        raise ValueError(f"colour must be an RGB triple in [0, 1], got {colour!r}")
    low, high = cells
    if not 1 <= low <= high:
        raise ValueError(f"cells must satisfy 1 <= low <= high, got {cells}")
    gen = torch.Generator().manual_seed(seed)
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    images = torch.empty(n, 3, size, size)
    for i in range(n):
        k = int(torch.randint(low, high + 1, (), generator=gen))
        centres = size * torch.rand(k, 2, generator=gen)  # [k, (x, y)]
        nearest = ((xs[None] - centres[:, 0, None, None]) ** 2 + (ys[None] - centres[:, 1, None, None]) ** 2).argmin(
            0
        )  # [S, S]
        brightness = 1 - shade + 2 * shade * torch.rand(k, 1, generator=gen)
        shades = base * brightness + jitter * torch.randn(k, 3, generator=gen)  # [k, 3]
        images[i] = shades[nearest].permute(2, 0, 1)
    images = images + noise * torch.randn(images.shape, generator=gen)
    return images.clamp(0, 1)


@lru_cache(maxsize=None)
def _full_photo(name: str) -> torch.Tensor:
    """A bundled photo at its own resolution, ``[3, H, W]`` in [0, 1] (read once)."""
    return to_tensor(_read_sample(SAMPLE_IMAGES[name]), size=None, crop=False)[0]


def _random_crop(photo: torch.Tensor, size: int, fraction: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """A square crop of ``photo [3, H, W]`` of side ``f * min(H, W)`` (``f`` uniform in ``fraction``),
    at a random place, flipped left-right with probability 1/2, resized to ``[3, size, size]``."""
    low, high = fraction
    if not 0 < low <= high <= 1:
        raise ValueError(f"a crop fraction range must satisfy 0 < low <= high <= 1, got {fraction}")
    _, h, w = photo.shape
    side = max(2, round(_uniform(gen, low, high) * min(h, w)))
    top = int(torch.randint(h - side + 1, (), generator=gen))
    left = int(torch.randint(w - side + 1, (), generator=gen))
    crop = photo[:, top : top + side, left : left + side]
    if torch.rand((), generator=gen) < 0.5:
        crop = crop.flip(-1)
    resized = F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized[0].clamp(0, 1)


def texture_images(
    n: int, name: str, *, size: int = 64, crop: tuple[float, float] = (0.15, 0.5), seed: int = 0
) -> torch.Tensor:
    """``n`` random crops ``[N, 3, S, S]`` of a texture of :data:`TEXTURES` (brick, grass, gravel).

    The textures are greyscale photos of 512 x 512 pixels that ship with scikit-image
    (``skimage.data.brick()`` and so on), repeated over three channels. Each crop is a square of
    side ``f * 512`` with ``f`` uniform in ``crop`` (several scales), at a random place, flipped
    with probability 1/2, resized to ``size`` with anti-aliasing.
    """
    _check_n_size(n, size)
    if name not in TEXTURES:
        raise ValueError(f"unknown texture {name!r}; choose one of {', '.join(TEXTURES)}")
    gen = torch.Generator().manual_seed(seed)
    photo = _full_photo(name)
    return torch.stack([_random_crop(photo, size, crop, gen) for _ in range(n)])


def concept_images(name: str, n: int, *, size: int = 64, seed: int = 0, **options) -> torch.Tensor:
    """``n`` images ``[N, 3, S, S]`` of the concept ``name`` of :data:`CONCEPTS`.

    A pattern goes to :func:`stripes` and its siblings, a texture to :func:`texture_images`, a
    colour to :func:`colour_patches`; ``options`` are passed on (``period=``, ``crop=``, ...).
    """
    if name in PATTERNS:
        generator = {"stripes": stripes, "dots": dots, "zigzags": zigzags, "checkerboard": checkerboard}[name]
        return generator(n, size=size, seed=seed, **options)
    if name in TEXTURES:
        return texture_images(n, name, size=size, seed=seed, **options)
    if name in COLOURS:
        return colour_patches(n, name, size=size, seed=seed, **options)
    raise ValueError(f"unknown concept {name!r}; choose one of {', '.join(CONCEPTS)}")


# ----------------------------------------------------------------------------- counter-examples


def _smooth_noise(size: int, gen: torch.Generator) -> torch.Tensor:
    """Smooth colour noise ``[3, S, S]`` in [0, 1]: Gaussian noise on a coarse grid of ``r x r`` cells
    (``r`` one of 2, 3, 4, 6, 8, 12, 16), upsampled bilinearly, around a random mean colour."""
    cells = (2, 3, 4, 6, 8, 12, 16)
    r = cells[int(torch.randint(len(cells), (), generator=gen))]
    coarse = torch.randn(1, 3, r, r, generator=gen)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[0]
    mean = 0.25 + 0.5 * torch.rand(3, 1, 1, generator=gen)
    return (mean + 0.2 * smooth + 0.03 * torch.randn(3, size, size, generator=gen)).clamp(0, 1)


def random_images(
    n: int,
    *,
    size: int = 64,
    kind: Literal["photos", "noise", "mixed"] = "mixed",
    photos: Sequence[str] = RANDOM_PHOTOS,
    crop: tuple[float, float] = (0.2, 0.7),
    seed: int = 0,
) -> torch.Tensor:
    """``n`` random counter-example images ``[N, 3, S, S]`` in [0, 1], of no particular concept.

    ``kind="photos"``: square crops of the bundled ``photos`` (names of
    :data:`~xai_helpers.data.SAMPLE_IMAGES`; one drawn uniformly per image), of side ``f`` times the
    photo's shorter side, ``f`` uniform in ``crop``, flipped with probability 1/2. ``kind="noise"``:
    smooth colour noise at a random scale. ``kind="mixed"``: each image is either, with probability 1/2.
    """
    _check_n_size(n, size)
    if kind not in ("photos", "noise", "mixed"):
        raise ValueError(f"kind must be 'photos', 'noise' or 'mixed', got {kind!r}")
    unknown = [p for p in photos if p not in SAMPLE_IMAGES]
    if unknown or not photos:
        raise ValueError(f"photos must be names of SAMPLE_IMAGES, got unknown {unknown or 'none at all'}")
    gen = torch.Generator().manual_seed(seed)
    images = torch.empty(n, 3, size, size)
    for i in range(n):
        photo = kind == "photos" or (kind == "mixed" and bool(torch.rand((), generator=gen) < 0.5))
        if photo:
            name = photos[int(torch.randint(len(photos), (), generator=gen))]
            images[i] = _random_crop(_full_photo(name), size, crop, gen)
        else:
            images[i] = _smooth_noise(size, gen)
    return images


def random_counter_sets(
    n_sets: int,
    n: int,
    *,
    size: int = 64,
    kind: Literal["photos", "noise", "mixed"] = "mixed",
    seed: int = 0,
    **options,
) -> list[torch.Tensor]:
    """``n_sets`` independent sets of :func:`random_images`, each ``[n, 3, S, S]``.

    Set ``i`` is drawn with seed ``1_000_003 * seed + i + 1`` (so no set shares the draws of a
    concept set made with ``seed``). TCAV trains one CAV against each set, and random-vs-random
    CAVs between them, for its null distribution.
    """
    if isinstance(n_sets, bool) or not isinstance(n_sets, int) or n_sets < 1:
        raise ValueError(f"n_sets must be a positive int, got {n_sets!r}")
    return [random_images(n, size=size, kind=kind, seed=1_000_003 * seed + i + 1, **options) for i in range(n_sets)]


# ----------------------------------------------------------------------------- pasted concepts


def paste_concept(
    images: torch.Tensor,
    patches: torch.Tensor,
    *,
    shape: Literal["square", "disc"] = "square",
    positions: torch.Tensor | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste ``patches [N, 3, P, P]`` into ``images [N, 3, S, S]``; returns ``(pasted, masks)``.

    Patch ``i`` goes with its top-left corner at ``positions[i] = (top, left)`` (a LongTensor
    ``[N, 2]``), or at a place drawn uniformly with ``seed``, wholly inside the image. ``shape``
    ``"square"`` pastes the whole patch; ``"disc"`` only the pixels whose centres lie within ``P / 2``
    of the patch's centre. ``masks [N, S, S]`` (bool) is True exactly on the pasted pixels:
    ``pasted == patch`` there and ``pasted == images`` everywhere else.
    """
    if images.dim() != 4 or patches.dim() != 4 or images.shape[:2] != patches.shape[:2]:
        raise ValueError(
            f"images [N, C, S, S] and patches [N, C, P, P] must agree in N and C, got "
            f"{list(images.shape)} and {list(patches.shape)}"
        )
    n, _, h, w = images.shape
    p, q = patches.shape[-2:]
    if p > h or q > w:
        raise ValueError(f"patches of {p} x {q} do not fit into images of {h} x {w}")
    if shape not in ("square", "disc"):
        raise ValueError(f"shape must be 'square' or 'disc', got {shape!r}")
    if positions is None:
        gen = torch.Generator().manual_seed(seed)
        positions = torch.stack(
            [torch.randint(h - p + 1, (n,), generator=gen), torch.randint(w - q + 1, (n,), generator=gen)], 1
        )
    positions = torch.as_tensor(positions).long()
    if (
        positions.shape != (n, 2)
        or (positions < 0).any()
        or (positions[:, 0] > h - p).any()
        or (positions[:, 1] > w - q).any()
    ):
        raise ValueError(
            f"positions must be [N, 2] (top, left) that keep each patch inside the image, got {positions.tolist()}"
        )
    if shape == "disc":
        ys, xs = torch.meshgrid(torch.arange(p) + 0.5, torch.arange(q) + 0.5, indexing="ij")
        footprint = (ys - p / 2) ** 2 + (xs - q / 2) ** 2 <= (min(p, q) / 2) ** 2
    else:
        footprint = torch.ones(p, q, dtype=torch.bool)
    pasted = images.clone()
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    for i, (top, left) in enumerate(positions.tolist()):
        masks[i, top : top + p, left : left + q] = footprint
        region = pasted[i, :, top : top + p, left : left + q]
        region[:, footprint] = patches[i][:, footprint].to(pasted.dtype)
    return pasted, masks


def pasted_concept_set(
    concept: str,
    backgrounds: torch.Tensor,
    *,
    patch_size: int,
    shape: Literal["square", "disc"] = "square",
    seed: int = 0,
    **options,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One patch of ``concept`` (:func:`concept_images`, ``options`` passed on) pasted into each of
    ``backgrounds [N, 3, S, S]`` (photos, shapes) at a random place: ``(images, masks [N, S, S])``.

    The patches are drawn with ``seed``, the places with ``seed + 1``; the masks are exact.
    """
    patches = concept_images(concept, backgrounds.shape[0], size=patch_size, seed=seed, **options)
    return paste_concept(backgrounds, patches, shape=shape, seed=seed + 1)


# ----------------------------------------------------------------------------- planted concept


@dataclass
class PlantedShapes(ShapesDataset):
    """:class:`~xai_helpers.data.ShapesDataset` with a concept planted on some backgrounds.

    Extra attributes: ``concept`` (the pattern's name), ``class_index`` (the class it goes with),
    ``planted [N]`` bool (whose background carries the pattern; all False in the control) and
    ``concept_masks [N, S, S]`` bool (the pixels that carry it: the background of the planted images).
    """

    concept: str = "stripes"
    class_index: int = 0
    planted: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    concept_masks: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0, 0, dtype=torch.bool))


def planted_concept_shapes(
    n: int,
    *,
    size: int = 32,
    seed: int = 0,
    concept: str = "stripes",
    class_index: int = 0,
    strength: float = 1.0,
    plant: bool = True,
    depth: float = 0.5,
    period: Scale = None,
    noise: float = 0.05,
    class_names: tuple[str, ...] = SHAPES,
) -> PlantedShapes:
    """Shapes (:func:`~xai_helpers.data.make_shapes`) whose class ``class_index`` has a patterned background.

    The shapes, labels, masks and plain background colours are those of
    ``make_shapes(n, size=size, seed=seed, noise=0, class_names=class_names)`` (background colour
    independent of the class). An image of class ``class_index`` is chosen with probability
    ``strength``; with ``plant=True`` its background pixels become ``c * (1 - depth * m)``, ``c``
    the plain colour and ``m`` the ink map of the pattern ``concept`` (:func:`pattern_maps`;
    ``period`` default ``(3 size / 32, 6 size / 32)`` pixels, random angle), while the other images
    keep a plain background. Pixel noise of standard deviation ``noise`` is added last.

    ``plant=False`` is the control: every draw (which images are chosen, their patterns, the noise)
    is the same, but no pattern is drawn, so the two data sets differ only on the planted pixels.
    Where the pattern is present it always goes with class ``class_index``, so a model can use it as
    evidence for that class; in the control it carries no information.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength is a probability in [0, 1], got {strength}")
    if not 0.0 < depth <= 1.0:
        raise ValueError(f"depth must lie in (0, 1], got {depth}")
    if concept not in PATTERNS:
        raise ValueError(f"concept must be a pattern of {PATTERNS}, got {concept!r}")
    if not 0 <= class_index < len(class_names):
        raise ValueError(f"class_index must lie in [0, {len(class_names)}), got {class_index}")
    base = make_shapes(n, size=size, seed=seed, noise=0.0, class_names=class_names)
    gen = torch.Generator().manual_seed(2 * seed + 1)  # independent of make_shapes' own draws
    chosen = (base.labels == class_index) & (torch.rand(n, generator=gen) < strength)
    if period is None:
        period = (3 * size / 32, 6 * size / 32)
    maps = _pattern_maps(concept, n, size, gen, period, None)  # [N, S, S]
    pixel_noise = noise * torch.randn(base.images.shape, generator=gen)
    planted = chosen & plant
    concept_masks = planted[:, None, None] & ~base.masks
    images = base.images.clone()
    images = torch.where(concept_masks[:, None], images * (1 - depth * maps[:, None]), images)
    images = (images + pixel_noise).clamp(0, 1)
    return PlantedShapes(
        images,
        base.labels,
        base.masks,
        base.backgrounds,
        base.class_names,
        concept=concept,
        class_index=class_index,
        planted=planted,
        concept_masks=concept_masks,
    )


def pattern_backgrounds(
    n: int,
    *,
    size: int = 32,
    seed: int = 0,
    concept: str | None = "stripes",
    depth: float = 0.5,
    period: Scale = None,
    noise: float = 0.05,
) -> torch.Tensor:
    """``n`` backgrounds ``[N, 3, S, S]`` of the shapes data without a shape: the concept as it is planted.

    Each image has one of the shapes' plain background colours ``c``
    (``xai_helpers.data.BACKGROUND_COLOURS``, drawn uniformly) and, with ``concept`` a pattern,
    the pixels ``c * (1 - depth * m)`` of :func:`planted_concept_shapes` (same ``period`` default);
    with ``concept=None`` plain ones. Then pixel noise of standard deviation ``noise``. Concept
    examples drawn like the plant, and counter-examples that differ from them only by the pattern,
    for TCAV on a model trained on :func:`planted_concept_shapes`.
    """
    _check_n_size(n, size)
    if concept is not None and concept not in PATTERNS:
        raise ValueError(f"concept must be a pattern of {PATTERNS} or None, got {concept!r}")
    gen = torch.Generator().manual_seed(seed)
    colours = BACKGROUND_COLOURS[torch.randint(len(BACKGROUND_COLOURS), (n,), generator=gen)].view(n, 3, 1, 1)
    images = colours.expand(n, 3, size, size)
    if concept is not None:
        maps = _pattern_maps(concept, n, size, gen, (3 * size / 32, 6 * size / 32) if period is None else period, None)
        images = images * (1 - depth * maps[:, None])
    return (images + noise * torch.randn(n, 3, size, size, generator=gen)).clamp(0, 1)
