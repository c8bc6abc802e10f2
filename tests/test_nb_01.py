"""Notebook 01 (the data: contract, labels, 3D, domain gap, real loaders) runs headless."""

from __future__ import annotations

import math

import pytest

from densemtl_lab.data.fixtures import WRITERS

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]

TOY_CLASSES = {"road", "sidewalk", "building", "pole", "vegetation", "terrain", "sky", "car"}


def test_notebook_01_records_data_statistics(execute_notebook, notebook_outputs) -> None:
    metrics, _ = execute_notebook("01_data")
    assert metrics["profile"] == "smoke"
    fractions = metrics["class_fractions"]
    assert set(fractions) <= TOY_CLASSES and {"road", "building"} <= set(fractions)
    assert math.isclose(sum(fractions.values()), 1.0, rel_tol=1e-9)
    assert 0.2 < fractions["road"] < 0.5  # bounds of data/toy.py's class table
    camera = metrics["camera"]  # smoke images are 32 x 64; toy f = 0.7 W, c = (W/2, cy)
    assert camera["fx"] == pytest.approx(0.7 * 64, rel=1e-5) and camera["cx"] == 32.0
    assert 0 < metrics["point_cloud"]["points"] <= 32 * 64
    assert set(metrics["loaders"]) == set(WRITERS)  # no DATA_ROOT: every fixture loader
    assert all(count >= 1 for count in metrics["loaders"].values())
    figures = notebook_outputs / "01_data" / "figures"
    assert {"labels.png", "point_cloud.plotly.html", "domain_gap.png", "scene_grid.png"} <= {
        path.name for path in figures.iterdir()}
