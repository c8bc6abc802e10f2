"""Tests for densemtl_lab.models.encoder: levels and strides, dilation, normalisation, weights."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision.models as tvm

from densemtl_lab.models.encoder import (
    BACKBONES,
    EncoderWeightsError,
    InputSizeError,
    ResNetEncoder,
    UnknownModelError,
    check_image,
)


@pytest.mark.parametrize(
    "backbone, channels",
    [("resnet18", (64, 64, 128, 256, 512)), ("resnet50", (64, 256, 512, 1024, 2048))],
)
def test_five_levels_with_output_stride_16(backbone: str, channels: tuple[int, ...]) -> None:
    encoder = ResNetEncoder(backbone).eval()
    with torch.no_grad():
        features = encoder(torch.rand(1, 3, 32, 64))
    strides = (2, 4, 8, 16, 16)
    assert [tuple(f.shape) for f in features] == [
        (1, c, 32 // s, 64 // s) for c, s in zip(channels, strides)
    ]
    assert encoder.channels == channels


@pytest.mark.parametrize("backbone", ["resnet18", "resnet34"])
def test_basic_block_layer4_is_dilated_by_hand(backbone: str) -> None:
    with torch.device("meta"):
        layer4 = ResNetEncoder(backbone).layer4
    assert layer4[0].conv1.stride == (1, 1) and layer4[0].downsample[0].stride == (1, 1)
    for block in layer4:
        for conv in (block.conv1, block.conv2):
            assert conv.dilation == (2, 2) and conv.padding == (2, 2)


def test_bottleneck_layer4_uses_torchvision_dilation() -> None:
    with torch.device("meta"):
        layer4 = ResNetEncoder("resnet101").layer4
    assert layer4[0].conv2.stride == (1, 1)
    assert [block.conv2.dilation for block in layer4] == [(1, 1), (2, 2), (2, 2)]


def test_input_is_normalised_the_monodepth2_way() -> None:
    encoder = ResNetEncoder("resnet18").eval()
    seen = {}
    encoder.conv1.register_forward_hook(lambda module, args, out: seen.update(x=args[0]))
    image = torch.full((1, 3, 16, 16), 0.45)
    image[:, 1] = 0.675  # (0.675 - 0.45) / 0.225 = 1
    image[:, 2] = 0.0  # -0.45 / 0.225 = -2
    with torch.no_grad():
        encoder(image)
    assert torch.allclose(seen["x"][0, :, 0, 0], torch.tensor([0.0, 1.0, -2.0]), atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 3, 30, 64), (2, 3, 32, 40), (3, 32, 64), (2, 1, 32, 64)])
def test_bad_image_shapes_are_named(shape: tuple[int, ...]) -> None:
    with pytest.raises(InputSizeError, match=r"image has shape") as caught:
        check_image(torch.zeros(shape))
    assert str(tuple(shape)) in str(caught.value)


def test_size_error_suggests_a_valid_size() -> None:
    with pytest.raises(InputSizeError, match=r"multiples of 16.*e\.g\. to 32x64"):
        check_image(torch.zeros(1, 3, 30, 64))


def test_unknown_backbone_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownModelError, match="resnet18, resnet34, resnet50, resnet101"):
        ResNetEncoder("resnet19")


def test_local_torchvision_file_loads_strictly_ignoring_fc(tmp_path) -> None:
    source = tvm.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    encoder = ResNetEncoder("resnet18", weights=path)
    assert torch.equal(encoder.conv1.weight, source.conv1.weight)
    assert torch.equal(encoder.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)


def test_mismatched_keys_are_listed(tmp_path) -> None:
    state = tvm.resnet18().state_dict()
    state["extra.weight"] = state.pop("layer2.0.conv1.weight")
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(EncoderWeightsError, match=r"missing \[layer2\.0\.conv1\.weight\].*unexpected \[extra\.weight\]"):
        ResNetEncoder("resnet18", weights=path)


def test_wrong_shapes_are_listed(tmp_path) -> None:
    state = tvm.resnet18().state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)  # a resnet50-style 1x1 conv
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(EncoderWeightsError, match=r"wrong shape \[.*layer1\.0\.conv1\.weight"):
        ResNetEncoder("resnet18", weights=path)


def test_missing_file_is_named(tmp_path) -> None:
    with pytest.raises(EncoderWeightsError, match="nowhere.pth' is not a file; pass None, 'imagenet' or"):
        ResNetEncoder("resnet18", weights=tmp_path / "nowhere.pth")


def test_imagenet_offline_says_how_to_pass_a_file(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tvm.WeightsEnum, "get_state_dict", offline)
    filename = BACKBONES["resnet18"].imagenet.url.rsplit("/", 1)[-1]
    with pytest.raises(EncoderWeightsError, match=rf"could not download.*weights='/path/to/{filename}'"):
        ResNetEncoder("resnet18", weights="imagenet")


def test_imagenet_weights_come_through_torchvision_from_the_hub_cache(monkeypatch, tmp_path) -> None:
    source = tvm.resnet18()
    filename = BACKBONES["resnet18"].imagenet.url.rsplit("/", 1)[-1]
    (tmp_path / "checkpoints").mkdir()
    torch.save(source.state_dict(), tmp_path / "checkpoints" / filename)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    encoder = ResNetEncoder("resnet18", weights="imagenet")
    assert torch.equal(encoder.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
