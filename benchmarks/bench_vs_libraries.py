"""xai_helpers against captum, pytorch-grad-cam, torchcam and zennit: same maps? how fast?

Every method of :func:`xai_helpers.registry.methods` that one of the peer libraries also implements
is paired with the peers' versions (see ``PAIRS`` below). For each pair the benchmark

1. checks agreement first: Pearson ``r`` (and the largest absolute difference) of the two results
   after the *same* post-processing (``--compare``): CAMs and occlusion as maps, ReLU'd and min-max
   scaled per image (what pytorch-grad-cam and torchcam return; ours returns raw unscaled maps under
   the output contract); input-space methods raw and signed, ``[B, C, H, W]``;
2. then times batch 1 and batch 8, interleaved: each round calls ours, then every peer, then a
   ``no_grad`` forward of the same batch (the order reversed every other round, so that a slow
   drift of the machine hits everyone alike); each call is timed ``--repeats`` times by
   ``torch.utils.benchmark.Timer`` (``benchmarks/timing.py``, after the Timer's own two warm-up
   calls), the per-call time is the median over ``--rounds`` rounds.

It prints, per method and batch, ``peer/ours`` (> 1: ours is faster) for the fastest peer and for
every peer, and ``ours/forward`` (the cost of the explanation in forward passes). Everything is
measured in one run.

Models: ``xai_helpers.models.efficientnet_lite0`` (ReLU6, the book's model), and torchvision's
``resnet18(weights=None)`` for the peers that only handle ``nn.ReLU`` (captum's guided backprop and
deconvolution hook ``nn.ReLU`` only and leave ReLU6 with its plain gradient; pytorch-grad-cam's
guided backprop replaces ``nn.ReLU`` modules only).

The peers are *not* dependencies of the book; install them outside its environment, for example::

    .venv/bin/pip install --no-deps --target /tmp/peers captum grad-cam torchcam zennit ttach \\
        opencv-python-headless tqdm scikit-learn joblib threadpoolctl cloudpickle narwhals
    OMP_NUM_THREADS=2 PYTHONPATH=/tmp/peers:. .venv/bin/python benchmarks/bench_vs_libraries.py

Whatever is missing is skipped with a printed line. ``--size`` (default 224), ``--batches``,
``--only`` (method names) shrink the run for a smoke test, e.g. ``--repeats 1 --rounds 1 --size 64``.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import os
import statistics
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from timing import seconds_per_call
from torch import nn

from xai_helpers import registry
from xai_helpers.core import find_last_conv_layer
from xai_helpers.data import sample_image
from xai_helpers.evaluation import OutputOf, deletion_and_insertion
from xai_helpers.models import efficientnet_lite0
from xai_helpers.relevance.composites import Composite
from xai_helpers.relevance.rules import EpsilonRule, GammaRule, ZBoxRule

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's Score-CAM draws a progress bar per call
Fn = Callable[[], torch.Tensor]
DISAGREES = 0.1   # a peer whose result correlates with ours at r <= this is reported, not timed
PHOTOS = ("cat", "coffee", "astronaut", "rocket", "motorcycle", "horse", "camera", "coins")


# ----------------------------------------------------------------------------------------------------
# Setting: model, images, targets, layer
# ----------------------------------------------------------------------------------------------------
@dataclass
class Setting:
    """One model and one batch: what every implementation of a pair is called on."""

    model_name: str
    model: nn.Module
    x: torch.Tensor            # [B, 3, H, W] in [0, 1]
    targets: list[int]         # [B] the predicted classes
    layer: str                 # the CAM layer (dotted name)

    @property
    def layer_module(self) -> nn.Module:
        return dict(self.model.named_modules())[self.layer]

    @property
    def t(self) -> torch.Tensor:
        return torch.tensor(self.targets)


def make_setting(model_name: str, model: nn.Module, batch: int, size: int) -> Setting:
    images = [sample_image(PHOTOS[i % len(PHOTOS)], size=size) for i in range(batch)]
    x = torch.cat(images)
    with torch.no_grad():
        targets = model(x).argmax(1).tolist()
    layer = find_last_conv_layer(model, input_size=size)
    return Setting(model_name, model, x, targets, layer)


# ----------------------------------------------------------------------------------------------------
# Post-processing for the agreement check (the same for both sides)
# ----------------------------------------------------------------------------------------------------
def as_map(a: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, H, W]`` or ``[B, h, w]`` or ``[B, 1|C, H, W]`` (identical channels) -> ReLU'd, min-max
    scaled ``[B, H, W]`` at the input's resolution: the post-processing the CAM libraries apply."""
    a = torch.as_tensor(a).detach().double()
    if a.dim() == 4:
        a = a[:, 0]
    if tuple(a.shape[-2:]) != size:
        a = F.interpolate(a[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    a = a.clamp_min(0)
    low = a.flatten(1).amin(1).view(-1, 1, 1)
    high = a.flatten(1).amax(1).view(-1, 1, 1)
    return (a - low) / (high - low).clamp_min(1e-12)


def agreement(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Pearson r and max |a - b| over all values (both flattened, float64)."""
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    r = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    return r, float((a - b).abs().max())


# ----------------------------------------------------------------------------------------------------
# Pairs
# ----------------------------------------------------------------------------------------------------
@dataclass
class Pair:
    """Our method (a registry name and options) against peer implementations on one setting."""

    label: str
    method: str                                     # registry name
    model: str                                      # "lite0" or "resnet18"
    options: dict = field(default_factory=dict)     # passed to registry.attribute
    compare: str = "raw"                            # "raw" (signed, as returned) or "map"
    peers: Callable[[Setting], dict[str, Fn]] = lambda s: {}
    ours: Callable[[Setting], Fn] | None = None     # overrides the registry call (metrics)
    batches_only: Sequence[int] | None = None       # peers that only handle some batch sizes
    layer: str | None = None                        # the CAM layer, if not find_last_conv_layer's
    note: str = ""


def has(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except Exception:  # noqa: BLE001 -- any import failure means "skip this peer"
        return False


# --- pytorch-grad-cam and torchcam CAMs -----------------------------------------------------------
def pgc_cam(cls_name: str, batch_size: int | None = None) -> Callable[[Setting], Fn]:
    def build(s: Setting) -> Fn:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = getattr(pytorch_grad_cam, cls_name)(model=s.model, target_layers=[s.layer_module])
        if batch_size is not None:
            cam.batch_size = batch_size
        targets = [ClassifierOutputTarget(t) for t in s.targets]
        return lambda: torch.from_numpy(cam(input_tensor=s.x, targets=targets))
    return build


def torchcam_cam(cls_name: str, **kwargs) -> Callable[[Setting], Fn]:
    def build(s: Setting) -> Fn:
        import torchcam.methods

        extractor = getattr(torchcam.methods, cls_name)(s.model, s.layer, input_shape=tuple(s.x.shape[1:]), **kwargs)
        gradient_based = cls_name != "ScoreCAM"

        def run() -> torch.Tensor:
            with torch.set_grad_enabled(gradient_based):
                scores = s.model(s.x)
            cams = extractor(class_idx=list(s.targets), scores=scores)
            # torchcam returns the low-resolution map; the upsampling is part of its cost
            return F.interpolate(cams[0][:, None], size=s.x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return run
    return build


def captum_layer_grad_cam(s: Setting) -> Fn:
    from captum.attr import LayerAttribution, LayerGradCam

    gc = LayerGradCam(s.model, s.layer_module)

    def run() -> torch.Tensor:
        a = gc.attribute(s.x, target=s.t, relu_attributions=True)
        return LayerAttribution.interpolate(a, tuple(s.x.shape[-2:]), interpolate_mode="bilinear")[:, 0]
    return run


def cam_peers(pgc: str | None, tc: str | None, captum: bool = False, batch_sizes: Sequence[int] = (),
              **tc_kwargs) -> Callable[[Setting], dict[str, Fn]]:
    """The peers' CAM; with ``batch_sizes`` (Score-CAM), one peer entry per masked-image batch size."""
    def build(s: Setting) -> dict[str, Fn]:
        out: dict[str, Fn] = {}
        for b in batch_sizes or [32]:
            tag = f" b{b}" if batch_sizes else ""
            if pgc and has("pytorch_grad_cam"):
                out["pytorch-grad-cam" + tag] = pgc_cam(pgc, batch_size=b)(s)
            if tc and has("torchcam.methods"):
                out["torchcam" + tag] = torchcam_cam(tc, **tc_kwargs, **({"batch_size": b} if batch_sizes else {}))(s)
        if captum and has("captum.attr"):
            out["captum"] = captum_layer_grad_cam(s)
        return out
    return build


# --- captum ---------------------------------------------------------------------------------------
def captum_peer(build_fn: Callable[[Setting], Fn]) -> Callable[[Setting], dict[str, Fn]]:
    return lambda s: {"captum": build_fn(s)} if has("captum.attr") else {}


def captum_simple(cls_name: str, **attr_kwargs) -> Callable[[Setting], Fn]:
    def build(s: Setting) -> Fn:
        import captum.attr

        method = getattr(captum.attr, cls_name)(s.model)
        return lambda: method.attribute(s.x.clone(), target=s.t, **attr_kwargs).detach()
    return build


def captum_occlusion(window: int, stride: int, baseline: float, per_eval: int) -> Callable[[Setting], Fn]:
    def build(s: Setting) -> Fn:
        from captum.attr import Occlusion

        occ = Occlusion(s.model)

        def run() -> torch.Tensor:
            with torch.no_grad():
                a = occ.attribute(s.x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                                  baselines=baseline, target=s.t, perturbations_per_eval=per_eval)
            return a[:, 0]  # the same value in every channel
        return run
    return build


def occlusion_pair(window: int, stride: int, baseline: float = 0.5) -> Pair:
    """Our occlusion against captum's at 64 and at 4 occluded images per forward pass."""
    return Pair(f"occlusion {window}/{stride}, grey", "occlusion", "lite0", compare="raw",
                options=dict(window=window, stride=stride, baseline=baseline),
                peers=lambda s: ({f"captum b{b}": captum_occlusion(window, stride, baseline, b)(s) for b in (64, 4)}
                                 if has("captum.attr") else {}))


def captum_guided_grad_cam(s: Setting) -> Fn:
    from captum.attr import GuidedGradCam

    ggc = GuidedGradCam(s.model, s.layer_module)
    # captum upsamples the CAM with "nearest" by default; ours (and the paper's figure) bilinearly
    return lambda: ggc.attribute(s.x.clone(), target=s.t, interpolate_mode="bilinear").detach()


def captum_smoothgrad(n_samples: int, noise: float) -> Callable[[Setting], Fn]:
    def build(s: Setting) -> Fn:
        from captum.attr import NoiseTunnel, Saliency

        nt = NoiseTunnel(Saliency(s.model))
        x = s.x
        # ours: sigma = noise * (max - min) of each image; captum takes one absolute stdev per call
        spread = x.flatten(1).amax(1) - x.flatten(1).amin(1)
        sigma = float(noise * spread.mean())
        return lambda: nt.attribute(x.clone(), nt_type="smoothgrad", nt_samples=n_samples, stdevs=sigma,
                                    target=s.t, abs=False, nt_samples_batch_size=16).detach()
    return build


def captum_ig(steps: int, batch_size: int) -> Callable[[Setting], Fn]:
    def build(s: Setting) -> Fn:
        from captum.attr import IntegratedGradients

        ig = IntegratedGradients(s.model)
        return lambda: ig.attribute(s.x, target=s.t, n_steps=steps, method="gausslegendre",
                                    internal_batch_size=batch_size).detach()
    return build


def captum_lrp(s: Setting) -> Fn:
    from captum.attr import LRP

    lrp = LRP(s.model)
    return lambda: lrp.attribute(s.x.clone(), target=s.t).detach()


def lrp_peers(s: Setting) -> dict[str, Fn]:
    out: dict[str, Fn] = {}
    if has("zennit.composites"):
        out["zennit"] = zennit_lrp(s)
    if has("captum.attr"):
        out["captum"] = captum_lrp(s)
    return out


def zennit_lrp(s: Setting) -> Fn:
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonGammaBox

    canonizers = [SequentialMergeBatchNorm()]
    low, high = torch.zeros_like(s.x), torch.ones_like(s.x)
    normalize = getattr(s.model, "normalize", None)
    if normalize is not None:  # the z^B bounds live where the first conv sees the image
        low, high = normalize(low), normalize(high)
    if s.model_name == "resnet18" and has("zennit.torchvision"):
        from zennit.torchvision import ResNetCanonizer
        canonizers = [ResNetCanonizer()]
    composite = EpsilonGammaBox(low=low, high=high, canonizers=canonizers)
    one_hot = torch.eye(1000)[s.t]

    def run() -> torch.Tensor:
        with Gradient(model=s.model, composite=composite) as attributor:
            _, relevance = attributor(s.x.clone(), one_hot)
        return relevance.detach()
    return run


def zennit_like_composite() -> Composite:
    """Our composite with zennit's EpsilonGammaBox layer assignment: z^B first, gamma=0.25 for every
    other convolution, epsilon=1e-6 for every fully connected layer."""
    return Composite(default=GammaRule(0.25), first=ZBoxRule(0.0, 1.0), by_type={nn.Linear: EpsilonRule(1e-6)})


# --- guided backprop (pytorch-grad-cam: ReLU modules only, first image of the batch only) -------
def pgc_guided(s: Setting) -> Fn:
    from pytorch_grad_cam import GuidedBackpropReLUModel

    model = copy.deepcopy(s.model)  # it swaps the model's ReLU modules in and out
    gb = GuidedBackpropReLUModel(model=model, device=torch.device("cpu"))
    return lambda: torch.from_numpy(gb(s.x.clone(), target_category=s.targets[0])).permute(2, 0, 1)[None]


def guided_peers(s: Setting) -> dict[str, Fn]:
    out: dict[str, Fn] = {}
    if has("captum.attr"):
        out["captum"] = captum_simple("GuidedBackprop")(s)
    if has("pytorch_grad_cam") and s.x.shape[0] == 1:
        out["pytorch-grad-cam"] = pgc_guided(s)
    return out


# --- deletion + insertion --------------------------------------------------------------------------
METRIC_STEPS = 20


def ours_deletion_insertion(chunk_size: int | None) -> Callable[[Setting], Fn]:
    """Our curves, ``chunk_size`` images per forward (None: our default, 4 at 224 px on a CPU)."""

    def setting(s: Setting) -> Fn:
        n = s.x.shape[-2] * s.x.shape[-1]
        per_step = -(-n // METRIC_STEPS)  # torchcam's step: ceil(n / steps) pixels

        def run() -> torch.Tensor:
            with OutputOf(s.model, s.x) as seen:   # the CAM's forward pass also scores the unperturbed image
                maps = registry.attribute("grad_cam", s.model, s.x, s.targets, layer=s.layer)
            options = dict(step=per_step, baseline=0.0, score="probability", chunk_size=chunk_size, logits=seen.logits)
            deletion, insertion = deletion_and_insertion(s.model, s.x, maps, s.targets, **options)
            return torch.stack([deletion.auc, insertion.auc], 1)  # [B, 2]
        return run
    return setting


def torchcam_deletion_insertion(s: Setting) -> dict[str, Fn]:
    if not has("torchcam.metrics"):
        return {}
    import torchcam.metrics
    from torchcam.methods import GradCAM

    if not hasattr(torchcam.metrics, "DeletionInsertionMetric"):
        print("  torchcam has no DeletionInsertionMetric (torchcam < 0.5): deletion+insertion skipped")
        return {}
    extractor = GradCAM(s.model, s.layer, input_shape=tuple(s.x.shape[1:]))
    metric = torchcam.metrics.DeletionInsertionMetric(extractor, lambda z: z.softmax(-1), steps=METRIC_STEPS,
                                                      batch_size=32)

    def run() -> torch.Tensor:
        values = []
        for i in range(s.x.shape[0]):  # per image, to get per-image AUCs (the metric keeps only sums)
            metric.reset()
            metric.update(s.x[i : i + 1], class_idx=[s.targets[i]])
            summary = metric.summary()
            values.append([summary["deletion_auc"], summary["insertion_auc"]])
        return torch.tensor(values)
    return {"torchcam": run}


# ----------------------------------------------------------------------------------------------------
PAIRS: list[Pair] = [
    Pair("Grad-CAM", "grad_cam", "lite0", compare="map", peers=cam_peers("GradCAM", "GradCAM", captum=True)),
    Pair("Grad-CAM++", "grad_cam_plus_plus", "lite0", compare="map", peers=cam_peers("GradCAMPlusPlus", "GradCAMpp")),
    Pair("HiResCAM", "hires_cam", "lite0", compare="map", peers=cam_peers("HiResCAM", None)),
    Pair("LayerCAM", "layer_cam", "lite0", compare="map", peers=cam_peers("LayerCAM", "LayerCAM")),
    # The forward-only methods: ours at its default chunk (default_chunk_size, 4 images of 224 px per
    # pass on a CPU); the peers at 32 (64) and at ours' 4, so the fastest peer gets the same batch.
    Pair("Score-CAM (softmax, as peers)", "score_cam", "lite0", compare="map", options=dict(weighting="softmax"),
         peers=cam_peers("ScoreCAM", "ScoreCAM", batch_sizes=(32, 4)),
         note="pytorch-grad-cam upsamples the masks with align_corners=True, ours and torchcam with False"),
    Pair("Score-CAM (increase, default)", "score_cam", "lite0", compare="map", options=dict(weighting="increase"),
         peers=cam_peers("ScoreCAM", "ScoreCAM", batch_sizes=(32, 4)),
         note="different weighting: r is not an agreement check"),
    # A shallow layer: 16 channels at 112 x 112, so the masks, not the forward passes, weigh more.
    Pair("Score-CAM (softmax) at blocks.0", "score_cam", "lite0", compare="map", options=dict(weighting="softmax"),
         peers=cam_peers("ScoreCAM", "ScoreCAM", batch_sizes=(32, 4)), layer="blocks.0"),
    occlusion_pair(16, 8),
    occlusion_pair(112, 56),
    Pair("saliency", "saliency", "lite0", peers=captum_peer(captum_simple("Saliency", abs=False))),
    Pair("deconvnet (ResNet-18)", "deconvnet", "resnet18", peers=captum_peer(captum_simple("Deconvolution"))),
    Pair("guided backprop (ResNet-18)", "guided_backprop", "resnet18", peers=guided_peers),
    Pair("guided Grad-CAM (ResNet-18)", "guided_grad_cam", "resnet18", peers=captum_peer(captum_guided_grad_cam)),
    Pair("SmoothGrad 16 samples", "smoothgrad", "lite0", options=dict(n_samples=16, noise=0.15, chunk_size=16),
         peers=captum_peer(captum_smoothgrad(16, 0.15)), note="independent noise: compare with r(ours, ours seed 1)"),
    Pair("IG 32 steps, Gauss-Legendre", "integrated_gradients", "lite0",
         options=dict(steps=32, chunk_size=32, quadrature="gauss-legendre"), peers=captum_peer(captum_ig(32, 32))),
    Pair("gradient x input", "gradient_x_input", "lite0", peers=captum_peer(captum_simple("InputXGradient"))),
    Pair("LRP, default composites", "lrp", "lite0", peers=lrp_peers, note="different layer assignment"),
    Pair("LRP, zennit's assignment", "lrp", "lite0", options=dict(composite=zennit_like_composite()), peers=lrp_peers),
    Pair("LRP, zennit's assignment (ResNet-18)", "lrp", "resnet18", options=dict(composite=zennit_like_composite()),
         peers=lrp_peers),
    Pair("DeepLIFT (Rescale), black", "deeplift", "lite0", peers=captum_peer(captum_simple("DeepLift"))),
    Pair("DeepLIFT (Rescale), black (ResNet-18)", "deeplift", "resnet18", peers=captum_peer(captum_simple("DeepLift"))),
]
# deletion + insertion is not a registered method: it is the evaluation module, fed by Grad-CAM.
# torchcam runs at its default, 32 perturbed images per forward; ours at its default and at 32.
METRICS = [
    Pair("deletion+insertion AUC (Grad-CAM, 20 steps), defaults", "grad_cam", "lite0", compare="raw",
         peers=torchcam_deletion_insertion, ours=ours_deletion_insertion(None),
         note="ours: default_chunk_size (4 images of 224 px per forward on a CPU); torchcam: 32"),
    Pair("deletion+insertion AUC (Grad-CAM, 20 steps), both 32 per forward", "grad_cam", "lite0", compare="raw",
         peers=torchcam_deletion_insertion, ours=ours_deletion_insertion(32)),
]


# ----------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------
def interleaved(fns: dict[str, Fn], rounds: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, timed round by round in alternating order."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            times[name].append(seconds_per_call(fns[name], repeats))
    return {name: statistics.median(ts) for name, ts in times.items()}


def forward_fn(s: Setting) -> Fn:
    def run() -> torch.Tensor:
        with torch.no_grad():
            return s.model(s.x)
    return run


# ----------------------------------------------------------------------------------------------------
def run_pair(pair: Pair, settings: dict[tuple[str, int], Setting], batches: Sequence[int], args) -> None:
    method = registry.get(pair.method)
    for batch in batches:
        s = settings[(pair.model, batch)]
        if pair.layer is not None:
            s = replace(s, layer=pair.layer)
        if pair.ours is not None:
            ours = pair.ours(s)
        else:
            layer = {"layer": s.layer} if method.needs_layer else {}

            def ours(s: Setting = s, layer: dict = layer) -> torch.Tensor:
                return registry.attribute(pair.method, s.model, s.x, s.targets, **layer, **pair.options)
        try:
            peers = pair.peers(s)
        except Exception as err:  # noqa: BLE001 -- a peer that cannot even be built is reported, not fatal
            print(f"  {pair.label:<40} b{batch}: peers could not be set up: {type(err).__name__}: {err}")
            peers = {}
        if args.peer_parts:
            peers = {name: fn for name, fn in peers.items() if any(part in name for part in args.peer_parts)}
        if not peers:
            print(f"  {pair.label:<40} b{batch}: skipped (no peer installed or applicable)")
            continue
        size = tuple(s.x.shape[-2:])
        post = (lambda a: as_map(a, size)) if pair.compare == "map" else (lambda a: torch.as_tensor(a).double())
        ours_result = post(ours())   # the first call: agreement, and the warm-up
        working: dict[str, Fn] = {}
        lines = []
        for name, fn in peers.items():
            try:
                theirs = post(fn())
            except Exception as err:  # noqa: BLE001 -- e.g. captum LRP on a layer it has no rule for
                lines.append(f"    {name:<17} failed: {type(err).__name__}: {str(err).splitlines()[0][:90]}")
                continue
            if theirs.shape != ours_result.shape:  # a peer that explains the first image only
                mine = ours_result[: theirs.shape[0]]
            else:
                mine = ours_result
            r, diff = agreement(mine, theirs)
            if not r > DISAGREES:   # e.g. captum's LRP on ResNet-18 blows up: a wrong map is not a time to beat
                lines.append(f"    {name:<17} r={r:8.5f}  max|diff|={diff:9.2e}  disagrees: not timed")
                continue
            working[name] = fn
            lines.append(f"    {name:<17} r={r:8.5f}  max|diff|={diff:9.2e}")
        if pair.method == "smoothgrad":
            r, _ = agreement(ours_result, post(registry.attribute("smoothgrad", s.model, s.x, s.targets,
                                                                   **{**pair.options, "seed": 1})))
            lines.append(f"    {'ours, seed 1':<17} r={r:8.5f}  (the noise floor for the r above)")
        print(f"  {pair.label} [{s.model_name}, batch {batch}]" + (f"  ({pair.note})" if pair.note else ""))
        print("\n".join(lines))
        if not working:
            continue
        fns = {"ours": ours, **working, "forward": forward_fn(s)}
        med = interleaved(fns, args.rounds, args.repeats)
        t_ours = med["ours"]
        ratios = {name: med[name] / t_ours for name in working}
        fastest = min(ratios, key=ratios.get)
        every = "  ".join(f"{name} {ratio:5.2f}" for name, ratio in ratios.items())
        print(f"    time: ours {1000 * t_ours:9.1f} ms  ours/forward {t_ours / med['forward']:7.1f}  "
              f"peer/ours: fastest ({fastest}) {ratios[fastest]:5.2f};  {every}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds; the median is reported")
    parser.add_argument("--repeats", type=int, default=1, help="calls per timing within a round")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--only", default="", help="comma-separated registry names (and 'metrics') to run")
    parser.add_argument("--pairs", default="", help="comma-separated pieces of row labels: run only rows whose "
                        "label contains one (e.g. 'softmax' for one of the two Score-CAM rows)")
    parser.add_argument("--peers", default="", help="comma-separated pieces of peer names: time only peers whose "
                        "name contains one (e.g. 'b4': Score-CAM's peers at 4 masked images per forward, "
                        "captum's occlusion at 4 perturbations of each image per forward)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    for module, package in (("captum.attr", "captum"), ("pytorch_grad_cam", "grad-cam"),
                            ("torchcam.methods", "torchcam"), ("zennit.composites", "zennit")):
        if not has(module):
            print(f"skipped peer: {package} is not importable (install it to compare)")
    torch.manual_seed(0)
    batches = [int(b) for b in args.batches.split(",")]
    only = {name for name in args.only.split(",") if name}
    label_parts = [part for part in args.pairs.split(",") if part]
    args.peer_parts = [part for part in args.peers.split(",") if part]   # read by run_pair
    import torchvision

    models = {"lite0": efficientnet_lite0().eval(), "resnet18": torchvision.models.resnet18(weights=None).eval()}
    settings = {(name, b): make_setting(name, model, b, args.size) for name, model in models.items() for b in batches}
    print(f"{args.size}x{args.size} photos, batches {batches}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds x {args.repeats}")
    print("peer/ours > 1: ours is faster.  ours/forward: the method's cost in no_grad forwards of the same batch.")
    registered = {m.name for m in registry.methods()}
    covered = {p.method for p in PAIRS}
    missing = registered - covered
    if missing:
        print(f"registered methods no peer implements here: {', '.join(sorted(missing))}")
    for pair in PAIRS + METRICS:
        key = "metrics" if pair in METRICS else pair.method
        if only and key not in only:
            continue
        if label_parts and not any(part in pair.label for part in label_parts):
            continue
        run_pair(pair, settings, batches, args)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
