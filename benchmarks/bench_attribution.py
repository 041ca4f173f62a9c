"""How much an attribution costs, measured against a plain forward pass of the same model.

Run: ``python benchmarks/bench_attribution.py [--methods grad_cam ...] [--repeats 15] [--batches 1 8]``

For EfficientNet-Lite0 at 224x224 and each batch size it prints the median time of a forward pass
under ``torch.no_grad()``, the median time of every method in :data:`METHODS`, and each method's ratio
to the forward pass. All timings come from one run: a warm-up, then rounds in which the forward pass
and every method run once each in turn (so a change in machine load hits them all alike), then the
medians. On a shared machine the absolute times drift; the ratios are what to compare.

To add a method, add one entry to :data:`METHODS`: a name and a callable ``(model, x, target) -> maps``.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from xai_helpers.cam import grad_cam, grad_cam_plus_plus, hires_cam, layer_cam, score_cam
from xai_helpers.gradients import (deconvnet, guided_backprop, guided_grad_cam, integrated_gradients, saliency,
                                  smoothgrad)
from xai_helpers.models import efficientnet_lite0
from xai_helpers.perturbation import occlusion

Method = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

# name -> callable(model, x, target): one entry per attribution method.
METHODS: dict[str, Method] = {
    "grad_cam": lambda model, x, target: grad_cam(model, x, target, "head"),
    "grad_cam_plus_plus": lambda model, x, target: grad_cam_plus_plus(model, x, target, "head"),
    "hires_cam": lambda model, x, target: hires_cam(model, x, target, "head"),
    "layer_cam": lambda model, x, target: layer_cam(model, x, target, "head"),
    # Score-CAM costs one forward pass per channel: blocks.15 has 320 channels (head has 1280).
    # batch_size 8: on a 2-core CPU small batches of 224-px images run fastest (cache).
    "score_cam": lambda model, x, target: score_cam(model, x, target, "blocks.15", batch_size=8),
    "occlusion": lambda model, x, target: occlusion(model, x, target, window=48, stride=24, batch_size=8),
    "saliency": saliency,
    "deconvnet": deconvnet,
    "guided_backprop": guided_backprop,
    "guided_grad_cam": lambda model, x, target: guided_grad_cam(model, x, target, "head"),
    "smoothgrad_16": lambda model, x, target: smoothgrad(model, x, target, n_samples=16, batch_size=16),
    "integrated_gradients_32": lambda model, x, target: integrated_gradients(model, x, target, steps=32, batch_size=33),
}


def forward(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The reference: one forward pass without autograd."""
    with torch.no_grad():
        return model(x)


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(model, batch: int, size: int, methods: dict[str, Method], repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of the forward pass and of each method, interleaved round by round."""
    torch.manual_seed(0)
    x = torch.rand(batch, 3, size, size)
    target = torch.randint(1000, (batch,))
    entries = {"forward": forward, **methods}
    times: dict[str, list[float]] = {name: [] for name in entries}
    for round_ in range(warmup + repeats):
        for name, fn in entries.items():
            t = seconds(lambda: fn(model, x, target))
            if round_ >= warmup:
                times[name].append(t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=sorted(METHODS),
                        help="methods to time (default: all)")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds per batch size (default 15)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    args = parser.parse_args(argv)

    model = efficientnet_lite0()
    methods = {name: METHODS[name] for name in args.methods}
    print(f"EfficientNet-Lite0, {args.size}x{args.size}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} interleaved rounds after {args.warmup} warm-up rounds")
    print(f"{'batch':>5}  {'method':<22} {'median ms':>10} {'x forward':>10}")
    for batch in args.batches:
        medians = bench(model, batch, args.size, methods, args.repeats, args.warmup)
        reference = medians["forward"]
        for name, t in medians.items():
            print(f"{batch:>5}  {name:<22} {1000 * t:>10.1f} {t / reference:>10.2f}")


if __name__ == "__main__":
    main()
