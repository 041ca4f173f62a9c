"""Figures: one house style, images, heatmap overlays and image x method grids.

Every function returns a :class:`matplotlib.figure.Figure` that has already been closed with
``plt.close``, so a notebook shows it exactly once (end a cell with the figure) and scripts leak
no open figures. Heatmaps are drawn as raster images, so figures stay small as PNG;
:func:`use_jpeg_figures` switches a notebook to JPEG where photos and pixel-level maps dominate.
"""
from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.style
import numpy as np
import torch

__all__ = ["set_style", "use_jpeg_figures", "rgb_png", "to_numpy_image", "show_image", "overlay", "image_grid",
           "heatmap_grid", "HEATMAP_CMAP"]

#: The colour map of heatmaps laid over images: perceptually uniform (equal steps of attribution
#: look like equal steps of colour, and it reads in grey scale), from black (none) to pale yellow
#: (most). The rainbow "jet" of the papers puts false edges where its hues change.
HEATMAP_CMAP = "inferno"

STYLE: dict[str, Any] = {
    "figure.facecolor": "white",  # readable in the site's dark mode too
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "image.interpolation": "nearest",
}


def set_style() -> None:
    """Apply the book's matplotlib style (white background, modest sizes). In IPython, figures are
    shown as PNG without an alpha channel (see :func:`rgb_png`)."""
    matplotlib.style.use(STYLE)  # a dict of rcParams (typed, unlike rcParams.update with str keys)
    _show_figures_as_rgb_png()


def rgb_png(png: bytes) -> bytes:
    """A PNG again, without its alpha channel when that is opaque everywhere: matplotlib always
    writes RGBA, and the book's figures have a white background, so a quarter of the bytes would
    be 255s. A PNG with real transparency is returned unchanged."""
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    if image.mode != "RGBA" or image.getchannel("A").getextrema() != (255, 255):
        return png
    out = io.BytesIO()
    image.convert("RGB").save(out, format="png", optimize=True)
    return out.getvalue()


def _figure_as_rgb_png(fig: matplotlib.figure.Figure) -> str | None:
    """IPython's PNG of a figure (cropped to its content, as the inline backend does), base64, RGB."""
    from IPython.core.pylabtools import print_figure

    data = print_figure(fig, fmt="png", bbox_inches="tight")
    return None if data is None else base64.b64encode(rgb_png(data)).decode("ascii")


def _show_figures_as_rgb_png() -> None:
    """Where IPython shows figures as PNG, show them through :func:`rgb_png` (JPEG mode is left alone)."""
    try:
        from IPython import get_ipython
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - no IPython, no inline figures
        return
    shell = get_ipython()
    if shell is None:
        return
    formatter = shell.display_formatter.formatters["image/png"]
    current = formatter.type_printers.get(Figure)
    if current is not None and current is not _figure_as_rgb_png:
        formatter.for_type(Figure, _figure_as_rgb_png)


def use_jpeg_figures(quality: int = 80, full_colour: bool = False) -> None:
    """Show the running notebook's figures as JPEG instead of PNG (outside IPython: nothing to do).

    PNG keeps the pixel noise of photos, feature-visualisation renders and gradient maps losslessly:
    a 770x590 grid of gradient maps takes 830 kB as PNG and about 190 kB as JPEG at quality 90. The
    default, quality 80 with colour at half resolution (4:2:0, as most photos on the web), takes
    about half of that again, which keeps a page of many figures light; brightness stays at full
    resolution. ``full_colour=True`` keeps colour at full resolution too, for figures whose
    single-pixel colour matters at the size they are shown. Line plots and text are sharper as
    PNG: use this on image-heavy pages only.
    """
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:  # pragma: no cover - no IPython, so no inline figures
        return
    if get_ipython() is None:
        return
    set_matplotlib_formats("jpeg", pil_kwargs={"quality": quality, "subsampling": 0 if full_colour else 2,
                                               "optimize": True})


