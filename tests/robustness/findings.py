"""The book's trained-model findings, each as a function of one seed, for the robustness sweep.

A finding returns its claims: ``{claim: above(value, bar)}`` or ``below(...)``, with the value measured
on the model(s) trained with that seed and the bar that the chapter asserts for every model it
trains. :mod:`sweep` runs every finding over seeds and numerical settings and reports the worst
margin of each claim; a claim belongs in a chapter only where its worst margin is positive.
``measured(value)`` records a value that no chapter asserts (it is printed, without a bar).
Every record keeps its values, bars and margins, so ``sweep.py --table LOG`` prints the table
again from a log.
"""
from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F

from xai_helpers import registry, sanity
from xai_helpers.core import rescale_maps
from xai_helpers.data import make_shapes
from xai_helpers.evaluation import energy_in_mask, pointing_game
from xai_helpers.models import SmallCNN
from xai_helpers.removal import fill_with_mean, noisy_linear_imputation, remove_and_retrain, top_fraction_masks
from xai_helpers.sanity import spearman_rank_correlation
from xai_helpers.stats import bootstrap_interval, paired_difference_interval
from xai_helpers.testbeds import DisconnectedGrid, shape_grids, shape_set
from xai_helpers.training import accuracy, predict, train_classifier, train_small_cnn

Claims = dict[str, dict[str, float | str]]
FINDINGS: dict[str, Callable[[int], Claims]] = {}


def finding(name: str) -> Callable[[Callable[[int], Claims]], Callable[[int], Claims]]:
    def register(fn: Callable[[int], Claims]) -> Callable[[int], Claims]:
        FINDINGS[name] = fn
        return fn
    return register


def above(value: float, bar: float) -> dict[str, float | str]:
    return {"value": float(value), "bar": bar, "op": ">", "margin": float(value) - bar}


def below(value: float, bar: float) -> dict[str, float | str]:
    return {"value": float(value), "bar": bar, "op": "<", "margin": bar - float(value)}


def measured(value: float) -> dict[str, float | str]:
    return {"value": float(value), "bar": float("nan"), "op": "=", "margin": float("nan")}


def run_findings(only: str, seeds: list[int], skip: set[tuple[str, ...]] = frozenset()) -> None:
    wanted = [w for w in only.split(",") if w]
    for name, fn in FINDINGS.items():
        if wanted and not any(w in name for w in wanted):
            continue
        for seed in seeds:
            if (name, str(seed)) in skip:
                continue
            start = time.perf_counter()
            claims = fn(seed)
            print(json.dumps({"finding": name, "seed": seed, "claims": claims,
                              "seconds": round(time.perf_counter() - start, 1)}), flush=True)


# ----------------------------------------------------------------------------- data, made once per process
@lru_cache(maxsize=None)
def shapes():
    """Chapters 14 and 15: light objects on darker backgrounds."""
    return make_shapes(3000, size=32, seed=1), make_shapes(600, size=32, seed=2)


@lru_cache(maxsize=None)
def polarity_shapes():
    """Chapter 15: the object lighter in half of the images, darker in the other half."""
    return shape_set(3000, seed=1, size=32), shape_set(400, seed=2, size=32)


@lru_cache(maxsize=None)
def cue_shapes():
    """Chapter 9: a background colour that goes with the class, and test sets with and without it."""
    return (make_shapes(3000, size=32, seed=0, spurious_cue=True), make_shapes(3000, size=32, seed=3),
            make_shapes(600, size=32, seed=1, spurious_cue=True), make_shapes(600, size=32, seed=2))


# ----------------------------------------------------------------------------- 1. training converges
def explained_shapes(model, test, n: int):
    """The first ``n`` shapes of ``test`` that ``model`` classifies correctly: images, labels, masks."""
    correct = (predict(model, test.images) == test.labels).nonzero()[:, 0][:n]
    return test.images[correct], test.labels[correct], test.masks[correct]


@lru_cache(maxsize=None)
def shapes_model_of(seed: int):
    train, _ = shapes()
    return train_small_cnn(train.images, train.labels, seed=seed)


@lru_cache(maxsize=None)
def polarity_model_of(seed: int):
    train, _ = polarity_shapes()
    return train_small_cnn(train.images, train.labels, seed=seed, epochs=30)


@finding("recipe: shapes model (14, 15)")
def shapes_model(seed: int) -> Claims:
    _, test = shapes()
    return {"test accuracy": above(accuracy(shapes_model_of(seed), test.images, test.labels), 0.9)}


@finding("recipe: random-polarity model (15)")
def polarity_model(seed: int) -> Claims:
    _, test = polarity_shapes()
    return {"test accuracy": above(accuracy(polarity_model_of(seed), test.images, test.labels), 0.85)}


