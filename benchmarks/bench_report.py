"""Images per second of the trust-report command, per method, with 1 and with 2 processes.

Run: ``python benchmarks/bench_report.py [--images 64] [--size 64] [--methods grad_cam,saliency,...]
[--device cpu|cuda]`` (``--methods``: registry names; default the report's default methods,
:func:`xai_helpers.report.default_methods`).

It writes ``--images`` shape pictures (:func:`xai_helpers.testbeds.shape_set`) as PNG files, trains
a ``SmallCNN`` on other shapes once and saves its weights with a ``module:function`` that loads
them (a TorchScript file would hide the layers the CAMs need), then runs ``python -m
xai_helpers.report`` on the folder once per method, alone and under ``torchrun --nproc-per-node
2`` (gloo on a CPU, NCCL on GPUs), with every check that needs no masks. The time is the command's
wall-clock time, start-up, model loading, merging and writing the report included, as a user meets
it. On a CPU the cores are shared out: one process gets them all as threads, two processes half
each. All figures come from one run of this script; it prints the device it ran on.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from xai_helpers.report import default_methods
from xai_helpers.testbeds import shape_set
from xai_helpers.training import train_small_cnn


def prepare(folder: Path, n: int, size: int) -> Path:
    """``n`` PNG images in ``folder / "images"``, a trained SmallCNN's weights and ``bench_model.build``."""
    images = folder / "images"
    images.mkdir(parents=True)
    pictures = shape_set(n, seed=1, size=size).images                     # [n, 3, size, size] in [0, 1]
    for i, picture in enumerate(pictures):
        array = (picture.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(array).save(images / f"shape{i:04d}.png")
    training = shape_set(600, seed=11, size=size)
    model = train_small_cnn(training.images, training.labels, epochs=6, num_classes=3, seed=0).eval()
    torch.save(model.state_dict(), folder / "weights.pt")
    (folder / "bench_model.py").write_text(
        "import torch\nfrom xai_helpers.models import SmallCNN\n\n\ndef build():\n"
        "    model = SmallCNN(num_classes=3, width=16)\n"
        f"    model.load_state_dict(torch.load({str(folder / 'weights.pt')!r}, weights_only=True))\n"
        "    return model.eval()\n")
    return images


def run(folder: Path, method: str, processes: int, size: int, device: str) -> float:
    """Wall-clock seconds of one run of the command on ``folder / "images"`` with ``method`` only."""
    cores = os.cpu_count() or 1
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, cores // processes)),
               PYTHONPATH=os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    env.pop("WORLD_SIZE", None)
    tag = f"{method}-{processes}"
    command = ["-m", "xai_helpers.report", "--model", "bench_model:build", "--images", str(folder / "images"),
               "--size", str(size), "--methods", method, "--out", str(folder / f"{tag}.json"),
               "--workdir", str(folder / f"{tag}.run"), "--device", device, "--no-progress"]
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", *command]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{tag} failed:\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--methods", default=",".join(default_methods()))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {os.cpu_count()} cores"
    print(f"device: {name}; {args.images} images of {args.size} x {args.size}; every check without masks")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prepare(folder, args.images, args.size)
        print(f"{'method':<22}{'1 process':>12}{'2 processes':>14}{'2 / 1':>8}")
        two_processes = not args.device.startswith("cuda") or torch.cuda.device_count() >= 2  # one GPU each
        for method in args.methods.split(","):
            one = args.images / run(folder, method, 1, args.size, args.device)
            if not two_processes:
                print(f"{method:<22}{one:>9.2f} /s{'(one GPU)':>14}")
                continue
            two = args.images / run(folder, method, 2, args.size, args.device)
            print(f"{method:<22}{one:>9.2f} /s{two:>11.2f} /s{two / one:>8.2f}")


if __name__ == "__main__":
    main()
