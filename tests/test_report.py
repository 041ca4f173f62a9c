"""The trust report (xai_helpers.report): known answers, the verdict rules, the command's bad inputs,
and the properties of a run split over processes (1 against 2 processes, killed and resumed)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from xai_helpers import registry
from xai_helpers.models import Normalize, SmallCNN
from xai_helpers.report import report_methods, trust_report
from xai_helpers.report.checks import cascade_layers, get_check, image_seed
from xai_helpers.report.store import ResultStore, Row, merge
from xai_helpers.stats import t_interval
from xai_helpers.testbeds import DisconnectedGrid

HERE = Path(__file__).resolve().parent


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), SmallCNN(num_classes=3, width=4)).eval()


def images(n: int = 6, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def edge_map(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """A fake explainer: the Sobel edges of the grey image, whatever the model."""
    grey = F.pad(x.mean(1, keepdim=True), (1, 1, 1, 1), mode="replicate")
    k = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    edges = (F.conv2d(grey, k[None, None]) ** 2 + F.conv2d(grey, k.T[None, None]) ** 2).sqrt()[:, 0]
    return edges / edges.flatten(1).amax(1)[:, None, None]


def test_a_map_that_ignores_the_model_fails_model_randomisation():
    report = trust_report(
        small_model(),
        images(),
        methods={"edges": edge_map, "Grad-CAM": "grad_cam"},
        layer="1.relu3",
        checks=["randomisation"],
        thumbnails=0,
    )
    assert report.cells["edges", "randomisation"].verdict == "fail"
    assert report.cells["edges", "randomisation"].value == pytest.approx(1.0)
    assert report.cells["Grad-CAM", "randomisation"].value < 0.9


def test_input_invariance_holds_for_the_gradient_not_for_gradient_times_input():
    report = trust_report(
        small_model(), images(), methods=["saliency", "gradient_x_input"], checks=["input_invariance"], thumbnails=0
    )
    assert report.cells["saliency", "input_invariance"].verdict == "pass"
    assert report.cells["gradient × input", "input_invariance"].verdict == "fail"


def test_a_model_without_normalize_is_shifted_by_a_layer_in_front():
    torch.manual_seed(0)
    report = trust_report(
        SmallCNN(num_classes=3, width=4).eval(),
        images(),
        methods=["saliency"],
        checks=["input_invariance"],
        thumbnails=0,
    )
    assert report.cells["saliency", "input_invariance"].verdict == "pass"


def test_containment_on_difull_singles_out_the_methods_that_average_the_gradient():
    # DiFull (chapter 15): each cell's score depends on that cell alone, so the mask of the cell holds
    # every pixel that can influence it. Pixel methods and LayerCAM keep all their mass there; Grad-CAM
    # spreads it over the grid. By construction, for any weights.
    torch.manual_seed(1)
    grid = DisconnectedGrid(SmallCNN(num_classes=3, width=4)).eval()
    x = images(6, 64, seed=2)
    cells = torch.arange(6) % 4
    targets = cells * 3 + torch.arange(6) % 3
    masks = torch.zeros(6, 64, 64, dtype=torch.bool)
    for i, k in enumerate(cells.tolist()):
        row, col = divmod(k, 2)
        masks[i, 32 * row : 32 * (row + 1), 32 * col : 32 * (col + 1)] = True
    report = trust_report(
        grid,
        x,
        targets,
        methods=["saliency", "layer_cam", "grad_cam"],
        layer="model.relu1",
        masks=masks,
        checks=["containment"],
        thumbnails=0,
    )
    verdicts = {m: report.cells[m, "containment"].verdict for m in report.methods}
    assert verdicts == {"saliency": "pass", "LayerCAM": "pass", "Grad-CAM": "fail"}, verdicts


def test_completeness_is_defined_for_integrated_gradients_and_measured_against_its_closed_form():
    model, x = small_model(), images(3)
    report = trust_report(model, x, methods=["integrated_gradients", "saliency"], checks=["completeness"], thumbnails=0)
    assert report.cells["saliency", "completeness"].verdict == "n/a"
    # second implementation: the relative error from the raw attributions, by hand
    from xai_helpers import registry

    targets = model(x).argmax(1)
    ig = registry.attribute("integrated_gradients", model, x, targets, steps=32)
    with torch.no_grad():
        gap = (model(x) - model(torch.zeros_like(x))).gather(1, targets[:, None])[:, 0]
    expected = ((ig.flatten(1).sum(1) - gap).abs() / gap.abs()).mean()
    # The error is a small difference of float32 sums, and the report runs one image at a time: on
    # another CPU (ATEN_CPU_CAPABILITY=default) the two differ by about 1e-5 in this relative error.
    assert report.cells["Integrated Gradients", "completeness"].value == pytest.approx(float(expected), abs=1e-4)
    assert float(expected) > 0.01           # and the error is not itself within that tolerance of 0


def test_the_default_methods_leave_out_the_model_agnostic_ones_and_all_brings_them_in():
    model = small_model()
    names = {m.name for m in registry.methods()}
    costly = {m.name for m in registry.methods(family="blackbox")}
    assert costly and costly < names
    assert {m.name for m in report_methods(model, None, image_size=32)} == names - costly
    assert {m.name for m in report_methods(model, "all", image_size=32)} == names
    with pytest.raises(ValueError, match="'all'"):
        report_methods(model, "every", image_size=32)


def test_verdict_rules_pass_fail_undecided():
    from xai_helpers.report import _verdict

    lower = get_check("input_invariance")  # bar 0.05, lower is better
    assert _verdict(lower, t_interval([0.01, 0.02, 0.015])) == "pass"
    assert _verdict(lower, t_interval([0.5, 0.6, 0.55])) == "fail"
    assert _verdict(lower, t_interval([0.0, 0.1, 0.04, 0.07])) == "undecided"
    assert _verdict(get_check("cost"), None) == ""


def test_seeds_depend_on_the_image_method_and_check_only():
    assert image_seed("a.png", "SmoothGrad", "stability") == image_seed("a.png", "SmoothGrad", "stability")
    assert len({image_seed("a.png", "m", c) for c in ["x", "y", "z"]}) == 3
    assert image_seed("a.png", "m", "x", seed=1) != image_seed("a.png", "m", "x")


def test_cascade_layers_start_at_the_classifier():
    model = small_model()
    layers = cascade_layers(model)
    assert layers[0] == "1.fc" and layers[-1] == "1.conv1" and "1.bn3" in layers


def test_renderings_hold_every_cell_and_rule(tmp_path):
    report = trust_report(
        small_model(),
        images(3),
        methods=["saliency", "grad_cam"],
        layer="1.relu3",
        checks=["cost", "input_invariance"],
        thumbnails=2,
    )
    page = report.to_html()
    assert page.count("<tr>") == 3 and "data:image/png;base64," in page and "http" not in page.replace("https://", "")
    assert all(c.rule[:40] in page for c in report.checks)
    data = json.loads(report.to_json())
    assert len(data["cells"]) == 4 and len(data["rows"]) == 3 * 2 * 2
    assert "| saliency |" in report.to_markdown()
    report.save(str(tmp_path / "r.md"))
    with pytest.raises(ValueError, match=".html, .md or .json"):
        report.save(str(tmp_path / "r.txt"))


def test_a_method_that_refuses_is_recorded_not_raised():
    def refuses(model, x, target):
        raise ValueError("cannot explain this model")

    report = trust_report(
        small_model(), images(2), methods={"refuser": refuses, "saliency": "saliency"}, checks=["cost"], thumbnails=0
    )
    cell = report.cells["refuser", "cost"]
    assert cell.verdict == "error" and "cannot explain this model" in cell.error and "error:" in cell.text()


def test_store_resumes_and_merges(tmp_path):
    a, b = ResultStore(tmp_path / "a.sqlite"), ResultStore(tmp_path / "b.sqlite")
    a.add(Row("i1", "m", "c", 0.5, {"k": 1}))
    b.add(Row("i2", "m", "c", math.nan, {}, "error", "boom"))
    a.close(), b.close()
    merged = merge([tmp_path / "a.sqlite", tmp_path / "b.sqlite"])
    assert merged.done() == {("i1", "m", "c"), ("i2", "m", "c")}
    rows = merged.rows()
    assert rows[0].detail == {"k": 1} and math.isnan(rows[1].value) and rows[1].message == "boom"


def test_store_commits_an_image_with_its_rows(tmp_path):
    # A killed run loses the image in progress, never a finished one: rows land with note_image.
    store = ResultStore(tmp_path / "s.sqlite")
    store.add(Row("i1", "m", "c", 0.5, {}))
    store.add(Row("i1", "m", "d", 0.25, {}))
    assert ResultStore(tmp_path / "s.sqlite").done() == set()
    store.note_image("i1", "ok")
    assert ResultStore(tmp_path / "s.sqlite").done() == {("i1", "m", "c"), ("i1", "m", "d")}
    store.close()


# ------------------------------------------------------------------------------------------ the command
def write_pngs(folder: Path, n: int = 8, size: int = 32, seed: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"img{i:02d}.png")
        names.append(f"img{i:02d}.png")
    return names


def command(args: list[str], workdir: Path, processes: int = 1, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    )
    env.pop("WORLD_SIZE", None)
    if processes == 1:
        cmd = [sys.executable, "-m", "xai_helpers.report", *args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={processes}",
            "-m",
            "xai_helpers.report",
            *args,
        ]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


BASE = [
    "--model",
    "report_support.tiny_models:small_cnn",
    "--size",
    "32",
    "--methods",
    "saliency,grad_cam,smoothgrad",
    "--checks",
    "cost,input_invariance,stability",
    "--no-progress",
]


def per_image(path: Path) -> dict:
    data = json.loads(path.read_text())
    return {(r["image"], r["method"], r["check"]): (r["value"], r["status"]) for r in data["rows"]}


def test_one_and_two_processes_give_identical_results(tmp_path):
    write_pngs(tmp_path / "imgs", 6)
    one = command([*BASE, "--images", "imgs", "--out", "one.json"], tmp_path)
    two = command([*BASE, "--images", "imgs", "--out", "two.json"], tmp_path, processes=2)
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = per_image(tmp_path / "one.json"), per_image(tmp_path / "two.json")
    assert a.keys() == b.keys() and len(a) == 6 * 3 * 3
    assert all(a[k][0] == b[k][0] or (a[k][0] is None and b[k][0] is None) for k in a), [k for k in a if a[k] != b[k]]
    assert json.loads((tmp_path / "two.json").read_text())["meta"]["processes"] == 2


def test_a_killed_run_resumes_to_the_same_results(tmp_path):
    import sqlite3
    import time

    write_pngs(tmp_path / "imgs", 6)
    full = command([*BASE, "--images", "imgs", "--out", "full.json"], tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]
    # Start the same run into another work folder and kill it (SIGKILL) once some results are stored.
    env = dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    )
    env.pop("WORLD_SIZE", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xai_helpers.report",
            *BASE,
            "--images",
            "imgs",
            "--out",
            "resumed.json",
            "--workdir",
            "w",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db, stored, deadline = tmp_path / "w" / "results-rank0.sqlite", 0, time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                stored = sqlite3.connect(db).execute("SELECT COUNT(*) FROM results").fetchone()[0]
            except sqlite3.OperationalError:
                stored = 0
            if stored >= 20:
                break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert 20 <= stored < 6 * 3 * 3, stored  # killed half-way
    resumed = command([*BASE, "--images", "imgs", "--out", "resumed.json", "--workdir", "w"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert per_image(tmp_path / "full.json") == per_image(tmp_path / "resumed.json")


def test_bad_inputs_are_recorded_or_named(tmp_path):
    names = write_pngs(tmp_path / "imgs", 4)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not a png at all")
    Image.fromarray(np.zeros((48, 40), dtype=np.uint8)).save(tmp_path / "imgs" / "grey.png")
    (tmp_path / "labels.csv").write_text(
        "image,label\n" + "".join(f"{n},{i % 3}\n" for i, n in enumerate(names[:3])) + f"{names[3]},7\ngrey.png,1\n"
    )
    done = command([*BASE, "--images", "imgs", "--out", "r.json", "--targets", "labels.csv"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    images = json.loads((tmp_path / "r.json").read_text())["images"]
    assert images["broken.png"]["status"] == "error"
    assert "out of range" in images[names[3]]["note"] and images[names[3]]["status"] == "error"
    assert "converted from L to RGB" in images["grey.png"]["note"] and "resized" in images["grey.png"]["note"]
    assert images[names[0]]["status"] == "ok"
    # a model that returns a dict, and a layer that does not exist: clear messages, no traceback
    bad = command(
        ["--model", "report_support.tiny_models:returns_dict", "--size", "32", "--images", "imgs", "--out", "x.json"],
        tmp_path,
    )
    assert bad.returncode == 2 and "--output" in bad.stderr and "Traceback" not in bad.stderr
    fixed = command(
        [
            "--model",
            "report_support.tiny_models:returns_dict",
            "--output",
            "logits",
            "--size",
            "32",
            "--images",
            "imgs",
            "--out",
            "y.json",
            "--methods",
            "saliency",
            "--checks",
            "cost",
            "--no-progress",
        ],
        tmp_path,
    )
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    layer = command([*BASE, "--images", "imgs", "--out", "z.json", "--layer", "1.relu9"], tmp_path)
    assert layer.returncode == 2 and "1.relu3" in layer.stderr


def test_the_command_shows_maps_of_the_first_good_images(tmp_path):
    names = write_pngs(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "a-broken.png").write_bytes(b"not a png")       # sorts first: skipped, not shown
    done = command([*BASE, "--images", "imgs", "--out", "r.html", "--thumbnails", "2"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    page = (tmp_path / "r.html").read_text()
    maps = page.split("<h2>Maps</h2>")[1].split("<h2>")[0]
    assert maps.count("data:image/png;base64,") == 2 * 3                  # 2 images x 3 methods
    assert all(f"<figcaption>{n}</figcaption>" in maps for n in names[:2])
    assert names[2] not in maps and "a-broken.png" not in maps


def test_intervals_stay_within_what_a_value_can_be():
    from xai_helpers.report import summarise

    values = [0.999, 0.93, 0.998]                    # rank correlations near 1: the t interval reaches past 1
    assert t_interval(values).high > 1
    store = ResultStore()
    for i, v in enumerate(values):
        store.add(Row(f"im{i}", "m", "randomisation", v, {}))
    cell = summarise(store, ["m"], [get_check("randomisation")])["m", "randomisation"]
    assert cell.interval.high == 1.0 and cell.interval.low == t_interval(values).low and cell.n == 3