# ----------------------------------------------------------------------------- 2. chapter 15's findings
PIXEL = {"saliency": {}, "guided_backprop": {}, "gradient_x_input": {},
         "integrated_gradients": dict(steps=16, baseline=0.5, chunk_size=256)}


def heat(name, net, x, target, **options):
    return registry.attribute(name, net, x, target, heatmap=True, **options)


@finding("15: DiFull and the grid pointing game")
def difull(seed: int) -> Claims:
    _, test = shapes()
    model = shapes_model_of(seed)
    grids = shape_grids(test, 36, seed=0)
    grid_of, cell_of = torch.nonzero(grids.classes >= 0, as_tuple=True)
    x, classes, masks = grids.images[grid_of], grids.classes[grid_of, cell_of], grids.masks[grid_of, cell_of]
    disconnected = DisconnectedGrid(model).eval()
    cell_targets = cell_of * 3 + classes
    score = lambda maps: bootstrap_interval(energy_in_mask(maps, masks), groups=grid_of)  # noqa: E731
    claims: Claims = {}
    for name, options in PIXEL.items():
        claims[f"DiFull {name} low"] = above(score(heat(name, disconnected, x, cell_targets, **options)).low, 0.99)
    for layer in ["relu1", "relu2", "relu3"]:
        inner = "model." + layer
        claims[f"DiFull layer_cam {layer} low"] = above(
            score(heat("layer_cam", disconnected, x, cell_targets, layer=inner)).low, 0.95)
        claims[f"DiFull grad_cam {layer} high"] = below(
            score(heat("grad_cam", disconnected, x, cell_targets, layer=inner)).high, 0.8)
    connected = {f"{name} input": heat(name, model, x, classes, **options) for name, options in PIXEL.items()}
    connected |= {f"layer_cam {layer}": heat("layer_cam", model, x, classes, layer=layer)
                  for layer in ["relu1", "relu2", "relu3"]}
    deep = heat("grad_cam", model, x, classes, layer="relu3")
    shallow = heat("grad_cam", model, x, classes, layer="relu1")
    claims["GridPG grad_cam relu3 - relu1 low"] = above(
        bootstrap_interval(energy_in_mask(deep, masks) - energy_in_mask(shallow, masks), groups=grid_of).low, 0.1)
    for name, maps in connected.items():
        claims[f"GridPG {name} high"] = below(score(maps).high, 0.6 if name == "layer_cam relu3" else 0.5)
    middle = heat("grad_cam", model, x, classes, layer="relu2")
    others = max(score(m).high for m in [*connected.values(), shallow, middle])
    claims["GridPG grad_cam relu3 low - best other high"] = above(score(deep).low - others, 0.0)
    return claims


@finding("15: data randomisation")
def data_randomisation(seed: int) -> Claims:
    train, test = shapes()
    model = shapes_model_of(seed)
    pair = sanity.label_randomization(lambda: SmallCNN(num_classes=3), train.images[:96], train.labels[:96], seed=seed)
    memoriser, yardstick = pair.memoriser, pair.yardstick
    claims: Claims = {
        "memoriser memorises": above(accuracy(memoriser, train.images[:96], pair.permuted), 0.999),
        "yardstick fits its 96": above(accuracy(yardstick, train.images[:96], train.labels[:96]), 0.999),
        "memoriser test accuracy mean": below(
            bootstrap_interval((predict(memoriser, test.images) == test.labels).float()).mean, 0.45),
        "memoriser epochs": measured(pair.epochs[0]),
        "yardstick epochs": measured(pair.epochs[1]),
    }
    probe, labels = test.images[:100], test.labels[:100]
    grey = F.pad(probe.mean(1, keepdim=True), (1, 1, 1, 1), mode="replicate")
    sobel = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    edges = (F.conv2d(grey, sobel[None, None]) ** 2 + F.conv2d(grey, sobel.T[None, None]) ** 2).sqrt()[:, 0]
    effect = {}
    for name, options in [*PIXEL.items(), ("grad_cam", dict(layer="relu3"))]:
        true_maps = heat(name, model, probe, labels, **options)
        memorised = heat(name, memoriser, probe, labels, **options)
        similarity = spearman_rank_correlation(true_maps, memorised)
        unchanged = spearman_rank_correlation(true_maps, heat(name, yardstick, probe, labels, **options))
        effect[name] = paired_difference_interval(unchanged, similarity)
        if name == "grad_cam":
            claims["label effect grad_cam low"] = above(effect[name].low, 0.0)
            claims["memoriser vs edges grad_cam low"] = measured(
                bootstrap_interval(spearman_rank_correlation(memorised, edges)).low)
            continue
        claims[f"|label effect {name} mean|"] = below(abs(effect[name].mean), 0.2)
        claims[f"similarity {name} mean"] = above(bootstrap_interval(similarity).mean, 0.3)
        claims[f"memoriser vs edges {name} low"] = above(
            bootstrap_interval(spearman_rank_correlation(memorised, edges)).low, 0.0)
    pixel = list(PIXEL)
    claims["grad_cam effect low - pixel highs"] = above(
        effect["grad_cam"].low - max(effect[n].high for n in pixel), 0.0)
    claims["grad_cam effect / largest pixel mean"] = above(
        effect["grad_cam"].mean / max(effect[n].mean for n in pixel), 2.0)
    return claims


