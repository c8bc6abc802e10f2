"""Tests of densemtl_lab.viz.pointcloud: back-projected points, colours, traces and the dropdown."""

from __future__ import annotations

import numpy as np
import plotly.io as pio
import pytest
import torch

from densemtl_lab.viz import pointcloud
from densemtl_lab.viz.colour import colourise

H, W = 4, 6


def make_sample() -> dict:
    """f = 2, principal point at the image centre; depth 2 m, except one invalid and one far pixel."""
    K = torch.tensor([[2.0, 0.0, W / 2], [0.0, 2.0, H / 2], [0.0, 0.0, 1.0]])
    depth = torch.full((1, H, W), 2.0)
    depth[0, 0, 0] = 0.0
    depth[0, 2, 2] = 60.0
    semseg = torch.zeros(H, W, dtype=torch.int64)
    semseg[2:] = 13
    normals = torch.zeros(3, H, W)
    normals[1] = -1.0
    return {"image": torch.full((3, H, W), 0.5), "depth": depth, "K": K, "semseg": semseg,
            "normals": normals, "name": "tiny"}


def test_point_cloud_back_projects_valid_pixels():
    points, mask = pointcloud.point_cloud(make_sample())
    assert mask.sum() == H * W - 1 and not mask[0, 0]
    # pixel (u=1, v=0): x = z (u + .5 - cx) / f = 2 (1.5 - 3) / 2 = -1.5, y = 2 (0.5 - 2) / 2 = -1.5
    assert points[0] == pytest.approx([-1.5, -1.5, 2.0])


@pytest.mark.parametrize("stride, max_depth, expected", [
    (1, 40.0, H * W - 2),  # the invalid and the far pixel dropped
    (2, None, 5),          # rows 0, 2 x columns 0, 2, 4, less the invalid (0, 0)
])
def test_point_cloud_stride_and_max_depth(stride, max_depth, expected):
    points, mask = pointcloud.point_cloud(make_sample(), stride, max_depth)
    assert points.shape == (expected, 3) and mask.sum() == expected


@pytest.mark.parametrize("drop, message", [("depth", "no 'depth'"), ("K", "no 'K'")])
def test_point_cloud_needs_depth_and_K(drop, message):
    sample = make_sample()
    del sample[drop]
    with pytest.raises(pointcloud.PointCloudError, match=message):
        pointcloud.point_cloud(sample)


def test_point_colours_follow_the_colourisers():
    sample = make_sample()
    _, mask = pointcloud.point_cloud(sample)
    assert np.array_equal(pointcloud.point_colours(sample, "normals", mask),
                          colourise("normals", sample["normals"])[mask])
    assert (pointcloud.point_colours(sample, "image", mask) == 128).all()
    with pytest.raises(pointcloud.PointCloudError, match="colour_by='edges'"):
        pointcloud.point_colours(sample, "edges", mask)


def test_figure_has_one_trace_per_class_in_a_viewer_frame():
    figure = pointcloud.point_cloud_figure(make_sample(), "semseg", stride=1, max_depth=None)
    assert [trace.name for trace in figure.data] == ["road", "car"]
    road = figure.data[0]
    # first road point: camera (-1.5, -1.5, 2) -> right -1.5, forward 2, up 1.5
    assert (road.x[0], road.y[0], road.z[0]) == pytest.approx((-1.5, 2.0, 1.5))
    assert figure.layout.scene.zaxis.title.text == "up (m)"


def test_several_colourings_make_a_dropdown():
    figure = pointcloud.point_cloud_figure(make_sample(), ("semseg", "normals"))
    assert [trace.visible for trace in figure.data] == [True, True, False]
    buttons = figure.layout.updatemenus[0].buttons
    assert [button.label for button in buttons] == ["colour by semseg", "colour by normals"]
    assert buttons[1].args[0]["visible"] == [False, False, True]


def test_use_offline_renderer(monkeypatch):
    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)
    assert pointcloud.use_offline_renderer() == pio.renderers.default == "plotly_mimetype+notebook"
