"""What one LRP (or DeepLIFT) pass costs, against a plain gradient (forward + backward to the pixels).

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_propagation.py [--repeats 5] [--batches 1 8]``

For EfficientNet-Lite0 at 224x224 and each batch size it prints the median time of
:func:`xai_helpers.gradients.saliency` (the plain gradient) and of each method in :data:`METHODS`,
and each method's ratio to the gradient (the target of issue 14: LRP within 2x). All timings come
from one run: a warm-up, then rounds in which every method runs once in turn, then the medians.
Also prints the conservation error ``sum(R) - y^c`` of every rule on one photo.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from xai_helpers import propagation as P
from xai_helpers.data import sample_image
from xai_helpers.gradients import saliency
from xai_helpers.models import efficientnet_lite0

METHODS = {
    "gradient": saliency,
    "gradient_x_input": P.gradient_x_input,
    "lrp (epsilon_gamma_box)": P.lrp,
    "lrp-epsilon": lambda m, x, t: P.lrp(m, x, t, composite=P.uniform(P.EpsilonRule())),
    "deeplift": P.deeplift,
}
RULES = {
    "LRP-0": P.uniform(P.ZeroRule()),
    "LRP-epsilon (0.25)": P.uniform(P.EpsilonRule(0.25)),
    "LRP-gamma (0.25)": P.uniform(P.GammaRule(0.25)),
    "LRP-z+": P.uniform(P.ZPlusRule()),
    "LRP-alpha2-beta1": P.uniform(P.AlphaBetaRule(2, 1)),
    "epsilon_gamma_box": P.epsilon_gamma_box(),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    model = efficientnet_lite0()
    photo = sample_image("cat")
    target = 285
    print(f"torch threads: {torch.get_num_threads()}")
    with torch.no_grad():
        logit = model(photo)[0, target].item()
    print(f"conservation on 'cat', class {target}, logit y = {logit:.4f}")
    for name, composite in RULES.items():
        total = P.lrp(model, photo, target, composite=composite).sum().item()
        print(f"  {name:22s} sum R = {total:9.4f}   sum R - y = {total - logit:9.4f}  ({(total - logit) / logit:+.1%})")
    total = P.deeplift(model, photo, target).sum().item()
    with torch.no_grad():
        delta = logit - model(torch.zeros_like(photo))[0, target].item()
    print(f"  {'DeepLIFT (zeros)':22s} sum R = {total:9.4f}   sum R - (y - y_ref) = {total - delta:.2e}")
    for b in args.batches:
        x = photo.repeat(b, 1, 1, 1)
        for fn in METHODS.values():      # warm-up
            fn(model, x, target)
        times = {name: [] for name in METHODS}
        for _ in range(args.repeats):
            for name, fn in METHODS.items():
                start = time.perf_counter()
                fn(model, x, target)
                times[name].append(time.perf_counter() - start)
        base = statistics.median(times["gradient"])
        print(f"batch {b}:")
        for name, ts in times.items():
            t = statistics.median(ts)
            print(f"  {name:24s} {t * 1000:8.1f} ms   {t / base:5.2f}x the gradient")


if __name__ == "__main__":
    main()