@finding("15: remove and retrain")
def roar(seed: int) -> Claims:
    train, test = shapes()
    model = shapes_model_of(seed)
    x, y = train.images[:2000], train.labels[:2000]
    mean = x.mean(dim=(0, 2, 3))

    def importance(name, images, labels):
        if name == "random":
            return torch.zeros(images.shape[0], 32, 32)
        options = dict(layer="relu3") if name == "grad_cam" else {}
        return torch.cat([heat(name, model, images[i:i + 500], labels[i:i + 500], **options)
                          for i in range(0, len(images), 500)])

    roar_result, nli, claims = {}, {}, {}
    for name in ["random", "saliency", "grad_cam"]:
        test_maps = importance(name, test.images, test.labels)
        removed = top_fraction_masks(test_maps, 0.3, seed=seed)
        nli[name] = (predict(model, noisy_linear_imputation(test.images, removed, seed=seed)) == test.labels).float()
        if name == "random":
            mean_fill = (predict(model, fill_with_mean(test.images, removed, mean)) == test.labels).float()
            claims["mean fill, random removal, high"] = below(bootstrap_interval(mean_fill).high, 0.5)
        if name != "saliency":
            roar_result[name] = remove_and_retrain(
                lambda c: SmallCNN(num_classes=3, in_channels=c), x, y, importance(name, x, y),
                test.images, test.labels, test_maps, 0.3, mask_train_size=1000, seed=seed)
    claims["mask-only grad_cam low"] = above(bootstrap_interval(roar_result["grad_cam"].mask_only.float()).low, 0.5)
    claims["mask-only random high"] = below(bootstrap_interval(roar_result["random"].mask_only.float()).high, 0.45)
    claims["mask-only grad_cam - random low"] = above(paired_difference_interval(
        roar_result["grad_cam"].mask_only.float(), roar_result["random"].mask_only.float()).low, 0.15)
    gap = paired_difference_interval(roar_result["grad_cam"].retrained.float(), roar_result["random"].retrained.float())
    claims["retrained grad_cam - random mean"] = below(gap.mean, 0.0)
    claims["retrained grad_cam - random high"] = measured(gap.high)
    claims["ROAD fill, random removal, low"] = above(bootstrap_interval(nli["random"]).low, 0.65)
    for name in ["saliency", "grad_cam"]:
        claims[f"ROAD random - {name} low"] = above(paired_difference_interval(nli["random"], nli[name]).low, 0.15)
    return claims


@finding("15: random polarity")
def polarity(seed: int) -> Claims:
    train, test = shapes()
    p_train, p_test = polarity_shapes()
    balanced = polarity_model_of(seed)
    correct = predict(balanced, p_test.images) == p_test.labels
    claims: Claims = {"accuracy low": above(bootstrap_interval(correct.float()).low, 0.75)}
    kept = correct.nonzero()[:, 0]
    x, y, masks = p_test.images[kept], p_test.labels[kept], p_test.masks[kept]
    lighter = p_test.object_lighter[kept]
    methods = PIXEL | {"smoothgrad": dict(n_samples=16, seed=0), "grad_cam": dict(layer="relu3")}
    maps = {name: heat(name, balanced, x, y, **options) for name, options in methods.items()}
    hits = {name: pointing_game(m, masks).float() for name, m in maps.items()}
    brightness, darkness = rescale_maps(x.mean(1)), rescale_maps(1 - x.mean(1))
    claims["brightness control = lighter"] = above(float(torch.equal(pointing_game(brightness, masks), lighter)), 0.5)
    for name, h in hits.items():
        claims[f"strict {name} mean"] = measured(h.mean())
    claims["strict gradient_x_input mean"] = below(hits["gradient_x_input"].mean(), 0.65)
    claims["strict integrated_gradients mean"] = below(hits["integrated_gradients"].mean(), 0.7)
    model = shapes_model_of(seed)
    light_on_dark = (predict(model, test.images) == test.labels).nonzero()[:, 0]
    for name in ["gradient_x_input", "integrated_gradients", "grad_cam"]:
        lod = heat(name, model, test.images[light_on_dark], test.labels[light_on_dark], **methods[name])
        lod_hits = pointing_game(lod, test.masks[light_on_dark]).float()
        if name == "grad_cam":
            claims["light-on-dark grad_cam mean"] = measured(lod_hits.mean())
            continue
        claims[f"light-on-dark {name} mean"] = above(lod_hits.mean(), 0.75)
        claims[f"light-on-dark - random polarity {name}"] = above(lod_hits.mean() - hits[name].mean(), 0.15)
    claims["gradient_x_input lighter - darker"] = above(
        hits["gradient_x_input"][lighter].mean() - hits["gradient_x_input"][~lighter].mean(), 0.3)
    on_lighter, on_darker = hits["guided_backprop"][lighter].mean(), hits["guided_backprop"][~lighter].mean()
    claims["guided_backprop |lighter - darker|"] = measured(abs(on_lighter - on_darker))
    control_best = max(bootstrap_interval(pointing_game(c, masks, tolerance=2).float()).high
                       for c in (brightness, darkness))
    for name, m in maps.items():
        claims[f"within 2 px {name} low - control"] = above(
            bootstrap_interval(pointing_game(m, masks, tolerance=2).float()).low - control_best, 0.0)
    return claims


