"""How many gradient evaluations Integrated Gradients needs for 1 % completeness, by quadrature.

For each bundled photo (``xai_helpers.data.SAMPLE_IMAGES``) and EfficientNet-Lite0's predicted
class, it doubles ``steps`` (the number of gradient evaluations along the path: 4, 8, 16, ...) for
each quadrature until ``|sum(IG) - (y(x) - y(x'))| <= tolerance * |y(x) - y(x')|``, and prints the
steps reached and the relative error there. Our quadratures are ``gauss-legendre`` (the default),
``trapezoid`` and ``riemann``; captum's ``gausslegendre`` and ``riemann_trapezoid`` are added where
``import captum`` works (it is not a dependency of the book). Slow on a CPU: one photo at 224x224
with ``--max-steps 512`` is up to about 1000 gradients per quadrature. For example::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ig_steps.py --photos cat --max-steps 128
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from xai_helpers.data import SAMPLE_IMAGES, sample_image
from xai_helpers.methods.integrated import integrated_gradients
from xai_helpers.models import efficientnet_lite0

IG = Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor]


def quadratures(model: torch.nn.Module, chunk_size: int) -> dict[str, IG]:
    """name -> ``ig(x, baseline, target, steps) -> [1, 3, H, W]``."""
    methods = {
        f"ours {q}": (lambda x, base, t, s, q=q: integrated_gradients(model, x, t, baseline=base, steps=s,
                                                                     chunk_size=chunk_size, quadrature=q))
        for q in ("gauss-legendre", "trapezoid", "riemann")
    }
    try:
        from captum.attr import IntegratedGradients
    except ImportError:
        print("captum not importable: its quadratures are skipped")
        return methods
    captum_ig = IntegratedGradients(model)
    for q in ("gausslegendre", "riemann_trapezoid"):
        methods[f"captum {q}"] = (lambda x, base, t, s, q=q: captum_ig.attribute(
            x, baselines=base, target=t, n_steps=s, method=q, internal_batch_size=chunk_size).detach())
    return methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", nargs="*", default=sorted(SAMPLE_IMAGES), help="names from SAMPLE_IMAGES")
    parser.add_argument("--baseline", choices=["black", "grey"], default="black")
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--start-steps", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=512)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--methods", nargs="*", default=None,
                        help="a subset of the quadratures, e.g. 'ours gauss-legendre' 'captum gausslegendre'")
    args = parser.parse_args()

    model = efficientnet_lite0().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    methods = quadratures(model, args.chunk_size)
    if args.methods:
        unknown = set(args.methods) - set(methods)
        if unknown:
            raise SystemExit(f"unknown quadratures {sorted(unknown)}; choose from {sorted(methods)}")
        methods = {name: methods[name] for name in args.methods}
    print(f"baseline {args.baseline}, tolerance {args.tolerance:.1%}, "
          f"steps {args.start_steps}..{args.max_steps} (doubling)")
    print(f"{'photo':>12} {'method':>26} {'steps':>6} {'rel. error':>10} {'errors along the way':<40} {'time':>7}")
    for photo in args.photos:
        x = sample_image(photo, size=args.size)
        base = torch.zeros_like(x) if args.baseline == "black" else torch.full_like(x, 0.5)
        with torch.no_grad():
            logits = model(x)
            target = int(logits.argmax(1))
            gap = float(logits[0, target] - model(base)[0, target])
        for name, ig in methods.items():
            start, steps, trail = time.perf_counter(), args.start_steps, []
            while True:
                relative = abs(float(ig(x, base, target, steps).sum()) - gap) / abs(gap)
                trail.append(f"{steps}:{relative:.1%}")
                if relative <= args.tolerance or steps >= args.max_steps:
                    break
                steps = min(2 * steps, args.max_steps)
            reached = f"{steps}" if relative <= args.tolerance else f">{steps}"
            print(f"{photo:>12} {name:>26} {reached:>6} {relative:>10.2%} {' '.join(trail):<40} "
                  f"{time.perf_counter() - start:>6.1f}s", flush=True)


if __name__ == "__main__":
    main()
