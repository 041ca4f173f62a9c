"""Did a change slow anything down? Every method that two versions both register, timed in one run.

Run: ``python benchmarks/bench_before_after.py [--ref ae323de] [--rounds 5] [--batches 1,8] [--size 224]``

``--ref`` is any git revision of this repository (by default ``ae323de``, the last commit of
``xai_helpers`` 0.1); "after" is the working tree. The package of ``--ref`` is extracted with ``git
archive`` into a temporary folder. Each round starts one worker process per version, in alternating
order (before, after; then after, before), and each worker times every shared method once on the
same model, photos and options; the table gives the median of the rounds and ``before / after`` (> 1:
the working tree is faster). Both versions run the same work: where 0.2 changed a default (Integrated
Gradients' steps) the options fix it, and where it renamed an option (``batch_size`` to
``chunk_size``) the worker passes the name its version knows.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("cat", "coffee", "astronaut", "rocket", "motorcycle", "horse", "camera", "coins")
# Options that make the two versions do the same work at a cost a round can afford: occlusion with
# 49 windows, Score-CAM at a layer of 16 channels, 32 fixed steps of Integrated Gradients (0.2's
# default refines the steps), SmoothGrad with 16 samples in chunks of 16.
OPTIONS: dict[str, dict] = {
    "occlusion": dict(window=56, stride=28),
    "score_cam": dict(layer="blocks.0", chunks=4),
    "smoothgrad": dict(n_samples=16, chunks=16, seed=0),
    "integrated_gradients": dict(steps=32, chunks=32),
}


def worker(batch: int, size: int, names: list[str] | None) -> None:
    """Time each method once (after warm-up calls) and print ``{name: seconds}`` as JSON."""
    import torch
    from timing import seconds_per_call

    from xai_helpers import core, registry
    from xai_helpers.data import sample_image
    from xai_helpers.models import efficientnet_lite0

    chunk_name = "chunk_size" if hasattr(core, "default_chunk_size") else "batch_size"   # 0.2 / 0.1
    model = efficientnet_lite0().eval()
    x = torch.cat([sample_image(PHOTOS[i % len(PHOTOS)], size=size) for i in range(batch)])
    with torch.no_grad():
        targets = model(x).argmax(1)
    layer = core.find_last_conv_layer(model)
    shared = names if names is not None else [m.name for m in registry.methods()]
    seconds = {}
    for name in shared:
        options = dict(OPTIONS.get(name, {}))
        if "chunks" in options:
            options[chunk_name] = options.pop("chunks")
        if registry.get(name).needs_layer:
            options.setdefault("layer", layer)

        def call(name: str = name, options: dict = options) -> torch.Tensor:
            return registry.attribute(name, model, x, targets, **options)

        seconds[name] = seconds_per_call(call)   # after the Timer's own warm-up calls
    print(json.dumps(seconds))


def run_worker(package_root: Path, batch: int, size: int, names: list[str] | None) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(package_root))
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--batches", str(batch), "--size", str(size)]
    if names is not None:
        command += ["--methods", ",".join(names)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if done.returncode != 0:
        raise SystemExit(f"worker for {package_root} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def registered(package_root: Path) -> list[str]:
    code = "import json; from xai_helpers import registry; print(json.dumps([m.name for m in registry.methods()]))"
    done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(package_root)),
                          capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default="ae323de", help="the git revision to compare with (default: 0.1)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--methods", default="", help="comma-separated registry names (default: all shared)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = [n for n in args.methods.split(",") if n] or None
    if args.worker:
        worker(int(args.batches), args.size, names)
        return
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.ref, "xai_helpers"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        versions = {"before": before, "after": ROOT}
        shared = [n for n in registered(ROOT) if n in set(registered(before))]
        if names is not None:
            shared = [n for n in shared if n in names]
        import torch

        print(f"before: {args.ref}; after: the working tree; {args.size}x{args.size} photos, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.rounds} rounds")
        print("before / after > 1: the working tree is faster")
        for batch in (int(b) for b in args.batches.split(",")):
            times: dict[str, dict[str, list[float]]] = {v: {n: [] for n in shared} for v in versions}
            for r in range(args.rounds):
                for version in (("before", "after") if r % 2 == 0 else ("after", "before")):
                    for name, seconds in run_worker(versions[version], batch, args.size, shared).items():
                        times[version][name].append(seconds)
            print(f"\nbatch {batch}")
            print(f"  {'method':<22}{'before ms':>11}{'after ms':>10}{'before / after':>16}")
            for name in shared:
                b, a = statistics.median(times["before"][name]), statistics.median(times["after"][name])
                print(f"  {name:<22}{1000 * b:>11.1f}{1000 * a:>10.1f}{b / a:>16.2f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
