"""``python -m xai_helpers.report``: a trust report for your own model, on a folder of images.

    python -m xai_helpers.report --model resnet50 --images photos/ --out report.html
    python -m xai_helpers.report --model mypackage.models:build --images "data/*.png" --out report.html \\
        --targets labels.csv --methods grad_cam,saliency,integrated_gradients --layer layer4
    torchrun --nproc-per-node 4 -m xai_helpers.report --model resnet50 --images val/ --out report.html --device cuda

``--model``: a torchvision name (its pretrained weights come from torchvision's cache, or are
downloaded once), a TorchScript file (``.pt``, ``.pth``), a ``torch.export`` file (``.pt2``), or
``module:function`` that builds the model. The model takes images in [0, 1] (wrap yours with
``xai_helpers.models.Normalize`` if it expects normalised input) and returns logits; ``--output``
picks them from a tuple or dict. ``--targets``: ``predicted`` (default) or a CSV file with columns
``image,label``.

Under ``torchrun`` each process explains the images whose index (in sorted order) is its rank
modulo the number of processes (gloo on a CPU, NCCL on GPUs) and writes its results to its own
SQLite file in ``--workdir``; the first process merges them and writes the report. Results already
in ``--workdir`` are skipped, so a run that was killed is finished by running the same command
again. Bad images (unreadable, grey-scale, another size, a label out of range) are recorded in the
report, never a reason to stop.
"""

from __future__ import annotations

import argparse
import csv
import glob
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ..core import SelectOutput, resolve_layer
from . import TrustReport, add_thumbnails, measure_images, report_methods, summarise
from .checks import checks, get_check
from .store import ResultStore, merge

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class InputError(Exception):
    """A problem with the command's input that stops the run before it starts, with the fix."""


def load_model(spec: str, output: str | None = None) -> nn.Module:
    """The model named by ``spec`` (module docstring), in eval mode, its output picked by ``output``."""
    path = Path(spec)
    if path.suffix == ".pt2":
        model: nn.Module = torch.export.load(str(path)).module()
    elif path.suffix in (".pt", ".pth"):
        if not path.is_file():
            raise InputError(f"no model file {spec!r}")
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as err:
            raise InputError(
                f"{spec!r} is not a TorchScript file ({err}); a state_dict needs the code that builds "
                "the model: use --model module:function"
            ) from err
    elif ":" in spec:
        module_name, _, function = spec.partition(":")
        try:
            build = getattr(importlib.import_module(module_name), function)
        except (ImportError, AttributeError) as err:
            raise InputError(f"cannot import {function!r} from {module_name!r}: {err}") from err
        model = build()
        if not isinstance(model, nn.Module):
            raise InputError(f"{spec} returned a {type(model).__name__}, not an nn.Module")
    else:
        from ..models import torchvision_model

        try:
            model = torchvision_model(spec)
        except (ValueError, RuntimeError) as err:
            raise InputError(str(err)) from err
    if output is not None:
        model = SelectOutput(model, int(output) if output.isdigit() else output)
    return model.eval()


def image_paths(images: str) -> list[Path]:
    """The image files of a folder (recursively) or a glob pattern, sorted."""
    path = Path(images)
    found = (
        sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if path.is_dir()
        else sorted(Path(p) for p in glob.glob(images, recursive=True))
    )
    if not found:
        raise InputError(f"no images found at {images!r} (a folder, or a glob such as 'data/*.png')")
    return found


def read_image(path: Path, size: int) -> tuple[torch.Tensor, str]:
    """``[1, 3, size, size]`` in [0, 1] and a note (grey-scale converted, size changed), or an exception."""
    from PIL import Image

    from ..data import to_tensor

    with Image.open(path) as image:
        image.load()
        notes = []
        if image.mode != "RGB":
            notes.append(f"converted from {image.mode} to RGB")
            image = image.convert("RGB")
        if image.size != (size, size):
            notes.append(f"resized and centre-cropped from {image.size[0]}x{image.size[1]} to {size}x{size}")
        import numpy as np

        return to_tensor(np.asarray(image), size=size), "; ".join(notes)


