"""Notebook 03 (shared-encoder MTL, three loss weightings, delta_m) runs headless."""

from __future__ import annotations

import math

import pytest

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]

WEIGHTINGS = {"fixed", "uncertainty", "dwa"}
TASKS = {"semseg", "depth", "normals"}


def test_notebook_03_compares_weightings_with_delta_m(execute_notebook) -> None:
    metrics, executed = execute_notebook("03_multitask_baseline")
    assert metrics["profile"] == "smoke"
    assert set(metrics["mtl"]) == WEIGHTINGS == set(metrics["delta_m"]) == set(metrics["final_weights"])
    for results in metrics["mtl"].values():
        assert set(results) == TASKS
        assert 0.0 < results["depth"]["rmse"] < 81.0
        assert 0.0 <= results["normals"]["mean_angle"] <= 180.0
    assert all(math.isfinite(value) for value in metrics["delta_m"].values())
    assert metrics["final_weights"]["fixed"] == {"semseg": 100.0, "depth": 1.0, "normals": 100.0}
    # uncertainty weights start at 0.5 exp(0) = 0.5 and move little in 4 steps; DWA needs 2 windows
    assert all(0.1 < w < 2.0 for w in metrics["final_weights"]["uncertainty"].values())
    assert metrics["final_weights"]["dwa"] == {"semseg": 1.0, "depth": 1.0, "normals": 1.0}
    sizes = metrics["parameters_m"]
    assert 0 < sizes["mtl"] < sizes["stl_total"]
    assert set(metrics["baselines"]) == TASKS
    # the shipped study's section prints its findings from the file: uncertainty and DWA against fixed weights
    from densemtl_lab.study import load_shipped
    from densemtl_lab.viz.studies import study_findings

    (findings,) = [cell for cell in executed.cells if cell.get("id") == "cell-weighting-study-2"]
    printed = "".join(output.get("text", "") for output in findings.outputs)
    expected = study_findings(load_shipped("weighting", "course"),
                              metrics=("delta_m", "semseg/mIoU", "depth/rmse", "normals/mean_angle"))
    assert printed.strip() == expected.strip()
    assert "uncertainty - fixed" in printed and "dwa - fixed" in printed
