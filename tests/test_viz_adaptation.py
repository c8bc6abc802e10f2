"""Tests of densemtl_lab.viz.adaptation: the discriminator inputs and the gap-by-severity figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densemtl_lab.viz.adaptation import discriminator_inputs_figure, metric_by_severity_figure
from densemtl_lab.viz.figures import FigureInputError

H, W = 8, 16


def maps() -> dict[str, torch.Tensor]:
    """Two images: semseg's self-information (4 classes, summing to 0.2 and 0.8), depth beyond [0, 1]."""
    semseg = torch.stack([torch.full((4, H, W), 0.05), torch.full((4, H, W), 0.2)])
    depth = torch.stack([torch.full((1, H, W), 0.5), torch.full((1, H, W), 1.5)])
    return {"semseg": semseg, "depth": depth}


def test_discriminator_inputs_draw_one_row_per_image_with_each_map_summed_and_its_mean():
    figure = discriminator_inputs_figure(torch.rand(2, 3, H, W), maps(), title="inputs")
    drawn = [ax for ax in figure.axes if ax.images and ax.get_label() != "<colorbar>"]
    titles = [ax.get_title() for ax in drawn]
    assert titles == ["source image", "semseg input, sum of 4 channels: mean 0.20", "depth input: mean 0.50",
                      "target image", "semseg input, sum of 4 channels: mean 0.80", "depth input: mean 1.50"]
    assert np.allclose(drawn[4].images[0].get_array(), 0.8)
    assert np.allclose(drawn[5].images[0].get_array(), 1.0)  # 1.5 is beyond the source range: clipped
    assert figure.get_suptitle() == "inputs"


def test_discriminator_inputs_need_one_row_name_per_image():
    with pytest.raises(FigureInputError, match="3 images but 2 row names"):
        discriminator_inputs_figure(torch.rand(3, 3, H, W), {task: m[:1].repeat(3, 1, 1, 1)
                                                            for task, m in maps().items()}, title="x")


def test_metric_by_severity_draws_the_target_curve_and_the_source_level():
    figure = metric_by_severity_figure({0.0: 80.0, 0.5: 60.0, 1.0: 30.0}, 85.0, metric="mIoU (%)", title="gap")
    (ax,) = figure.axes
    target, source = ax.get_lines()
    assert list(target.get_xdata()) == [0.0, 0.5, 1.0] and list(target.get_ydata()) == [80.0, 60.0, 30.0]
    assert list(source.get_ydata()) == [85.0, 85.0]
    assert ax.get_title() == "gap" and ax.get_ylabel() == "mIoU (%)"
