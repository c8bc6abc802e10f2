"""Tests of densemtl_lab.viz.conflicts: directions in the span of the task gradients, and the cosine figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densemtl_lab.step_cost import StepCost
from densemtl_lab.viz.conflicts import (
    aggregated_directions, alignment_table, cosine_history_figure, directions_figure, span_coordinates,
    step_cost_figure,
)
from densemtl_lab.viz.figures import FigureInputError

#: Two conflicting task gradients in the plane (cosine -0.97): the mean step raises the first task's loss.
PLANE = torch.tensor([[1.0, 0.0], [-2.0, 0.5]])


def embedded(jacobian: torch.Tensor, dimensions: int = 6) -> torch.Tensor:
    """The same gradients inside a larger parameter space, turned by a random rotation."""
    rotation, _ = torch.linalg.qr(torch.randn(dimensions, dimensions, generator=torch.Generator().manual_seed(0)))
    padded = torch.zeros(jacobian.shape[0], dimensions)
    padded[:, :jacobian.shape[1]] = jacobian
    return padded @ rotation.T


def test_the_span_coordinates_do_not_depend_on_the_parameter_space():
    rows, coordinates = span_coordinates(embedded(PLANE), {"mean": embedded(PLANE).mean(0)})
    assert np.allclose(rows, PLANE.numpy(), atol=1e-6)  # axis 1 along g1, axis 2 the rest of g2 (positive)
    assert np.allclose(coordinates["mean"], [-0.5, 0.25], atol=1e-6)


def test_a_vector_outside_the_span_cannot_be_drawn_there():
    with pytest.raises(FigureInputError, match="outside|does not lie in the span"):
        span_coordinates(embedded(PLANE), {"stray": torch.ones(6)})


def test_the_aggregators_answers_on_a_known_conflict():
    jacobian = embedded(PLANE)
    directions = aggregated_directions(jacobian)
    _, coordinates = span_coordinates(jacobian, directions)
    assert np.allclose(coordinates["Mean"], [-0.5, 0.25], atol=1e-5)
    g1, g2 = PLANE.double()
    pcgrad = (g1 - (g1 @ g2) / (g2 @ g2) * g2) + (g2 - (g2 @ g1) / (g1 @ g1) * g1)  # each projected off the other, summed
    assert np.allclose(coordinates["PCGrad"], pcgrad.numpy(), atol=1e-5)
    table = alignment_table(jacobian, ["a", "b"], directions)
    assert table["Mean"]["a"] < 0  # the mean step raises task a's loss
    for name in ("MGDA", "UPGrad"):  # these never point against a task
        assert min(table[name]["a"], table[name]["b"]) >= -1e-5, name
    assert table["Mean"]["norm"] == pytest.approx(float(np.hypot(0.5, 0.25)), rel=1e-5)


@pytest.mark.parametrize("tasks", [["semseg", "depth"], ["semseg", "depth", "normals"]])
def test_the_directions_figure_draws_every_gradient_and_direction(tasks):
    jacobian = embedded(torch.tensor([[1.0, 0.0, 0.0], [-2.0, 0.5, 0.0], [0.3, 0.2, 1.0]])[:len(tasks)])
    figure = directions_figure(jacobian, tasks, aggregated_directions(jacobian), title="one batch")
    (axes,) = figure.axes
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert labels == [f"g {task}" for task in tasks] + ["Mean", "MGDA", "PCGrad", "UPGrad"]
    assert axes.get_title() == "one batch" and (axes.name == "3d") == (len(tasks) == 3)


def test_the_cosine_history_shows_each_pair_and_the_mean_matrix():
    rows = [{"step": 1, "loss": 1.0},
            {"step": 2, "grad_cosine/semseg~depth": 0.5, "grad_cosine/semseg~normals": -0.2,
             "grad_cosine/depth~normals": 0.1},
            {"step": 4, "grad_cosine/semseg~depth": 0.3, "grad_cosine/semseg~normals": -0.4,
             "grad_cosine/depth~normals": 0.3}]
    figure = cosine_history_figure(rows, title="MTL")
    curves, matrix = figure.axes[:2]
    assert [line.get_label() for line in curves.get_lines() if not line.get_label().startswith("_")] == [
        "semseg / depth", "semseg / normals", "depth / normals"]
    assert np.allclose(matrix.images[0].get_array(), [[1, 0.4, -0.3], [0.4, 1, 0.2], [-0.3, 0.2, 1]])
    with pytest.raises(FigureInputError, match="train.conflict_every"):
        cosine_history_figure(rows[:1], title="none")


def test_the_step_cost_figure_labels_each_bar_with_its_multiple_of_the_weighted_sum():
    costs = {"none": StepCost(0.4, 0.3, (0.38, 0.4, 0.42), None),
             "upgrad": StepCost(1.0, 0.9, (1.0, 1.1, 0.9), {"semseg": 1.0})}
    figure = step_cost_figure(costs, title="DenseMTL SDN")
    axes = figure.axes[0]
    assert [patch.get_height() for patch in axes.patches] == [0.4, 1.0]
    assert [text.get_text() for text in axes.texts] == ["x1.00", "x2.50"]
    assert [label.get_text() for label in axes.get_xticklabels()] == ["weighted sum", "upgrad"]
    assert axes.get_title() == "DenseMTL SDN" and axes.get_ylabel()
    with pytest.raises(FigureInputError, match="time it too"):
        step_cost_figure({"upgrad": costs["upgrad"]}, title="no reference")
