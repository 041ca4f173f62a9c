"""Awkward calls get clear errors, or just work (issue 11, item 5).

Each case failed before with an internal error (AttributeError, IndexError, a raw autograd error)
or a rejection: a model returning a tuple or a dict, a layer with a non-4-D output, a model returning
1-D scores, a call inside ``torch.inference_mode()``, NumPy integer targets, a [0, 255] image.
"""
import warnings
from collections import OrderedDict, namedtuple

import numpy as np
import pytest
import torch
from torch import nn

from xai_helpers.core import SelectOutput, as_targets, check_autograd_available, check_images, select_scores
from xai_helpers.methods.cam import (
    activations_and_gradients,
    grad_cam,
    grad_cam_plus_plus,
    hires_cam,
    layer_cam,
    score_cam,
)
from xai_helpers.methods.gradients import saliency
from xai_helpers.methods.perturbation import occlusion
from xai_helpers.models import SmallCNN

CAMS = [grad_cam, grad_cam_plus_plus, hires_cam, layer_cam, score_cam]
GRADIENT_CAMS = [grad_cam, grad_cam_plus_plus, hires_cam, layer_cam]
Outputs = namedtuple("Outputs", ["logits", "aux"])


class Wrapped(nn.Module):
    """SmallCNN whose forward returns its logits inside a tuple, a namedtuple or a dict."""

    def __init__(self, kind):
        super().__init__()
        torch.manual_seed(0)
        self.net = SmallCNN(num_classes=3, width=4).eval()
        self.kind = kind

    def forward(self, x):
        logits = self.net(x)
        if self.kind == "tuple":
            return logits, logits.detach() * 0
        if self.kind == "namedtuple":
            return Outputs(logits, logits * 0)
        return OrderedDict(loss=None, logits=logits)  # HuggingFace's ModelOutput is an OrderedDict


