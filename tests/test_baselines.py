"""Tests for densemtl_lab.models.baselines: STL, DeepLab STL, MTL, PAD-Net and 3-Ways."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from densemtl_lab.models.baselines import (
    CrossTaskDistillation,
    DeepLabSingleTask,
    PADNet,
    SharedEncoderMTL,
    SingleTaskNet,
    ThreeWaysMTL,
)
from densemtl_lab.models.decoder import DecoderConfig
from densemtl_lab.models.encoder import TaskCountError

TINY = DecoderConfig((8, 16, 16, 32, 32))
IMAGE = (2, 3, 32, 64)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _shapes(out: dict) -> dict:
    return {t: {s: tuple(x.shape) for s, x in scales.items()} for t, scales in out.items()}


@pytest.mark.parametrize(
    "model",
    [
        lambda: SharedEncoderMTL("SD", 4, decoder=TINY),
        lambda: ThreeWaysMTL("SD", 4, decoder=TINY),
        lambda: PADNet("SD", 4, channels=16),
    ],
    ids=["mtl", "3ways", "padnet"],
)
def test_multi_task_baselines_predict_both_scales(model) -> None:
    out = model()(torch.rand(*IMAGE))
    assert _shapes(out) == {
        "semseg": {0: (2, 4, 32, 64), 1: (2, 4, 16, 32)},
        "depth": {0: (2, 1, 32, 64), 1: (2, 1, 16, 32)},
    }


def test_single_task_nets() -> None:
    assert _shapes(SingleTaskNet("N", decoder=TINY)(torch.rand(*IMAGE))) == {
        "normals": {0: (2, 3, 32, 64), 1: (2, 3, 16, 32)}
    }
    assert _shapes(DeepLabSingleTask("E", channels=16)(torch.rand(*IMAGE))) == {"edges": {0: (2, 2, 32, 64)}}


@pytest.mark.parametrize("model", [SingleTaskNet, DeepLabSingleTask])
def test_single_task_nets_refuse_several_tasks(model) -> None:
    with pytest.raises(TaskCountError, match=r"predicts one task, got tasks=\('semseg', 'depth'\)"):
        model("SD")


def test_paper_deeplab_head_size() -> None:
    # docs/faithfulness.md, "Parameter counts": ResNet-101 + DeepLab head (16.13 M) ~ 58.6 M per task
    with torch.device("meta"):
        model = DeepLabSingleTask("S", 16, "resnet101")
    assert [model.head[0].convs[i][0].dilation for i in (1, 2, 3)] == [(12, 12), (24, 24), (36, 36)]
    assert _count(model.head) == 15_535_104 + 256 * 256 * 9 + 2 * 256 + 256 * 16 + 16
    assert _count(model) == 42_500_160 + 16_129_552


def test_distillation_adds_gated_features_of_the_other_tasks_by_hand() -> None:
    distil = CrossTaskDistillation(("semseg", "depth", "normals"), 2)
    with torch.no_grad():
        for gate in distil.gates.values():
            gate.gate.weight.zero_()  # sigmoid(0) = 1/2
            gate.conv.weight.zero_()
            gate.conv.weight[:, :, 1, 1] = torch.eye(2)  # identity 3x3 kernel
    features = {t: torch.full((1, 2, 3, 3), v) for t, v in (("semseg", 1.0), ("depth", 2.0), ("normals", 4.0))}
    out = distil(features)
    # f~_t = f_t + (sum of the others) / 2
    assert torch.allclose(out["semseg"], torch.full((1, 2, 3, 3), 1.0 + 3.0))
    assert torch.allclose(out["depth"], torch.full((1, 2, 3, 3), 2.0 + 2.5))
    assert torch.allclose(out["normals"], torch.full((1, 2, 3, 3), 4.0 + 1.5))


def test_one_task_distillation_is_the_identity() -> None:
    features = {"depth": torch.randn(1, 4, 2, 2)}
    assert torch.equal(CrossTaskDistillation(("depth",), 4)(features)["depth"], features["depth"])


def test_three_ways_distils_at_quarter_resolution() -> None:
    model = ThreeWaysMTL("SD", 4, decoder=TINY)
    seen = {}
    model.distillation.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    model(torch.rand(*IMAGE))
    assert {t: tuple(x.shape) for t, x in seen["x"].items()} == {"semseg": (2, 16, 8, 16), "depth": (2, 16, 8, 16)}
    assert len(model.distillation.gates) == 2


def test_padnet_structure() -> None:
    with torch.device("meta"):
        model = PADNet("SDN", 16, "resnet101")
    assert model.initial["semseg"][0].downsample[0].in_channels == 2048
    assert model.initial_heads["depth"].out_channels == 1
    assert len(model.distillation.gates) == 6
    with pytest.raises(ValueError, match="padnet_channels=30"):
        PADNet("SD", channels=30)