def read_labels(path: str) -> dict[str, int]:
    """``{image: label}`` from a CSV file with a header ``image,label``."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"image", "label"} <= set(rows[0]):
        raise InputError(f"{path}: expected a CSV file with the columns 'image,label'")
    return {row["image"]: int(row["label"]) for row in rows}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m xai_helpers.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True)
    p.add_argument("--images", required=True, help="a folder or a glob pattern")
    p.add_argument("--out", required=True, help="report.html, report.md or report.json")
    p.add_argument("--targets", default="predicted", help="'predicted' or a CSV file image,label")
    p.add_argument(
        "--methods",
        default="",
        help="comma-separated registry names, or 'all' (default: every method but the model-agnostic ones "
        "(RISE, LIME, KernelSHAP), which cost hundreds of forward passes per map)",
    )
    p.add_argument(
        "--checks", default="", help=f"comma-separated (default: all of {', '.join(c.name for c in checks())})"
    )
    p.add_argument("--layer", default=None, help="the layer the CAMs explain (default: the last convolutional one)")
    p.add_argument("--output", default=None, help="the logits' key or index, for a model that returns a tuple or dict")
    p.add_argument("--size", type=int, default=224, help="image side the model reads (default 224)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workdir", default=None, help="where per-process results are kept (default: OUT + '.run')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--thumbnails", type=int, default=4, help="images whose maps the HTML page shows (default 4)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _check_model(model: nn.Module, size: int, device: torch.device) -> int:
    """The number of classes, or an InputError that says what is wrong with the model's output."""
    with torch.no_grad():
        out = model(torch.rand(1, 3, size, size, device=device))
    if isinstance(out, (tuple, list, dict)):
        kind = type(out).__name__
        keys = list(out.keys()) if isinstance(out, dict) else list(range(len(out)))
        raise InputError(f"the model returns a {kind}, not logits; name the logits with --output (one of {keys})")
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise InputError(f"the model must return logits [B, classes], got {getattr(out, 'shape', type(out).__name__)}")
    return int(out.shape[1])


def run(argv: list[str] | None = None) -> TrustReport | None:
    """The command; returns the report in the first process (None in the others)."""
    args = _parser().parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = torch.device(args.device)
    if distributed:
        import torch.distributed as dist

        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    else:
        rank, world = 0, 1
    model = load_model(args.model, args.output).to(device)
    num_classes = _check_model(model, args.size, device)
    if args.layer is not None:
        try:
            resolve_layer(model, args.layer)
        except ValueError as err:  # a name that does not exist: the close names
            raise InputError(str(err)) from err
    paths = image_paths(args.images)
    root = Path(args.images) if Path(args.images).is_dir() else Path(".")
    ids = [str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in paths]
    labels = read_labels(args.targets) if args.targets != "predicted" else None
    workdir = Path(args.workdir or args.out + ".run")
    store = ResultStore(workdir / f"results-rank{rank}.sqlite")
    others = [p for p in workdir.glob("results-rank*.sqlite") if p != store.path]
    skip = merge(others).done() if others else set()  # resuming with another number of processes
    mine = [(i, p) for k, (i, p) in enumerate(zip(ids, paths)) if k % world == rank]
    named = [m for m in args.methods.split(",") if m] or None
    methods = report_methods(
        model, "all" if args.methods == "all" else named, layer=args.layer, image_size=args.size
    )
    check_list = [get_check(c) for c in args.checks.split(",") if c] or [c for c in checks() if not c.needs_mask]
    targets: dict[str, int] = {}  # filled as each image is read

    def target_of(image_id: str, x: torch.Tensor) -> int:
        """The image's label from the CSV (checked), or the model's prediction."""
        if labels is None:
            with torch.no_grad():
                return int(model(x).argmax(1))
        if image_id not in labels:
            raise KeyError(f"no label for {image_id!r} in {args.targets}")
        if not 0 <= labels[image_id] < num_classes:
            raise ValueError(f"label {labels[image_id]} is out of range: the model has {num_classes} classes")
        return labels[image_id]

    def images() -> Iterator[tuple[str, torch.Tensor | Exception]]:
        for image_id, path in mine:
            if all((image_id, m.title, c.name) in skip for m in methods for c in check_list):
                continue
            try:
                x, note = read_image(path, args.size)
                x = x.to(device)
                targets[image_id] = target_of(image_id, x)
                if note:
                    store.note_image(image_id, "ok", note)
                yield image_id, x
            except Exception as err:  # a corrupt file, a missing or bad label: recorded, skipped
                yield image_id, err

    measure_images(
        model,
        images(),
        targets,
        methods,
        store,
        checks_to_run=check_list,
        seed=args.seed,
        progress=not args.no_progress and rank == 0,
        total=len(mine),
    )
    store.close()
    if distributed:
        dist.barrier()
    report = None
    if rank == 0:
        merged = merge(sorted(workdir.glob("results-rank*.sqlite")))
        titles = [m.title for m in methods]
        report = TrustReport(
            titles,
            check_list,
            summarise(merged, titles, check_list),
            merged.rows(),
            merged.images(),
            {
                "model": args.model,
                "n_images": len(ids),
                "processes": world,
                "device": str(args.device),
                "seed": args.seed,
                "methods": {m.title: {k: str(v) for k, v in m.options.items()} for m in methods},
            },
        )
        statuses = merged.images()
        shown = [(i, p) for i, p in zip(ids, paths) if statuses.get(i, ("ok", ""))[0] == "ok"]
        items = []
        for image_id, path in shown[: max(0, args.thumbnails)]:
            x = read_image(path, args.size)[0].to(device)
            items.append((image_id, x, target_of(image_id, x)))
        add_thumbnails(report, model, methods, items, seed=args.seed)
        report.save(args.out)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return report


def main() -> None:
    try:
        report = run()
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if report is not None:
        print(
            f"wrote {report.meta['n_images']} images x {len(report.methods)} methods x {len(report.checks)} checks",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
