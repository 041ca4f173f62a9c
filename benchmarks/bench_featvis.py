"""Feature-visualisation speed: render iterations (Adam steps) per second at 128 px for a batch of 8 channels.

For an early, a middle and a late layer of EfficientNet-Lite0, with the forward pass stopped at the
layer (the default) and run through the whole network, and the speed-up of stopping early. Each
setting gets a warm-up run, then ``--repeats`` timed runs of ``--iterations`` iterations; medians are printed.

    .venv/bin/python benchmarks/bench_featvis.py [--iterations 20] [--repeats 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics

import torch

from xai_helpers.featvis import channel, render, standard_transforms
from xai_helpers.models import efficientnet_lite0

LAYERS = {"early": "blocks.2", "middle": "blocks.8", "late": "blocks.14"}


def iterations_per_second(model, layer: str, stop_early: bool, iterations: int, repeats: int) -> float:
    objective = channel(layer, list(range(8)))
    kw = dict(batch=8, size=128, iterations=iterations, transforms=standard_transforms(128), stop_early=stop_early)
    render(model, objective, **{**kw, "iterations": 2})  # warm-up
    return statistics.median(iterations / render(model, objective, seed=r, **kw).seconds for r in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = efficientnet_lite0()
    print(f"feature visualisation, 128 px, batch 8, {args.threads} threads, "
          f"median of {args.repeats} x {args.iterations} iterations")
    print(f"{'layer':>18} {'stop early':>11} {'full net':>10} {'speed-up':>9}")
    for depth, layer in LAYERS.items():
        early = iterations_per_second(model, layer, True, args.iterations, args.repeats)
        full = iterations_per_second(model, layer, False, args.iterations, args.repeats)
        print(f"{depth + ' ' + layer:>18} {early:9.2f}/s {full:8.2f}/s {early / full:8.2f}x")


if __name__ == "__main__":
    main()
