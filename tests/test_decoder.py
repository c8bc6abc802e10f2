"""Tests for densemtl_lab.models.decoder: ConvBlock, ASPP, level arithmetic, sections, heads."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.segmentation.deeplabv3 import ASPP

from densemtl_lab.models.decoder import (
    AtrousConv2d,
    DecoderConfig,
    ConvBlock,
    TaskDecoder,
    build_aspp,
)

RESNET18 = (64, 64, 128, 256, 512)
RESNET101 = (64, 256, 512, 1024, 2048)
TINY = (8, 16, 16, 32, 32)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _features(batch: int = 2, height: int = 32, width: int = 64) -> list[torch.Tensor]:
    strides = (2, 4, 8, 16, 16)
    return [torch.rand(batch, c, height // s, width // s) for c, s in zip(RESNET18, strides)]


def test_conv_block_reflects_then_applies_elu_by_hand() -> None:
    block = ConvBlock(1, 1)
    with torch.no_grad():
        block[1].weight.fill_(1.0)
        block[1].bias.fill_(-30.0)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    # Reflection padding makes every 3x3 window hold each of 1..4 at least twice:
    # top-left window = [[4,3,4],[2,1,2],[4,3,4]] -> 27; top-right [[3,4,3],[1,2,1],[3,4,3]] -> 24;
    # bottom-left [[2,1,2],[4,3,4],[2,1,2]] -> 21; bottom-right [[1,2,1],[3,4,3],[1,2,1]] -> 18.
    sums = torch.tensor([[27.0, 24.0], [21.0, 18.0]]) - 30.0
    expected = torch.where(sums > 0, sums, torch.exp(sums) - 1)
    assert torch.allclose(block(x)[0, 0], expected, atol=1e-6)


def test_aspp_branches_rates_and_dropout() -> None:
    aspp = build_aspp(16, 8, (6, 12, 18), dropout=0.25)
    assert [aspp.convs[i][0].dilation for i in (1, 2, 3)] == [(6, 6), (12, 12), (18, 18)]
    assert aspp.project[0].in_channels == 5 * 8
    assert aspp.project[-1].p == 0.25
    assert aspp(torch.rand(2, 16, 4, 8)).shape == (2, 8, 4, 8)


@pytest.mark.parametrize("widths", [TINY, (64, 128, 128, 256, 256)])
def test_level_channel_arithmetic(widths: tuple[int, ...]) -> None:
    with torch.device("meta"):
        decoder = TaskDecoder(RESNET18, 3, DecoderConfig(widths))
    conv1_in = [decoder.levels[i].conv1[1].in_channels for i in range(5)]
    # level i concatenates its conv0 output (widths[i]) with the skip f_{i-1}; level 0 has no skip
    assert conv1_in == [widths[0], widths[1] + 64, widths[2] + 64, widths[3] + 128, widths[4] + 256]
    assert [decoder.levels[i].conv0[1].in_channels for i in range(4)] == list(widths[1:])
    assert decoder.heads["1"].in_channels == widths[1] and decoder.heads["0"].in_channels == widths[0]


def test_level_4_keeps_stride_16_and_later_levels_upsample() -> None:
    decoder = TaskDecoder(RESNET18, 1, DecoderConfig(TINY)).eval()
    features = _features()
    with torch.no_grad():
        after4 = decoder.run((4,), features)
        after3 = decoder.run((3,), features, after4)
    assert after4.shape == (2, TINY[4], 2, 4)
    assert after3.shape == (2, TINY[3], 4, 8)


def test_both_scales_are_predicted() -> None:
    decoder = TaskDecoder(RESNET18, 5, DecoderConfig(TINY))
    out = decoder(_features())
    assert {s: tuple(t.shape) for s, t in out.items()} == {0: (2, 5, 32, 64), 1: (2, 5, 16, 32)}


def test_paper_decoder_parameter_count() -> None:
    # docs/faithfulness.md, "Parameter counts": about 22.06 M per decoder, of which the ASPP is about 15.5 M
    with torch.device("meta"):
        decoder = TaskDecoder(RESNET101, 16)
    assert _count(decoder.levels[4].conv0) == 15_535_104
    assert _count(decoder) == 22_064_544


def test_aspp_width_defaults_to_last_level_width() -> None:
    assert DecoderConfig(TINY).aspp_width == 32
    assert DecoderConfig(TINY, aspp_channels=12).aspp_width == 12
    with torch.device("meta"):
        decoder = TaskDecoder(RESNET18, 1, DecoderConfig(TINY, aspp_channels=12))
    assert decoder.levels[4].conv1[1].in_channels == 12 + 256


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"widths": (8, 16, 16, 32)}, "decoder_widths"),
        ({"widths": (8, 16, 0, 32, 32)}, "decoder_widths"),
        ({"aspp_channels": 0}, "aspp_channels"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_config_names_the_parameter(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DecoderConfig(**kwargs)


def test_run_below_level_4_needs_an_input() -> None:
    decoder = TaskDecoder(RESNET18, 1, DecoderConfig(TINY))
    with pytest.raises(ValueError, match="levels=.*pass the previous level's output x"):
        decoder.run((3, 2), _features())


def test_heads_are_raw_linear_outputs() -> None:
    decoder = TaskDecoder(RESNET18, 1, DecoderConfig(TINY))
    with torch.no_grad():
        decoder.heads["0"].weight.zero_()
        decoder.heads["0"].bias.fill_(-math.pi)
    assert torch.all(decoder(_features())[0] == -math.pi)


@pytest.mark.parametrize("rate", [1, 6, 12, 18])
@pytest.mark.parametrize("size", [(4, 8), (8, 16), (8, 24), (20, 7), (32, 64)])
def test_atrous_conv_skipping_padding_taps_gives_the_full_convs_outputs_and_gradients(rate, size) -> None:
    # Sizes where the rate kills rows only (8x24 at 12), columns only (20x7 at 12), both, or neither.
    torch.manual_seed(0)
    full = torch.nn.Conv2d(6, 5, 3, padding=rate, dilation=rate, bias=True).double()
    atrous = AtrousConv2d(full)
    x = torch.randn(2, 6, *size, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 5, *size, dtype=torch.float64)
    expected = torch.autograd.grad(full(x), (x, full.weight, full.bias), upstream)
    got = torch.autograd.grad(atrous(x), (x, atrous.weight, atrous.bias), upstream)
    assert torch.allclose(atrous(x), full(x), rtol=0, atol=1e-12)
    for name, a, b in zip(("input", "weight", "bias"), got, expected):
        assert torch.allclose(a, b, rtol=0, atol=1e-12), name


def test_the_aspp_atrous_convs_keep_their_parameters_and_the_seeded_initialisation() -> None:
    torch.manual_seed(3)
    aspp = build_aspp(32, 8, (6, 12, 18), 0.1)
    after = torch.rand(1)
    torch.manual_seed(3)
    reference = ASPP(32, [6, 12, 18], 8)
    assert torch.equal(after, torch.rand(1))  # building ours drew nothing more from the RNG
    assert [type(branch[0]) for branch in aspp.convs[1:4]] == [AtrousConv2d] * 3
    assert aspp.state_dict().keys() == reference.state_dict().keys()
    for key, value in reference.state_dict().items():
        assert torch.equal(aspp.state_dict()[key], value), key
    with pytest.raises(ValueError, match="padding = dilation"):
        AtrousConv2d(torch.nn.Conv2d(4, 4, 3, padding=1, dilation=2))
