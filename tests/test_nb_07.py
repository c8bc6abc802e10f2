"""Notebook 07 (the results table) runs headless and writes the `results_table` the batch report renders."""

from __future__ import annotations

import math

import pytest

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]

MODELS = ["stl", "mtl", "padnet", "3ways", "densemtl"]
COLUMNS = {"semseg/mIoU", "depth/rmse", "normals/mean_angle"}


def test_notebook_07_writes_the_results_table(execute_notebook, notebook_outputs) -> None:
    metrics, executed = execute_notebook("07_results")
    assert metrics["profile"] == "smoke" and metrics["seeds"] == [0]
    rows = metrics["results_table"]
    assert [row["model"] for row in rows] == MODELS
    for row in rows:
        assert {"model", "tasks", "delta_m", "seeds", "params_M"} | COLUMNS <= set(row)
        assert row["tasks"] == "SDN" and row["seeds"] == [0]
        assert 0.0 <= row["semseg/mIoU"] <= 100.0 and 0.0 < row["depth/rmse"] < 100.0
        assert 0.0 <= row["normals/mean_angle"] <= 180.0
        assert row["delta_m"] is None or math.isfinite(row["delta_m"])
        assert row["params_M"] > 0
    params = {row["model"]: row["params_M"] for row in rows}
    assert params["stl"] > params["mtl"]  # three encoders against one
    assert params["densemtl"] > params["mtl"]
    curves = notebook_outputs / "07_results" / "figures" / "loss_curves.plotly.html"
    assert 'id="fig-loss_curves"' in curves.read_text()
    study_figures = {"study_delta_m_per_seed.png", "study_paired_differences.png"}
    assert study_figures <= {path.name for path in (notebook_outputs / "07_results" / "figures").iterdir()}
    from densemtl_lab.study import load_shipped
    from densemtl_lab.viz.studies import study_findings

    (findings,) = [cell for cell in executed.cells if cell.get("id") == "cell-study-2"]
    printed = "".join(output.get("text", "") for output in findings.outputs)
    assert printed.strip() == study_findings(load_shipped("architectures", "course")).strip()  # from the file