class Squeezed(nn.Module):
    """SmallCNN returning one score per image, ``[B]`` (e.g. a binary model that squeezes)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = SmallCNN(num_classes=1, width=4).eval()

    def forward(self, x):
        return self.net(x)[:, 0]


def all_methods():
    """(name, method(model, x, target)) for the CAMs at relu3, occlusion and the plain gradient."""
    cams = [(m.__name__, lambda model, x, t, m=m: m(model, x, t, layer=layer_of(model))) for m in CAMS]
    return cams + [
        ("occlusion", lambda model, x, t: occlusion(model, x, t, window=8, stride=8)),
        ("saliency", saliency),
    ]


def layer_of(model):
    return next(name for name, m in model.named_modules() if name.endswith("relu3"))


X = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------- tuple / dict outputs

@pytest.mark.parametrize("kind, key, words", [
    ("tuple", 0, ["tuple of 2 outputs", "SelectOutput(model, 0)"]),
    ("namedtuple", "logits", ["Outputs of 2 outputs", "fields ['logits', 'aux']", "SelectOutput(model, 0)"]),
    ("dict", "logits", ["keys ['loss', 'logits']", "SelectOutput(model, 'logits')"]),
])
@pytest.mark.parametrize("name, method", all_methods())
def test_tuple_or_dict_output_names_the_wrapper(kind, key, words, name, method):
    model = Wrapped(kind)
    with pytest.raises(TypeError) as info:
        method(model, X, [0, 2])
    for word in words:
        assert word in str(info.value)
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    # ... and the wrapper it names gives what the bare network gives
    assert torch.allclose(method(SelectOutput(model, key), X, [0, 2]), method(model.net, X, [0, 2]))


def test_select_output_errors_on_a_missing_key():
    with pytest.raises(KeyError, match="no entry 'scores'"):
        SelectOutput(Wrapped("dict"), "scores")(X)


# ----------------------------------------------------------------------------- 1-D scores

@pytest.mark.parametrize("name, method", all_methods())
def test_one_dimensional_scores_are_a_clear_error(name, method):
    with pytest.raises(ValueError, match=r"1-D scores of shape \[2\].*\[B, 1\]"):
        method(Squeezed(), X, 0)


# ----------------------------------------------------------------------------- non-4-D layer

@pytest.mark.parametrize("method", CAMS)
def test_layer_without_a_spatial_output_is_a_clear_error(method):
    model = SmallCNN(num_classes=3, width=4)
    said = r"spatial map \[B, C, h, w\], or tokens .*; layer 'fc' outputs shape \[2, 3\]"
    with pytest.raises(ValueError, match=said):
        method(model, X, 0, layer="fc")
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


# ----------------------------------------------------------------------------- inference mode

@pytest.mark.parametrize("method", GRADIENT_CAMS + [activations_and_gradients])
def test_inference_mode_is_a_clear_error(method):
    model = SmallCNN(num_classes=3, width=4).train()
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"inside torch.inference_mode\(\).*outside"):
        method(model, X, 0, layer="relu3")
    assert model.training and all(len(m._forward_hooks) == 0 for m in model.modules())
    with torch.no_grad():  # no_grad, unlike inference mode, is fine
        method(model, X, 0, layer="relu3")


def test_check_autograd_available():
    check_autograd_available()
    with torch.no_grad():
        check_autograd_available()
    with torch.inference_mode(), pytest.raises(RuntimeError, match="saliency needs autograd"):
        check_autograd_available("saliency")


def test_methods_without_gradients_work_in_inference_mode():
    model = SmallCNN(num_classes=3, width=4).eval()
    expected = score_cam(model, X, 1, layer="relu3"), occlusion(model, X, 1, window=8, stride=8)
    with torch.inference_mode():
        got = score_cam(model, X, 1, layer="relu3"), occlusion(model, X, 1, window=8, stride=8)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


# ----------------------------------------------------------------------------- NumPy targets

@pytest.mark.parametrize("target, expected", [
    (np.int64(2), [2, 2]), (np.int32(1), [1, 1]), (np.array(2), [2, 2]), (np.array([1, 2]), [1, 2]),
    (np.array([1, 2], dtype=np.uint8), [1, 2]), ([np.int64(0), np.int64(2)], [0, 2]),
])
def test_numpy_integer_targets_are_accepted(target, expected):
    assert as_targets(target, 2, num_classes=3).tolist() == expected
    model = SmallCNN(num_classes=3, width=4).eval()
    assert torch.equal(grad_cam(model, X, target, layer="relu3"), grad_cam(model, X, expected, layer="relu3"))
    assert torch.equal(select_scores(model(X), target), select_scores(model(X), expected))


@pytest.mark.parametrize("target, error, words", [
    (np.array([1.0, 2.0]), TypeError, "integer class indices"),
    (np.array([True, False]), TypeError, "integer class indices"),
    (np.array([[1, 2]]), ValueError, "1-D"),
    (np.array([1, 2, 0]), ValueError, "3 targets for a batch of 2"),
    (np.int64(7), ValueError, "out of range"),
])
def test_bad_numpy_targets_still_get_the_errors(target, error, words):
    with pytest.raises(error, match=words):
        as_targets(target, 2, num_classes=3)


# ----------------------------------------------------------------------------- [0, 255] images

def test_an_image_in_0_255_gets_a_warning_naming_the_fix():
    with pytest.warns(UserWarning, match=r"values up to 2\d\d.*divided by 255 \(x / 255\)"):
        check_images(X * 255)
    model = SmallCNN(num_classes=3, width=4).eval()
    with pytest.warns(UserWarning, match="x / 255"):
        grad_cam(model, X * 255, 0, layer="relu3")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_images(X)                       # [0, 1]: silent
        check_images(X * 2.6 - 0.5)           # ImageNet-normalised range, or noisy copies: silent
        check_images(X * 255, warn_range=False)
