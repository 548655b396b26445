import pytest
import torch
from torch import nn

from convergence_monitor.capture import PRE_LOGITS, capture_features, default_layers, eval_mode, resolve_layers
from convergence_monitor.models import build_model


@pytest.fixture(scope="module")
def resnet():
    return build_model("resnet10t", num_classes=10, in_chans=1, seed=0)


def test_default_layers_skip_downsample_convs(resnet):
    layers = default_layers(resnet)
    assert layers[-1] == PRE_LOGITS
    assert "layer1.0.conv1" in layers
    assert "layer4.0.conv2" in layers
    assert not any("downsample" in name for name in layers)
    assert len(layers) == 12


def test_default_layers_of_vit_are_blocks():
    vit = build_model("vit_tiny_patch16_224", num_classes=10, in_chans=1, seed=0, img_size=32, patch_size=8, depth=3)
    assert default_layers(vit) == ["blocks.0", "blocks.1", "blocks.2", PRE_LOGITS]


def test_resolve_layers_expands_globs_in_forward_order(resnet):
    layers = resolve_layers(resnet, ["layer*.0.conv2", "conv1.0"])
    assert layers == ["conv1.0", "layer1.0.conv2", "layer2.0.conv2", "layer3.0.conv2", "layer4.0.conv2"]


def test_resolve_layers_unknown_name_lists_close_matches(resnet):
    with pytest.raises(ValueError, match=r"layer 'layer1.0.conv3' not found.*layer1\.0\.conv"):
        resolve_layers(resnet, ["layer1.0.conv3"])


def test_capture_shapes_per_sample_mode(resnet):
    images = torch.randn(10, 1, 28, 28)
    for mode in ("center", "mean"):
        features, logits = capture_features(resnet, images, ["layer2.0.conv2", PRE_LOGITS], sample_mode=mode,
                                            batch_size=4)
        assert features["layer2.0.conv2"].shape == (10, 128)
        assert features[PRE_LOGITS].shape == (10, 512)
        assert logits.shape == (10, 10)


def test_capture_center_takes_middle_position():
    conv = nn.Sequential(nn.Conv2d(1, 3, 1), nn.Flatten(), nn.LazyLinear(2))
    conv(torch.zeros(1, 1, 5, 5))
    images = torch.randn(4, 1, 5, 5)
    features, _ = capture_features(conv, images, ["0"], sample_mode="center")
    expected = conv[0](images)[:, :, 2, 2]
    torch.testing.assert_close(features["0"], expected)


@pytest.mark.parametrize("sample_mode", ["center", "mean", "positions"])
def test_capture_keeps_no_batch_view(monkeypatch, sample_mode):
    # A kept slice of an output (a view) would hold the whole output batch in memory until the capture ends.
    kept = []
    concatenate = torch.cat

    def recording_cat(tensors, *args, **kwargs):
        kept.extend(tensors)
        return concatenate(tensors, *args, **kwargs)

    monkeypatch.setattr(torch, "cat", recording_cat)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    images = torch.randn(12, 1, 9, 9)
    features, _ = capture_features(model, images, ["0"], sample_mode=sample_mode, position_budget=30, batch_size=4)
    chunks = [chunk for chunk in kept if chunk.shape[-1] == 8]
    assert len(chunks) == 3
    for chunk in chunks:
        assert chunk.untyped_storage().nbytes() == chunk.numel() * chunk.element_size()
    assert features["0"].shape[1] == 8


def test_capture_copies_before_in_place_relu():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.ReLU(inplace=True), nn.Linear(6, 2))
    images = torch.randn(10, 1, 4, 4)
    features, _ = capture_features(model, images, ["1"], batch_size=4)
    with torch.no_grad():
        expected = model[1](model[0](images))
    assert (expected < 0).any()
    torch.testing.assert_close(features["1"], expected)


def test_capture_positions_same_samples_for_every_batch_size(resnet):
    images = torch.randn(12, 1, 28, 28)
    whole, _ = capture_features(resnet, images, ["conv1.0"], sample_mode="positions", position_budget=50, batch_size=12)
    split, _ = capture_features(resnet, images, ["conv1.0"], sample_mode="positions", position_budget=50, batch_size=5)
    assert whole["conv1.0"].shape == (50, 24)
    torch.testing.assert_close(whole["conv1.0"], split["conv1.0"])


def test_capture_tokens_cls_and_mean():
    vit = build_model("vit_tiny_patch16_224", num_classes=10, in_chans=1, seed=0, img_size=32, patch_size=8, depth=2)
    images = torch.randn(3, 1, 32, 32)
    cls, _ = capture_features(vit, images, ["blocks.1"], token_mode="cls")
    mean, _ = capture_features(vit, images, ["blocks.1"], token_mode="mean")
    assert cls["blocks.1"].shape == mean["blocks.1"].shape == (3, 192)
    assert not torch.allclose(cls["blocks.1"], mean["blocks.1"])


def test_capture_restores_each_submodule_flag(resnet):
    resnet.train()
    resnet.layer1[0].bn1.eval()  # a user-frozen BatchNorm must stay frozen
    before = {name: module.training for name, module in resnet.named_modules()}
    running_mean = resnet.bn1.running_mean.clone() if hasattr(resnet, "bn1") else None
    capture_features(resnet, torch.randn(8, 1, 28, 28), default_layers(resnet))
    after = {name: module.training for name, module in resnet.named_modules()}
    assert after == before
    assert after["layer1.0.bn1"] is False
    if running_mean is not None:
        torch.testing.assert_close(resnet.bn1.running_mean, running_mean)


def test_eval_mode_restores_flags_after_error(resnet):
    resnet.train()
    with pytest.raises(RuntimeError):
        with eval_mode(resnet):
            assert not resnet.training
            raise RuntimeError("boom")
    assert resnet.training


def test_capture_leaves_no_hooks(resnet):
    capture_features(resnet, torch.randn(2, 1, 28, 28), default_layers(resnet))
    assert all(not module._forward_hooks and not module._forward_pre_hooks for module in resnet.modules())


def test_build_model_depends_only_on_seed():
    a = build_model("resnet10t", num_classes=10, in_chans=1, seed=3)
    torch.randn(100)  # the global stream must not matter
    b = build_model("resnet10t", num_classes=10, in_chans=1, seed=3)
    c = build_model("resnet10t", num_classes=10, in_chans=1, seed=4)
    assert torch.equal(a.conv1[0].weight, b.conv1[0].weight)
    assert not torch.equal(a.conv1[0].weight, c.conv1[0].weight)


def test_build_model_unknown_arch_is_an_error():
    with pytest.raises(ValueError, match="unknown timm architecture 'resnet_nope'"):
        build_model("resnet_nope", num_classes=10, in_chans=1, seed=0)


def test_capture_wide_layer_keeps_fixed_unit_subset():
    wide = nn.Sequential(nn.Linear(8, 5000), nn.ReLU(), nn.Linear(5000, 3))
    images = torch.randn(6, 8)
    first, _ = capture_features(wide, images, ["0"], max_units=100)
    second, _ = capture_features(wide, images, ["0"], max_units=100, batch_size=4)
    assert first["0"].shape == (6, 100)
    torch.testing.assert_close(first["0"], second["0"])
    full, _ = capture_features(wide, images, ["0"])
    assert full["0"].shape == (6, 5000)
    kept = [int(torch.nonzero((full["0"] == first["0"][:, [j]]).all(0))[0]) for j in range(3)]
    assert kept == sorted(kept)
