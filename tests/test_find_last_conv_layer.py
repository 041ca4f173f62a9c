"""find_last_conv_layer on every torchvision classification architecture (weights=None).

The independent check is a symmetry: if the classifier pools the layer's output ``[B, C, h, w]`` over
its positions (after pointwise operations only), then permuting the ``h * w`` positions of that output,
the same permutation for every channel, leaves the logits unchanged. A layer one block too early fails
it (a convolution follows), and any later tensor has no positions left. VGG and AlexNet do not pool
globally (their classifier flattens a fixed grid): there the layer's output must be what ``avgpool``
receives. Grad-CAM at the layer must agree with Grad-CAM computed here by plain autograd.

The full sweep builds each of the 80 architectures once; on one thread it takes about 2 minutes of
CPU (3.5 on a busy machine, regnet_y_128gf alone 38 s), so it runs only with the environment variable
``XAI_TEST_ALL_ARCHITECTURES=1``. A fast subset of 15 (one or two of every family) always runs.
"""
import os

import pytest
import torch
from torch import nn

from xai_helpers.core import find_last_conv_layer, resolve_layer
from xai_helpers.methods.cam import grad_cam
from xai_helpers.models import EfficientNetLite0, SmallCNN

torchvision = pytest.importorskip("torchvision")

ALL = torchvision.models.list_models(module=torchvision.models)
TRANSFORMERS = [n for n in ALL if n.startswith("vit_")]  # classify a class token: no pooled map
CNNS = [n for n in ALL if n not in TRANSFORMERS]
FIXED_INPUT = {"maxvit_t": 224}  # window partitions need the size the model was built for
NO_GLOBAL_POOL = ("vgg", "alexnet")  # the classifier flattens a fixed 7x7 / 6x6 grid
# The fast subset, with the answer the docstring promises for each family.
EXPECTED = {
    "resnet18": "layer4", "resnext50_32x4d": "layer4", "vgg11": "features", "alexnet": "features",
    "densenet121": "features", "convnext_tiny": "features", "efficientnet_b0": "features",
    "mobilenet_v3_small": "features", "googlenet": "inception5b", "inception_v3": "Mixed_7c",
    "shufflenet_v2_x0_5": "conv5", "mnasnet0_5": "layers", "regnet_x_400mf": "trunk_output",
    "squeezenet1_1": "features", "swin_t": "permute",
}


def build(name):
    torch.manual_seed(0)
    kwargs = {"init_weights": False} if name in ("googlenet", "inception_v3") else {}
    return torchvision.models.get_model(name, weights=None, **kwargs).eval()


def output_of(model, layer, x, replace=None):
    """(logits, the layer's output) of ``model(x)``; ``replace(out)`` substitutes the layer's output."""
    seen = {}

    def hook(_m, _i, out):
        seen["out"] = out
        return replace(out) if replace is not None else None

    handle = resolve_layer(model, layer).register_forward_hook(hook)
    try:
        logits = model(x)
    finally:
        handle.remove()
    return logits, seen["out"]


def grad_cam_by_autograd(model, layer, x, target):
    """Grad-CAM from a full autograd graph, without xai_helpers: ReLU(sum_k mean_ij(G^k) A^k), min-max."""
    kept = {}

    def hook(_m, _i, out):
        out.retain_grad()
        kept["a"] = out
        return out.clone()  # the model goes on with a copy: a later in-place op (DenseNet's relu_) keeps A as it was

    handle = resolve_layer(model, layer).register_forward_hook(hook)
    try:
        model(x)[:, target].sum().backward()
    finally:
        handle.remove()
    model.zero_grad(set_to_none=True)
    a, g = kept["a"].detach(), kept["a"].grad
    cam = (g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True).clamp_min(0)
    cam = nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    flat = cam.flatten(1)
    low, span = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values - flat.min(1, keepdim=True).values
    return ((flat - low) / span.clamp_min(1e-12)).view_as(cam)


def check_architecture(name):
    model = build(name)
    side = FIXED_INPUT.get(name, 128)
    layer = find_last_conv_layer(model, input_size=(side, side))
    if name in EXPECTED:
        assert layer == EXPECTED[name]
    x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, out = output_of(model, layer, x)
        assert out.dim() == 4 and out.shape[-2] * out.shape[-1] > 1, (name, layer, out.shape)
        if name.startswith(NO_GLOBAL_POOL):
            seen = {}
            handle = model.avgpool.register_forward_pre_hook(lambda m, inputs: seen.setdefault("in", inputs[0]))
            try:
                model(x)
            finally:
                handle.remove()
            assert torch.equal(seen["in"], out)
        else:
            n = out.shape[-2] * out.shape[-1]
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(2))
            permuted, _ = output_of(model, layer, x, replace=lambda o: o.flatten(2)[:, :, perm].reshape(o.shape))
            scale = logits.abs().max().clamp_min(1e-3)
            assert torch.allclose(permuted, logits, rtol=1e-4, atol=1e-4 * float(scale)), (name, layer)
    target = int(logits.argmax())
    ours = grad_cam(model, x, target, layer=layer, rescale=True)
    assert ours.shape == (1, side, side) and torch.isfinite(ours).all()
    reference = grad_cam_by_autograd(model, layer, x, target)
    assert torch.allclose(ours, reference, atol=1e-4), (name, layer, float((ours - reference).abs().max()))
    assert not model.training


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fast_subset(name):
    check_architecture(name)


