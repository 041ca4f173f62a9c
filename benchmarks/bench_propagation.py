"""What one LRP (or DeepLIFT) pass costs, against a plain gradient (forward + backward to the pixels).

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_propagation.py [--repeats 5] [--batches 1 8]``

For EfficientNet-Lite0 at 224x224 and each batch size it prints the median time of
:func:`xai_helpers.methods.gradients.saliency` (the plain gradient) and of every registered method
of the ``"propagation"`` family (``xai_helpers.registry.methods(family="propagation")``), plus LRP
under each composite of :data:`COMPOSITES`, and each one's ratio to the gradient (the target of
issue 14: LRP within 2x). All timings come from one run: rounds in which every entry runs once in
turn (``torch.utils.benchmark.Timer`` warms each call up first), then the medians. Also prints the
completeness (conservation) error ``sum(R) - y^c`` of every composite on one photo.
"""
from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from timing import seconds_per_call

from xai_helpers import registry
from xai_helpers.core import completeness_error
from xai_helpers.data import sample_image
from xai_helpers.methods.propagation import deeplift, lrp
from xai_helpers.models import efficientnet_lite0
from xai_helpers.relevance.composites import Composite, epsilon_gamma_box, uniform
from xai_helpers.relevance.rules import AlphaBetaRule, EpsilonRule, GammaRule, ZeroRule, ZPlusRule

#: LRP's composites whose conservation is printed; the ones in TIMED are also timed.
COMPOSITES: dict[str, Composite] = {
    "LRP-0": uniform(ZeroRule()),
    "LRP-epsilon (0.25)": uniform(EpsilonRule(0.25)),
    "LRP-gamma (0.25)": uniform(GammaRule(0.25)),
    "LRP-z+": uniform(ZPlusRule()),
    "LRP-alpha2-beta1": uniform(AlphaBetaRule(2, 1)),
    "epsilon_gamma_box": epsilon_gamma_box(),
}
TIMED = ("LRP-epsilon (0.25)",)


def entries() -> dict[str, Callable[[torch.nn.Module, torch.Tensor, int], torch.Tensor]]:
    """The plain gradient, every propagation method of the registry (quick options), and LRP variants."""
    timed = {"gradient": registry.get("saliency").function}
    for method in registry.methods(family="propagation"):
        timed[method.name] = (lambda m, x, t, name=method.name, options=dict(method.quick):
                              registry.attribute(name, m, x, t, **options))
    for name in TIMED:
        timed[f"lrp, {name}"] = lambda m, x, t, composite=COMPOSITES[name]: lrp(m, x, t, composite=composite)
    return timed


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
    for name, composite in COMPOSITES.items():
        relevance = lrp(model, photo, target, composite=composite)
        error = completeness_error(model, photo, target, relevance, baseline=None).item()   # sum R - y
        print(f"  {name:22s} sum R = {error + logit:9.4f}   sum R - y = {error:9.4f}  ({error / logit:+.1%})")
    attributions = deeplift(model, photo, target)
    error = completeness_error(model, photo, target, attributions, baseline=0.0).item()
    print(f"  {'DeepLIFT (zeros)':22s} sum R = {attributions.sum().item():9.4f}   sum R - (y - y_ref) = {error:.2e}")
    timed = entries()
    for b in args.batches:
        x = photo.repeat(b, 1, 1, 1)
        times: dict[str, list[float]] = {name: [] for name in timed}
        for _ in range(args.repeats):
            for name, fn in timed.items():
                times[name].append(seconds_per_call(lambda fn=fn: fn(model, x, target)))
        base = statistics.median(times["gradient"])
        print(f"batch {b}:")
        for name, ts in times.items():
            t = statistics.median(ts)
            print(f"  {name:24s} {t * 1000:8.1f} ms   {t / base:5.2f}x the gradient")


if __name__ == "__main__":
    main()