# ----------------------------------------------------------------------------- 3. chapter 14 (evaluation) on shapes

CASCADE = ["fc", ["conv3", "bn3"], ["conv2", "bn2"], ["conv1", "bn1"]]


def shape_methods() -> dict[str, Callable]:
    """Chapter 13's lineup (every registered method but deconvnet and the model-agnostic ones), as
    (model, x, target) -> [B, H, W] heatmaps, with chapter 14's settings, keyed by registry name."""
    options = {"score_cam": dict(layer="relu3", chunk_size=4), "occlusion": dict(window=8, stride=4, chunk_size=4),
               "smoothgrad": dict(n_samples=16, seed=0), "integrated_gradients": dict(steps=16, chunk_size=16)}
    lineup = [m for m in registry.methods() if m.name != "deconvnet" and m.family != "blackbox"]
    return {m.name: registry.heatmap_method(m.name, **options.get(m.name, {"layer": "relu3"} if m.needs_layer else {}))
            for m in lineup}


@finding("14: localisation on shapes")
def localisation(seed: int) -> Claims:
    _, test = shapes_13()
    model = shapes_model_of(seed)
    x, y, masks = explained_shapes(model, test, 96)
    methods = shape_methods()
    maps = {name: method(model, x, y) for name, method in methods.items()}
    maps["brightness"] = rescale_maps(x.mean(1))
    hits = {name: pointing_game(m, masks).float() for name, m in maps.items()}
    shares = {name: energy_in_mask(m, masks) for name, m in maps.items()}
    claims: Claims = {"brightness pointing": above(hits["brightness"].mean(), 0.9)}
    claims["brightness pointing - best method"] = above(
        hits["brightness"].mean() - max(h.mean() for n, h in hits.items() if n != "brightness"), -1e-9)
    blank = {name: int((m.flatten(1).amax(1) == 0).sum()) for name, m in maps.items()}
    claims["score_cam blank maps"] = measured(blank["score_cam"])  # the chapter: >= 10 on 3 of its 5 models
    for c in ["grad_cam", "grad_cam_plus_plus", "hires_cam", "layer_cam"]:
        claims[f"{c} blank maps"] = below(blank[c], 0.5)
    for other in ["grad_cam", "guided_backprop"]:
        gain = paired_difference_interval(shares["guided_grad_cam"], shares[other])
        claims[f"energy guided_grad_cam - {other} low"] = above(gain.low, 0.0)
    # Exercise 2: a tolerance of 4 pixels.
    tolerant = {name: pointing_game(m, masks, tolerance=4).float().mean() for name, m in maps.items()}
    gain = {name: float(tolerant[name] - hits[name].mean()) for name in maps}
    claims["saliency gain"] = above(gain["saliency"], 0.2)
    claims["saliency tolerant"] = above(tolerant["saliency"], 0.8)
    for c in ["grad_cam", "grad_cam_plus_plus", "hires_cam", "layer_cam", "guided_backprop", "guided_grad_cam"]:
        claims[f"{c} tolerant"] = above(tolerant[c], 0.9)
    claims["IG strict pointing"] = above(hits["integrated_gradients"].mean(), 0.7)
    claims["IG gain"] = below(gain["integrated_gradients"], 0.15)
    claims["saliency gain - IG gain"] = above(gain["saliency"] - gain["integrated_gradients"], 0.2)
    claims["saliency gain - score_cam gain"] = above(gain["saliency"] - gain["score_cam"], 0.05)
    claims["score_cam tolerant"] = measured(tolerant["score_cam"])
    misses = ~hits["score_cam"].bool()
    blank_maps = maps["score_cam"].flatten(1).amax(1) == 0
    rescued = pointing_game(maps["score_cam"], masks, tolerance=4)[blank_maps]
    if blank_maps.sum() >= 10:  # the chapter's claims are about the models with many blank maps
        claims["score_cam blank share of misses"] = above(float((blank_maps & misses).sum() / misses.sum()), 0.2)
        claims["score_cam blank rescued share"] = below(float(rescued.float().mean()), 0.25)
    random = torch.rand(masks.shape, generator=torch.Generator().manual_seed(0))
    claims["random gain"] = above(float(pointing_game(random, masks, tolerance=4).float().mean()
                                        - pointing_game(random, masks).float().mean()), 0.15)
    # Randomisation, top-down cascade: Spearman after the top step (fc) and after all four.
    result = sanity.model_randomization_test(model, x[:16], y[:16], methods, CASCADE, seed=0)
    for name, rho in result.spearman.items():
        top = float(rho[1].mean())
        if name in ("grad_cam", "hires_cam", "guided_grad_cam"):
            claims[f"|spearman after fc|: {name}"] = below(abs(top), 0.6)
        elif name == "score_cam":
            claims[f"|spearman after fc|: {name}"] = below(abs(top), 0.7)
        elif name in ("grad_cam_plus_plus", "layer_cam"):
            claims[f"spearman after fc: {name}"] = above(top, 0.85)
        elif name in ("guided_backprop", "lrp"):
            claims[f"spearman after fc: {name}"] = above(top, 0.65)
        elif name in ("saliency", "smoothgrad", "integrated_gradients", "gradient_x_input", "deeplift"):
            claims[f"spearman after fc: {name}"] = above(top, 0.3)
        else:
            claims[f"spearman after fc: {name}"] = measured(top)
        claims[f"spearman after all: {name}"] = measured(rho[-1].mean())
    return claims