ALL_ARCHITECTURES = pytest.mark.skipif(
    not os.environ.get("XAI_TEST_ALL_ARCHITECTURES"), reason="set XAI_TEST_ALL_ARCHITECTURES=1 for the full sweep"
)


@ALL_ARCHITECTURES
@pytest.mark.parametrize("name", [n for n in CNNS if n not in EXPECTED])
def test_every_torchvision_cnn(name):
    check_architecture(name)


@pytest.mark.parametrize("name", ["vit_b_32"] + [pytest.param(n, marks=ALL_ARCHITECTURES)
                                                  for n in TRANSFORMERS if n != "vit_b_32"])
def test_a_vision_transformer_gets_its_last_blocks_input_norm(name):
    model = build(name)
    model.train()
    side = model.image_size
    layer = find_last_conv_layer(model, input_size=side)
    assert layer == f"encoder.layers.encoder_layer_{len(model.encoder.layers) - 1}.ln_1"
    assert model.training and all(len(m._forward_hooks) == 0 for m in model.modules())


def test_cams_on_a_vision_transformer_lay_the_patch_tokens_out_as_a_grid(tiny_vit):
    from xai_helpers.core import tokens_to_grid
    from xai_helpers.methods.cam import score_cam

    # The layout by hand: a class token, then 2 x 2 patches in row-major order, D = 3.
    tokens = torch.arange(15.0).view(1, 5, 3)
    grid = tokens_to_grid(tokens)
    assert grid.shape == (1, 3, 2, 2) and torch.equal(grid[0, :, 1, 0], tokens[0, 3])
    assert torch.equal(tokens_to_grid(tokens[:, 1:]), grid)                  # no class token: the same grid
    with pytest.raises(ValueError, match="square"):
        tokens_to_grid(torch.zeros(1, 6, 3))
    model = tiny_vit
    layer = find_last_conv_layer(model, input_size=32)
    assert layer == "encoder.layers.encoder_layer_1.ln_1"
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ours = grad_cam(model, x, [0, 2], layer=layer, rescale=True)
    # Grad-CAM by plain autograd on the tokens, laid out here, with the class token dropped
    kept = {}

    def keep(_module, _inputs, out):
        out.retain_grad()
        kept["a"] = out

    handle = resolve_layer(model, layer).register_forward_hook(keep)
    try:
        model(x).gather(1, torch.tensor([[0], [2]])).sum().backward()
    finally:
        handle.remove()
    model.zero_grad(set_to_none=True)
    a, g = (t[:, 1:].transpose(1, 2).reshape(2, 16, 4, 4) for t in (kept["a"].detach(), kept["a"].grad))
    cam = (g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True).clamp_min(0)
    cam = nn.functional.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    flat = cam.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    reference = ((flat - low) / (high - low).clamp_min(1e-12)).view_as(cam)
    assert torch.allclose(ours, reference, atol=1e-5) and float(ours.std()) > 0.05
    scored = score_cam(model, x, [0, 2], layer=layer)
    assert scored.shape == (2, 32, 32) and torch.isfinite(scored).all()
    with pytest.raises(ValueError, match=r"or tokens \[B, N, D\] of a square grid"):
        grad_cam(model, x, 0, layer="heads.head")                             # [B, 3]: no positions


def test_book_models_and_state_safety():
    assert find_last_conv_layer(SmallCNN()) == "relu3"        # post-ReLU, what the GAP pools
    assert find_last_conv_layer(EfficientNetLite0()) == "head"
    wrapped = nn.Sequential(nn.Identity(), torchvision.models.resnet18(weights=None))
    assert find_last_conv_layer(wrapped) == "1.layer4"
    model = SmallCNN().train()
    model.conv1.weight.requires_grad_(False)
    state = torch.random.get_rng_state()
    assert find_last_conv_layer(model, input_size=32) == "relu3"
    assert torch.equal(torch.random.get_rng_state(), state)
    assert model.training and not model.conv1.weight.requires_grad and model.conv2.weight.requires_grad
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_pooling_before_a_1x1_conv_head_is_found_from_the_forward_pass():
    # The last Conv2d runs *after* the pooling (a conv head on [B, C, 1, 1]): a name-based search
    # picks it; the forward pass shows that the pooled map is the ReLU's output.
    class ConvHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return self.head(self.pool(self.body(x))).flatten(1)

    assert find_last_conv_layer(ConvHead(), input_size=16) == "body"


def test_errors():
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        find_last_conv_layer(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)))
    fixed = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 26 * 26, 3))  # only 28x28
    with pytest.raises(ValueError, match=r"input_size=\(H, W\)"):
        find_last_conv_layer(fixed)
    assert find_last_conv_layer(fixed, input_size=(28, 28)) == "0"
    assert all(len(m._forward_hooks) == 0 for m in fixed.modules())


def test_a_cam_at_a_1x1_layer_is_a_clear_error():
    # ResNet's avgpool outputs [B, 512, 1, 1]: a CAM there would be one number per image, a constant map.
    model = build("resnet18")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="1x1 map.*constant.*find_last_conv_layer"):
        grad_cam(model, x, 0, layer="avgpool")
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    assert grad_cam(model, x, 0, layer="layer4").shape == (1, 64, 64)  # 2x2 at 64 px: allowed