def to_numpy_image(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """``[1, 3, H, W]``, ``[3, H, W]``, ``[H, W, 3]`` or ``[H, W]`` -> numpy ``[H, W, 3]`` or ``[H, W]``."""
    array = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {array.shape[0]}; index it first, e.g. x[0]")
        array = array[0]
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ValueError(f"cannot show an array shaped {list(array.shape)} as an image")
    return array


def show_image(ax: plt.Axes, image: torch.Tensor | np.ndarray, title: str | None = None) -> None:
    """Draw an RGB image in [0, 1] (or a grey map) on ``ax`` without ticks."""
    array = to_numpy_image(image)
    ax.imshow(np.clip(array, 0, 1) if array.ndim == 3 else array, cmap=None if array.ndim == 3 else "gray")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title)


def overlay(
    ax: plt.Axes,
    image: torch.Tensor | np.ndarray,
    heatmap: torch.Tensor | np.ndarray,
    *,
    alpha: float = 0.5,
    cmap: str = HEATMAP_CMAP,
    title: str | None = None,
    colorbar: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
) -> matplotlib.image.AxesImage:
    """Draw ``heatmap`` (``[H, W]``, any size; stretched over the image) on top of ``image``."""
    array = to_numpy_image(image)
    show_image(ax, array, title)
    heat = to_numpy_image(heatmap)
    if heat.ndim != 2:
        raise ValueError(f"a heatmap must be 2-D [H, W], got {list(heat.shape)}; reduce the channels first")
    h, w = array.shape[:2]
    im = ax.imshow(heat, cmap=cmap, alpha=alpha, extent=(-0.5, w - 0.5, h - 0.5, -0.5), vmin=vmin, vmax=vmax,
                   interpolation="bilinear")
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    return im


def image_grid(
    images: Sequence[torch.Tensor | np.ndarray],
    titles: Sequence[str] | None = None,
    *,
    ncols: int | None = None,
    size: float = 2.4,
    cmap: str | None = None,
) -> matplotlib.figure.Figure:
    """Images side by side (``ncols`` per row). RGB images are shown as they are, 2-D maps with ``cmap``."""
    n = len(images)
    if titles is not None and len(titles) != n:
        raise ValueError(f"got {n} images but {len(titles)} titles")
    ncols = min(n, ncols or n)
    nrows = -(-n // ncols)
    set_style()
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        array = to_numpy_image(images[i])
        if array.ndim == 2:
            ax.imshow(array, cmap=cmap or "viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            if titles:
                ax.set_title(titles[i])
        else:
            show_image(ax, array, titles[i] if titles else None)
    fig.tight_layout()
    plt.close(fig)
    return fig


def heatmap_grid(
    images: Sequence[torch.Tensor | np.ndarray],
    maps: Mapping[str, Sequence[torch.Tensor | np.ndarray]],
    *,
    row_titles: Sequence[str] | None = None,
    show_input: bool = True,
    alpha: float = 0.5,
    cmap: str = HEATMAP_CMAP,
    size: float = 2.4,
) -> matplotlib.figure.Figure:
    """A grid of images (rows) x methods (columns), each map overlaid on its image.

    ``maps`` maps a method name to one ``[H, W]`` map per image. Maps are drawn with a shared
    0-to-1 colour scale when they are normalised, so columns can be compared.
    """
    n_images = len(images)
    for name, per_image in maps.items():
        if len(per_image) != n_images:
            raise ValueError(f"method {name!r} has {len(per_image)} maps for {n_images} images")
    if row_titles is not None and len(row_titles) != n_images:
        raise ValueError(f"got {n_images} images but {len(row_titles)} row titles")
    ncols = len(maps) + int(show_input)
    set_style()
    fig, axes = plt.subplots(n_images, ncols, figsize=(size * ncols, size * n_images), squeeze=False)
    for row, image in enumerate(images):
        col = 0
        if show_input:
            show_image(axes[row, 0], image, "input" if row == 0 else None)
            if row_titles:
                axes[row, 0].set_ylabel(row_titles[row])
            col = 1
        for j, (name, per_image) in enumerate(maps.items()):
            overlay(axes[row, col + j], image, per_image[row], alpha=alpha, cmap=cmap,
                    title=name if row == 0 else None, colorbar=False)
    fig.tight_layout()
    plt.close(fig)
    return fig
