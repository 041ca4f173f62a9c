"""The registry and the output contract: every registered method over its options and on torchvision's CNNs.

Every option of every registered method keeps the output contract under ``registry.attribute``, or
is refused there with an error that names the direct call (``Method.refuses``). Each method runs on
twelve torchvision architectures (weights=None, 64 x 64 inputs, its quick options) and must either
keep the output contract or refuse with a clear error that names what it cannot handle; it must
leave the model exactly as it was; and where a plain-autograd reference exists, it must agree with
one computed here without xai_helpers.
"""
from __future__ import annotations

import inspect
from contextlib import nullcontext

import pytest
import torch
import torchvision
from model_state import assert_untouched, snapshot
from torch import nn

from xai_helpers import registry
from xai_helpers.core import find_last_conv_layer
from xai_helpers.display import to_heatmap

ARCHITECTURES = [
    "resnet18", "vgg11", "densenet121", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
    "convnext_tiny", "regnet_x_400mf", "shufflenet_v2_x0_5", "squeezenet1_1", "googlenet", "mnasnet0_5",
]
# The sweep runs each method with its quick options (registry.Method.quick), so it stays cheap;
# every method still runs its whole algorithm.
# Architectures that relevance propagation does not define (SiLU, GELU or Hardswish activations; a
# batch norm *before* its convolution, which cannot be merged): LRP and DeepLIFT must refuse them
# with an error that names the module.
REFUSED = {"mobilenet_v3_small": {"lrp", "deeplift"}, "efficientnet_b0": {"lrp", "deeplift"},
           "convnext_tiny": {"lrp", "deeplift"}, "densenet121": {"lrp"}}
# Score-CAM costs K + 2 forward passes per image (K up to 1280 here): one image is enough.
ONE_IMAGE = {"score_cam"}
_MODELS: dict[str, tuple[nn.Module, str]] = {}


def build(name: str) -> tuple[nn.Module, str]:
    if name not in _MODELS:
        torch.manual_seed(0)
        extra = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
        model = torchvision.models.get_model(name, weights=None, **extra).eval()
        with torch.no_grad():   # ConvNeXt starts its residual branches at 1e-6: make them count
            for module in model.modules():
                if isinstance(getattr(module, "layer_scale", None), nn.Parameter):
                    module.layer_scale.fill_(1.0)
        _MODELS[name] = model, find_last_conv_layer(model, input_size=64)
    return _MODELS[name]


def test_registry_knows_every_method_once_with_its_facts():
    names = [m.name for m in registry.methods()]
    assert len(names) == len(set(names)) >= 15
    for method in registry.methods():
        assert method.space in ("input", "map") and method.cost and method.reference and method.title
        assert registry.get(method.name) is method
    assert {m.name for m in registry.methods(family="cam")} >= {"grad_cam", "score_cam"}
    assert all(m.space == "map" for m in registry.methods(space="map"))


def test_a_method_in_a_new_module_registers_itself(tmp_path, monkeypatch):
    # The registry imports every module of xai_helpers.methods (pkgutil.iter_modules): a new module
    # there needs no list to be extended. Here the package's path gains a folder with one more module.
    import sys

    import xai_helpers.methods

    (tmp_path / "doubled.py").write_text(
        "from xai_helpers.registry import register\n"
        "@register('doubled_input', title='2x', space='input', needs_layer=False, cost='none',"
        " family='gradient', reference='none')\n"
        "def doubled_input(model, x, target):\n"
        "    return 2 * x.detach()\n")
    monkeypatch.setattr(xai_helpers.methods, "__path__", [*xai_helpers.methods.__path__, str(tmp_path)])
    try:
        assert "doubled_input" in [m.name for m in registry.methods()]
        x = torch.rand(1, 3, 4, 4)
        assert torch.equal(registry.attribute("doubled_input", nn.Identity(), x, 0), 2 * x)
    finally:
        registry._REGISTRY.pop("doubled_input", None)
        sys.modules.pop("xai_helpers.methods.doubled", None)


def test_lookup_errors_name_the_fix():
    with pytest.raises(KeyError, match="Did you mean 'grad_cam'"):
        registry.get("gradcam")
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(TypeError, match="needs layer"):
        registry.attribute("grad_cam", model, x, 0)
    with pytest.raises(TypeError, match="takes no layer"):
        registry.attribute("saliency", model, x, 0, layer="1")
    with pytest.raises(ValueError, match="already registered"):
        add = registry.register("saliency", title="x", space="input", needs_layer=False, cost="1", family="gradient")
        add(lambda m, x, t: x)


# What each option a method may refuse would be set to, to change the result.
REFUSED_VALUES = {"upsample": False, "rescale": True, "relu": False}


def other_values(function) -> dict[str, object]:
    """Each keyword option of ``function`` with a bool default, flipped: the options a caller can toggle."""
    return {name: not p.default for name, p in inspect.signature(function).parameters.items()
            if p.kind is p.KEYWORD_ONLY and isinstance(p.default, bool)}


