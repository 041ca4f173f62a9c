import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from xai_helpers.plot import heatmap_grid, image_grid, overlay, set_style, to_numpy_image, use_jpeg_figures


def test_to_numpy_image_layouts():
    assert to_numpy_image(torch.rand(1, 3, 8, 6)).shape == (8, 6, 3)
    assert to_numpy_image(torch.rand(3, 8, 6)).shape == (8, 6, 3)
    assert to_numpy_image(np.random.rand(8, 6, 3)).shape == (8, 6, 3)
    assert to_numpy_image(torch.rand(8, 6)).shape == (8, 6)
    with pytest.raises(ValueError, match="batch of 2"):
        to_numpy_image(torch.rand(2, 3, 8, 8))


def test_helpers_return_closed_figures():
    plt.close("all")
    images = [torch.rand(3, 16, 16), torch.rand(3, 16, 16)]
    fig = image_grid(images, ["a", "b"])
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
    fig = heatmap_grid(images, {"m1": [torch.rand(4, 4)] * 2, "m2": [torch.rand(16, 16)] * 2})
    assert len(fig.axes) == 6 and fig.axes[1].get_title() == "m1"
    assert plt.get_fignums() == []  # nothing left open: notebooks show each figure once
    assert fig.get_facecolor()[:3] == (1.0, 1.0, 1.0)  # white, readable in dark mode


def test_overlay_stretches_a_coarse_map_over_the_image():
    set_style()
    fig, ax = plt.subplots()
    im = overlay(ax, torch.rand(1, 3, 32, 48), torch.rand(4, 6), colorbar=True)
    assert im.get_extent() == [-0.5, 47.5, 31.5, -0.5]
    assert len(fig.axes) == 2  # the image and its colour bar
    with pytest.raises(ValueError, match="2-D"):
        overlay(ax, torch.rand(1, 3, 8, 8), torch.rand(3, 8, 8))
    plt.close(fig)


def test_grid_argument_errors():
    with pytest.raises(ValueError, match="2 images but 1 titles"):
        image_grid([torch.rand(3, 4, 4)] * 2, ["only one"])
    with pytest.raises(ValueError, match="'m' has 1 maps for 2 images"):
        heatmap_grid([torch.rand(3, 4, 4)] * 2, {"m": [torch.rand(4, 4)]})


def test_set_style_applies_every_entry_of_the_house_style():
    import matplotlib

    from xai_helpers.plot import STYLE

    with matplotlib.rc_context({"figure.facecolor": "black", "font.size": 23.0}):
        set_style()
        for key, value in STYLE.items():
            assert matplotlib.rcParams[key] == matplotlib.rcParamsDefault.validate[key](value), key


def test_use_jpeg_figures_shows_figures_as_jpeg_in_ipython_half_or_full_colour():
    import base64
    import io

    from IPython.core.interactiveshell import InteractiveShell
    from PIL import Image, JpegImagePlugin

    use_jpeg_figures()  # no IPython running: a no-op, not an error
    shell = InteractiveShell.instance()
    try:
        use_jpeg_figures(quality=90)
        fig = image_grid([torch.rand(3, 32, 32)], ["noise"])
        formatters = shell.display_formatter.formatters
        shown = formatters["image/jpeg"](fig)  # base64 text, as in a notebook's outputs
        assert shown is not None, "the figure is shown as JPEG"
        data = base64.b64decode(shown)
        assert data[:2] == b"\xff\xd8"
        assert formatters["image/png"](fig) is None, "and not also as PNG"
        image = Image.open(io.BytesIO(data))
        assert JpegImagePlugin.get_sampling(image) == 2, "colour at half resolution (4:2:0) by default"
        use_jpeg_figures(quality=90, full_colour=True)
        image = Image.open(io.BytesIO(base64.b64decode(formatters["image/jpeg"](fig))))
        assert JpegImagePlugin.get_sampling(image) == 0, "colour at full resolution (4:4:4)"
    finally:
        InteractiveShell.clear_instance()


def test_figures_are_shown_as_png_without_an_alpha_channel_in_ipython():
    """set_style makes IPython show a figure as an RGB PNG (matplotlib writes RGBA, the alpha all 255)."""
    import base64
    import io

    from IPython.core.interactiveshell import InteractiveShell
    from IPython.core.pylabtools import select_figure_formats
    from PIL import Image

    shell = InteractiveShell.instance()
    try:
        select_figure_formats(shell, {"png"})       # what the inline backend does in a notebook
        fig = image_grid([torch.rand(3, 32, 32)], ["noise"])
        shown = shell.display_formatter.formatters["image/png"](fig)
        image = Image.open(io.BytesIO(base64.b64decode(shown)))
        assert image.mode == "RGB" and image.size[0] > 100
        use_jpeg_figures()                          # JPEG mode stays JPEG mode
        set_style()
        assert shell.display_formatter.formatters["image/png"](fig) is None
    finally:
        InteractiveShell.clear_instance()


def test_rgb_png_keeps_real_transparency():
    import io

    from PIL import Image

    from xai_helpers.plot import rgb_png

    def png(mode, colour):
        out = io.BytesIO()
        Image.new(mode, (4, 4), colour).save(out, format="png")
        return out.getvalue()

    opaque, clear = png("RGBA", (10, 20, 30, 255)), png("RGBA", (10, 20, 30, 128))
    assert Image.open(io.BytesIO(rgb_png(opaque))).mode == "RGB"
    assert Image.open(io.BytesIO(rgb_png(opaque))).getpixel((0, 0)) == (10, 20, 30)
    assert rgb_png(clear) == clear and rgb_png(png("RGB", (1, 2, 3))) == png("RGB", (1, 2, 3))
