"""Tests of densemtl_lab.viz.widgets: the pure renderers and the slider wiring."""

from __future__ import annotations

import ipywidgets
import pytest
import torch

from densemtl_lab.viz import widgets
from densemtl_lab.viz.figures import FigureInputError

H, W = 8, 16


class TinyScenes:
    """A three-sample dataset whose image brightness is index / 2."""

    class_names = ("road",)
    palette = ((128, 64, 128),)

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> dict:
        return {"image": torch.full((3, H, W), index / 2), "semseg": torch.zeros(H, W, dtype=torch.int64),
                "edges": torch.zeros(1, H, W), "name": f"tiny-{index}"}


def test_render_scene_titles_the_index_and_shows_its_labels():
    figure = widgets.render_scene(TinyScenes(), 2, "S")
    assert figure._suptitle.get_text() == "scene 2 of 3: tiny-2"
    assert figure.axes[0].images[0].get_array()[0, 0, 0] == pytest.approx(1.0)
    assert [t.get_text() for t in figure.axes[1].get_legend().get_texts()] == ["road"]


def test_render_scene_grid_has_one_row_per_index():
    figure = widgets.render_scene_grid(TinyScenes(), [0, 2])
    images = [ax for ax in figure.axes if ax.images]
    assert len(images) == 2 * 3  # image, semseg, edges per row
    assert [images[0].get_ylabel(), images[3].get_ylabel()] == ["tiny-0", "tiny-2"]


def test_render_severity_row_calls_the_sampler_per_severity():
    asked = []

    def sample_at(severity: float) -> dict:
        asked.append(severity)
        return {"image": torch.full((3, H, W), severity)}

    figure = widgets.render_severity_row(sample_at, (0.0, 0.5, 1.0))
    assert asked == [0.0, 0.5, 1.0]
    assert [ax.get_title() for ax in figure.axes] == ["severity 0", "severity 0.5", "severity 1"]
    assert figure.axes[1].images[0].get_array()[0, 0, 0] == pytest.approx(0.5)
    with pytest.raises(FigureInputError, match="severities is empty"):
        widgets.render_severity_row(sample_at, ())


def test_scene_browser_slider_covers_the_dataset_and_waits_for_release():
    box = widgets.scene_browser(TinyScenes())
    slider = box.children[0].children[0]
    assert (slider.min, slider.max, slider.value, slider.continuous_update) == (0, 2, 0, False)
    assert isinstance(box.children[1], ipywidgets.Output)


def test_severity_explorer_redraws_with_the_new_value():
    drawn = []
    box = widgets.severity_explorer(lambda s: drawn.append(s) or widgets.render_severity_row(
        lambda v: {"image": torch.zeros(3, H, W)}, (s,)), value=0.25)
    slider = box.children[0].children[0]
    slider.value = 0.75
    assert drawn == [0.25, 0.75]
    assert slider.continuous_update is False


def test_severity_explorer_rejects_a_value_outside_the_range():
    with pytest.raises(widgets.WidgetOptionError, match="value=2"):
        widgets.severity_explorer(lambda s: None, value=2.0)
