"""Parametrisations: how the numbers we optimise become a batch of RGB images in [0, 1].

* :class:`PixelImage` -- one free number per pixel and colour, squashed by a sigmoid.
* :class:`FourierImage` -- the image's 2-D Fourier coefficients, scaled by ``1/f`` so that every
  spatial frequency has about the same energy, and a colour basis in which the three channels are
  uncorrelated. A sigmoid maps the result to [0, 1].

Both are ``nn.Module`` s: ``param()`` returns ``[B, 3, H, W]`` and ``param.parameters()`` is what the
optimiser changes. Both are initialised from an explicit ``torch.Generator``, so a seed fixes them.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["COLOR_CORRELATION_SQRT", "PixelImage", "FourierImage", "fourier_scale", "make_param"]

# Square root of the colour covariance of ImageNet pixels, C = U S U^T, as the matrix U sqrt(S)
# (columns: principal colour directions times the square root of their variance). Values published
# in Lucid, lucid/optvis/param/color.py ("color_correlation_svd_sqrt"). We scale it so that its
# largest column has norm 1. Column 0 is "brightness" (R, G, B together); 1 and 2 are colour
# opponents (red-blue and green-magenta).
_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                          [0.27, 0.00, -0.05],
                          [0.27, -0.09, 0.03]])
#: ``[3, 3]``: ``U sqrt(S)`` of ImageNet's colour covariance ``C = U S U^T`` (Lucid's values), scaled so
#: that its largest column has norm 1; :class:`FourierImage` maps its decorrelated colours through it.
COLOR_CORRELATION_SQRT = _SVD_SQRT / _SVD_SQRT.norm(dim=0).max()


def _check_shape(batch: int, size: int | tuple[int, int]) -> tuple[int, int, int]:
    h, w = (size, size) if isinstance(size, int) else size
    if batch < 1 or h < 2 or w < 2:
        raise ValueError(f"need batch >= 1 and an image of at least 2x2 pixels, got batch={batch}, size={size}")
    return batch, h, w


class PixelImage(nn.Module):
    """``sigmoid(theta)``: ``theta [B, 3, H, W]`` starts as small Gaussian noise (a grey image)."""

    def __init__(self, batch: int, size: int | tuple[int, int], generator: torch.Generator | None = None,
                 sd: float = 0.01):
        super().__init__()
        b, h, w = _check_shape(batch, size)
        self.theta = nn.Parameter(sd * torch.randn(b, 3, h, w, generator=generator))

    def forward(self) -> torch.Tensor:
        """The images ``sigmoid(theta)``, ``[B, 3, H, W]`` in (0, 1)."""
        return torch.sigmoid(self.theta)


def fourier_scale(h: int, w: int, decay: float = 1.0) -> torch.Tensor:
    """``1 / f**decay`` for every coefficient of ``rfft2`` on an ``h x w`` image: ``[h, w//2 + 1]``.

    ``f`` is the frequency in cycles per pixel; the constant term gets the largest finite value
    (as if ``f`` were one cycle per image), so the mean colour stays free but not dominant.
    """
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    f = (fx**2 + fy**2).sqrt().clamp_min(1.0 / max(h, w))
    return f.pow(-decay) / max(h, w)  # the lowest frequency gets weight 1


class FourierImage(nn.Module):
    """A decorrelated, ``1/f``-scaled Fourier image.

    ``spectrum [B, 3, H, W//2+1]`` (complex, stored as real and imaginary parts) ->
    ``* fourier_scale`` -> inverse FFT -> ``COLOR_CORRELATION_SQRT @`` colour vector at each
    pixel -> sigmoid. In these coordinates a gradient step changes low frequencies and natural colour
    directions as easily as high frequencies and odd colours, which removes the optimiser's bias
    towards high-frequency, high-saturation noise.
    """

    scale: torch.Tensor   # [H, W//2+1] buffers (declared: register_buffer hides their type)
    colors: torch.Tensor  # [3, 3]

    def __init__(self, batch: int, size: int | tuple[int, int], generator: torch.Generator | None = None,
                 sd: float = 0.01, decay: float = 1.0, decorrelate: bool = True):
        super().__init__()
        b, self.h, self.w = _check_shape(batch, size)
        self.decorrelate = decorrelate
        self.register_buffer("scale", fourier_scale(self.h, self.w, decay), persistent=False)
        self.register_buffer("colors", COLOR_CORRELATION_SQRT.clone() if decorrelate else torch.eye(3),
                             persistent=False)
        self.spectrum = nn.Parameter(sd * torch.randn(b, 3, self.h, self.w // 2 + 1, 2, generator=generator))

    def logits(self) -> torch.Tensor:
        """The image before the sigmoid, ``[B, 3, H, W]``."""
        coefficients = torch.view_as_complex(self.spectrum) * self.scale
        # With norm="ortho" unit-variance coefficients give pixels of about unit variance at every size.
        z = torch.fft.irfft2(coefficients, s=(self.h, self.w), norm="ortho") * math.sqrt(self.h * self.w) / 4
        return torch.einsum("ij,bjhw->bihw", self.colors, z)

    def forward(self) -> torch.Tensor:
        """The images ``sigmoid(logits())``, ``[B, 3, H, W]`` in (0, 1)."""
        return torch.sigmoid(self.logits())

    @torch.no_grad()
    def set_image(self, image: torch.Tensor) -> "FourierImage":
        """Set the parameters so that ``self()`` returns ``image`` ``[B, 3, H, W]`` (values in (0, 1))."""
        if image.shape != (self.spectrum.shape[0], 3, self.h, self.w):
            raise ValueError(
                f"expected an image [{self.spectrum.shape[0]}, 3, {self.h}, {self.w}], got {list(image.shape)}")
        logit = torch.logit(image.clamp(1e-4, 1 - 1e-4))
        z = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self.colors), logit)
        coefficients = torch.fft.rfft2(z * 4 / math.sqrt(self.h * self.w), norm="ortho") / self.scale
        self.spectrum.copy_(torch.view_as_real(coefficients))
        return self


def make_param(kind: str | nn.Module, batch: int, size: int, generator: torch.Generator) -> nn.Module:
    """``"fourier"`` (decorrelated Fourier), ``"fourier_rgb"`` (Fourier, no decorrelation), ``"pixel"``, or a module."""
    if isinstance(kind, nn.Module):
        return kind
    if kind == "fourier":
        return FourierImage(batch, size, generator)
    if kind == "fourier_rgb":
        return FourierImage(batch, size, generator, decorrelate=False)
    if kind == "pixel":
        return PixelImage(batch, size, generator)
    raise ValueError(f"unknown parametrisation {kind!r}; use 'fourier', 'fourier_rgb', 'pixel' or an nn.Module")