def test_every_option_of_every_method_keeps_the_contract_or_is_refused():
    from xai_helpers.models import SmallCNN

    torch.manual_seed(0)
    model, x, targets = SmallCNN(num_classes=3, width=4).eval(), torch.rand(2, 3, 32, 32), [0, 2]
    before = snapshot(model)
    for method in registry.methods():
        base = {**method.quick, **({"layer": "relu3"} if method.needs_layer else {})}
        assert set(method.quick) <= set(inspect.signature(method.function).parameters), method.name
        settings = [{}] + [{name: value} for name, value in other_values(method.function).items()
                           if name not in method.refuses]
        for extra in settings:
            result = registry.attribute(method.name, model, x, targets, **base, **extra)   # checks the contract
            assert torch.isfinite(result).all(), (method.name, extra)
            if not method.signed:
                assert (result >= 0).all(), (method.name, extra)           # unsigned means unsigned
        for option in method.refuses:
            assert option in inspect.signature(method.function).parameters, (method.name, option)
            value = REFUSED_VALUES[option]
            with pytest.raises(TypeError, match=f"refuses {option}=") as refused:
                registry.attribute(method.name, model, x, targets, **base, **{option: value})
            assert f"{method.function.__module__}.{method.function.__qualname__}" in str(refused.value)
            # the direct call still accepts it (relu=False may return negative values, which an unsigned
            # method must not; rescale=True scales; upsample=False changes the shape)
            direct = method.function(model, x, targets, **base, **{option: value})
            broken = option == "upsample"
            with pytest.raises(RuntimeError, match="broke the output contract") if broken else nullcontext():
                registry.check_contract(method, x, direct)
            if option == "rescale":
                assert direct.min() >= 0 and direct.max() <= 1, method.name    # min-max scaled to [0, 1]
        assert_untouched(model, before)


def test_layer_is_keyword_only_in_every_method_that_needs_one():
    for method in registry.methods():
        parameters = inspect.signature(method.function).parameters
        if method.needs_layer:
            assert parameters["layer"].kind is inspect.Parameter.KEYWORD_ONLY, method.name
        else:
            assert "layer" not in parameters, method.name


def test_contract_check_catches_a_broken_method():
    method = registry.get("saliency")
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(RuntimeError, match="expected shape"):
        registry.check_contract(method, x, torch.zeros(2, 8, 8))
    with pytest.raises(RuntimeError, match="requires_grad"):
        registry.check_contract(method, x, torch.zeros(2, 3, 8, 8, requires_grad=True))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_method_on_torchvision_architectures(arch):
    model, layer = build(arch)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    targets = [1, 7]
    before = snapshot(model)
    results = {}
    for method in registry.methods():
        options = dict(method.quick)
        if method.needs_layer:
            options["layer"] = layer
        if method.name in REFUSED.get(arch, ()):
            with pytest.raises((ValueError, NotImplementedError, TypeError)) as refused:
                registry.attribute(method.name, model, x, targets, **options)
            assert "'" in str(refused.value), str(refused.value)    # the message names the module
            assert_untouched(model, before)
            continue
        images, classes = (x[:1], targets[:1]) if method.name in ONE_IMAGE else (x, targets)
        result = registry.attribute(method.name, model, images, classes, **options)   # checks the contract
        assert torch.isfinite(result).all(), (arch, method.name)
        heat = to_heatmap(result)
        assert heat.shape == (len(images), 64, 64) and heat.min() >= 0 and heat.max() <= 1
        assert_untouched(model, before)
        results[method.name] = result

    # Plain-autograd references, computed here without xai_helpers.
    leaf = x.clone().requires_grad_(True)
    scores = model(leaf).gather(1, torch.tensor(targets)[:, None]).sum()
    (gradient,) = torch.autograd.grad(scores, leaf)
    # Untrained networks have tiny gradients: compare relative to the reference's largest entry.
    def close(a: torch.Tensor, b: torch.Tensor, tolerance: float) -> bool:
        return bool((a - b).abs().max() <= tolerance * b.abs().max())

    assert close(results["saliency"], gradient, 1e-4), arch
    assert close(results["gradient_x_input"], x * gradient, 1e-4), arch
    # guided backprop and deconvnet are never the plain gradient under another name
    assert not close(results["guided_backprop"], gradient, 1e-2), arch
    assert not close(results["deconvnet"], gradient, 1e-2), arch


