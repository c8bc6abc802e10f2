"""Notebook 05 (the attention explorer) runs headless, draws its static grid and records its numbers."""

from __future__ import annotations

import math

import pytest

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]

PAIRS = {"semseg<-depth", "semseg<-normals", "depth<-semseg", "depth<-normals", "normals<-semseg", "normals<-depth"}


def test_notebook_05_explores_the_attention_of_one_scene(execute_notebook, notebook_outputs) -> None:
    metrics, executed = execute_notebook("05_attention_maps")
    assert metrics["profile"] == "smoke"
    assert metrics["grid"] == [4, 8]  # smoke images are 32x64: H/2 / 4 x W/2 / 4
    assert set(metrics["attention_entropy"]) == PAIRS == set(metrics["alpha_mean_abs"])
    assert all(0.0 <= value <= 1.0 + 1e-9 for value in metrics["attention_entropy"].values())
    for name in ("trained", "alpha = 0"):
        results = metrics["ablation"][name]
        assert set(results) == {"semseg", "depth", "normals"}
        assert all(math.isfinite(v) for task in results.values() for v in task.values() if v is not None)
    figures = notebook_outputs / "05_attention_maps" / "figures"
    assert {"attention_grid.png", "one_query.png", "pair_statistics.png", "ablation.png"} <= {
        path.name for path in figures.iterdir()}
    (grid_cell,) = [cell for cell in executed.cells if "render_query_grid" in cell.source]
    assert any("image/png" in output.get("data", {}) for output in grid_cell.outputs)  # the static fallback

