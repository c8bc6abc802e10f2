"""Tests for densemtl_lab.models.densemtl: paper sizes, outputs, inspection, gradient flow."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from densemtl_lab.models.decoder import DecoderConfig
from densemtl_lab.models.densemtl import DenseMTL
from densemtl_lab.models.encoder import InputSizeError
from densemtl_lab.models.mteb import ExchangeConfigError
from densemtl_lab.models.xtam import XTAMConfig

TINY = DecoderConfig((8, 16, 16, 32, 32))


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _set_alpha(model: nn.Module, value: float) -> None:
    for name, param in model.named_parameters():
        if name.endswith("alpha"):
            nn.init.constant_(param, value)


@pytest.mark.parametrize(
    "tasks, num_classes, total, exchange",
    [
        ("SD", 16, 87_399_458, 773_120),
        ("SDN", 16, 111_006_952, 2_318_592),
        # The reference's SDNE figure is its NYUDv2 config, whose semseg has 40 classes.
        ("SDNE", 40, 135_391_516, 4_636_672),
        # At 16 classes the two semseg heads (128*c + c + 64*c + c) lose 24 * 194 parameters.
        ("SDNE", 16, 135_391_516 - 24 * 194, 4_636_672),
    ],
)
def test_paper_parameter_counts_match_the_official_code(
    tasks: str, num_classes: int, total: int, exchange: int
) -> None:
    with torch.device("meta"):
        model = DenseMTL(tasks, num_classes, "resnet101")
    assert _count(model) == total
    assert _count(model.exchange) == exchange
    assert _count(model.encoder) == 42_500_160


def test_outputs_at_both_scales() -> None:
    model = DenseMTL("SDNE", 5, decoder=TINY)
    out = model(torch.rand(2, 3, 32, 64))
    channels = {"semseg": 5, "depth": 1, "normals": 3, "edges": 2}
    assert list(out) == list(channels)
    for task, c in channels.items():
        assert {s: tuple(t.shape) for s, t in out[task].items()} == {0: (2, c, 32, 64), 1: (2, c, 16, 32)}


def test_attention_inspection_matches_the_fast_path() -> None:
    torch.manual_seed(0)
    model = DenseMTL("SDN", 4, decoder=TINY, xtam=XTAMConfig(ds=2)).eval()
    _set_alpha(model, 0.7)
    image = torch.rand(2, 3, 32, 64)
    with torch.no_grad():
        fast = model(image)
        slow, inspection = model(image, return_attention=True)
    assert len(inspection) == 6 and ("depth", "semseg") in inspection
    pair = inspection["normals", "depth"]
    assert pair.grid == (8, 16)
    assert pair.attention.shape == (2, 128, 128)
    assert pair.self_attention.shape == (2, 8, 16, 32)
    assert pair.correlation.shape == pair.directional.shape == (2, 16, 16, 32)
    for task in model.tasks:
        for scale in (0, 1):
            assert torch.allclose(fast[task][scale], slow[task][scale], atol=1e-5)


def test_scale_1_comes_from_the_features_before_the_exchange() -> None:
    model = DenseMTL("SD", 3, decoder=TINY).eval()
    _set_alpha(model, 1.0)
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        half = model.features_half(image)
        out = model(image)
    for task, decoder in model.decoders.items():
        assert half.before[task].shape == half.after[task].shape == (1, 16, 16, 16)
        assert torch.equal(out[task][1], decoder.predict(half.before[task], 1))
        assert not torch.equal(half.after[task], half.before[task])


def _backward(model: DenseMTL) -> None:
    model.zero_grad()
    out = model(torch.rand(2, 3, 32, 32))
    sum(o.square().mean() for scales in out.values() for o in scales.values()).backward()


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    model = DenseMTL("SDN", 4, decoder=TINY)
    _backward(model)  # alpha = 0: the reference's first step
    alphas = [p for n, p in model.named_parameters() if n.endswith("alpha")]
    assert len(alphas) == 6 and all(a.grad.abs().sum() > 0 for a in alphas)
    projections = [p for n, p in model.named_parameters() if ".correlation." in n and not n.endswith("alpha")]
    assert projections and all(torch.all(p.grad == 0) for p in projections)

    _set_alpha(model, 0.5)
    _backward(model)
    silent = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert silent == []


def test_inspectable_path_with_channels_last_and_autocast() -> None:
    model = DenseMTL("SD", 3, decoder=TINY).to(memory_format=torch.channels_last)
    image = torch.rand(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, inspection = model(image, return_attention=True)
    assert out["semseg"][0].shape == (2, 3, 32, 32)
    attention = inspection["semseg", "depth"].attention
    assert attention.shape == (2, 16, 16)
    assert torch.allclose(attention.float().sum(-1), torch.ones(2, 16), atol=1e-2)


def test_image_size_not_divisible_by_16_is_named() -> None:
    model = DenseMTL("SD", 3, decoder=TINY)
    with pytest.raises(InputSizeError, match=r"image has shape \(1, 3, 40, 64\)"):
        model(torch.rand(1, 3, 40, 64))


def test_one_task_has_nothing_to_exchange() -> None:
    with pytest.raises(ExchangeConfigError, match="at least two tasks"):
        DenseMTL("S", 3, decoder=TINY)
