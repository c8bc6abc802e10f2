"""Tests of densemtl_lab.viz.figures: panels, colours, decoded predictions, curves and tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densemtl_lab.tasks import IGNORE_INDEX, TASKS
from densemtl_lab.train import History
from densemtl_lab.viz import figures
from densemtl_lab.viz.colour import colourise

H, W = 8, 16


def make_sample() -> dict:
    """A tiny data-contract sample: left half road (0), right half car (13), one ignored pixel."""
    semseg = torch.zeros(H, W, dtype=torch.int64)
    semseg[:, W // 2:] = 13
    semseg[0, 0] = IGNORE_INDEX
    depth = torch.linspace(1.0, 40.0, H * W).reshape(1, H, W)
    depth[0, -1, -1] = 0.0  # invalid
    normals = torch.zeros(3, H, W)
    normals[2] = -1.0
    edges = torch.zeros(1, H, W)
    edges[:, :, W // 2] = 1.0
    return {"image": torch.rand(3, H, W), "semseg": semseg, "depth": depth, "normals": normals,
            "edges": edges, "K": torch.eye(3), "name": "tiny", "domain": "toy-source"}


def image_axes(figure) -> list:
    return [ax for ax in figure.axes if ax.images and ax.get_label() != "<colorbar>"]


def test_present_classes_skips_the_ignore_index():
    assert figures.present_classes(make_sample()["semseg"]) == [0, 13]


@pytest.mark.parametrize("values, expected", [
    ([2.0, 2.0, 0.0], (2.0, 2.002)),       # one valid depth: far is nudged past near
    ([0.0, 0.0], (1.0, 80.0)),             # nothing valid: the evaluation range
])
def test_depth_range(values, expected):
    assert figures.depth_range(torch.tensor(values)) == pytest.approx(expected)


def test_show_sample_draws_every_label_with_legend_and_colour_bar():
    figure = figures.show_sample(make_sample())
    panels = image_axes(figure)
    assert [ax.get_title() for ax in panels] == ["image", *(task.title for task in TASKS.values())]
    legend = [text.get_text() for text in panels[1].get_legend().get_texts()]
    assert legend == ["road", "car"]
    assert any(ax.get_ylabel() == "metres" for ax in figure.axes)  # the depth colour bar
    assert figure._suptitle.get_text() == "tiny"


def test_show_sample_depth_colours_match_the_colouriser():
    sample = make_sample()
    figure = figures.show_sample(sample, "D")
    shown = image_axes(figure)[1].images[0]
    rgb = (shown.to_rgba(shown.get_array(), bytes=True)[..., :3]).astype(int)
    assert np.abs(rgb - colourise("depth", sample["depth"]).astype(int)).max() <= 3


@pytest.mark.parametrize("tasks, titles", [("S", ["image", "semantic segmentation"]),
                                           ("edges,depth", ["image", "depth (m)", "edges"])])
def test_show_sample_restricted_to_tasks(tasks, titles):
    figure = figures.show_sample(make_sample(), tasks, title="chosen")
    assert [ax.get_title() for ax in image_axes(figure)] == titles
    assert figure._suptitle.get_text() == "chosen"


def test_show_sample_rejects_a_task_without_label():
    sample = make_sample()
    del sample["normals"]
    with pytest.raises(figures.FigureInputError, match="no label for normals"):
        figures.show_sample(sample, "SN")


def make_batch_and_outputs(batch_size: int = 3) -> tuple[dict, dict]:
    samples = [make_sample() for _ in range(batch_size)]
    batch = {key: torch.stack([s[key] for s in samples]) for key in ("image", "semseg", "depth", "edges")}
    logits = torch.zeros(batch_size, 19, H, W)
    logits[:, 8] = 1.0  # every pixel: vegetation
    outputs = {"semseg": {0: logits, 1: logits[..., ::2, ::2]},
               "depth": {0: torch.full((batch_size, 1, H, W), 65536.0 / 1001.0)},  # 10 m
               "normals": {0: torch.randn(batch_size, 3, H, W)}}
    return batch, outputs


def test_show_predictions_layout_and_decoded_semseg():
    batch, outputs = make_batch_and_outputs()
    figure = figures.show_predictions(batch, outputs, max_images=2)
    grid = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]
    assert len(grid) == 2 * 2 * (1 + 3)  # 2 images x (label, prediction) rows x (image + 3 tasks)
    predicted = grid[4 + 1].images[0].get_array()  # row 1 (image 0 prediction), column 1 (semseg)
    assert np.array_equal(np.asarray(predicted), colourise("semseg", torch.full((H, W), 8)))
    assert grid[0].get_ylabel() == "image 0\nlabel"
    assert grid[4].get_ylabel() == "image 0\nprediction"


def test_show_predictions_marks_a_missing_label():
    batch, outputs = make_batch_and_outputs(1)
    figure = figures.show_predictions(batch, outputs, "N")
    label_panel = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"][1]
    assert [text.get_text() for text in label_panel.texts] == ["no label"]


@pytest.mark.parametrize("kwargs, message", [({"tasks": "E"}, "outputs have no edges"),
                                             ({"max_images": 0}, "nothing to draw")])
def test_show_predictions_rejects_bad_requests(kwargs, message):
    batch, outputs = make_batch_and_outputs(1)
    with pytest.raises(figures.FigureInputError, match=message):
        figures.show_predictions(batch, outputs, **kwargs)


@pytest.mark.parametrize("values, smoothing, expected", [
    ([1.0, 1.0, 1.0], 0.9, [1.0, 1.0, 1.0]),   # a constant stays constant (bias correction)
    ([0.0, 2.0], 0.5, [0.0, 1.0 / 0.75]),      # (0.5 * 0 + 0.5 * 2) / (1 - 0.5^2)
    ([3.0, 5.0], 0.0, [3.0, 5.0]),             # no smoothing
])
def test_smooth(values, smoothing, expected):
    assert figures.smooth(values, smoothing) == pytest.approx(expected)


def test_smooth_rejects_one():
    with pytest.raises(figures.FigureInputError, match="smoothing=1.0"):
        figures.smooth([1.0], 1.0)


def make_history(offset: float = 0.0) -> History:
    steps = [{"step": i, "loss": 5.0 - i + offset, "loss/semseg": 3.0, "loss/depth": 2.0 - 0.1 * i}
             for i in range(1, 5)]
    evals = [{"step": 2, "semseg/mIoU": 10.0, "depth/rmse": 6.0, "weight/semseg": 1.0},
             {"step": 4, "semseg/mIoU": 20.0, "depth/rmse": 5.0, "weight/semseg": 0.5}]
    return History(steps, evals)


def test_default_history_keys_are_task_losses_then_main_metrics():
    assert figures.default_history_keys(make_history()) == ["loss/semseg", "loss/depth", "semseg/mIoU",
                                                            "depth/rmse"]


def test_plot_history_one_panel_per_key_and_one_legend_entry_per_run():
    figure = figures.plot_history({"fixed": make_history(), "dwa": make_history(1.0).to_dict()},
                                  ["loss", "weight/semseg"])
    visible = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["loss", "weight of semseg"]
    assert [t.get_text() for t in visible[1].get_legend().get_texts()] == ["fixed", "dwa"]
    assert list(visible[1].lines[0].get_ydata()) == [1.0, 0.5]
    assert visible[0].get_xlabel() == "step"


def test_plot_history_rejects_an_unknown_column():
    with pytest.raises(figures.FigureInputError, match="no column 'normals/mean_angle'"):
        figures.plot_history(make_history(), ["normals/mean_angle"])


def test_metrics_table_marks_directions_and_best_values():
    results = {"STL": {"semseg": {"mIoU": 30.0}, "depth": {"rmse": 4.0}},
               "MTL": {"semseg": {"mIoU": 32.0}, "depth": {"rmse": 4.5}, "delta_m": -1.25}}
    figure = figures.metrics_table(results, digits=1)
    table = figure.axes[0].tables[0]
    cells = table.get_celld()
    assert [cells[0, c].get_text().get_text() for c in range(3)] == ["semseg/mIoU ↑", "depth/rmse ↓",
                                                                      "delta_m ↑"]
    assert [cells[1, c].get_text().get_text() for c in range(3)] == ["30.0", "4.0", "–"]
    assert cells[2, 2].get_text().get_text() == "-1.2"
    assert cells[2, 0].get_text().get_fontweight() == "bold"   # higher mIoU
    assert cells[1, 1].get_text().get_fontweight() == "bold"   # lower RMSE
    assert cells[2, 1].get_text().get_fontweight() == "normal"


def test_metrics_table_rejects_empty_results():
    with pytest.raises(figures.FigureInputError, match="results is empty"):
        figures.metrics_table({})


def test_show_samples_one_row_per_sample():
    first, second = make_sample(), make_sample()
    second["name"] = "other"
    figure = figures.show_samples([first, second], "SE", title="two")
    panels = image_axes(figure)
    assert len(panels) == 2 * 3
    assert [panels[0].get_ylabel(), panels[3].get_ylabel()] == ["tiny", "other"]


def test_class_frequencies_by_hand():
    labels = [torch.tensor([[0, 0], [13, IGNORE_INDEX]]), torch.tensor([[13, 13], [13, 2]])]
    assert figures.class_frequencies(labels) == pytest.approx({0: 2 / 7, 2: 1 / 7, 13: 4 / 7})
    with pytest.raises(figures.FigureInputError, match="no labelled pixel"):
        figures.class_frequencies([torch.full((2, 2), IGNORE_INDEX)])


def test_plot_class_frequencies_sorts_bars_and_names_them():
    figure = figures.plot_class_frequencies({0: 0.25, 13: 0.75})
    ax = figure.axes[0]
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["car", "road"]
    assert [bar.get_height() for bar in ax.patches] == pytest.approx([75.0, 25.0])
    assert ax.get_ylabel() == "pixels (%)"


def test_default_history_keys_of_several_runs_put_losses_first():
    single = {"steps": [{"step": 1, "loss": 1.0, "loss/depth": 1.0}], "evals": [{"step": 1, "depth/rmse": 2.0}]}
    assert figures.default_history_keys({"S": make_history(), "D": single}) == [
        "loss/semseg", "loss/depth", "semseg/mIoU", "depth/rmse"]


def test_plot_task_deltas_groups_bars_by_task_in_canonical_order():
    figure = figures.plot_task_deltas({"fixed": {"depth": -2.0, "semseg": 5.0}, "dwa": {"semseg": 1.0}})
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["semseg\n(mIoU)", "depth\n(rmse)"]
    heights = [bar.get_height() for bar in ax.patches]
    assert heights[:3] == [5.0, -2.0, 1.0] and np.isnan(heights[3])  # dwa has no depth
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["fixed", "dwa"]


def test_show_predictions_draws_predicted_depth_on_the_label_range():
    batch, outputs = make_batch_and_outputs(1)
    figure = figures.show_predictions(batch, outputs, "D")
    label_panel, predicted_panel = [ax for ax in figure.axes if ax.images and ax.get_label() != "<colorbar>"][1::2]
    expected = figures.depth_range(batch["depth"][0])
    for panel in (label_panel, predicted_panel):
        norm = panel.images[0].norm
        assert (norm.vmin, norm.vmax) == pytest.approx(expected)
