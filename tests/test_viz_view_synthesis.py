"""Tests of densemtl_lab.viz.view_synthesis: the figures of lesson 09."""

from __future__ import annotations

import pytest
import torch

from densemtl_lab.viz.figures import FigureInputError
from densemtl_lab.viz.view_synthesis import (
    automask_figure, scale_ambiguity_figure, sequence_figure, view_synthesis_figure,
)


def test_sequence_figure_puts_the_frames_in_temporal_order():
    image, sources = torch.full((3, 8, 16), 0.5), torch.stack([torch.zeros(3, 8, 16), torch.ones(3, 8, 16)])
    figure = sequence_figure(image, sources, [1, -1])
    assert [ax.get_title() for ax in figure.axes] == ["frame -1", "frame 0", "frame +1"]
    first = figure.axes[0].images[0].get_array()
    assert first.min() == first.max() and first.max() > 0  # frame -1 is the second source (all ones), not zeros


def test_view_synthesis_figure_has_a_row_per_geometry_and_its_mean_errors():
    warped, errors = torch.rand(2, 3, 8, 16), torch.full((2, 8, 16), 0.25)
    figure = view_synthesis_figure(torch.rand(3, 8, 16), {"true": (warped, errors), "wrong": (warped, 2 * errors)},
                                   [-1, 1])
    image_axes = [ax for ax in figure.axes if ax.images]
    assert len(image_axes) == 2 * 5
    assert "mean error 0.500" in [ax.get_xlabel() for ax in image_axes]
    assert figure.get_suptitle()
    with pytest.raises(FigureInputError, match="rows is empty"):
        view_synthesis_figure(torch.rand(3, 8, 16), {}, [-1, 1])


def test_scale_ambiguity_figure_draws_each_curve_and_checks_its_length():
    figure = scale_ambiguity_figure([0.5, 1, 2], {"depth": [0.2, 0.1, 0.2], "both": [0.1, 0.1, 0.1]})
    assert [line.get_label() for line in figure.axes[0].get_lines() if not line.get_label().startswith("_")] == [
        "depth", "both"]
    with pytest.raises(FigureInputError, match="has 2 values for 3 factors"):
        scale_ambiguity_figure([0.5, 1, 2], {"depth": [0.2, 0.1]})


def test_automask_figure_reports_the_share_of_pixels_kept():
    mask = torch.zeros(8, 16)
    mask[:, :4] = 1
    figure = automask_figure(torch.rand(3, 8, 16), mask, torch.zeros(8, 16))
    assert [ax.get_title() for ax in figure.axes[1:]] == ["moving camera: 25 % kept", "camera standing still: 0 % kept"]
