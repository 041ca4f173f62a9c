"""Tests for xai_helpers.core: input checks, layer resolution, state restore, activation capture."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from xai_helpers.core import (
    as_targets,
    capture_activation,
    check_images,
    explaining,
    find_last_conv_layer,
    layer_name,
    postprocess_maps,
    rescale_maps,
    resolve_layer,
    select_scores,
)
from xai_helpers.models import SmallCNN, efficientnet_lite0


def tiny_net(inplace=False):
    """conv -> ReLU -> conv -> ReLU -> GAP -> linear, 4 classes; the layers are named by index."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=inplace),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace=inplace),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4),
    )


def hook_count(model):
    """Hooks of every kind left on any module of ``model``."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


class Net(nn.Module):
    """A model made of named submodules and a function ``forward(net, x)`` (for odd architectures)."""

    def __init__(self, forward, **modules):
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)
        self._forward = forward

    def forward(self, x):
        return self._forward(self, x)


def reused_block_net(block):
    """Applies ``block`` twice in one forward pass, then pools and classifies into 2 classes."""
    return Net(lambda net, x: net.fc(net.block(net.block(x)).mean((2, 3))), block=block, fc=nn.Linear(3, 2))


# ----------------------------------------------------------------------------- check_images

def test_check_images_accepts_a_float_batch():
    check_images(torch.rand(2, 3, 8, 8))


@pytest.mark.parametrize(
    "x, error, words",
    [
        (torch.rand(3, 8, 8), ValueError, ["4-D", "unsqueeze(0)"]),
        (torch.rand(8, 8), ValueError, ["4-D"]),
        (torch.rand(1, 1, 3, 8, 8), ValueError, ["4-D"]),
        (torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8), TypeError, ["float", "uint8", "/ 255"]),
        (torch.zeros(1, 3, 8, 8, dtype=torch.long), TypeError, ["float"]),
        (torch.rand(0, 3, 8, 8), ValueError, ["empty"]),
        ([[0.0]], TypeError, ["torch.Tensor"]),
    ],
)
def test_check_images_errors(x, error, words):
    with pytest.raises(error) as info:
        check_images(x)
    for word in words:
        assert word in str(info.value)


# ----------------------------------------------------------------------------- targets

@pytest.mark.parametrize(
    "target",
    [[2, 0, 1], (2, 0, 1), torch.tensor([2, 0, 1]), torch.tensor([2, 0, 1], dtype=torch.int32)],
)
def test_as_targets_forms_agree(target):
    out = as_targets(target, 3, num_classes=3)
    assert out.dtype == torch.long and out.tolist() == [2, 0, 1]


def test_as_targets_broadcasts_an_int_and_a_scalar_tensor():
    assert as_targets(1, 4).tolist() == [1, 1, 1, 1]
    assert as_targets(torch.tensor(2), 3).tolist() == [2, 2, 2]


@pytest.mark.parametrize("target", [[0, 1], [0, 1, 2, 0], torch.tensor([1, 2])])
def test_wrong_number_of_targets_is_an_error(target):
    with pytest.raises(ValueError, match=r"targets for a batch of 3 images.*repeat the image"):
        as_targets(target, 3)


@pytest.mark.parametrize("target, bad", [(5, 5), ([0, 7, 1], 7), (-1, -1), (torch.tensor([0, 1, 3]), 3)])
def test_out_of_range_class_is_an_error(target, bad):
    with pytest.raises(ValueError, match=rf"target class {bad} is out of range: the model has 3 classes"):
        as_targets(target, 3, num_classes=3)


@pytest.mark.parametrize(
    "target, error",
    [(True, TypeError), ([0, 1.5, 2], TypeError), ("cat", TypeError), (torch.tensor([0.0, 1.0, 2.0]), TypeError),
     (torch.zeros(3, 1, dtype=torch.long), ValueError), (None, TypeError)],
)
def test_malformed_targets(target, error):
    with pytest.raises(error):
        as_targets(target, 3, num_classes=3)


def test_select_scores_picks_each_images_class():
    logits = torch.arange(12.0).view(3, 4)
    assert select_scores(logits, [3, 0, 2]).tolist() == [3.0, 4.0, 10.0]
    with pytest.raises(ValueError, match="logits"):
        select_scores(torch.zeros(3, 4, 1), 0)


# ----------------------------------------------------------------------------- layers

def test_resolve_layer_by_name_and_by_module():
    model = SmallCNN()
    assert resolve_layer(model, "conv3") is model.conv3
    assert resolve_layer(model, model.relu3) is model.relu3
    assert layer_name(model, model.relu3) == "relu3"
    net = efficientnet_lite0(pretrained=False)
    assert resolve_layer(net, "blocks.3.depthwise.conv") is net.blocks[3].depthwise.conv


def test_unknown_layer_lists_the_nearest_names():
    with pytest.raises(ValueError) as info:
        resolve_layer(SmallCNN(), "conv4")
    message = str(info.value)
    assert "no layer named 'conv4'" in message
    assert "conv3" in message and "conv1" in message
    assert "find_last_conv_layer" in message


def test_unknown_layer_without_close_names_still_lists_candidates():
    with pytest.raises(ValueError, match="Close names: .*fc"):
        resolve_layer(SmallCNN(), "zzzzzz")


def test_foreign_module_and_bad_type_are_errors():
    with pytest.raises(ValueError, match="not a submodule"):
        resolve_layer(SmallCNN(), nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match="dotted name"):
        resolve_layer(SmallCNN(), 3)
    with pytest.raises(ValueError, match="no layer named ''"):
        resolve_layer(SmallCNN(), "")


def test_find_last_conv_layer():
    assert find_last_conv_layer(efficientnet_lite0(pretrained=False)) == "head"
    assert find_last_conv_layer(SmallCNN()) == "relu3"  # was "conv3", the pre-ReLU map (issue 11, item 3)
    assert find_last_conv_layer(tiny_net()) == "3"
    torchvision = pytest.importorskip("torchvision")
    assert find_last_conv_layer(torchvision.models.resnet18(weights=None)) == "layer4"
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        find_last_conv_layer(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)))


# ----------------------------------------------------------------------------- explaining()

def test_explaining_restores_mode_and_flags():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.Dropout(0.5))
    model.train()
    model[2].eval()  # a mixed state must come back exactly
    model[0].bias.requires_grad_(False)
    with explaining(model):
        assert not any(m.training for m in model.modules())
        assert not any(p.requires_grad for p in model.parameters())
    assert [m.training for m in model.modules()] == [True, True, True, False]
    assert [p.requires_grad for p in model.parameters()] == [True, False, True, True]


def test_explaining_restores_after_an_exception():
    model = tiny_net().train()
    with pytest.raises(ZeroDivisionError), explaining(model):
        1 / 0
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


# ----------------------------------------------------------------------------- capture_activation

def test_capture_records_a_leaf_and_removes_its_hook():
    model = tiny_net()
    x = torch.rand(2, 3, 5, 5)
    with capture_activation(model, "1") as capture, torch.no_grad():
        logits = model(x)
    assert capture.calls == 1
    assert capture.activation.is_leaf and capture.activation.requires_grad
    assert torch.allclose(capture.activation, model[1](model[0](x)))
    assert logits.requires_grad  # the graph starts at the layer ...
    assert not any(p.grad is not None for p in model.parameters())
    assert hook_count(model) == 0  # ... and the hook is gone
    assert torch.is_grad_enabled()


def test_capture_is_not_changed_by_an_inplace_relu_after_the_layer():
    model = tiny_net(inplace=True)
    x = torch.rand(1, 3, 5, 5) - 0.5
    with capture_activation(model, "0") as capture, torch.no_grad():
        model(x)
    assert (capture.activation < 0).any()  # the raw conv output, not its ReLU
    assert torch.allclose(capture.activation, model[0](x))


def test_capture_without_graph_from_layer_returns_the_output():
    model = tiny_net()
    x = torch.rand(1, 3, 5, 5)
    with capture_activation(model, model[2], graph_from_layer=False) as capture:
        model(x)
    assert capture.activation.grad_fn is not None  # part of the full graph
    assert capture.layer == "Conv2d"


def test_layer_reused_in_one_forward_pass_is_an_error():
    model = reused_block_net(nn.Conv2d(3, 3, 3, padding=1))
    with pytest.raises(RuntimeError, match="'block' ran 2 times in one forward pass"):
        with capture_activation(model, "block"), torch.no_grad():
            model(torch.rand(1, 3, 4, 4))
    assert hook_count(model) == 0


def test_layer_that_never_runs_is_an_error():
    model = Net(lambda net, x: net.conv(x).mean((2, 3)), conv=nn.Conv2d(3, 3, 1), unused=nn.ReLU())
    with pytest.raises(RuntimeError, match="never ran"):
        with capture_activation(model, "unused"), torch.no_grad():
            model(torch.rand(1, 3, 2, 2))
    assert hook_count(model) == 0


def test_layer_returning_a_tuple_is_an_error():
    pair = Net(lambda net, x: (x, x))
    net = Net(lambda net, x: net.pair(x)[0].mean((2, 3)), pair=pair)
    with pytest.raises(TypeError, match="returns tuple, not a tensor"):
        with capture_activation(net, "pair"), torch.no_grad():
            net(torch.rand(1, 3, 2, 2))
    assert hook_count(net) == 0


# ----------------------------------------------------------------------------- post-processing

def test_normalize_maps_per_image():
    maps = torch.stack([torch.arange(6.0).view(2, 3), 5 * torch.ones(2, 3), -torch.arange(6.0).view(2, 3)])
    out = rescale_maps(maps)
    assert torch.allclose(out[0], torch.arange(6.0).view(2, 3) / 5)
    assert torch.equal(out[1], torch.zeros(2, 3))  # a constant map becomes zeros
    assert out[2].max() == 1 and out[2].min() == 0 and out[2, 0, 0] == 1


def test_postprocess_steps_are_independent():
    maps = torch.tensor([[[-1.0, 2.0], [3.0, -4.0]]])
    assert torch.equal(postprocess_maps(maps, (4, 4), relu=False, upsample=False, rescale=False), maps)
    assert torch.equal(postprocess_maps(maps, (4, 4), upsample=False, rescale=False), maps.clamp_min(0))
    up = postprocess_maps(maps, (4, 4), relu=False, rescale=False)
    expected = torch.nn.functional.interpolate(maps[:, None], size=(4, 4), mode="bilinear", align_corners=False)[:, 0]
    assert up.shape == (1, 4, 4) and torch.allclose(up, expected)
    full = postprocess_maps(maps, (4, 4))
    assert full.min() == 0 and full.max() == 1
    assert torch.equal(postprocess_maps(maps, None, rescale=False), maps.clamp_min(0))


# ----------------------------------------------------------------------------- batches of forward passes


def test_default_chunk_size_is_a_pixel_budget_on_the_cpu():
    from xai_helpers.core import default_chunk_size

    assert default_chunk_size(torch.zeros(1, 3, 224, 224)) == 4
    assert default_chunk_size(torch.zeros(1, 3, 32, 32)) == 196
    assert default_chunk_size(torch.zeros(1, 3, 448, 448)) == 1
    assert default_chunk_size(torch.zeros(1, 3, 1000, 1000)) == 1          # never 0
    assert default_chunk_size(torch.zeros(1, 3, 224, 224, device="meta")) == 64


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_check_chunk_size_names_the_problem(bad):
    from xai_helpers.core import check_chunk_size

    with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
        check_chunk_size(bad, torch.zeros(1, 3, 8, 8))


def test_check_chunk_size_keeps_a_given_size_and_fills_in_the_default():
    from xai_helpers.core import check_chunk_size

    x = torch.zeros(2, 3, 112, 112)
    assert check_chunk_size(None, x) == 16 and check_chunk_size(5, x) == 5
    assert check_chunk_size(np.int64(3), x) == 3


@pytest.mark.parametrize("n, size", [(9, 4), (39, 32), (8, 4), (3, 10), (1, 1), (17, 5)])
def test_equal_chunks_are_as_few_as_chunk_size_allows_and_differ_by_at_most_one(n, size):
    from xai_helpers.core import equal_chunks

    chunks = equal_chunks(torch.arange(n), size)
    lengths = [len(c) for c in chunks]
    assert len(chunks) == math.ceil(n / size) and max(lengths) <= size and max(lengths) - min(lengths) <= 1
    assert torch.equal(torch.cat(chunks), torch.arange(n))                   # every row once, in order


def test_equal_chunks_of_nothing_is_no_chunk():
    from xai_helpers.core import equal_chunks

    assert equal_chunks(torch.zeros(0, 3), 4) == ()
