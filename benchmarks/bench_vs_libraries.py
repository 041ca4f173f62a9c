"""xai_helpers against captum and pytorch-grad-cam: same maps? how fast?

Optional: runs only where ``captum`` and ``grad-cam`` (pytorch-grad-cam) can be imported; they are
not dependencies of the book. For example::

    .venv/bin/pip install --target /tmp/cmp captum grad-cam opencv-python-headless ...
    PYTHONPATH=/tmp/cmp .venv/bin/python benchmarks/bench_vs_libraries.py

On EfficientNet-Lite0 at 224x224 it prints, for each pair of implementations, how far apart their
maps are (Pearson correlation and largest absolute difference) and the ratio of their median times,
all measured in one run. Guided backprop is also compared on a ReLU network, because captum's
version hooks only ``nn.ReLU`` and so leaves EfficientNet's ``nn.ReLU6`` with its plain gradient.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import torch
from torch import nn

from xai_helpers.cam import grad_cam
from xai_helpers.data import sample_image
from xai_helpers.gradients import guided_backprop, integrated_gradients, saliency
from xai_helpers.models import efficientnet_lite0


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def agreement(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1]), float((a - b).abs().max())


def report(name: str, ours, theirs, repeats: int) -> None:
    ours_map, theirs_map = ours(), theirs()
    r, max_diff = agreement(ours_map, theirs_map)
    t_ours, t_theirs = median_ms(ours, repeats), median_ms(theirs, repeats)
    print(f"{name:<34} r={r:8.5f}  max|diff|={max_diff:9.2e}  ours {t_ours:8.1f} ms  theirs {t_theirs:8.1f} ms"
          f"  ours/theirs {t_ours / t_theirs:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    try:
        from captum.attr import GuidedBackprop, IntegratedGradients, Saliency
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as err:
        print(f"skipped: {err} (install captum and grad-cam to compare)")
        sys.exit(0)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = efficientnet_lite0()
    x = sample_image("cat")
    target = 285  # Egyptian cat
    print(f"EfficientNet-Lite0, cat photo 224x224, target {target}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")

    cam = GradCAM(model=model, target_layers=[model.head])
    report("Grad-CAM vs pytorch-grad-cam",
           lambda: grad_cam(model, x, target, "head"),
           lambda: torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])),
           args.repeats)

    captum_saliency = Saliency(model)
    report("|saliency| vs captum Saliency",
           lambda: saliency(model, x, target).abs(),
           lambda: captum_saliency.attribute(x.clone().requires_grad_(), target=target, abs=True),
           args.repeats)

    captum_ig = IntegratedGradients(model)
    report("IG (32 steps, trapezoid) vs captum",
           lambda: integrated_gradients(model, x, target, steps=32, batch_size=33),
           lambda: captum_ig.attribute(x, target=target, n_steps=33, method="riemann_trapezoid",
                                       internal_batch_size=33),
           max(3, args.repeats // 3))

    relu_net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()
    captum_guided = GuidedBackprop(relu_net)
    report("guided backprop (ReLU net) vs captum",
           lambda: guided_backprop(relu_net, x, 3),
           lambda: captum_guided.attribute(x.clone(), target=3),
           args.repeats)
    captum_guided_lite0 = GuidedBackprop(model)
    r, _ = agreement(guided_backprop(model, x, target), captum_guided_lite0.attribute(x.clone(), target=target))
    r_plain, _ = agreement(saliency(model, x, target), captum_guided_lite0.attribute(x.clone(), target=target))
    print(f"guided backprop on EfficientNet (ReLU6): r(ours, captum) = {r:.3f}; "
          f"r(plain gradient, captum) = {r_plain:.3f}  (captum leaves ReLU6 unguided)")


if __name__ == "__main__":
    main()
