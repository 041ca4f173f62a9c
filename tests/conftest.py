"""Shared fixtures. The pretrained model is loaded once per test session (about 0.3 s)."""
import shutil
import subprocess
from pathlib import Path

import matplotlib
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]

matplotlib.use("Agg")


@pytest.fixture(scope="session")
def lite0():
    from xai_helpers.models import efficientnet_lite0

    return efficientnet_lite0()


@pytest.fixture
def tiny_vit():
    """torchvision's VisionTransformer at a size a test affords: 32 px, 4 x 4 patches of 8 px, 2 blocks,
    3 classes, with a random head (torchvision starts it at zero, which zeroes every gradient)."""
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                              num_classes=3).eval()
    nn.init.normal_(model.heads.head.weight, std=0.5)
    return model


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def copy_working_tree():
    """``copy(dest) -> dest``: this checkout's tracked and untracked (not ignored) files, copied to ``dest``."""
    def copy(dest: Path) -> Path:
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout
        for name in filter(None, files.split("\0")):
            source = ROOT / name
            if source.is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest / name)
        return dest

    return copy


@pytest.fixture
def smooth_net():
    """``make(scale) -> net``: a smooth (Softplus, tanh) conv net in float64, weights scaled by ``scale``,
    so quadrature errors are neither hidden by rounding nor trivially small."""
    def make(scale: float) -> nn.Module:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Softplus(), nn.Conv2d(8, 8, 3), nn.Tanh(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).double()
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(scale)
        return net

    return make
