"""Models for the trust report's command-line tests (imported as ``report_support.tiny_models:NAME``)."""
import torch
from torch import nn

from xai_helpers.models import Normalize, SmallCNN


def small_cnn() -> nn.Module:
    """An untrained SmallCNN behind a Normalize layer, seeded: the same weights in every process."""
    torch.manual_seed(0)
    return nn.Sequential(Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), SmallCNN(num_classes=3, width=4)).eval()


class _Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = small_cnn()

    def forward(self, x):
        return {"logits": self.net(x), "features": x.mean()}


def returns_dict() -> nn.Module:
    """A model that returns a dict (the command needs --output logits)."""
    return _Pair()