@lru_cache(maxsize=None)
def shapes_13():
    return make_shapes(3000, size=32, seed=1), make_shapes(400, size=32, seed=2)


@finding("14: a planted cue (exercise 3)")
def cued(seed: int) -> Claims:
    train, test = shapes_13()
    cued_train = make_shapes(3000, size=32, seed=1, spurious_cue=True)
    cued_test = make_shapes(400, size=32, seed=2, spurious_cue=True)
    net = train_small_cnn(cued_train.images, cued_train.labels, seed=seed)
    claims: Claims = {"cued accuracy": above(accuracy(net, cued_test.images, cued_test.labels), 0.95),
                      "clean accuracy": below(accuracy(net, test.images, test.labels), 0.45)}
    right = (predict(net, cued_test.images) == cued_test.labels).nonzero()[:, 0][:96]
    masks = cued_test.masks[right]
    share = float(masks.float().mean())
    for name, method in shape_methods().items():
        e = float(energy_in_mask(method(net, cued_test.images[right], cued_test.labels[right]), masks).mean())
        multiplying = name in ("gradient_x_input", "integrated_gradients", "deeplift")
        cam = name in ("grad_cam", "grad_cam_plus_plus", "hires_cam", "layer_cam")
        claims[f"energy / object share: {name}"] = below(e / share, 1.75 if multiplying else 0.8 if cam else 1.0)
    return claims


# ----------------------------------------------------------------------------- 4. chapter 9
@finding("9: the shortcut and its fix")
def shortcut(seed: int) -> Claims:
    cued_train, clean_train, cued_test, clean_test = cue_shapes()
    partly_train = make_shapes(3000, size=32, seed=0, spurious_cue=True, cue_strength=0.8)
    object_share = float(clean_test.masks.float().mean())
    result = {}
    for name, data in [("biased", cued_train), ("fixed", clean_train), ("partly", partly_train)]:
        net = train_small_cnn(data.images, data.labels, seed=seed)
        predicted = predict(net, clean_test.images)
        maps = registry.attribute("grad_cam", net, clean_test.images, predicted, layer="relu3")
        result[name] = dict(cued=accuracy(net, cued_test.images, cued_test.labels),
                            clean=accuracy(net, clean_test.images, clean_test.labels),
                            energy=float(energy_in_mask(maps, clean_test.masks).mean()),
                            peak=float(pointing_game(maps, clean_test.masks).float().mean()))
    b, f, p = result["biased"], result["fixed"], result["partly"]
    return {"biased: with cue": above(b["cued"], 0.98), "biased: without cue": below(b["clean"], 0.45),
            "biased: energy / object share": below(b["energy"] / object_share, 1.0),
            "fixed: without cue": above(f["clean"], 0.9), "fixed: with cue": above(f["cued"], 0.9),
            "fixed / biased energy": above(f["energy"] / b["energy"], 2.0),
            "fixed energy / object share": above(f["energy"] / object_share, 2.0),
            "fixed - biased peak": above(f["peak"] - b["peak"], 0.3),
            "partly: with cue": above(p["cued"], 0.95), "partly: without cue": above(p["clean"], 0.6),
            "fixed - partly, without cue": above(f["clean"] - p["clean"], 0.0),
            "partly energy / object share": above(p["energy"] / object_share, 2.0),
            "partly / biased energy": above(p["energy"] / b["energy"], 2.0)}


