"""Tests for xai_helpers.receptive_field: the recurrence against closed forms, the measurement against both."""
import math

import pytest
import torch
from torch import nn

from xai_helpers.receptive_field import measure_receptive_field, receptive_field, receptive_fields


def conv_stack(layers, channels=8, relu=False, pool=None):
    """Convolutions (padding k // 2) for ``(kernel, stride)`` pairs; ``pool`` swaps in pooling layers by index."""
    torch.manual_seed(0)
    modules = []
    for i, (k, s) in enumerate(layers):
        if pool and i in pool:
            modules.append(pool[i](k, s))
        else:
            modules.append(nn.Conv2d(channels, channels, k, s, padding=k // 2))
            if relu:
                modules.append(nn.ReLU())
    return nn.Sequential(*modules)


@pytest.mark.parametrize("n", range(0, 7))
def test_stacked_3x3_gives_2n_plus_1(n):
    assert receptive_field([(3, 1)] * n) == (2 * n + 1, 1)


@pytest.mark.parametrize("n", range(1, 6))
def test_stride_2_window_2_doubles(n):
    assert receptive_field([(2, 2)] * n) == (2**n, 2**n)


def test_general_closed_form():
    # r_L = 1 + sum_l (k_l - 1) * prod_{i<l} s_i, j_L = prod_l s_l
    layers = [(7, 2), (3, 2), (3, 1), (5, 2), (1, 1), (3, 3)]
    expected_size = 1 + sum((k - 1) * math.prod(s for _, s in layers[:i]) for i, (k, _) in enumerate(layers))
    assert receptive_field(layers) == (expected_size, math.prod(s for _, s in layers))
    assert [r.size for r in receptive_fields(layers)] == [1, 7, 11, 19, 35, 35, 51]


@pytest.mark.parametrize(
    "layers",
    [[(3, 1)], [(3, 1)] * 2, [(3, 1)] * 4, [(5, 1), (3, 1)], [(3, 2), (3, 1), (3, 1)], [(3, 2), (3, 2), (5, 1)],
     [(1, 1), (3, 1)], [(7, 2), (3, 2), (3, 1)]],
)
def test_measurement_matches_recurrence(layers):
    size = receptive_field(layers).size
    measured = measure_receptive_field(conv_stack(layers, relu=True), 4 * size + 8, in_channels=8)
    assert measured.size == (size, size)
    assert measured.mask.sum() == size * size  # a full square: every pixel in the box counts


@pytest.mark.parametrize("pool", [nn.AvgPool2d, nn.MaxPool2d])
def test_pooling_counts_as_a_layer(pool):
    layers = [(3, 1), (2, 2), (3, 1), (2, 2), (3, 1)]
    size = receptive_field(layers).size
    assert size == 18
    net = conv_stack(layers, relu=True, pool={1: pool, 3: pool})
    assert measure_receptive_field(net, 64, in_channels=8, batch=16).size == (size, size)


def test_rectangular_kernel_and_input():
    net = nn.Conv2d(1, 1, (3, 5), padding=(1, 2))
    measured = measure_receptive_field(net, (20, 30), in_channels=1, channel=0)
    assert measured.size == (3, 5)
    assert measured.mask.shape == (20, 30)


def test_restores_training_mode_and_uses_eval_batch_norm():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, padding=1))
    net.train()
    measured = measure_receptive_field(net, 24)
    assert measured.size == (5, 5)  # in train mode batch statistics would spread it over the whole image
    assert all(m.training for m in net.modules())


@pytest.mark.parametrize(
    "layers, message",
    [([(3,)], "pair"), ([(0, 1)], "kernel"), ([(3, 0)], "stride"), ([(3.0, 1)], "kernel"), (["ab"], "pair"),
     ([(3, True)], "stride")],
)
def test_bad_layers_raise(layers, message):
    with pytest.raises(ValueError, match=message):
        receptive_field(layers)


def test_too_small_input_raises():
    with pytest.raises(ValueError, match="larger input_size"):
        measure_receptive_field(conv_stack([(3, 1)] * 5), 9, in_channels=8)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="channel 5"):
        measure_receptive_field(nn.Conv2d(3, 2, 3, padding=1), 16, channel=5)
    with pytest.raises(ValueError, match="feature maps"):
        measure_receptive_field(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten()), 16)
    with pytest.raises(ValueError, match="positive"):
        measure_receptive_field(nn.Conv2d(3, 2, 3), 0)
    dead = nn.Conv2d(3, 2, 3, padding=1)
    nn.init.zeros_(dead.weight)
    with pytest.raises(ValueError, match="zero"):
        measure_receptive_field(dead, 16)