def test_every_method_on_a_vision_transformer_works_or_refuses_clearly(tiny_vit):
    """A token model: the CAMs explain the last block's input tokens laid out as a grid, the guided rules
    warn that attention keeps its plain gradient, and LRP and DeepLIFT refuse, naming the attention."""
    model, x, targets = tiny_vit, torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)), [0, 2]
    layer = find_last_conv_layer(model, input_size=32)
    before = snapshot(model)
    for method in registry.methods():
        options = dict(method.quick, **({"layer": layer} if method.needs_layer else {}))
        if method.name == "occlusion":
            options.update(window=8, stride=8)
        if method.name in ("lrp", "deeplift"):
            with pytest.raises(ValueError, match="attention of 'encoder.layers.encoder_layer_0.self_attention'"):
                registry.attribute(method.name, model, x, targets, **options)
        elif method.name in ("guided_backprop", "deconvnet", "guided_grad_cam"):
            with pytest.warns(UserWarning, match=r"gates and attention \(multi_head_attention_forward x2\)"):
                result = registry.attribute(method.name, model, x, targets, **options)
        else:
            result = registry.attribute(method.name, model, x, targets, **options)    # checks the contract
        assert torch.isfinite(result).all() and to_heatmap(result).shape == (2, 32, 32), method.name
        assert_untouched(model, before)


def test_a_function_of_the_output_is_a_target_for_every_method():
    """A callable target is the same as the class index it reads, for every method (those that explain a
    probability compared on the logit: a ScoreOutput's one score has no softmax); a sum of labels
    explains the sum (the gradient is linear); a direct call names the fix."""
    from xai_helpers.core import ScoreOutput
    from xai_helpers.methods.gradients import saliency
    from xai_helpers.models import SmallCNN

    torch.manual_seed(0)
    model, x = SmallCNN(num_classes=3, width=4).eval(), torch.rand(2, 3, 16, 16)
    for method in registry.methods():
        options = dict(method.quick, **({"layer": "relu2"} if method.needs_layer else {}))
        if method.name == "occlusion":
            options.update(window=8, stride=8)
        if "score" in inspect.signature(method.function).parameters:
            options["score"] = "logit"
        if method.name == "score_cam":
            options["weighting"] = "softmax"
        results = []
        for target in (1, lambda out: out[:, 1]):
            torch.manual_seed(0)                     # the random methods draw the same noise and masks
            results.append(registry.attribute(method.name, model, x, target, **options))
        assert torch.allclose(results[0], results[1], atol=1e-6), method.name
    # Score-CAM's default weighting reads a probability: for a score, the score (a softmax of it would be 1)
    by_score = registry.attribute("score_cam", model, x, lambda out: out[:, 1], layer="relu2")
    assert torch.allclose(by_score, registry.attribute("score_cam", model, x, lambda out: out[:, 1], layer="relu2",
                                                       weighting="increase")) and float(by_score.amax()) > 0
    both = registry.attribute("saliency", model, x, lambda out: out[:, [0, 2]].sum(1))
    assert torch.allclose(both, saliency(model, x, 0) + saliency(model, x, 2), atol=1e-6)
    with pytest.raises(TypeError, match=r"ScoreOutput\(model, function\) as the model and 0"):
        saliency(model, x, lambda out: out[:, 1])
    with pytest.raises(ValueError, match=r"one score per image, shape \[2\]; got \[2, 3\]"):
        registry.attribute("saliency", model, x, lambda out: out)
    assert isinstance(ScoreOutput(model, lambda out: out[:, 0]).model, SmallCNN)


def test_a_segmentation_models_class_over_a_region():
    """torchvision's FCN (random weights): the score is class 1's logits summed over a region; saliency
    is its gradient, computed here by plain autograd, and Grad-CAM explains the backbone's last block."""
    torch.manual_seed(0)
    model = torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None, num_classes=3,
                                                         aux_loss=False).eval()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    region = torch.zeros(64, 64)
    region[16:40, 20:44] = 1

    def class_in_region(out):
        return (out["out"][:, 1] * region).sum((1, 2))

    ours = registry.attribute("saliency", model, x, class_in_region)
    leaf = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(class_in_region(model(leaf)).sum(), leaf)
    assert torch.allclose(ours, expected, atol=1e-5 * float(expected.abs().max()))
    cam = registry.attribute("grad_cam", model, x, class_in_region, layer="backbone.layer4")
    assert cam.shape == (1, 64, 64) and torch.isfinite(cam).all() and float(cam.max()) > 0
    assert all(not m._forward_hooks for m in model.modules()) and not model.training


def test_heatmap_method_binds_options_and_matches_attribute():
    from xai_helpers.models import SmallCNN

    torch.manual_seed(0)
    model, x = SmallCNN(num_classes=3, width=4).eval(), torch.rand(2, 3, 16, 16)
    bound = registry.heatmap_method("grad_cam", layer="relu2")
    expected = registry.attribute("grad_cam", model, x, [0, 2], layer="relu2", heatmap=True)
    assert torch.equal(bound(model, x, [0, 2]), expected)
    with pytest.raises(KeyError, match="no attribution method"):
        registry.heatmap_method("grad_kam")


def test_heatmap_methods_covers_the_registry_and_asks_for_a_layer():
    every = registry.heatmap_methods(layer="relu3", exclude=("deconvnet",))
    assert list(every) == [m.title for m in registry.methods() if m.name != "deconvnet"]
    with pytest.raises(TypeError, match="needs a layer"):
        registry.heatmap_methods()
    with pytest.raises(KeyError, match="unknown methods"):
        registry.heatmap_methods({"grad_kam": {}}, layer="relu3")
