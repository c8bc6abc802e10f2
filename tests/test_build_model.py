"""Tests for densemtl_lab.models.build_model: every name, options, groups, bad input."""

from __future__ import annotations

import pytest
import torch

from densemtl_lab import config
from densemtl_lab.models import (
    BUILDERS,
    MODEL_NAMES,
    DenseMTL,
    UnknownModelError,
    UnknownOptionError,
    build_model,
    model_options,
)
from densemtl_lab.tasks import UnknownTaskError

TINY = (8, 16, 16, 32, 32)


def _tasks(name: str) -> str:
    return "D" if name.startswith("stl") else "SD"


def test_model_names() -> None:
    assert MODEL_NAMES == ("stl", "stl-deeplab", "mtl", "padnet", "3ways", "densemtl")
    assert tuple(BUILDERS) == MODEL_NAMES  # a builder for every name the configs know, no other


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_returns_task_scale_tensors(name: str) -> None:
    model = build_model(name, _tasks(name), num_classes=5, decoder_widths=TINY)
    out = model(torch.rand(2, 3, 32, 32))
    assert tuple(out) == model.tasks
    for scales in out.values():
        assert 0 in scales and set(scales) <= {0, 1}
        assert scales[0].shape[-2:] == (32, 32)
        assert all(isinstance(t, torch.Tensor) for t in scales.values())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_channels_last_under_autocast(name: str) -> None:
    model = build_model(name, _tasks(name), num_classes=5, decoder_widths=TINY)
    model = model.to(memory_format=torch.channels_last)
    image = torch.rand(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(image)
    for scales in out.values():
        assert scales[0].shape[-2:] == (32, 32)
        assert all(torch.isfinite(t).all() for t in scales.values())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_groups_partition_the_model(name: str) -> None:
    model = build_model(name, _tasks(name), decoder_widths=TINY)
    groups = model.parameter_groups()
    assert set(groups) == {"backbone", "default"}
    ids = [id(p) for group in groups.values() for p in group]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert {id(p) for p in groups["backbone"]} == {id(p) for p in model.encoder.parameters()}
    assert groups["default"]


def test_tasks_come_out_in_canonical_order() -> None:
    model = build_model("mtl", ["normals", "semseg"], decoder_widths=TINY)
    assert model.tasks == ("semseg", "normals")
    assert model.num_classes == 19


def test_densemtl_options_reach_the_modules() -> None:
    model = build_model(
        "densemtl", "SD", decoder_widths=TINY, xtam_ds=2, full_sa=True, alpha=False,
        exchange_mode="prod", aspp_channels=12, dropout=0.1,
    )
    assert isinstance(model, DenseMTL)
    xtam = model.exchange.xtams["semseg_from_depth"]
    assert xtam.ds == 2 and xtam.correlation.alpha is None
    assert xtam.self_attention.conv.out_channels == 16
    assert model.exchange.mode == "prod"
    aspp = model.decoders["depth"].levels[4].conv0
    assert aspp.project[0].out_channels == 12 and aspp.project[-1].p == 0.1


def test_model_options_lists_defaults() -> None:
    assert model_options("padnet") == {"padnet_channels": 256}
    assert model_options("densemtl")["exchange_mode"] == "add"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_configs_name_the_options_each_model_takes(name: str) -> None:
    assert config.MODEL_OPTIONS[name] == tuple(model_options(name))  # configs sit below the models


@pytest.mark.parametrize("name", ["DenseMTL", "dense", "stl_deeplab", "densemtl-sd"])
def test_unknown_model_names_list_the_valid_ones(name: str) -> None:
    with pytest.raises(UnknownModelError, match="stl, stl-deeplab, mtl, padnet, 3ways, densemtl"):
        build_model(name, "SD")


def test_unknown_backbone() -> None:
    with pytest.raises(UnknownModelError, match="backbone='vgg16'"):
        build_model("mtl", "SD", backbone="vgg16")


def test_options_the_model_does_not_take_are_named() -> None:
    message = "'mtl' does not take option.*xtam_ds.*it takes: aspp_channels, dropout"
    with pytest.raises(UnknownOptionError, match=message):
        build_model("mtl", "SD", xtam_ds=2)


@pytest.mark.parametrize("tasks", ["SX", ["semseg", "height"], ""])
def test_unknown_tasks_are_named(tasks) -> None:
    with pytest.raises(UnknownTaskError, match="tasks="):
        build_model("mtl", tasks, decoder_widths=TINY)


def test_bad_widths_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="decoder_widths"):
        build_model("densemtl", "SD", decoder_widths=(8, 16))
