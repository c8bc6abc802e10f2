"""Plotly 3D point clouds from a sample's depth: see the scene the labels describe.

Every valid depth pixel (u, v, z) is back-projected with the intrinsics, X = z K^-1 [u + .5, v + .5, 1]
(`data.geometry.backproject`), then drawn in a viewer frame (x right, z forward, up = -y) so the
ground is at the bottom. Points are coloured by the image, by class (one legend entry per class)
or by normal ((n + 1) / 2, as in `viz.colour`). Several colourings become a dropdown.

    figure = point_cloud_figure(sample, colour_by=("semseg", "normals"), stride=2)
    figure.show()

In a headless run (papermill, nbconvert) set `plotly.io.renderers.default` with
`use_offline_renderer()`: it inlines plotly.js once, so the figure survives an HTML export.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import torch

from densemtl_lab.data.classes import CITYSCAPES_CLASSES
from densemtl_lab.data.geometry import backproject
from densemtl_lab.tasks import TASKS
from densemtl_lab.viz.colour import colourise, default_palette

#: What a point cloud can be coloured by.
COLOURINGS = ("image", "semseg", "normals")
#: The offline-safe renderer: the plotly mimetype (JupyterLab) plus inlined plotly.js (HTML export).
OFFLINE_RENDERER = "plotly_mimetype+notebook"


class PointCloudError(ValueError):
    """A sample or option that cannot make a point cloud (no depth or K, bad stride or colouring)."""


def use_offline_renderer() -> str:
    """Make plotly figures survive papermill and HTML export without internet; returns the renderer."""
    pio.renderers.default = OFFLINE_RENDERER
    return OFFLINE_RENDERER


def point_cloud(sample: Mapping[str, Any], stride: int = 1,
                max_depth: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame points [N, 3] of the valid depth pixels on a `stride` grid, and their mask [H, W].

    The mask marks which pixels became points (row-major order, as the points).
    """
    for key in ("depth", "K"):
        if key not in sample:
            raise PointCloudError(f"sample has no {key!r}; a point cloud needs metric depth and K")
    if stride < 1:
        raise PointCloudError(f"stride={stride} must be >= 1")
    depth = torch.as_tensor(sample["depth"]).float()
    points = backproject(depth, torch.as_tensor(sample["K"]).float())  # 3, H, W
    z = depth.reshape(depth.shape[-2:])
    mask = (z > 0) & torch.isfinite(z)
    if max_depth is not None:
        mask &= z <= max_depth
    grid = torch.zeros_like(mask)
    grid[::stride, ::stride] = True
    mask &= grid
    return points[:, mask].T.numpy(), mask.numpy()


def point_colours(sample: Mapping[str, Any], colour_by: str, mask: np.ndarray,
                  palette: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """uint8 RGB [N, 3] of the masked pixels, coloured by the image, the class or the normal."""
    if colour_by not in COLOURINGS:
        raise PointCloudError(f"colour_by={colour_by!r}; use one of {', '.join(COLOURINGS)}")
    if colour_by not in sample:
        raise PointCloudError(f"sample has no {colour_by!r} to colour the points by")
    if colour_by == "image":
        rgb = (torch.as_tensor(sample["image"]).float().clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5)
        return rgb.astype(np.uint8)[mask]
    return colourise(colour_by, sample[colour_by], palette)[mask]


def _viewer_frame(points: np.ndarray) -> dict[str, np.ndarray]:
    """Camera frame (x right, y down, z forward) -> plot axes x = right, y = forward, z = up."""
    return {"x": points[:, 0], "y": points[:, 2], "z": -points[:, 1]}


def _css(colours: np.ndarray) -> list[str]:
    return [f"rgb({r},{g},{b})" for r, g, b in colours]


def _class_ids(sample: Mapping[str, Any], colour_by: str, mask: np.ndarray) -> np.ndarray | None:
    """The class id of every point when `colour_by` is a task that predicts classes, else None."""
    if colour_by not in TASKS or not TASKS[colour_by].predicts_classes:
        return None
    return np.asarray(sample[colour_by])[mask]


def _traces(points: np.ndarray, colours: np.ndarray, colour_by: str, classes: np.ndarray | None,
            class_names: Sequence[str], size: float) -> list[go.Scatter3d]:
    """One trace per class when colouring by classes (a legend), one trace otherwise."""
    if classes is None:
        return [go.Scatter3d(**_viewer_frame(points), mode="markers", name=colour_by,
                             marker={"size": size, "color": _css(colours)}, hoverinfo="skip")]
    traces = []
    for class_id in np.unique(classes):
        chosen = classes == class_id
        name = class_names[class_id] if 0 <= class_id < len(class_names) else f"class {class_id}"
        traces.append(go.Scatter3d(**_viewer_frame(points[chosen]), mode="markers", name=name,
                                   marker={"size": size, "color": _css(colours[chosen][:1])[0]},
                                   hoverinfo="name"))
    return traces


def point_cloud_figure(sample: Mapping[str, Any], colour_by: str | Sequence[str] = "semseg", *,
                       stride: int = 2, max_depth: float | None = 40.0, point_size: float = 1.5,
                       class_names: Sequence[str] | None = None,
                       palette: Sequence[Sequence[int]] | None = None, title: str | None = None) -> go.Figure:
    """A 3D scatter of the sample's back-projected depth; several `colour_by` values -> a dropdown.

    `stride` keeps every stride-th pixel per row and column, `max_depth` (metres) drops far points
    that would squash the near scene. Axes are in metres: right, forward and up.
    """
    choices = [colour_by] if isinstance(colour_by, str) else list(colour_by)
    if not choices:
        raise PointCloudError("colour_by is empty; use e.g. 'semseg' or ('semseg', 'normals')")
    points, mask = point_cloud(sample, stride, max_depth)
    names = class_names or CITYSCAPES_CLASSES
    groups = []
    for choice in choices:
        classes = _class_ids(sample, choice, mask) if choice in sample else None
        colours = palette
        if colours is None and classes is not None:
            colours = default_palette(max(int(classes.max(initial=0)) + 1, len(names)))
        groups.append(_traces(points, point_colours(sample, choice, mask, colours), choice, classes, names,
                              point_size))
    figure = go.Figure()
    for index, traces in enumerate(groups):
        for trace in traces:
            trace.visible = index == 0
            figure.add_trace(trace)
    if len(choices) > 1:
        buttons = []
        for index, choice in enumerate(choices):
            visible = [group == index for group, traces in enumerate(groups) for _ in traces]
            buttons.append({"label": f"colour by {choice}", "method": "update", "args": [{"visible": visible}]})
        figure.update_layout(updatemenus=[{"buttons": buttons, "x": 0.0, "y": 1.08, "xanchor": "left"}])
    figure.update_layout(
        title=title or f"{sample.get('name', 'sample')}: {len(points)} points from depth",
        scene={"xaxis_title": "right (m)", "yaxis_title": "forward (m)", "zaxis_title": "up (m)",
               "aspectmode": "data", "camera": {"eye": {"x": -0.2, "y": -1.6, "z": 0.6}}},
        legend={"itemsizing": "constant"}, margin={"l": 0, "r": 0, "t": 60, "b": 0}, height=520,
    )
    return figure
