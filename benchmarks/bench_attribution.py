"""How much an attribution costs, measured against a plain forward pass of the same model.

Run: ``python benchmarks/bench_attribution.py [--methods grad_cam ...] [--repeats 15] [--batches 1 8] [--defaults]``

For EfficientNet-Lite0 at 224x224 and each batch size it prints the median time of a forward pass
under ``torch.no_grad()``, the median time of every registered method
(``xai_helpers.registry.methods()``), and each method's ratio to the forward pass. Each method runs
with its quick options (``Method.quick``: e.g. 4 steps of Integrated Gradients, 4 noisy copies for
SmoothGrad, a 32-pixel occlusion window), or with its own defaults under ``--defaults``; the
methods that need a layer explain ``head``. All timings come from one run: rounds in which the
forward pass and every method run once each in turn (so a change in machine load hits them all
alike; ``torch.utils.benchmark.Timer`` warms each call up first), then the medians. On a shared
machine the absolute times drift; the ratios are what to compare.

A new method needs nothing here: once registered, it is timed.
"""
from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from timing import seconds_per_call

from xai_helpers import registry
from xai_helpers.models import efficientnet_lite0

Method = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

#: The layer the methods that need one explain: EfficientNet-Lite0's last convolution.
LAYER = "head"
#: Score-CAM costs one forward pass per channel of its layer: at ``head`` (1280 channels) one call
#: takes tens of seconds on a CPU, so it explains ``blocks.15`` (320 channels).
LAYERS = {"score_cam": "blocks.15"}


def methods(defaults: bool = False) -> dict[str, Method]:
    """``{name: (model, x, target) -> result}`` for every registered method, with its options bound."""
    chosen: dict[str, Method] = {}
    for method in registry.methods():
        options = {} if defaults else dict(method.quick)
        if method.needs_layer:
            options["layer"] = LAYERS.get(method.name, LAYER)
        chosen[method.name] = (lambda model, x, target, name=method.name, options=options:
                               registry.attribute(name, model, x, target, **options))
    return chosen


def forward(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The reference: one forward pass without autograd."""
    with torch.no_grad():
        return model(x)


def bench(model, batch: int, size: int, methods: dict[str, Method], repeats: int) -> dict[str, float]:
    """Median seconds per call of the forward pass and of each method, interleaved round by round."""
    torch.manual_seed(0)
    x = torch.rand(batch, 3, size, size)
    target = torch.randint(1000, (batch,))
    entries = {"forward": forward, **methods}
    times: dict[str, list[float]] = {name: [] for name in entries}
    for _ in range(repeats):
        for name, fn in entries.items():
            times[name].append(seconds_per_call(lambda fn=fn: fn(model, x, target)))
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv: list[str] | None = None) -> None:
    every = sorted(m.name for m in registry.methods())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", choices=every, default=every, help="methods to time (default: all)")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds per batch size (default 15)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    parser.add_argument("--defaults", action="store_true", help="each method's defaults instead of its quick options")
    args = parser.parse_args(argv)

    model = efficientnet_lite0()
    chosen = {name: fn for name, fn in methods(args.defaults).items() if name in args.methods}
    print(f"EfficientNet-Lite0, {args.size}x{args.size}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} interleaved rounds, {'defaults' if args.defaults else 'quick options'}")
    print(f"{'batch':>5}  {'method':<22} {'median ms':>10} {'x forward':>10}")
    for batch in args.batches:
        medians = bench(model, batch, args.size, chosen, args.repeats)
        reference = medians["forward"]
        for name, t in medians.items():
            print(f"{batch:>5}  {name:<22} {1000 * t:>10.1f} {t / reference:>10.2f}")


if __name__ == "__main__":
    main()