# ----------------------------------------------------------------------------- 5. the reader's own CNN (exercise 4)
class MyCNN(torch.nn.Module):
    """The reader's CNN of the chapter on explaining your own CNN (the same layers)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        nn = torch.nn
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


@finding("16: the reader's CNN on shapes (exercise 4)")
def my_cnn(seed: int) -> Claims:
    from xai_helpers.models import Normalize

    train, test = make_shapes(1000, size=32, seed=0), make_shapes(300, size=32, seed=1)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)), MyCNN(num_classes=3))
    train_classifier(model, train.images, train.labels, epochs=12, seed=seed)
    maps = registry.attribute("grad_cam", model, test.images, predict(model, test.images), layer="1.features")
    share = float(test.masks.float().mean())
    return {"accuracy": above(accuracy(model, test.images, test.labels), 0.4),
            "energy / object share": above(energy_in_mask(maps, test.masks).mean() / share, 3.0),
            "peak on the object": above(pointing_game(maps, test.masks).float().mean(), 0.45)}


# ----------------------------------------------------------------------------- 6. chapter 17 (concepts)
PATTERN_CONCEPTS = ("stripes", "dots", "zigzags")


def planted_tcav(seed: int, plant: bool):
    """Chapter 17's planted-concept experiment for one model: its test accuracy and TCAV at relu2."""
    from xai_helpers.concept_sets import pattern_backgrounds, planted_concept_shapes
    from xai_helpers.concepts import tcav_concepts

    train = planted_concept_shapes(1500, size=32, seed=seed, plant=plant)
    test = planted_concept_shapes(300, size=32, seed=10_000 + seed, plant=plant)
    model = train_small_cnn(train.images, train.labels, seed=seed, epochs=12)
    probe = planted_concept_shapes(400, size=32, seed=20_000 + seed, plant=True)
    class_images = probe.images[probe.labels == 0][:50]
    concepts = {name: pattern_backgrounds(50, size=32, seed=30_000 + 1000 * i + seed, concept=name)
                for i, name in enumerate(PATTERN_CONCEPTS)}
    plain = [pattern_backgrounds(50, size=32, seed=70_000 + 100 * seed + i, concept=None) for i in range(28)]
    results = tcav_concepts(model, class_images, 0, "relu2", concepts, plain, n_random_concepts=8, seed=seed)
    if plant:  # exercise 1: stripes against dots
        dotted = [pattern_backgrounds(50, size=32, seed=90_000 + 100 * seed + i, concept="dots") for i in range(28)]
        results |= tcav_concepts(model, class_images, 0, "relu2", {"stripes vs dots": concepts["stripes"]}, dotted,
                                 n_random_concepts=8, seed=seed)
    return accuracy(model, test.images, test.labels), results


@finding("17: a planted concept (TCAV)")
def planted_concept(seed: int) -> Claims:
    claims: Claims = {}
    for plant, label in ((True, "planted"), (False, "control")):
        acc, results = planted_tcav(seed, plant)
        claims[f"{label}: test accuracy"] = above(acc, 0.75)
        for name, r in results.items():
            if name == "stripes vs dots":
                claims["planted: TCAV stripes vs dots"] = above(r.mean, 0.9)
                claims["planted: CAV accuracy stripes vs dots"] = above(float(r.cav_accuracies.mean()), 0.9)
                claims["planted: stripes vs dots above random"] = above(r.effect, 0.2)
                claims["planted: p (sets) stripes vs dots"] = measured(r.p_sets)
                continue
            if plant:
                claims[f"planted: TCAV {name}"] = above(r.mean, 0.9)
                claims[f"planted: Holm p (runs) {name}"] = below(r.p_adjusted, 0.05)
                claims[f"planted: {name} above random"] = above(r.effect, 0.2)
            else:
                claims[f"control: TCAV {name}"] = below(r.mean, 0.1)
            claims[f"{label}: p (sets) {name}"] = measured(r.p_sets_adjusted)
        claims[f"{label}: random mean"] = measured(r.random_mean)
    return claims


# ----------------------------------------------------------------------------- 7. chapter 18 (black box, fooled)
BLACKBOX_BUDGETS = (32, 512)   # queries per image: Integrated Gradients' cost (16 steps), and many


