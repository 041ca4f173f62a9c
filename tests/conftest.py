"""Shared fixtures. The pretrained model is loaded once per test session (about 0.3 s)."""
import matplotlib
import pytest
import torch

matplotlib.use("Agg")


@pytest.fixture(scope="session")
def lite0():
    from xai_helpers.models import efficientnet_lite0

    return efficientnet_lite0()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