def blackbox_methods(budget: int) -> dict[str, Callable]:
    """Chapter 18's model-agnostic methods at ``budget`` queries per image, on the 32-pixel shapes."""
    return {"rise": registry.heatmap_method("rise", n_masks=budget, grid=4, seed=0),
            "lime": registry.heatmap_method("lime", n_segments=16, n_samples=budget, seed=0),
            "kernel_shap": registry.heatmap_method("kernel_shap", n_segments=16, n_samples=budget, seed=0)}


def fooling_target() -> torch.Tensor:
    """Chapter 18's attacker's target map: the left quarter of the image, ``[32, 32]``."""
    target = torch.zeros(32, 32)
    target[:, :8] = 1.0
    return target


@finding("18: black-box methods and fooled explanations")
def fooled(seed: int) -> Claims:
    from xai_helpers import fooling
    from xai_helpers.evaluation import deletion_and_insertion

    train, test = shapes()
    model = shapes_model_of(seed)
    x, y, masks = explained_shapes(model, test, 24)
    claims: Claims = {"test accuracy": above(accuracy(model, test.images, test.labels), 0.9)}
    # 1. localisation and insertion, the gradient methods against the black box at two budgets
    maps = {"saliency": heat("saliency", model, x, y), "grad_cam": heat("grad_cam", model, x, y, layer="relu3"),
            "integrated_gradients": heat("integrated_gradients", model, x, y, steps=16)}
    for budget in BLACKBOX_BUDGETS:
        for name, method in blackbox_methods(budget).items():
            maps[f"{name} {budget}"] = method(model, x, y)
    energy = {name: energy_in_mask(m, masks) for name, m in maps.items()}
    insertion = {name: deletion_and_insertion(model, x, m, y, step=0.05, baseline=0.5)[1].auc
                 for name, m in maps.items()}
    pointing = {name: pointing_game(m, masks, tolerance=4).float().mean() for name, m in maps.items()}
    for name in maps:
        claims[f"energy {name}"] = measured(energy[name].mean())
        claims[f"insertion {name}"] = measured(insertion[name].mean())
        claims[f"pointing (4 px) {name}"] = measured(pointing[name])
    agnostic = [f"{m} {b}" for m in ("rise", "lime", "kernel_shap") for b in BLACKBOX_BUDGETS]
    claims["energy grad_cam - best agnostic"] = above(
        energy["grad_cam"].mean() - max(energy[a].mean() for a in agnostic), 0.05)
    claims["pointing grad_cam - best agnostic"] = above(
        pointing["grad_cam"] - max(pointing[a] for a in agnostic), 0.1)
    claims["insertion rise 512 - saliency"] = above(insertion["rise 512"].mean() - insertion["saliency"].mean(), 0.03)
    claims["insertion rise 512 - lime, kernel_shap 512"] = above(
        insertion["rise 512"].mean() - max(insertion["lime 512"].mean(), insertion["kernel_shap 512"].mean()), 0.03)
    claims["pointing rise 512 - rise 32"] = above(pointing["rise 512"] - pointing["rise 32"], 0.0)
    for name in ("lime", "kernel_shap"):
        claims[f"pointing {name} 512 - {name} 32"] = below(pointing[f"{name} 512"] - pointing[f"{name} 32"], 0.15)
    for name in ("rise", "lime", "kernel_shap"):
        gain = paired_difference_interval(energy[f"{name} 512"], energy[f"{name} 32"])
        claims[f"energy gain 32 -> 512 low: {name}"] = measured(gain.low)
        claims[f"energy {name} 512 - saliency low"] = measured(
            paired_difference_interval(energy[f"{name} 512"], energy["saliency"]).low)
    # 2. input manipulation on 8 images, each attackable method
    target = fooling_target()
    for method in fooling.GRAPH_METHODS:
        layer = "relu3" if method == "grad_cam" else None
        result = fooling.manipulate_input(method, model, x[:8], y[:8], target, layer=layer, iterations=100)
        ratio = result.mse_after / result.mse_before
        claims[f"input manipulation {method}: worst mse ratio"] = below(float(ratio.max()), 1.0)
        claims[f"input manipulation {method}: mean mse ratio"] = below(float(ratio.mean()), 0.7)
        kept = float(result.prediction_kept.float().mean())
        claims[f"input manipulation {method}: predictions kept"] = above(kept, 0.99)
        # exercise: random corners of the same ball, the control
        sign = torch.randint(0, 2, x[:8].shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
        noisy = (x[:8] + sign * 8 / 255).clamp(0, 1)
        with torch.enable_grad():
            before, after = (fooling.explanation_with_graph(method, model, z, y[:8], layer=layer).detach()
                             for z in (x[:8], noisy))
        goal = target.expand(8, 32, 32)
        random_ratio = fooling.map_loss(after, goal) / fooling.map_loss(before, goal)
        claims[f"random sign noise {method}: mean mse ratio"] = above(float(random_ratio.mean()), 0.8)
        claims[f"random sign noise {method}: mean - attack mean"] = above(
            float(random_ratio.mean() - ratio.mean()), 0.3)
        claims[f"random sign noise {method}: lowest mse ratio"] = measured(float(random_ratio.min()))
    # 3. model manipulation (Grad-CAM to the left quarter), and whether RISE is fooled with it
    fooled_model = fooling.fine_tune_to_fool(model, train.images[:600], train.labels[:600], target, "grad_cam",
                                             layer="relu3", epochs=8, seed=seed).model
    claims["fooled: test accuracy"] = above(accuracy(fooled_model, test.images, test.labels), 0.75)
    left = target.bool().expand(len(x), 32, 32)
    share = {}
    for title, net in (("original", model), ("fooled", fooled_model)):
        cam = heat("grad_cam", net, x, y, layer="relu3")
        share[title, "target"] = energy_in_mask(cam, left).mean()
        share[title, "grad_cam"] = energy_in_mask(cam, masks).mean()
        share[title, "rise"] = energy_in_mask(heat("rise", net, x, y, n_masks=512, grid=4, seed=0), masks).mean()
        share[title, "saliency"] = energy_in_mask(heat("saliency", net, x, y), masks).mean()
        claims[f"{title}: grad_cam pointing (4 px)"] = measured(pointing_game(cam, masks, tolerance=4).float().mean())
        for key in ("target", "grad_cam", "rise", "saliency"):
            claims[f"{title}: energy {key}"] = measured(share[title, key])
    claims["fooled: grad_cam energy in target"] = above(share["fooled", "target"], 0.3)
    claims["fooled / original: grad_cam energy in object"] = below(
        share["fooled", "grad_cam"] / share["original", "grad_cam"], 0.5)
    for key, bar in (("rise", 0.5), ("saliency", 0.4)):
        claims[f"fooled / original: {key} energy in object"] = above(share["fooled", key] / share["original", key], bar)
    # 4. max-sensitivity, SmoothGrad against saliency
    sens = {name: fooling.max_sensitivity(registry.heatmap_method(name, **opts), model, x[:24], y[:24],
                                          radius=2 / 255, n_samples=6)
            for name, opts in (("saliency", {}), ("smoothgrad", {"n_samples": 16, "seed": 0}),
                               ("integrated_gradients", {"steps": 16}), ("grad_cam", {"layer": "relu3"}))}
    for name, s in sens.items():
        claims[f"max-sensitivity {name}"] = measured(float(s.nanmean()))
    means = {name: float(s.nanmean()) for name, s in sens.items()}
    claims["max-sensitivity smoothgrad - grad_cam"] = above(means["smoothgrad"] - means["grad_cam"], 0.0)
    claims["max-sensitivity integrated_gradients - smoothgrad"] = above(
        means["integrated_gradients"] - means["smoothgrad"], 0.0)
    ok = ~(sens["saliency"].isnan() | sens["smoothgrad"].isnan())
    claims["max-sensitivity saliency - smoothgrad low"] = above(
        paired_difference_interval(sens["saliency"][ok], sens["smoothgrad"][ok]).low, 0.0)
    return claims


# ------------------------------------------------------------------ 6. whole chapters that train from many starts
def run_chapter(name: str) -> None:
    """Execute every code cell of ``book/<name>.md`` in order, as the book's build does (asserts included)."""
    import os
    from pathlib import Path

    import jupytext
    import matplotlib

    matplotlib.use("Agg")
    book = Path(__file__).resolve().parents[2] / "book"
    notebook = jupytext.read(book / f"{name}.md")
    namespace: dict = {"__name__": "__main__"}
    here = os.getcwd()
    os.chdir(book)
    try:
        for cell in notebook.cells:
            if cell.cell_type == "code":
                exec(compile(cell.source, f"{name}.md", "exec"), namespace)
    finally:
        os.chdir(here)


def whole_chapter(name: str) -> Callable[[int], Claims]:
    """A finding for a chapter whose claims rest on many random starts that the chapter itself runs
    (the NumPy chapters of the background part): run the whole chapter once per numerical setting
    (seed 0 only) and claim that every one of its asserts holds. (The chapters on pretrained
    networks run under two of the settings in full: `make test` with ONEDNN_MAX_CPU_ISA=AVX2 and
    with ATEN_CPU_CAPABILITY=default.)"""
    def run(seed: int) -> Claims:
        if seed != 0:
            return {}
        try:
            run_chapter(name)
            passed = 1.0
        except AssertionError:
            passed = 0.0
        return {"every assert holds": above(passed, 0.5)}
    return run


for _number, _name in [("2", "02_gradient_descent"), ("3", "03_perceptron"), ("4", "04_mlp_xor"),
                       ("5", "05_backpropagation")]:
    finding(f"{_number}: the whole chapter ({_name})")(whole_chapter(_name))
